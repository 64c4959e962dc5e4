"""Reading prescriptions: who may see one, the lists the pages show, and what the pharmacy
tells of its review (the approval JWS, the decision), which the app factory registers here
per app, since the pharmacy sits above this package.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from flask import Flask, current_app
from sqlalchemy import select

from clinic.core.db import db
from clinic.core.errors import NotFound
from clinic.core.principal import Principal
from prescriptions.models import Prescription
from prescriptions.rules import PrescriptionStatus

# --- who may see a prescription, and the lists the pages show ---------------------------------


def prescription_for(who: Principal, prescription_id: uuid.UUID) -> Prescription:
    """A prescription for its patient's account, its physician, or a pharmacist; 404 for anyone else."""
    rx = db.session.get(Prescription, prescription_id)
    allowed = rx is not None and (
        who.role == "pharmacist"
        or (who.role == "patient" and rx.account_id == who.account_id)
        or (who.role == "physician" and rx.physician_id == who.account_id)
    )
    if rx is None or not allowed:
        raise NotFound("No such prescription.")
    return rx


def visit_prescriptions(visit_id: uuid.UUID) -> list[Prescription]:
    """The prescriptions already signed in a visit, newest first."""
    return list(
        db.session.scalars(
            select(Prescription).where(Prescription.visit_id == visit_id).order_by(Prescription.signed_at.desc())
        )
    )


def prescriptions_of_visits(visit_ids: Iterable[uuid.UUID]) -> list[Prescription]:
    """The prescriptions signed in these visits, newest first (the visit room's history)."""
    ids = list(visit_ids)
    if not ids:
        return []
    return list(
        db.session.scalars(
            select(Prescription).where(Prescription.visit_id.in_(ids)).order_by(Prescription.signed_at.desc())
        )
    )


def ended_unrevised(physician_id: uuid.UUID) -> list[Prescription]:
    """This physician's returned or rejected prescriptions that no revision replaces yet, newest first."""
    revised = select(Prescription.replaces_id).where(Prescription.replaces_id.is_not(None))
    return list(
        db.session.scalars(
            select(Prescription)
            .where(
                Prescription.physician_id == physician_id,
                Prescription.status.in_((PrescriptionStatus.RETURNED, PrescriptionStatus.REJECTED)),
                Prescription.id.not_in(revised),
            )
            .order_by(Prescription.status_changed_at.desc())
            .limit(50)
        )
    )


def replaced_by(rx_id: uuid.UUID) -> Prescription | None:
    return db.session.scalars(select(Prescription).where(Prescription.replaces_id == rx_id)).first()


# --- what the pharmacy tells of its review ------------------------------------------------------


@dataclass(frozen=True)
class ReviewOutcome:
    """The pharmacist's decision on a prescription as the physician reads it."""

    decision: str  # approve | reject | return
    reasons: tuple[str, ...]  # codes of the review standard
    note: str
    decided_at: datetime | None
    pharmacist: str  # the deciding pharmacist's name


# The pharmacist's decision lives in the pharmacy, which sits above this package: the app
# factory registers its reader here, per app.
ReviewReader = Callable[[uuid.UUID], ReviewOutcome | None]
REVIEW_READ = "prescriptions.review_read"


def on_review_read(app: Flask, reader: ReviewReader) -> None:
    """`reader(rx_id)` answers the pharmacist's decision on a prescription in this app, or None."""
    app.extensions.setdefault(REVIEW_READ, []).append(reader)


def review_outcome(rx_id: uuid.UUID) -> ReviewOutcome | None:
    """The pharmacist's decision (reasons, note, when, who) once one was made; else None."""
    readers: list[ReviewReader] = current_app.extensions.get(REVIEW_READ, [])
    for reader in readers:
        found = reader(rx_id)
        if found is not None:
            return found
    return None


# The pharmacist's approval JWS of a prescription lives with the pharmacy's review; the app
# factory registers where to read it, per app (nothing here imports the pharmacy package).
ApprovalLookup = Callable[[uuid.UUID], str | None]
APPROVAL_LOOKUP = "prescriptions.approval_lookup"


def on_approval_lookup(app: Flask, source: ApprovalLookup) -> None:
    """`source(rx_id)` answers the pharmacist's approval JWS of a prescription in this app, or None."""
    app.extensions.setdefault(APPROVAL_LOOKUP, []).append(source)


def approval_jws(rx_id: uuid.UUID) -> str | None:
    """The pharmacist's approval JWS of a prescription (every time it is asked), or None."""
    sources: list[ApprovalLookup] = current_app.extensions.get(APPROVAL_LOOKUP, [])
    for source in sources:
        token = source(rx_id)
        if token:
            return token
    return None
