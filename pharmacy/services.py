"""The pharmacists' review queue, their decisions, the drug fee and dispensing.

Art. 18 of the 2018 measures: an online prescription takes effect only after a pharmacist
has reviewed it. Here:
- every prescription signed into `pending_review` gets a queue row (`Review`) in the same
  transaction (`queue_signed`, which the app factory registers with prescriptions.events),
  so the queue is never behind the prescriptions;
- `claim_next` hands the oldest unclaimed (or abandoned: claim expired) row to one
  pharmacist: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, and a compare-and-set on
  the claim columns on every backend, so two pharmacists never hold the same one;
- `decide` re-runs every prescribing rule and verifies the physician's JWS; approval
  needs both to pass and is counter-signed by the pharmacist (a second JWS over the same
  content plus the decision);
- the drug fee is owed after approval (PaymentsPort, purpose "drug_fee"); with payments
  off it is waived at approval, i.e. payable on collection/delivery outside the system;
- `dispense` needs approval AND payment (no 先药后方) and two pharmacists: one who made it
  up (调配, `prepare` or named) and another who checked and issued it (核对、发药); it
  happens once (the prescription's transition function refuses a second), then routes
  the delivery.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from clinic.core import audit
from clinic.core.db import as_uuid, db, get_or_404, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, RuleRefusal, Violation
from clinic.core.pages import bj
from clinic.visits.models import Visit
from identity.models import Account, Institution, Role, StaffProfile
from identity.services import require_qualified_pharmacist
from pharmacy import delivery as deliveries
from pharmacy import notify, regions, rules
from pharmacy.models import Delivery, Review
from pharmacy.rules import DeliveryStatus, ReviewEvent, ReviewState
from prescriptions import catalog as rx_catalog
from prescriptions import document as rx_document
from prescriptions import services as rx_services
from prescriptions import signing
from prescriptions.models import Drug, Prescription, PrescriptionStatus
from prescriptions.rules import PrescriptionEvent, age_display

# --- the queue follows the prescriptions ------------------------------------------------------
# Wired by the app factory to prescriptions.events (the pharmacy sits above prescriptions).


def queue_signed(session: Session, rx: Prescription) -> None:
    """A prescription signed into `pending_review` gets its queue row in the same transaction."""
    session.add(Review(prescription_id=rx.id, state=ReviewState.PENDING, queued_at=rx.signed_at or utcnow()))


def close_unreviewed(session: Session, rx: Prescription, before: PrescriptionStatus) -> None:
    """A prescription that expired or was cancelled while waiting leaves the queue undecided."""
    if before != PrescriptionStatus.PENDING_REVIEW or rx.status not in _LEFT_UNREVIEWED:
        return
    review = session.get(Review, rx.id)
    if review is not None and review.state == ReviewState.PENDING:
        review.state = rules.review_transition(review.state, ReviewEvent.CLOSE)
        review.claim_expires_at = None


_LEFT_UNREVIEWED = (PrescriptionStatus.EXPIRED, PrescriptionStatus.CANCELLED)


# --- errors -----------------------------------------------------------------------------------


class NotClaimed(Conflict):
    code = "not_claimed"
    default_message = "You have not claimed this prescription (or your claim has expired); claim it from the queue."


class DrugFeeUnpaid(Conflict):
    code = "drug_fee_unpaid"
    default_message = "The drug fee is not paid: nothing is dispensed before an approved, paid prescription."


class NoDeliveryAddress(Conflict):
    code = "no_delivery_address"
    default_message = "The patient has not said where the medicines go (delivery address or collection)."


def _pharmacist(account_id: str) -> Account:
    account = db.session.get(Account, uuid.UUID(account_id))
    if account is None:
        raise Forbidden()
    require_qualified_pharmacist(account)
    return account


def _rx(prescription_id: str | uuid.UUID) -> Prescription:
    return get_or_404(Prescription, prescription_id, "No such prescription.")


def _locked_review(rx_id: uuid.UUID) -> Review | None:
    stmt = select(Review).where(Review.prescription_id == rx_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=Review)
    return db.session.scalars(stmt).unique().one_or_none()


# --- claiming -----------------------------------------------------------------------------------


def claim_seconds() -> int:
    return int(current_app.config.get("PHARMACY_CLAIM_SECONDS", 900))


def claim_next(
    pharmacist_id: str, *, check_qualification: bool = True, now: datetime | None = None
) -> uuid.UUID | None:
    """Claim the oldest pending prescription nobody holds; None when the queue is empty."""
    session = db.session()
    if check_qualification:
        _pharmacist(pharmacist_id)
    who = uuid.UUID(pharmacist_id)
    postgres = session.get_bind().dialect.name == "postgresql"
    for _ in range(5):  # SQLite: another claimer may win the compare-and-set; try the next one
        now = now or utcnow()
        free = or_(Review.claim_expires_at.is_(None), Review.claim_expires_at < now)
        stmt = (
            select(Review.prescription_id)
            .join(Prescription, Prescription.id == Review.prescription_id)
            .where(Review.state == ReviewState.PENDING, free, Prescription.status == PrescriptionStatus.PENDING_REVIEW)
            .where(Prescription.expires_at > now)
            .order_by(Review.queued_at)
            .limit(1)
        )
        if postgres:
            stmt = stmt.with_for_update(of=Review, skip_locked=True)
        rx_id = session.scalar(stmt)
        if rx_id is None:
            return None
        won = session.execute(
            update(Review)
            .where(Review.prescription_id == rx_id, Review.state == ReviewState.PENDING, free)
            .values(claimed_by=who, claimed_at=now, claim_expires_at=now + timedelta(seconds=claim_seconds()))
            .execution_options(synchronize_session=False)
        )
        if won.rowcount == 1:  # type: ignore[attr-defined]
            audit.record(
                session, "prescription.claimed", subject_type="prescription", subject_id=rx_id, detail={"by": str(who)}
            )
            return uuid.UUID(str(rx_id))
    return None


# --- what the review screen shows ---------------------------------------------------------------


@dataclass(frozen=True)
class ReviewChecks:
    signature_valid: bool
    signature_error: str | None
    violations: list[Violation]


def checks_for(rx: Prescription) -> ReviewChecks:
    """Every prescribing rule re-run now, and whether the physician's JWS verifies."""
    try:
        rx_services.verify_prescription(rx)
        valid, error = True, None
    except signing.InvalidSignature as err:
        valid, error = False, err.message
    visit = db.session.get(Visit, rx.visit_id)
    assert visit is not None
    spec = rx_services.PrescriptionSpec(
        items=tuple(
            rx_services.ItemSpec(
                i.drug_id, i.dose, i.unit, i.frequency, i.route, i.days, i.quantity, _quantity_unit(rx, i.position)
            )
            for i in rx.items
        ),
        weight_kg=rx.weight_kg,
        long_term=rx.long_term,
        assessment_note=rx.assessment_note,
        guardian=None,  # the guardian's ID number is kept masked only: that rule ran at signing
        accompanying_physician=None,
    )
    violations, _ = rx_services.evaluate_prescription(rx.physician_id, visit, spec, excluding=rx.id)
    return ReviewChecks(valid, error, [v for v in violations if v.code not in rules.PRESCRIBING_ONLY_RULES])


