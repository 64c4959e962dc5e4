"""The tamper-evident audit trail.

Every security and clinical event is recorded through `record()`. Entries are buffered
in the session and written at commit time, in one place, after taking the chain head's
row lock: each entry carries the hash of the one before it and a gapless sequence
number, so a changed, inserted or deleted entry breaks the chain at that point.
A rolled-back transaction leaves no audit entry; refusals that must be kept are
recorded by the commit point in a transaction of their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, event, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from clinic.core.db import Base, utcnow

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    id: str | None
    role: str
    client_ip: str | None = None


SYSTEM = Actor(id=None, role="system")
_current_actor: ContextVar[Actor] = ContextVar("current_actor", default=SYSTEM)


def set_actor(actor: Actor) -> None:
    _current_actor.set(actor)


def current_actor() -> Actor:
    return _current_actor.get()


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    token = _current_actor.set(actor)
    try:
        yield
    finally:
        _current_actor.reset(token)


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor_role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(80), index=True)
    subject_type: Mapped[str | None] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def content(self) -> dict[str, Any]:
        return _content({name: getattr(self, name) for name in _HASHED})


# What an entry's hash covers: everything but the hashes themselves.
_HASHED = ("seq", "at", "actor_id", "actor_role", "action", "subject_type", "subject_id", "detail", "client_ip")


def _content(entry: dict[str, Any]) -> dict[str, Any]:
    content = {name: entry[name] for name in _HASHED}
    content["at"] = content["at"].isoformat()
    return content


class AuditHead(Base):
    """One row: the last sequence number and hash. Locked while entries are appended."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default=GENESIS)


def entry_hash(prev_hash: str, content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def record(
    session: Session,
    action: str,
    *,
    subject_type: str | None = None,
    subject_id: object = None,
    detail: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> None:
    """Record an event; it is written when (and only if) the transaction commits."""
    who = actor or current_actor()
    pending = session.info.setdefault("audit_pending", [])
    pending.append(
        {
            "at": utcnow(),
            "actor_id": who.id,
            "actor_role": who.role,
            "action": action,
            "subject_type": subject_type,
            "subject_id": None if subject_id is None else str(subject_id),
            "detail": _jsonable(detail or {}),
            "client_ip": who.client_ip,
        }
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


# Prebuilt Core statements: the append runs on every audited request, so it skips the
# ORM's unit of work (the entries are never read back through the session).
_LOCK_HEAD = (
    update(AuditHead)
    .where(AuditHead.id == 1)
    .values(last_seq=AuditHead.last_seq)
    .returning(AuditHead.last_seq, AuditHead.last_hash)
)
_INSERT_ENTRIES = insert(AuditEntry)


def _write_pending(session: Session) -> None:
    pending = session.info.pop("audit_pending", None)
    if not pending:
        return
    conn = session.connection()
    # Take the chain head's write lock first (an UPDATE locks on every backend, SQLite
    # included) and read it in the same statement: no two transactions can fork the chain.
    row = conn.execute(_LOCK_HEAD).first()
    if row is None:
        raise RuntimeError("the audit chain head is missing: run the migrations (flask db upgrade)")
    seq, prev = row
    entries = []
    for item in pending:
        seq += 1
        entry = {"seq": seq, "prev_hash": prev, **item}
        entry["hash"] = prev = entry_hash(prev, _content(entry))
        entries.append(entry)
    # The trigger audit_entries_move_head (migration audit_0002) moves the head to the
    # last entry inserted, inside this statement.
    conn.execute(_INSERT_ENTRIES, entries)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    _write_pending(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop("audit_pending", None)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None


def verify_chain(session: Session) -> ChainReport:
    """Recompute every hash in order; name the first entry that does not fit."""
    prev, expected_seq, count = GENESIS, 1, 0
    rows = session.execute(select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=1000))
    for entry in rows.scalars():
        count += 1
        if entry.seq != expected_seq:
            return ChainReport(False, count, expected_seq, f"entry {expected_seq} is missing")
        if entry.prev_hash != prev:
            return ChainReport(False, count, entry.seq, "previous-hash link does not match")
        if entry_hash(prev, entry.content()) != entry.hash:
            return ChainReport(False, count, entry.seq, "content does not match its hash")
        prev, expected_seq = entry.hash, expected_seq + 1
    head = session.get(AuditHead, 1)
    if head is not None and (head.last_seq != count or head.last_hash != prev):
        return ChainReport(
            False, count, count + 1 if head.last_seq > count else count, "entries after the last one are missing"
        )
    return ChainReport(True, count)
