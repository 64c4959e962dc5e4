"""Clinic endpoints of /api/v1: diagnoses, consent, return visits, suspension (API.md)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from flask import Response, current_app
from pydantic import Field
from werkzeug.datastructures import FileStorage

from clinic.core import twilio as twilio_adapter
from clinic.core.api import ApiRouter, FilePart, Principal, RequestModel, ResponseModel
from clinic.core.config import settings
from clinic.core.db import record_id
from clinic.visits import (
    condition_catalog,
    informed_consent,
    lifecycle,
    proofs,
    queues,
    requesting,
    rules,
    service_switch,
    visit_room,
)
from clinic.visits.models import Diagnosis, Visit
from identity import services as identity

router = ApiRouter("clinic")

PATIENT = ["patient"]
PHYSICIAN = ["physician"]


def _read(f: FileStorage | None, limit: int) -> bytes | None:
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
    data = _read(files["document"], limit) or b""
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
    acc = informed_consent.accept_consent(
        identity.get_account(principal.account_id), str(body.patient_id), body.version
    )
    return ConsentAcceptedOut.model_validate(acc)


# --- visits ---------------------------------------------------------------------------


class VisitIn(RequestModel):
    patient_id: uuid.UUID
    diagnosis_id: uuid.UUID
    department: str = Field(min_length=1, max_length=32)
    complaint: str = Field(default="", max_length=2000)
    physician_id: uuid.UUID | None = None


class PaymentOut(ResponseModel):
    payment_intent_id: str
    client_secret: str
    amount_fen: int
    currency: str = "cny"


class VisitCreatedOut(ResponseModel):
    id: uuid.UUID
    status: str
    fee_fen: int
    payment: PaymentOut | None = None


@router.post(
    "/visits",
    summary="Request a return visit for a confirmed in-person diagnosis",
    body=VisitIn,
    response=VisitCreatedOut,
    status=201,
    roles=PATIENT,
    errors={
        403: ["phone_not_verified"],
        409: ["visit_already_open"],
        422: [
            "first_visit_not_allowed",
            "diagnosis_not_confirmed",
            "consent_required",
            "department_not_approved",
            "physician_unavailable",
        ],
        503: ["service_suspended"],
    },
)
def request_visit(body: VisitIn, principal: Principal) -> VisitCreatedOut:
    new = requesting.request_visit(
        principal,
        body.patient_id,
        body.diagnosis_id,
        body.department,
        body.complaint,
        body.physician_id,
    )
    return VisitCreatedOut(
        id=new.id,
        status=new.status.value,
        fee_fen=new.fee_fen,
        payment=PaymentOut.model_validate(new.payment) if new.payment else None,
    )


class MessageOut(ResponseModel):
    id: uuid.UUID
    sender_id: uuid.UUID
    sender_role: str
    text: str | None
    has_image: bool
    created_at: datetime


class NoteOut(ResponseModel):
    kind: str
    text: str
    author_id: uuid.UUID
    created_at: datetime


class VisitOut(ResponseModel):
    id: uuid.UUID
    status: str
    patient_id: uuid.UUID
    patient_name: str
    diagnosis_id: uuid.UUID
    icd10: str
    condition: str | None
    department: str
    physician_id: uuid.UUID | None
    physician_name: str | None
    requested_physician_id: uuid.UUID | None = None
    queue_position: int | None = None
    complaint: str
    fee_fen: int
    created_at: datetime
    accepted_at: datetime | None
    closed_at: datetime | None
    termination_reason: str | None
    referral_advice: str | None
    messages: list[MessageOut] = []
    notes: list[NoteOut] = []
    prescriptions: list[dict[str, Any]] = []


def visit_out(v: Visit, detail: bool = True) -> VisitOut:
    physician = v.physician
    out = VisitOut(
        id=v.id,
        status=v.status.value,
        patient_id=v.patient_id,
        patient_name=v.patient.name,
        diagnosis_id=v.diagnosis_id,
        icd10=v.diagnosis.icd10,
        condition=v.diagnosis.condition_code,
        department=v.department,
        physician_id=v.physician_id,
        physician_name=(physician.staff.name if physician and physician.staff else None),
        requested_physician_id=v.requested_physician_id,
        complaint=v.complaint,
        fee_fen=v.fee_fen,
        created_at=v.created_at,
        accepted_at=v.accepted_at,
        closed_at=v.closed_at,
        termination_reason=v.termination_reason,
        referral_advice=v.referral_advice,
    )
    if detail:
        out.queue_position = queues.queue_position(v)
        out.messages = [
            MessageOut(
                id=m.id,
                sender_id=m.sender_id,
                sender_role=m.sender_role,
                text=m.text,
                has_image=m.image_path is not None,
                created_at=m.created_at,
            )
            for m in v.messages
        ]
        out.notes = [NoteOut.model_validate(n) for n in v.notes]
        extras = current_app.extensions.get("visit_extras", [])
        for extra in extras:  # e.g. prescriptions, registered by the packages above
            out.prescriptions.extend(extra(v))
    return out


@router.get(
    "/visits/<visit_id>",
    summary="A visit, its messages, notes and prescriptions",
    response=VisitOut,
    roles=["patient", "physician"],
)
def get_visit(visit_id: str, principal: Principal) -> VisitOut:
    return visit_out(lifecycle.visit_for(principal, record_id(visit_id)))


class VisitsOut(ResponseModel):
    items: list[VisitOut]


class VisitsQuery(RequestModel):
    queue: Literal["mine", "waiting"] = "mine"


@router.get(
    "/visits",
    summary="Patients: their visits. Physicians: theirs, or the waiting queue of their department",
    query=VisitsQuery,
    response=VisitsOut,
    roles=["patient", "physician"],
)
def list_visits(query: VisitsQuery, principal: Principal) -> VisitsOut:
    if query.queue == "waiting" and principal.role == "physician":
        rows = queues.waiting_visits_for(principal.account_id)
    else:
        rows = lifecycle.visits_of(principal)
    return VisitsOut(items=[visit_out(v, detail=False) for v in rows])


@router.post(
    "/visits/<visit_id>/accept",
    summary="Accept a waiting visit (qualified, face-verified physician of its department)",
    response=StatusOut,
    roles=PHYSICIAN,
    errors={
        403: ["face_verification_required", "not_qualified"],
        409: ["illegal_transition", "visit_closed"],
        503: ["service_suspended"],
    },
)
def accept_visit(visit_id: str, principal: Principal) -> StatusOut:
    return StatusOut(status=lifecycle.accept_visit(principal, record_id(visit_id)).status.value)


class MessageIn(RequestModel):
    text: str | None = Field(default=None, min_length=1, max_length=4000)


@router.post(
    "/visits/<visit_id>/messages",
    summary="Write in the visit room: JSON {text}, or multipart with an image (and optional text)",
    body=MessageIn,
    files=[FilePart("image", required=False, description="JPEG, PNG or WebP")],
    response=MessageOut,
    status=201,
    roles=["patient", "physician"],
    errors={409: ["visit_closed"], 422: ["invalid_upload"]},
)
def post_message(
    visit_id: str, body: MessageIn, principal: Principal, files: dict[str, FileStorage | None]
) -> MessageOut:
    image = _read(files.get("image"), settings().MAX_IMAGE_BYTES)
    msg = visit_room.post_message(principal, record_id(visit_id), body.text, image)
    return MessageOut(
        id=msg.id,
        sender_id=msg.sender_id,
        sender_role=msg.sender_role,
        text=msg.text,
        has_image=msg.image_path is not None,
        created_at=msg.created_at,
    )


@router.get(
    "/visits/<visit_id>/messages/<message_id>/image",
    summary="An image sent in the visit room (participants only)",
    roles=["patient", "physician"],
    raw_response="image/*",
)
def message_image(visit_id: str, message_id: str, principal: Principal) -> Response:
    data, mime = visit_room.message_image(principal, record_id(visit_id), record_id(message_id))
    return Response(
        data,
        mimetype=mime,
        headers={
            "Cache-Control": "private, no-store",
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


class VideoTokenOut(ResponseModel):
    token: str
    room: str


@router.get(
    "/visits/<visit_id>/video-token",
    summary="A Twilio Video access token for this visit's room (participants only)",
    response=VideoTokenOut,
    roles=["patient", "physician"],
    errors={409: ["visit_not_in_progress"]},
)
def video_token(visit_id: str, principal: Principal) -> VideoTokenOut:
    grant = visit_room.video_grant(principal, record_id(visit_id))
    cfg = settings()
    token = twilio_adapter.video_token(
        cfg.TWILIO_ACCOUNT_SID, cfg.TWILIO_API_KEY_SID, cfg.TWILIO_API_KEY_SECRET, grant.identity, grant.room
    )
    return VideoTokenOut(token=token, room=grant.room)


class TerminateIn(RequestModel):
    reason: str = Field(min_length=2, max_length=2000)
    referral_advice: str = Field(min_length=2, max_length=2000)


@router.post(
    "/visits/<visit_id>/terminate",
    summary="Stop the visit: the condition changed; refer the patient to an in-person clinic",
    body=TerminateIn,
    response=StatusOut,
    roles=PHYSICIAN,
    errors={409: ["illegal_transition", "visit_closed"]},
)
def terminate_visit(visit_id: str, body: TerminateIn, principal: Principal) -> StatusOut:
    v = lifecycle.terminate_visit(principal, record_id(visit_id), body.reason, body.referral_advice)
    return StatusOut(status=v.status.value)


class CompleteIn(RequestModel):
    note: str = Field(min_length=2, max_length=20000)


@router.post(
    "/visits/<visit_id>/complete",
    summary="Complete the visit with its medical record note",
    body=CompleteIn,
    response=StatusOut,
    roles=PHYSICIAN,
    errors={409: ["illegal_transition", "visit_closed"]},
)
def complete_visit(visit_id: str, body: CompleteIn, principal: Principal) -> StatusOut:
    return StatusOut(status=lifecycle.complete_visit(principal, record_id(visit_id), body.note).status.value)


class CancelIn(RequestModel):
    reason: str = Field(min_length=1, max_length=1000)


@router.post(
    "/visits/<visit_id>/cancel",
    summary="Cancel before acceptance (the patient) or at any time before it starts (the institution); the fee is refunded",
    body=CancelIn,
    response=StatusOut,
    roles=["patient", "admin"],
    errors={409: ["illegal_transition", "visit_closed"]},
)
def cancel_visit(visit_id: str, body: CancelIn, principal: Principal) -> StatusOut:
    return StatusOut(status=lifecycle.cancel_visit(principal, record_id(visit_id), body.reason).status.value)


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
    row = service_switch.set_suspension(principal.account_id, body.suspended, body.reason)
    return SuspensionOut(suspended=row.suspended, reason=row.reason, changed_at=row.changed_at)


@router.get(
    "/admin/suspension", summary="Whether online services are suspended", response=SuspensionOut, roles=["admin"]
)
def get_suspension(principal: Principal) -> SuspensionOut:
    row = service_switch.suspension()
    return SuspensionOut(
        suspended=row is not None, reason=row.reason if row else None, changed_at=row.changed_at if row else None
    )
