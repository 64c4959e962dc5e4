"""Family-doctor use cases. Each loads, applies the pure rules, changes state, audits,
enqueues, flushes; never commits (the request, CLI command or job is the commit point)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from clinic.core import audit
from clinic.core.db import as_uuid, db, utcnow
from clinic.core.errors import Conflict, Forbidden, Invalid, NotFound, RuleRefusal
from clinic.core.principal import Principal
from clinic.core.versioned_text import TextShelf, VersionedText
from clinic.family_doctor import rules
from clinic.family_doctor.models import (
    Alert,
    Contract,
    FollowUp,
    FollowUpPlan,
    HomeReading,
    MemberRole,
    Reminder,
    ServicePackage,
    Team,
    TeamMember,
)
from clinic.family_doctor.rules import N_, Classification, ContractEvent, ContractStatus
from clinic.visits.models import Diagnosis, DiagnosisStatus
from identity import services as identity
from identity.models import Account, Institution, Patient, Role

CHINA = ZoneInfo("Asia/Shanghai")  # contract terms and follow-up dates are Beijing dates


def today() -> date:
    return utcnow().astimezone(CHINA).date()


# --- refusals -------------------------------------------------------------------------


class NotPrimaryCare(Invalid):
    code = "not_primary_care"
    default_message = N_(
        "This institution is not a primary-care institution (基层医疗卫生机构) and does not offer "
        "family-doctor contracts."
    )


class StaleAgreement(Invalid):
    code = "stale_version"


class ContractExists(Conflict):
    code = "contract_exists"
    default_message = N_("This person already has a family-doctor contract in force (one team at a time).")


class ContractNotOpen(Conflict):
    code = "contract_not_open"


class NotTeamLead(Forbidden):
    code = "not_team_lead"
    default_message = N_("Only the team's lead physician countersigns its contracts.")


class RenewalNotOpen(Invalid):
    code = "renewal_not_open"


class OutOfRange(RuleRefusal):
    pass


# --- the institution's level ----------------------------------------------------------


def institution_level() -> str:
    inst = db.session.get(Institution, 1)
    return inst.level if inst is not None else ""


def offers_signing() -> bool:
    return rules.offers_signing(institution_level())


def set_institution_level(level: str) -> Institution:
    if level not in rules.LEVELS:
        raise Invalid(
            "The level must be one of 三级, 二级, 一级, 基层.", fields=[{"loc": "level", "message": "invalid"}]
        )
    inst = identity.institution()
    before = inst.level
    inst.level = level
    audit.record(
        db.session(),
        "institution.level_set",
        subject_type="institution",
        subject_id=inst.id,
        detail={"from": before, "to": level},
    )
    return inst


# --- teams and packages ---------------------------------------------------------------


def _physician(account_id: str | uuid.UUID) -> Account:
    account = db.session.get(Account, as_uuid(account_id)) if as_uuid(account_id) else None
    if account is None or account.role != Role.PHYSICIAN:
        raise Invalid("The lead of a team must be a physician of this clinic.", code="invalid")
    return account


@dataclass(frozen=True)
class MemberSpec:
    name: str
    role: str  # physician | nurse | public_health
    account_id: str | None = None


def create_team(name: str, lead_id: str | uuid.UUID, members: list[MemberSpec] | None = None) -> Team:
    session = db.session()
    name = name.strip()
    if not name:
        raise Invalid("A team needs a name.", fields=[{"loc": "name", "message": "required"}])
    lead = _physician(lead_id)
    team = Team(name=name, lead_id=lead.id)
    session.add(team)
    session.flush()
    for spec in members or []:
        add_member(team, spec)
    audit.record(
        session,
        "fd.team_created",
        subject_type="fd_team",
        subject_id=team.id,
        detail={"name": name, "lead": str(lead.id)},
    )
    return team


def add_member(team: Team, spec: MemberSpec) -> TeamMember:
    session = db.session()
    try:
        role = MemberRole(spec.role)
    except ValueError:
        raise Invalid("A member's role is physician, nurse or public_health.") from None
    account_id = None
    name = spec.name.strip()
    if role == MemberRole.PHYSICIAN:
        physician = _physician(spec.account_id or "")
        account_id, name = physician.id, name or physician.display_name
    if not name:
        raise Invalid("A member needs a name.", fields=[{"loc": "name", "message": "required"}])
    member = TeamMember(team_id=team.id, account_id=account_id, name=name, role=role)
    session.add(member)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("Someone of that name is already on the team.", code="already_member") from None
    audit.record(
        session,
        "fd.member_added",
        subject_type="fd_team",
        subject_id=team.id,
        detail={"role": role.value, "account": str(account_id) if account_id else None},
    )
    return member


def create_package(
    team_id: str | uuid.UUID, name: str, conditions: list[str], includes: str, fee_fen: int
) -> ServicePackage:
    session = db.session()
    team = get_team(team_id)
    name = name.strip()
    if not name:
        raise Invalid("A package needs a name.", fields=[{"loc": "name", "message": "required"}])
    if fee_fen < 0:
        raise Invalid("A fee cannot be negative.", fields=[{"loc": "fee_fen", "message": "negative"}])
    codes = [c.strip().upper() for c in conditions if c.strip()]
    unknown = [c for c in codes if c not in rules.FOLLOWED_CONDITIONS]
    if unknown:
        raise Invalid(
            "A chronic-disease package is for I10 (hypertension) or E11 (type 2 diabetes).",
            fields=[{"loc": "conditions", "message": "unknown"}],
        )
    package = ServicePackage(team_id=team.id, name=name, conditions=codes, includes=includes.strip(), fee_fen=fee_fen)
    session.add(package)
    session.flush()
    audit.record(
        session,
        "fd.package_created",
        subject_type="fd_package",
        subject_id=package.id,
        detail={"team": str(team.id), "name": name, "conditions": codes, "fee_fen": fee_fen},
    )
    return package


def get_team(team_id: str | uuid.UUID) -> Team:
    key = as_uuid(team_id)
    team = db.session.get(Team, key) if key else None
    if team is None or not team.active:
        raise NotFound("No such family-doctor team.")
    return team


def list_teams() -> list[Team]:
    return list(db.session.scalars(select(Team).where(Team.active).order_by(Team.created_at)).unique())


def team_physician_ids(team: Team) -> set[uuid.UUID]:
    return {team.lead_id} | {m.account_id for m in team.members if m.account_id is not None}


def teams_of(physician_id: uuid.UUID) -> list[Team]:
    return [t for t in list_teams() if physician_id in team_physician_ids(t)]


# --- the agreement --------------------------------------------------------------------

AGREEMENT_DIR = Path(__file__).resolve().parent / "agreement"


_agreements = TextShelf(AGREEMENT_DIR)


def current_agreement() -> VersionedText:
    """The newest version shipped with the code (a new version is a new file and a deploy)."""
    return _agreements.current()


def _require_current(version: str) -> VersionedText:
    current = current_agreement()
    if version != current.version:
        raise StaleAgreement(
            N_("The agreement text has changed; read and sign the current version %(version)s."),
            params={"version": current.version},
            current_version=current.version,
        )
    return current


# --- contracts ------------------------------------------------------------------------


def _contract_in_force(patient_id: uuid.UUID) -> Contract | None:
    """The person's pending or active contract (a lapsed one is closed first)."""
    return db.session.scalars(
        select(Contract).where(Contract.patient_id == patient_id, Contract.status.in_(rules.IN_FORCE))
    ).first()


