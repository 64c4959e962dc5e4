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

Where each part lives: this module holds the log's tables, its configuration and the
reading of the stored tree; the sequencer and checkpoint signing are
`clinic.core.audit_sequencer` (whose `init_app` starts the log), verification is
`clinic.core.audit_verify`, and the `flask audit ...` commands are `clinic.core.audit_cli`.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flask import current_app
from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, SmallInteger, String, Table, Text, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core import audit
from clinic.core.db import Base
from clinic.core.signed_note import Signer, Verifier

if TYPE_CHECKING:
    from clinic.core.audit_sequencer import Kicker


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
    kicker: Kicker | None = None

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


def from_app_config(cfg: dict[str, Any]) -> LogConfig:
    """The log's configuration from the app's settings (its key and origin, the delays, the mode)."""
    return LogConfig(
        signer=Signer.from_secret(_origin(cfg), _key_secret(cfg)),
        merge_delay=float(cfg.get("AUDIT_MERGE_DELAY_SECONDS", 2)),
        checkpoint_seconds=float(cfg.get("AUDIT_CHECKPOINT_SECONDS", 60)),
        push_url=str(cfg.get("REGULATOR_CHECKPOINT_URL") or ""),
        mode=str(cfg.get("AUDIT_SEQUENCER") or ("commit" if cfg.get("TESTING") else "background")),
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


def recorded(row: Any, seq: int) -> dict[str, Any]:
    """What a stored row (pending or sequenced) records, with its place `seq`."""
    return {"seq": seq, **{name: getattr(row, name) for name in audit._GIVEN}}


def row_leaf(row: Any, seq: int) -> bytes:
    """The leaf hash of a stored row at place `seq`: what its signature and the tree cover."""
    return audit.leaf_of(audit._content(recorded(row, seq)))
