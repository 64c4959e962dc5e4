"""The clinic's own resource types of the regulators' FHIR interface (fhir.py holds the
context, the sources, the registry and the Bundle): the institution and its approved
departments (Organization), physicians and pharmacists (Practitioner), patients
(de-identified unless the scope allows identity), confirmed diagnoses (Condition), return
visits (Encounter) and the audit trail (AuditEvent). Registered by the app factory
(`register_clinic_resources`), never on import.
"""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.resource import Resource
from sqlalchemy import Select, or_, select

from clinic.core.audit import AuditEntry
from clinic.regulator import rules
from clinic.regulator.fhir import (
    ICD10,
    SYS_ACCOUNT,
    SYS_AUDIT_ACTION,
    SYS_DEPARTMENT,
    SYS_INTERNET_APPROVAL,
    SYS_LICENSE,
    SYS_PHARMACIST_QUALIFICATION,
    SYS_PHYSICIAN_LICENSE,
    SYS_PRACTICE_REGISTRATION,
    SYS_PSEUDONYM,
    SYS_RESIDENT_ID,
    FhirContext,
    QuerySource,
    _clean,
    day,
    instant,
    pseudonym,
    register_resource,
)
from clinic.visits.models import Diagnosis, DiagnosisStatus, Visit, VisitStatus
from identity.models import Account, Department, Institution, Patient, Role

EXT_TERMINATION_REASON = "urn:clinic:fhir:encounter-termination-reason"
EXT_REFERRAL_ADVICE = "urn:clinic:fhir:encounter-referral-advice"
EXT_CANCEL_REASON = "urn:clinic:fhir:encounter-cancel-reason"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"


# --- Organization: the institution and its approvals ------------------------------------


class OrganizationSource:
    """The institution (its practice licence and internet-diagnosis approval, with its
    validity) and each approved department as a part of it. Reference data: the whole
    current register, whatever the window."""

    def _rows(self, ctx: FhirContext) -> list[Institution | Department]:
        inst = ctx.session.get(Institution, 1)
        if inst is None:
            return []
        departments = ctx.session.scalars(select(Department).where(Department.approved).order_by(Department.code))
        return [inst, *departments]

    def count(self, ctx: FhirContext) -> int:
        return len(self._rows(ctx))

    def page(self, ctx: FhirContext, offset: int, limit: int) -> list[Resource]:
        return [_organization(row, ctx) for row in self._rows(ctx)[offset : offset + limit]]


def _organization(row: Institution | Department, ctx: FhirContext) -> Organization:
    if isinstance(row, Institution):
        approval_period = {"end": day(row.approval_valid_until)} if row.approval_valid_until else None
        data: dict[str, Any] = {
            "id": "institution",
            "active": True,
            "identifier": [
                {"use": "official", "system": SYS_LICENSE, "value": row.practice_license_no},
                {
                    "use": "official",
                    "system": SYS_INTERNET_APPROVAL,
                    "value": row.internet_approval_no,
                    "period": approval_period,
                },
            ],
            "type": [{"coding": [{"system": ORG_TYPE, "code": "prov", "display": "Healthcare Provider"}]}],
            "name": row.name,
            "alias": [row.name_en] if row.name_en else None,
            "address": [{"text": row.address}] if row.address else None,
        }
    else:
        data = {
            "id": f"dept-{row.code}",
            "active": row.approved,
            "identifier": [{"system": SYS_DEPARTMENT, "value": row.code}],
            "type": [{"coding": [{"system": ORG_TYPE, "code": "dept", "display": "Hospital Department"}]}],
            "name": row.name_zh,
            "alias": [row.name_en] if row.name_en else None,
            "partOf": ctx.organization_ref(),
        }
    return Organization.model_validate(_clean(data))


# --- Practitioner: physicians and pharmacists with their qualifications ----------------


def _practitioners(ctx: FhirContext) -> Select[Any]:
    return (
        select(Account)
        .where(Account.role.in_([Role.PHYSICIAN, Role.PHARMACIST]))
        .order_by(Account.created_at, Account.id)
    )


def _practitioner(account: Account, ctx: FhirContext) -> Practitioner:
    s = account.staff
    identifiers: list[dict[str, Any]] = [{"system": SYS_ACCOUNT, "value": str(account.id)}]
    qualifications: list[dict[str, Any]] = []
    if s is not None and s.license_no:
        identifiers.append({"system": SYS_PHYSICIAN_LICENSE, "value": s.license_no})
        qualifications.append(
            {
                "identifier": [{"system": SYS_PHYSICIAN_LICENSE, "value": s.license_no}],
                "code": {"text": "医师执业证书 Physician practice licence"},
                "period": {"end": day(s.license_valid_until)} if s.license_valid_until else None,
                "issuer": None,
            }
        )
    if s is not None and s.practice_registration_no:
        identifiers.append({"system": SYS_PRACTICE_REGISTRATION, "value": s.practice_registration_no})
    if s is not None and s.qualification_no:
        identifiers.append({"system": SYS_PHARMACIST_QUALIFICATION, "value": s.qualification_no})
        qualifications.append(
            {
                "identifier": [{"system": SYS_PHARMACIST_QUALIFICATION, "value": s.qualification_no}],
                "code": {"text": "药师资格 Pharmacist qualification"},
                "period": {"end": day(s.qualification_valid_until)} if s.qualification_valid_until else None,
            }
        )
    extra_text = []
    if s is not None and s.department_code:
        extra_text.append(f"department {s.department_code}")
    if s is not None and s.title:
        extra_text.append(s.title)
    data = {
        "id": str(account.id),
        "active": account.active,
        "identifier": identifiers,
        "name": [{"text": s.name if s else account.display_name}],
        "qualification": qualifications or None,
        "extension": None,
    }
    if extra_text:
        data["text"] = {"status": "generated", "div": _div(f"{account.role.value}: " + "; ".join(extra_text))}
    return Practitioner.model_validate(_clean(data))


