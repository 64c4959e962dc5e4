"""Remote consultations and two-way referrals between institutions (issue 19 item 6) for the
regulators' FHIR interface, as this institution keeps them, built with `fhir.resources`
R4B models (the same in R4 for these three types) and de-identified unless the scope
allows identity.

- ServiceRequest, one per consultation and per referral, in the role this institution
  played (inviting or invited; sending or receiving): who asked (requester) whom
  (performer), for which patient, why (ICD-10 reasonCode), when, how urgent, the
  attachments sent with it (supportingInfo, by their shared id), the appointment and
  place of an accepted referral. Its window time is when it was requested.
- Task, one per ServiceRequest (same id): the FHIR Task status the two institutions
  exchanged (requested … completed, rejected, cancelled, failed), the owner, the
  execution period, the opinion as output, acknowledgement / outcome as businessStatus.
  Its window time is also the request's.
- DiagnosticReport, one per consultation opinion (会诊意见, LOINC 11488-4 Consult note):
  who signed it with which key (kid), when; under the identified scope the opinion and
  recommendations (conclusion) and the signed compact JWS itself (presentedForm), which
  the regulator can verify. Its window time is the signing time.

Both institutions carry the same Task identifier (system SYS_TASK), so a provincial
platform reading both can join them. A patient known only to the partner (the invited
side keeps the minimum identity a request carried) is referenced by a keyed pseudonym
of the partner and the task, with the name only under the identified scope. Free text
(question, clinical summary, reasons, opinion) is written only under the identified
scope: it may name the patient.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from sqlalchemy import Select, select

from clinic.regulator import fhir as base
from clinic.telemedicine.models import (
    Consultation,
    ConsultationAttachment,
    ConsultationOpinion,
    PartnerInstitution,
    Referral,
)
from clinic.telemedicine.rules import TaskStatus

SYS_TASK = "urn:clinic:identifier:telemedicine-task"  # shared by both institutions
SYS_ATTACHMENT = "urn:clinic:identifier:telemedicine-attachment"  # the DocumentReference id, shared
SYS_PARTNER_PATIENT = "urn:clinic:identifier:partner-patient"  # pseudonym of a partner's patient
SYS_SERVICE = "urn:clinic:telemedicine-service"
SYS_OPINION = "urn:clinic:identifier:consultation-opinion"
EXT_ROLE = "urn:clinic:fhir:telemedicine-role"  # inviting | invited | sending | receiving
EXT_DEPARTMENT = "urn:clinic:fhir:telemedicine-department"
EXT_DIRECTION = "urn:clinic:fhir:referral-direction"  # up | down
EXT_SIGNER_KID = "urn:clinic:fhir:opinion-signer-kid"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
LOINC = "http://loinc.org"

# ServiceRequest.status from the Task state the institutions exchanged
REQUEST_STATUS = {
    TaskStatus.REQUESTED: "active",
    TaskStatus.ACCEPTED: "active",
    TaskStatus.IN_PROGRESS: "active",
    TaskStatus.COMPLETED: "completed",
    TaskStatus.REJECTED: "revoked",
    TaskStatus.CANCELLED: "revoked",
    TaskStatus.FAILED: "revoked",
}
CONSULTATION = {"code": "consultation", "display": "远程会诊 Remote consultation"}
REFERRAL = {"code": "referral", "display": "双向转诊 Two-way referral"}


def consultation_id(c: Consultation) -> str:
    return f"consultation-{c.id}"


def referral_id(r: Referral) -> str:
    return f"referral-{r.id}"


def _status(value: str) -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        return TaskStatus.FAILED


def _partner_ref(p: PartnerInstitution) -> dict[str, Any]:
    """The partner institution: by its practice licence number, with its name."""
    return {"identifier": {"system": base.SYS_LICENSE, "value": p.license_no}, "display": p.name}


def _person(name: str, title: str, partner: PartnerInstitution) -> dict[str, Any]:
    """A physician of the partner institution (not a Practitioner of ours): named only."""
    who = f"{name}（{title}）" if title else name
    return {"display": f"{who}，{partner.name}" if who else partner.name}


def _subject(
    ctx: base.FhirContext, patient_id: uuid.UUID | None, partner: PartnerInstitution, shared: str, name: str
) -> dict[str, Any]:
    if patient_id is not None:
        return ctx.patient_ref(patient_id)
    ref: dict[str, Any] = {
        "identifier": {
            "system": SYS_PARTNER_PATIENT,
            "value": base.pseudonym("partner-patient", f"{partner.id}:{shared}"),
        }
    }
    if ctx.identified and name:
        ref["display"] = name
    return ref


def _extension(role: str, department: str, direction: str | None = None) -> list[dict[str, Any]]:
    out = [
        {"url": EXT_ROLE, "valueCode": role},
        {"url": EXT_DEPARTMENT, "valueString": department},
    ]
    if direction:
        out.append({"url": EXT_DIRECTION, "valueCode": direction})
    return out


def _icd10(code: str, name: str) -> dict[str, Any]:
    return {"coding": [{"system": base.ICD10, "code": code, "display": name or None}], "text": name or None}


def _notes(ctx: base.FhirContext, *texts: tuple[str, str | None]) -> list[dict[str, Any]] | None:
    if not ctx.identified:
        return None
    return [{"text": f"{label}：{value}"} for label, value in texts if value]


# --- consultations ----------------------------------------------------------------------------


def _consultation_patient_name(c: Consultation) -> str:
    try:
        return str(json.loads(c.patient_json or "{}").get("name", ""))
    except ValueError:
        return ""


def _consultation_parties(c: Consultation, ctx: base.FhirContext) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(requester, performers): an inviting record asked the partner; an invited one was asked."""
    if c.role == "inviting":
        requester = ctx.practitioner_ref(c.requested_by) if c.requested_by else ctx.organization_ref()
        performers = [_partner_ref(c.partner)]
        if c.specialist_name:
            performers.append(_person(c.specialist_name, c.specialist_title, c.partner))
        return requester, performers
    requester = _person(c.requester_name, "", c.partner) if c.requester_name else _partner_ref(c.partner)
    performers = [ctx.organization_ref()]
    if c.accepted_by:
        performers.append(ctx.practitioner_ref(c.accepted_by))
    return requester, performers


