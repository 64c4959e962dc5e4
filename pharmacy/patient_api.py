"""The pharmacy's JSON API for patients: where the medicines go and the drug fee, where they
are now, and the prescriptions of everyone on the account. Thin: parse, call one service, answer."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pydantic import Field

from clinic.core.api import ApiRouter, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.core.principal import Principal
from pharmacy import checkout as rx_checkout

router = ApiRouter("pharmacy")


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
