"""Family-doctor contracts and follow-ups (CarePlan) and home readings (Observation) for
the regulators' FHIR interface, de-identified unless the scope allows identity.

- CarePlan, one per contract: status from the contract's, `period` its term, `author`
  the lead physician who countersigned, the agreement version and sha256 and how it
  ended in extensions; one `activity` per follow-up done (completed) and one for the next
  due date (scheduled). Its window time is the signing time.
- Observation, one per home reading: vital-signs (blood pressure as a panel with systolic
  and diastolic components, body weight) or laboratory (glucose), LOINC-coded, UCUM
  units, the classification as `interpretation` (urgent readings: critical high/low).
  Its window time is when it was measured.
Patients are referenced through `FhirContext.patient_ref`, which is a keyed pseudonym
unless the regulator's token carries read:identified; no name or ID number is written.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.observation import Observation
from sqlalchemy import Select, select

from clinic.family_doctor.models import Contract, FollowUp, FollowUpPlan, HomeReading
from clinic.family_doctor.rules import Classification, ContractStatus
from clinic.regulator import fhir as base

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SYS_CONTRACT = "urn:clinic:identifier:family-doctor-contract"
SYS_READING_CLASS = "urn:clinic:family-doctor-reading-class"
EXT_AGREEMENT = "urn:clinic:fhir:family-doctor-agreement"
EXT_CONTRACT_STATUS = "urn:clinic:fhir:family-doctor-contract-status"
EXT_END = "urn:clinic:fhir:family-doctor-contract-end"
EXT_PACKAGE = "urn:clinic:fhir:family-doctor-package"

CAREPLAN_STATUS = {
    ContractStatus.PENDING: "draft",
    ContractStatus.ACTIVE: "active",
    ContractStatus.ENDED: "revoked",
    ContractStatus.EXPIRED: "completed",
    ContractStatus.DECLINED: "revoked",
}


def _careplans(ctx: base.FhirContext) -> Select[Any]:
    w = ctx.window
    return (
        select(Contract)
        .where(Contract.signed_at >= w.since, Contract.signed_at < w.until)
        .order_by(Contract.signed_at, Contract.id)
    )


def care_plan(c: Contract, ctx: base.FhirContext) -> CarePlan:
    plan = ctx.session.scalars(select(FollowUpPlan).where(FollowUpPlan.contract_id == c.id)).first()
    followups = (
        list(ctx.session.scalars(select(FollowUp).where(FollowUp.plan_id == plan.id).order_by(FollowUp.done_on)))
        if plan
        else []
    )
    activities: list[dict[str, Any]] = [
        {
            "detail": {
                "kind": "Appointment",
                "code": {"text": f"follow-up ({f.method})"},
                "status": "completed",
                "scheduledString": f.done_on.isoformat(),
                "performer": [ctx.practitioner_ref(f.done_by)],
                "description": f"classification: {f.classification.value}",
            }
        }
        for f in followups
    ]
    if plan is not None and plan.active and plan.next_due is not None:
        activities.append(
            {
                "detail": {
                    "kind": "Appointment",
                    "code": {"text": "follow-up"},
                    "status": "scheduled",
                    "scheduledString": plan.next_due.isoformat(),
                }
            }
        )
    extensions: list[dict[str, Any]] = [
        {"url": EXT_CONTRACT_STATUS, "valueCode": c.status.value},
        {
            "url": EXT_AGREEMENT,
            "extension": [
                {"url": "version", "valueString": c.agreement_version},
                {"url": "sha256", "valueString": c.agreement_sha256},
                {"url": "signedAt", "valueDateTime": base.instant(c.signed_at)},
            ],
        },
        {"url": EXT_PACKAGE, "valueString": c.package.name},
    ]
    if c.ended_at is not None:
        extensions.append(
            {
                "url": EXT_END,
                "extension": [
                    {"url": "side", "valueCode": c.ended_side or "unknown"},
                    {"url": "reason", "valueString": c.end_reason or ""},
                    {"url": "endedAt", "valueDateTime": base.instant(c.ended_at)},
                ],
            }
        )
    conditions = plan.conditions if plan else list(c.package.conditions)
    data: dict[str, Any] = {
        "id": str(c.id),
        "extension": extensions,
        "identifier": [{"system": SYS_CONTRACT, "value": str(c.id)}],
        "status": CAREPLAN_STATUS[c.status],
        "intent": "plan",
        "category": [{"text": "“互联网+”家庭医生签约服务 family doctor contract"}],
        "title": c.team.name,
        "description": "Follow-up of "
        + (", ".join(conditions) or "basic services")
        + " under the National Basic Public Health Service Standard (3rd edition)",
        "subject": ctx.patient_ref(c.patient_id),
        "period": {"start": base.day(c.valid_from), "end": base.day(c.valid_until)} if c.valid_from else None,
        "created": base.instant(c.signed_at),
        "author": ctx.practitioner_ref(c.countersigned_by) if c.countersigned_by else None,
        "careTeam": None,
        "activity": activities or None,
        "note": [{"text": f"ICD-10 followed: {code}"} for code in conditions] or None,
    }
    return CarePlan.model_validate(base._clean(data))


def _observations(ctx: base.FhirContext) -> Select[Any]:
    w = ctx.window
    return (
        select(HomeReading)
        .where(HomeReading.measured_at >= w.since, HomeReading.measured_at < w.until)
        .order_by(HomeReading.measured_at, HomeReading.id)
    )


def _quantity(value: Decimal | int, unit: str, code: str) -> dict[str, Any]:
    return {"value": Decimal(value), "unit": unit, "system": UCUM, "code": code}


def _interpretation(r: HomeReading) -> list[dict[str, Any]]:
    if r.classification == Classification.CONTROLLED:
        code, display = "N", "Normal"
    elif r.classification == Classification.URGENT:
        low = r.kind == "glucose" and r.glucose_mmol is not None and r.glucose_mmol <= Decimal("3.9")
        code, display = ("LL", "Critical low") if low else ("HH", "Critical high")
    else:
        code, display = "H", "High"
    return [
        {
            "coding": [
                {"system": INTERPRETATION, "code": code, "display": display},
                {"system": SYS_READING_CLASS, "code": r.classification.value},
            ]
        }
    ]


def observation(r: HomeReading, ctx: base.FhirContext) -> Observation:
    data: dict[str, Any] = {
        "id": str(r.id),
        "status": "final",
        "subject": ctx.patient_ref(r.patient_id),
        "effectiveDateTime": base.instant(r.measured_at),
        "issued": base.instant(r.created_at),
        "method": {"text": "home measurement entered by the patient"},
        "interpretation": _interpretation(r),
    }
    vital = {"coding": [{"system": OBS_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}
    if r.kind == "bp":
        data["category"] = [vital]
        data["code"] = {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]}
        data["component"] = [
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
                "valueQuantity": _quantity(r.systolic or 0, "mmHg", "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
                "valueQuantity": _quantity(r.diastolic or 0, "mmHg", "mm[Hg]"),
            },
        ]
    elif r.kind == "glucose":
        data["category"] = [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}]
        code, display = (
            ("14771-0", "Fasting glucose [Moles/volume] in Serum or Plasma")
            if r.fasting
            else ("15074-8", "Glucose [Moles/volume] in Blood")
        )
        data["code"] = {"coding": [{"system": LOINC, "code": code, "display": display}]}
        data["valueQuantity"] = _quantity(r.glucose_mmol or 0, "mmol/L", "mmol/L")
    else:
        data["category"] = [vital]
        data["code"] = {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]}
        data["valueQuantity"] = _quantity(r.weight_kg or 0, "kg", "kg")
    return Observation.model_validate(base._clean(data))


def register() -> None:
    """Called by the app factory: CarePlan (contracts, follow-ups) and Observation (readings)."""
    base.register_resource("CarePlan", base.QuerySource(_careplans, care_plan))
    base.register_resource("Observation", base.QuerySource(_observations, observation))
