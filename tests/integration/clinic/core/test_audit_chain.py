"""The audit trail is append-only and tamper-evident (the transparency log of
clinic/core/auditlog.py; these were the hash chain's tests, kept with the same claims)."""

from __future__ import annotations

import threading

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from clinic.core import audit, audit_sequencer, audit_verify, auditlog, merkle
from clinic.core.audit import AuditEntry, AuditPending
from clinic.core.auditlog import AuditLogState, AuditNode
from clinic.core.db import db, unit_of_work
from identity.models import Role
from tests.support import factories as f


def _write(n: int) -> None:
    with unit_of_work() as s:
        for i in range(n):
            audit.record(s, "test.event", subject_type="thing", subject_id=i, detail={"i": i, "text": "中文"})


def _verify() -> audit_verify.Report:
    db.session.remove()
    with db.engine.connect() as conn:
        return audit_verify.verify(conn, auditlog.config().verifier)


def test_chain_verifies_and_counts_entries(ctx: Flask) -> None:
    _write(5)
    report = _verify()
    assert report.ok and report.entries == 5


def test_rolled_back_transaction_leaves_no_entry(ctx: Flask) -> None:
    try:
        with unit_of_work() as s:
            audit.record(s, "test.event")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert db.session.scalars(select(AuditEntry)).all() == []
    assert db.session.scalars(select(AuditPending)).all() == []


def test_edited_entry_is_named(ctx: Flask) -> None:
    _write(6)
    with unit_of_work() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(detail={"i": 99}))
    report = _verify()
    assert not report.ok and report.first_broken == 4 and "signature" in (report.reason or "")


def test_deleted_entry_is_named(ctx: Flask) -> None:
    _write(6)
    with unit_of_work() as s:
        s.execute(AuditEntry.__table__.delete().where(AuditEntry.seq == 3))
    report = _verify()
    assert not report.ok and report.first_broken == 3


def test_deleted_tail_is_noticed(ctx: Flask) -> None:
    _write(4)
    with unit_of_work() as s:
        s.execute(AuditEntry.__table__.delete().where(AuditEntry.seq == 4))
    assert not _verify().ok


def test_concurrent_writers_never_fork_the_chain(ctx: Flask) -> None:
    app = ctx
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with app.app_context():
                for _ in range(5):
                    _write(2)
                db.session.remove()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db.session.remove()
    audit_sequencer.run_pass(auditlog.config())  # a kick that stepped aside is picked up here at the latest
    report = _verify()
    assert report.ok and report.entries == 40
    seqs = db.session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
    assert seqs == list(range(1, 41))


def test_verify_endpoint_and_cli(client: FlaskClient, ctx: Flask) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(client, admin.username)
    body = client.get("/api/v1/audit/verify", headers=f.auth(tok)).get_json()
    assert body["ok"] is True and body["entries"] >= 2  # staff.created, auth.login
    with unit_of_work() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 1).values(action="tampered"))
    body = client.get("/api/v1/audit/verify", headers=f.auth(tok)).get_json()
    assert body["ok"] is False and body["first_broken"] == 1
    result = CliRunner().invoke(ctx.cli, ["audit", "verify"], obj=None, catch_exceptions=False)
    assert result.exit_code == 1 and '"first_broken": 1' in result.output


def test_entries_name_actor_role_and_address(client: FlaskClient) -> None:
    reg = f.patient()
    client.post(
        "/api/v1/auth/token",
        json={"username": reg.account.username, "password": f.PASSWORD},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "auth.login")).one()
    assert entry.actor_id == str(reg.account.id) and entry.actor_role == "patient" and entry.client_ip == "10.1.2.3"


def test_stored_tree_is_the_rfc6962_tree_of_the_entries(ctx: Flask) -> None:
    """The sequencer's stored leaves, nodes and right edge are exactly the RFC 6962 tree of the
    entries' canonical bytes, in seq order, and every entry carries the log's signature."""
    _write(1)
    _write(3)  # one entry alone, then several in one transaction
    entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    leaves = [merkle.leaf_hash(audit.canonical(e.content())) for e in entries]
    stored = {(n.level, n.index): n.hash for n in db.session.scalars(select(AuditNode))}
    assert [stored[(0, i)] for i in range(4)] == leaves
    assert stored[(2, 0)] == merkle.root_of(leaves)
    verifier = auditlog.config().verifier
    assert all(
        e.sig and verifier.entry_ok(e.seq, leaf, __import__("base64").b64decode(e.sig))
        for e, leaf in zip(entries, leaves, strict=True)
    )
    state = db.session.get(AuditLogState, 1)
    assert state is not None and state.size == 4
    assert db.session.scalars(select(AuditPending)).all() == []


def test_missing_state_keeps_entries_pending_and_loses_nothing(ctx: Flask) -> None:
    with unit_of_work() as s:
        s.execute(AuditLogState.__table__.delete())
    try:
        _write(2)  # committed; the sequencer cannot run without its state row
        db.session.remove()
        assert db.session.scalars(select(AuditEntry)).all() == []
        assert len(db.session.scalars(select(AuditPending)).all()) == 2
    finally:
        with unit_of_work() as s:
            s.execute(AuditLogState.__table__.insert().values(id=1, size=0, frontier=[]))
    audit_sequencer.run_pass(auditlog.config())
    report = _verify()
    assert report.ok and report.entries == 2
