"""A remote consultation's request and answer: the inviting physician requests it (every
check before any write), withdraws it or acknowledges the opinion; a physician of the
invited department, qualified and of the agreement's title (Jilin measures Art. 14),
accepts or declines it. Also the messages that carry these moves from the partner, and a
request the outbox could not deliver. The opinion itself is in `consultation_opinions`.

Use cases load, apply the rules, change state, audit and enqueue; none commits."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, RuleRefusal, Violation
from clinic.core.principal import Principal
from clinic.telemedicine import envelope, federation, partners, rules
from clinic.telemedicine.consultation_consent import ConsentRequired, current_consent_of
from clinic.telemedicine.consultations import (
    DEPARTMENT_SYSTEM,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_REQUEST,
    INVITED,
    INVITING,
    TASK_SYSTEM,
    URGENCIES,
    as_physician,
    bundle_resources,
    consultation_for,
    department_of,
    iso,
    move,
    name_of,
    our_consultation,
    parse_time,
    refuse,
    require_agreement,
    task_id_of,
    task_resource,
    tell_department,
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
    meets_title,
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


def _reason(reason: str) -> str:
    """Declining or withdrawing says why: the other institution's physician reads it."""
    reason = " ".join(reason.split())
    if not reason:
        raise Invalid(N_("Say why (the other institution's physician reads it)."), field="reason")
    return reason


def cancel(who: Principal, consultation_id: uuid.UUID, reason: str) -> Consultation:
    physician = as_physician(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITING or c.requested_by != physician.id:
        raise Forbidden(N_("Only the requesting physician may withdraw the request."))
    reason = _reason(reason)
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


# --- answering (the invited side) -----------------------------------------------------------------


def accept(who: Principal, consultation_id: uuid.UUID) -> Consultation:
    """A physician of the invited department takes the consultation: face-fresh, qualified
    there, and of at least the title the agreement requires (Jilin Art. 14)."""
    physician = as_physician(who)
    face_services.require_fresh_face(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITED:
        raise Forbidden(N_("The invited institution's physicians accept consultations."))
    try:
        identity.require_qualified_physician(physician, department=c.department)
    except DomainError as err:
        raise refuse(err, c, physician=str(physician.id)) from None
    required = c.partner.consult_min_title
    if not meets_title(title_of(physician), required):
        raise refuse(
            RuleRefusal(
                "not_qualified",
                [
                    Violation(
                        "title_below_requirement",
                        N_("The agreement requires a %(required)s or above to answer its consultations."),
                        detail={"required": required, "title": title_of(physician)},
                    )
                ],
                lead=N_("The physician may not answer this consultation:"),
            ).with_status(403),
            c,
            physician=str(physician.id),
            title=title_of(physician),
            required=required,
        ) from None
    move(c, TaskEvent.ACCEPT, physician=str(physician.id))
    c.accepted_by, c.accepted_at = physician.id, utcnow()
    c.specialist_name, c.specialist_title = name_of(physician), title_of(physician)
    task = task_resource(c)
    task["owner"] = {"display": f"{c.specialist_name}（{c.specialist_title}）"}
    task["lastModified"] = iso(c.accepted_at)
    federation.send(c.partner_id, EV_ACCEPTED, [task])
    return c


def decline(who: Principal, consultation_id: uuid.UUID, reason: str) -> Consultation:
    physician = as_physician(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITED or department_of(physician) != c.department:
        raise Forbidden(N_("A physician of the invited department declines consultations."))
    reason = _reason(reason)
    move(c, TaskEvent.REJECT, reason=reason)
    federation.send(c.partner_id, EV_REJECTED, [{**task_resource(c), "statusReason": {"text": reason}}])
    return c


# --- received messages: the partner's moves ---------------------------------------------------


def _on_request(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    requests_ = bundle_resources(bundle, "ServiceRequest")
    sr = requests_[0] if requests_ else None
    tasks = bundle_resources(bundle, "Task")
    patients = bundle_resources(bundle, "Patient")
    if sr is None or not tasks or not patients:
        raise federation.BadMessage(N_("A consultation request carries a Task, a ServiceRequest and a Patient."))
    task_id = task_id_of(bundle)
    codings = (sr.get("performerType") or {}).get("coding") or []
    department = next((str(c.get("code")) for c in codings if c.get("system") == DEPARTMENT_SYSTEM), "")
    if not department:
        raise federation.BadMessage(N_("The consultation request names no department."))
    require_agreement(partner, department)
    task, pat = tasks[0], patients[0]
    priority = str(sr.get("priority") or "routine")
    notes = sr.get("note") or [{}]
    present = next((n.get("text", "") for n in task.get("note") or []), "")
    c = Consultation(
        task_id=task_id,
        role=INVITED,
        partner_id=partner.id,
        status=TaskStatus.REQUESTED.value,
        department=department[:64],
        urgency=priority if priority in URGENCIES else "routine",
        question=str(task.get("description") or next((r.get("text") for r in sr.get("reasonCode") or []), "")),
        summary=str(notes[0].get("text") or ""),
        patient_json=json.dumps(
            {
                "name": next((n.get("text") for n in pat.get("name") or []), ""),
                "sex": pat.get("gender", ""),
                "birth_date": pat.get("birthDate", ""),
            },
            ensure_ascii=False,
        ),
        conditions=[
            {
                "icd10": next((cd.get("code") for cd in (cond.get("code") or {}).get("coding") or []), ""),
                "name": (cond.get("code") or {}).get("text", ""),
            }
            for cond in bundle_resources(bundle, "Condition")
        ],
        requester_name=str((sr.get("requester") or {}).get("display") or "")[:100],
        present_physicians=[{"name": present.removeprefix("在场医师：")}] if present else [],
        fee_fen=partner.fee_fen,
        split_inviting=partner.split_inviting,
        split_invited=partner.split_invited,
        requested_at=parse_time(sr.get("authoredOn")) or utcnow(),
    )
    db.session.add(c)
    db.session.flush()
    audit.record(
        db.session(),
        "consultation.received",
        subject_type="consultation",
        subject_id=c.id,
        detail={"task_id": task_id, "partner_id": str(partner.id), "department": department},
    )
    tell_department(c)


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


def _on_closed(event: TaskEvent, role: str) -> federation.EventHandler:
    def handler(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
        c = our_consultation(partner, role, task_id_of(bundle))
        reason = str((bundle_resources(bundle, "Task")[0].get("statusReason") or {}).get("text") or "")
        if TaskStatus(c.status) not in rules.TERMINAL:
            move(c, event, reason=reason, by="partner")
            tell_requester(c)

    return handler


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
    federation.register_event(EV_REQUEST, _on_request)
    federation.register_event(EV_ACCEPTED, _on_accepted)
    federation.register_event(EV_REJECTED, _on_closed(TaskEvent.REJECT, INVITING))
    federation.register_event(EV_CANCELLED, _on_closed(TaskEvent.CANCEL, INVITED))
