"""The waiting queues: what a physician may take next, and a patient's place in line."""

from __future__ import annotations

import uuid

from sqlalchemy import func, or_, select

from clinic.core.db import db
from clinic.visits.lifecycle import first_for, physician_account
from clinic.visits.models import Visit
from clinic.visits.rules import VisitStatus


def waiting_visits_for(physician_id: uuid.UUID) -> list[Visit]:
    """The physician's queue: visits that chose them, and (while on duty) their department's."""
    physician = physician_account(physician_id)
    dept = physician.staff.department_code if physician.staff else None
    on_duty = bool(physician.staff and physician.staff.on_duty)
    mine = Visit.requested_physician_id == physician.id
    routed = or_(mine, Visit.requested_physician_id.is_(None)) if on_duty else mine
    rows = list(
        db.session.scalars(
            select(Visit)
            .where(Visit.status == VisitStatus.WAITING, Visit.department == dept, routed)
            .order_by(Visit.created_at)
            .limit(200)
        )
    )
    # contracted patients' visits: their family-doctor team's first, held from the others a while
    first = first_for(physician.id, rows)
    theirs_first = [v for v in rows if first.get(v.id) == "mine"]
    return theirs_first + [v for v in rows if v.id not in first]


def queue_position(visit: Visit) -> int | None:
    """1 for the next visit to be taken in its queue; None once it is no longer waiting."""
    if visit.status != VisitStatus.WAITING:
        return None
    same_queue = (
        or_(Visit.requested_physician_id == visit.requested_physician_id, Visit.requested_physician_id.is_(None))
        if visit.requested_physician_id is not None
        else Visit.requested_physician_id.is_(None)
    )
    ahead = db.session.scalar(
        select(func.count())
        .select_from(Visit)
        .where(
            Visit.department == visit.department,
            Visit.status == VisitStatus.WAITING,
            Visit.created_at < visit.created_at,
            same_queue,
        )
    )
    return int(ahead or 0) + 1
