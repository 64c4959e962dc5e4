"""Prescription endpoints of /api/v1 (API.md § Prescriptions). Thin: parse, call one service, answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Response
from pydantic import Field, model_validator

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.visits.models import Visit
from prescriptions import catalog, document, reads, rules, services

router = ApiRouter("prescriptions")
STAFF = ["physician", "pharmacist", "admin"]


class DrugQuery(RequestModel):
    q: str = Field(min_length=1, max_length=50, description="Chinese or English, generic or product name")


class DrugOut(ResponseModel):
    id: uuid.UUID
    name: str
    generic_name: str
    generic_name_en: str
    form: str
    strength: str
    route: str
    control_class: str | None
    cold_chain: bool


class DrugList(ResponseModel):
    items: list[DrugOut]


@router.get("/drugs", summary="Search the drug catalog", query=DrugQuery, response=DrugList, roles=STAFF)
def search(query: DrugQuery, principal: Principal) -> DrugList:
    return DrugList(items=[DrugOut.model_validate(d) for d in catalog.search_drugs(query.q)])


# --- prescriptions ---------------------------------------------------------------------------


class ItemIn(RequestModel):
    drug_id: uuid.UUID
    dose: Decimal = Field(gt=0, le=10000, max_digits=10, decimal_places=3)
    unit: str = Field(min_length=1, max_length=16)
    frequency: str = Field(min_length=1, max_length=32)
    route: str = Field(min_length=1, max_length=32)
    days: int = Field(ge=1, le=365)
    quantity: Decimal = Field(gt=0, le=10000, max_digits=10, decimal_places=2)
    quantity_unit: str | None = Field(
        default=None, min_length=1, max_length=16, description="片, 粒, 支 …: must be the product's dispensing unit"
    )


class GuardianIn(RequestModel):
    """A person recorded on the child's account as its guardian: `patient_id`, or typed
    `name`, `id_number` and `relation` that match one."""

    patient_id: uuid.UUID | None = None
    name: str | None = Field(default=None, min_length=1, max_length=100)
    id_number: str | None = Field(default=None, min_length=1, max_length=32)
    relation: str | None = Field(default=None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _one_way(self) -> GuardianIn:
        if self.patient_id is None and not (self.name and self.id_number and self.relation):
            raise ValueError("give patient_id, or name, id_number and relation")
        return self


class AccompanyingPhysicianIn(RequestModel):
    name: str = Field(min_length=1, max_length=100)
    license_no: str = Field(min_length=1, max_length=64)
    specialty: str = Field(min_length=1, max_length=64)


class PrescribeIn(RequestModel):
    items: list[ItemIn] = Field(min_length=1, max_length=20)
    weight_kg: Decimal | None = Field(default=None, gt=0, le=400, max_digits=5, decimal_places=2)
    long_term: bool = False
    assessment_note: str | None = Field(default=None, max_length=2000)
    guardian: GuardianIn | None = None
    accompanying_physician: AccompanyingPhysicianIn | None = None
    replaces: uuid.UUID | None = Field(
        default=None, description="The returned, rejected or voided prescription this one revises"
    )

    def spec(self) -> services.PrescriptionSpec:
        g, a = self.guardian, self.accompanying_physician
        return services.PrescriptionSpec(
            items=tuple(
                services.ItemSpec(i.drug_id, i.dose, i.unit, i.frequency, i.route, i.days, i.quantity, i.quantity_unit)
                for i in self.items
            ),
            weight_kg=self.weight_kg,
            long_term=self.long_term,
            assessment_note=self.assessment_note,
            guardian=rules.Guardian(
                g.name or "", g.id_number or "", g.relation or "", str(g.patient_id) if g.patient_id else None
            )
            if g
            else None,
            accompanying_physician=rules.AccompanyingPhysician(a.name, a.license_no, a.specialty) if a else None,
        )


class PrescribedOut(ResponseModel):
    id: uuid.UUID
    status: str
    jws: str


@router.post(
    "/visits/<visit_id>/prescriptions",
    summary="Prescribe: the visit's face-verified physician signs one prescription (all rules checked)",
    body=PrescribeIn,
    response=PrescribedOut,
    status=201,
    roles=["physician"],
    errors={
        403: ["face_verification_required"],
        404: ["not_found"],
        409: ["duplicate_submission", "not_replaceable", "already_replaced"],
        422: ["prescription_rejected", "unknown_drug"] + list(rules.VIOLATION_CODES),
    },
    idempotent=True,
)
def prescribe(visit_id: str, body: PrescribeIn, principal: Principal, idempotency_key: str | None) -> PrescribedOut:
    rx = services.create_prescription(
        principal,
        record_id(visit_id),
        body.spec(),
        refuse_repeats=idempotency_key is None,
        replaces=body.replaces,
    )
    return PrescribedOut(id=rx.id, status=rx.status.value, jws=rx.jws)


class ItemOut(ResponseModel):
    drug_id: uuid.UUID
    drug_name: str
    strength: str
    dose: Decimal
    unit: str
    frequency: str
    route: str
    days: int
    quantity: Decimal
    cold_chain: bool
    form: str = Field(default="", description="Dosage form (剂型) as signed")
    quantity_unit: str = Field(default="", description="What the quantity counts (片, 粒, 支 …) as signed")


class PrescriptionOut(ResponseModel):
    id: uuid.UUID
    status: str
    visit_id: uuid.UUID
    patient_id: uuid.UUID
    physician_id: uuid.UUID
    diagnosis_icd10: str
    weight_kg: Decimal | None
    long_term: bool
    guardian: dict[str, Any] | None
    accompanying_physician: dict[str, Any] | None
    items: list[ItemOut]
    jws: str
    kid: str
    signed_at: datetime
    expires_at: datetime
    dispensed_at: datetime | None
    approval_jws: str | None = Field(
        default=None,
        description="The pharmacist's approval (counter-signature) JWS, once approved; verifies with the JWKS",
    )
    replaces_id: uuid.UUID | None = None


VIEWERS = ["patient", "physician", "pharmacist"]


@router.get(
    "/prescriptions/<prescription_id>",
    summary="A prescription and its signature (its patient, its physician, pharmacists)",
    response=PrescriptionOut,
    roles=VIEWERS,
)
def get_prescription(prescription_id: str, principal: Principal) -> PrescriptionOut:
    rx = reads.prescription_for(principal, record_id(prescription_id))
    out = PrescriptionOut.model_validate(rx)
    out.status = rx.status.value
    out.approval_jws = reads.approval_jws(rx.id)
    signed = rx.content.get("items", [])
    for n, it in enumerate(out.items):
        if n < len(signed):
            it.form, it.quantity_unit = signed[n].get("form", ""), signed[n].get("quantity_unit", "")
    if out.guardian:
        out.guardian = {k: v for k, v in out.guardian.items() if k != "id_number_hash"}
    return out


@router.get(
    "/prescriptions/<prescription_id>/document",
    summary="The printable prescription (PDF) with a QR code of its id and signature",
    roles=VIEWERS,
    raw_response="application/pdf",
)
def get_document(prescription_id: str, principal: Principal) -> Response:
    rx = reads.prescription_for(principal, record_id(prescription_id))
    pdf = document.document_for(rx)
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="prescription-{rx.id}.pdf"', "Cache-Control": "no-store"},
    )


class VisitPrescriptionOut(ResponseModel):
    id: uuid.UUID
    status: str
    signed_at: datetime
    items: list[ItemOut]


def visit_prescriptions(visit: Visit) -> list[dict[str, Any]]:
    """GET /visits/{id} lists the visit's prescriptions (the clinic's `visit_extras` hook;
    the factory registers it, the visit's access rule has already been applied)."""
    return [
        VisitPrescriptionOut(
            id=rx.id,
            status=rx.status.value,
            signed_at=rx.signed_at,
            items=[ItemOut.model_validate(i) for i in rx.items],
        ).model_dump(mode="json")
        for rx in reads.visit_prescriptions(visit.id)
    ]
