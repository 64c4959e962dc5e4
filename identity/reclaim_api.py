"""Reclaiming an ID number registered by someone else, on /api/v1 (identity/reclaims.py):
the claimant's request and phone code, and the administrators' staff check (list, one,
approve, reject, the ID card photo). Thin: parse, call one service, answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from flask import Response, request
from flask_babel import gettext as _
from pydantic import Field
from werkzeug.datastructures import FileStorage

from clinic.core import limits
from clinic.core.api import ApiRouter, FilePart, Principal, RequestModel, ResponseModel
from clinic.core.config import settings
from clinic.core.db import record_id
from clinic.core.web import private_image
from identity import face, reclaims
from identity.api import CodeIn, StatusOut
from identity.models import IdentityReclaim, ReclaimStatus

router = ApiRouter("identity")


class ReclaimIn(RequestModel):
    name: str = Field(min_length=1, max_length=100, description="Real name as on the ID card")
    id_number: str = Field(min_length=1, max_length=32, description="The resident ID number to reclaim")
    phone: str = Field(min_length=1, max_length=32, description="A new mobile number of the claimant's own")
    password: str = Field(min_length=1, max_length=128, description="Password of the account to come")


class ReclaimStartedOut(ResponseModel):
    reclaim_id: uuid.UUID
    status: Literal["code_sent"] = "code_sent"


class ReclaimAcceptedOut(ResponseModel):
    reclaim_id: uuid.UUID
    status: Literal["submitted"] = "submitted"
    message: str


def _photo(files: dict[str, FileStorage | None]) -> bytes | None:
    storage = files.get("id_card_photo")
    if storage is None or not storage.filename:
        return None
    cap = settings().RECLAIM_PHOTO_MAX_BYTES
    data = storage.stream.read(cap + 1)
    if len(data) > cap:
        raise face.ImageTooLarge(f"The image is larger than {cap // (1024 * 1024)} MB.")
    return data


@router.post(
    "/patients/reclaims",
    summary="Reclaim an ID number registered by someone else: a code goes to the claimant's new phone. "
    "The answer is the same whether the ID number is registered or not",
    body=ReclaimIn,
    files=[FilePart("id_card_photo", required=False, description="Optional photo of the ID card (JPEG, PNG or WebP)")],
    response=ReclaimStartedOut,
    status=202,
    errors={
        413: ["image_too_large"],
        422: ["invalid", "invalid_id_number", "invalid_phone", "weak_password", "not_an_image"],
        429: ["rate_limited"],
        503: ["sms_unavailable"],
    },
)
def reclaim_start(body: ReclaimIn, files: dict[str, FileStorage | None]) -> ReclaimStartedOut:
    reclaim = reclaims.start(
        body.name, body.id_number, body.phone, body.password, _photo(files), request.remote_addr or "-"
    )
    return ReclaimStartedOut(reclaim_id=reclaim.id)


@router.post(
    "/patients/reclaims/<reclaim_id>/verify-phone",
    summary="Confirm the new phone of a reclaim request with the SMS code; the request goes to a staff check",
    body=CodeIn,
    response=ReclaimAcceptedOut,
    errors={404: ["not_found"], 409: ["conflict"], 422: ["bad_code"], 429: ["rate_limited"]},
)
def reclaim_verify_phone(reclaim_id: str, body: CodeIn) -> ReclaimAcceptedOut:
    limits.check("CODE_RATE_LIMIT", "verify-reclaim", reclaim_id)
    reclaim = reclaims.confirm_code(record_id(reclaim_id), body.code)
    return ReclaimAcceptedOut(reclaim_id=reclaim.id, message=_(reclaims.ACCEPTED))


@router.post(
    "/patients/reclaims/<reclaim_id>/resend-code",
    summary="Send a new code to the new phone of a reclaim request",
    response=StatusOut,
    errors={404: ["not_found"], 409: ["conflict"], 429: ["rate_limited"], 503: ["sms_unavailable"]},
)
def reclaim_resend_code(reclaim_id: str) -> StatusOut:
    reclaims.resend_code(record_id(reclaim_id))
    return StatusOut(status="sent")


class ReclaimHolderOut(ResponseModel):
    account_id: uuid.UUID
    display_name: str
    registered_at: datetime
    phone_verified: bool


class ReclaimOut(ResponseModel):
    id: uuid.UUID
    status: str
    name: str
    id_number_masked: str
    phone_masked: str
    has_photo: bool
    created_at: datetime
    code_confirmed_at: datetime | None
    holder: ReclaimHolderOut | None = Field(
        default=None, description="The account holding the ID number as its own now (pending requests)"
    )
    phone_in_use: bool | None = None
    decided_at: datetime | None = None
    reason: str = ""
    old_account_id: uuid.UUID | None = None
    new_account_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None


class ReclaimList(ResponseModel):
    items: list[ReclaimOut]


def reclaim_out(r: IdentityReclaim) -> ReclaimOut:
    out = ReclaimOut(
        id=r.id,
        status=r.status.value,
        name=r.name,
        id_number_masked=r.masked_id_number,
        phone_masked=r.masked_phone,
        has_photo=bool(r.photo_file),
        created_at=r.created_at,
        code_confirmed_at=r.code_confirmed_at,
        decided_at=r.decided_at,
        reason=r.reason,
        old_account_id=r.old_account_id,
        new_account_id=r.new_account_id,
        patient_id=r.patient_id,
    )
    if r.status == ReclaimStatus.SUBMITTED:
        held = reclaims.holder(r)
        if held is not None:
            a = held.account
            out.holder = ReclaimHolderOut(
                account_id=a.id,
                display_name=a.display_name,
                registered_at=held.created_at,
                phone_verified=a.phone_verified_at is not None,
            )
        out.phone_in_use = reclaims.phone_in_use(r)
    return out


@router.get(
    "/admin/reclaims",
    summary="Reclaim requests waiting for the staff check (phone confirmed), oldest first",
    response=ReclaimList,
    roles=["admin"],
)
def admin_reclaims(principal: Principal) -> ReclaimList:
    return ReclaimList(items=[reclaim_out(r) for r in reclaims.submitted()])


@router.get("/admin/reclaims/<reclaim_id>", summary="One reclaim request", response=ReclaimOut, roles=["admin"])
def admin_reclaim(reclaim_id: str, principal: Principal) -> ReclaimOut:
    return reclaim_out(reclaims.get(record_id(reclaim_id)))


@router.post(
    "/admin/reclaims/<reclaim_id>/approve",
    summary="Approve after the staff check: the patient record moves to a new account on the confirmed phone; "
    "every session of the old account ends; the claimant is told",
    response=ReclaimOut,
    roles=["admin"],
    errors={404: ["not_found"], 409: ["conflict", "phone_taken"]},
)
def admin_reclaim_approve(reclaim_id: str, principal: Principal) -> ReclaimOut:
    return reclaim_out(reclaims.approve(principal, record_id(reclaim_id)))


class ReclaimRejectIn(RequestModel):
    reason: str = Field(min_length=1, max_length=500, description="Why; the claimant reads it")


@router.post(
    "/admin/reclaims/<reclaim_id>/reject",
    summary="Reject a reclaim request with a reason; the claimant is told, nothing else changes",
    body=ReclaimRejectIn,
    response=ReclaimOut,
    roles=["admin"],
    errors={404: ["not_found"], 409: ["conflict"], 422: ["invalid"]},
)
def admin_reclaim_reject(reclaim_id: str, body: ReclaimRejectIn, principal: Principal) -> ReclaimOut:
    return reclaim_out(reclaims.reject(principal, record_id(reclaim_id), body.reason))


@router.get(
    "/admin/reclaims/<reclaim_id>/photo",
    summary="The ID card photo sent with a reclaim request (administrators only)",
    roles=["admin"],
    raw_response="image/*",
)
def admin_reclaim_photo(reclaim_id: str, principal: Principal) -> Response:
    return private_image(*reclaims.photo(record_id(reclaim_id)))