def _expire_if_lapsed(contract: Contract | None, day: date) -> Contract | None:
    if contract is None or rules.in_force_on(contract.status, contract.valid_until, day):
        return contract
    contract.status = rules.transition(contract.status, ContractEvent.EXPIRE)
    _deactivate_plan(contract.id)
    audit.record(db.session(), "fd.contract_expired", subject_type="fd_contract", subject_id=contract.id)
    db.session.flush()
    return None


def contract_in_force(patient_id: uuid.UUID) -> Contract | None:
    return _expire_if_lapsed(_contract_in_force(patient_id), today())


def sign_contract(account: Account, patient_id: str, team_id: str, package_id: str, agreement_version: str) -> Contract:
    session = db.session()
    patient = identity.patient_of_account(account, patient_id)
    if not offers_signing():
        raise NotPrimaryCare()
    agreement = _require_current(agreement_version)
    team = get_team(team_id)
    package = next((p for p in team.packages if str(p.id) == str(package_id) and p.active), None)
    if package is None:
        raise Invalid(
            "The service package is not one of this team's.", fields=[{"loc": "package_id", "message": "unknown"}]
        )
    existing = contract_in_force(patient.id)
    if existing is not None:
        raise ContractExists(contract_id=str(existing.id))
    contract = Contract(
        patient_id=patient.id,
        account_id=account.id,
        team_id=team.id,
        package_id=package.id,
        status=ContractStatus.PENDING,
        agreement_version=agreement.version,
        agreement_sha256=agreement.sha256,
        fee_fen=package.fee_fen,
        signed_at=utcnow(),
        client_ip=audit.current_actor().client_ip,
    )
    session.add(contract)
    try:
        session.flush()
    except IntegrityError:
        # Another signing for this person committed between our check and our insert: the
        # partial unique index (one contract in force per person) refused this one.
        raise ContractExists() from None
    audit.record(
        session,
        "fd.contract_signed",
        subject_type="fd_contract",
        subject_id=contract.id,
        detail={
            "patient": str(patient.id),
            "team": str(team.id),
            "package": str(package.id),
            "agreement_version": agreement.version,
            "agreement_sha256": agreement.sha256,
        },
    )
    return contract


