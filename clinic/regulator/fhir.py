"""FHIR resources for the regulators, built and validated with `fhir.resources`.

Which FHIR models: API.md asks for FHIR R4. `fhir.resources` 8.x (the maintained,
pydantic-2 FHIR model library) ships R5 as its default and R4B (4.3.0) and STU3 as
sub-packages; it no longer ships 4.0.1 models (6.x did, on pydantic 1, which this
project cannot use). R4B is R4 with changes confined to the medication-definition,
evidence and subscription resources: Bundle, Organization, Practitioner, Patient,
Condition, Encounter, MedicationRequest and AuditEvent are the same in both. So every
resource here is built through the R4B models (which validate types, cardinalities and
primitive formats and refuse unknown elements), and the test suite re-reads every
Bundle with FHIR 4.0.1 models as well (fhirclient's generated R4 models), proving the
JSON is valid R4 element by element.

The resource types are a registry, filled by the app factory only (never on import): the
clinic's own types (`register_clinic_resources`), the MedicationRequest builder of
prescriptions (prescriptions/fhir.py), the family-doctor and telemedicine types; so
nothing here imports a package above the clinic's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.resource import Resource
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from clinic.core.audit import AuditEntry
from clinic.core.crypto import lookup_hash
from clinic.regulator import rules
from clinic.visits.models import Diagnosis, DiagnosisStatus, Visit, VisitStatus
from identity.models import Account, Department, Institution, Patient, Role

FHIR_VERSION = "4.0.1"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
# Identifier systems of this institution (URNs: no public namespace is claimed).
SYS_RESIDENT_ID = "urn:clinic:identifier:cn-resident-identity-number"
SYS_PSEUDONYM = "urn:clinic:identifier:pseudonym"
SYS_ACCOUNT = "urn:clinic:identifier:account"
SYS_LICENSE = "urn:clinic:identifier:practice-license"
SYS_INTERNET_APPROVAL = "urn:clinic:identifier:internet-diagnosis-approval"
SYS_PHYSICIAN_LICENSE = "urn:clinic:identifier:physician-license"
SYS_PRACTICE_REGISTRATION = "urn:clinic:identifier:practice-registration"
SYS_PHARMACIST_QUALIFICATION = "urn:clinic:identifier:pharmacist-qualification"
SYS_DEPARTMENT = "urn:clinic:identifier:department"
SYS_AUDIT_ACTION = "urn:clinic:audit-action"
EXT_TERMINATION_REASON = "urn:clinic:fhir:encounter-termination-reason"
EXT_REFERRAL_ADVICE = "urn:clinic:fhir:encounter-referral-advice"
EXT_CANCEL_REASON = "urn:clinic:fhir:encounter-cancel-reason"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"


@dataclass
class FhirContext:
    """What a builder needs: the window, the caller's scopes, the service base URL."""

    session: Session
    window: rules.Window
    scopes: tuple[str, ...]
    base_url: str
    _staff: set[str] | None = field(default=None, repr=False)

    @property
    def identified(self) -> bool:
        return rules.identified(self.scopes)

    # --- references ---------------------------------------------------------------
    def patient_id(self, patient_id: object) -> str:
        """The Patient resource id: the record id when identity may be read, else a keyed pseudonym."""
        return str(patient_id) if self.identified else pseudonym("patient", str(patient_id))

    def patient_ref(self, patient_id: object) -> dict[str, str]:
        return {"reference": f"Patient/{self.patient_id(patient_id)}"}

    def practitioner_ref(self, account_id: object) -> dict[str, str]:
        return {"reference": f"Practitioner/{account_id}"}

    def organization_ref(self) -> dict[str, str]:
        return {"reference": "Organization/institution"}

    def staff_ids(self) -> set[str]:
        if self._staff is None:
            rows = self.session.scalars(select(Account.id).where(Account.role != Role.PATIENT))
            self._staff = {str(r) for r in rows}
        return self._staff

    def full_url(self, resource: Resource) -> str:
        return f"{self.base_url}/{resource.get_resource_type()}/{resource.id}"


