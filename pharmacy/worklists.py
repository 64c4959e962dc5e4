"""What the pharmacist's workspace lists: the review queue (with what this pharmacist
holds), the prescriptions they decided, and the approved ones waiting to be dispensed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select

from clinic.core.db import db, utcnow
from clinic.core.principal import Principal
from clinic.visits.models import Visit
from identity.models import StaffProfile
from pharmacy.models import Review
from pharmacy.rules import ReviewState
from pharmacy.services import qualified_pharmacist
from prescriptions.models import Prescription, PrescriptionStatus
from prescriptions.rules import Age, age_display


@dataclass(frozen=True)
class QueueSummary:
    waiting: int  # unclaimed (or abandoned) reviews
    mine: list[Review]  # what this pharmacist holds now
    to_dispense: list[Review]  # approved, not dispensed yet


def queue_summary(who: Principal) -> QueueSummary:
    """For the queue page: how many wait, and what this pharmacist holds now."""

    now = utcnow()
    waiting = db.session.scalar(
        select(func.count())
        .select_from(Review)
        .where(
            Review.state == ReviewState.PENDING, or_(Review.claim_expires_at.is_(None), Review.claim_expires_at < now)
        )
    )
    mine = db.session.scalars(
        select(Review)
        .where(
            Review.state == ReviewState.PENDING,
            Review.claimed_by == who.account_id,
            Review.claim_expires_at > now,
        )
        .order_by(Review.queued_at)
    ).all()
    to_dispense = db.session.scalars(
        select(Review)
        .join(Prescription, Prescription.id == Review.prescription_id)
        .where(Prescription.status == PrescriptionStatus.APPROVED)
        .order_by(Review.decided_at)
        .limit(50)
    ).all()
    return QueueSummary(int(waiting or 0), list(mine), list(to_dispense))


# --- the pharmacist's workspace: lists -----------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    """One prescription as the queue, the reviewed list and the dispensing list show it."""

    prescription_id: uuid.UUID
    status: str
    patient_name: str
    sex: str
    age: Age
    department: str  # code; the page shows its name
    icd10: str
    icd10_national: str | None  # the national clinical edition code the proof carried
    drugs: list[str]
    queued_at: datetime
    claimed_by_me: bool
    claimed_by_other: bool
    decision: str | None
    decided_at: datetime | None
    reasons: list[str]
    paid: bool
    collect: bool
    has_address: bool
    prepared_by: str = ""  # 调配: the name of the pharmacist who made it up, if recorded
    prepared_at: datetime | None = None
    prepared_by_me: bool = False


def _rows(reviews: list[Review], me: uuid.UUID, now: datetime) -> list[QueueRow]:
    if not reviews:
        return []
    ids = [r.prescription_id for r in reviews]
    rxs = {rx.id: rx for rx in db.session.scalars(select(Prescription).where(Prescription.id.in_(ids)))}
    visits = {
        v.id: v for v in db.session.scalars(select(Visit).where(Visit.id.in_([rx.visit_id for rx in rxs.values()])))
    }
    preparers = {
        s.account_id: s.name
        for s in db.session.scalars(
            select(StaffProfile).where(StaffProfile.account_id.in_({r.prepared_by for r in reviews if r.prepared_by}))
        )
    }
    rows = []
    for r in reviews:
        rx = rxs[r.prescription_id]
        visit = visits[rx.visit_id]
        held = r.state == ReviewState.PENDING and r.claim_expires_at is not None and r.claim_expires_at > now
        rows.append(
            QueueRow(
                prescription_id=rx.id,
                status=rx.status.value,
                patient_name=visit.patient.name,
                sex=visit.patient.sex,
                age=age_display(visit.patient.birth_date, now.date()),
                department=visit.department,
                icd10=rx.diagnosis_icd10,
                icd10_national=visit.diagnosis.icd10_national if visit.diagnosis.icd10 == rx.diagnosis_icd10 else None,
                drugs=[" ".join(p for p in (i.drug_name, i.strength) if p) for i in rx.items],
                queued_at=r.queued_at,
                claimed_by_me=held and r.claimed_by == me,
                claimed_by_other=held and r.claimed_by != me,
                decision=r.decision,
                decided_at=r.decided_at,
                reasons=[x.get("code", "") for x in (r.reasons or [])],
                paid=r.paid_at is not None,
                collect=bool(r.collect),
                has_address=bool(r.collect or r.address),
                prepared_by=preparers.get(r.prepared_by, "") if r.prepared_by else "",
                prepared_at=r.prepared_at,
                prepared_by_me=r.prepared_by == me,
            )
        )
    return rows


def queue_rows(who: Principal, limit: int = 100) -> list[QueueRow]:
    """Every prescription waiting for review, oldest first (who holds one is shown, not hidden)."""
    qualified_pharmacist(who)
    now = utcnow()
    reviews = db.session.scalars(
        select(Review)
        .join(Prescription, Prescription.id == Review.prescription_id)
        .where(Review.state == ReviewState.PENDING, Prescription.status == PrescriptionStatus.PENDING_REVIEW)
        .order_by(Review.queued_at)
        .limit(limit)
    ).all()
    return _rows(list(reviews), who.account_id, now)


def reviewed_rows(who: Principal, limit: int = 100) -> list[QueueRow]:
    """The prescriptions this pharmacist decided, newest first."""
    qualified_pharmacist(who)
    reviews = db.session.scalars(
        select(Review).where(Review.decided_by == who.account_id).order_by(Review.decided_at.desc()).limit(limit)
    ).all()
    return _rows(list(reviews), who.account_id, utcnow())


def dispense_rows(who: Principal, limit: int = 100) -> list[QueueRow]:
    """Approved prescriptions not dispensed yet, oldest decision first."""
    qualified_pharmacist(who)
    reviews = db.session.scalars(
        select(Review)
        .join(Prescription, Prescription.id == Review.prescription_id)
        .where(Prescription.status == PrescriptionStatus.APPROVED)
        .order_by(Review.decided_at)
        .limit(limit)
    ).all()
    return _rows(list(reviews), who.account_id, utcnow())