def _load_contract(contract_id: str) -> Contract:
    key = as_uuid(contract_id)
    contract = db.session.get(Contract, key) if key else None
    if contract is None:
        raise NotFound()
    return contract


def _is_team_physician(account: Account, team: Team) -> bool:
    return account.role == Role.PHYSICIAN and account.id in team_physician_ids(team)


def contract_for(account: Account, contract_id: str) -> Contract:
    """A contract the caller may see: the account's people's, or their team's; else 404."""
    contract = _load_contract(contract_id)
    if account.role == Role.PATIENT and contract.patient.account_id == account.id:
        return contract
    if _is_team_physician(account, contract.team):
        return contract
    raise NotFound()


def contracts_of(account: Account) -> list[Contract]:
    ids = [p.id for p in account.patients]
    return list(
        db.session.scalars(select(Contract).where(Contract.patient_id.in_(ids)).order_by(Contract.signed_at.desc()))
    )


def _move(contract: Contract, event: ContractEvent) -> None:
    try:
        contract.status = rules.transition(contract.status, event)
    except rules.IllegalContractMove:
        raise ContractNotOpen(
            N_("This contract is %(status)s; it cannot be changed that way."), params={"status": contract.status.value}
        ) from None


def countersign(physician: Account, contract_id: str) -> Contract:
    session = db.session()
    contract = contract_for(physician, contract_id)
    if contract.team.lead_id != physician.id:
        raise NotTeamLead()
    identity.require_qualified_physician(physician)
    _move(contract, ContractEvent.COUNTERSIGN)
    contract.countersigned_by, contract.countersigned_at = physician.id, utcnow()
    contract.valid_from, contract.valid_until = rules.contract_term(today())
    session.flush()
    plan = _open_plan(contract)
    audit.record(
        session,
        "fd.contract_countersigned",
        subject_type="fd_contract",
        subject_id=contract.id,
        detail={
            "valid_from": contract.valid_from.isoformat(),
            "valid_until": contract.valid_until.isoformat(),
            "plan": str(plan.id) if plan else None,
        },
    )
    return contract


def end_contract(account: Account, contract_id: str, reason: str) -> Contract:
    session = db.session()
    contract = contract_for(account, contract_id)
    reason = reason.strip()
    if not reason:
        raise Invalid("Say why the contract ends.", fields=[{"loc": "reason", "message": "required"}])
    _move(contract, ContractEvent.END)
    contract.ended_at, contract.ended_by, contract.end_reason = utcnow(), account.id, reason
    contract.ended_side = "patient" if account.role == Role.PATIENT else "team"
    _deactivate_plan(contract.id)
    audit.record(
        session,
        "fd.contract_ended",
        subject_type="fd_contract",
        subject_id=contract.id,
        detail={"side": contract.ended_side, "reason": reason},
    )
    return contract


