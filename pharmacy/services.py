"""The pharmacists' review queue and their decisions.

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
  content plus the decision).
The drug fee and where the medicines go are pharmacy.checkout; making them up and issuing
them, pharmacy.dispensing.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from clinic.core import audit
from clinic.core.config import settings
from clinic.core.db import as_uuid, db, get_or_404, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, RuleRefusal, Violation
from clinic.core.principal import Principal
from clinic.visits.models import Visit
from identity.models import Account, Institution
from identity.services import require_qualified_pharmacist
from pharmacy import notify, rules
from pharmacy.models import Review
from pharmacy.rules import ReviewEvent, ReviewState
from prescriptions import catalog as rx_catalog
from prescriptions import document as rx_document
from prescriptions import lifecycle as rx_lifecycle
from prescriptions import services as rx_services
from prescriptions import signing
from prescriptions.models import Drug, Prescription, PrescriptionStatus
from prescriptions.reads import ReviewOutcome
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


def qualified_pharmacist(who: Principal) -> Account:
    """The caller's account, if they may act as a pharmacist here (qualified); else 403."""
    account = db.session.get(Account, who.account_id)
    if account is None:
        raise Forbidden()
    require_qualified_pharmacist(account)
    return account


def _rx(prescription_id: uuid.UUID) -> Prescription:
    return get_or_404(Prescription, prescription_id, "No such prescription.")


def locked_review(rx_id: uuid.UUID) -> Review | None:
    stmt = select(Review).where(Review.prescription_id == rx_id).execution_options(populate_existing=True)
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=Review)
    return db.session.scalars(stmt).unique().one_or_none()


# --- claiming -----------------------------------------------------------------------------------


def claim_seconds() -> int:
    return int(settings().PHARMACY_CLAIM_SECONDS)