def _consultations(ctx: base.FhirContext) -> Select[Any]:
    w = ctx.window
    return (
        select(Consultation)
        .where(Consultation.requested_at >= w.since, Consultation.requested_at < w.until)
        .order_by(Consultation.requested_at, Consultation.id)
    )


def consultation_request(c: Consultation, ctx: base.FhirContext) -> ServiceRequest:
    requester, performers = _consultation_parties(c, ctx)
    attachments = ctx.session.scalars(
        select(ConsultationAttachment)
        .where(ConsultationAttachment.consultation_id == c.id)
        .order_by(ConsultationAttachment.created_at, ConsultationAttachment.id)
    ).all()
    data: dict[str, Any] = {
        "id": consultation_id(c),
        "identifier": [{"system": SYS_TASK, "value": c.task_id}],
        "status": REQUEST_STATUS[_status(c.status)],
        "intent": "order",
        "category": [{"coding": [{"system": SYS_SERVICE, **CONSULTATION}]}],
        "code": {"coding": [{"system": SYS_SERVICE, **CONSULTATION}], "text": CONSULTATION["display"]},
        "priority": "urgent" if c.urgency == "urgent" else "routine",
        "subject": _subject(ctx, c.patient_id, c.partner, c.task_id, _consultation_patient_name(c)),
        "encounter": {"reference": f"Encounter/{c.visit_id}"} if c.visit_id else None,
        "authoredOn": base.instant(c.requested_at),
        "requester": requester,
        "performer": performers,
        "reasonCode": [_icd10(str(d.get("icd10", "")), str(d.get("name", ""))) for d in c.conditions or []] or None,
        "supportingInfo": [
            {
                "identifier": {"system": SYS_ATTACHMENT, "value": a.shared_id},
                "display": f"{a.media_type}, {a.size} bytes, sha256 {a.sha256}",
            }
            for a in attachments
        ]
        or None,
        "note": _notes(ctx, ("会诊问题 Question", c.question), ("病情摘要 Clinical summary", c.summary)),
        "extension": _extension(c.role, c.department),
    }
    return ServiceRequest.model_validate(base._clean(data))


