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
from clinic.core.db import record_id
from clinic.core.errors import Invalid
from clinic.telemedicine import envelope, federation, rules
from clinic.telemedicine import partners as registry
from clinic.telemedicine.models import PartnerInstitution

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
    consult_min_title: Literal["住院医师", "主治医师", "副主任医师", "主任医师"] | None = Field(
        default="副主任医师",
        description="The lowest title that may answer this partner's consultations (Jilin measures Art. 14)",
    )


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
    consult_min_title: str | None


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
        in_force=registry.agreement_in_force(p),
        created_at=p.created_at,
        key_rotated_at=p.key_rotated_at,
        consult_min_title=p.consult_min_title or None,
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
    partner = registry.register_partner(terms_of(body))
    partner.consult_min_title = body.consult_min_title or ""
    return PartnerCreated(id=partner.id)


@router.get(
    "/admin/partner-institutions",
    summary="The partner institutions and their agreements",
    response=PartnerInstitutionsOut,
    roles=ADMIN,
)
def partners(principal: Principal) -> PartnerInstitutionsOut:
    return PartnerInstitutionsOut(items=[partner_out(p) for p in registry.list_partners()])


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
    return partner_out(
        registry.rotate_partner_key(record_id(partner_id), body.public_jwk.model_dump(exclude_none=True))
    )


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
        raise federation.BadSignature("The message is not a compact JWS.") from None
    received = federation.receive(token)
    return FederationAccepted(id=received.message.message_id, duplicate=received.duplicate)
