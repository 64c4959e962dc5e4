"""Family-doctor pages without a browser: the administrator sets up a team and a package,
a patient's refusals are shown in Chinese with nothing stored, a physician outside the
team sees nobody, and every page is free of raw codes."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.db import db
from clinic.family_doctor.models import HomeReading, ServicePackage, Team
from identity.models import Role
from tests.integration.clinic.visits.test_visit_pages import csrf_of, face_checked, login
from tests.support import factories as f
from tests.support import fd_factories as fd
from tests.support.answers import refusal

RAW = re.compile(r"\b(pending|active|controlled|uncontrolled|urgent|bp|glucose|public_health|in_person)\b")


def visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", html, flags=re.S)
    html = re.sub(r"<[^>]+>", " ", html)
    return html


def test_admin_sets_level_creates_a_team_and_a_free_package(client: FlaskClient) -> None:
    admin = f.staff(Role.ADMIN)
    lead = f.staff(Role.PHYSICIAN)
    login(client, admin.username)
    page = client.get("/admin/family-doctor")
    assert page.status_code == 200 and "家庭医生团队" in page.get_data(as_text=True)
    csrf = csrf_of(client, "/admin/family-doctor")
    assert client.post("/admin/family-doctor/level", data={"level": "基层", "csrf_token": csrf}).status_code == 302
    resp = client.post(
        "/admin/family-doctor/teams",
        data={
            "name": "三组",
            "lead_id": str(lead.id),
            "nurses": "王护士，李护士",
            "public_health": "",
            "csrf_token": csrf,
        },
    )
    assert resp.status_code == 302
    db.session.remove()
    team = db.session.scalars(select(Team)).one()
    assert sorted(m.name for m in team.members) == ["李护士", "王护士"]
    resp = client.post(
        f"/admin/family-doctor/teams/{team.id}/packages",
        data={"name": "高血压包", "conditions": "I10", "includes": "随访", "fee_yuan": "0", "csrf_token": csrf},
    )
    assert resp.status_code == 302
    html = client.get("/admin/family-doctor").get_data(as_text=True)
    assert "高血压包" in html and "¥0.00" in html and "基层医疗卫生机构" in html
    assert not RAW.search(visible_text(html))
    # a team without a physician lead is refused with the rule, in Chinese
    resp = client.post("/admin/family-doctor/teams", data={"name": "x", "lead_id": "nobody", "csrf_token": csrf})
    assert resp.status_code == 422 and "团队负责人必须是本机构的医生" in resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(ServicePackage)) == 1


def test_patient_pages_refuse_impossible_readings_in_chinese(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    login(client, p["reg"].account.username)
    home = client.get("/family-doctor").get_data(as_text=True)
    assert "签约家庭医生" in home and not RAW.search(visible_text(home))
    url = f"/family-doctor/people/{p['patient_id']}"
    csrf = csrf_of(client, url)
    resp = client.post(f"{url}/readings", data={"kind": "bp", "systolic": "400", "diastolic": "80", "csrf_token": csrf})
    assert resp.status_code == 422 and "收缩压应在50至300 mmHg之间" in resp.get_data(as_text=True)
    resp = client.post(f"{url}/readings", data={"kind": "glucose", "glucose_mmol": "-1", "csrf_token": csrf})
    assert resp.status_code == 422 and "血糖应在0.6至50.0 mmol/L之间" in resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(HomeReading)) == 0
    resp = client.post(
        f"{url}/readings", data={"kind": "glucose", "glucose_mmol": "8.2", "fasting": "1", "csrf_token": csrf}
    )
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "控制不满意" in page and "svg" in page
    assert not RAW.search(visible_text(page)), RAW.search(visible_text(page))
    # someone else's person: 404
    other = f.patient("王五")
    assert refusal(client.get(f"/family-doctor/people/{other.patient.id}")) == (404, "not_found")


def test_a_physician_outside_the_team_sees_nobody(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    fd.active_contract(client, world, p)
    outsider = f.staff(Role.PHYSICIAN)
    login(client, outsider.username)
    face_checked(client)
    assert "还没有居民与您的团队签约" in client.get("/family-doctor/team").get_data(as_text=True)
    assert refusal(client.get(f"/family-doctor/team/patients/{p['patient_id']}")) == (404, "not_found")
    member = client.application.test_client()
    login(member, world.member.username)
    face_checked(member)
    html = member.get("/family-doctor/team").get_data(as_text=True)
    assert p["reg"].patient.name in html and not RAW.search(visible_text(html))
    detail = member.get(f"/family-doctor/team/patients/{p['patient_id']}").get_data(as_text=True)
    assert "记录随访" in detail and not RAW.search(visible_text(detail))
