"""Face endpoints of /api/v1 (API.md: POST /auth/face): the physician's face check, which
issues a token carrying its time, and the administrators' enrollment, state, unlock and
reference photo. Thin: parse, call one service (identity.face_services), answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from flask import Response
from werkzeug.datastructures import FileStorage

from clinic.core import limits
from clinic.core.api import ApiRouter, FilePart, Principal, ResponseModel
from clinic.core.config import settings
from clinic.core.db import record_id
from clinic.core.errors import NotFound
from clinic.core.web import private_image
from identity import face, face_services, services, tokens
from identity.models import Role

router = ApiRouter("identity")


class FaceTokenOut(ResponseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    face_verified_at: int


def _upload(files: dict[str, FileStorage | None]) -> bytes:
    """The uploaded image's bytes, read with a cap (a larger one is refused, not read)."""
    storage = files["image"]
    assert storage is not None
    cap = settings().FACE_MAX_UPLOAD_BYTES
    data = storage.stream.read(cap + 1)
    if len(data) > cap:
        raise face.ImageTooLarge(f"The image is larger than {cap // (1024 * 1024)} MB.")
    return data


FACE_IMAGE = FilePart("image", description="A live picture of the physician's face (JPEG, PNG or WebP)")


@router.post(
    "/auth/face",
    summary="Physician face check: compare a live image with the enrolled face; get a token carrying its time",
    files=[FACE_IMAGE],
    response=FaceTokenOut,
    roles=["physician"],
    errors={
        403: ["face_mismatch", "face_locked", "face_not_enrolled"],
        409: ["image_replayed"],
        413: ["image_too_large"],
        422: ["no_face", "several_faces", "not_an_image"],
        429: ["rate_limited"],
    },
)
def auth_face(principal: Principal, files: dict[str, FileStorage | None]) -> FaceTokenOut:
    limits.check("FACE_RATE_LIMIT", "face", str(principal.account_id))
    account = services.get_account(principal.account_id)
    verified_at = face_services.verify_face(account, _upload(files))
    access, ttl = tokens.issue(account, face_verified_at=verified_at)
    return FaceTokenOut(access_token=access, expires_in=ttl, face_verified_at=int(verified_at.timestamp()))


class FaceEnrolledOut(ResponseModel):
    account_id: uuid.UUID
    enrolled_at: datetime
    photo_sha256: str


def _physician(account_id: str) -> services.Account:
    account = services.get_account(record_id(account_id))
    if account.role != Role.PHYSICIAN:
        raise NotFound("No physician with this id.")
    return account


@router.post(
    "/admin/physicians/<account_id>/face",
    summary="Enroll (or replace) a physician's reference face photo: exactly one face",
    files=[FilePart("image", description="The physician's reference photo (JPEG, PNG or WebP)")],
    response=FaceEnrolledOut,
    status=201,
    roles=["admin"],
    errors={413: ["image_too_large"], 422: ["no_face", "several_faces", "not_an_image"]},
)
def admin_enroll_face(account_id: str, principal: Principal, files: dict[str, FileStorage | None]) -> FaceEnrolledOut:
    enrollment = face_services.enroll_face(_physician(account_id), _upload(files))
    return FaceEnrolledOut(
        account_id=enrollment.account_id, enrolled_at=enrollment.enrolled_at, photo_sha256=enrollment.photo_sha256
    )


class FaceStateOut(ResponseModel):
    account_id: uuid.UUID
    enrolled: bool
    locked: bool
    consecutive_mismatches: int
    enrolled_at: datetime | None = None
    last_verified_at: datetime | None = None


def _face_state(account: services.Account) -> FaceStateOut:
    e = face_services.face_enrollment(account.id)
    return FaceStateOut(
        account_id=account.id,
        enrolled=e is not None,
        locked=bool(e and e.locked_at is not None),
        consecutive_mismatches=e.consecutive_mismatches if e else 0,
        enrolled_at=e.enrolled_at if e else None,
        last_verified_at=e.last_verified_at if e else None,
    )


@router.get(
    "/admin/physicians/<account_id>/face",
    summary="A physician's face enrollment and lockout state",
    response=FaceStateOut,
    roles=["admin"],
)
def admin_face_state(account_id: str, principal: Principal) -> FaceStateOut:
    return _face_state(_physician(account_id))


@router.post(
    "/admin/physicians/<account_id>/face/unlock",
    summary="Lift a physician's face lockout",
    response=FaceStateOut,
    roles=["admin"],
)
def admin_face_unlock(account_id: str, principal: Principal) -> FaceStateOut:
    account = _physician(account_id)
    face_services.unlock_face(account)
    return _face_state(account)


@router.get(
    "/admin/physicians/<account_id>/face/photo",
    summary="The enrolled reference photo (administrators only)",
    roles=["admin"],
    raw_response="image/*",
)
def admin_face_photo(account_id: str, principal: Principal) -> Response:
    return private_image(*face_services.face_photo(_physician(account_id)))
