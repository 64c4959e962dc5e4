"""`flask demo --level 基层`: a primary-care institution with a family-doctor team whose
lead can log in, and whose packages a demo patient signs for end to end."""

from __future__ import annotations

import json

from click.testing import CliRunner
from flask import Flask

from tests.support import factories as f


def test_primary_care_demo_world_offers_signing(ctx: Flask) -> None:
    result = CliRunner().invoke(ctx.cli, ["demo", "--level", "基层"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    world = json.loads(result.stdout)
    assert world["institution"]["level"] == "基层"
    (team,) = world["family_doctor_teams"]
    physicians = {p["username"]: p for p in world["accounts"]["physicians"]}
    assert team["lead_username"] in physicians
    conditions = {tuple(p["conditions"]) for p in team["packages"]}
    assert {(), ("I10",), ("E11",)} <= conditions
    client = ctx.test_client()
    adult = next(a for a in world["accounts"]["patients"] if any(p["confirmed_diagnoses"] for p in a["patients"]))
    person = adult["patients"][0]
    tok = f.token(client, adult["username"], adult["password"])
    version = client.get("/api/v1/family-doctor/agreement").get_json()["version"]
    package = next(p for p in team["packages"] if p["conditions"] == ["I10", "E11"])
    resp = client.post(
        "/api/v1/family-doctor/contracts",
        json={
            "patient_id": person["id"],
            "team_id": team["id"],
            "package_id": package["id"],
            "agreement_version": version,
        },
        headers=f.auth(tok),
    )
    assert resp.status_code == 201, resp.get_json()
    lead = physicians[team["lead_username"]]
    lead_tok = f.token(client, lead["username"], lead["password"])
    resp = client.post(f"/api/v1/family-doctor/contracts/{resp.get_json()['id']}/countersign", headers=f.auth(lead_tok))
    assert resp.status_code == 200 and resp.get_json()["status"] == "active"
    plan = client.get(f"/api/v1/family-doctor/patients/{person['id']}/plan", headers=f.auth(tok)).get_json()
    assert plan["conditions"] == ["I10", "E11"] and plan["next_due"]


def test_default_demo_is_not_primary_care(ctx: Flask) -> None:
    result = CliRunner().invoke(ctx.cli, ["demo"], catch_exceptions=False)
    world = json.loads(result.stdout)
    assert "family_doctor_teams" not in world and world["institution"]["level"] == "三级"
    assert ctx.test_client().get("/api/v1/family-doctor/teams").get_json()["offers_signing"] is False
