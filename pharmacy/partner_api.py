"""The pharmacy's JSON API for delivery partners: the partner registry (administrators) and
the partners' signed status callbacks. Thin: parse, call one service, answer."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Literal

from flask import request
from pydantic import AwareDatetime, Field, ValidationError

from clinic.core.api import ApiRouter, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.core.errors import Invalid
from clinic.core.principal import Principal
from pharmacy import delivery as deliveries
from pharmacy import partners, rules
from pharmacy.models import DeliveryPartner

router = ApiRouter("pharmacy")

REGION = r"^[0-9]{2,6}$"


class PartnerIn(RequestModel):
    name: str = Field(min_length=1, max_length=120)
    license_no: str = Field(min_length=1, max_length=64)
    license_valid_until: date
    regions: list[str] = Field(min_length=1, max_length=200)
    cold_chain: bool = False
    priority: int = Field(default=100, ge=0, le=10_000)
    endpoint: str = Field(pattern=r"^https?://", max_length=500)
    secret: str | None = Field(default=None, min_length=32, max_length=200)
    active: bool = True

    def spec(self) -> partners.PartnerSpec:
        for r in self.regions:
            if not r.isdigit() or not 2 <= len(r) <= 6:
                raise Invalid("A region is a GB/T 2260 code prefix of 2 to 6 digits.", fields=[{"loc": "regions"}])
        return partners.PartnerSpec(**self.model_dump())


class PartnerUpdate(RequestModel):
    license_no: str | None = Field(default=None, min_length=1, max_length=64)
    license_valid_until: date | None = None
    regions: list[str] | None = Field(default=None, min_length=1, max_length=200)
    cold_chain: bool | None = None
    priority: int | None = Field(default=None, ge=0, le=10_000)
    endpoint: str | None = Field(default=None, pattern=r"^https?://", max_length=500)
    active: bool | None = None
    rotate_secret: bool = False


class PartnerOut(ResponseModel):
    id: str
    name: str
    license_no: str
    license_valid_until: date
    regions: list[str]
    cold_chain: bool
    priority: int
    endpoint: str
    active: bool
    secret: str | None = None  # only when created or rotated


class PartnerList(ResponseModel):
    items: list[PartnerOut]


def _partner_out(p: DeliveryPartner, secret: str | None = None) -> PartnerOut:
    return PartnerOut(
        id=str(p.id),
        name=p.name,
        license_no=p.license_no,
        license_valid_until=p.license_valid_until,
        regions=list(p.regions),
        cold_chain=p.cold_chain,
        priority=p.priority,
        endpoint=p.endpoint,
        active=p.active,
        secret=secret,
    )


@router.post(
    "/admin/partners",
    summary="Register a delivery partner (qualification, regions, cold chain, endpoint); its secret is shown once",
    body=PartnerIn,
    response=PartnerOut,
    status=201,
    roles=["admin"],
    errors={409: ["partner_exists"], 422: ["unsafe_endpoint"]},
)
def create_partner(body: PartnerIn, principal: Principal) -> PartnerOut:
    partner, secret = partners.create_partner(body.spec())
    return _partner_out(partner, secret)


@router.get("/admin/partners", summary="The delivery partner registry", response=PartnerList, roles=["admin"])
def list_partners(principal: Principal) -> PartnerList:
    return PartnerList(items=[_partner_out(p) for p in partners.list_partners()])


@router.post(
    "/admin/partners/<partner_id>",
    summary="Change a delivery partner (qualification, regions, endpoint, active); optionally rotate its secret",
    body=PartnerUpdate,
    response=PartnerOut,
    roles=["admin"],
    errors={422: ["unsafe_endpoint"]},
)
def update_partner(partner_id: str, body: PartnerUpdate, principal: Principal) -> PartnerOut:
    changes = body.model_dump(exclude={"rotate_secret"}, exclude_none=True)
    if "regions" in changes:
        PartnerIn.model_validate(
            {"name": "x", "license_no": "x", "license_valid_until": date.today(), "endpoint": "http://x", **changes}
        ).spec()
    partner, secret = partners.update_partner(record_id(partner_id), changes, body.rotate_secret)
    return _partner_out(partner, secret)


class CallbackIn(RequestModel):
    event_id: str = Field(min_length=1, max_length=128)
    prescription_id: str = Field(min_length=1, max_length=64)
    status: Literal["picked_up", "in_transit", "delivered", "failed"]
    at: AwareDatetime
    waybill_no: str | None = Field(
        default=None,
        max_length=40,
        pattern=rules.WAYBILL_PATTERN,
        description="Optional: the partner's waybill number (运单号), printable ASCII (spaces inside allowed, "
        "surrounding ones trimmed), at most 40 characters; kept on the delivery and shown on the patient's "
        "tracking timeline",
    )


class CallbackOut(ResponseModel):
    status: str  # the delivery's status after the event
    duplicate: bool


@router.post(
    "/partners/<partner_id>/callbacks",
    summary="A delivery partner's status event, signed: X-Timestamp and X-Signature "
    '(sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">), at most 5 minutes old; '
    "body {event_id, prescription_id, status: picked_up|in_transit|delivered|failed, at, waybill_no?}; "
    "the same event_id again changes nothing",
    response=CallbackOut,
    auth="custom",
    errors={401: ["bad_signature"], 404: ["not_found"], 409: ["illegal_status_transition"], 422: ["invalid"]},
)
def partner_callback(partner_id: str) -> CallbackOut:
    raw = request.get_data(cache=True)
    partner = deliveries.verify_partner(
        partner_id, request.headers.get("X-Timestamp"), request.headers.get("X-Signature"), raw
    )
    try:
        data = json.loads(raw)
        body = CallbackIn.model_validate(data)
    except (ValueError, UnicodeDecodeError, ValidationError) as exc:
        raise Invalid(f"The callback body is not valid: {str(exc)[:300]}") from None
    at: datetime = body.at
    result = deliveries.apply_callback(partner, body.event_id, body.prescription_id, body.status, at, body.waybill_no)
    return CallbackOut(status=result.delivery.status.value, duplicate=result.duplicate)
