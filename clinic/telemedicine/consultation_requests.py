"""A remote consultation asked for by this institution (the inviting side): the physician
requests it for their own patient (every check before any write), withdraws it or
acknowledges the opinion; the invited side's acceptance or refusal arrives and moves our
record, and a request the outbox could not deliver fails. Answering a consultation asked
of us (the invited side) is in `consultation_answers`, the opinion in
`consultation_opinions`.

Use cases load, apply the rules, change state, audit and enqueue; none commits."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, NotFound, RuleRefusal, Violation
from clinic.core.principal import Principal
from clinic.telemedicine import envelope, federation, partners
from clinic.telemedicine.consultation_consent import ConsentRequired, current_consent_of
from clinic.telemedicine.consultations import (
    DEPARTMENT_SYSTEM,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_REQUEST,
    INVITING,
    TASK_SYSTEM,
    URGENCIES,
    as_physician,
    bundle_resources,
    closed_by_partner,
    consultation_for,
    iso,
    move,
    name_of,
    our_consultation,
    parse_time,
    reason_given,
    refuse,
    require_agreement,
    task_id_of,
    task_resource,
    tell_requester,
    title_of,
    treats,
)
from clinic.telemedicine.models import (
    Consultation,
    FederationMessage,
    PartnerInstitution,
)
from clinic.telemedicine.rules import (
    N_,
    TaskEvent,
    TaskStatus,
)
from clinic.visits.models import Diagnosis, DiagnosisStatus, Visit
from identity import face_services
from identity import services as identity
from identity.models import Account, Patient, Role


@dataclass(frozen=True)
class ConsultationRequest:
    patient_id: uuid.UUID
    institution_id: uuid.UUID
    department: str
    question: str
    summary: str
    urgency: str
    present_physician_ids: tuple[uuid.UUID, ...]
    visit_id: uuid.UUID | None = None


def request_consultation(who: Principal, req: ConsultationRequest) -> Consultation:
    """A physician asks a partner institution's department for a remote consultation for
    their own patient. Every check comes before any write: a refusal leaves only its audit
    entry."""
    session = db.session()
    physician = as_physician(who)
    face_services.require_fresh_face(who)
    identity.require_qualified_physician(physician)
    patient = session.get(Patient, req.patient_id)
    if patient is None or not treats(physician, patient.id):
        raise NotFound(N_("No such patient among yours."))
    visit: Visit | None = None
    if req.visit_id is not None:
        visit = session.get(Visit, req.visit_id)
        if visit is None or visit.patient_id != patient.id or visit.physician_id != physician.id:
            raise NotFound(N_("No such visit of yours with this patient."))
    partner = session.get(PartnerInstitution, req.institution_id)
    if partner is None:
        raise refuse(partners.NoAgreement(N_("There is no cooperation agreement with that institution.")))
    try:
        require_agreement(partner, req.department)
    except partners.NoAgreement as err:
        raise refuse(err, partner_id=str(partner.id)) from None
    consent = current_consent_of(patient.id)
    if consent is None:
        raise refuse(ConsentRequired(), patient_id=str(patient.id))
    violations: list[Violation] = []
    if req.urgency not in URGENCIES:
        violations.append(Violation("invalid", N_("The urgency is routine or urgent."), detail={"loc": "urgency"}))
    present: list[Account] = []
    for key in dict.fromkeys(req.present_physician_ids or (physician.id,)):
        acc = session.get(Account, key)
        if acc is None or acc.role != Role.PHYSICIAN or not acc.active:
            violations.append(
                Violation(
                    "invalid",
                    N_("Each physician named as present must be an active physician of this institution."),
                    detail={"loc": "present_physician_ids"},
                )
            )
            break
        present.append(acc)
    if violations:
        raise RuleRefusal("invalid", violations, lead=N_("The consultation request is not valid:"))
    conditions = [
        {"icd10": d.icd10, "name": d.condition.name_zh if d.condition else d.icd10}
        for d in session.scalars(
            select(Diagnosis)
            .where(Diagnosis.patient_id == patient.id, Diagnosis.status == DiagnosisStatus.CONFIRMED)
            .order_by(Diagnosis.created_at)
        )
    ]
    task_id = str(uuid.uuid4())
    c = Consultation(
        task_id=task_id,
        role=INVITING,
        partner_id=partner.id,
        status=TaskStatus.REQUESTED.value,
        department=req.department,
        urgency=req.urgency,
        question=req.question,
        summary=req.summary,
        patient_id=patient.id,
        visit_id=visit.id if visit else None,
        requested_by=physician.id,
        consent_id=consent.id,
        patient_json=json.dumps(
            {"name": patient.name, "sex": patient.sex, "birth_date": patient.birth_date.isoformat()},
            ensure_ascii=False,
        ),
        conditions=conditions,
        requester_name=name_of(physician),
        present_physicians=[{"id": str(a.id), "name": name_of(a), "title": title_of(a)} for a in present],
        fee_fen=partner.fee_fen,
        split_inviting=partner.split_inviting,
        split_invited=partner.split_invited,
    )
    session.add(c)
    session.flush()
    audit.record(
        session,
        "consultation.requested",
        subject_type="consultation",
        subject_id=c.id,
        detail={
            "task_id": task_id,
            "partner_id": str(partner.id),
            "patient_id": str(patient.id),
            "department": c.department,
            "urgency": c.urgency,
            "consent_version": consent.version,
            "present": [p["id"] for p in c.present_physicians],
        },
    )
    federation.send(partner.id, EV_REQUEST, _request_resources(c, patient))
    return c


def _request_resources(c: Consultation, patient: Patient) -> list[dict[str, Any]]:
    ident = [{"system": TASK_SYSTEM, "value": c.task_id}]
    pref = {"reference": f"Patient/{patient.id}"}
    authored = iso(c.requested_at or utcnow())
    present = "、".join(f"{p['name']}（{p['title']}）" if p.get("title") else p["name"] for p in c.present_physicians)
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Task",
            "id": str(uuid.uuid4()),
            "identifier": ident,
            "basedOn": [{"reference": f"ServiceRequest/{c.task_id}"}],
            "status": "requested",
            "intent": "order",
            "priority": c.urgency,
            "code": {"text": "远程会诊"},
            "description": c.question,
            "for": pref,
            "authoredOn": authored,
            "requester": {"display": c.requester_name},
            "note": [{"text": f"在场医师：{present}"}],
        },
        {
            "resourceType": "ServiceRequest",
            "id": c.task_id,
            "identifier": ident,
            "status": "active",
            "intent": "order",
            "priority": c.urgency,
            "code": {"text": "远程会诊"},
            "subject": pref,
            "authoredOn": authored,
            "requester": {"display": c.requester_name},
            "performerType": {"coding": [{"system": DEPARTMENT_SYSTEM, "code": c.department}]},
            "reasonCode": [{"text": c.question}],
            "note": [{"text": c.summary}],
        },
        {
            "resourceType": "Patient",
            "id": str(patient.id),
            "name": [{"text": patient.name}],
            "gender": patient.sex if patient.sex in ("male", "female") else "unknown",
            "birthDate": patient.birth_date.isoformat(),
        },
    ]
    for cond in c.conditions:
        resources.append(
            {
                "resourceType": "Condition",
                "id": str(uuid.uuid4()),
                "clinicalStatus": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
                },
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "confirmed",
                        }
                    ]
                },
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": cond["icd10"]}],
                    "text": cond["name"],
                },
                "subject": pref,
            }
        )
    return resources


def cancel(who: Principal, consultation_id: uuid.UUID, reason: str) -> Consultation:
    physician = as_physician(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITING or c.requested_by != physician.id:
        raise Forbidden(N_("Only the requesting physician may withdraw the request."))
    reason = reason_given(reason)
    move(c, TaskEvent.CANCEL, reason=reason)
    federation.send(c.partner_id, EV_CANCELLED, [{**task_resource(c), "statusReason": {"text": reason}}])
    return c


def acknowledge(who: Principal, consultation_id: uuid.UUID) -> Consultation:
    """The inviting physician has read the opinion (it is in the patient's record)."""
    physician = as_physician(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITING:
        raise Forbidden(N_("The inviting institution's physician acknowledges the opinion."))
    if c.status != TaskStatus.COMPLETED.value:
        raise Conflict(N_("There is no opinion to acknowledge yet."), code="no_opinion")
    if c.acknowledged_at is None:
        c.acknowledged_at, c.acknowledged_by = utcnow(), physician.id
        audit.record(
            db.session(),
            "consultation.acknowledged",
            subject_type="consultation",
            subject_id=c.id,
            detail={"task_id": c.task_id},
        )
    return c


# --- received messages: the invited side's answers, a request that could not be delivered ------


def _on_accepted(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    c = our_consultation(partner, INVITING, task_id_of(bundle))
    task = bundle_resources(bundle, "Task")[0]
    owner = str((task.get("owner") or {}).get("display") or "")
    name, _, title = owner.partition("（")
    c.specialist_name, c.specialist_title = name[:100], title.rstrip("）")[:64]
    c.accepted_at = parse_time(task.get("lastModified")) or utcnow()
    if c.status == TaskStatus.REQUESTED.value:
        move(c, TaskEvent.ACCEPT, specialist=c.specialist_name)
        tell_requester(c)


def _request_undelivered(message: FederationMessage) -> None:
    """The outbox gave up on a consultation request (the partner never answered through
    every retry): the consultation fails (FHIR Task `failed`), audited; its page says so."""
    try:
        bundle = envelope.verify(message.jws, partners.own_key().public_jwk)
        task_id = task_id_of(bundle)
    except (envelope.BadSignature, envelope.BadMessage, DomainError):
        return
    c = db.session.scalar(
        select(Consultation).where(
            Consultation.partner_id == message.partner_id,
            Consultation.role == INVITING,
            Consultation.task_id == task_id,
        )
    )
    if c is not None and c.status == TaskStatus.REQUESTED.value:
        move(c, TaskEvent.FAIL, message_id=message.message_id, attempts=message.attempts)
        tell_requester(c)


def register_events() -> None:
    federation.register_undelivered(EV_REQUEST, _request_undelivered)
    federation.register_event(EV_ACCEPTED, _on_accepted)
    federation.register_event(EV_REJECTED, closed_by_partner(TaskEvent.REJECT, INVITING))
