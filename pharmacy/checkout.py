"""The patient's side of a reviewed prescription: where the medicines go, the drug fee, and
where they are now.

The drug fee is owed after approval (PaymentsPort, purpose "drug_fee"); with payments off
it is waived at approval, i.e. payable on collection/delivery outside the system. A patient
whose approved prescription is about to expire unpaid is told once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, RuleRefusal
from clinic.core.pages import bj
from clinic.core.principal import Principal
from clinic.payments.services import StartedPayment
from identity.models import StaffProfile
from pharmacy import delivery as deliveries
from pharmacy import notify, regions, rules
from pharmacy.models import Delivery, Review
from pharmacy.services import locked_review
from prescriptions import reads as rx_reads
from prescriptions.models import Prescription, PrescriptionStatus

# --- the drug fee and where it goes ------------------------------------------------------------------


def checkout(
    who: Principal,
    prescription_id: uuid.UUID,
    *,
    collect: bool,
    recipient_name: str | None,
    phone: str | None,
    address: str | None,
    region_code: str | None,
) -> tuple[Review, StartedPayment | None]:
    """The patient says where the medicines go and (payments on) starts paying the drug fee."""
    rx = rx_reads.prescription_for(who, prescription_id)
    review = locked_review(rx.id)
    if review is None or rx.status != PrescriptionStatus.APPROVED:
        raise Conflict("Only an approved prescription that is not dispensed yet can be paid.", code="not_approved")
    if not collect:
        problems = rules.address_violations(recipient_name, phone, regions.place(region_code) is not None, address)
        if problems:
            raise RuleRefusal("invalid", problems)
        phone = rules.mainland_mobile(phone)
    review.collect = collect
    review.recipient_name, review.recipient_phone = recipient_name, phone
    review.address, review.region_code = address, region_code
    payment = None
    port = current_app.extensions.get("payments")
    if review.paid_at is None and port is not None and review.fee_fen > 0:
        payment = port.start("drug_fee", rx.id, review.fee_fen, f"药费 处方 {str(rx.id)[:8]}")
    audit.record(
        db.session(),
        "prescription.checkout",
        subject_type="prescription",
        subject_id=rx.id,
        detail={"collect": collect, "region_code": region_code, "payment": bool(payment)},
    )
    db.session.flush()
    return review, payment


def mark_drug_fee_paid(prescription_id: uuid.UUID) -> Review | None:
    """Called by payments once the drug fee has been paid."""
    review = locked_review(prescription_id)
    if review is None or review.paid_at is not None:
        return review
    review.paid_at = utcnow()
    audit.record(db.session(), "prescription.drug_fee_paid", subject_type="prescription", subject_id=prescription_id)
    return review


@dataclass(frozen=True)
class DeliveryView:
    """Where the medicines are (the API's DeliveryOut, the tracking page)."""

    prescription_id: str
    prescription_status: str
    partner: dict[str, str] | None
    status: str  # the delivery's, or "not_dispensed"
    events: list[dict[str, Any]]
    paid: bool
    fee_fen: int
    waybill_no: str | None = None


def delivery_view(who: Principal, prescription_id: uuid.UUID) -> DeliveryView:
    """Where the medicines are, for the patient's account or a pharmacist."""
    rx = rx_reads.prescription_for(who, prescription_id)
    delivery = deliveries.delivery_of(rx.id)
    review = db.session.get(Review, rx.id)
    paid, fee_fen = bool(review and review.paid_at), review.fee_fen if review else 0
    if delivery is None:
        return DeliveryView(str(rx.id), rx.status.value, None, "not_dispensed", [], paid, fee_fen)
    return DeliveryView(
        prescription_id=str(rx.id),
        prescription_status=rx.status.value,
        partner={"id": str(delivery.partner.id), "name": delivery.partner.name} if delivery.partner else None,
        status=delivery.status.value,
        waybill_no=delivery.waybill_no,
        events=[{"status": e.status, "at": e.at, "waybill_no": e.waybill_no} for e in delivery.events],
        paid=paid,
        fee_fen=fee_fen,
    )


@dataclass(frozen=True)
class PatientPrescription:
    """One line of the patient's prescriptions centre."""

    rx: Prescription
    physician_name: str
    fee_fen: int
    paid: bool
    delivery_status: str


def patient_prescriptions(account_id: uuid.UUID, visit_id: uuid.UUID | None = None) -> list[PatientPrescription]:
    """Every prescription of the people on the account (or of one visit), newest first."""
    query = select(Prescription).where(Prescription.account_id == account_id)
    if visit_id is not None:
        query = query.where(Prescription.visit_id == visit_id)
    rows = list(db.session.scalars(query.order_by(Prescription.signed_at.desc()).limit(200)))
    ids = [rx.id for rx in rows]
    reviews = {r.prescription_id: r for r in db.session.scalars(select(Review).where(Review.prescription_id.in_(ids)))}
    by_rx = {
        d.prescription_id: d for d in db.session.scalars(select(Delivery).where(Delivery.prescription_id.in_(ids)))
    }
    names = {
        s.account_id: s.name
        for s in db.session.scalars(
            select(StaffProfile).where(StaffProfile.account_id.in_({rx.physician_id for rx in rows}))
        )
    }
    out = []
    for rx in rows:
        review = reviews.get(rx.id)
        delivery = by_rx.get(rx.id)
        out.append(
            PatientPrescription(
                rx=rx,
                physician_name=names.get(rx.physician_id, ""),
                fee_fen=review.fee_fen if review else 0,
                paid=bool(review and review.paid_at),
                delivery_status=delivery.status.value if delivery else "not_dispensed",
            )
        )
    return out


@dataclass(frozen=True)
class SavedAddress:
    recipient_name: str
    phone: str
    region_code: str
    address: str

    @property
    def phone_local(self) -> str:
        return self.phone[3:] if self.phone.startswith("+86") else self.phone

    @property
    def place_label(self) -> str:
        found = regions.place(self.region_code)
        return found.label if found else ""


def saved_address(account_id: uuid.UUID, prescription_id: uuid.UUID | None = None) -> SavedAddress | None:
    """The address given for this prescription, else the newest one the account gave (reused)."""
    query = (
        select(Review)
        .join(Prescription, Prescription.id == Review.prescription_id)
        .where(Prescription.account_id == account_id, Review.region_code.is_not(None))
        .order_by((Review.prescription_id == prescription_id).desc(), Prescription.signed_at.desc())
        .limit(1)
    )
    review = db.session.scalars(query).first()
    if review is None or not review.region_code or review.collect:
        return None
    return SavedAddress(
        review.recipient_name or "", review.recipient_phone or "", review.region_code, review.address or ""
    )


def remind_expiring_unpaid(now: datetime, within: timedelta) -> int:
    """Tell each patient whose approved prescription expires within `within` with its drug
    fee unpaid: once per prescription (a second run tells nobody again)."""
    from clinic.notifications.models import InboxNotification

    due = db.session.scalars(
        select(Prescription)
        .join(Review, Review.prescription_id == Prescription.id)
        .where(
            Prescription.status == PrescriptionStatus.APPROVED,
            Prescription.expires_at > now,
            Prescription.expires_at <= now + within,
            Review.paid_at.is_(None),
            Review.fee_waived.is_(False),
        )
    ).all()
    told = 0
    for rx in due:
        already = db.session.scalars(
            select(InboxNotification.id).where(
                InboxNotification.kind == "expiring", InboxNotification.subject_id == str(rx.id)
            )
        ).first()
        if already is None:
            notify.tell_patient(db.session(), "expiring", rx.id, until=bj(rx.expires_at))
            told += 1
    return told
