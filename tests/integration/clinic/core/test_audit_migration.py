"""Migration audit_0004 moves an existing hash chain into the transparency log keeping every
entry: the chain is checked once on the way (its result and last hash kept in an entry the
log then signs like any other), and the way back rebuilds a chain that links."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import downgrade, upgrade

from clinic.app import create_app
from clinic.core import audit_sequencer, audit_verify
from clinic.core.db import db
from tests.conftest import _pg_database, make_config

BEFORE = "family_doctor_0001"
CONTENT = ("seq", "at", "actor_id", "actor_role", "action", "subject_type", "subject_id", "detail", "client_ip")
OLD = sa.table(
    "audit_entries",
    *(sa.column(n) for n in CONTENT if n not in ("at", "detail")),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("detail", sa.JSON()),
    sa.column("prev_hash", sa.String),
    sa.column("hash", sa.String),
)


def _chain_hash(prev: str, content: dict[str, Any]) -> str:
    text = json.dumps(
        {**content, "at": content["at"].isoformat()}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256((prev + text).encode()).hexdigest()


@pytest.fixture
def scratch(app: Flask, backend: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    """An app on a database of its own, migrated only up to the revision before the log."""
    gen = None
    if backend["name"] == "postgresql":
        gen = _pg_database(os.environ["TEST_DATABASE_URL"])
        url = next(gen)
    else:
        url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    other = create_app(make_config({"url": url, "instance": tmp_path / "inst"}))
    try:
        with other.app_context():
            upgrade(revision=BEFORE)
            yield other
    finally:
        db.session.remove()
        db.configure(app.config["DATABASE_URL"])
        if gen is not None:
            with contextlib.suppress(StopIteration):
                next(gen)


def _old_chain(n: int, tamper_at: int | None = None) -> str:
    prev = "0" * 64
    t0 = datetime(2026, 11, 20, 8, 0, 0, 123456, tzinfo=UTC)
    rows = []
    for seq in range(1, n + 1):
        content = {
            "seq": seq,
            "at": t0 + timedelta(minutes=seq),
            "actor_id": f"a{seq}",
            "actor_role": "physician",
            "action": "visit.message",
            "subject_type": "visit",
            "subject_id": "v1",
            "detail": {"i": seq, "text": "中文"},
            "client_ip": "10.0.0.1",
        }
        h = _chain_hash(prev, content)
        rows.append({**content, "prev_hash": prev, "hash": h})
        prev = h
    if tamper_at is not None:
        rows[tamper_at - 1]["detail"] = {"i": 0}
    with db.engine.begin() as conn:
        conn.execute(sa.insert(OLD), rows)
    return prev


def test_the_chain_moves_into_the_log_keeping_every_entry_and_back(scratch: Flask) -> None:
    last_hash = _old_chain(5)
    upgrade()
    with db.engine.connect() as conn:
        marker = conn.execute(sa.text("SELECT action, detail FROM audit_pending")).one()
    detail = marker.detail if isinstance(marker.detail, dict) else json.loads(marker.detail)
    assert marker.action == "audit.chain_migrated"
    assert detail["chain_ok"] is True and detail["entries"] == 5 and detail["last_hash"] == last_hash

    audit_sequencer.checkpoint_now()
    report = audit_verify.verify_now()
    assert report.ok and report.entries == 6  # the five old entries, then the migration's own
    with db.engine.connect() as conn:
        actions = conn.execute(sa.text("SELECT seq, action FROM audit_entries ORDER BY seq")).all()
        sigs = conn.execute(sa.text("SELECT COUNT(*) FROM audit_entries WHERE sig IS NOT NULL")).scalar()
    assert [a for _, a in actions] == ["visit.message"] * 5 + ["audit.chain_migrated"] and sigs == 6

    # the way back: one chain again, every link recomputed, the head at the last entry
    db.session.remove()
    downgrade(revision=BEFORE)
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(OLD).order_by(OLD.c.seq)).all()
        head = conn.execute(sa.text("SELECT last_seq, last_hash FROM audit_head")).one()
    prev = "0" * 64
    for row in rows:
        content = {n: getattr(row, n) for n in CONTENT}
        at = content["at"]
        content["at"] = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        assert row.prev_hash == prev and row.hash == _chain_hash(prev, content)
        prev = row.hash
    assert len(rows) == 6 and rows[4].hash == last_hash and tuple(head) == (6, prev)


def test_a_broken_chain_is_recorded_as_broken(scratch: Flask) -> None:
    _old_chain(4, tamper_at=3)
    upgrade()
    with db.engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT detail FROM audit_pending")).scalar_one()
    detail = raw if isinstance(raw, dict) else json.loads(raw)
    assert detail["chain_ok"] is False and detail["first_broken"] == 3 and "hash" in detail["reason"]
