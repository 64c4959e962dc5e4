"""Return visits over /api/v1 (API.md): requesting one, reading and listing them, accepting,
completing, ending with a referral and cancelling, and the room: messages, their images
and the video token. Same tag ("clinic") as api.py: one group in the OpenAPI document."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from flask import Response, current_app
from pydantic import Field
from werkzeug.datastructures import FileStorage

from clinic.core import twilio as twilio_adapter
from clinic.core.api import ApiRouter, FilePart, Principal, RequestModel, ResponseModel
from clinic.core.config import settings
from clinic.core.db import record_id
from clinic.visits import lifecycle, queues, requesting, visit_room
from clinic.visits.api import PATIENT, PHYSICIAN, StatusOut, read_upload
from clinic.visits.models import Visit

router = ApiRouter("clinic")


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
    image = read_upload(files.get("image"), settings().MAX_IMAGE_BYTES)
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