# --- Patient: de-identified unless the scope allows identity ---------------------------


def _patients(ctx: FhirContext) -> Select[Any]:
    w = ctx.window
    seen = select(Visit.patient_id).where(Visit.created_at >= w.since, Visit.created_at < w.until)
    return (
        select(Patient)
        .where(or_(Patient.id.in_(seen), (Patient.created_at >= w.since) & (Patient.created_at < w.until)))
        .order_by(Patient.created_at, Patient.id)
    )


def _patient(p: Patient, ctx: FhirContext) -> FhirPatient:
    """Identified scope: name, resident ID number, full birth date. Otherwise: a keyed
    pseudonym (also the resource id), birth year and sex only."""
    if ctx.identified:
        data: dict[str, Any] = {
            "id": str(p.id),
            "identifier": [
                {"use": "official", "system": SYS_RESIDENT_ID, "value": p.id_number},
                {"system": SYS_ACCOUNT, "value": str(p.account_id)},
            ],
            "name": [{"use": "official", "text": p.name}],
            "birthDate": day(p.birth_date),
            "gender": rules.fhir_gender(p.sex),
        }
    else:
        alias = pseudonym("patient", str(p.id))
        data = {
            "id": alias,
            "identifier": [{"use": "secondary", "system": SYS_PSEUDONYM, "value": alias}],
            "birthDate": rules.birth_year(p.birth_date),
            "gender": rules.fhir_gender(p.sex),
            "meta": {
                "security": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                        "code": "PSEUDED",
                        "display": "pseudonymized",
                    }
                ]
            },
        }
    return FhirPatient.model_validate(_clean(data))


# --- Condition: confirmed diagnoses ------------------------------------------------------


def _conditions(ctx: FhirContext) -> Select[Any]:
    w = ctx.window
    return (
        select(Diagnosis)
        .where(
            Diagnosis.status == DiagnosisStatus.CONFIRMED,
            Diagnosis.reviewed_at >= w.since,
            Diagnosis.reviewed_at < w.until,
        )
        .order_by(Diagnosis.reviewed_at, Diagnosis.id)
    )


def _condition(d: Diagnosis, ctx: FhirContext) -> Condition:
    code = d.condition_code or d.icd10
    display = d.condition.name_zh if d.condition is not None else None
    data = {
        "id": str(d.id),
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "verificationStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": ICD10, "code": code, "display": display}], "text": display},
        "subject": ctx.patient_ref(d.patient_id),
        "recordedDate": instant(d.reviewed_at),
        "asserter": ctx.practitioner_ref(d.reviewed_by) if d.reviewed_by else None,
        "note": [
            {"text": f"In-person diagnosis at {d.institution} on {day(d.diagnosed_on)}; department {d.department}"}
        ],
    }
    return Condition.model_validate(_clean(data))


# --- Encounter: return visits, with termination and referral --------------------------

ENCOUNTER_STATUS = {
    VisitStatus.AWAITING_PAYMENT: "planned",
    VisitStatus.WAITING: "arrived",
    VisitStatus.IN_PROGRESS: "in-progress",
    VisitStatus.COMPLETED: "finished",
    VisitStatus.REFERRED: "finished",
    VisitStatus.CANCELLED: "cancelled",
}


def _encounters(ctx: FhirContext) -> Select[Any]:
    w = ctx.window
    return (
        select(Visit)
        .where(Visit.created_at >= w.since, Visit.created_at < w.until)
        .order_by(Visit.created_at, Visit.id)
    )


