"""The audit trail is append-only and tamper-evident."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from clinic.core import audit
from clinic.core.audit import AuditEntry, verify_chain
from clinic.core.db import db, unit_of_work
from identity.models import Role
from tests.support import factories as f


def _write(n: int) -> None:
    with unit_of_work() as s:
        for i in range(n):
            audit.record(s, "test.event", subject_type="thing", subject_id=i, detail={"i": i, "text": "中文"})


def test_chain_verifies_and_counts_entries(ctx: Flask) -> None:
    _write(5)
    report = verify_chain(db.session())
    assert report.ok and report.entries == 5


def test_rolled_back_transaction_leaves_no_entry(ctx: Flask) -> None:
    try:
        with unit_of_work() as s:
            audit.record(s, "test.event")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert db.session.scalars(select(AuditEntry)).all() == []


def test_edited_entry_is_named(ctx: Flask) -> None:
    _write(6)
    with unit_of_work() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(detail={"i": 99}))
    report = verify_chain(db.session())
    assert not report.ok and report.first_broken == 4 and "hash" in (report.reason or "")


def test_deleted_entry_is_named(ctx: Flask) -> None:
    _write(6)
    with unit_of_work() as s:
        s.execute(AuditEntry.__table__.delete().where(AuditEntry.seq == 3))
    report = verify_chain(db.session())
    assert not report.ok and report.first_broken == 3


def test_deleted_tail_is_noticed(ctx: Flask) -> None:
    _write(4)
    with unit_of_work() as s:
        s.execute(AuditEntry.__table__.delete().where(AuditEntry.seq == 4))
    assert not verify_chain(db.session()).ok


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
    report = verify_chain(db.session())
    assert report.ok and report.entries == 40


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


def test_hashes_written_by_the_database_verify_in_python(ctx: Flask) -> None:
    """The append hashes in SQL (sha256_hex); verify_chain recomputes every one in Python."""
    _write(1)
    _write(3)  # one entry alone, then several in one transaction
    entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    prev = audit.GENESIS
    for entry in entries:
        assert entry.prev_hash == prev and entry.hash == audit.entry_hash(prev, entry.content())
        prev = entry.hash
    head = db.session.get(audit.AuditHead, 1)
    assert head is not None and (head.last_seq, head.last_hash) == (4, prev)


def test_missing_head_refuses_the_commit_and_writes_nothing(ctx: Flask) -> None:
    head = db.session.get(audit.AuditHead, 1)
    assert head is not None
    saved = (head.last_seq, head.last_hash)
    with unit_of_work() as s:
        s.execute(audit.AuditHead.__table__.delete())
    try:
        with pytest.raises(RuntimeError, match="audit chain head is missing"):
            _write(2)
        assert db.session.scalars(select(AuditEntry)).all() == []
    finally:
        with unit_of_work() as s:
            s.execute(audit.AuditHead.__table__.insert().values(id=1, last_seq=saved[0], last_hash=saved[1]))
