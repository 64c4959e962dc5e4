"""Follow-up of contracted patients: the plan as the patient and the team see it, a
follow-up recorded by the team's physician, the team's panel (urgent first, then overdue),
and the daily SMS reminders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db
from clinic.core.errors import Invalid, NotFound
from clinic.core.principal import Principal
from clinic.family_doctor import rules
from clinic.family_doctor.contracts import (
    active_plan,
    expire_lapsed,
    person_for,
)
from clinic.family_doctor.models import (
    Alert,
    Contract,
    FollowUp,
    FollowUpPlan,
    HomeReading,
    Reminder,
)
from clinic.family_doctor.rules import Classification
from clinic.family_doctor.services import (
    teams_of,
    today,
)
from identity.models import Patient, Role


@dataclass(frozen=True)
class PlanView:
    patient: Patient
    contract: Contract | None
    plan: FollowUpPlan | None
    followups: list[FollowUp]
    readings: list[HomeReading]
    alerts: list[Alert]

    @property
    def overdue(self) -> bool:
        return self.plan is not None and rules.is_overdue(self.plan.next_due, today())


def plan_for(who: Principal, patient_id: uuid.UUID, readings: int = 30) -> PlanView:
    patient, contract = person_for(who, patient_id)
    plan = active_plan(patient.id)
    followups = (
        list(db.session.scalars(select(FollowUp).where(FollowUp.plan_id == plan.id).order_by(FollowUp.done_on.desc())))
        if plan
        else []
    )
    rows = list(
        db.session.scalars(
            select(HomeReading)
            .where(HomeReading.patient_id == patient.id)
            .order_by(HomeReading.measured_at.desc())
            .limit(readings)
        )
    )
    alerts = list(
        db.session.scalars(
            select(Alert).where(Alert.patient_id == patient.id).order_by(Alert.created_at.desc()).limit(10)
        )
    )
    return PlanView(patient, contract, plan, followups, rows, alerts)


def record_followup(
    who: Principal, patient_id: uuid.UUID, method: str, classification: str, note: str = ""
) -> FollowUp:
    session = db.session()
    patient, contract = person_for(who, patient_id)
    if who.role != Role.PHYSICIAN:
        raise NotFound()
    plan = active_plan(patient.id)
    if plan is None:
        raise Invalid("This patient has no follow-up plan.", code="no_plan")
    if method not in ("online", "phone", "in_person"):
        raise Invalid("A follow-up is online, by phone or in person.", fields=[{"loc": "method", "message": "invalid"}])
    try:
        found = Classification(classification)
    except ValueError:
        raise Invalid(
            "The finding is controlled, uncontrolled or urgent.",
            fields=[{"loc": "classification", "message": "invalid"}],
        ) from None
    day = today()
    nxt = rules.next_due_after_followup(day, found)
    followup = FollowUp(
        plan_id=plan.id,
        due_on=plan.next_due,
        done_on=day,
        method=method,
        classification=found,
        note=note.strip(),
        done_by=who.account_id,
        next_due=nxt,
    )
    session.add(followup)
    plan.next_due = nxt
    session.flush()
    audit.record(
        session,
        "fd.followup_recorded",
        subject_type="fd_plan",
        subject_id=plan.id,
        detail={"classification": found.value, "method": method, "next_due": nxt.isoformat()},
    )
    return followup


# --- the team's panel -----------------------------------------------------------------


@dataclass(frozen=True)
class PanelRow:
    contract: Contract
    plan: FollowUpPlan | None
    open_alerts: list[Alert]
    last_reading: HomeReading | None

    @property
    def overdue(self) -> bool:
        return self.plan is not None and self.plan.active and rules.is_overdue(self.plan.next_due, today())

    @property
    def sort_key(self) -> tuple[int, int, date, str]:
        due = self.plan.next_due if self.plan and self.plan.next_due else date.max
        return (0 if self.open_alerts else 1, 0 if self.overdue else 1, due, self.contract.patient.name)


def panel(who: Principal) -> list[PanelRow]:
    """The contracts of the physician's teams: urgent alerts first, then overdue, then by due date."""
    teams = teams_of(who.account_id)
    if not teams:
        return []
    team_ids = [t.id for t in teams]
    contracts = list(
        db.session.scalars(
            select(Contract).where(Contract.team_id.in_(team_ids), Contract.status.in_(rules.IN_FORCE))
        ).unique()
    )
    pids = [c.patient_id for c in contracts]
    plans = {
        p.patient_id: p
        for p in db.session.scalars(select(FollowUpPlan).where(FollowUpPlan.patient_id.in_(pids), FollowUpPlan.active))
    }
    alerts: dict[uuid.UUID, list[Alert]] = {}
    for a in db.session.scalars(
        select(Alert)
        .where(Alert.team_id.in_(team_ids), Alert.acknowledged_at.is_(None))
        .order_by(Alert.created_at.desc())
    ):
        alerts.setdefault(a.patient_id, []).append(a)
    last: dict[uuid.UUID, HomeReading] = {}
    for r in db.session.scalars(
        select(HomeReading).where(HomeReading.patient_id.in_(pids)).order_by(HomeReading.measured_at.desc()).limit(2000)
    ):
        last.setdefault(r.patient_id, r)
    rows = [
        PanelRow(c, plans.get(c.patient_id), alerts.get(c.patient_id, []), last.get(c.patient_id)) for c in contracts
    ]
    return sorted(rows, key=lambda r: r.sort_key)


def overdue(who: Principal) -> list[PanelRow]:
    return [r for r in panel(who) if r.overdue]


# --- SMS reminders (the daily job) -----------------------------------------------------


@dataclass(frozen=True)
class ReminderRun:
    """What a day's run did: contracts closed as lapsed, reminders sent 3 days before and on the day."""

    expired: int
    before: int
    due_day: int


def send_reminders(day: date) -> ReminderRun:
    """Remind every active plan's patient 3 days before and on its due date, once each, through
    the notification kernel (in the app, and by SMS through the outbox after the commit)."""
    from clinic.notifications.services import notify

    session = db.session()
    expired = expire_lapsed(day)
    sent = {"before": 0, "due_day": 0}
    plans = db.session.scalars(
        select(FollowUpPlan).where(
            FollowUpPlan.active,
            FollowUpPlan.next_due.in_([day, day + timedelta(days=rules.REMIND_DAYS_BEFORE)]),
        )
    ).all()
    for plan in plans:
        assert plan.next_due is not None
        kind = rules.reminder_kind(plan.next_due, day)
        if kind is None:
            continue
        done = session.scalars(
            select(Reminder.id).where(
                Reminder.plan_id == plan.id, Reminder.due_on == plan.next_due, Reminder.kind == kind
            )
        ).first()
        if done is not None:
            continue
        patient = db.session.get(Patient, plan.patient_id)
        assert patient is not None
        note = notify(
            session,
            account_id=patient.account_id,
            kind=f"fd_followup_{kind}",
            link=f"/family-doctor/people/{patient.id}",
            subject_type="fd_plan",
            subject_id=plan.id,
            name=patient.name,
            due=plan.next_due.isoformat(),
        )
        sent[kind] += 1
        session.add(
            Reminder(plan_id=plan.id, due_on=plan.next_due, kind=kind, notification_id=note.id if note else None)
        )
        audit.record(
            session,
            "fd.reminder_sent",
            subject_type="fd_plan",
            subject_id=plan.id,
            detail={"kind": kind, "due": plan.next_due.isoformat()},
        )
    session.flush()
    return ReminderRun(expired=expired, before=sent["before"], due_day=sent["due_day"])
