"""Prescriptions as FHIR R4 MedicationRequest resources for the regulators' interface.

One MedicationRequest per prescription item (FHIR orders one medication each); the
items of one prescription share `groupIdentifier` (the prescription id). The signer is
the `requester`; the pharmacist's review (reviewer, decision, time) and the dispensing
pharmacists (who made it up, who checked and issued it, when) are complex extensions,
since R4's MedicationRequest has no element for them. Registered by the app factory:

    register_resource("MedicationRequest", MedicationRequestSource(review_model=Review))

`review_model` is the pharmacy's review table (prescription_id, decided_by, decision,
decided_at): passed in by the factory, so nothing here imports the pharmacy package.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.resource import Resource
from sqlalchemy import func, select

from clinic.regulator import fhir as base
from prescriptions import signing
from prescriptions.models import Prescription, PrescriptionItem
from prescriptions.rules import PrescriptionStatus

SYS_PRESCRIPTION = "urn:clinic:identifier:prescription"
SYS_DRUG = "urn:clinic:identifier:drug"
SYS_STATUS = "urn:clinic:prescription-status"
EXT_REVIEW = "urn:clinic:fhir:pharmacist-review"
# 调配 and 核对、发药 (处方管理办法 第三十七条): who made the prescription up and who checked and
# issued it, with the times. The interface has no MedicationDispense resource; R4's
# MedicationDispense.performer.function codes name the same two roles (packager, finalchecker).
EXT_DISPENSE = "urn:clinic:fhir:dispensing-pharmacists"
EXT_STATUS = "urn:clinic:fhir:prescription-status"
EXT_SIGNATURE_KID = "urn:clinic:fhir:signature-kid"
# The physician's prescription JWS and the pharmacist's approval JWS; with a de-identified
# scope both are detached (header..signature, RFC 7515 Appendix F): the payload names the patient.
EXT_PRESCRIPTION_JWS = "urn:clinic:fhir:prescription-jws"
EXT_APPROVAL_JWS = "urn:clinic:fhir:approval-jws"
EXT_PRESCRIPTION_JWS_DETACHED = "urn:clinic:fhir:prescription-jws-detached"
EXT_APPROVAL_JWS_DETACHED = "urn:clinic:fhir:approval-jws-detached"
COURSE = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy"

# Our lifecycle onto R4 MedicationRequest.status (the exact status rides in an extension).
STATUS = {
    PrescriptionStatus.PENDING_REVIEW: ("on-hold", "awaiting pharmacist review"),
    PrescriptionStatus.APPROVED: ("active", None),
    PrescriptionStatus.REJECTED: ("cancelled", "rejected by the pharmacist"),
    PrescriptionStatus.RETURNED: ("on-hold", "returned to the physician by the pharmacist"),
    PrescriptionStatus.DISPENSED: ("completed", None),
    PrescriptionStatus.OUT_FOR_DELIVERY: ("completed", None),
    PrescriptionStatus.DELIVERED: ("completed", None),
    PrescriptionStatus.EXPIRED: ("cancelled", "expired before dispensing"),
    PrescriptionStatus.CANCELLED: ("cancelled", "cancelled"),
}


@dataclass(frozen=True)
class MedicationRequestSource:
    review_model: Any = None

    def _query(self, ctx: base.FhirContext) -> Any:  # a Select of (item, prescription) rows
        w = ctx.window
        return (
            select(PrescriptionItem, Prescription)
            .join(Prescription, Prescription.id == PrescriptionItem.prescription_id)
            .where(Prescription.signed_at >= w.since, Prescription.signed_at < w.until)
        )

    def count(self, ctx: base.FhirContext) -> int:
        q = self._query(ctx).with_only_columns(func.count(PrescriptionItem.id))
        return int(ctx.session.scalar(q) or 0)

    def page(self, ctx: base.FhirContext, offset: int, limit: int) -> list[Resource]:
        q = (
            self._query(ctx)
            .order_by(Prescription.signed_at, Prescription.id, PrescriptionItem.position)
            .offset(offset)
            .limit(limit)
        )
        rows = ctx.session.execute(q).all()
        reviews = self._reviews(ctx, {rx.id for _, rx in rows})
        return [medication_request(item, rx, reviews.get(rx.id), ctx) for item, rx in rows]

    def _reviews(self, ctx: base.FhirContext, ids: set[uuid.UUID]) -> dict[uuid.UUID, Any]:
        model = self.review_model
        if model is None or not ids:
            return {}
        return {r.prescription_id: r for r in ctx.session.scalars(select(model).where(model.prescription_id.in_(ids)))}


def _number(value: Decimal | int | float) -> Decimal:
    return Decimal(value).normalize() if isinstance(value, Decimal) else Decimal(str(value))


def _quantity_unit(rx: Prescription, position: int) -> str | None:
    items = rx.content.get("items", [])
    return (items[position].get("quantity_unit") or None) if position < len(items) else None


def medication_request(item: PrescriptionItem, rx: Prescription, review: Any, ctx: base.FhirContext) -> Resource:
    status, reason = STATUS[rx.status]
    extensions: list[dict[str, Any]] = [
        {"url": EXT_STATUS, "valueCode": rx.status.value},
        {"url": EXT_SIGNATURE_KID, "valueString": rx.kid},
    ]
    if review is not None and getattr(review, "decided_by", None) is not None:
        extensions.append(
            {
                "url": EXT_REVIEW,
                "extension": [
                    {"url": "reviewer", "valueReference": ctx.practitioner_ref(review.decided_by)},
                    {"url": "decision", "valueCode": review.decision or "unknown"},
                    {"url": "decidedAt", "valueDateTime": base.instant(review.decided_at)},
                ],
            }
        )
    if review is not None and getattr(review, "checked_by", None) is not None:
        dispense: list[dict[str, Any]] = []
        if getattr(review, "prepared_by", None) is not None:
            dispense.append({"url": "packager", "valueReference": ctx.practitioner_ref(review.prepared_by)})
            dispense.append({"url": "packagedAt", "valueDateTime": base.instant(review.prepared_at)})
        dispense.append({"url": "finalchecker", "valueReference": ctx.practitioner_ref(review.checked_by)})
        dispense.append({"url": "checkedAt", "valueDateTime": base.instant(review.checked_at)})
        extensions.append({"url": EXT_DISPENSE, "extension": dispense})
    full = ctx.identified
    extensions.append(
        {
            "url": EXT_PRESCRIPTION_JWS if full else EXT_PRESCRIPTION_JWS_DETACHED,
            "valueString": rx.jws if full else signing.detached(rx.jws),
        }
    )
    approval = getattr(review, "pharmacist_jws", None) if review is not None else None
    if approval and getattr(review, "decision", None) == "approve":
        extensions.append(
            {
                "url": EXT_APPROVAL_JWS if full else EXT_APPROVAL_JWS_DETACHED,
                "valueString": approval if full else signing.detached(approval),
            }
        )
    dose = _number(item.dose)
    data: dict[str, Any] = {
        "id": f"{rx.id}-{item.position}",
        "extension": extensions,
        "identifier": [{"system": SYS_PRESCRIPTION, "value": f"{rx.id}/{item.position}"}],
        "groupIdentifier": {"system": SYS_PRESCRIPTION, "value": str(rx.id)},
        "status": status,
        "statusReason": {"text": reason} if reason else None,
        "intent": "order",
        "courseOfTherapyType": {"coding": [{"system": COURSE, "code": "continuous" if rx.long_term else "acute"}]},
        "medicationCodeableConcept": {
            "coding": [{"system": SYS_DRUG, "code": str(item.drug_id), "display": item.drug_name}],
            "text": f"{item.drug_name} {item.strength}".strip(),
        },
        "subject": ctx.patient_ref(rx.patient_id),
        "encounter": {"reference": f"Encounter/{rx.visit_id}"},
        "authoredOn": base.instant(rx.signed_at),
        "requester": ctx.practitioner_ref(rx.physician_id),
        "reasonCode": [{"coding": [{"system": base.ICD10, "code": rx.diagnosis_icd10}]}],
        "dosageInstruction": [
            {
                "sequence": 1,
                "text": f"{dose} {item.unit} {item.frequency} {item.route}, {item.days} days",
                "timing": {"code": {"text": item.frequency}},
                "route": {"text": item.route},
                "doseAndRate": [{"doseQuantity": {"value": dose, "unit": item.unit}}],
            }
        ],
        "dispenseRequest": {
            "validityPeriod": {"start": base.instant(rx.signed_at), "end": base.instant(rx.expires_at)},
            "quantity": {"value": _number(item.quantity), "unit": _quantity_unit(rx, item.position)},
            "expectedSupplyDuration": {
                "value": item.days,
                "unit": "d",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            },
        },
    }
    return MedicationRequest.model_validate(base._clean(data))
