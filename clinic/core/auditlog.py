"""The audit log as a transparency log: sequencer, Merkle tree, signed checkpoints, proofs
and verification (Certificate Transparency's design, RFC 6962 hashing).

- Writers append with one INSERT into `audit_pending` (clinic.core.audit); nobody waits on
  a shared row.
- The sequencer takes its own lock (PostgreSQL: the state row FOR UPDATE SKIP LOCKED, so a
  second sequencer steps aside; SQLite: its one writer lock), gives the pending entries the
  next seq numbers in the order they were inserted (pending id), computes each leaf hash
  SHA-256(0x00 ‖ canonical entry), signs each entry's timestamp (seq, leaf) with the log's
  key, stores the complete subtrees the new leaves make (`audit_nodes`) and deletes the
  pending rows — all in one transaction: a sequencer that dies mid-batch leaves the batch
  pending and the tree as it was, and the next run does it once.
- It runs right after every commit that appended entries (in the committing process, on a
  connection of its own; when another process is sequencing it steps aside, and that one
  looks again after releasing its lock, so nothing waits for a later commit), and from
  `flask audit sequencer` (a loop every AUDIT_MERGE_DELAY_SECONDS / 2, the backstop that
  also signs the checkpoint when entries stop arriving). Maximum merge delay:
  AUDIT_MERGE_DELAY_SECONDS (default 2).
- A checkpoint (origin, size, root; C2SP signed note, Ed25519) is signed at least every
  AUDIT_CHECKPOINT_SECONDS while entries arrive, kept in `audit_checkpoints` for good and,
  when REGULATOR_CHECKPOINT_URL is set, pushed there through the outbox.
- The key (AUDIT_LOG_KEY) comes from configuration, never from the database; without it a
  development key is generated into the instance folder like the other dev secrets.

Verification (`verify`) rebuilds the tree from the entries' contents, so recomputed stored
hashes fool nothing: each entry's leaf must carry the log's signature for its seq, each
stored checkpoint's root must be the root of the entries' prefix of its size (the stored
checkpoints are thereby consistent with each other, and the consistency proofs between
successive ones are checked too), and a checkpoint kept outside the database must match.
`verify_incremental` does the same from the last verified checkpoint on (plus a random
sample of older entries, checked by inclusion proofs), so a view of the audit viewer costs
the same at 10 k and 10 M entries.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import click
from flask import Flask, current_app, has_app_context, has_request_context
from sqlalchemy import (
    JSON,
    BigInteger,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core import audit, merkle
from clinic.core.audit import AuditEntry, AuditPending
from clinic.core.config import settings
from clinic.core.db import Base, db, new_id, utcnow
from clinic.core.signed_note import Checkpoint, NoteError, Signer, Verifier

log = logging.getLogger("clinic.auditlog")

BATCH = 2000  # entries per sequencer transaction
SAMPLE = 32  # older entries re-checked by each incremental verification


class AuditNode(Base):
    """A complete subtree of the log's Merkle tree: leaves [index·2^level, (index+1)·2^level)."""

    __tablename__ = "audit_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column("idx", BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditLogState(Base):
    """One row (id 1): the tree's size and right edge, and the sequencer's lock."""

    __tablename__ = "audit_log_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(Integer, default=0)
    frontier: Mapped[list[str]] = mapped_column(JSON, default=list)  # the compact range, base64


class AuditCheckpoint(Base):
    """Every checkpoint the log signed, kept for good (and given to the regulator)."""

    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(44))
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime]
    # When an incremental verification reached it: the next one starts here.
    verified_at: Mapped[datetime | None]


_entries = cast(Table, AuditEntry.__table__)
_pending = cast(Table, AuditPending.__table__)
_nodes = cast(Table, AuditNode.__table__)
_state = cast(Table, AuditLogState.__table__)
_checkpoints = cast(Table, AuditCheckpoint.__table__)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- configuration -------------------------------------------------------------------------


@dataclass
class LogConfig:
    signer: Signer
    merge_delay: float = 2.0
    checkpoint_seconds: float = 60.0
    push_url: str = ""
    # background: a request's commit wakes this process's sequencer thread (commands and jobs
    # sequence in line); commit: every commit sequences in line (tests); external: only
    # `flask audit sequencer` does
    mode: str = "background"
    last_pass: float = field(default=0.0)
    kicker: _Kicker | None = None

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier()