def consultation_task(c: Consultation, ctx: base.FhirContext) -> Task:
    requester, performers = _consultation_parties(c, ctx)
    opinion = ctx.session.scalar(select(ConsultationOpinion).where(ConsultationOpinion.consultation_id == c.id))
    moments = [t for t in (c.requested_at, c.accepted_at, c.completed_at, c.acknowledged_at) if t is not None]
    business = None
    if c.acknowledged_at is not None:
        business = {"text": "会诊意见已确认 Opinion acknowledged"}
    elif opinion is not None:
        business = {"text": "会诊意见已出具 Opinion issued"}
    data: dict[str, Any] = {
        "id": consultation_id(c),
        "identifier": [{"system": SYS_TASK, "value": c.task_id}],
        "basedOn": [{"reference": f"ServiceRequest/{consultation_id(c)}"}],
        "status": _status(c.status).value,
        "businessStatus": business,
        "intent": "order",
        "priority": "urgent" if c.urgency == "urgent" else "routine",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill", "display": "Fulfill the focal request"}]},
        "focus": {"reference": f"ServiceRequest/{consultation_id(c)}"},
        "for": _subject(ctx, c.patient_id, c.partner, c.task_id, _consultation_patient_name(c)),
        "authoredOn": base.instant(c.requested_at),
        "lastModified": base.instant(max(moments)) if moments else None,
        "requester": requester,
        "owner": performers[-1],
        "executionPeriod": {"start": base.instant(c.accepted_at), "end": base.instant(c.completed_at)}
        if c.accepted_at
        else None,
        "output": [
            {
                "type": {"text": "会诊意见 Consultation opinion"},
                "valueReference": {"reference": f"DiagnosticReport/{opinion_id(opinion)}"},
            }
        ]
        if opinion is not None
        else None,
        "extension": _extension(c.role, c.department),
    }
    return Task.model_validate(base._clean(data))


# --- the opinion ------------------------------------------------------------------------------


def opinion_id(o: ConsultationOpinion) -> str:
    return f"opinion-{o.id}"


def _opinions(ctx: base.FhirContext) -> Select[Any]:
    w = ctx.window
    return (
        select(ConsultationOpinion)
        .where(ConsultationOpinion.signed_at >= w.since, ConsultationOpinion.signed_at < w.until)
        .order_by(ConsultationOpinion.signed_at, ConsultationOpinion.id)
    )


def opinion_report(o: ConsultationOpinion, ctx: base.FhirContext) -> DiagnosticReport:
    c = ctx.session.get(Consultation, o.consultation_id)
    assert c is not None  # a foreign key
    if c.role == "invited" and c.accepted_by:
        performers = [ctx.practitioner_ref(c.accepted_by), ctx.organization_ref()]
    else:
        performers = [_person(o.signer_name, o.signer_title, c.partner), _partner_ref(c.partner)]
    data: dict[str, Any] = {
        "id": opinion_id(o),
        "identifier": [{"system": SYS_OPINION, "value": c.task_id}],
        "basedOn": [{"reference": f"ServiceRequest/{consultation_id(c)}"}],
        "status": "final",
        "category": [{"coding": [{"system": SYS_SERVICE, **CONSULTATION}]}],
        "code": {
            "coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}],
            "text": "远程会诊意见 Remote consultation opinion",
        },
        "subject": _subject(ctx, c.patient_id, c.partner, c.task_id, _consultation_patient_name(c)),
        "effectiveDateTime": base.instant(o.signed_at),
        "issued": base.instant(o.signed_at),
        "performer": performers,
        "extension": [{"url": EXT_SIGNER_KID, "valueString": o.signer_kid}],
    }
    if ctx.identified:
        data["conclusion"] = (
            f"{o.opinion}\n建议 Recommendations：{o.recommendations}" if o.recommendations else o.opinion
        )
        data["presentedForm"] = [
            {
                "contentType": "application/jose",
                "data": base64.b64encode(o.jws.encode()).decode(),
                "title": "签名的会诊意见 Signed opinion (compact JWS, ES256)",
                "creation": base.instant(o.signed_at),
            }
        ]
    return DiagnosticReport.model_validate(base._clean(data))


# --- referrals --------------------------------------------------------------------------------


def _referrals(ctx: base.FhirContext) -> Select[Any]:
    w = ctx.window
    return (
        select(Referral)
        .where(Referral.created_at >= w.since, Referral.created_at < w.until)
        .order_by(Referral.created_at, Referral.id)
    )


