"""Family-doctor follow-up endpoints of /api/v1 (API.md "Family doctor contracts and
follow-up"): home readings, the plan and its follow-ups, the team's panel and alerts, and
the long-term prescription renewed by the team. Registered with the tag "family_doctor"."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.core.web import localized
from clinic.family_doctor import followups, long_term, readings, rules
from clinic.family_doctor.contract_api import ContractOut, contract_out
from clinic.family_doctor.models import Alert, FollowUp, HomeReading

router = ApiRouter("family_doctor")

PATIENT = ["patient"]
PHYSICIAN = ["physician"]

# --- readings -------------------------------------------------------------------------


class ReadingIn(RequestModel):
    patient_id: uuid.UUID
    kind: Literal["bp", "glucose", "weight"]
    systolic: int | None = None
    diastolic: int | None = None
    glucose_mmol: Decimal | None = Field(default=None, allow_inf_nan=False, max_digits=8, decimal_places=2)
    fasting: bool | None = None
    weight_kg: Decimal | None = Field(default=None, allow_inf_nan=False, max_digits=8, decimal_places=2)
    at: datetime | None = Field(default=None, description="When it was measured (RFC 3339); default now")


class ReadingCreatedOut(ResponseModel):
    id: uuid.UUID
    classification: str
    advice: str
    go_in_person: bool
    team_alerted: bool


@router.post(
    "/readings",
    summary="A home reading (blood pressure, glucose, weight), classified at once; urgent ones alert the team",
    body=ReadingIn,
    response=ReadingCreatedOut,
    status=201,
    roles=PATIENT,
    errors={422: ["out_of_range"]},
)
def add_reading(body: ReadingIn, principal: Principal) -> ReadingCreatedOut:
    result = readings.record_reading(
        principal,
        body.patient_id,
        body.kind,
        systolic=body.systolic,
        diastolic=body.diastolic,
        glucose_mmol=body.glucose_mmol,
        fasting=body.fasting,
        weight_kg=body.weight_kg,
        at=body.at,
    )
    return ReadingCreatedOut(
        id=result.reading.id,
        classification=result.classification.value,
        advice=localized(result.advice),
        go_in_person=result.classification == rules.Classification.URGENT,
        team_alerted=result.alerted,
    )


class ReadingOut(ResponseModel):
    id: uuid.UUID
    kind: str
    systolic: int | None
    diastolic: int | None
    glucose_mmol: Decimal | None
    fasting: bool | None
    weight_kg: Decimal | None
    classification: str
    at: datetime


def reading_out(r: HomeReading) -> ReadingOut:
    return ReadingOut(
        id=r.id,
        kind=r.kind,
        systolic=r.systolic,
        diastolic=r.diastolic,
        glucose_mmol=r.glucose_mmol,
        fasting=r.fasting,
        weight_kg=r.weight_kg,
        classification=r.classification.value,
        at=r.measured_at,
    )


class FollowUpOut(ResponseModel):
    id: uuid.UUID
    due_on: date | None
    done_on: date
    method: str
    classification: str
    note: str
    done_by: uuid.UUID
    next_due: date


class AlertOut(ResponseModel):
    id: uuid.UUID
    reading_id: uuid.UUID
    summary: str
    at: datetime
    acknowledged_at: datetime | None


def alert_out(a: Alert) -> AlertOut:
    return AlertOut(
        id=a.id,
        reading_id=a.reading_id,
        summary=str(a.detail.get("summary", "")),
        at=a.created_at,
        acknowledged_at=a.acknowledged_at,
    )


class PlanOut(ResponseModel):
    patient_id: uuid.UUID
    contract: ContractOut | None
    conditions: list[str]
    next_due: date | None
    overdue: bool
    followups: list[FollowUpOut]
    readings: list[ReadingOut]
    alerts: list[AlertOut]


@router.get(
    "/family-doctor/patients/<patient_id>/plan",
    summary="A patient's follow-up plan: next due date, follow-ups done, recent readings (the patient, or the team)",
    response=PlanOut,
    roles=["patient", "physician"],
)
def plan(patient_id: str, principal: Principal) -> PlanOut:
    view = followups.plan_for(principal, record_id(patient_id))
    return PlanOut(
        patient_id=view.patient.id,
        contract=contract_out(view.contract) if view.contract else None,
        conditions=view.plan.conditions if view.plan else [],
        next_due=view.plan.next_due if view.plan else None,
        overdue=view.overdue,
        followups=[followup_out(f) for f in view.followups],
        readings=[reading_out(r) for r in view.readings],
        alerts=[alert_out(a) for a in view.alerts],
    )


def followup_out(f: FollowUp) -> FollowUpOut:
    return FollowUpOut(
        id=f.id,
        due_on=f.due_on,
        done_on=f.done_on,
        method=f.method,
        classification=f.classification.value,
        note=f.note,
        done_by=f.done_by,
        next_due=f.next_due,
    )


class FollowUpIn(RequestModel):
    method: Literal["online", "phone", "in_person"]
    classification: Literal["controlled", "uncontrolled", "urgent"]
    note: str = Field(default="", max_length=4000)


@router.post(
    "/family-doctor/patients/<patient_id>/followups",
    summary="The team records a follow-up; the next one falls due 3 months (controlled) or 2 weeks later",
    body=FollowUpIn,
    response=FollowUpOut,
    status=201,
    roles=PHYSICIAN,
    errors={422: ["no_plan"]},
)
def add_followup(patient_id: str, body: FollowUpIn, principal: Principal) -> FollowUpOut:
    f = followups.record_followup(principal, record_id(patient_id), body.method, body.classification, body.note)
    return followup_out(f)


# --- the team's panel -----------------------------------------------------------------


class PanelRowOut(ResponseModel):
    patient_id: uuid.UUID
    patient_name: str
    contract: ContractOut
    next_due: date | None
    overdue: bool
    open_alerts: list[AlertOut]
    last_reading: ReadingOut | None


class PanelOut(ResponseModel):
    items: list[PanelRowOut]


@router.get(
    "/family-doctor/panel",
    summary="The physician's teams' contracted patients: open urgent alerts first, then overdue follow-ups",
    response=PanelOut,
    roles=PHYSICIAN,
)
def panel(principal: Principal) -> PanelOut:
    rows = followups.panel(principal)
    return PanelOut(
        items=[
            PanelRowOut(
                patient_id=r.contract.patient_id,
                patient_name=r.contract.patient.name,
                contract=contract_out(r.contract),
                next_due=r.plan.next_due if r.plan else None,
                overdue=r.overdue,
                open_alerts=[alert_out(a) for a in r.open_alerts],
                last_reading=reading_out(r.last_reading) if r.last_reading else None,
            )
            for r in rows
        ]
    )


@router.post(
    "/family-doctor/alerts/<alert_id>/acknowledge",
    summary="Someone on the team has seen an urgent reading and acted on it",
    response=AlertOut,
    roles=PHYSICIAN,
)
def acknowledge(alert_id: str, principal: Principal) -> AlertOut:
    return alert_out(readings.acknowledge_alert(principal, record_id(alert_id)))


# --- long-term prescription renewal -----------------------------------------------------


class RenewalIn(RequestModel):
    visit_id: uuid.UUID


class RenewedOut(ResponseModel):
    id: uuid.UUID
    status: str
    jws: str
    long_term: bool


@router.post(
    "/family-doctor/patients/<patient_id>/long-term-renewal",
    summary="The team's physician renews the last long-term prescription (up to 12 weeks) in a visit they "
    "accepted; every prescription rule runs again",
    body=RenewalIn,
    response=RenewedOut,
    status=201,
    roles=PHYSICIAN,
    errors={
        403: ["face_verification_required"],
        422: ["no_previous_prescription", "not_long_term", "not_stable", "prescription_rejected"],
    },
)
def renew_long_term(patient_id: str, body: RenewalIn, principal: Principal) -> RenewedOut:
    rx = long_term.renew_long_term(principal, record_id(patient_id), body.visit_id)
    return RenewedOut(id=rx.id, status=rx.status.value, jws=rx.jws, long_term=rx.long_term)
