"""The pharmacy's JSON API: partner registry (admin) and partner callbacks (signed)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import date, datetime
from typing import Any, Literal

from flask import request
from pydantic import AwareDatetime, Field, ValidationError

from clinic.core.api import ApiRouter, RequestModel, ResponseModel
from clinic.core.db import db, record_id
from clinic.core.errors import Invalid
from clinic.core.principal import Principal
from pharmacy import checkout as rx_checkout
from pharmacy import delivery as deliveries
from pharmacy import dispensing, partners, rules, services
from pharmacy.models import DeliveryPartner, Review
from prescriptions.models import Prescription

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


# --- the review queue ---------------------------------------------------------------------------


class Claimed(ResponseModel):
    prescription_id: str


@router.post(
    "/pharmacy/queue/claim",
    summary="Claim the oldest pending prescription nobody holds (claims expire after PHARMACY_CLAIM_SECONDS); "
    "204 when the queue is empty. Never the same one to two pharmacists.",
    response=Claimed,
    empty_status=204,
    roles=["pharmacist"],
    errors={403: ["not_qualified"]},
)
def claim(principal: Principal) -> Claimed | None:
    rx_id = services.claim_next(principal)
    return Claimed(prescription_id=str(rx_id)) if rx_id else None


ReasonCode = Literal[
    "legality",
    "indication",
    "dose",
    "route",
    "duplication",
    "interaction",
    "contraindication",
    "allergy",
    "special_population",
    "quantity",
    "other",
]


class ReasonIn(RequestModel):
    code: ReasonCode
    note: str = Field(default="", max_length=500)


class ReviewIn(RequestModel):
    decision: Literal["approve", "reject", "return"]
    reasons: list[ReasonIn | ReasonCode] = Field(default_factory=list, max_length=20)

    def reason_dicts(self) -> list[dict[str, str]]:
        return [{"code": r, "note": ""} if isinstance(r, str) else r.model_dump() for r in self.reasons]


class ReviewOut(ResponseModel):
    status: str
    pharmacist_jws: str | None = None


@router.post(
    "/pharmacy/prescriptions/<prescription_id>/review",
    summary="The claiming pharmacist approves, rejects or returns the prescription, with structured reasons "
    "from the review standard; rules are re-run and the physician's signature verified; an approval is "
    "counter-signed by the pharmacist (JWS)",
    body=ReviewIn,
    response=ReviewOut,
    roles=["pharmacist"],
    errors={409: ["not_claimed"], 422: ["invalid_signature", "prescription_rejected"], 403: ["not_qualified"]},
)
def review_prescription(prescription_id: str, body: ReviewIn, principal: Principal) -> ReviewOut:
    rx = services.decide(principal, record_id(prescription_id), body.decision, body.reason_dicts())
    record = db.session.get(Review, rx.id)
    return ReviewOut(status=rx.status.value, pharmacist_jws=record.pharmacist_jws if record else None)


class ReviewScreen(ResponseModel):
    prescription_id: str
    status: str
    signed_at: datetime
    expires_at: datetime
    patient: dict[str, Any]
    diagnosis: dict[str, Any]
    physician: dict[str, Any]
    items: list[dict[str, Any]]
    cold_chain: bool
    guardian: dict[str, Any] | None
    accompanying_physician: dict[str, Any] | None
    long_term: bool
    rules: list[dict[str, Any]]
    signature_valid: bool
    signature_error: str | None
    claimed_by_me: bool
    claim_expires_at: datetime | None
    decision: str | None
    reasons: list[dict[str, Any]]


@router.get(
    "/pharmacy/prescriptions/<prescription_id>/review",
    summary="What the pharmacist reviews: patient (age, weight, allergies), diagnosis, items, every rule "
    "re-run now, and whether the physician's signature verifies",
    response=ReviewScreen,
    roles=["pharmacist"],
)
def review_screen(prescription_id: str, principal: Principal) -> ReviewScreen:
    return ReviewScreen(**asdict(services.review_screen(principal, record_id(prescription_id))))


class VerifyIn(RequestModel):
    jws: str = Field(min_length=1, max_length=20000)


class VerifyOut(ResponseModel):
    valid: bool
    prescription_id: str
    kind: str  # prescription | pharmacist_review


@router.post(
    "/pharmacy/verify",
    summary="Verify a prescription's JWS (the physician's) or a pharmacist's approval JWS",
    body=VerifyIn,
    response=VerifyOut,
    roles=["pharmacist"],
    errors={422: ["invalid_signature"]},
)
def verify(body: VerifyIn, principal: Principal) -> VerifyOut:
    return VerifyOut(**asdict(services.verify_jws(body.jws)))


class DispenseIn(RequestModel):
    dispensed_by: str | None = Field(
        default=None,
        max_length=64,
        description="调配: the account id of the pharmacist who made it up (when the caller checks and issues it)",
    )
    checked_by: str | None = Field(
        default=None,
        max_length=64,
        description="核对、发药: the account id of the on-duty pharmacist who checked it (when the caller made it up)",
    )


class PharmacistRef(ResponseModel):
    id: str
    name: str


class DispensingPharmacistsOut(ResponseModel):
    dispensed_by: PharmacistRef | None
    dispensed_at: datetime | None
    checked_by: PharmacistRef | None
    checked_at: datetime | None


class DispenseOut(ResponseModel):
    status: str  # the prescription's
    delivery_status: str
    partner: str | None
    dispensed_by: PharmacistRef | None = None
    dispensed_at: datetime | None = None
    checked_by: PharmacistRef | None = None
    checked_at: datetime | None = None


@router.post(
    "/pharmacy/prescriptions/<prescription_id>/prepare",
    summary="调配: record that the caller has made up an approved, paid prescription; another pharmacist "
    "then checks it and issues it (dispense)",
    response=DispensingPharmacistsOut,
    roles=["pharmacist"],
    errors={409: ["drug_fee_unpaid", "no_delivery_address", "illegal_transition", "already_prepared"]},
)
def prepare(prescription_id: str, principal: Principal) -> DispensingPharmacistsOut:
    done = dispensing.prepare(principal, record_id(prescription_id))
    return DispensingPharmacistsOut(**dispensing.dispensing_pharmacists(done.prescription_id).as_dict())


@router.post(
    "/pharmacy/prescriptions/<prescription_id>/dispense",
    summary="核对、发药: issue an approved and paid prescription (once) made up by one pharmacist and checked "
    "by another, and route it to a delivery partner or the pharmacy counter. The caller is one of the two: "
    "the checker of what another made up (recorded with prepare, or named in dispensed_by), or the "
    "dispenser naming the on-duty pharmacist who checked it (checked_by). The body may be empty.",
    body=DispenseIn,
    body_optional=True,
    response=DispenseOut,
    roles=["pharmacist"],
    errors={
        409: ["drug_fee_unpaid", "no_delivery_address", "illegal_transition", "already_prepared"],
        422: ["checker_required", "same_pharmacist", "not_a_pharmacist", "pharmacist_off_duty", "not_involved"],
    },
)
def dispense(prescription_id: str, body: DispenseIn, principal: Principal) -> DispenseOut:
    delivery = dispensing.dispense(
        principal,
        record_id(prescription_id),
        dispensed_by=body.dispensed_by,
        checked_by=body.checked_by,
    )
    rx = db.session.get(Prescription, delivery.prescription_id)
    assert rx is not None
    partner = db.session.get(DeliveryPartner, delivery.partner_id) if delivery.partner_id else None
    return DispenseOut(
        status=rx.status.value,
        delivery_status=delivery.status.value,
        partner=partner.name if partner else None,
        **dispensing.dispensing_pharmacists(rx.id).as_dict(),
    )


class CheckoutIn(RequestModel):
    collect_at_pharmacy: bool = False
    recipient_name: str | None = Field(default=None, max_length=60)
    phone: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=300)
    region_code: str | None = Field(default=None, max_length=12)


class CheckoutOut(ResponseModel):
    fee_fen: int
    paid: bool
    payment: dict[str, Any] | None


@router.post(
    "/prescriptions/<prescription_id>/checkout",
    summary="The patient gives the delivery address (or collects at the pharmacy) and, with payments on, "
    "starts paying the drug fee of an approved prescription",
    body=CheckoutIn,
    response=CheckoutOut,
    roles=["patient"],
    errors={409: ["not_approved"], 503: ["payments_unavailable"]},
)
def checkout(prescription_id: str, body: CheckoutIn, principal: Principal) -> CheckoutOut:
    record, payment = rx_checkout.checkout(
        principal,
        record_id(prescription_id),
        collect=body.collect_at_pharmacy,
        recipient_name=body.recipient_name,
        phone=body.phone,
        address=body.address,
        region_code=body.region_code,
    )
    return CheckoutOut(
        fee_fen=record.fee_fen, paid=record.paid_at is not None, payment=asdict(payment) if payment else None
    )


class DeliveryEventOut(ResponseModel):
    status: str
    at: datetime
    waybill_no: str | None = Field(default=None, description="The waybill number the partner's event carried")


class DeliveryOut(ResponseModel):
    prescription_id: str
    prescription_status: str
    partner: dict[str, str] | None
    status: str
    waybill_no: str | None = Field(default=None, description="The current partner's waybill number (运单号)")
    events: list[DeliveryEventOut]
    paid: bool
    fee_fen: int


@router.get(
    "/prescriptions/<prescription_id>/delivery",
    summary="Where the medicines are: partner, delivery status and its events",
    response=DeliveryOut,
    roles=["patient", "pharmacist"],
)
def delivery(prescription_id: str, principal: Principal) -> DeliveryOut:
    return DeliveryOut(**asdict(rx_checkout.delivery_view(principal, record_id(prescription_id))))


class PatientPrescriptionOut(ResponseModel):
    id: uuid.UUID
    status: str
    patient_id: uuid.UUID
    visit_id: uuid.UUID
    physician: dict[str, Any]
    items: list[dict[str, Any]]
    fee_fen: int
    paid: bool
    delivery_status: str
    signed_at: datetime
    expires_at: datetime


class PatientPrescriptionsOut(ResponseModel):
    items: list[PatientPrescriptionOut]


@router.get(
    "/prescriptions",
    summary="The prescriptions of every person on the patient's account, newest first",
    response=PatientPrescriptionsOut,
    roles=["patient"],
)
def my_prescriptions(principal: Principal) -> PatientPrescriptionsOut:
    return PatientPrescriptionsOut(
        items=[
            PatientPrescriptionOut(
                id=p.rx.id,
                status=p.rx.status.value,
                patient_id=p.rx.patient_id,
                visit_id=p.rx.visit_id,
                physician={"id": str(p.rx.physician_id), "name": p.physician_name},
                items=[
                    {
                        "drug_id": str(i.drug_id),
                        "name": i.drug_name,
                        "strength": i.strength,
                        "dose": str(i.dose),
                        "unit": i.unit,
                        "frequency": i.frequency,
                        "route": i.route,
                        "days": i.days,
                        "quantity": str(i.quantity),
                    }
                    for i in p.rx.items
                ],
                fee_fen=p.fee_fen,
                paid=p.paid,
                delivery_status=p.delivery_status,
                signed_at=p.rx.signed_at,
                expires_at=p.rx.expires_at,
            )
            for p in rx_checkout.patient_prescriptions(principal.account_id)
        ]
    )
