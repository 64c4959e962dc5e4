"""A signed prescription's lifecycle: the one place its status moves (pharmacy review,
dispensing, delivery, expiry, voiding), by `rules.transition` and audited as
`prescription.<new status>`, and announced to the packages above (`prescriptions.events`).

Each function flushes; the caller (request, CLI command, job) commits.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, Invalid
from clinic.core.principal import Principal
from prescriptions import events, rules
from prescriptions.models import Prescription
from prescriptions.reads import prescription_for
from prescriptions.rules import PrescriptionEvent, PrescriptionStatus


def transition(
    rx: Prescription, event: PrescriptionEvent, *, reason: str | None = None, now: datetime | None = None
) -> Prescription:
    """Move a prescription through its lifecycle (pharmacy review, dispensing, delivery,
    expiry, voiding) by `rules.transition`, audited as `prescription.<new status>`."""
    now = now or utcnow()
    before = rx.status
    rx.status = rules.transition(before, event)
    rx.status_changed_at = now
    events.status_changed(db.session(), rx, before)
    if rx.status == PrescriptionStatus.DISPENSED:
        rx.dispensed_at = now
    audit.record(
        db.session(),
        f"prescription.{rx.status.value}",
        subject_type="prescription",
        subject_id=rx.id,
        detail={"from": before.value, "reason": reason},
    )
    db.session.flush()
    return rx


_EXPIRING = (PrescriptionStatus.PENDING_REVIEW, PrescriptionStatus.APPROVED)


def overdue_prescriptions(now: datetime) -> list[uuid.UUID]:
    """Prescriptions not approved and dispensed within their validity, oldest first."""
    return list(
        db.session.scalars(
            select(Prescription.id)
            .where(Prescription.status.in_(_EXPIRING), Prescription.expires_at <= now)
            .order_by(Prescription.expires_at)
        )
    )


def expire_if_overdue(rx_id: uuid.UUID, now: datetime) -> bool:
    """Expire one prescription if it is (still) overdue; False if it moved on meanwhile."""
    rx = db.session.get(Prescription, rx_id)
    if rx is None or rx.status not in _EXPIRING or rx.expires_at > now:
        return False
    transition(rx, PrescriptionEvent.EXPIRE, reason="validity ended", now=now)
    return True


def expire_overdue(now: datetime | None = None) -> int:
    """Expire every overdue prescription in this transaction (`flask drugs expire` commits each)."""
    now = now or utcnow()
    return sum(expire_if_overdue(rx_id, now) for rx_id in overdue_prescriptions(now))


def void_prescription(who: Principal, prescription_id: uuid.UUID, reason: str) -> Prescription:
    """The physician voids their own prescription before a pharmacist has decided on it."""
    rx = prescription_for(who, prescription_id)
    reason = reason.strip()
    if not 2 <= len(reason) <= 500:
        raise Invalid("Say why the prescription is voided (2 to 500 characters).", field="reason")
    if rx.status != PrescriptionStatus.PENDING_REVIEW:
        raise Conflict("Only a prescription still waiting for review can be voided.", code="not_voidable")
    rx.void_reason = reason
    return transition(rx, PrescriptionEvent.CANCEL, reason=reason)