def pseudonym(kind: str, value: str) -> str:
    """Stable, keyed (LOOKUP_KEY) and not reversible without the key: 32 hex characters."""
    return lookup_hash(f"regulator:{kind}:{value}")[:32]


def instant(t: datetime | None) -> str | None:
    return None if t is None else rules.rfc3339(t)


def day(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


class ResourceSource(Protocol):
    """One FHIR resource type: how many resources the window holds, and one page of them."""

    def count(self, ctx: FhirContext) -> int: ...

    def page(self, ctx: FhirContext, offset: int, limit: int) -> list[Resource]: ...


@dataclass(frozen=True)
class QuerySource:
    """A resource type read from one SELECT (rows in the window, in a stable order), one
    resource per row."""

    query: Callable[[FhirContext], Select[Any]]
    build: Callable[[Any, FhirContext], Resource]

    def count(self, ctx: FhirContext) -> int:
        q = self.query(ctx).order_by(None)
        return int(ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0)

    def page(self, ctx: FhirContext, offset: int, limit: int) -> list[Resource]:
        rows = ctx.session.scalars(self.query(ctx).offset(offset).limit(limit)).unique().all()
        return [self.build(row, ctx) for row in rows]


class EmptySource:
    def count(self, ctx: FhirContext) -> int:
        return 0

    def page(self, ctx: FhirContext, offset: int, limit: int) -> list[Resource]:
        return []


RESOURCE_TYPES = (
    "Organization",
    "Practitioner",
    "Patient",
    "Condition",
    "Encounter",
    "MedicationRequest",
    "AuditEvent",
    "CarePlan",  # family-doctor contracts and follow-ups (clinic/family_doctor/fhir.py)
    "Observation",  # home readings
    # between institutions (clinic/regulator/telemedicine_fhir.py): consultations and referrals,
    # their Task states, and the signed consultation opinions
    "ServiceRequest",
    "Task",
    "DiagnosticReport",
)
_registry: dict[str, ResourceSource] = {}


def register_resource(name: str, source: ResourceSource) -> None:
    if name not in RESOURCE_TYPES:
        raise ValueError(f"{name} is not a resource type of the regulators' interface")
    _registry[name] = source


def source_for(name: str) -> ResourceSource | None:
    if name not in RESOURCE_TYPES:
        return None
    return _registry.get(name, EmptySource())


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


# --- the Bundle ------------------------------------------------------------------------------


def bundle(
    ctx: FhirContext, resource_type: str, resources: Sequence[Resource], info: rules.PageInfo, self_url: str
) -> Bundle:
    """A `searchset` Bundle of one page, with `total` and self/first/last/next/previous links."""

    def link(relation: str, page: int) -> dict[str, str]:
        return {"relation": relation, "url": _page_url(self_url, page)}

    links = [link("self", info.page), link("first", 1), link("last", info.pages)]
    if info.has_next:
        links.append(link("next", info.page + 1))
    if info.has_prev:
        links.append(link("previous", info.page - 1))
    data = {
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "timestamp": instant(datetime.now(UTC)),
        "total": info.total,
        "link": links,
        "entry": [{"fullUrl": ctx.full_url(r), "resource": r, "search": {"mode": "match"}} for r in resources],
    }
    return Bundle.model_validate(_clean(data))


def _page_url(self_url: str, page: int) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(self_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "page"]
    query.append(("page", str(page)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def to_json(model: Bundle) -> str:
    return model.model_dump_json(exclude_none=True, by_alias=True)


def _clean(value: Any) -> Any:
    """Drop None and empty lists/dicts: FHIR has no empty elements."""
    if isinstance(value, dict):
        out = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        items = [_clean(v) for v in value]
        return [v for v in items if v is not None and v != {} and v != []]
    return value


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