def _encounter(v: Visit, ctx: FhirContext) -> Encounter:
    extensions: list[dict[str, Any]] = []
    if v.termination_reason:
        extensions.append({"url": EXT_TERMINATION_REASON, "valueString": v.termination_reason})
    if v.referral_advice:
        extensions.append({"url": EXT_REFERRAL_ADVICE, "valueString": v.referral_advice})
    if v.cancel_reason:
        extensions.append({"url": EXT_CANCEL_REASON, "valueString": v.cancel_reason})
    data: dict[str, Any] = {
        "id": str(v.id),
        "status": ENCOUNTER_STATUS[v.status],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
        "type": [{"text": "互联网复诊 online return visit"}],
        "serviceType": {"coding": [{"system": SYS_DEPARTMENT, "code": v.department}]},
        "subject": ctx.patient_ref(v.patient_id),
        "participant": [{"individual": ctx.practitioner_ref(v.physician_id)}] if v.physician_id else None,
        "period": {"start": instant(v.accepted_at or v.created_at), "end": instant(v.closed_at)},
        "diagnosis": [{"condition": {"reference": f"Condition/{v.diagnosis_id}"}, "rank": 1}],
        "serviceProvider": ctx.organization_ref(),
        "extension": extensions or None,
    }
    if v.status == VisitStatus.REFERRED:
        # Terminated online and sent to an in-person clinic (2018 measures Art. 17).
        data["hospitalization"] = {
            "dischargeDisposition": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                        "code": "oth",
                        "display": "Other",
                    }
                ],
                "text": "Referred to an in-person clinic: " + (v.referral_advice or ""),
            }
        }
    return Encounter.model_validate(_clean(data))


# --- AuditEvent: the audit trail ----------------------------------------------------------

_READ_ACTIONS = (".read", ".viewed", ".verified", ".exported")


def _audit_entries(ctx: FhirContext) -> Select[Any]:
    w = ctx.window
    return select(AuditEntry).where(AuditEntry.at >= w.since, AuditEntry.at < w.until).order_by(AuditEntry.seq)


def _agent_who(actor_id: str | None, role: str, ctx: FhirContext) -> dict[str, Any]:
    if actor_id is None:
        return {"display": role}
    if role in (Role.PHYSICIAN.value, Role.PHARMACIST.value):
        return {"reference": f"Practitioner/{actor_id}", "display": role}
    if role == Role.PATIENT.value and not ctx.identified:
        return {"identifier": {"system": SYS_PSEUDONYM, "value": pseudonym("account", actor_id)}, "display": role}
    return {"identifier": {"system": SYS_ACCOUNT, "value": actor_id}, "display": role}


def _entity_what(e: AuditEntry, ctx: FhirContext) -> dict[str, Any]:
    kind, sid = e.subject_type or "", e.subject_id or ""
    if kind == "patient":
        return ctx.patient_ref(sid)
    if kind == "account" and not ctx.identified and sid not in ctx.staff_ids():
        return {"identifier": {"system": SYS_PSEUDONYM, "value": pseudonym("account", sid)}}
    if kind == "visit":
        return {"reference": f"Encounter/{sid}"}
    if kind == "diagnosis":
        return {"reference": f"Condition/{sid}"}
    if kind in ("consultation", "referral") and sid:  # between institutions: telemedicine_fhir.py's ids
        return {"reference": f"ServiceRequest/{kind}-{sid}"}
    return {"identifier": {"system": f"urn:clinic:{kind or 'subject'}", "value": sid or "-"}}


def _audit_event(e: AuditEntry, ctx: FhirContext) -> AuditEvent:
    patient_actor = e.actor_role == Role.PATIENT.value
    agent: dict[str, Any] = {
        "type": {"text": e.actor_role},
        "who": _agent_who(e.actor_id, e.actor_role, ctx),
        "requestor": True,
    }
    if e.client_ip and (ctx.identified or not patient_actor):
        agent["network"] = {"address": e.client_ip, "type": "2"}
    chain = [
        {"type": "seq", "valueString": str(e.seq)},
        {"type": "hash", "valueString": e.hash},  # RFC 6962 leaf hash, hex
        {"type": "sig", "valueString": e.sig or ""},  # the log's signature on (seq, leaf)
    ]
    if ctx.identified and e.detail:
        chain.append({"type": "detail", "valueString": json.dumps(e.detail, ensure_ascii=False, sort_keys=True)})
    entities: list[dict[str, Any]] = [{"name": "audit-chain", "detail": chain}]
    if e.subject_type or e.subject_id:
        entities.insert(0, {"what": _entity_what(e, ctx), "name": e.subject_type})
    data = {
        "id": f"audit-{e.seq}",
        "type": {"system": SYS_AUDIT_ACTION, "code": e.action, "display": e.action},
        "action": "R" if e.action.endswith(_READ_ACTIONS) else "E",
        "recorded": instant(e.at),
        "outcome": "4" if e.action in ("request.refused", "auth.login_failed") else "0",
        "agent": [agent],
        "source": {
            "observer": ctx.organization_ref(),
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": entities,
    }
    return AuditEvent.model_validate(_clean(data))


def _div(text: str) -> str:
    from html import escape

    return f'<div xmlns="http://www.w3.org/1999/xhtml">{escape(text)}</div>'


def register_clinic_resources() -> None:
    """Called by the app factory: the clinic's own resource types. A type nobody registered
    reads as an empty Bundle (`source_for`)."""
    register_resource("Organization", OrganizationSource())
    register_resource("Practitioner", QuerySource(_practitioners, _practitioner))
    register_resource("Patient", QuerySource(_patients, _patient))
    register_resource("Condition", QuerySource(_conditions, _condition))
    register_resource("Encounter", QuerySource(_encounters, _encounter))
    register_resource("AuditEvent", QuerySource(_audit_entries, _audit_event))
