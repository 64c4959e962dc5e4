"""Factories for family-doctor tests: a primary-care institution, a team, packages, contracts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.family_doctor import services
from identity.models import Account, Institution, Role
from tests.support import clinic_factories as cf
from tests.support import factories as f


def set_level(level: str) -> None:
    with unit_of_work():
        inst = db.session.get(Institution, 1)
        assert inst is not None
        inst.level = level


@dataclass
class TeamWorld:
    team_id: str
    basic_id: str
    chronic_id: str
    lead: Account
    member: Account
    lead_token: str
    member_token: str


def team(client: FlaskClient, level: str = "基层") -> TeamWorld:
    cf.catalog()
    set_level(level)
    lead = f.staff(Role.PHYSICIAN, department="general")
    member = f.staff(Role.PHYSICIAN, department="cardiology")
    with acting_as(Actor(None, "test")), unit_of_work():
        t = services.create_team(
            "全科一组",
            lead.id,
            [
                services.MemberSpec("", "physician", member.id),
                services.MemberSpec("周护士", "nurse"),
                services.MemberSpec("公卫王", "public_health"),
            ],
        )
        basic = services.create_package(t.id, "基础包", [], "健康评估、健康咨询", 0)
        chronic = services.create_package(t.id, "慢病包", ["I10", "E11"], "高血压、糖尿病随访", 12000)
        ids = (str(t.id), str(basic.id), str(chronic.id))
    return TeamWorld(*ids, lead, member, f.token(client, lead.username), f.token(client, member.username))


def patient(client: FlaskClient, world: TeamWorld, icd10: tuple[str, ...] = ("I10",)) -> dict[str, Any]:
    reg = f.patient()
    for code in icd10:
        cf.diagnosis(reg.patient.id, reg.account, code, confirm_by=world.lead)
    return {"reg": reg, "patient_id": str(reg.patient.id), "token": f.token(client, reg.account.username)}


def version(client: FlaskClient) -> str:
    return str(client.get("/api/v1/family-doctor/agreement").get_json()["version"])


def sign(client: FlaskClient, world: TeamWorld, p: dict[str, Any], package: str | None = None) -> Any:
    return client.post(
        "/api/v1/family-doctor/contracts",
        json={
            "patient_id": p["patient_id"],
            "team_id": world.team_id,
            "package_id": package or world.chronic_id,
            "agreement_version": version(client),
        },
        headers=f.auth(p["token"]),
    )


def active_contract(client: FlaskClient, world: TeamWorld, p: dict[str, Any]) -> str:
    resp = sign(client, world, p)
    assert resp.status_code == 201, resp.get_json()
    cid = str(resp.get_json()["id"])
    resp = client.post(f"/api/v1/family-doctor/contracts/{cid}/countersign", headers=f.auth(world.lead_token))
    assert resp.status_code == 200, resp.get_json()
    return cid
