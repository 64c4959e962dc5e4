"""The tamper-evident audit trail: recording.

Every security and clinical event is recorded through `record()`. Entries are buffered in
the session and written at commit time, in one place, by one INSERT into `audit_pending`:
no lock that other writers wait for. The sequencer (clinic.core.audit_sequencer) then gives them
their gapless sequence numbers and integrates them into an RFC 6962 Merkle tree whose
checkpoints the log signs, so a changed, inserted, deleted or reordered entry is found
against any checkpoint kept outside the database.
A rolled-back transaction leaves no audit entry; refusals that must be kept are
recorded by the commit point in a transaction of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, event, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from clinic.core import merkle
from clinic.core.db import Base, utcnow


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


class _Recorded:
    """What an entry records (and its leaf covers, with its seq)."""

    at: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(80))
    subject_type: Mapped[str | None] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_ip: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(_Recorded, Base):
    """A sequenced entry: its place in the log (seq, from 1) and the log's signature on it."""

    __tablename__ = "audit_entries"
    # The viewer's filters; the pending table has none, so the writer's INSERT stays cheap.
    __table_args__ = (
        Index("ix_audit_entries_actor_id", "actor_id"),
        Index("ix_audit_entries_action", "action"),
        Index("ix_audit_entries_subject_id", "subject_id"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # The signed entry timestamp: Ed25519 over (log, seq, leaf hash), base64; made by the
    # sequencer with the log's key (clinic.core.audit_sequencer), never stored with the key.
    sig: Mapped[str | None] = mapped_column(String(88))

    def content(self) -> dict[str, Any]:
        return _content({name: getattr(self, name) for name in _HASHED})

    def leaf_hash(self) -> bytes:
        return leaf_of(self.content())

    @property
    def hash(self) -> str:
        """The leaf hash in hex (the viewer's and the regulator feed's `hash`)."""
        return self.leaf_hash().hex()


class AuditPending(_Recorded, Base):
    """An entry recorded but not yet given its place: one INSERT by the writer, no lock."""

    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)


# What an entry's leaf covers: its place and everything it records.
_HASHED = ("seq", "at", "actor_id", "actor_role", "action", "subject_type", "subject_id", "detail", "client_ip")
_GIVEN = tuple(name for name in _HASHED if name != "seq")


def _content(entry: dict[str, Any]) -> dict[str, Any]:
    content = {name: entry[name] for name in _HASHED}
    content["at"] = content["at"].isoformat()
    return content


def canonical(content: dict[str, Any]) -> bytes:
    """The canonical entry bytes: JSON, keys sorted, no spaces, UTF-8."""
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def leaf_of(content: dict[str, Any]) -> bytes:
    """RFC 6962 leaf hash of an entry: SHA-256(0x00 ‖ canonical entry)."""
    return merkle.leaf_hash(canonical(content))


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


# The append: one INSERT of the transaction's entries into audit_pending, in the commit
# (a prebuilt Core statement; the entries are never read back through the session). No row
# that every writer waits for: the sequencer (clinic.core.audit_sequencer) gives them their seq and
# their place in the Merkle tree after the commit, under a lock of its own.
_APPEND = insert(AuditPending).execution_options(preserve_rowcount=True)

# Set by clinic.core.audit_sequencer: called after a commit that appended entries (the sequencer's kick).
on_appended: Callable[[], None] | None = None
# Benchmarks only (bench/audit_bench.py): drop the append, to measure what it costs.
bench_skip_append = False


def _write_pending(session: Session) -> None:
    pending = session.info.pop("audit_pending", None)
    if not pending or bench_skip_append:
        return
    session.connection().execute(_APPEND, pending)
    session.info["audit_appended"] = True


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    _write_pending(session)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # SQLAlchemy also calls this when a SAVEPOINT is released (begin_nested): the entries are
    # not committed yet, and a sequencer pass on its own connection would wait for this
    # transaction's write lock (SQLite: the whole busy timeout). The root commit kicks it.
    if session.in_nested_transaction():
        return
    if session.info.pop("audit_appended", None) and on_appended is not None:
        on_appended()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop("audit_pending", None)
    session.info.pop("audit_appended", None)