def _quantity_unit(rx: Prescription, position: int) -> str | None:
    items = rx.content.get("items", [])
    unit = items[position].get("quantity_unit") if position < len(items) else None
    return str(unit) if unit else None


def _items_with_reference(rx: Prescription) -> list[dict[str, Any]]:
    """The signed items, each with its product's dosing reference beside it (None: no reference)."""
    drugs = {d.id: d for d in (db.session.get(Drug, i.drug_id) for i in rx.items) if d is not None}
    out = []
    for n, item in enumerate(rx.content.get("items", [])):
        drug = drugs.get(rx.items[n].drug_id) if n < len(rx.items) else None
        out.append({**item, "dosing_reference": rx_catalog.dosing_summary(drug) if drug is not None else None})
    return out


def review_screen(pharmacist_id: str, prescription_id: str) -> dict[str, Any]:
    """Patient (age, weight, allergies), confirmed diagnosis, items, rules now, signature."""
    _pharmacist(pharmacist_id)
    rx = _rx(prescription_id)
    review = db.session.get(Review, rx.id)
    checks = checks_for(rx)
    visit = db.session.get(Visit, rx.visit_id)
    assert visit is not None
    person = visit.patient
    today = utcnow().date()
    return {
        "prescription_id": str(rx.id),
        "status": rx.status.value,
        "signed_at": rx.signed_at,
        "expires_at": rx.expires_at,
        "patient": {
            "name": person.name,
            "sex": person.sex,
            "age": age_display(person.birth_date, today).zh(),
            "birth_date": person.birth_date.isoformat(),
            "weight_kg": str(rx.weight_kg) if rx.weight_kg is not None else None,
            "allergies": list(person.allergies or []),
        },
        "diagnosis": {
            "icd10": rx.diagnosis_icd10,
            "icd10_national": rx_document.national_code_of(rx),
            "status": visit.diagnosis.status.value,
        },
        "physician": rx.content.get("physician", {}),
        "items": _items_with_reference(rx),
        "cold_chain": any(i.cold_chain for i in rx.items),
        "guardian": rx.guardian,
        "accompanying_physician": rx.accompanying_physician,
        "long_term": rx.long_term,
        "rules": [v.as_dict() for v in checks.violations],
        "signature_valid": checks.signature_valid,
        "signature_error": checks.signature_error,
        "claimed_by_me": bool(
            review
            and review.claimed_by == uuid.UUID(pharmacist_id)
            and review.claim_expires_at
            and review.claim_expires_at > utcnow()
        ),
        "claim_expires_at": review.claim_expires_at if review else None,
        "decision": review.decision if review else None,
        "reasons": review.reasons if review else [],
    }


