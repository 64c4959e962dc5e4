"""Two-way referral, the sending side: a physician refers their patient to a partner
institution (the direction must fit both levels; the confirmed diagnoses travel with the
request as Conditions), the receiving side's answers arrive and move our record, and a
request the outbox could not deliver fails."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Invalid, NotFound
from clinic.core.principal import Principal
from clinic.notifications.services import notify
from clinic.telemedicine import federation, partners
from clinic.telemedicine.models import FederationMessage, PartnerInstitution, Referral, ReferralDiagnosis
from clinic.telemedicine.referrals import (
    DEPARTMENT_SYSTEM,
    DIRECTION_SYSTEM,
    ICD10,
    ID_SYSTEM,
    RELATION_SYSTEM,
    REQUEST_EVENT,
    SENDING,
    STATUS_EVENT,
    UnknownReferral,
    agreement_refusal,
    as_physician,
    as_utc,
    bad_direction,
    bundle_resources,
    confirmed_diagnoses,
    identifier,
    move,
    name_of,
    one,
    refuse,
    shared_id_of,
    status_zh,
    tell_patient,
    treats,
)
from clinic.telemedicine.rules import (
    N_,
    TaskEvent,
    TaskStatus,
    direction_violations,
)
from clinic.visits.models import Visit
from identity import services as identity
from identity.models import Patient


@dataclass(frozen=True)
class ReferralRequest:
    patient_id: uuid.UUID
    institution_id: uuid.UUID
    direction: str
    department: str
    reason: str
    summary: str
    visit_id: uuid.UUID | None = None


def send_referral(who: Principal, req: ReferralRequest) -> Referral:
    """A physician refers their patient to a partner institution, up or down."""
    session = db.session()
    physician = as_physician(who)
    identity.require_qualified_physician(physician)
    patient = session.get(Patient, req.patient_id)
    if patient is None or not treats(physician, patient.id):
        raise NotFound(N_("No such patient among yours."))
    if req.visit_id is not None:
        visit = session.get(Visit, req.visit_id)
        if visit is None or visit.patient_id != patient.id:
            raise NotFound(N_("No such visit of this patient."))
    partner = partners.get_partner(req.institution_id)
    refusal = agreement_refusal(partner)
    if refusal is not None:
        refuse(refusal, "referral.refused", partner_id=str(partner.id), reason=refusal.code)
    violations = direction_violations(req.direction, partners.own_level(), partner.level)
    if violations:
        refuse(
            bad_direction(violations),
            "referral.refused",
            partner_id=str(partner.id),
            reason="bad_direction",
            direction=req.direction,
            levels=[partners.own_level(), partner.level],
        )
    department = req.department.strip()
    if partner.departments and department not in partner.departments:
        raise Invalid(
            N_("The department %(department)s is not among those agreed with %(name)s."),
            params={"department": department, "name": partner.name},
            fields=[{"loc": "department", "message": "not agreed"}],
        )
    carried = confirmed_diagnoses(patient.id)
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
        visit_id=req.visit_id,
        requested_by=physician.id,
        requester_name=name_of(physician),
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
    message = federation.send(partner.id, REQUEST_EVENT, request_resources(referral, patient))
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
        "identifier": identifier(referral.shared_id),
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
        "identifier": identifier(referral.shared_id),
        "status": TaskStatus.REQUESTED.value,
        "intent": "order",
        "focus": {"reference": f"ServiceRequest/{sr_id}"},
        "for": {"reference": f"Patient/{pid}"},
        "authoredOn": (referral.created_at or utcnow()).astimezone(UTC).isoformat(timespec="seconds"),
        "requester": {"display": referral.requester_name},
    }
    return [task, service_request, patient_res, *conditions]


# --- the sending side: an answer arrives -----------------------------------------------------

_EVENT_OF_STATUS = {
    TaskStatus.ACCEPTED.value: TaskEvent.ACCEPT,
    TaskStatus.REJECTED.value: TaskEvent.REJECT,
    TaskStatus.IN_PROGRESS.value: TaskEvent.START,
    TaskStatus.COMPLETED.value: TaskEvent.COMPLETE,
}


def _on_status(message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    found = bundle_resources(bundle)
    task = one(found, "Task")
    shared = shared_id_of(task)
    referral = db.session.scalar(
        select(Referral).where(
            Referral.partner_id == partner.id, Referral.role == SENDING, Referral.shared_id == shared
        )
    )
    if referral is None:
        raise UnknownReferral()
    event = _EVENT_OF_STATUS.get(str(task.get("status")))
    if event is None:
        raise federation.BadMessage(
            N_("A referral's status cannot be set to %(status)s by the receiving side."),
            params={"status": str(task.get("status"))},
        )
    move(referral, event)
    who = str((task.get("owner") or {}).get("display") or "")[:100]
    now = utcnow()
    if event == TaskEvent.ACCEPT:
        appt = one(found, "Appointment")
        try:
            at = datetime.fromisoformat(str(appt.get("start")))
        except ValueError:
            raise federation.BadMessage(N_("The appointment's time cannot be read.")) from None
        referral.appointment_at = as_utc(at)
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
        tell_patient(referral, sms=True)
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
            status=status_zh(referral.status),
        )


def _request_undelivered(message: FederationMessage) -> None:
    """The outbox gave up on a referral request (the partner never answered through every
    retry): the referral fails, and the referring physician is told to act otherwise."""
    session = db.session()
    referral = session.scalar(
        select(Referral).where(Referral.role == SENDING, Referral.request_message_id == message.id)
    )
    if referral is None or referral.status != TaskStatus.REQUESTED.value:
        return
    move(referral, TaskEvent.FAIL)
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
            status=status_zh(referral.status),
        )


def register_events() -> None:
    federation.register_event(STATUS_EVENT, _on_status)
    federation.register_undelivered(REQUEST_EVENT, _request_undelivered)
