"""Identity endpoints of /api/v1 (API.md § Identity). Thin: parse, call one service, answer."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from flask import Response, request
from flask_babel import gettext as _
from pydantic import Field
from werkzeug.datastructures import FileStorage

from clinic.core import limits
from clinic.core.api import ApiRouter, FilePart, Principal, RequestModel, ResponseModel
from clinic.core.config import settings
from clinic.core.db import record_id
from clinic.core.errors import NotFound
from identity import face, face_services, login, reclaims, rules, services, tokens
from identity.models import IdentityReclaim, ReclaimStatus, Role

router = ApiRouter("identity")


class TokenIn(RequestModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)


class TokenOut(ResponseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    role: str


@router.post(
    "/auth/token",
    summary="Log in with username and password; get a Bearer token",
    body=TokenIn,
    response=TokenOut,
    errors={401: ["bad_credentials"], 429: ["rate_limited"]},
)
def token(body: TokenIn) -> TokenOut:
    account = login.log_in(body.username, body.password, request.remote_addr)
    access, ttl = tokens.issue(account)
    return TokenOut(access_token=access, expires_in=ttl, role=account.role.value)


class RegisterIn(RequestModel):
    name: str = Field(min_length=1, max_length=100)
    id_number: str = Field(min_length=1, max_length=32)
    phone: str = Field(min_length=1, max_length=32)
    password: str = Field(min_length=1, max_length=128)


class RegisterOut(ResponseModel):
    account_id: uuid.UUID
    patient_id: uuid.UUID


@router.post(
    "/patients",
    summary="Register a patient account (real name, resident ID number, phone); a code is sent to the phone",
    body=RegisterIn,
    response=RegisterOut,
    status=201,
    errors={
        422: ["invalid_id_number", "invalid_phone", "weak_password"],
        409: ["already_registered"],
        429: ["rate_limited"],
        503: ["sms_unavailable"],
    },
)
def register(body: RegisterIn) -> RegisterOut:
    reg = services.register_patient(body.name, body.id_number, body.phone, body.password, request.remote_addr or "-")
    return RegisterOut(account_id=reg.account.id, patient_id=reg.patient.id)


class CodeIn(RequestModel):
    code: str = Field(min_length=1, max_length=12)


class StatusOut(ResponseModel):
    status: str


@router.post(
    "/patients/verify-phone",
    summary="Confirm the account's phone with the one-time code",
    body=CodeIn,
    response=StatusOut,
    roles=["patient"],
    errors={422: ["bad_code"], 429: ["rate_limited"]},
)
def verify_phone(body: CodeIn, principal: Principal) -> StatusOut:
    limits.check("CODE_RATE_LIMIT", "verify", str(principal.account_id))
    services.verify_phone(services.get_account(principal.account_id), body.code)
    return StatusOut(status="verified")


@router.post(
    "/patients/resend-code",
    summary="Send a new phone code",
    response=StatusOut,
    roles=["patient"],
    errors={409: ["already_verified"], 429: ["rate_limited"], 503: ["sms_unavailable"]},
)
def resend_code(principal: Principal) -> StatusOut:
    services.send_phone_code(services.get_account(principal.account_id))
    return StatusOut(status="sent")


class PasswordIn(RequestModel):
    current_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=1, max_length=128)


@router.post(
    "/accounts/me/password",
    summary="Change the caller's password; every session and token of the account ends (log in again)",
    body=PasswordIn,
    response=StatusOut,
    roles=["patient", "physician", "pharmacist", "admin", "regulator"],
    errors={401: ["bad_credentials"], 422: ["weak_password"]},
)
def change_password(body: PasswordIn, principal: Principal) -> StatusOut:
    login.change_password(services.get_account(principal.account_id), body.current_password, body.new_password)
    return StatusOut(status="changed")


class FamilyIn(RequestModel):
    name: str = Field(min_length=1, max_length=100)
    id_number: str = Field(min_length=1, max_length=32)
    relation: Literal["child", "parent", "spouse", "other"]


class FamilyOut(ResponseModel):
    patient_id: uuid.UUID


@router.post(
    "/accounts/me/patients",
    summary="Add a family member (就诊人) to the caller's account",
    body=FamilyIn,
    response=FamilyOut,
    status=201,
    roles=["patient"],
    errors={422: ["invalid_id_number"], 409: ["already_on_account"]},
)
def add_family(body: FamilyIn, principal: Principal) -> FamilyOut:
    patient = services.add_family_member(
        services.get_account(principal.account_id), body.name, body.id_number, body.relation
    )
    return FamilyOut(patient_id=patient.id)


class PatientOut(ResponseModel):
    id: uuid.UUID
    name: str
    relation: str
    birth_date: date
    sex: str
    id_number_masked: str
    age_years: int


class StaffOut(ResponseModel):
    name: str
    title: str
    department: str | None
    license_no: str | None
    qualification_no: str | None


class MeOut(ResponseModel):
    id: uuid.UUID
    username: str
    role: str
    display_name: str
    phone_verified: bool | None = None
    patients: list[PatientOut] | None = None
    staff: StaffOut | None = None


def patient_out(p: services.Patient) -> PatientOut:
    return PatientOut(
        id=p.id,
        name=p.name,
        relation=p.relation.value,
        birth_date=p.birth_date,
        sex=p.sex,
        id_number_masked=p.masked_id_number,
        age_years=rules.age_years(p.birth_date, date.today()),
    )


@router.get(
    "/me",
    summary="The caller: role, and for patients the people on the account",
    response=MeOut,
    roles=["patient", "physician", "pharmacist", "admin", "regulator"],
)
def me(principal: Principal) -> MeOut:
    account = services.get_account(principal.account_id)
    out = MeOut(id=account.id, username=account.username, role=account.role.value, display_name=account.display_name)
    if account.role.value == "patient":
        out.phone_verified = account.phone_verified_at is not None
        out.patients = [patient_out(p) for p in account.patients]
    if account.staff is not None:
        s = account.staff
        out.staff = StaffOut(
            name=s.name,
            title=s.title,
            department=s.department_code,
            license_no=s.license_no,
            qualification_no=s.qualification_no,
        )
    return out


# --- face verification (API.md: POST /auth/face) ------------------------------------


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
    data, media_type = face_services.face_photo(_physician(account_id))
    resp = Response(data, mimetype=media_type)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


# --- reclaiming an ID number registered by someone else (identity/reclaims.py) -------


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
    data, media_type = reclaims.photo(record_id(reclaim_id))
    resp = Response(data, mimetype=media_type)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
