"""Clinic endpoints of /api/v1 around the visits (API.md): the condition catalog, proofs of
in-person diagnoses, informed consent and the suspension switch. The visits themselves are
in visit_api.py."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import Field
from werkzeug.datastructures import FileStorage

from clinic.core.api import ApiRouter, FilePart, Principal, RequestModel, ResponseModel
from clinic.core.config import settings
from clinic.core.db import record_id
from clinic.visits import condition_catalog, informed_consent, proofs, rules, service_switch
from clinic.visits.models import Diagnosis

router = ApiRouter("clinic")

PATIENT = ["patient"]
PHYSICIAN = ["physician"]


def read_upload(f: FileStorage | None, limit: int) -> bytes | None:
    if f is None:
        return None
    return f.stream.read(limit + 1)


# --- conditions -----------------------------------------------------------------------


class ConditionOut(ResponseModel):
    code: str
    name_zh: str
    name_en: str
    department: str
    chronic: bool


class ConditionsOut(ResponseModel):
    items: list[ConditionOut]


class ConditionQuery(RequestModel):
    q: str | None = Field(
        default=None,
        max_length=40,
        description="Search by Chinese or English name (高血压) or by a WHO / national edition code (E11.900)",
    )


@router.get(
    "/conditions",
    summary="The common and chronic conditions followed up online (searchable by name)",
    query=ConditionQuery,
    response=ConditionsOut,
    roles=["patient", "physician", "pharmacist", "admin", "regulator"],
)
def conditions(query: ConditionQuery, principal: Principal) -> ConditionsOut:
    found = condition_catalog.search_conditions(query.q, limit=50) if query.q else condition_catalog.list_conditions()
    return ConditionsOut(items=[ConditionOut.model_validate(c) for c in found])


class ConditionIn(RequestModel):
    code: str = Field(min_length=3, max_length=16)
    name_zh: str = Field(min_length=1, max_length=100)
    department: str = Field(min_length=1, max_length=32)
    chronic: bool = True
    active: bool = True


@router.post(
    "/admin/conditions",
    summary="Add or change a condition of the online catalog",
    body=ConditionIn,
    response=ConditionOut,
    roles=["admin"],
    errors={422: ["invalid_icd10"]},
)
def save_condition(body: ConditionIn, principal: Principal) -> ConditionOut:
    cond = condition_catalog.upsert_condition(body.code, body.name_zh, body.department, body.chronic, body.active)
    return ConditionOut.model_validate(cond)


# --- diagnoses ------------------------------------------------------------------------


class DiagnosisForm(RequestModel):
    patient_id: uuid.UUID
    icd10: str = Field(min_length=3, max_length=16)
    institution: str = Field(min_length=2, max_length=200)
    diagnosed_on: date
    document_kind: Literal["outpatient_record", "inpatient_record", "discharge_summary", "diagnosis_certificate"] = (
        "outpatient_record"
    )


class DiagnosisOut(ResponseModel):
    id: uuid.UUID
    status: str
    patient_id: uuid.UUID | None = None
    icd10: str | None = None
    icd10_national: str | None = Field(default=None, description="国家临床版 2.0 code as on the proof, if it had one")
    condition: str | None = None
    condition_name: str | None = Field(default=None, description="The condition's Chinese name")
    national_name: str | None = Field(
        default=None, description="The Chinese name of the national code where the clinic's table names it"
    )
    department: str | None = None
    institution: str | None = None
    diagnosed_on: date | None = None
    document_kind: str | None = None
    rejection_reason: str | None = None
    reviewed_at: datetime | None = None


def _condition_name(d: Diagnosis) -> str | None:
    cond = condition_catalog.catalog_condition(d.icd10)
    return cond.name_zh if cond is not None else None


def diagnosis_out(d: Diagnosis) -> DiagnosisOut:
    return DiagnosisOut(
        id=d.id,
        status=d.status.value,
        patient_id=d.patient_id,
        icd10=d.icd10,
        icd10_national=d.icd10_national,
        condition=d.condition_code,
        condition_name=_condition_name(d),
        national_name=rules.national_name(d.icd10_national),
        department=d.department,
        institution=d.institution,
        diagnosed_on=d.diagnosed_on,
        document_kind=d.document_kind,
        rejection_reason=d.rejection_reason,
        reviewed_at=d.reviewed_at,
    )


@router.post(
    "/diagnoses",
    summary="Upload proof of an in-person diagnosis (image or PDF) for one of the account's patients",
    form=DiagnosisForm,
    files=[FilePart("document", description="Outpatient/inpatient record, discharge summary or certificate")],
    response=DiagnosisOut,
    status=201,
    roles=PATIENT,
    errors={422: ["invalid_upload"]},
)
def submit_diagnosis(form: DiagnosisForm, files: dict[str, FileStorage | None], principal: Principal) -> DiagnosisOut:
    limit = settings().MAX_DOCUMENT_BYTES
    data = read_upload(files["document"], limit) or b""
    diag = proofs.submit_diagnosis(
        principal,
        form.patient_id,
        form.icd10,
        form.institution,
        form.diagnosed_on,
        data,
        form.document_kind,
    )
    return diagnosis_out(diag)


class DiagnosesOut(ResponseModel):
    items: list[DiagnosisOut]


@router.get(
    "/diagnoses",
    summary="Patients: their people's diagnoses. Physicians: pending proofs for their department",
    response=DiagnosesOut,
    roles=["patient", "physician"],
)
def list_diagnoses(principal: Principal) -> DiagnosesOut:
    rows = (
        proofs.diagnoses_of_account(principal.account_id)
        if principal.role == "patient"
        else proofs.pending_diagnoses_for(principal.account_id)
    )
    return DiagnosesOut(items=[diagnosis_out(d) for d in rows])


@router.get("/diagnoses/<diagnosis_id>", summary="One diagnosis", response=DiagnosisOut, roles=["patient", "physician"])
def get_diagnosis(diagnosis_id: str, principal: Principal) -> DiagnosisOut:
    return diagnosis_out(proofs.diagnosis_for(principal, record_id(diagnosis_id)))


class StatusOut(ResponseModel):
    status: str


@router.post(
    "/diagnoses/<diagnosis_id>/confirm",
    summary="Confirm a proof as a chronic or common condition of the catalog (face-verified physician)",
    response=StatusOut,
    roles=PHYSICIAN,
    errors={
        403: ["face_verification_required", "not_qualified"],
        409: ["already_reviewed"],
        422: ["not_eligible_condition"],
    },
)
def confirm_diagnosis(diagnosis_id: str, principal: Principal) -> StatusOut:
    diag = proofs.confirm_diagnosis(principal, record_id(diagnosis_id))
    return StatusOut(status=diag.status.value)


class RejectIn(RequestModel):
    reason: str = Field(min_length=2, max_length=1000)


@router.post(
    "/diagnoses/<diagnosis_id>/reject",
    summary="Reject a proof with a reason the patient sees",
    body=RejectIn,
    response=StatusOut,
    roles=PHYSICIAN,
    errors={403: ["not_qualified"], 409: ["already_reviewed"]},
)
def reject_diagnosis(diagnosis_id: str, body: RejectIn, principal: Principal) -> StatusOut:
    return StatusOut(status=proofs.reject_diagnosis(principal, record_id(diagnosis_id), body.reason).status.value)


# --- consent --------------------------------------------------------------------------


class ConsentOut(ResponseModel):
    version: str
    sha256: str
    text_zh: str
    text_en: str


@router.get("/consent", summary="The current informed-consent text and its version", response=ConsentOut)
def get_consent() -> ConsentOut:
    c = informed_consent.current_consent()
    return ConsentOut(version=c.version, sha256=c.sha256, text_zh=c.text_zh, text_en=c.text_en)


class ConsentIn(RequestModel):
    patient_id: uuid.UUID
    version: str = Field(min_length=1, max_length=32)


class ConsentAcceptedOut(ResponseModel):
    patient_id: uuid.UUID
    version: str
    version_hash: str
    accepted_at: datetime


@router.post(
    "/consent",
    summary="Accept the current consent for one of the account's patients",
    body=ConsentIn,
    response=ConsentAcceptedOut,
    status=201,
    roles=PATIENT,
    errors={409: ["stale_version"]},
)
def accept_consent(body: ConsentIn, principal: Principal) -> ConsentAcceptedOut:
    acc = informed_consent.accept_consent(principal, body.patient_id, body.version)
    return ConsentAcceptedOut.model_validate(acc)


# --- suspension -----------------------------------------------------------------------


class SuspensionIn(RequestModel):
    suspended: bool
    reason: str = Field(min_length=2, max_length=1000)


class SuspensionOut(ResponseModel):
    suspended: bool
    reason: str | None
    changed_at: datetime | None


@router.post(
    "/admin/suspension",
    summary="Stop or resume all new online visits at once",
    body=SuspensionIn,
    response=SuspensionOut,
    roles=["admin"],
)
def set_suspension(body: SuspensionIn, principal: Principal) -> SuspensionOut:
    row = service_switch.set_suspension(principal, body.suspended, body.reason)
    return SuspensionOut(suspended=row.suspended, reason=row.reason, changed_at=row.changed_at)


@router.get(
    "/admin/suspension", summary="Whether online services are suspended", response=SuspensionOut, roles=["admin"]
)
def get_suspension(principal: Principal) -> SuspensionOut:
    row = service_switch.suspension()
    return SuspensionOut(
        suspended=row is not None, reason=row.reason if row else None, changed_at=row.changed_at if row else None
    )
