"""The family-doctor contract of API.md: teams, agreement, contracts, readings, plans, bad input."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import AuditEntry
from clinic.core.db import db, unit_of_work
from clinic.family_doctor import contracts, services
from clinic.family_doctor.models import Alert, Contract, FollowUpPlan, HomeReading
from clinic.notifications.models import InboxNotification, SmsMessage
from identity.models import Role
from tests.support import factories as f
from tests.support import fd_factories as fd

API = "/api/v1"


def count(model: Any) -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def audits(action: str) -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).where(AuditEntry.action == action)) or 0)


def test_teams_and_agreement_are_public(client: FlaskClient) -> None:
    world = fd.team(client)
    body = client.get(f"{API}/family-doctor/teams").get_json()
    assert body["offers_signing"] is True and body["level"] == "基层"
    (team,) = body["items"]
    assert team["id"] == world.team_id and team["lead"]["id"] == str(world.lead.id)
    assert {m["role"] for m in team["members"]} == {"physician", "nurse", "public_health"}
    assert {(p["name"], tuple(p["conditions"]), p["fee_fen"]) for p in team["packages"]} == {
        ("基础包", (), 0),
        ("慢病包", ("I10", "E11"), 12000),
    }
    agreement = client.get(f"{API}/family-doctor/agreement").get_json()
    assert len(agreement["sha256"]) == 64 and agreement["version"]
    for heading in ("服务内容", "服务流程", "双方责任", "双方权利", "可能的风险"):
        assert heading in agreement["text_zh"]
    for heading in ("Service content", "Process", "Duties", "Rights", "Possible risks"):
        assert heading in agreement["text_en"]


def test_sign_then_lead_countersigns_for_one_year(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    resp = fd.sign(client, world, p)
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "pending" and body["agreement_sha256"] == contracts.current_agreement().sha256
    cid = body["id"]
    # another physician of the team is not the lead
    resp = client.post(f"{API}/family-doctor/contracts/{cid}/countersign", headers=f.auth(world.member_token))
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "not_team_lead"
    # a physician of no team never sees it
    stranger = f.staff(Role.PHYSICIAN)
    resp = client.post(
        f"{API}/family-doctor/contracts/{cid}/countersign", headers=f.auth(f.token(client, stranger.username))
    )
    assert resp.status_code == 404
    resp = client.post(f"{API}/family-doctor/contracts/{cid}/countersign", headers=f.auth(world.lead_token))
    assert resp.status_code == 200, resp.get_json()
    out = resp.get_json()
    assert out["status"] == "active"
    start = services.today()
    assert out["valid_from"] == start.isoformat()
    assert out["valid_until"] == (start.replace(year=start.year + 1) - timedelta(days=1)).isoformat()
    # both parties and the time are kept
    got = client.get(f"{API}/family-doctor/contracts/{cid}", headers=f.auth(p["token"])).get_json()
    assert got["signed_by"] == str(p["reg"].account.id) and got["countersigned_by"] == str(world.lead.id)
    assert got["signed_at"] and got["countersigned_at"]
    # confirmed hypertension: a follow-up plan, first due two weeks from today
    plan = client.get(f"{API}/family-doctor/patients/{p['patient_id']}/plan", headers=f.auth(p["token"])).get_json()
    assert plan["conditions"] == ["I10"] and plan["next_due"] == (start + timedelta(days=14)).isoformat()
    # countersigning twice is refused
    resp = client.post(f"{API}/family-doctor/contracts/{cid}/countersign", headers=f.auth(world.lead_token))
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "contract_not_open"
    assert audits("fd.contract_signed") == 1 and audits("fd.contract_countersigned") == 1


def test_one_contract_in_force_per_person(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    first = fd.sign(client, world, p)
    assert first.status_code == 201
    again = fd.sign(client, world, p, package=world.basic_id)
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "contract_exists"
    assert again.get_json()["error"]["contract_id"] == first.get_json()["id"]
    assert count(Contract) == 1
    # once ended, the person may sign again
    resp = client.post(
        f"{API}/family-doctor/contracts/{first.get_json()['id']}/end",
        json={"reason": "搬家到外区"},
        headers=f.auth(p["token"]),
    )
    assert resp.status_code == 200 and resp.get_json()["status"] == "ended"
    assert fd.sign(client, world, p).status_code == 201


def test_not_primary_care_refuses_signing(client: FlaskClient) -> None:
    world = fd.team(client, level="三级")
    p = fd.patient(client, world)
    resp = fd.sign(client, world, p)
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "not_primary_care"
    assert "基层" in resp.get_json()["error"]["message"]
    assert count(Contract) == 0
    assert client.get(f"{API}/family-doctor/teams").get_json()["offers_signing"] is False


def test_stale_agreement_version_and_unknown_package(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    body = {
        "patient_id": p["patient_id"],
        "team_id": world.team_id,
        "package_id": world.basic_id,
        "agreement_version": "2020-01-01",
    }
    resp = client.post(f"{API}/family-doctor/contracts", json=body, headers=f.auth(p["token"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "stale_version"
    body["agreement_version"] = fd.version(client)
    body["package_id"] = str(uuid.uuid4())
    resp = client.post(f"{API}/family-doctor/contracts", json=body, headers=f.auth(p["token"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid"
    body["package_id"], body["team_id"] = world.basic_id, str(uuid.uuid4())
    resp = client.post(f"{API}/family-doctor/contracts", json=body, headers=f.auth(p["token"]))
    assert resp.status_code == 404
    body["team_id"], body["patient_id"] = world.team_id, "not-a-uuid"
    resp = client.post(f"{API}/family-doctor/contracts", json=body, headers=f.auth(p["token"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid"
    assert count(Contract) == 0


def test_someone_elses_family_member_is_not_found(client: FlaskClient) -> None:
    world = fd.team(client)
    me = fd.patient(client, world)
    other = f.patient("李四")
    with unit_of_work():
        from identity import services as identity

        child = identity.add_family_member(
            identity.get_account(other.account.id),
            "李小四",
            f.id_number(__import__("datetime").date(2020, 1, 2)),
            "child",
        )
        child_id = str(child.id)
    for resp in (
        client.post(
            f"{API}/readings",
            json={"patient_id": child_id, "kind": "bp", "systolic": 190, "diastolic": 100},
            headers=f.auth(me["token"]),
        ),
        client.post(
            f"{API}/family-doctor/contracts",
            json={
                "patient_id": child_id,
                "team_id": world.team_id,
                "package_id": world.basic_id,
                "agreement_version": fd.version(client),
            },
            headers=f.auth(me["token"]),
        ),
        client.get(f"{API}/family-doctor/patients/{child_id}/plan", headers=f.auth(me["token"])),
    ):
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    assert count(HomeReading) == 0 and count(Contract) == 0


def test_urgent_reading_tells_the_patient_to_go_in_person_and_alerts_the_team(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    fd.active_contract(client, world, p)
    resp = client.post(
        f"{API}/readings",
        json={
            "patient_id": p["patient_id"],
            "kind": "bp",
            "systolic": 182,
            "diastolic": 96,
            "at": "2026-01-01T08:00:00Z",
        },
        headers=f.auth(p["token"]),
    )
    assert resp.status_code == 201, resp.get_json()
    out = resp.get_json()
    assert out["classification"] == "urgent" and out["go_in_person"] is True and out["team_alerted"] is True
    assert "医院" in out["advice"] and "线下" in out["advice"] or "就诊" in out["advice"]
    panel = client.get(f"{API}/family-doctor/panel", headers=f.auth(world.member_token)).get_json()["items"]
    assert panel[0]["patient_id"] == p["patient_id"]
    assert [a["summary"] for a in panel[0]["open_alerts"]] == ["182/96 mmHg"]
    assert audits("fd.reading_urgent") == 1
    db.session.remove()
    told = db.session.scalars(select(InboxNotification).where(InboxNotification.kind == "fd_urgent_reading")).all()
    assert {n.account_id for n in told} == {world.lead.id, world.member.id}
    assert {n.link for n in told} == {f"/family-doctor/team/patients/{p['patient_id']}"}
    # acknowledged: no longer open
    alert_id = panel[0]["open_alerts"][0]["id"]
    resp = client.post(f"{API}/family-doctor/alerts/{alert_id}/acknowledge", headers=f.auth(world.lead_token))
    assert resp.status_code == 200 and resp.get_json()["acknowledged_at"]
    panel = client.get(f"{API}/family-doctor/panel", headers=f.auth(world.member_token)).get_json()["items"]
    assert panel[0]["open_alerts"] == []


def test_readings_classified_and_plan_pulled_forward(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world, icd10=("I10", "E11"))
    fd.active_contract(client, world, p)
    base = {"patient_id": p["patient_id"]}
    cases = [
        ({"kind": "bp", "systolic": 128, "diastolic": 82}, "controlled"),
        ({"kind": "glucose", "glucose_mmol": 6.1, "fasting": True}, "controlled"),
        ({"kind": "glucose", "glucose_mmol": 3.9, "fasting": True}, "urgent"),
        ({"kind": "weight", "weight_kg": 72.5}, "controlled"),
    ]
    for body, expected in cases:
        resp = client.post(f"{API}/readings", json={**base, **body}, headers=f.auth(p["token"]))
        assert resp.status_code == 201, resp.get_json()
        assert resp.get_json()["classification"] == expected
    plan = client.get(f"{API}/family-doctor/patients/{p['patient_id']}/plan", headers=f.auth(world.lead_token))
    assert plan.status_code == 200
    body = plan.get_json()
    assert body["conditions"] == ["I10", "E11"] and len(body["readings"]) == 4
    # the team records a follow-up: controlled → 3 months later
    resp = client.post(
        f"{API}/family-doctor/patients/{p['patient_id']}/followups",
        json={"method": "phone", "classification": "controlled", "note": "血压稳定"},
        headers=f.auth(world.member_token),
    )
    assert resp.status_code == 201, resp.get_json()
    today = services.today()
    from clinic.family_doctor.rules import add_months

    assert resp.get_json()["next_due"] == add_months(today, 3).isoformat()
    # an uncontrolled home reading brings it to within two weeks
    resp = client.post(
        f"{API}/readings", json={**base, "kind": "bp", "systolic": 150, "diastolic": 95}, headers=f.auth(p["token"])
    )
    assert resp.get_json()["classification"] == "uncontrolled"
    plan = client.get(f"{API}/family-doctor/patients/{p['patient_id']}/plan", headers=f.auth(p["token"])).get_json()
    assert plan["next_due"] == (today + timedelta(days=14)).isoformat()
    assert [fu["classification"] for fu in plan["followups"]] == ["controlled"]


def test_impossible_readings_are_refused_and_nothing_is_stored(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    fd.active_contract(client, world, p)
    for body, field in [
        ({"kind": "bp", "systolic": 400, "diastolic": 80}, "systolic"),
        ({"kind": "glucose", "glucose_mmol": -1}, "glucose_mmol"),
        ({"kind": "weight", "weight_kg": 0}, "weight_kg"),
    ]:
        resp = client.post(f"{API}/readings", json={"patient_id": p["patient_id"], **body}, headers=f.auth(p["token"]))
        assert resp.status_code == 422, resp.get_json()
        err = resp.get_json()["error"]
        assert err["code"] == "out_of_range" and err["violations"][0]["field"] == field
    for body in (
        {"kind": "bp", "systolic": 120},
        {"kind": "pulse", "systolic": 120, "diastolic": 80},
        {"kind": "glucose", "glucose_mmol": "NaN"},
        {"kind": "bp", "systolic": 120.5, "diastolic": 80},
        {"kind": "bp", "systolic": 120, "diastolic": 80, "at": "2999-01-01T00:00:00Z"},
        {"kind": "bp", "systolic": 120, "diastolic": 80, "at": "2026-01-01T08:00:00"},
    ):
        resp = client.post(f"{API}/readings", json={"patient_id": p["patient_id"], **body}, headers=f.auth(p["token"]))
        assert resp.status_code == 422, (body, resp.get_json())
    assert count(HomeReading) == 0 and count(Alert) == 0


def test_end_by_the_team_with_a_reason_closes_the_plan(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    cid = fd.active_contract(client, world, p)
    resp = client.post(
        f"{API}/family-doctor/contracts/{cid}/end", json={"reason": ""}, headers=f.auth(world.lead_token)
    )
    assert resp.status_code == 422
    resp = client.post(
        f"{API}/family-doctor/contracts/{cid}/end", json={"reason": "居民长期失联"}, headers=f.auth(world.lead_token)
    )
    assert resp.status_code == 200 and resp.get_json()["status"] == "ended"
    got = client.get(f"{API}/family-doctor/contracts/{cid}", headers=f.auth(p["token"])).get_json()
    assert got["ended_side"] == "team" and got["end_reason"] == "居民长期失联"
    db.session.remove()
    assert db.session.scalars(select(FollowUpPlan.active)).all() == [False]
    resp = client.post(f"{API}/family-doctor/contracts/{cid}/end", json={"reason": "again"}, headers=f.auth(p["token"]))
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "contract_not_open"


def test_renewal_opens_in_the_last_60_days(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    cid = fd.active_contract(client, world, p)
    url = f"{API}/family-doctor/contracts/{cid}/renew"
    resp = client.post(url, json={"agreement_version": fd.version(client)}, headers=f.auth(p["token"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "renewal_not_open"
    end = services.today() + timedelta(days=30)
    with unit_of_work():
        c = db.session.get(Contract, uuid.UUID(cid))
        assert c is not None
        c.valid_until = end
    resp = client.post(url, json={"agreement_version": "1999-01-01"}, headers=f.auth(p["token"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "stale_version"
    resp = client.post(url, json={"agreement_version": fd.version(client)}, headers=f.auth(world.lead_token))
    assert resp.status_code == 403
    resp = client.post(url, json={"agreement_version": fd.version(client)}, headers=f.auth(p["token"]))
    assert resp.status_code == 200, resp.get_json()
    nxt = end + timedelta(days=1)
    assert resp.get_json()["valid_until"] == (nxt.replace(year=nxt.year + 1) - timedelta(days=1)).isoformat()
    assert audits("fd.contract_renewed") == 1


def test_lapsed_contract_expires_and_the_person_may_sign_again(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    cid = fd.active_contract(client, world, p)
    with unit_of_work():
        c = db.session.get(Contract, uuid.UUID(cid))
        assert c is not None
        c.valid_until = services.today() - timedelta(days=1)
    assert fd.sign(client, world, p).status_code == 201
    got = client.get(f"{API}/family-doctor/contracts/{cid}", headers=f.auth(p["token"])).get_json()
    assert got["status"] == "expired"


def test_admin_sets_level_teams_and_packages(client: FlaskClient) -> None:
    admin = f.staff(Role.ADMIN)
    lead = f.staff(Role.PHYSICIAN)
    tok = f.token(client, admin.username)
    resp = client.post(f"{API}/admin/institution/level", json={"level": "社区"}, headers=f.auth(tok))
    assert resp.status_code == 422
    resp = client.post(f"{API}/admin/institution/level", json={"level": "基层"}, headers=f.auth(tok))
    assert resp.status_code == 200 and resp.get_json() == {"level": "基层", "offers_signing": True}
    resp = client.post(
        f"{API}/admin/family-doctor/teams",
        json={"name": "二组", "lead_id": str(lead.id), "members": [{"name": "李护士", "role": "nurse"}]},
        headers=f.auth(tok),
    )
    assert resp.status_code == 201, resp.get_json()
    team_id = resp.get_json()["id"]
    resp = client.post(
        f"{API}/admin/family-doctor/teams/{team_id}/packages",
        json={"name": "高血压包", "conditions": ["I10"], "fee_fen": 0},
        headers=f.auth(tok),
    )
    assert resp.status_code == 201 and resp.get_json()["fee_fen"] == 0
    resp = client.post(
        f"{API}/admin/family-doctor/teams/{team_id}/packages",
        json={"name": "负费用", "fee_fen": -1},
        headers=f.auth(tok),
    )
    assert resp.status_code == 422
    patient_tok = f.token(client, f.patient().account.username)
    resp = client.post(
        f"{API}/admin/family-doctor/teams", json={"name": "x", "lead_id": str(lead.id)}, headers=f.auth(patient_tok)
    )
    assert resp.status_code == 403


def test_reminders_sms_three_days_before_and_on_the_day_once(client: FlaskClient, ctx: Any) -> None:

    world = fd.team(client)
    p = fd.patient(client, world)
    fd.active_contract(client, world, p)
    due = services.today() + timedelta(days=14)
    runner = ctx.test_cli_runner()
    before = (due - timedelta(days=3)).isoformat()
    out = runner.invoke(args=["family-doctor", "remind", "--date", before])
    assert out.exit_code == 0, out.output
    assert '"before": 1' in out.output
    again = runner.invoke(args=["family-doctor", "remind", "--date", before])
    assert '"before": 0' in again.output
    on_day = runner.invoke(args=["family-doctor", "remind", "--date", due.isoformat()])
    assert '"due_day": 1' in on_day.output
    db.session.remove()
    bodies = db.session.scalars(
        select(SmsMessage.body).where(SmsMessage.kind.in_(["fd_followup_before", "fd_followup_due_day"]))
    ).all()
    assert len(bodies) == 2 and all("随访" in b for b in bodies)
    assert due.isoformat() in bodies[0]
    inbox = db.session.scalars(select(InboxNotification.link).where(InboxNotification.kind.like("fd_followup%"))).all()
    assert inbox == [f"/family-doctor/people/{p['patient_id']}"] * 2