# --- deciding ---------------------------------------------------------------------------------------


def _patient_phone(rx: Prescription) -> str | None:
    account = db.session.get(Account, rx.account_id)
    return account.phone if account is not None else None


def _refuse(err: Any, rx: Prescription, **detail: Any) -> Any:
    audit.record(
        db.session(), "prescription.review_refused", subject_type="prescription", subject_id=rx.id, detail=detail
    )
    err.persist = True
    return err


def decide(pharmacist_id: str, prescription_id: str, decision: str, reasons: list[dict[str, str]]) -> Prescription:
    """Approve, reject or return a claimed prescription, with structured reasons."""
    session = db.session()
    pharmacist = _pharmacist(pharmacist_id)
    rx = _rx(prescription_id)
    review = _locked_review(rx.id)
    now = utcnow()
    held = (
        review is not None
        and review.state == ReviewState.PENDING
        and review.claimed_by == pharmacist.id
        and review.claim_expires_at is not None
        and review.claim_expires_at > now
    )
    if not held or review is None:
        raise _refuse(NotClaimed(), rx, reason="not_claimed", decision=decision)
    codes = [r["code"] for r in reasons]
    checks = checks_for(rx)
    rule_codes = sorted({v.code for v in checks.violations})
    problems = rules.decision_problems(decision, codes, checks.signature_valid, rule_codes)
    if "invalid_signature" in problems:
        raise _refuse(
            signing.InvalidSignature(checks.signature_error or None), rx, reason="invalid_signature", decision=decision
        )
    if "rules_failed" in problems:
        raise _refuse(
            RuleRefusal(
                "prescription_rejected",
                checks.violations,
                "Re-run at review, the prescribing rules refuse this prescription; reject or return it.",
            ),
            rx,
            reason="rules_failed",
            violations=rule_codes,
        )
    if problems:
        raise Invalid(
            "Reject and return need at least one reason from the review standard."
            if "reasons_required" in problems
            else f"Unknown reason code; use one of: {', '.join(rules.REVIEW_REASONS)}.",
            code="invalid",
            problems=problems,
        )
    rx_services.transition(rx, PrescriptionEvent(decision), reason=";".join(codes) or None, now=now)
    review.state = rules.review_transition(review.state, ReviewEvent.DECIDE)
    review.decision, review.reasons = decision, [{"code": r["code"], "note": r.get("note", "")} for r in reasons]
    review.decided_by, review.decided_at = pharmacist.id, now
    review.signature_valid, review.rule_codes = checks.signature_valid, rule_codes
    review.claim_expires_at = None
    detail: dict[str, Any] = {"decision": decision, "reasons": codes, "signature_valid": checks.signature_valid}
    if decision == "approve":
        content = {
            "iss": rx.content.get("iss") or signing.issuer(db.session.get(Institution, 1)),
            "iat": int(now.timestamp()),
            "exp": int(rx.expires_at.timestamp()),
            "type": "pharmacist_review",
            "prescription": rx.content,
            "prescription_jws_sha256": hashlib.sha256(rx.jws.encode()).hexdigest(),
            "decision": "approve",
            "reasons": review.reasons,
            "pharmacist": {
                "id": str(pharmacist.id),
                "name": pharmacist.staff.name if pharmacist.staff else pharmacist.display_name,
                "qualification_no": pharmacist.staff.qualification_no if pharmacist.staff else None,
            },
            "reviewed_at": now.isoformat(),
        }
        review.pharmacist_jws, review.pharmacist_kid = signing.sign(pharmacist.id, content)
        detail["kid"] = review.pharmacist_kid
        fee = int(current_app.config.get("DRUG_FEE_FEN", 0) or 0)
        if current_app.extensions.get("payments") is not None and fee > 0:
            review.fee_fen = fee
        else:
            review.fee_waived, review.paid_at = True, now
    audit.record(session, "prescription.reviewed", subject_type="prescription", subject_id=rx.id, detail=detail)
    kind = {"approve": "approved", "reject": "rejected", "return": "returned"}[decision]
    labels = "、".join(rules.REVIEW_REASONS[c][0] for c in codes) or "—"
    notify.tell_patient(session, kind, rx.id, reasons=labels)
    session.flush()
    return rx


