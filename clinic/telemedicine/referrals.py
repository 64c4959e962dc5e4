"""Two-way referral (双向转诊) between institutions, with the closed loop and the carry-over of
confirmed diagnoses.

- The 2018 measures (Art. 21–23) ask tertiary hospitals to refer patients down to primary
  care through their internet systems, and primary care to refer up. A referral goes up
  (from a lower level to a higher one: 基层 → 上级) or down (三级 → 基层/二级); the two
  institutions' levels (ours: the institution profile; the partner's: the agreement) must
  say the same, else the referral is refused by name (`bad_direction`).
- It travels as a signed FHIR message (event `referral-request`): Task + ServiceRequest
  (reason, summary, the receiving department) + Patient (the minimum identity: real name,
  ID number, sex, birth date, the account's phone) + a Condition per confirmed diagnosis.
- The receiving side keeps its own record under the same identifier (the Task identifier),
  matches the patient by real name + ID number (or adds them), and its physicians accept
  (appointment time and place) or decline (a reason); later they report the outcome. Each
  answer goes back as a signed message (event `referral-status`: the Task with its new
  status, an Appointment on acceptance); the sending side applies the same transition, and
  on acceptance tells the patient where and when (SMS and in-app, Beijing time).
- A patient referred with confirmed diagnoses: once a physician here confirms a carried
  diagnosis (face-fresh, qualified in its department, audited), it is a confirmed
  diagnosis here, and the patient's online return visits pass the gate on it (Art. 16).

Both sides move a referral through `rules.transition` only. Nothing here deletes anything.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import exists, or_, select

from clinic.core import audit, storage
from clinic.core.crypto import lookup_hash
from clinic.core.db import as_uuid, db, utcnow
from clinic.core.errors import DomainError, Forbidden, Invalid, NotFound, Violation
from clinic.core.pages import to_beijing
from clinic.core.principal import Principal
from clinic.notifications.services import notify
from clinic.telemedicine import services
from clinic.telemedicine.models import FederationMessage, PartnerInstitution, Referral, ReferralDiagnosis
from clinic.telemedicine.rules import N_, IllegalTaskTransition, TaskEvent, TaskStatus, transition
from clinic.visits.models import Diagnosis, DiagnosisStatus, Visit
from identity import face_services
from identity import rules as identity_rules
from identity import services as identity
from identity.models import Account, Patient, Relation, Role

REQUEST_EVENT = "referral-request"
STATUS_EVENT = "referral-status"
SERVICE = "referral"
TASK_SYSTEM = "urn:clinic:referral"
ID_SYSTEM = "urn:clinic:cn-resident-id"  # 居民身份证号
DEPARTMENT_SYSTEM = "urn:clinic:department"
DIRECTION_SYSTEM = "urn:clinic:referral-direction"
RELATION_SYSTEM = "urn:clinic:relation"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
DIRECTIONS = ("up", "down")
SENDING, RECEIVING = "sending", "receiving"

# 基层 is primary care, the level of 一级 institutions and community health centres.
LEVEL_RANK = {"三级": 3, "二级": 2, "一级": 1, "基层": 1}


# --- pure rules ---------------------------------------------------------------------------


def direction_between(sender_level: str, receiver_level: str) -> str | None:
    """ "up" from a lower level to a higher one, "down" from a higher one to a lower one,
    None between institutions of the same level (or an unknown level)."""
    a, b = LEVEL_RANK.get(sender_level), LEVEL_RANK.get(receiver_level)
    if a is None or b is None or a == b:
        return None
    return "up" if a < b else "down"


def direction_violations(direction: str, sender_level: str, receiver_level: str) -> list[Violation]:
    """Why a referral in `direction` between these levels makes no sense (empty: it does)."""
    if direction not in DIRECTIONS:
        return [Violation("bad_direction", N_("A referral goes up or down."), detail={"loc": "direction"})]
    for level in (sender_level, receiver_level):
        if level not in LEVEL_RANK:
            return [
                Violation(
                    "bad_direction",
                    N_("The institution's level is not set; a referral's direction cannot be judged."),
                    detail={"loc": "direction"},
                )
            ]
    expected = direction_between(sender_level, receiver_level)
    if expected is None:
        return [
            Violation(
                "bad_direction",
                N_(
                    "Both institutions are of the same level (%(level)s): a referral between them is neither up nor down."
                ),
                detail={"loc": "direction", "params": {"level": sender_level}},
            )
        ]
    if expected != direction:
        message = (
            N_(
                "A referral down goes from a higher-level institution (%(from)s) to a lower-level one; this one is %(to)s."
            )
            if direction == "down"
            else N_(
                "A referral up goes from a lower-level institution (%(from)s) to a higher-level one; this one is %(to)s."
            )
        )
        return [
            Violation(
                "bad_direction",
                message,
                detail={"loc": "direction", "params": {"from": sender_level, "to": receiver_level}},
            )
        ]
    return []


# --- refusals -------------------------------------------------------------------------------


class BadDirection(Invalid):
    code = "bad_direction"
    default_message = N_("The referral's direction does not match the two institutions' levels.")


class UnknownReferral(Invalid):
    code = "unknown_referral"
    default_message = N_("The message is about a referral this institution does not know.")


def _refuse(err: DomainError, action: str, **detail: Any) -> NoReturn:
    """Audit a refusal (kept although the request is refused) and raise it."""
    audit.record(db.session(), action, subject_type="referral", detail=detail)
    err.persist = True
    raise err


def _no_service(partner: PartnerInstitution) -> services.NoAgreement:
    return services.NoAgreement(
        N_("The agreement with %(name)s does not include two-way referral."),
        params={"name": partner.name},
        service=SERVICE,
    )


def _agreement_refusal(partner: PartnerInstitution) -> services.NoAgreement | None:
    if not services.agreement_in_force(partner):
        return services.NoAgreement(
            N_("There is no cooperation agreement in force with %(name)s (valid %(start)s to %(end)s)."),
            params={
                "name": partner.name,
                "start": partner.valid_from.isoformat(),
                "end": partner.valid_until.isoformat(),
            },
        )
    if SERVICE not in (partner.services or []):
        return _no_service(partner)
    return None


def _bad_direction(violations: list[Violation]) -> BadDirection:
    v = violations[0]
    params = v.detail.get("params", {})
    return BadDirection(v.message, params=params, fields=[{"loc": "direction", "message": v.code}])


# --- the sending side ---------------------------------------------------------------------


def _account(account_id: str | uuid.UUID) -> Account:
    return identity.get_account(account_id)


def _physician(account_id: str | uuid.UUID) -> Account:
    account = _account(account_id)
    if account.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only physicians may do this."))
    return account


def _treats(physician: Account, patient_id: uuid.UUID) -> bool:
    """The physician has seen this patient: a visit of theirs, or a diagnosis they reviewed."""
    visit = exists().where(Visit.patient_id == patient_id, Visit.physician_id == physician.id)
    reviewed = exists().where(Diagnosis.patient_id == patient_id, Diagnosis.reviewed_by == physician.id)
    return bool(db.session.scalar(select(or_(visit, reviewed))))


def _name(account: Account) -> str:
    return account.staff.name if account.staff is not None else account.display_name


def _confirmed_diagnoses(patient_id: uuid.UUID) -> list[Diagnosis]:
    return list(
        db.session.scalars(
            select(Diagnosis)
            .where(Diagnosis.patient_id == patient_id, Diagnosis.status == DiagnosisStatus.CONFIRMED)
            .order_by(Diagnosis.diagnosed_on)
        )
    )


@dataclass(frozen=True)
class ReferralRequest:
    patient_id: str
    institution_id: str
    direction: str
    department: str
    reason: str
    summary: str
    visit_id: str | None = None


def send_referral(physician_id: str | uuid.UUID, req: ReferralRequest) -> Referral:
    """A physician refers their patient to a partner institution, up or down."""
    session = db.session()
    physician = _physician(physician_id)
    identity.require_qualified_physician(physician)
    patient = session.get(Patient, as_uuid(req.patient_id)) if as_uuid(req.patient_id) else None
    if patient is None or not _treats(physician, patient.id):
        raise NotFound(N_("No such patient among yours."))
    visit_id = as_uuid(req.visit_id) if req.visit_id else None
    if req.visit_id:
        visit = session.get(Visit, visit_id) if visit_id else None
        if visit is None or visit.patient_id != patient.id:
            raise NotFound(N_("No such visit of this patient."))
    partner = services.get_partner(req.institution_id)
    refusal = _agreement_refusal(partner)
    if refusal is not None:
        _refuse(refusal, "referral.refused", partner_id=str(partner.id), reason=refusal.code)
    violations = direction_violations(req.direction, services.own_level(), partner.level)
    if violations:
        _refuse(
            _bad_direction(violations),
            "referral.refused",
            partner_id=str(partner.id),
            reason="bad_direction",
            direction=req.direction,
            levels=[services.own_level(), partner.level],
        )
    department = req.department.strip()
    if partner.departments and department not in partner.departments:
        raise Invalid(
            N_("The department %(department)s is not among those agreed with %(name)s."),
            params={"department": department, "name": partner.name},
            fields=[{"loc": "department", "message": "not agreed"}],
        )
    carried = _confirmed_diagnoses(patient.id)
    referral = Referral(
        shared_id=str(uuid.uuid4()),
        role=SENDING,
        partner_id=partner.id,
        direction=req.direction,
        status=TaskStatus.REQUESTED.value,
        department=department,
        reason=req.reason.strip(),
        summary=req.summary.strip(),
        patient_id=patient.id,
        patient_name=patient.name,
        identity_match="",
        visit_id=visit_id,
        requested_by=physician.id,
        requester_name=_name(physician),
    )
    session.add(referral)
    for d in carried:
        referral.diagnoses.append(
            ReferralDiagnosis(
                icd10=d.icd10,
                name=d.condition.name_zh if d.condition is not None else d.icd10,
                institution=d.institution,
                diagnosed_on=d.diagnosed_on,
                diagnosis_id=d.id,
                confirmed_by=d.reviewed_by,
                confirmed_at=d.reviewed_at,
            )
        )
    session.flush()
    message = services.send(partner.id, REQUEST_EVENT, request_resources(referral, patient))
    referral.request_message_id = message.id  # sending side: the request as signed and sent
    audit.record(
        session,
        "referral.sent",
        subject_type="referral",
        subject_id=referral.id,
        detail={
            "shared_id": referral.shared_id,
            "partner_id": str(partner.id),
            "direction": referral.direction,
            "department": department,
            "patient": str(patient.id),
            "diagnoses": [d.icd10 for d in carried],
            "message_id": message.message_id,
        },
    )
    return referral


def _identifier(shared_id: str) -> list[dict[str, str]]:
    return [{"system": TASK_SYSTEM, "value": shared_id}]


def request_resources(referral: Referral, patient: Patient) -> list[dict[str, Any]]:
    """The FHIR resources of a referral request: Task, ServiceRequest, Patient, Conditions."""
    task_id, sr_id, pid = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    holder = patient.account
    phone = holder.phone if holder is not None else None
    patient_res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": ID_SYSTEM, "value": patient.id_number}],
        "name": [{"text": patient.name}],
        "gender": patient.sex if patient.sex in ("male", "female") else "unknown",
        "birthDate": patient.birth_date.isoformat(),
    }
    if phone:
        patient_res["contact"] = [
            {
                "relationship": [{"coding": [{"system": RELATION_SYSTEM, "code": patient.relation.value}]}],
                "name": {"text": holder.display_name},
                "telecom": [{"system": "phone", "value": phone}],
            }
        ]
    conditions = [
        {
            "resourceType": "Condition",
            "id": str(uuid.uuid4()),
            "clinicalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
            },
            "verificationStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
                ]
            },
            "code": {"coding": [{"system": ICD10, "code": d.icd10, "display": d.name}], "text": d.name},
            "subject": {"reference": f"Patient/{pid}"},
            "recordedDate": d.diagnosed_on.isoformat(),
            "note": [{"text": d.institution}],
        }
        for d in referral.diagnoses
    ]
    service_request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": sr_id,
        "identifier": _identifier(referral.shared_id),
        "status": "active",
        "intent": "order",
        "category": [
            {"coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}]}
        ],
        "code": {"text": "双向转诊"},
        "orderDetail": [{"coding": [{"system": DIRECTION_SYSTEM, "code": referral.direction}]}],
        "subject": {"reference": f"Patient/{pid}"},
        "requester": {"display": referral.requester_name},
        "performerType": {"coding": [{"system": DEPARTMENT_SYSTEM, "code": referral.department}]},
        "reasonCode": [{"text": referral.reason}],
        "note": [{"text": referral.summary}],
    }
    if conditions:
        service_request["reasonReference"] = [{"reference": f"Condition/{c['id']}"} for c in conditions]
    task = {
        "resourceType": "Task",
        "id": task_id,
        "identifier": _identifier(referral.shared_id),
        "status": TaskStatus.REQUESTED.value,
        "intent": "order",
        "focus": {"reference": f"ServiceRequest/{sr_id}"},
        "for": {"reference": f"Patient/{pid}"},
        "authoredOn": (referral.created_at or utcnow()).astimezone(UTC).isoformat(timespec="seconds"),
        "requester": {"display": referral.requester_name},
    }
    return [task, service_request, patient_res, *conditions]


# --- the receiving side: the request arrives ----------------------------------------------


def _resources(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle.get("entry", [])[1:]:
        res = entry.get("resource") or {}
        out.setdefault(str(res.get("resourceType")), []).append(res)
    return out


def _one(found: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    items = found.get(kind, [])
    if len(items) != 1:
        raise services.BadMessage(N_("A referral message carries exactly one %(kind)s."), params={"kind": kind})
    return items[0]


def _shared_id(task: dict[str, Any]) -> str:
    for ident in task.get("identifier") or []:
        if ident.get("system") == TASK_SYSTEM and isinstance(ident.get("value"), str) and ident["value"]:
            return str(ident["value"])[:64]
    raise services.BadMessage(N_("The referral's Task carries no referral identifier."))


def _coding(concept: dict[str, Any] | None, system: str) -> str | None:
    for c in (concept or {}).get("coding") or []:
        if c.get("system") == system and c.get("code"):
            return str(c["code"])
    return None


def _text(items: list[dict[str, Any]] | None) -> str:
    return "\n".join(str(i.get("text", "")) for i in (items or []) if i.get("text")).strip()


def _on_request(message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    """A partner refers a patient to us: check the agreement covers referral and the
    direction fits the levels, match the patient, keep the referral for our queue."""
    refusal = _agreement_refusal(partner)
    if refusal is not None:
        raise refusal
    found = _resources(bundle)
    task, sr, person = _one(found, "Task"), _one(found, "ServiceRequest"), _one(found, "Patient")
    shared = _shared_id(task)
    direction = ""
    for detail in sr.get("orderDetail") or []:
        direction = _coding(detail, DIRECTION_SYSTEM) or direction
    violations = direction_violations(direction, partner.level, services.own_level())
    if violations:
        raise _bad_direction(violations)
    session = db.session()
    if session.scalar(
        select(Referral.id).where(
            Referral.partner_id == partner.id, Referral.role == RECEIVING, Referral.shared_id == shared
        )
    ):
        return  # the same referral in another message: we have it already
    name = _text(person.get("name"))[:100]
    id_number = next((str(i.get("value")) for i in person.get("identifier") or [] if i.get("system") == ID_SYSTEM), "")
    contact = (person.get("contact") or [{}])[0]
    phone = next((str(t.get("value")) for t in contact.get("telecom") or [] if t.get("system") == "phone"), None)
    relation = _coding((contact.get("relationship") or [{}])[0], RELATION_SYSTEM) or Relation.SELF.value
    holder_name = str((contact.get("name") or {}).get("text") or name)[:100]
    if not name or not id_number:
        raise services.BadMessage(N_("The referred patient needs a real name and an ID number."))
    patient, match = _resolve_patient(name, id_number, relation, phone, holder_name)
    referral = Referral(
        shared_id=shared,
        role=RECEIVING,
        partner_id=partner.id,
        direction=direction,
        status=TaskStatus.REQUESTED.value,
        department=(_coding(sr.get("performerType"), DEPARTMENT_SYSTEM) or "")[:64],
        reason=_text(sr.get("reasonCode")),
        summary=_text(sr.get("note")),
        patient_id=patient.id if patient is not None else None,
        patient_name=name,
        identity_match=match,
        requester_name=str((sr.get("requester") or {}).get("display") or "")[:100],
        request_message_id=message.id,
    )
    session.add(referral)
    for cond in found.get("Condition", []):
        code = _coding(cond.get("code"), ICD10)
        if not code:
            continue
        try:
            on = date.fromisoformat(str(cond.get("recordedDate", ""))[:10])
        except ValueError:
            raise services.BadMessage(N_("A carried diagnosis needs the date it was made.")) from None
        referral.diagnoses.append(
            ReferralDiagnosis(
                icd10=code[:16],
                name=str((cond.get("code") or {}).get("text") or code)[:100],
                institution=(_text(cond.get("note")) or partner.name)[:200],
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
        raise services.BadMessage(N_("The referred patient's ID number is not valid.")) from None
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
            password_hash=identity.hash_password(secrets.token_urlsafe(24) + "a1"),
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


# --- the receiving side: answer, outcome --------------------------------------------------


def _load(referral_id: str | uuid.UUID) -> Referral:
    key = as_uuid(referral_id)
    referral = db.session.get(Referral, key) if key else None
    if referral is None:
        raise NotFound(N_("No such referral."))
    return referral


def _receiving(referral_id: str | uuid.UUID, physician: Account) -> Referral:
    referral = _load(referral_id)
    if referral.role != RECEIVING:
        raise Forbidden(N_("Only the receiving institution answers a referral."), code="not_receiving")
    department = (
        referral.department if referral.department in identity.institution_status().approved_departments else None
    )
    identity.require_qualified_physician(physician, department=department)
    return referral


def _move(referral: Referral, event: TaskEvent) -> None:
    referral.status = transition(TaskStatus(referral.status), event).value


def _status_task(referral: Referral, physician_name: str, **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": str(uuid.uuid4()),
        "identifier": _identifier(referral.shared_id),
        "status": referral.status,
        "intent": "order",
        "owner": {"display": physician_name},
        "lastModified": utcnow().astimezone(UTC).isoformat(timespec="seconds"),
    }
    task.update(extra)
    return task


def _as_utc(at: datetime) -> datetime:
    """A time without a zone is a Beijing time (as a physician here types it)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=to_beijing(utcnow()).tzinfo)
    return at.astimezone(UTC)


