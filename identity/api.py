"""Identity endpoints of /api/v1 (API.md § Identity): log in, register, the phone code, the
password, family members and /me. The face check is `identity.face_api`, reclaiming an ID
number `identity.reclaim_api`. Thin: parse, call one service, answer."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from flask import request
from pydantic import Field

from clinic.core import limits
from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from identity import login, rules, services, tokens

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
