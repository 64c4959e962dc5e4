"""Two-way referral, the receiving side: a partner's request arrives (agreement, direction,
the patient matched by real name and ID number or added), and our physicians accept it
(when and where), decline it (why) or report its outcome, each answer sent back signed."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select

from clinic.core import audit
from clinic.core.crypto import lookup_hash
from clinic.core.db import db, utcnow
from clinic.core.errors import Forbidden, Invalid
from clinic.core.principal import Principal
from clinic.telemedicine import federation, partners
from clinic.telemedicine.models import FederationMessage, PartnerInstitution, Referral, ReferralDiagnosis
from clinic.telemedicine.referrals import (
    DEPARTMENT_SYSTEM,
    DIRECTION_SYSTEM,
    ICD10,
    ID_SYSTEM,
    RECEIVING,
    RELATION_SYSTEM,
    REQUEST_EVENT,
    STATUS_EVENT,
    agreement_refusal,
    as_physician,
    as_utc,
    bad_direction,
    bundle_resources,
    coding,
    identifier,
    load,
    move,
    name_of,
    one,
    shared_id_of,
    tell_patient,
    text_of,
)
from clinic.telemedicine.rules import (
    N_,
    TaskEvent,
    TaskStatus,
    direction_violations,
)
from identity import rules as identity_rules
from identity import services as identity
from identity.login import hash_password
from identity.models import Account, Patient, Relation, Role


def _on_request(message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    """A partner refers a patient to us: check the agreement covers referral and the
    direction fits the levels, match the patient, keep the referral for our queue."""
    refusal = agreement_refusal(partner)
    if refusal is not None:
        raise refusal
    found = bundle_resources(bundle)
    task, sr, person = one(found, "Task"), one(found, "ServiceRequest"), one(found, "Patient")
    shared = shared_id_of(task)
    direction = ""
    for detail in sr.get("orderDetail") or []:
        direction = coding(detail, DIRECTION_SYSTEM) or direction
    violations = direction_violations(direction, partner.level, partners.own_level())
    if violations:
        raise bad_direction(violations)
    session = db.session()
    if session.scalar(
        select(Referral.id).where(
            Referral.partner_id == partner.id, Referral.role == RECEIVING, Referral.shared_id == shared
        )
    ):
        return  # the same referral in another message: we have it already
    name = text_of(person.get("name"))[:100]
    id_number = next((str(i.get("value")) for i in person.get("identifier") or [] if i.get("system") == ID_SYSTEM), "")
    contact = (person.get("contact") or [{}])[0]
    phone = next((str(t.get("value")) for t in contact.get("telecom") or [] if t.get("system") == "phone"), None)
    relation = coding((contact.get("relationship") or [{}])[0], RELATION_SYSTEM) or Relation.SELF.value
    holder_name = str((contact.get("name") or {}).get("text") or name)[:100]
    if not name or not id_number:
        raise federation.BadMessage(N_("The referred patient needs a real name and an ID number."))
    patient, match = _resolve_patient(name, id_number, relation, phone, holder_name)
    referral = Referral(
        shared_id=shared,
        role=RECEIVING,
        partner_id=partner.id,
        direction=direction,
        status=TaskStatus.REQUESTED.value,
        department=(coding(sr.get("performerType"), DEPARTMENT_SYSTEM) or "")[:64],
        reason=text_of(sr.get("reasonCode")),
        summary=text_of(sr.get("note")),
        patient_id=patient.id if patient is not None else None,
        patient_name=name,
        identity_match=match,
        requester_name=str((sr.get("requester") or {}).get("display") or "")[:100],
        request_message_id=message.id,
    )
    session.add(referral)
    for cond in found.get("Condition", []):
        code = coding(cond.get("code"), ICD10)
        if not code:
            continue
        try:
            on = date.fromisoformat(str(cond.get("recordedDate", ""))[:10])
        except ValueError:
            raise federation.BadMessage(N_("A carried diagnosis needs the date it was made.")) from None
        referral.diagnoses.append(
            ReferralDiagnosis(
                icd10=code[:16],
                name=str((cond.get("code") or {}).get("text") or code)[:100],
                institution=(text_of(cond.get("note")) or partner.name)[:200],
                diagnosed_on=on,
            )
        )
    session.flush()
    audit.record(
        session,
        "referral.received",
        subject_type="referral",
        subject_id=referral.id,
        detail={
            "shared_id": shared,
            "partner_id": str(partner.id),
            "direction": direction,
            "department": referral.department,
            "patient": str(patient.id) if patient is not None else None,
            "identity_match": match,
            "diagnoses": [d.icd10 for d in referral.diagnoses],
        },
    )


def _resolve_patient(
    name: str, id_number: str, relation: str, phone: str | None, holder_name: str
) -> tuple[Patient | None, str]:
    """The referred person here, by real name + ID number (encrypted at rest: found by its
    lookup hash). Known under another name: no match (a person checks it). Unknown: added
    to the account holding the phone the referral names, or to a new account for it."""
    try:
        person = identity_rules.parse_id_number(id_number)
    except identity_rules.IdNumberError:
        raise federation.BadMessage(N_("The referred patient's ID number is not valid.")) from None
    session = db.session()
    id_hash = lookup_hash(person.number)
    known = list(
        session.scalars(
            select(Patient).where(Patient.id_number_hash == id_hash).order_by(Patient.relation != Relation.SELF)
        )
    )
    if known:
        same = [p for p in known if p.name == name]
        return (same[0], "matched") if same else (None, "mismatch")
    try:
        rel = Relation(relation)
    except ValueError:
        rel = Relation.OTHER
    account = None
    phone_e164 = None
    if phone:
        try:
            phone_e164 = identity_rules.normalize_phone(phone)
        except ValueError:
            phone_e164 = None
    if phone_e164:
        account = session.scalars(
            select(Account).where(
                or_(Account.phone_hash == lookup_hash(phone_e164), Account.username == phone_e164),
                Account.role == Role.PATIENT,
            )
        ).first()
    if account is not None:
        if rel == Relation.SELF:  # the holder here is someone else: this person is family of theirs
            rel = Relation.OTHER
        match = "added"
    else:
        account = Account(
            username=phone_e164 or f"referral-{uuid.uuid4().hex[:12]}",
            password_hash=hash_password(secrets.token_urlsafe(24) + "a1"),
            role=Role.PATIENT,
            display_name=holder_name if rel != Relation.SELF else name,
            phone=phone_e164,
            phone_hash=lookup_hash(phone_e164) if phone_e164 else None,
        )
        session.add(account)
        session.flush()
        match = "created"
    patient = Patient(
        account_id=account.id,
        name=name,
        id_number=person.number,
        id_number_hash=id_hash,
        birth_date=person.birth_date,
        sex=person.sex,
        relation=rel,
    )
    session.add(patient)
    session.flush()
    audit.record(
        session,
        "patient.added_by_referral",
        subject_type="patient",
        subject_id=patient.id,
        detail={"account": str(account.id), "relation": rel.value, "match": match},
    )
    return patient, match


def _receiving(who: Principal, referral_id: uuid.UUID) -> tuple[Referral, Account]:
    """The referral a physician here answers, and the physician: only on the receiving side,
    and only a physician qualified for its department (when that is approved here)."""
    physician = as_physician(who)
    referral = load(referral_id)
    if referral.role != RECEIVING:
        raise Forbidden(N_("Only the receiving institution answers a referral."), code="not_receiving")
    department = (
        referral.department if referral.department in identity.institution_status().approved_departments else None
    )
    identity.require_qualified_physician(physician, department=department)
    return referral, physician


def _status_task(referral: Referral, physician_name: str, **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": str(uuid.uuid4()),
        "identifier": identifier(referral.shared_id),
        "status": referral.status,
        "intent": "order",
        "owner": {"display": physician_name},
        "lastModified": utcnow().astimezone(UTC).isoformat(timespec="seconds"),
    }
    task.update(extra)
    return task


def accept(who: Principal, referral_id: uuid.UUID, appointment_at: datetime, place: str) -> Referral:
    """A physician of the receiving institution accepts: when and where the patient comes."""
    referral, physician = _receiving(who, referral_id)
    at = as_utc(appointment_at)
    if at <= utcnow():
        raise Invalid(
            N_("The appointment must be in the future."), fields=[{"loc": "appointment_at", "message": "past"}]
        )
    place = place.strip()
    if not place:
        raise Invalid(N_("Say where the patient is to come."), fields=[{"loc": "place", "message": "empty"}])
    move(referral, TaskEvent.ACCEPT)
    referral.appointment_at, referral.place = at, place
    referral.responded_by, referral.responder_name, referral.responded_at = physician.id, name_of(physician), utcnow()
    appointment = {
        "resourceType": "Appointment",
        "id": str(uuid.uuid4()),
        "identifier": identifier(referral.shared_id),
        "status": "booked",
        "start": at.isoformat(timespec="seconds"),
        "end": (at + timedelta(minutes=30)).isoformat(timespec="seconds"),
        "description": place,
        "participant": [{"actor": {"display": place}, "status": "accepted"}],
    }
    task = _status_task(referral, referral.responder_name)
    federation.send(referral.partner_id, STATUS_EVENT, [task, appointment])
    audit.record(
        db.session(),
        "referral.accepted",
        subject_type="referral",
        subject_id=referral.id,
        detail={"appointment_at": at.isoformat(), "place": place, "shared_id": referral.shared_id},
    )
    tell_patient(referral, sms=False)  # the referring institution texts them; here: in the app
    return referral


def decline(who: Principal, referral_id: uuid.UUID, reason: str) -> Referral:
    referral, physician = _receiving(who, referral_id)
    reason = reason.strip()
    if not reason:
        raise Invalid(N_("Say why the referral is declined."), fields=[{"loc": "reason", "message": "empty"}])
    move(referral, TaskEvent.REJECT)
    referral.decline_reason = reason
    referral.responded_by, referral.responder_name, referral.responded_at = physician.id, name_of(physician), utcnow()
    referral.closed_at = utcnow()
    federation.send(
        referral.partner_id,
        STATUS_EVENT,
        [_status_task(referral, referral.responder_name, statusReason={"text": reason})],
    )
    audit.record(
        db.session(),
        "referral.declined",
        subject_type="referral",
        subject_id=referral.id,
        detail={"reason": reason, "shared_id": referral.shared_id},
    )
    return referral


def report_outcome(who: Principal, referral_id: uuid.UUID, summary: str) -> Referral:
    """The closed loop: the receiving side reports what came of the referral."""
    referral, physician = _receiving(who, referral_id)
    summary = summary.strip()
    if not summary:
        raise Invalid(N_("The outcome needs a summary."), fields=[{"loc": "summary", "message": "empty"}])
    move(referral, TaskEvent.COMPLETE)
    referral.outcome_summary = summary
    referral.outcome_by, referral.outcome_by_name, referral.closed_at = physician.id, name_of(physician), utcnow()
    task = _status_task(
        referral, referral.outcome_by_name, output=[{"type": {"text": "outcome"}, "valueString": summary}]
    )
    federation.send(referral.partner_id, STATUS_EVENT, [task])
    audit.record(
        db.session(),
        "referral.outcome_reported",
        subject_type="referral",
        subject_id=referral.id,
        detail={"shared_id": referral.shared_id},
    )
    return referral


def register_events() -> None:
    federation.register_event(REQUEST_EVENT, _on_request)