def _origin(cfg: dict[str, Any]) -> str:
    if cfg.get("AUDIT_LOG_ORIGIN"):
        return str(cfg["AUDIT_LOG_ORIGIN"])
    base = str(cfg.get("PUBLIC_BASE_URL") or "clinic.localhost").split("://", 1)[-1].rstrip("/")
    return f"{base}/audit-log"


def _key_secret(cfg: dict[str, Any]) -> str:
    secret = str(cfg.get("AUDIT_LOG_KEY") or "")
    if secret:
        return secret
    if cfg.get("ENV") == "production":
        raise RuntimeError("AUDIT_LOG_KEY must be set in production (the audit log's signing key)")
    path = Path(str(cfg["INSTANCE_PATH"])) / "audit_log_key.secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def config() -> LogConfig:
    found: LogConfig = current_app.extensions["auditlog"]
    return found


# --- the sequencer ---------------------------------------------------------------------------


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


def _recorded(row: Any, seq: int) -> dict[str, Any]:
    return {"seq": seq, **{name: getattr(row, name) for name in audit._GIVEN}}


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
        leaf = audit.leaf_of(audit._content(_recorded(row, row.seq)))
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
            item = _recorded(row, seq)
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


def _hand_over_jobs(jids: list[uuid.UUID]) -> None:
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
        _hand_over_jobs(result.jobs)
    except Exception:  # the entries are committed and pending: the next pass takes them
        log.exception("audit sequencer pass failed; the entries stay pending for the next one")


class _Kicker:
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
                    _hand_over_jobs(result.jobs)
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


# --- reading the tree -------------------------------------------------------------------------