def _approval_of(rx_id: uuid.UUID) -> str | None:
    review = db.session.get(Review, rx_id)
    return review.pharmacist_jws if review is not None and review.decision == "approve" else None


rx_services.on_approval_lookup(_approval_of)


def _document_facts(rx_id: uuid.UUID) -> dict[str, Any] | None:
    """Who reviewed the prescription and the amount, for its printed document."""
    review = db.session.get(Review, rx_id)
    if review is None or review.decided_by is None:
        return None
    pharmacist = db.session.get(Account, review.decided_by)
    name = (pharmacist.staff.name if pharmacist.staff else pharmacist.display_name) if pharmacist else None
    people = dispensing_pharmacists(rx_id)
    return {
        "reviewer": name,
        "amount_fen": None if review.fee_waived else review.fee_fen,
        # 调配 and 核对、发药: only once issued (a prescription made up but not checked prints blank)
        "dispenser": _staff_name(people.dispensed_by) if review.checked_by else None,
        "checker": _staff_name(people.checked_by) if review.checked_by else None,
    }


rx_document.on_review_facts(_document_facts)


def verify_jws(token: str) -> dict[str, Any]:
    """A physician's prescription JWS or a pharmacist's approval JWS: valid and ours, or 422."""
    content = signing.verify(token)
    if content.get("type") == "pharmacist_review":
        rx_id = str(content.get("prescription", {}).get("prescription_id", ""))
        review = db.session.get(Review, uuid.UUID(rx_id)) if _is_uuid(rx_id) else None
        if review is None or review.pharmacist_jws != token:
            raise signing.InvalidSignature("This approval is not the one on record.")
        return {"valid": True, "prescription_id": rx_id, "kind": "pharmacist_review"}
    rx_id = str(content.get("prescription_id", ""))
    rx = db.session.get(Prescription, uuid.UUID(rx_id)) if _is_uuid(rx_id) else None
    if rx is None:
        raise signing.InvalidSignature("The signed prescription is not on record.")
    signing.verify(token, rx.content)
    return {"valid": True, "prescription_id": rx_id, "kind": "prescription"}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- the drug fee and where it goes ------------------------------------------------------------------


def checkout(
    account_id: str,
    prescription_id: str,
    *,
    collect: bool,
    recipient_name: str | None,
    phone: str | None,
    address: str | None,
    region_code: str | None,
) -> tuple[Review, dict[str, Any] | None]:
    """The patient says where the medicines go and (payments on) starts paying the drug fee."""
    rx = rx_services.prescription_for(account_id, "patient", prescription_id)
    review = _locked_review(rx.id)
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
    review = _locked_review(prescription_id)
    if review is None or review.paid_at is not None:
        return review
    review.paid_at = utcnow()
    audit.record(db.session(), "prescription.drug_fee_paid", subject_type="prescription", subject_id=prescription_id)
    return review


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


def on_duty_pharmacists(exclude: str | None = None) -> list[Account]:
    """Pharmacists who may check now (qualified, active, on duty), by name; not `exclude`."""
    accounts = db.session.scalars(
        select(Account)
        .join(StaffProfile, StaffProfile.account_id == Account.id)
        .where(Account.role == Role.PHARMACIST, Account.active.is_(True), StaffProfile.on_duty.is_(True))
        .order_by(StaffProfile.name)
    ).all()
    out = []
    for account in accounts:
        if exclude is not None and str(account.id) == exclude:
            continue
        try:
            require_qualified_pharmacist(account)
        except DomainError:
            continue
        out.append(account)
    return out


