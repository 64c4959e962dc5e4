"""Private file storage for uploads (diagnosis documents, message images, face photos).

Files live under the instance folder, never under the web root, and are served only
by views that check who is asking. A file saved during a transaction that then rolls
back is deleted again, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from clinic.core.config import settings
from clinic.core.db import db


def root() -> Path:
    base = Path(settings().UPLOAD_DIR or Path(current_app.instance_path) / "uploads")
    base.mkdir(parents=True, exist_ok=True)
    return base


def save(kind: str, data: bytes, ext: str) -> str:
    """Write `data` under <root>/<kind>/ and return its relative path."""
    rel = Path(kind) / f"{uuid.uuid4().hex}.{ext.lstrip('.')}"
    path = root() / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    db.session().info.setdefault("files_written", []).append(path)
    return rel.as_posix()


def load(rel: str) -> bytes:
    path = (root() / rel).resolve()
    if root().resolve() not in path.parents:
        raise FileNotFoundError(rel)
    return path.read_bytes()


@event.listens_for(Session, "after_rollback")
def _remove_orphans(session: Session) -> None:
    for path in session.info.pop("files_written", []):
        Path(path).unlink(missing_ok=True)


@event.listens_for(Session, "after_commit")
def _keep_files(session: Session) -> None:
    session.info.pop("files_written", None)
