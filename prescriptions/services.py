"""Prescribing use cases: the live verdict of the rules, signing a prescription (or its
revision), verifying its signature, and its records following a reclaimed patient.

Once signed, its status moves in `prescriptions.lifecycle`; who may read it and the lists
the pages show are `prescriptions.reads`. The drug catalog is `prescriptions.catalog`, the
formulary import `prescriptions.imports`, what a signature covers `prescriptions.signing`,
the printable document `prescriptions.document`. Each function flushes and audits; the
caller (request, CLI command, job) commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from clinic.core import audit
from clinic.core.config import settings
from clinic.core.crypto import lookup_hash
from clinic.core.db import db, get_or_404, new_id, utcnow
from clinic.core.errors import Conflict, NotFound, RuleRefusal, Violation
from clinic.core.principal import Principal
from clinic.visits.models import Visit
from identity.face_services import require_fresh_face
from identity.models import Account, Institution, Patient
from prescriptions import catalog, events, rules, signing
from prescriptions.models import (
    Drug,
    Prescription,
    PrescriptionItem,
)
from prescriptions.rules import PrescriptionStatus

# --- prescribing ----------------------------------------------------------------------------

CHINA = ZoneInfo("Asia/Shanghai")  # prescription dates and ages are Beijing dates


@dataclass(frozen=True)
class ItemSpec:
    drug_id: uuid.UUID
    dose: Decimal
    unit: str
    frequency: str
    route: str
    days: int
    quantity: Decimal
    quantity_unit: str | None = None


@dataclass(frozen=True)
class PrescriptionSpec:
    items: tuple[ItemSpec, ...]
    weight_kg: Decimal | None = None
    long_term: bool = False
    assessment_note: str | None = None
    guardian: rules.Guardian | None = None
    accompanying_physician: rules.AccompanyingPhysician | None = None


def _visit(visit_id: uuid.UUID) -> Visit:
    return get_or_404(Visit, visit_id, "No such visit.")


def _mask(id_number: str) -> str:
    return id_number[:3] + "*" * max(len(id_number) - 7, 0) + id_number[-4:]


def recorded_guardians(patient: Patient, on: date) -> tuple[rules.RecordedGuardian, ...]:
    """The guardians of a person as recorded on its account: the adult account holder, and
    the holder's adult spouse when the person is the holder's child."""
    from identity.models import Relation

    out = []
    for p in patient.account.patients:
        if p.id == patient.id or rules.age_years(p.birth_date, on) < rules.MIN_GUARDIAN_AGE:
            continue
        if p.relation == Relation.SELF or (p.relation == Relation.SPOUSE and patient.relation == Relation.CHILD):
            relation = "父母" if patient.relation == Relation.CHILD else "监护人"
            out.append(rules.RecordedGuardian(str(p.id), p.name, p.id_number, relation))
    return tuple(out)


def weight_required_age() -> int:
    inst = db.session.get(Institution, 1)
    raw = (inst.settings or {}).get("weight_required_under_age") if inst is not None else None
    return int(raw) if isinstance(raw, int) and 0 < raw < 19 else rules.DEFAULT_WEIGHT_AGE


def _valid_days() -> int:
    from flask import has_app_context

    return rules.valid_days(settings().RX_VALID_DAYS if has_app_context() else 1)


def evaluate_prescription(
    physician_id: uuid.UUID,
    visit: Visit,
    spec: PrescriptionSpec,
    on: date | None = None,
    *,
    excluding: uuid.UUID | None = None,
) -> tuple[list[Violation], dict[uuid.UUID, Drug]]:
    """Every rule's verdict on a draft prescription (the prescribing page shows it live).

    `excluding`: the prescription itself, when a signed one is judged again (the review)."""
    facts, drugs = prescription_facts(physician_id, visit, spec, on)
    active = active_ingredients(visit.id, excluding=excluding)
    return rules.evaluate(facts) + rules.duplicates_across(facts.items, active), drugs


# A prescription still being reviewed, dispensed or taken: a second one in the same visit may
# not repeat its ingredients (`duplicate_therapy`).
ACTIVE = (
    PrescriptionStatus.PENDING_REVIEW,
    PrescriptionStatus.APPROVED,
    PrescriptionStatus.DISPENSED,
    PrescriptionStatus.OUT_FOR_DELIVERY,
    PrescriptionStatus.DELIVERED,
)


def active_ingredients(visit_id: uuid.UUID, *, excluding: uuid.UUID | None = None) -> dict[str, str]:
    """Ingredient → id of the visit's active prescription that already gives it."""
    query = (
        select(Prescription.id, PrescriptionItem.drug_id)
        .join(PrescriptionItem, PrescriptionItem.prescription_id == Prescription.id)
        .where(Prescription.visit_id == visit_id, Prescription.status.in_(ACTIVE))
        .order_by(Prescription.signed_at)
    )
    if excluding is not None:
        query = query.where(Prescription.id != excluding)
    rows = db.session.execute(query).all()
    if not rows:
        return {}
    drugs = catalog.get_drugs({drug_id for _, drug_id in rows})
    out: dict[str, str] = {}
    for rx_id, drug_id in rows:
        if drug_id in drugs:
            for ing in catalog.drug_facts(drugs[drug_id]).ingredients:
                out.setdefault(ing, str(rx_id))
    return out


