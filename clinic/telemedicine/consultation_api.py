"""Remote-consultation endpoints (API.md "Remote consultation"): the consent a patient
accepts, the request and its attachments, the invited side's answer, notes and opinion,
and the acknowledgement. Registered with the tag "telemedicine"."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from flask import Response
from pydantic import Field
from werkzeug.datastructures import FileStorage

from clinic.core.api import ApiRouter, FilePart, Principal, RequestModel, ResponseModel
from clinic.core.config import settings
from clinic.core.db import record_id
from clinic.telemedicine import (
    consultation_answers,
    consultation_attachments,
    consultation_consent,
    consultation_opinions,
    consultation_requests,
    consultations,
)
from clinic.telemedicine.models import Consultation

router = ApiRouter("telemedicine")


PHYSICIAN = ["physician"]


class ConsultConsentOut(ResponseModel):
    version: str
    sha256: str
    text_zh: str
    text_en: str


class ConsultConsentIn(RequestModel):
    patient_id: uuid.UUID
    version: str = Field(min_length=1, max_length=32)


class ConsultConsentAccepted(ResponseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    version: str
    accepted_at: datetime


@router.get(
    "/consultations/consent",
    summary="The current remote-consultation consent text (what is shared with whom, the fee, "
    "that the inviting institution stays responsible) and its version",
    response=ConsultConsentOut,
    auth="none",
)
def consultation_consent_text() -> ConsultConsentOut:
    text = consultation_consent.current_consent()
    return ConsultConsentOut(version=text.version, sha256=text.sha256, text_zh=text.text_zh, text_en=text.text_en)


@router.post(
    "/consultations/consent",
    summary="A patient (or the guardian holding the account) accepts the current remote-consultation consent",
    body=ConsultConsentIn,
    response=ConsultConsentAccepted,
    status=201,
    roles=["patient"],
    errors={404: ["not_found"], 409: ["stale_version"]},
)
def accept_consultation_consent(body: ConsultConsentIn, principal: Principal) -> ConsultConsentAccepted:
    acc = consultation_consent.accept_consent(principal, body.patient_id, body.version)
    return ConsultConsentAccepted(
        id=acc.id, patient_id=acc.patient_id, version=acc.version, accepted_at=acc.accepted_at
    )


class ConsultationIn(RequestModel):
    patient_id: uuid.UUID
    institution_id: uuid.UUID
    department: str = Field(min_length=1, max_length=64)
    question: str = Field(min_length=1, max_length=2000)
    summary: str = Field(min_length=1, max_length=8000)
    urgency: Literal["routine", "urgent"] = "routine"
    present_physician_ids: list[uuid.UUID] = Field(min_length=1, max_length=10)
    visit_id: uuid.UUID | None = None


class ConsultationCreated(ResponseModel):
    id: uuid.UUID
    task_id: str
    status: str


class AttachmentOut(ResponseModel):
    id: uuid.UUID
    filename: str
    media_type: str
    size: int
    sha256: str
    created_at: datetime


class ConsultNoteOut(ResponseModel):
    id: uuid.UUID
    side: str
    author: str
    text: str
    at: datetime


class OpinionOut(ResponseModel):
    opinion: str
    recommendations: str
    jws: str
    signer_kid: str
    signer_jwk: dict[str, Any]
    signer: str
    signer_title: str
    signed_at: datetime


class ConsultationOut(ResponseModel):
    id: uuid.UUID
    task_id: str
    role: str
    status: str
    partner: dict[str, Any]
    department: str
    urgency: str
    question: str
    summary: str
    patient_id: uuid.UUID | None
    patient: dict[str, Any]
    conditions: list[dict[str, Any]]
    requester: str
    present_physicians: list[dict[str, Any]]
    specialist: str | None
    specialist_title: str | None
    fee_fen: int
    fee_split: dict[str, int]
    requested_at: datetime
    accepted_at: datetime | None
    completed_at: datetime | None
    acknowledged_at: datetime | None
    attachments: list[AttachmentOut] | None = None
    messages: list[ConsultNoteOut] | None = None
    opinion: OpinionOut | None = None


class ConsultationsOut(ResponseModel):
    items: list[ConsultationOut]


def consultation_out(c: Consultation, detail: bool = True) -> ConsultationOut:
    out = ConsultationOut(
        id=c.id,
        task_id=c.task_id,
        role=c.role,
        status=c.status,
        partner={"id": str(c.partner.id), "name": c.partner.name, "level": c.partner.level},
        department=c.department,
        urgency=c.urgency,
        question=c.question,
        summary=c.summary,
        patient_id=c.patient_id,
        patient={k: v for k, v in asdict(consultations.patient_of(c)).items() if v is not None},
        conditions=list(c.conditions or []),
        requester=c.requester_name,
        present_physicians=list(c.present_physicians or []),
        specialist=c.specialist_name or None,
        specialist_title=c.specialist_title or None,
        fee_fen=c.fee_fen,
        fee_split={"inviting": c.split_inviting, "invited": c.split_invited},
        requested_at=c.requested_at,
        accepted_at=c.accepted_at,
        completed_at=c.completed_at,
        acknowledged_at=c.acknowledged_at,
    )
    if detail:
        out.attachments = [
            AttachmentOut(
                id=a.id,
                filename=a.filename,
                media_type=a.media_type,
                size=a.size,
                sha256=a.sha256,
                created_at=a.created_at,
            )
            for a in consultation_attachments.attachments_of(c)
        ]
        out.messages = [
            ConsultNoteOut(id=n.id, side=n.side, author=n.author_name, text=n.text, at=n.created_at)
            for n in consultations.notes_of(c)
        ]
        op = consultation_opinions.opinion_of(c)
        if op is not None:
            out.opinion = OpinionOut(
                opinion=op.opinion,
                recommendations=op.recommendations,
                jws=op.jws,
                signer_kid=op.signer_kid,
                signer_jwk=dict(op.signer_jwk),
                signer=op.signer_name,
                signer_title=op.signer_title,
                signed_at=op.signed_at,
            )
    return out


@router.post(
    "/consultations",
    summary="Request a remote consultation from a partner institution's department for your patient "
    "(face-verified physician; the patient's remote-consultation consent first); sent as a signed FHIR message",
    body=ConsultationIn,
    response=ConsultationCreated,
    status=201,
    roles=PHYSICIAN,
    errors={
        403: ["face_verification_required", "not_qualified", "no_agreement"],
        404: ["not_found"],
        422: ["consent_required", "invalid"],
    },
)
def request_consultation(body: ConsultationIn, principal: Principal) -> ConsultationCreated:
    c = consultation_requests.request_consultation(
        principal,
        consultation_requests.ConsultationRequest(
            patient_id=body.patient_id,
            institution_id=body.institution_id,
            department=body.department,
            question=body.question,
            summary=body.summary,
            urgency=body.urgency,
            present_physician_ids=tuple(body.present_physician_ids),
            visit_id=body.visit_id,
        ),
    )
    return ConsultationCreated(id=c.id, task_id=c.task_id, status=c.status)


@router.post(
    "/consultations/<consultation_id>/attachments",
    summary="Attach a record, image or ECG/lab report (multipart `file`: PDF, JPEG or PNG, size-checked); "
    "it follows the request to the partner",
    files=[FilePart("file", description="PDF, JPEG or PNG")],
    response=AttachmentOut,
    status=201,
    roles=PHYSICIAN,
    errors={
        403: ["forbidden"],
        404: ["not_found"],
        409: ["consultation_closed"],
        413: ["too_large"],
        422: ["invalid_upload"],
    },
)
def add_attachment(consultation_id: str, files: dict[str, FileStorage | None], principal: Principal) -> AttachmentOut:
    upload = files["file"]
    limit = settings().CONSULT_MAX_ATTACHMENT_BYTES
    data = upload.stream.read(limit + 1) if upload is not None else b""
    a = consultation_attachments.add_attachment(
        principal, record_id(consultation_id), upload.filename or "" if upload else "", data
    )
    return AttachmentOut(
        id=a.id, filename=a.filename, media_type=a.media_type, size=a.size, sha256=a.sha256, created_at=a.created_at
    )


@router.get(
    "/consultations/<consultation_id>/attachments/<attachment_id>",
    summary="An attachment of a consultation (its physicians, administrators)",
    roles=["physician", "admin"],
    raw_response="application/octet-stream",
)
def attachment_file(consultation_id: str, attachment_id: str, principal: Principal) -> Response:
    att, data = consultation_attachments.attachment_bytes(
        principal, record_id(consultation_id), record_id(attachment_id)
    )
    return Response(
        data,
        mimetype=att.media_type,
        headers={
            "Cache-Control": "private, no-store",
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


class ConsultationsQuery(RequestModel):
    role: Literal["inviting", "invited"] | None = None
    status: Literal["requested", "accepted", "in-progress", "completed", "rejected", "cancelled", "failed"] | None = (
        None
    )


@router.get(
    "/consultations",
    summary="Consultations this institution asked for (role=inviting) or was asked (role=invited): "
    "a physician sees their own and their department's queue, an administrator all",
    query=ConsultationsQuery,
    response=ConsultationsOut,
    roles=["physician", "admin"],
)
def list_consultations(query: ConsultationsQuery, principal: Principal) -> ConsultationsOut:
    rows = consultations.consultations_of(principal, query.role, query.status)
    return ConsultationsOut(items=[consultation_out(c, detail=False) for c in rows])


@router.get(
    "/consultations/<consultation_id>",
    summary="A consultation with its attachments, messages and the signed opinion (`opinion.jws`)",
    response=ConsultationOut,
    roles=["physician", "admin"],
    errors={404: ["not_found"]},
)
def get_consultation(consultation_id: str, principal: Principal) -> ConsultationOut:
    return consultation_out(consultations.consultation_for(principal, record_id(consultation_id)))


class ConsultStatusOut(ResponseModel):
    status: str


@router.post(
    "/consultations/<consultation_id>/accept",
    summary="Take a consultation asked of this institution (face-verified, qualified in its department, "
    "title at or above the agreement's requirement)",
    response=ConsultStatusOut,
    roles=PHYSICIAN,
    errors={403: ["face_verification_required", "not_qualified"], 404: ["not_found"], 409: ["illegal_transition"]},
)
def accept_consultation(consultation_id: str, principal: Principal) -> ConsultStatusOut:
    return ConsultStatusOut(status=consultation_answers.accept(principal, record_id(consultation_id)).status)


class ConsultReasonIn(RequestModel):
    reason: str = Field(min_length=1, max_length=1000)


@router.post(
    "/consultations/<consultation_id>/decline",
    summary="Decline a consultation asked of this department (FHIR Task rejected)",
    body=ConsultReasonIn,
    response=ConsultStatusOut,
    roles=PHYSICIAN,
    errors={403: ["forbidden"], 404: ["not_found"], 409: ["illegal_transition"]},
)
def decline_consultation(consultation_id: str, body: ConsultReasonIn, principal: Principal) -> ConsultStatusOut:
    return ConsultStatusOut(
        status=consultation_answers.decline(principal, record_id(consultation_id), body.reason).status
    )


@router.post(
    "/consultations/<consultation_id>/cancel",
    summary="Withdraw a consultation request (the requesting physician; FHIR Task cancelled)",
    body=ConsultReasonIn,
    response=ConsultStatusOut,
    roles=PHYSICIAN,
    errors={403: ["forbidden"], 404: ["not_found"], 409: ["illegal_transition"]},
)
def cancel_consultation(consultation_id: str, body: ConsultReasonIn, principal: Principal) -> ConsultStatusOut:
    return ConsultStatusOut(
        status=consultation_requests.cancel(principal, record_id(consultation_id), body.reason).status
    )


class NoteIn(RequestModel):
    text: str = Field(min_length=1, max_length=4000)


@router.post(
    "/consultations/<consultation_id>/messages",
    summary="Ask back (the accepting specialist) or answer (the inviting physician); sent to the other side",
    body=NoteIn,
    response=ConsultNoteOut,
    status=201,
    roles=PHYSICIAN,
    errors={403: ["forbidden"], 404: ["not_found"], 409: ["consultation_closed", "illegal_transition"]},
)
def write_note(consultation_id: str, body: NoteIn, principal: Principal) -> ConsultNoteOut:
    n = consultations.write_note(principal, record_id(consultation_id), body.text)
    return ConsultNoteOut(id=n.id, side=n.side, author=n.author_name, text=n.text, at=n.created_at)


class OpinionIn(RequestModel):
    opinion: str = Field(min_length=1, max_length=8000)
    recommendations: str = Field(default="", max_length=8000)


@router.post(
    "/consultations/<consultation_id>/opinion",
    summary="The consultation opinion (会诊意见) of the accepting specialist, signed with their own key and "
    "sent back to the inviting institution as a signed DiagnosticReport",
    body=OpinionIn,
    response=ConsultStatusOut,
    roles=PHYSICIAN,
    errors={403: ["face_verification_required", "forbidden"], 404: ["not_found"], 409: ["illegal_transition"]},
)
def write_opinion(consultation_id: str, body: OpinionIn, principal: Principal) -> ConsultStatusOut:
    c = consultation_opinions.write_opinion(principal, record_id(consultation_id), body.opinion, body.recommendations)
    return ConsultStatusOut(status=c.status)


class AcknowledgedOut(ResponseModel):
    status: str
    acknowledged_at: datetime


@router.post(
    "/consultations/<consultation_id>/acknowledge",
    summary="The inviting physician acknowledges the opinion (it is in the patient's record)",
    response=AcknowledgedOut,
    roles=PHYSICIAN,
    errors={403: ["forbidden"], 404: ["not_found"], 409: ["no_opinion"]},
)
def acknowledge_consultation(consultation_id: str, principal: Principal) -> AcknowledgedOut:
    c = consultation_requests.acknowledge(principal, record_id(consultation_id))
    assert c.acknowledged_at is not None
    return AcknowledgedOut(status=c.status, acknowledged_at=c.acknowledged_at)
