"""The pharmacy's JSON API for pharmacists: the review queue, the decisions, verifying a
signature, making up and issuing. Thin: parse, call one service, answer.

Delivery partners' endpoints are pharmacy.partner_api, patients' pharmacy.patient_api."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from clinic.core.api import ApiRouter, RequestModel, ResponseModel
from clinic.core.db import db, record_id
from clinic.core.principal import Principal
from pharmacy import dispensing, services
from pharmacy.models import DeliveryPartner, Review
from prescriptions.models import Prescription

router = ApiRouter("pharmacy")


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
