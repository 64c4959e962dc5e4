"""Records retention, applied: the purge of visit communication past its 3-year period
(`flask retention purge`, clinic/regulator/cli.py). What may go is decided by the pure
rule in clinic/regulator/retention.py; nothing but VisitMessage rows is ever deleted here.

Each batch is its own unit of work (the CLI commits it); the purge is audited.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select

from clinic.core import audit, storage
from clinic.core.db import db
from clinic.regulator import retention, rules
from clinic.visits.models import Visit, VisitMessage


@dataclass
class PurgeBatch:
    messages: int
    images: int
    visits: list[str]
    files: list[str]
    last_id: uuid.UUID | None = None


def purgeable_message_count(now: datetime) -> int:
    cut = retention.cutoff(now)
    return int(
        db.session.scalar(
            select(func.count(VisitMessage.id))
            .join(Visit, Visit.id == VisitMessage.visit_id)
            .where(Visit.closed_at.is_not(None), Visit.closed_at <= cut)
        )
        or 0
    )


def purge_message_batch(now: datetime, batch_size: int, dry_run: bool, after: uuid.UUID | None = None) -> PurgeBatch:
    """Delete (or, dry, only list) one batch of messages whose visit closed more than
    3 years before `now`. Only VisitMessage rows are ever deleted here; the files of
    their images are returned so the caller removes them after the commit."""
    session = db.session()
    cut = retention.cutoff(now)
    q = (
        select(VisitMessage.id, VisitMessage.visit_id, VisitMessage.image_path, Visit.closed_at)
        .join(Visit, Visit.id == VisitMessage.visit_id)
        .where(Visit.closed_at.is_not(None), Visit.closed_at <= cut)
        .order_by(VisitMessage.id)
        .limit(batch_size)
    )
    if after is not None:
        q = q.where(VisitMessage.id > after)
    rows = [
        r
        for r in session.execute(q)
        if retention.purgeable("message", r.closed_at, now)  # the pure rule has the last word
    ]
    ids = [r.id for r in rows]
    files = [r.image_path for r in rows if r.image_path]
    visits = sorted({str(r.visit_id) for r in rows})
    if ids and not dry_run:
        session.execute(delete(VisitMessage).where(VisitMessage.id.in_(ids)))
        audit.record(
            session,
            "retention.purged",
            subject_type="visit_messages",
            detail={
                "messages": len(ids),
                "images": len(files),
                "visits": visits,
                "cutoff": rules.rfc3339(cut),
                "rule": f"communication kept {retention.COMMUNICATION_YEARS} years after the visit closed",
            },
        )
        session.flush()
    return PurgeBatch(len(ids), len(files), visits, files, ids[-1] if ids else None)


def remove_stored_files(paths: list[str]) -> int:
    """Remove message images from private storage (after the deleting commit)."""
    removed = 0
    base = storage.root().resolve()
    for rel in paths:
        path = (base / rel).resolve()
        if base not in path.parents:
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed
