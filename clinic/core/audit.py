"""The tamper-evident audit trail.

Every security and clinical event is recorded through `record()`. Entries are buffered
in the session and written at commit time, in one place, by a statement that locks the
chain head's row: each entry carries the hash of the one before it and a gapless sequence
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

from sqlalchemy import JSON, Integer, String, bindparam, cast, event, func, insert, select
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


def _canonical(content: dict[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def entry_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + _canonical(content)).encode()).hexdigest()


def _canonical_around_seq(item: dict[str, Any]) -> tuple[str, str]:
    """An entry's canonical text in two parts, for the database to put its seq between.

    `before + str(seq) + after == _canonical(content)`: the keys are sorted, so those
    before "seq" and those after it each make one object, joined at the seq key.
    """
    content = _content({**item, "seq": 0})
    del content["seq"]
    lower = {k: v for k, v in content.items() if k < "seq"}
    upper = {k: v for k, v in content.items() if k > "seq"}
    return _canonical(lower)[:-1] + ',"seq":', "," + _canonical(upper)[1:]


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


# The append, one prebuilt Core statement per entry (it runs on every audited request, so
# it skips the ORM's unit of work; the entries are never read back through the session).
# It locks the chain head (FOR UPDATE; SQLite has one writer at a time anyway), takes the
# next sequence number and the last hash from it, and hashes the canonical text around
# that sequence number: no two transactions can fork the chain, and the head is held
# only from this statement to the commit. The trigger audit_entries_move_head (migration
# audit_0002) then moves the head to the entry just inserted, inside the same statement.
# The rows it inserts are counted (preserve_rowcount), executemany included.
_head = AuditHead.__table__
_entries = AuditEntry.__table__
_NEXT_SEQ = _head.c.last_seq + 1
_GIVEN = tuple(name for name in _HASHED if name != "seq")
_APPEND = (
    insert(AuditEntry)
    .from_select(
        ["seq", "prev_hash", "hash", *_GIVEN],
        select(
            _NEXT_SEQ,
            _head.c.last_hash,
            func.sha256_hex(
                _head.c.last_hash
                + bindparam("text_before", type_=String())
                + cast(_NEXT_SEQ, String)
                + bindparam("text_after", type_=String())
            ),
            *(bindparam(name, type_=_entries.c[name].type) for name in _GIVEN),
        )
        .where(_head.c.id == 1)
        .with_for_update(),
    )
    .execution_options(preserve_rowcount=True)
)


def _write_pending(session: Session) -> None:
    pending = session.info.pop("audit_pending", None)
    if not pending:
        return
    rows = []
    for item in pending:
        before, after = _canonical_around_seq(item)
        rows.append({**item, "text_before": before, "text_after": after})
    # In order, each row after the one before it (several rows: executemany, one by one).
    result = session.connection().execute(_APPEND, rows)
    if result.rowcount != len(rows):
        raise RuntimeError("the audit chain head is missing: run the migrations (flask db upgrade)")


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