def prepare(pharmacist_id: str, prescription_id: str) -> Review:
    """调配: the caller has made up an approved, paid prescription; another pharmacist checks
    it and issues it (`dispense`). Recording it again by the same pharmacist changes nothing."""
    me = _pharmacist(pharmacist_id)
    rx = _rx(prescription_id)
    review = _dispensable(rx, _locked_review(rx.id))
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
    pharmacist_id: str,
    prescription_id: str,
    *,
    dispensed_by: str | None = None,
    checked_by: str | None = None,
) -> Delivery:
    """核对、发药: an approved, paid prescription made up by one pharmacist (调配) and checked
    by another is issued, once, and routed to the patient's door or the counter.

    The caller is one of the two (pharmacy.rules.dispensing_pair): the checker, when another
    pharmacist recorded making it up (`prepare`) or is named in `dispensed_by`; or the
    dispenser, naming the on-duty colleague who checked it in `checked_by`."""
    me = _pharmacist(pharmacist_id)
    rx = _rx(prescription_id)
    review = _dispensable(rx, _locked_review(rx.id))
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
    rx_services.transition(rx, PrescriptionEvent.DISPENSE, reason="dispensed by pharmacist", now=now)  # once
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


def _follow_delivery(session: Session, delivery: Delivery, status: DeliveryStatus) -> None:
    """The prescription's own status follows its delivery to the door."""
    rx = session.get(Prescription, delivery.prescription_id)
    if rx is None:
        return
    if status == DeliveryStatus.OUT_FOR_DELIVERY and rx.status == PrescriptionStatus.DISPENSED:
        rx_services.transition(rx, PrescriptionEvent.DISPATCH)
    elif status == DeliveryStatus.DELIVERED and rx.status in (
        PrescriptionStatus.DISPENSED,
        PrescriptionStatus.OUT_FOR_DELIVERY,
    ):
        rx_services.transition(rx, PrescriptionEvent.DELIVER)


deliveries.on_status_change(_follow_delivery)


def _outcome(rx_id: uuid.UUID) -> dict[str, Any] | None:
    """What the physician reads of the pharmacist's decision: reasons (codes), note, who, when."""
    review = db.session.get(Review, rx_id)
    if review is None or review.decision is None:
        return None
    decider = db.session.get(Account, review.decided_by) if review.decided_by else None
    notes = [r.get("note", "") for r in review.reasons or [] if r.get("note")]
    return {
        "decision": review.decision,
        "reasons": [r.get("code", "") for r in review.reasons or []],
        "note": notes[0] if notes else "",
        "decided_at": review.decided_at,
        "pharmacist": (decider.staff.name if decider and decider.staff else decider.display_name) if decider else "",
    }


rx_services.on_review_read(_outcome)


def delivery_view(principal_id: str, role: str, prescription_id: str) -> dict[str, Any]:
    rx = rx_services.prescription_for(principal_id, role, prescription_id)
    delivery = deliveries.delivery_of(rx.id)
    review = db.session.get(Review, rx.id)
    if delivery is None:
        return {
            "prescription_id": str(rx.id),
            "prescription_status": rx.status.value,
            "partner": None,
            "status": "not_dispensed",
            "events": [],
            "paid": bool(review and review.paid_at),
            "fee_fen": review.fee_fen if review else 0,
        }
    return {
        "prescription_id": str(rx.id),
        "prescription_status": rx.status.value,
        "partner": {"id": str(delivery.partner.id), "name": delivery.partner.name} if delivery.partner else None,
        "status": delivery.status.value,
        "waybill_no": delivery.waybill_no,
        "events": [{"status": e.status, "at": e.at, "waybill_no": e.waybill_no} for e in delivery.events],
        "paid": bool(review and review.paid_at),
        "fee_fen": review.fee_fen if review else 0,
    }


def queue_summary(pharmacist_id: str) -> dict[str, Any]:
    """For the queue page: how many wait, and what this pharmacist holds now."""
    from sqlalchemy import func

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
            Review.claimed_by == uuid.UUID(pharmacist_id),
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
    return {"waiting": int(waiting or 0), "mine": list(mine), "to_dispense": list(to_dispense)}