def renew_contract(account: Account, contract_id: str, agreement_version: str) -> Contract:
    """The patient renews for another year, signing the current agreement text again."""
    session = db.session()
    contract = contract_for(account, contract_id)
    if account.role != Role.PATIENT:
        raise Forbidden("The patient renews the contract (the team may end it instead).")
    if not offers_signing():
        raise NotPrimaryCare()
    agreement = _require_current(agreement_version)
    if contract.status != ContractStatus.ACTIVE or contract.valid_until is None:
        raise ContractNotOpen(
            N_("This contract is %(status)s; only an active contract is renewed."),
            params={"status": contract.status.value},
        )
    term = rules.renewal_term(contract.valid_until, today())
    if term is None:
        raise RenewalNotOpen(
            N_("Renewal opens %(days)s days before the contract ends."), params={"days": rules.RENEW_WINDOW_DAYS}
        )
    before = contract.valid_until
    _move(contract, ContractEvent.RENEW)
    contract.valid_until = term[1]
    contract.agreement_version, contract.agreement_sha256 = agreement.version, agreement.sha256
    contract.renewed_at, contract.renewals = utcnow(), contract.renewals + 1
    plan = _plan_of(contract.id)
    if plan is not None:
        plan.active = True
    else:
        _open_plan(contract)
    audit.record(
        session,
        "fd.contract_renewed",
        subject_type="fd_contract",
        subject_id=contract.id,
        detail={
            "from": before.isoformat(),
            "valid_until": term[1].isoformat(),
            "agreement_version": agreement.version,
            "agreement_sha256": agreement.sha256,
        },
    )
    return contract


def expire_lapsed(day: date) -> int:
    """Close every active contract whose year has run out (the daily job)."""
    rows = db.session.scalars(
        select(Contract).where(Contract.status == ContractStatus.ACTIVE, Contract.valid_until < day)
    ).all()
    for contract in rows:
        _expire_if_lapsed(contract, day)
    return len(rows)


# --- follow-up plans ------------------------------------------------------------------


def _confirmed_codes(patient_id: uuid.UUID) -> list[str]:
    rows = db.session.scalars(
        select(Diagnosis.condition_code).where(
            Diagnosis.patient_id == patient_id, Diagnosis.status == DiagnosisStatus.CONFIRMED
        )
    )
    return [code for code in rows if code]


def _plan_of(contract_id: uuid.UUID) -> FollowUpPlan | None:
    return db.session.scalars(select(FollowUpPlan).where(FollowUpPlan.contract_id == contract_id)).first()


def _open_plan(contract: Contract) -> FollowUpPlan | None:
    """A plan for a contracted patient with confirmed hypertension and/or type 2 diabetes."""
    conditions = rules.followed_conditions(_confirmed_codes(contract.patient_id))
    if not conditions:
        return None
    start = contract.valid_from or today()
    plan = FollowUpPlan(
        contract_id=contract.id,
        patient_id=contract.patient_id,
        team_id=contract.team_id,
        conditions=conditions,
        next_due=rules.first_due(start),
    )
    db.session.add(plan)
    db.session.flush()
    return plan


def _deactivate_plan(contract_id: uuid.UUID) -> None:
    db.session.execute(update(FollowUpPlan).where(FollowUpPlan.contract_id == contract_id).values(active=False))


def active_plan(patient_id: uuid.UUID) -> FollowUpPlan | None:
    return db.session.scalars(
        select(FollowUpPlan).where(FollowUpPlan.patient_id == patient_id, FollowUpPlan.active)
    ).first()


