"""The audit log's sequencer: gives pending entries their place (seq), signs each entry's
timestamp, grows the stored Merkle tree and signs checkpoints, in one transaction a batch;
runs after the commits that appended entries (a thread per process, or in line) and from
`flask audit sequencer`. Checkpoints are pushed to the regulator through the outbox.
The design is described in clinic.core.auditlog."""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Flask, current_app, has_app_context, has_request_context
from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from clinic.core import audit, merkle
from clinic.core.audit import AuditEntry, AuditPending
from clinic.core.auditlog import (
    AuditCheckpoint,
    AuditLogState,
    AuditNode,
    LogConfig,
    b64,
    config,
    from_app_config,
    recorded,
    row_leaf,
)
from clinic.core.config import settings
from clinic.core.db import db, new_id, utcnow
from clinic.core.signed_note import Checkpoint

log = logging.getLogger("clinic.auditlog")

BATCH = 2000  # entries per sequencer transaction

_entries = cast(Table, AuditEntry.__table__)
_pending = cast(Table, AuditPending.__table__)
_nodes = cast(Table, AuditNode.__table__)
_state = cast(Table, AuditLogState.__table__)
_checkpoints = cast(Table, AuditCheckpoint.__table__)


def _lock_state(conn: Connection) -> Any:
    """The sequencer's lock: the state row. None when another sequencer holds it (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        row = conn.execute(select(_state).where(_state.c.id == 1).with_for_update(skip_locked=True)).first()
        if row is not None:
            # The batch is safe to lose in a crash (its pending rows come back); a checkpoint
            # commits synchronously and so makes every earlier batch durable before it is seen.
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        return row
    conn.execute(update(_state).where(_state.c.id == 1).values(size=_state.c.size))  # SQLite's writer lock
    row = conn.execute(select(_state).where(_state.c.id == 1)).first()
    if row is None:
        raise RuntimeError("the audit log's state row is missing: run the migrations (flask db upgrade)")
    return row


def _after_entries_written(batch: int) -> None:
    """Test seam: a crash here is a crash mid-batch (entries written, tree not yet stored)."""


@dataclass
class PassResult:
    integrated: int = 0
    checkpoint: int | None = None
    jobs: list[uuid.UUID] = field(default_factory=list)
    busy: bool = False


def integrate(
    conn: Connection, cfg: LogConfig, *, limit: int | None = None, force_checkpoint: bool = False
) -> PassResult:
    """One sequencer transaction (the caller commits): integrate up to `limit` entries."""
    limit = BATCH if limit is None else limit
    state = _lock_state(conn)
    if state is None:
        return PassResult(busy=True)
    size = int(state.size)
    compact = merkle.CompactRange(size, [base64.b64decode(h) for h in state.frontier or []])
    signer = cfg.signer
    new_nodes: list[dict[str, Any]] = []
    count = 0

    # Entries that already have their seq but no place in the tree yet: the chain migrated
    # by audit_0004 (integrated once, in seq order, then never again).
    stale = conn.execute(select(_entries).where(_entries.c.seq > size).order_by(_entries.c.seq).limit(limit)).all()
    signed: list[dict[str, Any]] = []
    for row in stale:
        if row.seq != compact.size + 1:
            raise RuntimeError(f"audit entry {compact.size + 1} is missing before the tree can grow")
        leaf = row_leaf(row, row.seq)
        signed.append({"k_seq": row.seq, "sig": b64(signer.sign_entry(row.seq, leaf))})
        new_nodes += _node_rows(compact.append(leaf))
    if signed:
        conn.execute(update(_entries).where(_entries.c.seq == bindparam("k_seq")).values(sig=bindparam("sig")), signed)
        count += len(signed)

    rows = conn.execute(select(_pending).order_by(_pending.c.id).limit(limit - count)).all() if count < limit else []
    if rows:
        entries = []
        for row in rows:
            seq = compact.size + 1
            item = recorded(row, seq)
            leaf = audit.leaf_of(audit._content(item))
            entries.append({**item, "sig": b64(signer.sign_entry(seq, leaf))})
            new_nodes += _node_rows(compact.append(leaf))
        conn.execute(insert(_entries), entries)
        _after_entries_written(len(entries))
        conn.execute(delete(_pending).where(_pending.c.id.in_([r.id for r in rows])))
        count += len(rows)
    if new_nodes:
        conn.execute(insert(_nodes), new_nodes)
        conn.execute(
            update(_state).where(_state.c.id == 1).values(size=compact.size, frontier=[b64(h) for h in compact.hashes])
        )
    result = PassResult(integrated=count)
    last = conn.execute(
        select(_checkpoints.c.size, _checkpoints.c.signed_at).order_by(_checkpoints.c.size.desc()).limit(1)
    ).first()
    last_size = int(last.size) if last else 0
    due = last is None or (utcnow() - last.signed_at).total_seconds() >= cfg.checkpoint_seconds
    if compact.size > last_size and (due or force_checkpoint):
        result.checkpoint, result.jobs = _sign_checkpoint(conn, cfg, compact)
    return result


def _node_rows(made: list[tuple[int, int, bytes]]) -> list[dict[str, Any]]:
    return [{"level": level, "idx": index, "hash": h} for level, index, h in made]


def _sign_checkpoint(conn: Connection, cfg: LogConfig, compact: merkle.CompactRange) -> tuple[int, list[uuid.UUID]]:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = on")  # durable before anyone sees it
    cp = Checkpoint(cfg.signer.name, compact.size, compact.root())
    note = cfg.signer.sign_checkpoint(cp)
    now = utcnow()
    conn.execute(insert(_checkpoints).values(size=cp.size, root=b64(cp.root), note=note, signed_at=now))
    jobs_made: list[uuid.UUID] = []
    if cfg.push_url:
        from clinic.core.jobs import JobStatus, OutboxJob

        jid = new_id()
        conn.execute(
            insert(cast(Table, OutboxJob.__table__)).values(
                id=jid,
                kind=PUSH_JOB,
                payload={"size": cp.size},
                status=JobStatus.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        jobs_made.append(jid)
    return cp.size, jobs_made


def run_pass(cfg: LogConfig, *, force_checkpoint: bool = False) -> PassResult:
    """Sequence everything pending now, batch by batch. Steps aside when another process is
    sequencing; after releasing the lock it looks once more, so an entry committed while it
    held the lock is never left waiting for the next commit."""
    total = PassResult()
    while True:
        with db.engine.connect() as conn:
            with conn.begin():
                result = integrate(conn, cfg, force_checkpoint=force_checkpoint)
            if result.busy:
                total.busy = True
                return total
            total.integrated += result.integrated
            total.checkpoint = result.checkpoint or total.checkpoint
            total.jobs += result.jobs
            if result.integrated >= BATCH:
                continue
            if conn.execute(select(_pending.c.id).limit(1)).first() is None:
                cfg.last_pass = time.monotonic()
                return total


def hand_over_jobs(jids: list[uuid.UUID]) -> None:
    """The checkpoint pushes: run after this request's commit point (or by the sweeper)."""
    if jids:
        db.session().info.setdefault("outbox_committed", []).extend(jids)


