"""Idempotent writes: a client names a request with an `Idempotency-Key` header and any
repeat of it gets the first answer instead of doing the work again (issue 21 item 6).

The key is the caller's (account) and the operation's: the same key on another
operation or by someone else is another request. The stored answer carries a fingerprint
of the request (method, path, body); a repeat with the same key but another request is
refused (422 `idempotency_key_reused`) rather than answered with something it did not ask
for. Keys are kept for `TTL`; an older key is a new request.

The first request stores its answer in its own transaction (the request's single commit
point), so an answer exists exactly when the work it describes was committed.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Integer, String, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from clinic.core.db import Base, db, utcnow
from clinic.core.errors import DomainError, Invalid

HEADER = "Idempotency-Key"
TTL = timedelta(hours=24)
KEY_SHAPE = re.compile(r"^[A-Za-z0-9._:~-]{8,128}$")


class IdempotentRequest(Base):
    __tablename__ = "idempotent_requests"

    account_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    operation: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class KeyReused(Invalid):
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class Replay:
    status: int
    response: dict[str, Any]


def checked_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    key = raw.strip()
    if not KEY_SHAPE.match(key):
        raise Invalid(
            "The Idempotency-Key header must be 8 to 128 letters, digits or . _ : ~ -.",
            fields=[{"loc": HEADER, "message": "8-128 of [A-Za-z0-9._:~-]"}],
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


def replay(account_id: uuid.UUID, operation: str, key: str, print_: str) -> Replay | None:
    """The first answer to this key, if there is one (a different request under it is refused)."""
    row = db.session.get(IdempotentRequest, (account_id, operation, key))
    if row is None or row.created_at < utcnow() - TTL:
        return None
    if row.fingerprint != print_:
        raise KeyReused(
            "This Idempotency-Key was already used for a different request; use a new key for a new request."
        )
    return Replay(row.status, row.response)


def remember(
    account_id: uuid.UUID, operation: str, key: str, print_: str, status: int, response: dict[str, Any]
) -> None:
    """Store the answer beside the work, in the same transaction (flushed now: a concurrent
    first request with the same key meets the primary key here, not at commit)."""
    session = db.session()
    session.execute(
        delete(IdempotentRequest).where(
            IdempotentRequest.account_id == account_id,
            IdempotentRequest.operation == operation,
            IdempotentRequest.key == key,
            IdempotentRequest.created_at < utcnow() - TTL,
        )
    )
    session.add(
        IdempotentRequest(
            account_id=account_id, operation=operation, key=key, fingerprint=print_, status=status, response=response
        )
    )
    session.flush()


def run_once(
    account_id: uuid.UUID, operation: str, key: str, print_: str, work: Callable[[], tuple[int, dict[str, Any]]]
) -> tuple[Replay, bool]:
    """Do `work` once per key: (its answer, False), or the stored first answer (…, True).

    Two requests with the same key at the same moment: the second meets the first's write
    (the record both change, or this key's row) and waits for it; when it loses the race
    (StaleDataError, IntegrityError) it rolls back and answers what the first one stored.
    A refused request stores nothing: the client may send it again under the same key.
    """
    hit = replay(account_id, operation, key, print_)
    if hit is not None:
        return hit, True
    try:
        status, body = work()
        remember(account_id, operation, key, print_, status, body)
    except (StaleDataError, IntegrityError):
        db.session.rollback()
        hit = replay(account_id, operation, key, print_)
        if hit is None:
            raise
        return hit, True
    except DomainError:
        # Refused because the first request under this key committed while this one was
        # being checked (e.g. its prescription now counts as a duplicate): the first answer.
        hit = replay(account_id, operation, key, print_)
        if hit is None:
            raise
        db.session.rollback()
        return hit, True
    return Replay(status, body), False
