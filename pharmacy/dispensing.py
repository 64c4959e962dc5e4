"""Dispensing: 调配 (made up by one pharmacist) and 核对、发药 (checked and issued by another).

`dispense` needs approval AND payment (no 先药后方) and two pharmacists: one who made it up
(`prepare`, or named) and another who checked and issued it; it happens once (the
prescription's transition function refuses a second), then routes the delivery
(pharmacy.delivery). The prescription's status then follows its delivery to the door.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clinic.core import audit
from clinic.core.db import as_uuid, db, get_or_404, utcnow
from clinic.core.errors import Conflict, DomainError, Invalid
from clinic.core.principal import Principal
from identity.models import Account, Role, StaffProfile
from identity.services import require_qualified_pharmacist
from pharmacy import delivery as deliveries
from pharmacy import notify, rules
from pharmacy.models import Delivery, Review
from pharmacy.rules import DeliveryStatus
from pharmacy.services import locked_review, qualified_pharmacist
from prescriptions import lifecycle as rx_lifecycle
from prescriptions.document import ReviewFacts
from prescriptions.models import Prescription, PrescriptionStatus
from prescriptions.rules import PrescriptionEvent


def _rx(prescription_id: uuid.UUID) -> Prescription:
    return get_or_404(Prescription, prescription_id, "No such prescription.")


class DrugFeeUnpaid(Conflict):
    code = "drug_fee_unpaid"
    default_message = "The drug fee is not paid: nothing is dispensed before an approved, paid prescription."


class NoDeliveryAddress(Conflict):
    code = "no_delivery_address"
    default_message = "The patient has not said where the medicines go (delivery address or collection)."


def _patient_phone(rx: Prescription) -> str | None:
    account = db.session.get(Account, rx.account_id)
    return account.phone if account is not None else None


def document_facts(rx_id: uuid.UUID) -> ReviewFacts | None:
    """Who reviewed the prescription and the amount, for its printed document (the app factory
    registers this with prescriptions.document)."""
    review = db.session.get(Review, rx_id)
    if review is None or review.decided_by is None:
        return None
    pharmacist = db.session.get(Account, review.decided_by)
    name = (pharmacist.staff.name if pharmacist.staff else pharmacist.display_name) if pharmacist else None
    people = dispensing_pharmacists(rx_id)
    return ReviewFacts(
        reviewer=name,
        amount_fen=None if review.fee_waived else review.fee_fen,
        # 调配 and 核对、发药: only once issued (a prescription made up but not checked prints blank)
        dispenser=_staff_name(people.dispensed_by) if review.checked_by else None,
        checker=_staff_name(people.checked_by) if review.checked_by else None,
    )


def _staff_name(account: Account | None) -> str:
    if account is None:
        return ""
    return account.staff.name if account.staff else account.display_name


def _not_a_pharmacist(role: str, qualified: bool) -> Invalid:
    fields = [{"loc": role}]
    if role == "dispensed_by":
        if qualified:
            return Invalid(
                "The dispensing pharmacist named is not a pharmacist here.", code="not_a_pharmacist", fields=fields
            )
        return Invalid(
            "The dispensing pharmacist named has no valid pharmacist qualification.",
            code="not_a_pharmacist",
            fields=fields,
        )
    if qualified:
        return Invalid(
            "The checking pharmacist named is not a pharmacist here.", code="not_a_pharmacist", fields=fields
        )
    return Invalid(
        "The checking pharmacist named has no valid pharmacist qualification.", code="not_a_pharmacist", fields=fields
    )


def _named_pharmacist(account_id: str, role: str) -> Account:
    """A pharmacist the caller names as the dispenser or the checker: qualified and on duty."""
    key = as_uuid(account_id)
    account = db.session.get(Account, key) if key is not None else None
    if account is None or account.role != Role.PHARMACIST or not account.active:
        raise _not_a_pharmacist(role, qualified=True)
    try:
        require_qualified_pharmacist(account)
    except DomainError:
        raise _not_a_pharmacist(role, qualified=False) from None
    if account.staff is None or not account.staff.on_duty:
        raise Invalid("The pharmacist named is not on duty.", code="pharmacist_off_duty", fields=[{"loc": role}])
    return account


def _dispensable(rx: Prescription, review: Review | None) -> Review:
    """Approved, paid, and the patient has said where it goes; else the refusal."""
    if rx.status != PrescriptionStatus.APPROVED or review is None:
        raise Conflict(
            "Only an approved prescription that is not dispensed yet can be made up and issued.",
            code="illegal_transition",
            current=rx.status.value,
        )
    if review.paid_at is None:
        raise DrugFeeUnpaid()
    if not review.collect and not review.address:
        raise NoDeliveryAddress()
    return review


def on_duty_pharmacists(exclude: uuid.UUID | None = None) -> list[Account]:
    """Pharmacists who may check now (qualified, active, on duty), by name; not `exclude`."""
    accounts = db.session.scalars(
        select(Account)
        .join(StaffProfile, StaffProfile.account_id == Account.id)
        .where(Account.role == Role.PHARMACIST, Account.active.is_(True), StaffProfile.on_duty.is_(True))
        .order_by(StaffProfile.name)
    ).all()
    out = []
    for account in accounts:
        if account.id == exclude:
            continue
        try:
            require_qualified_pharmacist(account)
        except DomainError:
            continue
        out.append(account)
    return out


def prepare(who: Principal, prescription_id: uuid.UUID) -> Review:
    """调配: the caller has made up an approved, paid prescription; another pharmacist checks
    it and issues it (`dispense`). Recording it again by the same pharmacist changes nothing."""
    me = qualified_pharmacist(who)
    rx = _rx(prescription_id)
    review = _dispensable(rx, locked_review(rx.id))
    if review.prepared_by is not None:
        if review.prepared_by == me.id:
            return review
        raise Conflict(
            "Another pharmacist has already made up this prescription; check it and issue it instead.",
            code="already_prepared",
        )
    review.prepared_by, review.prepared_at = me.id, utcnow()
    audit.record(
        db.session(),
        "prescription.prepared",
        subject_type="prescription",
        subject_id=rx.id,
        detail={"dispensed_by": str(me.id)},
    )
    db.session.flush()
    return review


def _pair_refusal(code: str) -> DomainError:
    if code == "checker_required":
        return Invalid(
            "Two pharmacists dispense: name the pharmacist who checks and issues it, or record that you "
            "made it up and let another pharmacist check it.",
            code="checker_required",
        )
    if code == "already_prepared":
        return Conflict(
            "Another pharmacist has already made up this prescription; the dispenser named differs.",
            code="already_prepared",
        )
    if code == "same_pharmacist":
        return Invalid(
            "The pharmacist who checks and issues a prescription must not be the one who made it up.",
            code="same_pharmacist",
        )
    return Invalid("You must be the dispensing or the checking pharmacist yourself.", code="not_involved")


def dispense(
    who: Principal,
    prescription_id: uuid.UUID,
    *,
    dispensed_by: str | None = None,
    checked_by: str | None = None,
) -> Delivery:
    """核对、发药: an approved, paid prescription made up by one pharmacist (调配) and checked
    by another is issued, once, and routed to the patient's door or the counter.

    The caller is one of the two (pharmacy.rules.dispensing_pair): the checker, when another
    pharmacist recorded making it up (`prepare`) or is named in `dispensed_by`; or the
    dispenser, naming the on-duty colleague who checked it in `checked_by`.

    `dispensed_by` and `checked_by` are account ids as the caller typed them, kept as text:
    two different malformed ones name two different nobodies (not_involved, then
    not_a_pharmacist), where the nil UUID would make them one person (same_pharmacist)."""
    me = qualified_pharmacist(who)
    rx = _rx(prescription_id)
    review = _dispensable(rx, locked_review(rx.id))
    pair = rules.dispensing_pair(
        str(me.id),
        str(review.prepared_by) if review.prepared_by else None,
        str(as_uuid(dispensed_by) or dispensed_by) if dispensed_by else None,
        str(as_uuid(checked_by) or checked_by) if checked_by else None,
    )
    if isinstance(pair, str):
        raise _pair_refusal(pair)
    dispenser = me if pair.dispenser == str(me.id) else _named_pharmacist(pair.dispenser, "dispensed_by")
    checker = me if pair.checker == str(me.id) else _named_pharmacist(pair.checker, "checked_by")
    now = utcnow()
    if review.prepared_by is None:
        review.prepared_by, review.prepared_at = dispenser.id, now
    review.checked_by, review.checked_at = checker.id, now
    rx_lifecycle.transition(rx, PrescriptionEvent.DISPENSE, reason="dispensed by pharmacist", now=now)  # once
    audit.record(
        db.session(),
        "prescription.dispensing_pharmacists",
        subject_type="prescription",
        subject_id=rx.id,
        detail={
            "dispensed_by": str(dispenser.id),
            "prepared_at": review.prepared_at.isoformat() if review.prepared_at else None,
            "checked_by": str(checker.id),
            "checked_at": now.isoformat(),
            "recorded_by": str(me.id),
        },
    )
    items = [
        {
            "drug_id": str(i.drug_id),
            "name": i.drug_name,
            "quantity": str(Decimal(i.quantity)),
            "cold_chain": i.cold_chain,
        }
        for i in rx.items
    ]
    if review.collect:
        delivery = Delivery(
            prescription_id=rx.id,
            status=DeliveryStatus.COLLECT_AT_PHARMACY,
            recipient_name=review.recipient_name or "",
            recipient_phone=review.recipient_phone or _patient_phone(rx) or "",
            address="",
            region_code="",
            items=items,
            tried_partner_ids=[],
        )
        db.session.add(delivery)
        notify.tell_patient(db.session(), "collect", rx.id, delivery.recipient_phone)
        db.session.flush()
        return delivery
    return deliveries.create_delivery(
        rx.id,
        deliveries.Recipient(
            review.recipient_name or "", review.recipient_phone or "", review.address or "", review.region_code or ""
        ),
        items,
    )


@dataclass(frozen=True)
class DispensingPharmacists:
    dispensed_by: Account | None
    dispensed_at: datetime | None
    checked_by: Account | None
    checked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        def who(a: Account | None) -> dict[str, str] | None:
            return {"id": str(a.id), "name": _staff_name(a)} if a is not None else None

        return {
            "dispensed_by": who(self.dispensed_by),
            "dispensed_at": self.dispensed_at,
            "checked_by": who(self.checked_by),
            "checked_at": self.checked_at,
        }


def dispensing_pharmacists(rx_id: uuid.UUID) -> DispensingPharmacists:
    review = db.session.get(Review, rx_id)
    if review is None:
        return DispensingPharmacists(None, None, None, None)
    get = db.session.get
    return DispensingPharmacists(
        get(Account, review.prepared_by) if review.prepared_by else None,
        review.prepared_at,
        get(Account, review.checked_by) if review.checked_by else None,
        review.checked_at,
    )


def follow_delivery(session: Session, delivery: Delivery, status: DeliveryStatus) -> None:
    """The prescription's own status follows its delivery to the door (the app factory
    registers this with pharmacy.delivery)."""
    rx = session.get(Prescription, delivery.prescription_id)
    if rx is None:
        return
    if status == DeliveryStatus.OUT_FOR_DELIVERY and rx.status == PrescriptionStatus.DISPENSED:
        rx_lifecycle.transition(rx, PrescriptionEvent.DISPATCH)
    elif status == DeliveryStatus.DELIVERED and rx.status in (
        PrescriptionStatus.DISPENSED,
        PrescriptionStatus.OUT_FOR_DELIVERY,
    ):
        rx_lifecycle.transition(rx, PrescriptionEvent.DELIVER)


@dataclass(frozen=True)
class DispensingLabel:
    """What the label on the bag says."""

    prescription_id: str
    patient: dict[str, Any]
    items: list[dict[str, Any]]
    physician: str
    pharmacist: str
    approved_at: datetime | None
    cold_chain: bool
    dispenser: str  # 调配, once recorded
    checker: str  # 核对、发药, once recorded (the label may be printed before the check)


def dispensing_label(who: Principal, prescription_id: uuid.UUID) -> DispensingLabel:
    """What the label on the bag says: the patient, each drug and how to take it."""
    pharmacist = qualified_pharmacist(who)
    rx = _rx(prescription_id)
    if rx.status not in (
        PrescriptionStatus.APPROVED,
        PrescriptionStatus.DISPENSED,
        PrescriptionStatus.OUT_FOR_DELIVERY,
        PrescriptionStatus.DELIVERED,
    ):
        raise Conflict("Only an approved prescription gets a dispensing label.", code="not_approved")
    c = rx.content
    review = db.session.get(Review, rx.id)
    decider = db.session.get(Account, review.decided_by) if review and review.decided_by else None
    return DispensingLabel(
        prescription_id=str(rx.id),
        patient=c.get("patient", {}),
        items=c.get("items", []),
        physician=c.get("physician", {}).get("name", ""),
        pharmacist=(decider.staff.name if decider and decider.staff else "")
        or (pharmacist.staff.name if pharmacist.staff else pharmacist.display_name),
        approved_at=review.decided_at if review else None,
        cold_chain=any(i.cold_chain for i in rx.items),
        dispenser=_staff_name(db.session.get(Account, review.prepared_by)) if review and review.prepared_by else "",
        checker=_staff_name(db.session.get(Account, review.checked_by)) if review and review.checked_by else "",
    )