def accept(
    physician_id: str | uuid.UUID, referral_id: str | uuid.UUID, appointment_at: datetime, place: str
) -> Referral:
    """A physician of the receiving institution accepts: when and where the patient comes."""
    physician = _physician(physician_id)
    referral = _receiving(referral_id, physician)
    at = _as_utc(appointment_at)
    if at <= utcnow():
        raise Invalid(
            N_("The appointment must be in the future."), fields=[{"loc": "appointment_at", "message": "past"}]
        )
    place = place.strip()
    if not place:
        raise Invalid(N_("Say where the patient is to come."), fields=[{"loc": "place", "message": "empty"}])
    _move(referral, TaskEvent.ACCEPT)
    referral.appointment_at, referral.place = at, place
    referral.responded_by, referral.responder_name, referral.responded_at = physician.id, _name(physician), utcnow()
    appointment = {
        "resourceType": "Appointment",
        "id": str(uuid.uuid4()),
        "identifier": _identifier(referral.shared_id),
        "status": "booked",
        "start": at.isoformat(timespec="seconds"),
        "end": (at + timedelta(minutes=30)).isoformat(timespec="seconds"),
        "description": place,
        "participant": [{"actor": {"display": place}, "status": "accepted"}],
    }
    task = _status_task(referral, referral.responder_name)
    services.send(referral.partner_id, STATUS_EVENT, [task, appointment])
    audit.record(
        db.session(),
        "referral.accepted",
        subject_type="referral",
        subject_id=referral.id,
        detail={"appointment_at": at.isoformat(), "place": place, "shared_id": referral.shared_id},
    )
    _tell_patient(referral, sms=False)  # the referring institution texts them; here: in the app
    return referral