def _referral_parties(r: Referral, ctx: base.FhirContext) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if r.role == "sending":
        requester = ctx.practitioner_ref(r.requested_by) if r.requested_by else ctx.organization_ref()
        performers = [_partner_ref(r.partner)]
        if r.responder_name:
            performers.append(_person(r.responder_name, "", r.partner))
        return requester, performers
    requester = _person(r.requester_name, "", r.partner) if r.requester_name else _partner_ref(r.partner)
    performers = [ctx.organization_ref()]
    if r.responded_by:
        performers.append(ctx.practitioner_ref(r.responded_by))
    return requester, performers


def referral_request(r: Referral, ctx: base.FhirContext) -> ServiceRequest:
    requester, performers = _referral_parties(r, ctx)
    data: dict[str, Any] = {
        "id": referral_id(r),
        "identifier": [{"system": SYS_TASK, "value": r.shared_id}],
        "status": REQUEST_STATUS[_status(r.status)],
        "intent": "order",
        "category": [{"coding": [{"system": SYS_SERVICE, **REFERRAL}]}],
        "code": {
            "coding": [{"system": SYS_SERVICE, **REFERRAL}],
            "text": "上转 Referral up" if r.direction == "up" else "下转 Referral down",
        },
        "subject": _subject(ctx, r.patient_id, r.partner, r.shared_id, r.patient_name),
        "encounter": {"reference": f"Encounter/{r.visit_id}"} if r.visit_id else None,
        "authoredOn": base.instant(r.created_at),
        "occurrenceDateTime": base.instant(r.appointment_at),
        "requester": requester,
        "performer": performers,
        "reasonCode": [_icd10(d.icd10, d.name) for d in r.diagnoses] or None,
        "locationCode": [{"text": r.place}] if r.place and ctx.identified else None,
        "note": _notes(ctx, ("转诊原因 Reason", r.reason), ("病情摘要 Clinical summary", r.summary)),
        "extension": _extension(r.role, r.department, r.direction),
    }
    return ServiceRequest.model_validate(base._clean(data))


def referral_task(r: Referral, ctx: base.FhirContext) -> Task:
    requester, performers = _referral_parties(r, ctx)
    moments = [t for t in (r.created_at, r.responded_at, r.closed_at) if t is not None]
    business = None
    if r.outcome_summary:
        business = {"text": "接诊结果已回报 Outcome reported"}
    elif r.appointment_at is not None:
        business = {"text": "已预约 Appointment given"}
    data: dict[str, Any] = {
        "id": referral_id(r),
        "identifier": [{"system": SYS_TASK, "value": r.shared_id}],
        "basedOn": [{"reference": f"ServiceRequest/{referral_id(r)}"}],
        "status": _status(r.status).value,
        "businessStatus": business,
        "statusReason": {"text": r.decline_reason} if r.decline_reason and ctx.identified else None,
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill", "display": "Fulfill the focal request"}]},
        "focus": {"reference": f"ServiceRequest/{referral_id(r)}"},
        "for": _subject(ctx, r.patient_id, r.partner, r.shared_id, r.patient_name),
        "authoredOn": base.instant(r.created_at),
        "lastModified": base.instant(max(moments)) if moments else None,
        "requester": requester,
        "owner": performers[-1],
        "executionPeriod": {"start": base.instant(r.responded_at), "end": base.instant(r.closed_at)}
        if r.responded_at
        else None,
        "output": [{"type": {"text": "转诊结果 Referral outcome"}, "valueString": r.outcome_summary}]
        if r.outcome_summary and ctx.identified
        else None,
        "extension": _extension(r.role, r.department, r.direction),
    }
    return Task.model_validate(base._clean(data))


# --- sources ----------------------------------------------------------------------------------


def register() -> None:
    """Called by the app factory: ServiceRequest and Task (consultations, then referrals),
    DiagnosticReport (the opinions)."""
    base.register_resource(
        "ServiceRequest",
        base.Chained(
            [base.QuerySource(_consultations, consultation_request), base.QuerySource(_referrals, referral_request)]
        ),
    )
    base.register_resource(
        "Task",
        base.Chained(
            [base.QuerySource(_consultations, consultation_task), base.QuerySource(_referrals, referral_task)]
        ),
    )
    base.register_resource("DiagnosticReport", base.QuerySource(_opinions, opinion_report))
