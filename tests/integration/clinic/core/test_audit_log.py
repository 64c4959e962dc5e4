"""The audit log against an insider with database access but not the signing key: each
tampering is found against a checkpoint kept outside the database, naming the first bad
entry, even after every stored hash was recomputed; the sequencer loses nothing when it dies
mid-batch; concurrent writers leave mutually consistent checkpoints; proofs check out with
nothing but the entry, the proof and a checkpoint."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from clinic.core import audit, audit_sequencer, audit_verify, auditlog, jobs, merkle, signed_note
from clinic.core.audit import AuditEntry, AuditPending
from clinic.core.auditlog import AuditCheckpoint, AuditLogState, AuditNode
from clinic.core.db import db, unit_of_work
from identity.models import Role
from tests.support import factories as f
from tests.support.answers import refusal

ENTRIES = AuditEntry.__table__


def _write(n: int, start: int = 0) -> None:
    with unit_of_work() as s:
        for i in range(start, start + n):
            audit.record(s, "test.event", subject_type="thing", subject_id=i, detail={"i": i, "text": "中文"})


def _kept_checkpoint(app: Flask, tmp_path: Path) -> Path:
    """Sign now and keep the checkpoint outside the database, as a regulator would."""
    audit_sequencer.checkpoint_now()
    result = CliRunner().invoke(app.cli, ["audit", "checkpoint"], obj=None, catch_exceptions=False)
    assert result.exit_code == 0 and result.output.count("\n") == 5
    path = tmp_path / "checkpoint.txt"
    path.write_text(result.output, encoding="utf-8")
    return path


def _cli_verify(app: Flask, path: Path) -> tuple[int, dict[str, Any]]:
    db.session.remove()
    result = CliRunner().invoke(
        app.cli, ["audit", "verify", "--checkpoint", str(path)], obj=None, catch_exceptions=False
    )
    return result.exit_code, json.loads(result.output)


def _recompute_everything(conn: Connection, *, drop_checkpoints: bool = True) -> None:
    """What an insider with SQL access does to hide a change: rebuild every stored hash (the
    tree's nodes and right edge) from the entries as they now are, and remove the stored
    checkpoints that would no longer match. Only the signatures cannot be redone."""
    rows = conn.execute(select(ENTRIES).order_by(ENTRIES.c.seq)).all()
    tree = merkle.MemoryTree()
    for row in rows:
        content = audit._content({name: getattr(row, name) for name in audit._HASHED})
        tree.append(audit.leaf_of(content))
    conn.execute(delete(AuditNode.__table__))
    conn.execute(
        insert(AuditNode.__table__), [{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in tree.nodes.items()]
    )
    conn.execute(
        update(AuditLogState.__table__).values(size=tree.size, frontier=[auditlog.b64(h) for h in tree.range.hashes])
    )
    if drop_checkpoints:
        conn.execute(delete(AuditCheckpoint.__table__))


def _tamper(fn: Any) -> None:
    db.session.remove()
    with db.engine.begin() as conn:
        fn(conn)
        _recompute_everything(conn)


def _row(conn: Connection, seq: int) -> dict[str, Any]:
    return dict(conn.execute(select(ENTRIES).where(ENTRIES.c.seq == seq)).one()._mapping)


@pytest.fixture
def six(ctx: Flask, tmp_path: Path) -> Iterator[Path]:
    _write(6)
    path = _kept_checkpoint(ctx, tmp_path)
    code, report = _cli_verify(ctx, path)
    assert code == 0 and report["ok"] and report["entries"] == 6 and report["checkpoint_size"] == 6
    yield path


def test_edit_with_every_hash_recomputed_is_named(ctx: Flask, six: Path) -> None:
    _tamper(lambda c: c.execute(update(ENTRIES).where(ENTRIES.c.seq == 4).values(detail={"i": 99})))
    code, report = _cli_verify(ctx, six)
    assert code == 1 and not report["ok"] and report["first_broken"] == 4


def test_delete_with_renumbering_and_recomputed_hashes_is_named(ctx: Flask, six: Path) -> None:
    def delete_third(conn: Connection) -> None:
        conn.execute(delete(ENTRIES).where(ENTRIES.c.seq == 3))
        for seq in (4, 5, 6):  # close the gap
            conn.execute(update(ENTRIES).where(ENTRIES.c.seq == seq).values(seq=seq - 1))

    _tamper(delete_third)
    code, report = _cli_verify(ctx, six)
    assert code == 1 and report["first_broken"] == 3


def test_delete_leaving_a_gap_is_named(ctx: Flask, six: Path) -> None:
    _tamper(lambda c: c.execute(delete(ENTRIES).where(ENTRIES.c.seq == 2)))
    code, report = _cli_verify(ctx, six)
    assert code == 1 and report["first_broken"] == 2 and "missing" in report["reason"]


def test_insert_with_renumbering_is_named(ctx: Flask, six: Path) -> None:
    def insert_third(conn: Connection) -> None:
        for seq in (6, 5, 4, 3):
            conn.execute(update(ENTRIES).where(ENTRIES.c.seq == seq).values(seq=seq + 1))
        forged = {**_row(conn, 2), "seq": 3, "action": "visit.completed", "detail": {"forged": True}}
        forged["sig"] = base64.b64encode(random.randbytes(64)).decode()
        conn.execute(insert(ENTRIES).values(**forged))

    _tamper(insert_third)
    code, report = _cli_verify(ctx, six)
    assert code == 1 and report["first_broken"] == 3


def test_swap_of_two_entries_is_named(ctx: Flask, six: Path) -> None:
    def swap(conn: Connection) -> None:
        two, five = _row(conn, 2), _row(conn, 5)
        for seq, other in ((2, five), (5, two)):  # each row takes the other's content and signature
            conn.execute(
                update(ENTRIES).where(ENTRIES.c.seq == seq).values(**{k: v for k, v in other.items() if k != "seq"})
            )

    _tamper(swap)
    code, report = _cli_verify(ctx, six)
    assert code == 1 and report["first_broken"] == 2


def test_truncated_tail_is_found_against_the_kept_checkpoint(ctx: Flask, six: Path) -> None:
    _tamper(lambda c: c.execute(delete(ENTRIES).where(ENTRIES.c.seq >= 5)))
    code, report = _cli_verify(ctx, six)
    assert code == 1 and report["first_broken"] == 5
    # without the kept checkpoint the database alone looks whole: that is why it is kept outside
    assert audit_verify.verify_now().ok


def test_a_forged_or_foreign_checkpoint_is_refused(ctx: Flask, six: Path, tmp_path: Path) -> None:
    text = six.read_text(encoding="utf-8").split("\n")
    text[1] = "5"
    forged = tmp_path / "forged.txt"
    forged.write_text("\n".join(text), encoding="utf-8")
    code, report = _cli_verify(ctx, forged)
    assert code == 1 and "signature" in report["reason"]


def test_stored_checkpoints_are_checked_against_each_other(ctx: Flask, tmp_path: Path) -> None:
    _write(3)
    audit_sequencer.checkpoint_now()
    _write(4, start=3)
    path = _kept_checkpoint(ctx, tmp_path)
    # an insider edits entry 2 and rebuilds the tree but keeps the stored checkpoints
    db.session.remove()
    with db.engine.begin() as conn:
        conn.execute(update(ENTRIES).where(ENTRIES.c.seq == 2).values(action="auth.login"))
        _recompute_everything(conn, drop_checkpoints=False)
    code, report = _cli_verify(ctx, path)
    assert code == 1 and report["first_broken"] == 2


def test_sequencer_crash_mid_batch_loses_nothing_and_repeats_nothing(
    ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}

    def crash_on_second_batch(batch: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("sequencer killed mid-batch")

    cfg = auditlog.config()
    monkeypatch.setattr(cfg, "mode", "external")  # no pass after each commit: entries wait
    _write(7)
    assert db.session.scalar(select(func.count()).select_from(AuditPending)) == 7
    monkeypatch.setattr(audit_sequencer, "BATCH", 3)
    monkeypatch.setattr(audit_sequencer, "_after_entries_written", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="killed"):
        audit_sequencer.run_pass(cfg)
    db.session.remove()
    # the first batch is in; the second left nothing behind (no entries, nodes or size from it)
    assert db.session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all() == [1, 2, 3]
    assert db.session.scalar(select(func.count()).select_from(AuditPending)) == 4
    state = db.session.get(AuditLogState, 1)
    assert state is not None and state.size == 3
    monkeypatch.setattr(audit_sequencer, "_after_entries_written", lambda batch: None)
    audit_sequencer.run_pass(cfg)
    db.session.remove()
    entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [e.seq for e in entries] == list(range(1, 8))
    assert sorted(e.detail["i"] for e in entries) == list(range(7))  # each once
    assert db.session.scalar(select(func.count()).select_from(AuditPending)) == 0
    assert audit_verify.verify_now().ok


def test_eight_concurrent_writers_leave_mutually_consistent_checkpoints(
    ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = ctx
    monkeypatch.setattr(auditlog.config(), "checkpoint_seconds", 0.0)  # a checkpoint at every pass
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            with app.app_context():
                for k in range(6):
                    _write(1 + (w + k) % 3, start=100 * w + 10 * k)
                db.session.remove()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    audit_sequencer.checkpoint_now()
    db.session.remove()
    expected = sum(1 + (w + k) % 3 for w in range(8) for k in range(6))
    verifier = auditlog.config().verifier
    with db.engine.connect() as conn:
        notes = conn.execute(select(AuditCheckpoint.note).order_by(AuditCheckpoint.size)).scalars().all()
        cps = [verifier.open(n) for n in notes]
        assert len(cps) >= 2 and cps[-1].size == expected
        nodes = auditlog.StoredNodes(conn)
        for a in cps:  # every pair, not only neighbours
            for b in cps:
                if a.size <= b.size:
                    proof = merkle.consistency_proof(nodes, a.size, b.size)
                    assert merkle.verify_consistency(a.size, b.size, a.root, b.root, proof)
    report = audit_verify.verify_now()
    assert report.ok and report.entries == expected


def test_checkpoint_and_proof_endpoints_check_out_offline(client: FlaskClient, ctx: Flask) -> None:
    admin = f.staff(Role.ADMIN)
    regulator = f.staff(Role.REGULATOR)
    _write(5)
    audit_sequencer.checkpoint_now()
    reg = f.auth(f.token(client, regulator.username))
    first = client.get("/api/v1/audit/checkpoint", headers=reg)
    assert first.status_code == 200 and first.mimetype == "text/plain"
    _write(6, start=5)
    audit_sequencer.checkpoint_now()
    adm = f.auth(f.token(client, admin.username))
    second = client.get("/api/v1/audit/checkpoint", headers=adm).get_data(as_text=True)
    vkey = CliRunner().invoke(ctx.cli, ["audit", "public-key"], obj=None).output.strip()
    verifier = signed_note.Verifier.from_vkey(vkey)
    cp1, cp2 = verifier.open(first.get_data(as_text=True)), verifier.open(second)
    assert cp1.size < cp2.size

    for seq in range(1, cp2.size + 1):
        entry = client.get(f"/api/v1/audit/entries/{seq}", headers=reg).get_json()
        proof = client.get(f"/api/v1/audit/proof/inclusion?seq={seq}&tree_size={cp2.size}", headers=reg).get_json()
        assert proof["leaf_index"] == seq - 1 and proof["tree_size"] == cp2.size
        assert audit_verify.check_receipt(entry, proof, second, vkey)
        assert not audit_verify.check_receipt(
            {**entry, "canonical": entry["canonical"][:-1] + ',"x":1}'}, proof, second, vkey
        )
    entry = client.get("/api/v1/audit/entries/2", headers=reg).get_json()
    proof = client.get("/api/v1/audit/proof/inclusion?seq=2&tree_size=3", headers=reg).get_json()
    assert not audit_verify.check_receipt(entry, proof, second, vkey)  # a proof for another tree

    body = client.get(f"/api/v1/audit/proof/consistency?first={cp1.size}&second={cp2.size}", headers=reg).get_json()
    hashes = [base64.b64decode(h) for h in body["hashes"]]
    assert merkle.verify_consistency(cp1.size, cp2.size, cp1.root, cp2.root, hashes)

    too_big = client.get(f"/api/v1/audit/proof/inclusion?seq=1&tree_size={cp2.size + 50}", headers=reg)
    assert too_big.status_code == 422 and too_big.get_json()["error"]["code"] == "invalid"
    assert refusal(client.get("/api/v1/audit/entries/9999", headers=reg)) == (404, "not_found")
    physician = f.auth(f.token(client, f.staff(Role.PHYSICIAN).username))
    assert refusal(client.get("/api/v1/audit/checkpoint", headers=physician)) == (403, "forbidden")
    assert refusal(client.get("/api/v1/audit/checkpoint")) == (401, "unauthenticated")


class _Regulator(BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(self.rfile.read(length).decode())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_checkpoints_are_pushed_to_the_regulator_through_the_outbox(
    ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Regulator)
    _Regulator.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(auditlog.config(), "push_url", f"http://127.0.0.1:{server.server_port}/checkpoints")
        _write(2)
        audit_sequencer.checkpoint_now()
        _write(2, start=2)
        audit_sequencer.checkpoint_now()
        jobs.drain()
        db.session.remove()
    finally:
        server.shutdown()
    verifier = auditlog.config().verifier
    got = [verifier.open(note) for note in _Regulator.received]
    assert [cp.size for cp in got] == [2, 4]
    stored = db.session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size)).all()
    assert [c.note for c in stored] == _Regulator.received  # every checkpoint kept here too
    assert (
        db.session.scalar(select(func.count()).select_from(jobs.OutboxJob).where(jobs.OutboxJob.status == "done")) == 2
    )


def test_background_sequencer_integrates_a_request_entry_within_the_merge_delay(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = auditlog.config()
    monkeypatch.setattr(cfg, "mode", "background")
    admin = f.staff(Role.ADMIN)  # outside a request: sequenced in line
    client.post("/api/v1/auth/token", json={"username": admin.username, "password": f.PASSWORD})
    t0 = time.monotonic()
    found = None
    while time.monotonic() - t0 < cfg.merge_delay:
        db.session.remove()
        found = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "auth.login")).first()
        if found is not None:
            break
        time.sleep(0.05)
    assert found is not None and found.sig, "the request's entry was not sequenced within the merge delay"
    assert audit_verify.verify_now().ok
    monkeypatch.setattr(cfg, "mode", "commit")
    assert cfg.kicker is not None
    cfg.kicker.wake.set()  # let the thread see the switch and end


def test_a_released_savepoint_does_not_start_the_sequencer(ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SAVEPOINT's release is not a commit: the sequencer starts once, after the real one.
    (Kicked at the release, its own connection waited for this transaction's write lock on
    SQLite for the whole busy timeout.)"""
    kicks: list[str] = []
    monkeypatch.setattr(audit, "on_appended", lambda: kicks.append("kick"))
    with unit_of_work() as s:
        audit.record(s, "test.savepoint", subject_type="test", subject_id="1")
        with s.begin_nested():
            s.flush()
        assert kicks == []  # released, not committed
    assert kicks == ["kick"]  # once, after the commit
    assert (
        db.session.scalar(select(func.count()).select_from(AuditPending))
        + db.session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "test.savepoint"))
        == 1
    )