def decline(physician_id: str | uuid.UUID, referral_id: str | uuid.UUID, reason: str) -> Referral:
    physician = _physician(physician_id)
    referral = _receiving(referral_id, physician)
    reason = reason.strip()
    if not reason:
        raise Invalid(N_("Say why the referral is declined."), fields=[{"loc": "reason", "message": "empty"}])
    _move(referral, TaskEvent.REJECT)
    referral.decline_reason = reason
    referral.responded_by, referral.responder_name, referral.responded_at = physician.id, _name(physician), utcnow()
    referral.closed_at = utcnow()
    services.send(
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


def report_outcome(physician_id: str | uuid.UUID, referral_id: str | uuid.UUID, summary: str) -> Referral:
    """The closed loop: the receiving side reports what came of the referral."""
    physician = _physician(physician_id)
    referral = _receiving(referral_id, physician)
    summary = summary.strip()
    if not summary:
        raise Invalid(N_("The outcome needs a summary."), fields=[{"loc": "summary", "message": "empty"}])
    _move(referral, TaskEvent.COMPLETE)
    referral.outcome_summary = summary
    referral.outcome_by, referral.outcome_by_name, referral.closed_at = physician.id, _name(physician), utcnow()
    task = _status_task(
        referral, referral.outcome_by_name, output=[{"type": {"text": "outcome"}, "valueString": summary}]
    )
    services.send(referral.partner_id, STATUS_EVENT, [task])
    audit.record(
        db.session(),
        "referral.outcome_reported",
        subject_type="referral",
        subject_id=referral.id,
        detail={"shared_id": referral.shared_id},
    )
    return referral


# --- the sending side: an answer arrives -----------------------------------------------------

_EVENT_OF_STATUS = {
    TaskStatus.ACCEPTED.value: TaskEvent.ACCEPT,
    TaskStatus.REJECTED.value: TaskEvent.REJECT,
    TaskStatus.IN_PROGRESS.value: TaskEvent.START,
    TaskStatus.COMPLETED.value: TaskEvent.COMPLETE,
}


def _on_status(message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    found = _resources(bundle)
    task = _one(found, "Task")
    shared = _shared_id(task)
    referral = db.session.scalar(
        select(Referral).where(
            Referral.partner_id == partner.id, Referral.role == SENDING, Referral.shared_id == shared
        )
    )
    if referral is None:
        raise UnknownReferral()
    event = _EVENT_OF_STATUS.get(str(task.get("status")))
    if event is None:
        raise services.BadMessage(
            N_("A referral's status cannot be set to %(status)s by the receiving side."),
            params={"status": str(task.get("status"))},
        )
    _move(referral, event)
    who = str((task.get("owner") or {}).get("display") or "")[:100]
    now = utcnow()
    if event == TaskEvent.ACCEPT:
        appt = _one(found, "Appointment")
        try:
            at = datetime.fromisoformat(str(appt.get("start")))
        except ValueError:
            raise services.BadMessage(N_("The appointment's time cannot be read.")) from None
        referral.appointment_at = _as_utc(at)
        referral.place = str(appt.get("description") or "")[:300]
        referral.responder_name, referral.responded_at = who, now
    elif event == TaskEvent.REJECT:
        referral.decline_reason = str((task.get("statusReason") or {}).get("text") or "")
        referral.responder_name, referral.responded_at, referral.closed_at = who, now, now
    elif event == TaskEvent.COMPLETE:
        outputs = [o.get("valueString") for o in task.get("output") or [] if o.get("valueString")]
        referral.outcome_summary = "\n".join(str(o) for o in outputs)
        referral.outcome_by_name, referral.closed_at = who, now
    audit.record(
        db.session(),
        f"referral.{referral.status.replace('-', '_')}",
        subject_type="referral",
        subject_id=referral.id,
        detail={"shared_id": shared, "partner_id": str(partner.id), "message_id": message.message_id},
    )
    if event == TaskEvent.ACCEPT:
        _tell_patient(referral, sms=True)
    if referral.requested_by is not None:
        notify(
            db.session(),
            account_id=referral.requested_by,
            kind="referral_answered",
            link=f"/physician/referrals/{referral.id}",
            subject_type="referral",
            subject_id=referral.id,
            sms=False,
            patient=referral.patient_name,
            institution=partner.name,
            status=_status_zh(referral.status),
        )


STATUS_ZH = {
    "requested": "待接收",
    "accepted": "已接收",
    "in-progress": "诊疗中",
    "completed": "已完成",
    "rejected": "已拒绝",
    "cancelled": "已撤销",
    "failed": "发送失败",
}


def _status_zh(status: str) -> str:
    return STATUS_ZH.get(status, status)


def _tell_patient(referral: Referral, sms: bool) -> None:
    """Where and when, in Beijing time, to the account holding the patient."""
    patient = db.session.get(Patient, referral.patient_id) if referral.patient_id else None
    if patient is None or referral.appointment_at is None:
        return
    notify(
        db.session(),
        account_id=patient.account_id,
        kind="referral_accepted",
        link=f"/referrals/{referral.id}",
        subject_type="referral",
        subject_id=referral.id,
        sms=sms,
        name=patient.name,
        institution=referral.partner.name if referral.role == SENDING else services.own_name(),
        when=to_beijing(referral.appointment_at).strftime("%Y年%m月%d日 %H:%M"),
        place=referral.place or "",
    )


# --- diagnosis carry-over ------------------------------------------------------------------


def confirm_carried(who: Principal, referral_id: str | uuid.UUID, carried_id: str | uuid.UUID) -> ReferralDiagnosis:
    """A physician here confirms a diagnosis the referred patient arrived with: it becomes a
    confirmed diagnosis here (its document: the carried record and the hash of the signed
    referral), on which the patient's online return visits pass the gate (Art. 16)."""
    from clinic.visits import services as visits

    session = db.session()
    physician = _physician(who.id)
    face_services.require_fresh_face(who)
    referral = _load(referral_id)
    if referral.role != RECEIVING:
        raise Forbidden(N_("Only the receiving institution confirms carried diagnoses."), code="not_receiving")
    if referral.status not in (TaskStatus.ACCEPTED.value, TaskStatus.IN_PROGRESS.value, TaskStatus.COMPLETED.value):
        raise IllegalTaskTransition(
            N_("Carried diagnoses are confirmed once the referral is accepted."), status=referral.status
        )
    carried = next((d for d in referral.diagnoses if d.id == as_uuid(carried_id)), None)
    if carried is None:
        raise NotFound(N_("No such carried diagnosis."))
    if carried.diagnosis_id is not None:
        raise IllegalTaskTransition(N_("This carried diagnosis is already confirmed."), code="already_reviewed")
    patient = session.get(Patient, referral.patient_id) if referral.patient_id else None
    if patient is None:
        raise Invalid(
            N_("The referred patient's identity does not match ours; check it before confirming diagnoses."),
            code="identity_mismatch",
        )
    cond = visits.catalog_condition(carried.icd10)
    if cond is None:
        raise visits.NotEligibleCondition(
            "%(icd10)s is not a common or chronic condition that may be followed up online; "
            "the patient needs an in-person visit.",
            params={"icd10": carried.icd10},
        )
    identity.require_qualified_physician(physician, department=cond.department)
    existing = session.scalars(
        select(Diagnosis).where(
            Diagnosis.patient_id == patient.id,
            Diagnosis.condition_code == cond.code,
            Diagnosis.status == DiagnosisStatus.CONFIRMED,
        )
    ).first()
    if existing is None:
        request = session.get(FederationMessage, referral.request_message_id) if referral.request_message_id else None
        record = {
            "kind": "referral-carried-diagnosis",
            "referral": referral.shared_id,
            "from": referral.partner.name,
            "icd10": carried.icd10,
            "name": carried.name,
            "diagnosed_at": carried.institution,
            "diagnosed_on": carried.diagnosed_on.isoformat(),
            "signed_message_id": request.message_id if request is not None else None,
            "signed_message_sha256": hashlib.sha256(request.jws.encode()).hexdigest() if request is not None else None,
        }
        document = json.dumps(record, ensure_ascii=False, sort_keys=True, indent=1).encode()
        existing = Diagnosis(
            patient_id=patient.id,
            submitted_by=patient.account_id,
            icd10=carried.icd10,
            institution=carried.institution,
            diagnosed_on=carried.diagnosed_on,
            document_kind="outpatient_record",
            document_path=storage.save("diagnoses", document, "json"),
            document_type="application/json",
            document_sha256=hashlib.sha256(document).hexdigest(),
        )
        session.add(existing)
        session.flush()
        visits.record_confirmation(existing, physician.id, cond)
    carried.diagnosis_id, carried.confirmed_by, carried.confirmed_at = existing.id, physician.id, utcnow()
    audit.record(
        session,
        "referral.diagnosis_confirmed",
        subject_type="referral",
        subject_id=referral.id,
        detail={"carried": str(carried.id), "icd10": carried.icd10, "diagnosis": str(existing.id)},
    )
    notify(
        session,
        account_id=patient.account_id,
        kind="proof_confirmed",
        link="/diagnoses",
        subject_type="diagnosis",
        subject_id=existing.id,
        condition=cond.name_zh,
    )
    return carried


# --- reading -------------------------------------------------------------------------------


def list_referrals(account_id: str | uuid.UUID, role: str | None = None, status: str | None = None) -> list[Referral]:
    """The institution's referrals for its physicians and administrators: sent (role
    sending) or to answer (role receiving, the queue), newest first."""
    account = _account(account_id)
    if account.role not in (Role.PHYSICIAN, Role.ADMIN):
        raise Forbidden(N_("Only physicians and administrators see the referrals."))
    query = select(Referral)
    if role:
        if role not in (SENDING, RECEIVING):
            raise Invalid(N_("The role is sending or receiving."), fields=[{"loc": "role", "message": "unknown"}])
        query = query.where(Referral.role == role)
    if status:
        if status not in {s.value for s in TaskStatus}:
            raise Invalid(N_("Unknown status."), fields=[{"loc": "status", "message": "unknown"}])
        query = query.where(Referral.status == status)
    return list(db.session.scalars(query.order_by(Referral.created_at.desc()).limit(500)))


def referral_for(account_id: str | uuid.UUID, referral_id: str | uuid.UUID) -> Referral:
    """A referral the caller may see: staff of this institution, or the patient's account
    holder; anyone else 404."""
    account = _account(account_id)
    referral = _load(referral_id)
    if account.role in (Role.PHYSICIAN, Role.ADMIN):
        return referral
    if account.role == Role.PATIENT and any(p.id == referral.patient_id for p in account.patients):
        return referral
    raise NotFound(N_("No such referral."))


def referrals_of_patient_account(account: Account) -> list[Referral]:
    ids = [p.id for p in account.patients]
    if not ids:
        return []
    return list(
        db.session.scalars(
            select(Referral).where(Referral.patient_id.in_(ids)).order_by(Referral.created_at.desc()).limit(100)
        )
    )


def partners_for_referral() -> list[PartnerInstitution]:
    """Partners with an agreement in force that includes referral."""
    return [p for p in services.list_partners() if _agreement_refusal(p) is None]


def _request_undelivered(message: FederationMessage) -> None:
    """The outbox gave up on a referral request (the partner never answered through every
    retry): the referral fails, and the referring physician is told to act otherwise."""
    session = db.session()
    referral = session.scalar(
        select(Referral).where(Referral.role == SENDING, Referral.request_message_id == message.id)
    )
    if referral is None or referral.status != TaskStatus.REQUESTED.value:
        return
    _move(referral, TaskEvent.FAIL)
    referral.closed_at = utcnow()
    audit.record(
        session,
        "referral.failed",
        subject_type="referral",
        subject_id=referral.id,
        detail={"shared_id": referral.shared_id, "message_id": message.message_id, "attempts": message.attempts},
    )
    if referral.requested_by is not None:
        notify(
            session,
            account_id=referral.requested_by,
            kind="referral_answered",
            link=f"/physician/referrals/{referral.id}",
            subject_type="referral",
            subject_id=referral.id,
            sms=False,
            patient=referral.patient_name,
            institution=referral.partner.name,
            status=_status_zh(referral.status),
        )


def register_events() -> None:
    services.register_event(REQUEST_EVENT, _on_request)
    services.register_event(STATUS_EVENT, _on_status)
    services.register_undelivered(REQUEST_EVENT, _request_undelivered)


register_events()
