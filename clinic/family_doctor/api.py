"""Family-doctor endpoints of /api/v1 (API.md "Family doctor contracts and follow-up"): the
teams, their packages and the agreement text, and their administration (the institution's
level, teams, packages). Contracts are in `contract_api`, follow-up in `followup_api`."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.family_doctor import contracts, rules, services
from clinic.family_doctor.models import Team

router = ApiRouter("family_doctor")

PATIENT = ["patient"]
PHYSICIAN = ["physician"]


# --- teams and the agreement ----------------------------------------------------------


class PackageOut(ResponseModel):
    id: uuid.UUID
    name: str
    conditions: list[str]
    includes: str
    fee_fen: int


class PersonOut(ResponseModel):
    id: uuid.UUID | None = None
    name: str
    role: str


class TeamOut(ResponseModel):
    id: uuid.UUID
    name: str
    lead: PersonOut
    members: list[PersonOut]
    packages: list[PackageOut]


class TeamsOut(ResponseModel):
    offers_signing: bool
    level: str
    items: list[TeamOut]


def team_out(t: Team) -> TeamOut:
    return TeamOut(
        id=t.id,
        name=t.name,
        lead=PersonOut(id=t.lead_id, name=t.lead.display_name, role="lead_physician"),
        members=[PersonOut(id=m.account_id, name=m.name, role=m.role.value) for m in t.members],
        packages=[PackageOut.model_validate(p) for p in t.packages if p.active],
    )


@router.get("/family-doctor/teams", summary="Family-doctor teams and their service packages", response=TeamsOut)
def teams() -> TeamsOut:
    return TeamsOut(
        offers_signing=services.offers_signing(),
        level=services.institution_level(),
        items=[team_out(t) for t in services.list_teams()],
    )


class AgreementOut(ResponseModel):
    version: str
    sha256: str
    text_zh: str
    text_en: str


@router.get(
    "/family-doctor/agreement",
    summary="The current family-doctor agreement (Art. 15: content, process, duties, rights, risks)",
    response=AgreementOut,
)
def agreement() -> AgreementOut:
    a = contracts.current_agreement()
    return AgreementOut(version=a.version, sha256=a.sha256, text_zh=a.text_zh, text_en=a.text_en)


# --- administration -------------------------------------------------------------------


class LevelIn(RequestModel):
    level: Literal["三级", "二级", "一级", "基层"]


class LevelOut(ResponseModel):
    level: str
    offers_signing: bool


@router.post(
    "/admin/institution/level",
    summary="Set the institution's level; only a primary-care (基层) institution offers family-doctor contracts",
    body=LevelIn,
    response=LevelOut,
    roles=["admin"],
)
def set_level(body: LevelIn, principal: Principal) -> LevelOut:
    inst = services.set_institution_level(body.level)
    return LevelOut(level=inst.level, offers_signing=rules.offers_signing(inst.level))


class MemberIn(RequestModel):
    name: str = Field(default="", max_length=100)
    role: Literal["physician", "nurse", "public_health"]
    account_id: uuid.UUID | None = None


class TeamIn(RequestModel):
    name: str = Field(min_length=1, max_length=100)
    lead_id: uuid.UUID
    members: list[MemberIn] = Field(default_factory=list, max_length=30)


@router.post(
    "/admin/family-doctor/teams",
    summary="Set up a family-doctor team: a lead physician and others",
    body=TeamIn,
    response=TeamOut,
    status=201,
    roles=["admin"],
    errors={409: ["already_member"]},
)
def create_team(body: TeamIn, principal: Principal) -> TeamOut:
    team = services.create_team(
        body.name,
        body.lead_id,
        [services.MemberSpec(m.name, m.role, m.account_id) for m in body.members],
    )
    return team_out(team)


class PackageIn(RequestModel):
    name: str = Field(min_length=1, max_length=100)
    conditions: list[Literal["I10", "E11"]] = Field(default_factory=list, max_length=2)
    includes: str = Field(default="", max_length=4000)
    fee_fen: int = Field(default=0, ge=0, le=10_000_000)


@router.post(
    "/admin/family-doctor/teams/<team_id>/packages",
    summary="Add a service package to a team (basic, or for hypertension / type 2 diabetes; its fee may be 0)",
    body=PackageIn,
    response=PackageOut,
    status=201,
    roles=["admin"],
)
def create_package(team_id: str, body: PackageIn, principal: Principal) -> PackageOut:
    p = services.create_package(record_id(team_id), body.name, list(body.conditions), body.includes, body.fee_fen)
    return PackageOut.model_validate(p)