def claim_next(who: Principal, *, check_qualification: bool = True, now: datetime | None = None) -> uuid.UUID | None:
    """Claim the oldest pending prescription nobody holds; None when the queue is empty."""
    session = db.session()
    if check_qualification:
        qualified_pharmacist(who)
    me = who.account_id
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
            .values(claimed_by=me, claimed_at=now, claim_expires_at=now + timedelta(seconds=claim_seconds()))
            .execution_options(synchronize_session=False)
        )
        if won.rowcount == 1:  # type: ignore[attr-defined]
            audit.record(
                session, "prescription.claimed", subject_type="prescription", subject_id=rx_id, detail={"by": str(me)}
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
        summary = rx_catalog.dosing_summary(drug) if drug is not None else None
        out.append({**item, "dosing_reference": asdict(summary) if summary is not None else None})
    return out


@dataclass(frozen=True)
class ReviewScreen:
    """What the pharmacist reviews (the API's ReviewScreen, the review page)."""

    prescription_id: str
    status: str
    signed_at: datetime
    expires_at: datetime
    patient: dict[str, Any]
    diagnosis: dict[str, Any]
    physician: dict[str, Any]
    items: list[dict[str, Any]]
    cold_chain: bool
    guardian: dict[str, Any] | None
    accompanying_physician: dict[str, Any] | None
    long_term: bool
    rules: list[dict[str, Any]]
    signature_valid: bool
    signature_error: str | None
    claimed_by_me: bool
    claim_expires_at: datetime | None
    decision: str | None
    reasons: list[dict[str, Any]]


def review_screen(who: Principal, prescription_id: uuid.UUID) -> ReviewScreen:
    """Patient (age, weight, allergies), confirmed diagnosis, items, rules now, signature."""
    qualified_pharmacist(who)
    rx = _rx(prescription_id)
    review = db.session.get(Review, rx.id)
    checks = checks_for(rx)
    visit = db.session.get(Visit, rx.visit_id)
    assert visit is not None
    person = visit.patient
    today = utcnow().date()
    return ReviewScreen(
        prescription_id=str(rx.id),
        status=rx.status.value,
        signed_at=rx.signed_at,
        expires_at=rx.expires_at,
        patient={
            "name": person.name,
            "sex": person.sex,
            "age": age_display(person.birth_date, today).zh(),
            "birth_date": person.birth_date.isoformat(),
            "weight_kg": str(rx.weight_kg) if rx.weight_kg is not None else None,
            "allergies": list(person.allergies or []),
        },
        diagnosis={
            "icd10": rx.diagnosis_icd10,
            "icd10_national": rx_document.national_code_of(rx),
            "status": visit.diagnosis.status.value,
        },
        physician=rx.content.get("physician", {}),
        items=_items_with_reference(rx),
        cold_chain=any(i.cold_chain for i in rx.items),
        guardian=rx.guardian,
        accompanying_physician=rx.accompanying_physician,
        long_term=rx.long_term,
        rules=[v.as_dict() for v in checks.violations],
        signature_valid=checks.signature_valid,
        signature_error=checks.signature_error,
        claimed_by_me=bool(
            review
            and review.claimed_by == who.account_id
            and review.claim_expires_at
            and review.claim_expires_at > utcnow()
        ),
        claim_expires_at=review.claim_expires_at if review else None,
        decision=review.decision if review else None,
        reasons=review.reasons if review else [],
    )


# --- deciding ---------------------------------------------------------------------------------------

Refusal = TypeVar("Refusal", bound=DomainError)


def _refuse(err: Refusal, rx: Prescription, **detail: Any) -> Refusal:
    audit.record(
        db.session(), "prescription.review_refused", subject_type="prescription", subject_id=rx.id, detail=detail
    )
    err.persist = True
    return err


def decide(who: Principal, prescription_id: uuid.UUID, decision: str, reasons: list[dict[str, str]]) -> Prescription:
    """Approve, reject or return a claimed prescription, with structured reasons."""
    session = db.session()
    pharmacist = qualified_pharmacist(who)
    rx = _rx(prescription_id)
    review = locked_review(rx.id)
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
    rx_lifecycle.transition(rx, PrescriptionEvent(decision), reason=";".join(codes) or None, now=now)
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
        fee = int(settings().DRUG_FEE_FEN or 0)
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


# --- what prescriptions read of the review (the app factory registers these with them) ----------


def approval_of(rx_id: uuid.UUID) -> str | None:
    """The pharmacist's approval JWS of an approved prescription, else None."""
    review = db.session.get(Review, rx_id)
    return review.pharmacist_jws if review is not None and review.decision == "approve" else None


@dataclass(frozen=True)
class JwsCheck:
    valid: bool
    prescription_id: str
    kind: str  # prescription | pharmacist_review


def verify_jws(token: str) -> JwsCheck:
    """A physician's prescription JWS or a pharmacist's approval JWS: valid and ours, or 422."""
    content = signing.verify(token)
    if content.get("type") == "pharmacist_review":
        rx_id = str(content.get("prescription", {}).get("prescription_id", ""))
        key = as_uuid(rx_id)
        review = db.session.get(Review, key) if key is not None else None
        if review is None or review.pharmacist_jws != token:
            raise signing.InvalidSignature("This approval is not the one on record.")
        return JwsCheck(valid=True, prescription_id=rx_id, kind="pharmacist_review")
    rx_id = str(content.get("prescription_id", ""))
    key = as_uuid(rx_id)
    rx = db.session.get(Prescription, key) if key is not None else None
    if rx is None:
        raise signing.InvalidSignature("The signed prescription is not on record.")
    signing.verify(token, rx.content)
    return JwsCheck(valid=True, prescription_id=rx_id, kind="prescription")


def outcome_of(rx_id: uuid.UUID) -> ReviewOutcome | None:
    """What the physician reads of the pharmacist's decision: reasons (codes), note, who, when."""
    review = db.session.get(Review, rx_id)
    if review is None or review.decision is None:
        return None
    decider = db.session.get(Account, review.decided_by) if review.decided_by else None
    notes = [r.get("note", "") for r in review.reasons or [] if r.get("note")]
    return ReviewOutcome(
        decision=review.decision,
        reasons=tuple(r.get("code", "") for r in review.reasons or []),
        note=notes[0] if notes else "",
        decided_at=review.decided_at,
        pharmacist=(decider.staff.name if decider and decider.staff else decider.display_name) if decider else "",
    )
