"""Home readings (blood pressure, glucose, weight): recorded by the patient, classified by
the rules, moving the plan's next follow-up, and alerting the team of an urgent one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Invalid, NotFound, RuleRefusal
from clinic.core.principal import Principal
from clinic.family_doctor import rules
from clinic.family_doctor.contracts import (
    active_plan,
    contract_in_force,
)
from clinic.family_doctor.models import (
    Alert,
    Contract,
    HomeReading,
)
from clinic.family_doctor.rules import Classification
from clinic.family_doctor.services import (
    CHINA,
    get_team,
    is_team_physician,
    team_physician_ids,
)
from identity import services as identity
from identity.models import Patient
from identity.rules import age_years


class OutOfRange(RuleRefusal):
    pass


# --- home readings --------------------------------------------------------------------


@dataclass(frozen=True)
class ReadingResult:
    reading: HomeReading
    classification: Classification
    advice: str
    alerted: bool


def record_reading(
    who: Principal,
    patient_id: uuid.UUID,
    kind: str,
    *,
    systolic: int | None = None,
    diastolic: int | None = None,
    glucose_mmol: Decimal | None = None,
    fasting: bool | None = None,
    weight_kg: Decimal | None = None,
    at: datetime | None = None,
) -> ReadingResult:
    session = db.session()
    patient = identity.patient_of_account(identity.get_account(who.account_id), patient_id)
    value = rules.Reading(kind, systolic, diastolic, glucose_mmol, fasting, weight_kg)
    violations = rules.reading_violations(value)
    if violations:
        code = "out_of_range" if any(v.code == "out_of_range" for v in violations) else "invalid"
        raise OutOfRange(code, violations)
    measured = at or utcnow()
    if measured.tzinfo is None:
        raise Invalid(
            "The time of the reading needs a time zone (RFC 3339).", fields=[{"loc": "at", "message": "naive"}]
        )
    if measured > utcnow():
        raise Invalid("A reading cannot be taken in the future.", fields=[{"loc": "at", "message": "future"}])
    day = measured.astimezone(CHINA).date()
    found = rules.classify(value, age_years(patient.birth_date, day))
    contract = contract_in_force(patient.id)
    reading = HomeReading(
        patient_id=patient.id,
        account_id=who.account_id,
        contract_id=contract.id if contract else None,
        kind=kind,
        systolic=systolic if kind == "bp" else None,
        diastolic=diastolic if kind == "bp" else None,
        glucose_mmol=glucose_mmol if kind == "glucose" else None,
        fasting=fasting if kind == "glucose" else None,
        weight_kg=weight_kg if kind == "weight" else None,
        classification=found,
        measured_at=measured,
    )
    session.add(reading)
    session.flush()
    alerted = False
    if contract is not None:  # pending or active: the team is told of an urgent reading either way
        plan = active_plan(patient.id)
        if plan is not None and kind != "weight":
            plan.next_due = rules.due_after_reading(plan.next_due, day, found)
        if found == Classification.URGENT:
            session.add(
                Alert(
                    team_id=contract.team_id,
                    patient_id=patient.id,
                    reading_id=reading.id,
                    detail={"kind": kind, "summary": reading_summary(reading)},
                )
            )
            _alert_team(contract, patient, reading)
            alerted = True
    audit.record(
        session,
        "fd.reading_urgent" if found == Classification.URGENT else "fd.reading_recorded",
        subject_type="patient",
        subject_id=patient.id,
        detail={"reading": str(reading.id), "kind": kind, "classification": found.value, "team_alerted": alerted},
    )
    session.flush()
    return ReadingResult(reading, found, rules.ADVICE[found], alerted)


def reading_summary(r: HomeReading) -> str:
    if r.kind == "bp":
        return f"{r.systolic}/{r.diastolic} mmHg"
    if r.kind == "glucose":
        return f"{r.glucose_mmol} mmol/L"
    return f"{r.weight_kg} kg"


def acknowledge_alert(who: Principal, alert_id: uuid.UUID) -> Alert:
    alert = db.session.get(Alert, alert_id)
    if alert is None or not is_team_physician(who, get_team(alert.team_id)):
        raise NotFound()
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = utcnow(), who.account_id
        audit.record(db.session(), "fd.alert_acknowledged", subject_type="fd_alert", subject_id=alert.id)
    return alert


def _alert_team(contract: Contract, patient: Patient, reading: HomeReading) -> None:
    """Tell the team's physicians of an urgent reading (in the app; the lead also by SMS)."""
    from clinic.notifications.services import notify

    for account_id in sorted(team_physician_ids(contract.team), key=lambda a: a != contract.team.lead_id):
        notify(
            db.session(),
            account_id=account_id,
            kind="fd_urgent_reading",
            link=f"/family-doctor/team/patients/{patient.id}",
            subject_type="fd_reading",
            subject_id=reading.id,
            sms=account_id == contract.team.lead_id,
            name=patient.name,
            summary=reading_summary(reading),
        )