REPEAT_WINDOW = timedelta(seconds=60)


def _same_lines(rx: Prescription, spec: PrescriptionSpec) -> bool:
    mine = [(i.drug_id, i.dose, i.unit, i.frequency, i.route, i.days, i.quantity) for i in spec.items]
    theirs = [(i.drug_id, i.dose, i.unit, i.frequency, i.route, i.days, i.quantity) for i in rx.items]
    return mine == theirs and rx.weight_kg == spec.weight_kg and rx.long_term == spec.long_term


def refuse_repeat(visit: Visit, physician_id: uuid.UUID, spec: PrescriptionSpec, now: datetime) -> None:
    """The same prescription for the same visit signed again within a minute is a double
    submission (a double tap, a client's retry without an Idempotency-Key): refused."""
    recent = db.session.scalars(
        select(Prescription).where(
            Prescription.visit_id == visit.id,
            Prescription.physician_id == physician_id,
            Prescription.signed_at > now - REPEAT_WINDOW,
        )
    )
    for rx in recent:
        if _same_lines(rx, spec):
            raise Conflict(
                "The same prescription was signed for this visit %(seconds)s seconds ago; it is not signed twice.",
                code="duplicate_submission",
                params={"seconds": max(int((now - rx.signed_at).total_seconds()), 0)},
                prescription_id=str(rx.id),
            )


def prescription_facts(
    physician_id: uuid.UUID, visit: Visit, spec: PrescriptionSpec, on: date | None = None
) -> tuple[rules.PrescriptionFacts, dict[uuid.UUID, Drug]]:
    """The plain facts the rules need: drugs, patient, visit, and only the relevant interaction pairs."""
    drugs = catalog.get_drugs([i.drug_id for i in spec.items])
    patient = visit.patient
    diagnosis = visit.diagnosis
    confirmed = diagnosis.status.value == "confirmed"
    condition = diagnosis.condition if confirmed else None
    items = [
        rules.ItemFacts(
            catalog.drug_facts(drugs[i.drug_id]),
            i.dose,
            i.unit,
            i.frequency,
            i.route,
            i.days,
            i.quantity,
            i.quantity_unit,
        )
        for i in spec.items
    ]
    all_ingredients = [k for it in items for k in it.drug.ingredients]
    on_day = on or utcnow().astimezone(CHINA).date()
    facts = rules.PrescriptionFacts(
        patient=rules.PatientFacts(patient.birth_date, catalog.allergy_keys(patient.allergies or []), spec.weight_kg),
        visit=rules.VisitFacts(
            status=visit.status.value,
            physician_id=str(visit.physician_id) if visit.physician_id else None,
            diagnosis_icd10=diagnosis.icd10 if confirmed else None,
            condition_chronic=condition.chronic if condition is not None else None,
        ),
        prescriber=rules.PrescriberFacts(str(physician_id)),
        items=items,
        on=on_day,
        long_term=spec.long_term,
        assessment_note=spec.assessment_note,
        guardian=spec.guardian,
        accompanying_physician=spec.accompanying_physician,
        recorded_guardians=recorded_guardians(patient, on_day)
        if rules.is_under(patient.birth_date, on_day, rules.GUARDIAN_AGE)
        else None,
        # the institution's weight age is at most 18: an adult's prescription needs no look-up
        weight_age=weight_required_age()
        if rules.is_under(patient.birth_date, on_day, 18)
        else rules.DEFAULT_WEIGHT_AGE,
        interactions=catalog.interactions_among(all_ingredients),
    )
    return facts, drugs