def _patient_for(account: Account, patient_id: str) -> tuple[Patient, Contract | None]:
    """A person the caller may see: on the patient's account, or contracted with the physician's team."""
    if account.role == Role.PATIENT:
        patient = identity.patient_of_account(account, patient_id)
        return patient, contract_in_force(patient.id)
    key = as_uuid(patient_id)
    person = db.session.get(Patient, key) if key else None
    if person is not None and account.role == Role.PHYSICIAN:
        contract = contract_in_force(person.id)
        if contract is not None and _is_team_physician(account, contract.team):
            return person, contract
    raise NotFound()


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


def plan_for(account: Account, patient_id: str, readings: int = 30) -> PlanView:
    patient, contract = _patient_for(account, patient_id)
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


def record_followup(physician: Account, patient_id: str, method: str, classification: str, note: str = "") -> FollowUp:
    session = db.session()
    patient, contract = _patient_for(physician, patient_id)
    if physician.role != Role.PHYSICIAN:
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
        done_by=physician.id,
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


# --- home readings --------------------------------------------------------------------


@dataclass(frozen=True)
class ReadingResult:
    reading: HomeReading
    classification: Classification
    advice: str
    alerted: bool


def record_reading(
    account: Account,
    patient_id: str,
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
    patient = identity.patient_of_account(account, patient_id)
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
    found = rules.classify(value, rules.age_on(patient.birth_date, day))
    contract = contract_in_force(patient.id)
    reading = HomeReading(
        patient_id=patient.id,
        account_id=account.id,
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


def acknowledge_alert(physician: Account, alert_id: str) -> Alert:
    key = as_uuid(alert_id)
    alert = db.session.get(Alert, key) if key else None
    if alert is None or not _is_team_physician(physician, get_team(alert.team_id)):
        raise NotFound()
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = utcnow(), physician.id
        audit.record(db.session(), "fd.alert_acknowledged", subject_type="fd_alert", subject_id=alert.id)
    return alert


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


def panel(physician: Account) -> list[PanelRow]:
    """The contracts of the physician's teams: urgent alerts first, then overdue, then by due date."""
    teams = teams_of(physician.id)
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


def overdue(physician: Account) -> list[PanelRow]:
    return [r for r in panel(physician) if r.overdue]


# --- SMS reminders (the daily job) -----------------------------------------------------


def send_reminders(day: date) -> dict[str, int]:
    """Remind every active plan's patient 3 days before and on its due date, once each, through
    the notification kernel (in the app, and by SMS through the outbox after the commit)."""
    from clinic.notifications.services import notify

    session = db.session()
    counts = {"expired": expire_lapsed(day), "before": 0, "due_day": 0}
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
        counts[kind] += 1
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
    return counts


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


# --- the demo world (`flask demo --level 基层`) ------------------------------------------

DEMO_PACKAGES = [
    ("基础服务包", [], "健康评估、健康咨询与健康教育；国家基本公共卫生服务项目；在线咨询。", 0),
    ("高血压随访包", ["I10"], "每年至少4次随访；居家血压监测与危急值警示；长期处方续方。", 0),
    ("2型糖尿病随访包", ["E11"], "每年至少4次随访；居家血糖监测与危急值警示；长期处方续方。", 0),
    ("慢病综合包", ["I10", "E11"], "高血压与2型糖尿病联合管理；每年一次体重与生活方式评估。", 12000),
]


def seed_demo_teams(lead_id: uuid.UUID, physician_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """One team led by `lead_id` with the other physicians, a nurse and a public-health worker."""
    team = create_team(
        "社区家庭医生一组",
        lead_id,
        [MemberSpec("", "physician", str(pid)) for pid in physician_ids if pid != lead_id]
        + [MemberSpec("周晓燕", "nurse"), MemberSpec("郑建华", "public_health")],
    )
    packages = [create_package(team.id, name, conds, inc, fee) for name, conds, inc, fee in DEMO_PACKAGES]
    return [
        {
            "id": str(team.id),
            "name": team.name,
            "lead_username": team.lead.username,
            "packages": [
                {"id": str(p.id), "name": p.name, "conditions": list(p.conditions), "fee_fen": p.fee_fen}
                for p in packages
            ],
        }
    ]


# --- long-term prescriptions: renewed from the last one --------------------------------

RENEWABLE_FROM = ("approved", "dispensed", "out_for_delivery", "delivered")


def _stability(patient_id: uuid.UUID, day: date) -> bool:
    since = datetime.combine(day - timedelta(days=rules.STABLE_WINDOW_DAYS), datetime.min.time(), tzinfo=CHINA)
    latest: dict[str, Classification] = {}
    for r in db.session.scalars(
        select(HomeReading)
        .where(HomeReading.patient_id == patient_id, HomeReading.kind != "weight", HomeReading.measured_at >= since)
        .order_by(HomeReading.measured_at.desc())
    ):
        latest.setdefault(r.kind, r.classification)
    open_alerts = db.session.scalars(
        select(Alert.id).where(Alert.patient_id == patient_id, Alert.acknowledged_at.is_(None))
    ).all()
    return rules.is_stable(list(latest.values()), len(open_alerts))


def renew_long_term(who: Principal, patient_id: str, visit_id: str) -> Any:
    """The team's physician renews the patient's last long-term prescription in a return visit
    they have accepted: same drugs, doses and days; every prescription rule is run again by
    the prescribing service (a new signature, a new pharmacist review)."""
    from prescriptions import services as rx_services
    from prescriptions.models import Prescription

    physician = identity.get_account(who.account_id)
    patient, contract = _patient_for(physician, patient_id)
    if physician.role != Role.PHYSICIAN or contract is None or contract.status != ContractStatus.ACTIVE:
        raise NotFound()
    last = db.session.scalars(
        select(Prescription)
        .where(Prescription.patient_id == patient.id, Prescription.status.in_(RENEWABLE_FROM))
        .order_by(Prescription.signed_at.desc())
        .limit(1)
    ).first()
    violations = rules.renewal_violations(
        has_previous=last is not None,
        long_term=bool(last and last.long_term),
        stable=_stability(patient.id, today()),
    )
    if violations:
        raise RuleRefusal(violations[0].code, violations)
    assert last is not None
    spec = rx_services.PrescriptionSpec(
        items=tuple(
            rx_services.ItemSpec(
                drug_id=i.drug_id,
                dose=i.dose,
                unit=i.unit,
                frequency=i.frequency,
                route=i.route,
                days=i.days,
                quantity=i.quantity,
            )
            for i in last.items
        ),
        weight_kg=last.weight_kg,
        long_term=True,
        assessment_note=last.assessment_note or "家庭医生团队续方：病情稳定，居家读数控制满意",
    )
    rx = rx_services.create_prescription(who, visit_id, spec)
    audit.record(
        db.session(),
        "fd.long_term_renewed",
        subject_type="prescription",
        subject_id=rx.id,
        detail={"from": str(last.id), "patient": str(patient.id), "contract": str(contract.id)},
    )
    return rx


# --- contracted patients reach their team first ------------------------------------------


def visit_first(physician: Account, visits: list[Any]) -> dict[uuid.UUID, str]:
    """The `visit_first` hook of the visit queue: a waiting visit of a patient with an active
    contract goes to the team's physicians first (see rules.visit_first)."""
    if not visits:
        return {}
    by_patient = {
        c.patient_id: c
        for c in db.session.scalars(
            select(Contract).where(
                Contract.patient_id.in_({v.patient_id for v in visits}), Contract.status == ContractStatus.ACTIVE
            )
        ).unique()
    }
    out: dict[uuid.UUID, str] = {}
    now = utcnow()
    for v in visits:
        contract = by_patient.get(v.patient_id)
        if contract is None or v.requested_physician_id is not None:
            continue  # no contract, or the patient chose a physician: the ordinary routing
        team_ids = team_physician_ids(contract.team)
        departments = {  # where someone on the team can take it now (on duty, in that department)
            a.staff.department_code
            for a in db.session.scalars(select(Account).where(Account.id.in_(team_ids), Account.active))
            if a.staff is not None and a.staff.on_duty
        }
        found = rules.visit_first(
            on_team=physician.id in team_ids,
            team_can_take=v.department in departments,
            waited_minutes=(now - v.created_at).total_seconds() / 60,
        )
        if found is not None:
            out[v.id] = found
    return out