def _kick() -> None:
    """After a commit that appended entries (clinic.core.audit.on_appended)."""
    if not has_app_context():
        return
    cfg = current_app.extensions.get("auditlog")
    if cfg is None or cfg.mode == "external":
        return
    if cfg.mode == "background" and has_request_context() and cfg.kicker is not None:
        cfg.kicker.kick()  # the request answers at once; the thread batches what arrives meanwhile
        return
    try:
        result = run_pass(cfg)
        hand_over_jobs(result.jobs)
    except Exception:  # the entries are committed and pending: the next pass takes them
        log.exception("audit sequencer pass failed; the entries stay pending for the next one")


class Kicker:
    """A process's sequencer thread (mode background): woken by commits, at most one pass per
    `interval` (so a busy server integrates in batches, off the requests' path), and one at
    least every checkpoint period, which signs the checkpoint when entries stopped arriving.
    Started on first use in each process (after a server's fork)."""

    def __init__(self, app: Flask, interval: float) -> None:
        self.app = app
        self.interval = interval
        self.wake = threading.Event()
        self.pid = 0
        self.lock = threading.Lock()

    def kick(self) -> None:
        if self.pid != os.getpid():
            with self.lock:
                if self.pid != os.getpid():
                    self.pid = os.getpid()
                    self.wake = threading.Event()
                    threading.Thread(target=self._run, name="audit-sequencer", daemon=True).start()
        self.wake.set()

    def _run(self) -> None:
        from clinic.core import jobs

        wake = self.wake
        with self.app.app_context():
            cfg: LogConfig = self.app.extensions["auditlog"]
            while True:
                wake.wait(timeout=max(1.0, cfg.checkpoint_seconds))
                wake.clear()
                if cfg.mode != "background":  # switched off (tests): the next kick starts anew
                    self.pid = 0
                    return
                try:
                    result = run_pass(cfg)
                    hand_over_jobs(result.jobs)
                    jobs.drain()
                except Exception:
                    log.exception("audit sequencer pass failed; the entries stay pending for the next one")
                finally:
                    db.session.remove()
                time.sleep(self.interval)


# --- pushing checkpoints to the regulator -----------------------------------------------------

PUSH_JOB = "audit.push_checkpoint"


def _push_checkpoint(payload: dict[str, Any]) -> None:
    import requests

    cfg = config()
    cp = db.session.get(AuditCheckpoint, int(payload["size"]))
    if cp is None or not cfg.push_url:
        return
    response = requests.post(
        cfg.push_url,
        data=cp.note.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8"},
        timeout=settings().PARTNER_HTTP_TIMEOUT,
        allow_redirects=False,
    )
    if response.status_code >= 300:
        raise RuntimeError(f"the regulator answered {response.status_code} to checkpoint {cp.size}")
    audit.record(
        db.session(),
        "audit.checkpoint_pushed",
        subject_type="audit_checkpoint",
        subject_id=cp.size,
        detail={"url": cfg.push_url},
    )


# --- the app --------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """The audit log of this app: its configuration, and the sequencer woken after every commit
    that appended entries (clinic.core.audit.on_appended); checkpoint pushes are outbox jobs."""
    cfg = app.config
    log_cfg = from_app_config(cfg)
    app.extensions["auditlog"] = log_cfg
    # At most one pass per merge delay / 2 in each process (as the `flask audit sequencer` loop):
    # an entry waits at most that plus two passes. Every worker's thread pays a pass's fixed
    # cost (some 15 round trips, busy or not) at this rate, so a shorter interval bought no
    # bound it needs: at merge delay / 4, the threads took ~19 % of POST /visits' CPU in
    # bench/visits_bench.py.
    kick = float(cfg.get("AUDIT_KICK_SECONDS", max(0.05, log_cfg.merge_delay / 2)))
    log_cfg.kicker = Kicker(app, interval=kick)
    audit.on_appended = _kick
    from clinic.core import jobs

    jobs.register(PUSH_JOB, _push_checkpoint)


def checkpoint_now(cfg: LogConfig | None = None) -> PassResult:
    """Sign now whatever is not yet signed (tests, the CLI: callers without the timer)."""
    result = run_pass(cfg or config(), force_checkpoint=True)
    hand_over_jobs(result.jobs)
    return result