class StoredNodes:
    """A NodeSource over audit_nodes, fetching each node once."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cache: dict[tuple[int, int], bytes] = {}

    def __call__(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self.cache:
            h = self.conn.execute(select(_nodes.c.hash).where(_nodes.c.level == level, _nodes.c.idx == index)).scalar()
            if h is None:
                raise KeyError(key)
            self.cache[key] = bytes(h)
        return self.cache[key]


def tree_size(conn: Connection) -> int:
    return int(conn.execute(select(_state.c.size).where(_state.c.id == 1)).scalar() or 0)


def latest_checkpoint(conn: Connection) -> AuditCheckpoint | None:
    row = conn.execute(select(_checkpoints).order_by(_checkpoints.c.size.desc()).limit(1)).first()
    return (
        None if row is None else AuditCheckpoint(size=row.size, root=row.root, note=row.note, signed_at=row.signed_at)
    )


# --- verification ------------------------------------------------------------------------------


@dataclass
class Report:
    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None
    checkpoint_size: int | None = None
    checked: int = 0  # entries whose content was re-hashed this time
    # missing | signature | checkpoint | kept_checkpoint | stored_checkpoint | split_view
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_broken": self.first_broken,
            "reason": self.reason,
            "checkpoint_size": self.checkpoint_size,
            "checked": self.checked,
            "code": self.code,
        }


def _stored_checkpoints(conn: Connection, verifier: Verifier, since: int = 0) -> Iterator[Checkpoint | str]:
    """Stored checkpoints above `since`, in order, opened with our key (a str: why not)."""
    for row in conn.execute(select(_checkpoints).where(_checkpoints.c.size > since).order_by(_checkpoints.c.size)):
        try:
            cp = verifier.open(row.note)
        except NoteError as err:
            yield f"stored checkpoint {row.size}: {err}"
            continue
        if cp.size != row.size:
            yield f"stored checkpoint {row.size} says size {cp.size}"
            continue
        yield cp


def _scan(
    conn: Connection,
    verifier: Verifier,
    compact: merkle.CompactRange,
    upto: int | None,
    targets: dict[int, bytes],
    tree: merkle.MemoryTree | None = None,
) -> Report | None:
    """Re-hash entries compact.size+1 … upto (all when None) into `compact`, checking the order,
    each entry's signature, and every root in `targets` (size → root) on the way; the first
    bad entry is named."""
    start = compact.size
    q = select(_entries).where(_entries.c.seq > start)
    if upto is not None:
        q = q.where(_entries.c.seq <= upto)
    rows = conn.execute(q.order_by(_entries.c.seq).execution_options(yield_per=2000))
    try:
        return _scan_rows(conn, verifier, compact, upto, targets, tree, rows, start)
    finally:
        rows.close()


def _scan_rows(
    conn: Connection,
    verifier: Verifier,
    compact: merkle.CompactRange,
    upto: int | None,
    targets: dict[int, bytes],
    tree: merkle.MemoryTree | None,
    rows: Any,
    start: int,
) -> Report | None:
    checked = 0
    for row in rows:
        expected = compact.size + 1
        if row.seq != expected:
            return Report(
                False, compact.size, expected, f"entry {expected} is missing", checked=checked, code="missing"
            )
        leaf = audit.leaf_of(audit._content(_recorded(row, row.seq)))
        sig = base64.b64decode(row.sig) if row.sig else b""
        if not verifier.entry_ok(row.seq, leaf, sig):
            return Report(
                False,
                compact.size,
                row.seq,
                "content or position does not match the log's signature (changed, inserted or moved)",
                checked=checked,
                code="signature",
            )
        compact.append(leaf)
        if tree is not None:
            tree.append(leaf)
        checked += 1
        want = targets.get(compact.size)
        if want is not None and compact.root() != want:
            return Report(
                False,
                compact.size,
                _first_differing(conn, verifier, start, compact.size),
                f"entries do not make the signed checkpoint of size {compact.size}",
                checked=checked,
                code="checkpoint",
            )
    if upto is not None and compact.size < upto:
        return Report(
            False,
            compact.size,
            compact.size + 1,
            f"entry {compact.size + 1} is missing",
            checked=checked,
            code="missing",
        )
    return None


def _first_differing(conn: Connection, verifier: Verifier, start: int, size: int) -> int:
    # Every signature held yet the root differs: only a key holder could do this. Name the
    # first entry whose stored leaf node differs from its content, else the range's start.
    nodes = StoredNodes(conn)
    for seq in range(start + 1, size + 1):
        row = conn.execute(select(_entries).where(_entries.c.seq == seq)).first()
        try:
            stored = nodes(0, seq - 1)
        except KeyError:
            return seq
        if row is None or audit.leaf_of(audit._content(_recorded(row, seq))) != stored:
            return seq
    return start + 1


def verify(conn: Connection, verifier: Verifier, kept_note: str | None = None) -> Report:
    """Full check from entry 1: every entry against its signature and the tree it makes,
    every stored checkpoint (and the consistency proofs between successive ones), and the
    checkpoint kept outside the database (`kept_note`) if given."""
    kept: Checkpoint | None = None
    if kept_note is not None:
        try:
            kept = verifier.open(kept_note)
        except NoteError as err:
            return Report(False, 0, None, f"the kept checkpoint: {err}", code="kept_checkpoint")
    targets: dict[int, bytes] = {}
    previous: Checkpoint | None = None
    nodes = StoredNodes(conn)
    for cp in _stored_checkpoints(conn, verifier):
        if isinstance(cp, str):
            return Report(False, 0, None, cp, code="stored_checkpoint")
        targets[cp.size] = cp.root
        if previous is not None:
            try:
                proof = merkle.consistency_proof(nodes, previous.size, cp.size)
                consistent = merkle.verify_consistency(previous.size, cp.size, previous.root, cp.root, proof)
            except KeyError:
                consistent = False
            if not consistent:
                # Named below by the re-hash; the stored tree itself was changed.
                log.warning(
                    "stored checkpoints %d and %d: no consistency proof from the stored tree", previous.size, cp.size
                )
        previous = cp
    if kept is not None:
        if kept.size in targets and targets[kept.size] != kept.root:
            return Report(False, 0, None, f"the log signed two different trees of size {kept.size}", code="split_view")
        targets[kept.size] = kept.root
    compact = merkle.CompactRange()
    size = tree_size(conn)
    bad = _scan(conn, verifier, compact, size, targets)
    if bad is not None:
        bad.checkpoint_size = kept.size if kept else None
        return bad
    if kept is not None and kept.size > compact.size:
        return Report(
            False,
            compact.size,
            compact.size + 1,
            f"entries {compact.size + 1}–{kept.size} of the kept checkpoint are missing",
            code="missing",
        )
    return Report(
        True,
        compact.size,
        checkpoint_size=kept.size if kept else (previous.size if previous else None),
        checked=compact.size,
    )


def verify_incremental(conn: Connection, verifier: Verifier, *, sample: int = SAMPLE) -> Report:
    """From the last verified checkpoint on: the stored right edge of that tree must give its
    signed root, the entries after it are re-hashed and checked against their signatures and
    every later checkpoint, and `sample` random older entries are checked by inclusion proofs.
    On success the last verified point moves on (to the newest checkpoint reached)."""
    verified = int(
        conn.execute(
            select(_checkpoints.c.size)
            .where(_checkpoints.c.verified_at.is_not(None))
            .order_by(_checkpoints.c.size.desc())
            .limit(1)
        ).scalar()
        or 0
    )
    base: Checkpoint | None = None
    if verified:
        row = conn.execute(select(_checkpoints.c.note).where(_checkpoints.c.size == verified)).first()
        try:
            base = verifier.open(row.note) if row else None
        except NoteError:
            base = None
        if base is None or base.size != verified:
            return verify(conn, verifier)  # the anchor is gone or forged: check everything
    nodes = StoredNodes(conn)
    if base is not None:
        try:
            compact = merkle.CompactRange.load(nodes, base.size)
        except KeyError:
            return verify(conn, verifier)
        if compact.root() != base.root:
            return verify(conn, verifier)  # the stored tree was changed: find the entry
    else:
        compact = merkle.CompactRange()
    targets: dict[int, bytes] = {}
    newest = base
    for cp in _stored_checkpoints(conn, verifier, since=verified):
        if isinstance(cp, str):
            return Report(False, verified, None, cp, code="stored_checkpoint")
        targets[cp.size] = cp.root
        newest = cp
    size = tree_size(conn)
    bad = _scan(conn, verifier, compact, size, targets)
    if bad is not None:
        return bad
    checked = compact.size - verified
    if base is not None and base.size:
        for seq in random.sample(range(1, base.size + 1), min(sample, base.size)):
            row = conn.execute(select(_entries).where(_entries.c.seq == seq)).first()
            if row is None:
                return verify(conn, verifier)
            leaf = audit.leaf_of(audit._content(_recorded(row, seq)))
            try:
                proof = merkle.inclusion_proof(nodes, seq - 1, base.size)
            except KeyError:
                return verify(conn, verifier)
            sig = base64.b64decode(row.sig) if row.sig else b""
            if not verifier.entry_ok(seq, leaf, sig) or not merkle.verify_inclusion(
                leaf, seq - 1, base.size, proof, base.root
            ):
                return verify(conn, verifier)
            checked += 1
    if newest is not None and newest.size > verified:
        conn.execute(update(_checkpoints).where(_checkpoints.c.size == newest.size).values(verified_at=utcnow()))
    return Report(True, compact.size, checkpoint_size=newest.size if newest else None, checked=checked)


# --- the app --------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    cfg = app.config
    signer = Signer.from_secret(_origin(cfg), _key_secret(cfg))
    app.extensions["auditlog"] = LogConfig(
        signer=signer,
        merge_delay=float(cfg.get("AUDIT_MERGE_DELAY_SECONDS", 2)),
        checkpoint_seconds=float(cfg.get("AUDIT_CHECKPOINT_SECONDS", 60)),
        push_url=str(cfg.get("REGULATOR_CHECKPOINT_URL") or ""),
        mode=str(cfg.get("AUDIT_SEQUENCER") or ("commit" if cfg.get("TESTING") else "background")),
    )
    log_cfg: LogConfig = app.extensions["auditlog"]
    # At most one pass per merge delay / 2 in each process (as the `flask audit sequencer` loop):
    # an entry waits at most that plus two passes. Every worker's thread pays a pass's fixed
    # cost (some 15 round trips, busy or not) at this rate, so a shorter interval bought no
    # bound it needs: at merge delay / 4, the threads took ~19 % of POST /visits' CPU in
    # bench/visits_bench.py.
    kick = float(cfg.get("AUDIT_KICK_SECONDS", max(0.05, log_cfg.merge_delay / 2)))
    log_cfg.kicker = _Kicker(app, interval=kick)
    audit.on_appended = _kick
    from clinic.core import jobs

    jobs.register(PUSH_JOB, _push_checkpoint)

    group = click.Group("audit", help="The audit log: sequencer, checkpoints, verification.")
    app.cli.add_command(group)

    @group.command("verify")
    @click.option(
        "--checkpoint",
        "checkpoint_file",
        type=click.File("r", encoding="utf-8"),
        default=None,
        help="A checkpoint kept outside the database.",
    )
    def verify_cmd(checkpoint_file: Any) -> None:
        """Re-hash the whole log against its signed checkpoints (and one kept outside); name the
        first bad entry. Exit 1 when anything does not match."""
        with db.engine.connect() as conn:
            report = verify(conn, config().verifier, checkpoint_file.read() if checkpoint_file else None)
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
        if not report.ok:
            raise SystemExit(1)

    @group.command("sequencer")
    @click.option("--once", is_flag=True, help="One pass (and a checkpoint if entries are unsigned), then stop.")
    def sequencer_cmd(once: bool) -> None:
        """Integrate pending entries every AUDIT_MERGE_DELAY_SECONDS / 2 and sign a checkpoint
        at least every AUDIT_CHECKPOINT_SECONDS while entries arrive."""
        from clinic.core import jobs

        log_cfg = config()
        while True:
            result = run_pass(log_cfg, force_checkpoint=once)
            if result.jobs:
                _hand_over_jobs(result.jobs)
                jobs.drain()
            if once:
                click.echo(
                    json.dumps({"integrated": result.integrated, "checkpoint": result.checkpoint, "busy": result.busy})
                )
                return
            db.session.remove()
            time.sleep(max(0.05, log_cfg.merge_delay / 2))

    @group.command("checkpoint")
    def checkpoint_cmd() -> None:
        """Print the latest signed checkpoint (to keep outside the database)."""
        with db.engine.connect() as conn:
            cp = latest_checkpoint(conn)
        if cp is None:
            raise click.ClickException("no checkpoint yet: run `flask audit sequencer --once`")
        click.echo(cp.note, nl=False)

    @group.command("public-key")
    def public_key_cmd() -> None:
        """Print the log's verifier key (name+id+key), for whoever keeps checkpoints."""
        click.echo(config().verifier.vkey())


