"""Two-way referral endpoints (API.md "Two-way referral"): a physician refers a patient to a
partner institution, the receiving side accepts, declines or reports the outcome, and a
physician confirms a diagnosis the referral carried. Registered with the tag "telemedicine"
as the other telemedicine routers."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from flask import request
from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.telemedicine import (
    referral_diagnoses,
    referral_receiving,
    referral_sending,
    referrals,
)
from clinic.telemedicine.models import Referral

router = ApiRouter("telemedicine")


REFERRAL_READERS = ["physician", "admin", "patient"]


class ReferralIn(RequestModel):
    patient_id: uuid.UUID
    institution_id: uuid.UUID = Field(description="The partner institution (its id in the agreements)")
    direction: Literal["up", "down"] = Field(description="up: to a higher level (基层 → 上级); down: to a lower one")
    department: str = Field(min_length=1, max_length=64, description="The receiving department asked for")
    reason: str = Field(min_length=2, max_length=2000)
    summary: str = Field(min_length=2, max_length=20000, description="The clinical summary sent with the patient")
    visit_id: uuid.UUID | None = Field(default=None, description="The visit the referral is made from, if any")


class ReferralCreated(ResponseModel):
    id: uuid.UUID
    status: str


class ReferralDiagnosisOut(ResponseModel):
    id: uuid.UUID
    icd10: str
    name: str
    institution: str
    diagnosed_on: date
    confirmed: bool
    diagnosis_id: uuid.UUID | None
    confirmed_at: datetime | None


class ReferralOut(ResponseModel):
    id: uuid.UUID
    shared_id: str
    role: Literal["sending", "receiving"]
    institution_id: uuid.UUID
    institution_name: str
    direction: str
    status: str
    department: str
    reason: str
    summary: str
    patient_id: uuid.UUID | None
    patient_name: str
    identity_match: str
    requester_name: str
    appointment_at: datetime | None
    place: str | None
    decline_reason: str | None
    outcome: dict[str, Any] | None
    responder_name: str
    created_at: datetime
    responded_at: datetime | None
    closed_at: datetime | None
    diagnoses: list[ReferralDiagnosisOut]


class ReferralsOut(ResponseModel):
    items: list[ReferralOut]


def referral_out(r: Referral) -> ReferralOut:
    return ReferralOut(
        id=r.id,
        shared_id=r.shared_id,
        role="sending" if r.role == referrals.SENDING else "receiving",
        institution_id=r.partner_id,
        institution_name=r.partner.name,
        direction=r.direction,
        status=r.status,
        department=r.department,
        reason=r.reason,
        summary=r.summary,
        patient_id=r.patient_id,
        patient_name=r.patient_name,
        identity_match=r.identity_match,
        requester_name=r.requester_name,
        appointment_at=r.appointment_at,
        place=r.place,
        decline_reason=r.decline_reason,
        outcome=(
            {"summary": r.outcome_summary, "by": r.outcome_by_name, "at": r.closed_at}
            if r.outcome_summary is not None
            else None
        ),
        responder_name=r.responder_name,
        created_at=r.created_at,
        responded_at=r.responded_at,
        closed_at=r.closed_at,
        diagnoses=[
            ReferralDiagnosisOut(
                id=d.id,
                icd10=d.icd10,
                name=d.name,
                institution=d.institution,
                diagnosed_on=d.diagnosed_on,
                confirmed=d.diagnosis_id is not None,
                diagnosis_id=d.diagnosis_id,
                confirmed_at=d.confirmed_at,
            )
            for d in r.diagnoses
        ],
    )


@router.post(
    "/referrals",
    summary="Refer a patient to a partner institution, up (基层 → 上级) or down (三级 → 基层); sent as a "
    "signed FHIR message with the patient's confirmed diagnoses",
    body=ReferralIn,
    response=ReferralCreated,
    status=201,
    roles=["physician"],
    errors={
        403: ["no_agreement", "not_qualified"],
        404: ["not_found"],
        422: ["bad_direction", "invalid"],
    },
)
def create_referral(body: ReferralIn, principal: Principal) -> ReferralCreated:
    referral = referral_sending.send_referral(
        principal,
        referral_sending.ReferralRequest(
            patient_id=body.patient_id,
            institution_id=body.institution_id,
            direction=body.direction,
            department=body.department,
            reason=body.reason,
            summary=body.summary,
            visit_id=body.visit_id,
        ),
    )
    return ReferralCreated(id=referral.id, status=referral.status)


@router.get(
    "/referrals",
    summary="The institution's referrals: sent (role=sending) or to answer (role=receiving), by status",
    response=ReferralsOut,
    roles=["physician", "admin"],
    errors={422: ["invalid"]},
)
def list_referrals(principal: Principal) -> ReferralsOut:
    role = request.args.get("role") or None
    status = request.args.get("status") or None
    return ReferralsOut(items=[referral_out(r) for r in referrals.list_referrals(principal, role, status)])


@router.get(
    "/referrals/<referral_id>",
    summary="One referral with its status, appointment, outcome and carried diagnoses",
    response=ReferralOut,
    roles=REFERRAL_READERS,
    errors={404: ["not_found"]},
)
def get_referral(referral_id: str, principal: Principal) -> ReferralOut:
    return referral_out(referrals.referral_for(principal, record_id(referral_id)))


class ReferralAcceptIn(RequestModel):
    appointment_at: datetime = Field(description="When the patient comes (a time without a zone is Beijing time)")
    place: str = Field(min_length=2, max_length=300, description="Where: the building, floor, clinic room")


class ReferralStatusOut(ResponseModel):
    status: str


@router.post(
    "/referrals/<referral_id>/accept",
    summary="The receiving institution accepts the referral with an appointment; the patient is told where and when",
    body=ReferralAcceptIn,
    response=ReferralStatusOut,
    roles=["physician"],
    errors={403: ["not_qualified", "not_receiving"], 404: ["not_found"], 409: ["illegal_transition"], 422: ["invalid"]},
)
def accept_referral(referral_id: str, body: ReferralAcceptIn, principal: Principal) -> ReferralStatusOut:
    return ReferralStatusOut(
        status=referral_receiving.accept(principal, record_id(referral_id), body.appointment_at, body.place).status
    )


class ReferralDeclineIn(RequestModel):
    reason: str = Field(min_length=2, max_length=2000)


@router.post(
    "/referrals/<referral_id>/decline",
    summary="The receiving institution declines the referral, saying why",
    body=ReferralDeclineIn,
    response=ReferralStatusOut,
    roles=["physician"],
    errors={403: ["not_qualified", "not_receiving"], 404: ["not_found"], 409: ["illegal_transition"], 422: ["invalid"]},
)
def decline_referral(referral_id: str, body: ReferralDeclineIn, principal: Principal) -> ReferralStatusOut:
    return ReferralStatusOut(status=referral_receiving.decline(principal, record_id(referral_id), body.reason).status)


class ReferralOutcomeIn(RequestModel):
    summary: str = Field(min_length=2, max_length=20000)


@router.post(
    "/referrals/<referral_id>/outcome",
    summary="The receiving institution reports the outcome back (the closed loop); the referral completes on both sides",
    body=ReferralOutcomeIn,
    response=ReferralStatusOut,
    roles=["physician"],
    errors={403: ["not_qualified", "not_receiving"], 404: ["not_found"], 409: ["illegal_transition"], 422: ["invalid"]},
)
def referral_outcome(referral_id: str, body: ReferralOutcomeIn, principal: Principal) -> ReferralStatusOut:
    return ReferralStatusOut(
        status=referral_receiving.report_outcome(principal, record_id(referral_id), body.summary).status
    )


@router.post(
    "/referrals/<referral_id>/diagnoses/<carried_id>/confirm",
    summary="A physician here confirms a diagnosis the referred patient arrived with (face-verified): the "
    "patient's online return visits pass on it",
    response=ReferralStatusOut,
    roles=["physician"],
    errors={
        403: ["face_verification_required", "not_qualified", "not_receiving"],
        404: ["not_found"],
        409: ["illegal_transition", "already_reviewed"],
        422: ["not_eligible_condition", "identity_mismatch"],
    },
)
def confirm_carried_diagnosis(referral_id: str, carried_id: str, principal: Principal) -> ReferralStatusOut:
    referral_diagnoses.confirm_carried(principal, record_id(referral_id), record_id(carried_id))
    return ReferralStatusOut(status="confirmed")
