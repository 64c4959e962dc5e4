"""Family-doctor teams: the institution's level (only primary care signs contracts), the
teams and their service packages, the demo teams, and the visit-queue hook that lets a
contracted patient reach their own team first. Contracts are in `contracts`, follow-up in
`followups`, home readings in `readings`, long-term renewal in `long_term`.

Each use case loads, applies the pure rules, changes state, audits, enqueues, flushes; never
commits (the request, CLI command or job is the commit point)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.family_doctor import rules
from clinic.family_doctor.models import (
    Contract,
    MemberRole,
    ServicePackage,
    Team,
    TeamMember,
)
from clinic.family_doctor.rules import ContractStatus
from clinic.visits.models import Visit
from identity import services as identity
from identity.models import Account, Institution, Role

CHINA = ZoneInfo("Asia/Shanghai")  # contract terms and follow-up dates are Beijing dates


def today() -> date:
    return utcnow().astimezone(CHINA).date()


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


def _physician(account_id: uuid.UUID | None) -> Account:
    account = db.session.get(Account, account_id) if account_id is not None else None
    if account is None or account.role != Role.PHYSICIAN:
        raise Invalid("The lead of a team must be a physician of this clinic.", code="invalid")
    return account


@dataclass(frozen=True)
class MemberSpec:
    name: str
    role: str  # physician | nurse | public_health
    account_id: uuid.UUID | None = None


def create_team(name: str, lead_id: uuid.UUID, members: list[MemberSpec] | None = None) -> Team:
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
        physician = _physician(spec.account_id)
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


def create_package(team_id: uuid.UUID, name: str, conditions: list[str], includes: str, fee_fen: int) -> ServicePackage:
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


def get_team(team_id: uuid.UUID) -> Team:
    team = db.session.get(Team, team_id)
    if team is None or not team.active:
        raise NotFound("No such family-doctor team.")
    return team


def list_teams() -> list[Team]:
    return list(db.session.scalars(select(Team).where(Team.active).order_by(Team.created_at)).unique())


def team_physician_ids(team: Team) -> set[uuid.UUID]:
    return {team.lead_id} | {m.account_id for m in team.members if m.account_id is not None}


def teams_of(physician_id: uuid.UUID) -> list[Team]:
    return [t for t in list_teams() if physician_id in team_physician_ids(t)]


def is_team_physician(who: Principal, team: Team) -> bool:
    return who.role == Role.PHYSICIAN and who.account_id in team_physician_ids(team)


# --- the demo world (`flask demo --level 基层`) ------------------------------------------

DEMO_PACKAGES = [
    ("基础服务包", [], "健康评估、健康咨询与健康教育；国家基本公共卫生服务项目；在线咨询。", 0),
    ("高血压随访包", ["I10"], "每年至少4次随访；居家血压监测与危急值警示；长期处方续方。", 0),
    ("2型糖尿病随访包", ["E11"], "每年至少4次随访；居家血糖监测与危急值警示；长期处方续方。", 0),
    ("慢病综合包", ["I10", "E11"], "高血压与2型糖尿病联合管理；每年一次体重与生活方式评估。", 12000),
]


@dataclass(frozen=True)
class DemoTeam:
    team: Team
    packages: tuple[ServicePackage, ...]


def seed_demo_teams(lead_id: uuid.UUID, physician_ids: list[uuid.UUID]) -> list[DemoTeam]:
    """One team led by `lead_id` with the other physicians, a nurse and a public-health worker."""
    team = create_team(
        "社区家庭医生一组",
        lead_id,
        [MemberSpec("", "physician", pid) for pid in physician_ids if pid != lead_id]
        + [MemberSpec("周晓燕", "nurse"), MemberSpec("郑建华", "public_health")],
    )
    packages = tuple(create_package(team.id, name, conds, inc, fee) for name, conds, inc, fee in DEMO_PACKAGES)
    return [DemoTeam(team, packages)]


# --- contracted patients reach their team first ------------------------------------------


def visit_first(physician_id: uuid.UUID, visits: list[Visit]) -> dict[uuid.UUID, str]:
    """The `visit_first` hook of the visit queue, for the physician of this account id: a waiting
    visit of a patient with an active contract goes to the team's physicians first (see
    rules.visit_first)."""
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
            on_team=physician_id in team_ids,
            team_can_take=v.department in departments,
            waited_minutes=(now - v.created_at).total_seconds() / 60,
        )
        if found is not None:
            out[v.id] = found
    return out