# Re-exported for the timer-free callers (tests, CLI): sign now whatever is not yet signed.
def checkpoint_now(cfg: LogConfig | None = None) -> PassResult:
    result = run_pass(cfg or config(), force_checkpoint=True)
    _hand_over_jobs(result.jobs)
    return result


def verify_now(kept_note: str | None = None) -> Report:
    """The full check on a connection of its own, with the app's key (CLI, tests)."""
    with db.engine.connect() as conn:
        return verify(conn, config().verifier, kept_note)


def check_receipt(entry: dict[str, Any], proof: dict[str, Any], note: str, vkey: str) -> bool:
    """What an outsider runs, with nothing but the log's public key: the entry as
    GET /audit/entries/{seq} gives it, its inclusion proof (GET /audit/proof/inclusion) and a
    checkpoint they kept. True when the checkpoint is the log's, the entry's canonical bytes
    hash to its leaf, and the proof leads from that leaf to the checkpoint's root."""
    try:
        cp = Verifier.from_vkey(vkey).open(note)
    except NoteError:
        return False
    leaf = merkle.leaf_hash(str(entry["canonical"]).encode())
    if b64(leaf) != entry["leaf_hash"] or json.loads(entry["canonical"]).get("seq") != entry["seq"]:
        return False
    if int(proof["tree_size"]) != cp.size or int(proof["leaf_index"]) != int(entry["seq"]) - 1:
        return False
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    return merkle.verify_inclusion(leaf, int(proof["leaf_index"]), cp.size, hashes, cp.root)