def create_prescription(
    who: Principal,
    visit_id: uuid.UUID,
    spec: PrescriptionSpec,
    *,
    refuse_repeats: bool = True,
    replaces: uuid.UUID | None = None,
) -> Prescription:
    """The visit's face-fresh physician signs ONE prescription: rules, signature, record, audit.

    `refuse_repeats=False` when the caller named the request with an Idempotency-Key (its
    repeats are answered from clinic.core.idempotency); otherwise an identical prescription
    signed for the visit within a minute is refused as `duplicate_submission`.
    `replaces`: the returned (or rejected, or voided) prescription of the same patient that
    this one revises; it is recorded with the new one.
    """
    require_fresh_face(who)
    visit = _visit(visit_id)
    replaced = _replaceable(who.account_id, visit, replaces) if replaces is not None else None
    now = utcnow()
    # A revision is not a repeat: signing it twice is refused as already_replaced instead.
    if refuse_repeats and replaced is None:  # before the rules: a repeat would also be its own duplicate_therapy
        refuse_repeat(visit, who.account_id, spec, now)
    violations, drugs = evaluate_prescription(who.account_id, visit, spec, now.astimezone(CHINA).date())
    if violations:
        raise RuleRefusal("prescription_rejected", violations)
    # Written against the visit as it was judged (in progress): the visit's row version is
    # counted up with this prescription, so if it was completed or referred meanwhile (in
    # another window) the prescription is refused with 409 instead of following it.
    flag_modified(visit, "status")
    physician = db.session.get(Account, who.account_id)
    assert physician is not None  # the token loader checked it
    patient = visit.patient
    rx_id = new_id()
    guardian = None
    if spec.guardian is not None:
        # the person as recorded on the child's account (the rules made sure there is one)
        on_day = now.astimezone(CHINA).date()
        found = rules.recorded_guardian(spec.guardian, recorded_guardians(patient, on_day))
        if found is not None:
            guardian = {
                "patient_id": found.patient_id,
                "name": found.name,
                "relation": spec.guardian.relation.strip() or found.relation,
                "id_number_masked": _mask(found.id_number),
                "id_number_hash": lookup_hash(found.id_number.strip().upper()),
                "recorded_on_account": True,
            }
    accompanying = (
        {
            "name": spec.accompanying_physician.name,
            "license_no": spec.accompanying_physician.license_no,
            "specialty": spec.accompanying_physician.specialty,
        }
        if spec.accompanying_physician
        else None
    )
    age = rules.age_display(patient.birth_date, now.astimezone(CHINA).date())
    expires_at = now + timedelta(days=_valid_days())
    content = signing.prescription_content(
        rx_id=rx_id,
        visit=visit,
        physician=physician,
        spec=spec,
        drugs=drugs,
        guardian=guardian,
        accompanying=accompanying,
        age=age,
        now=now,
        expires_at=expires_at,
    )
    token, kid = signing.sign(physician.id, content)
    rx = Prescription(
        id=rx_id,
        visit_id=visit.id,
        patient_id=patient.id,
        account_id=visit.account_id,
        physician_id=physician.id,
        status=PrescriptionStatus.PENDING_REVIEW,
        diagnosis_icd10=visit.diagnosis.icd10,
        weight_kg=spec.weight_kg,
        long_term=spec.long_term,
        assessment_note=spec.assessment_note,
        guardian=guardian,
        accompanying_physician=accompanying,
        content=content,
        jws=token,
        kid=kid,
        signed_at=now,
        expires_at=expires_at,
        status_changed_at=now,
        replaces_id=replaced.id if replaced else None,
    )
    for n, i in enumerate(spec.items):
        d = drugs[i.drug_id]
        rx.items.append(
            PrescriptionItem(
                position=n,
                drug_id=d.id,
                drug_name=d.name,
                strength=d.strength,
                dose=i.dose,
                unit=i.unit,
                frequency=i.frequency,
                route=i.route,
                days=i.days,
                quantity=i.quantity,
                cold_chain=d.cold_chain,
            )
        )
    session = db.session()
    session.add(rx)
    session.flush()
    events.signed(session, rx)  # the pharmacy queues it for review in this transaction
    audit.record(
        session,
        "prescription.signed",
        subject_type="prescription",
        subject_id=rx.id,
        detail={
            "visit_id": str(visit.id),
            "kid": kid,
            "items": len(spec.items),
            "long_term": spec.long_term,
            "replaces": str(replaced.id) if replaced else None,
        },
    )
    return rx