# --- the pharmacist's workspace: lists -----------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    """One prescription as the queue, the reviewed list and the dispensing list show it."""

    prescription_id: uuid.UUID
    status: str
    patient_name: str
    sex: str
    age: Any  # prescriptions.rules.Age
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


def _rows(reviews: list[Review], pharmacist_id: str, now: datetime) -> list[QueueRow]:
    if not reviews:
        return []
    ids = [r.prescription_id for r in reviews]
    rxs = {rx.id: rx for rx in db.session.scalars(select(Prescription).where(Prescription.id.in_(ids)))}
    visits = {
        v.id: v for v in db.session.scalars(select(Visit).where(Visit.id.in_([rx.visit_id for rx in rxs.values()])))
    }
    me = uuid.UUID(pharmacist_id)
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


def queue_rows(pharmacist_id: str, limit: int = 100) -> list[QueueRow]:
    """Every prescription waiting for review, oldest first (who holds one is shown, not hidden)."""
    _pharmacist(pharmacist_id)
    now = utcnow()
    reviews = db.session.scalars(
        select(Review)
        .join(Prescription, Prescription.id == Review.prescription_id)
        .where(Review.state == ReviewState.PENDING, Prescription.status == PrescriptionStatus.PENDING_REVIEW)
        .order_by(Review.queued_at)
        .limit(limit)
    ).all()
    return _rows(list(reviews), pharmacist_id, now)


def reviewed_rows(pharmacist_id: str, limit: int = 100) -> list[QueueRow]:
    """The prescriptions this pharmacist decided, newest first."""
    _pharmacist(pharmacist_id)
    reviews = db.session.scalars(
        select(Review)
        .where(Review.decided_by == uuid.UUID(pharmacist_id))
        .order_by(Review.decided_at.desc())
        .limit(limit)
    ).all()
    return _rows(list(reviews), pharmacist_id, utcnow())


def dispense_rows(pharmacist_id: str, limit: int = 100) -> list[QueueRow]:
    """Approved prescriptions not dispensed yet, oldest decision first."""
    _pharmacist(pharmacist_id)
    reviews = db.session.scalars(
        select(Review)
        .join(Prescription, Prescription.id == Review.prescription_id)
        .where(Prescription.status == PrescriptionStatus.APPROVED)
        .order_by(Review.decided_at)
        .limit(limit)
    ).all()
    return _rows(list(reviews), pharmacist_id, utcnow())


def dispensing_label(pharmacist_id: str, prescription_id: str) -> dict[str, Any]:
    """What the label on the bag says: the patient, each drug and how to take it."""
    pharmacist = _pharmacist(pharmacist_id)
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
    return {
        "prescription_id": str(rx.id),
        "patient": c.get("patient", {}),
        "items": c.get("items", []),
        "physician": c.get("physician", {}).get("name", ""),
        "pharmacist": (decider.staff.name if decider and decider.staff else "")
        or (pharmacist.staff.name if pharmacist.staff else pharmacist.display_name),
        "approved_at": review.decided_at if review else None,
        "cold_chain": any(i.cold_chain for i in rx.items),
        # 调配 / 核对、发药 once recorded (the label may be printed before the check)
        "dispenser": _staff_name(db.session.get(Account, review.prepared_by)) if review and review.prepared_by else "",
        "checker": _staff_name(db.session.get(Account, review.checked_by)) if review and review.checked_by else "",
    }


@dataclass(frozen=True)
class PatientPrescription:
    """One line of the patient's prescriptions centre."""

    rx: Prescription
    physician_name: str
    fee_fen: int
    paid: bool
    delivery_status: str


def patient_prescriptions(account_id: str | uuid.UUID, visit_id: uuid.UUID | None = None) -> list[PatientPrescription]:
    """Every prescription of the people on the account (or of one visit), newest first."""
    query = select(Prescription).where(Prescription.account_id == uuid.UUID(str(account_id)))
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


def saved_address(account_id: str | uuid.UUID, prescription_id: uuid.UUID | None = None) -> SavedAddress | None:
    """The address given for this prescription, else the newest one the account gave (reused)."""
    query = (
        select(Review)
        .join(Prescription, Prescription.id == Review.prescription_id)
        .where(Prescription.account_id == uuid.UUID(str(account_id)), Review.region_code.is_not(None))
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
