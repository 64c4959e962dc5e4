"""Endpoints between institutions (API.md "Between institutions"): the cooperation
agreements (admin) and the signed federation inbox (a partner institution; the JWS is the
authentication)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from flask import request
from pydantic import Field, model_validator

from clinic.core.api import ApiRouter, Principal, RawBody, RequestModel, ResponseModel
from clinic.core.errors import Invalid
from clinic.telemedicine import envelope, referrals, rules, services
from clinic.telemedicine.models import PartnerInstitution, Referral

router = ApiRouter("telemedicine")
ADMIN = ["admin"]


class PartnerFeeSplit(RequestModel):
    inviting: int = Field(ge=0, le=100, description="The inviting institution's share, percent")
    invited: int = Field(ge=0, le=100, description="The invited institution's share, percent")

    @model_validator(mode="after")
    def _sums_to_100(self) -> PartnerFeeSplit:
        if self.inviting + self.invited != 100:
            raise ValueError("the inviting and invited shares must sum to 100")
        return self


class PartnerPublicJwk(RequestModel):
    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str = Field(min_length=40, max_length=64)
    y: str = Field(min_length=40, max_length=64)
    kid: str = Field(min_length=1, max_length=128)
    alg: Literal["ES256"] | None = None
    use: Literal["sig"] | None = None


class PartnerInstitutionIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    license_no: str = Field(min_length=1, max_length=64)
    level: Literal["三级", "二级", "一级", "基层"]
    base_url: str = Field(min_length=8, max_length=300)
    public_jwk: PartnerPublicJwk
    services: list[Literal["consultation", "remote_diagnosis", "referral"]] = Field(min_length=1, max_length=3)
    departments: list[str] = Field(default_factory=list, max_length=100)
    fee_fen: int = Field(ge=0, le=rules.MAX_FEE_FEN)
    fee_split: PartnerFeeSplit
    valid_from: date
    valid_until: date


class PartnerInstitutionOut(ResponseModel):
    id: uuid.UUID
    name: str
    license_no: str
    level: str
    base_url: str
    public_jwk: dict[str, Any]
    kid: str
    services: list[str]
    departments: list[str]
    fee_fen: int
    fee_split: dict[str, int]
    valid_from: date
    valid_until: date
    in_force: bool
    created_at: datetime
    key_rotated_at: datetime | None


class PartnerInstitutionsOut(ResponseModel):
    items: list[PartnerInstitutionOut]


class PartnerCreated(ResponseModel):
    id: uuid.UUID


def partner_out(p: PartnerInstitution) -> PartnerInstitutionOut:
    return PartnerInstitutionOut(
        id=p.id,
        name=p.name,
        license_no=p.license_no,
        level=p.level,
        base_url=p.base_url,
        public_jwk=dict(p.public_jwk),
        kid=p.kid,
        services=list(p.services),
        departments=list(p.departments),
        fee_fen=p.fee_fen,
        fee_split={"inviting": p.split_inviting, "invited": p.split_invited},
        valid_from=p.valid_from,
        valid_until=p.valid_until,
        in_force=services.agreement_in_force(p),
        created_at=p.created_at,
        key_rotated_at=p.key_rotated_at,
    )


def terms_of(body: PartnerInstitutionIn) -> rules.AgreementTerms:
    return rules.AgreementTerms(
        name=body.name,
        license_no=body.license_no,
        level=body.level,
        base_url=body.base_url,
        public_jwk=body.public_jwk.model_dump(exclude_none=True),
        services=tuple(dict.fromkeys(body.services)),
        departments=tuple(d.strip() for d in body.departments if d.strip()),
        fee_fen=body.fee_fen,
        split_inviting=body.fee_split.inviting,
        split_invited=body.fee_split.invited,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
    )


@router.post(
    "/admin/partner-institutions",
    summary="Register a partner institution under a cooperation agreement (合作协议): its pinned "
    "institution key, services, departments, fee and split, validity",
    body=PartnerInstitutionIn,
    response=PartnerCreated,
    status=201,
    roles=ADMIN,
    errors={409: ["partner_exists"], 422: ["invalid"]},
)
def create_partner(body: PartnerInstitutionIn, principal: Principal) -> PartnerCreated:
    return PartnerCreated(id=services.register_partner(terms_of(body)).id)


@router.get(
    "/admin/partner-institutions",
    summary="The partner institutions and their agreements",
    response=PartnerInstitutionsOut,
    roles=ADMIN,
)
def partners(principal: Principal) -> PartnerInstitutionsOut:
    return PartnerInstitutionsOut(items=[partner_out(p) for p in services.list_partners()])


class PartnerKeyIn(RequestModel):
    public_jwk: PartnerPublicJwk


@router.post(
    "/admin/partner-institutions/<partner_id>/key",
    summary="Pin a partner institution's new key (the explicit act of key rotation); audited",
    body=PartnerKeyIn,
    response=PartnerInstitutionOut,
    roles=ADMIN,
    errors={404: ["not_found"], 409: ["partner_exists"], 422: ["invalid"]},
)
def rotate_key(partner_id: str, body: PartnerKeyIn, principal: Principal) -> PartnerInstitutionOut:
    return partner_out(services.rotate_partner_key(partner_id, body.public_jwk.model_dump(exclude_none=True)))


class FederationAccepted(ResponseModel):
    id: str  # the MessageHeader id
    duplicate: bool


SIGNED_MESSAGE = RawBody(
    media_type="application/jose",
    schema={
        "type": "string",
        "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        "maxLength": envelope.MAX_MESSAGE_BYTES,
        "description": "Compact JWS serialization (RFC 7515 §7.1): BASE64URL(header).BASE64URL(payload)."
        "BASE64URL(signature). Header: alg ES256, kid the sender's institution key (as in its "
        "/.well-known/jwks.json and pinned here by the cooperation agreement), typ fhir+jws. Payload: "
        "a FHIR R4 Bundle of type message whose first entry is a MessageHeader (its id makes a "
        "repeated delivery a no-op; eventCoding.code names the event; source.endpoint the sender).",
    },
    description="The signed message, as the text of a compact JWS (no JSON wrapper)",
)


@router.post(
    "/federation/messages",
    summary="A partner institution's signed message: a compact JWS (ES256, Content-Type "
    "application/jose) whose payload is a FHIR R4 message Bundle, MessageHeader first; "
    "verified with the sender's pinned key; the same MessageHeader id again changes nothing",
    response=FederationAccepted,
    status=202,
    auth="none",
    raw_body=SIGNED_MESSAGE,
    errors={
        401: ["bad_signature"],
        403: ["no_agreement"],
        409: ["illegal_transition"],  # e.g. a referral's outcome before its acceptance
        415: ["unsupported_media_type"],
        422: ["invalid_message", "unknown_event", "bad_direction", "unknown_referral"],
    },
)
def federation_inbox() -> FederationAccepted:
    if request.mimetype != "application/jose":
        raise Invalid("The message must be sent as application/jose.", code="unsupported_media_type").with_status(415)
    raw = request.get_data(cache=False)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise services.BadSignature("The message is not a compact JWS.") from None
    received = services.receive(token)
    return FederationAccepted(id=received.message.message_id, duplicate=received.duplicate)


# --- two-way referral (双向转诊) -------------------------------------------------------------

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
    referral = referrals.send_referral(
        principal.id,
        referrals.ReferralRequest(
            patient_id=str(body.patient_id),
            institution_id=str(body.institution_id),
            direction=body.direction,
            department=body.department,
            reason=body.reason,
            summary=body.summary,
            visit_id=str(body.visit_id) if body.visit_id else None,
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
    return ReferralsOut(items=[referral_out(r) for r in referrals.list_referrals(principal.id, role, status)])


@router.get(
    "/referrals/<referral_id>",
    summary="One referral with its status, appointment, outcome and carried diagnoses",
    response=ReferralOut,
    roles=REFERRAL_READERS,
    errors={404: ["not_found"]},
)
def get_referral(referral_id: str, principal: Principal) -> ReferralOut:
    return referral_out(referrals.referral_for(principal.id, referral_id))


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
    return ReferralStatusOut(status=referrals.accept(principal.id, referral_id, body.appointment_at, body.place).status)


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
    return ReferralStatusOut(status=referrals.decline(principal.id, referral_id, body.reason).status)


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
    return ReferralStatusOut(status=referrals.report_outcome(principal.id, referral_id, body.summary).status)


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
    referrals.confirm_carried(principal.id, principal.claims, referral_id, carried_id)
    return ReferralStatusOut(status="confirmed")