REPLACEABLE = (PrescriptionStatus.RETURNED, PrescriptionStatus.REJECTED, PrescriptionStatus.CANCELLED)


def _replaceable(physician_id: uuid.UUID, visit: Visit, replaces: uuid.UUID) -> Prescription:
    """The prescription a revision replaces: this physician's, this patient's, ended, not yet replaced."""
    old = db.session.get(Prescription, replaces)
    if old is None or old.physician_id != physician_id or old.patient_id != visit.patient_id:
        raise NotFound("No such prescription to revise.")
    if old.status not in REPLACEABLE:
        raise Conflict("Only a returned, rejected or voided prescription can be revised.", code="not_replaceable")
    if db.session.scalar(select(Prescription.id).where(Prescription.replaces_id == old.id)) is not None:
        raise Conflict("This prescription has already been revised.", code="already_replaced")
    return old


@dataclass(frozen=True)
class VerifiedPrescription:
    """A prescription whose JWS verified: its id as signed, and the signed content (the JWS claims)."""

    prescription_id: str
    content: dict[str, Any]  # the JWS payload, a JSON document


def verify_prescription(rx: Prescription) -> VerifiedPrescription:
    """The JWS verifies with its published key AND signs exactly the stored content."""
    content = signing.verify(rx.jws, rx.content)
    return VerifiedPrescription(str(content.get("prescription_id", "")), content)


def prescriptions_follow_patient(session: Session, patient_id: uuid.UUID, old: uuid.UUID, new: uuid.UUID) -> int:
    """A patient's prescriptions move with the patient to the account that reclaimed their ID
    number: its PDF, fee, address and tracking are the owner's, no longer the old account's."""
    moved = session.execute(
        update(Prescription)
        .where(Prescription.patient_id == patient_id, Prescription.account_id == old)
        .values(account_id=new)
        .execution_options(synchronize_session="fetch")
    )
    return int(cast(CursorResult[Any], moved).rowcount or 0)  # an UPDATE answers a cursor


# --- the visit a physician prescribes in ---------------------------------------------------


def prescribing_visit(who: Principal, visit_id: uuid.UUID) -> Visit:
    """The visit a physician prescribes in: theirs, else 404 (whether it is in progress is a rule)."""
    visit = _visit(visit_id)
    if visit.physician_id is None or visit.physician_id != who.account_id:
        raise NotFound("No such visit.")
    return visit
