"""A referral down with its closed loop, between two real clinics (issue 19 item 4): A, a
tertiary hospital, refers a patient with a confirmed diagnosis to B, a primary-care centre;
B accepts with an appointment and the patient is told where and when (Beijing time); B
reports the outcome back and the referral completes on both sides; a physician of B
confirms the carried diagnosis, and the patient can then request an online return visit
for it at B (Art. 16). Every step goes through each clinic's public API; the messages
between them are signed and delivered by the outbox."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import requests

from clinic.demo import make_id_number
from tests.support.clinic_factories import png
from tests.support.clinic_pair import Clinic, link

API = "/api/v1"


def _until(what: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def _token(c: Clinic, username: str, password: str) -> dict[str, str]:
    resp = requests.post(c.url + f"{API}/auth/token", json={"username": username, "password": password}, timeout=10)
    assert resp.status_code == 200, resp.text
    return {"Authorization": "Bearer " + resp.json()["access_token"]}


def _face(c: Clinic, physician: dict[str, Any]) -> dict[str, str]:
    headers = _token(c, physician["username"], physician["password"])
    with open(physician["face_probe_image"], "rb") as fh:
        resp = requests.post(c.url + f"{API}/auth/face", files={"image": fh}, headers=headers, timeout=120)
    assert resp.status_code == 200, resp.text
    return {"Authorization": "Bearer " + resp.json()["access_token"]}


def _dr_wang(world: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in world["accounts"]["physicians"] if p["username"] == "dr_wang")


def test_a_referral_down_closes_its_loop_and_carries_the_diagnosis_to_a_return_visit(
    pair: tuple[Clinic, Clinic],
) -> None:
    a, b = pair
    world_a = json.loads(a.flask("demo"))
    world_b = json.loads(b.flask("demo", "--level", "基层"))
    b_at_a, _a_at_b = link(a, b, "--level", "基层")  # A at B: 三级, the CLI's default

    # At A: 张伟's father is followed for hypertension, confirmed from his proof by Dr Wang
    zhang = world_a["accounts"]["patients"][0]
    zhang_a = _token(a, zhang["username"], zhang["password"])
    father_id_number = make_id_number("110105", date(1940, 8, 20), 17)
    resp = requests.post(
        a.url + f"{API}/accounts/me/patients",
        json={"name": "张德福", "id_number": father_id_number, "relation": "parent"},
        headers=zhang_a,
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    father_a = resp.json()["patient_id"]
    resp = requests.post(
        a.url + f"{API}/diagnoses",
        data={"patient_id": father_a, "icd10": "I10", "institution": "北京朝阳医院", "diagnosed_on": "2020-06-01"},
        files={"document": ("record.png", png(), "image/png")},
        headers=zhang_a,
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    wang_a = _face(a, _dr_wang(world_a))
    assert requests.post(a.url + f"{API}/diagnoses/{resp.json()['id']}/confirm", headers=wang_a, timeout=10).ok

    # A refers him down to B
    resp = requests.post(
        a.url + f"{API}/referrals",
        json={
            "patient_id": father_a,
            "institution_id": b_at_a,
            "direction": "down",
            "department": "cardiology",
            "reason": "高血压病情稳定，转回社区继续随访",
            "summary": "血压控制达标半年，继续氨氯地平 5mg 每日一次。",
        },
        headers=wang_a,
        timeout=30,
    )
    assert resp.status_code == 201 and resp.json()["status"] == "requested", resp.text
    referral_a = resp.json()["id"]

    # B: it arrives in the receiving queue, the patient added to 张伟's account there (same phone)
    wang_b = _face(b, _dr_wang(world_b))

    def queue() -> list[dict[str, Any]]:
        got = requests.get(b.url + f"{API}/referrals?role=receiving&status=requested", headers=wang_b, timeout=10)
        return list(got.json()["items"])

    (item,) = _until(queue)
    assert item["patient_name"] == "张德福" and item["direction"] == "down" and item["identity_match"] == "added"
    assert [d["icd10"] for d in item["diagnoses"]] == ["I10"]
    referral_b = item["id"]

    # B accepts: 9:30 Beijing time in three days, at the general practice clinic
    day = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=3)).date()
    at = datetime(day.year, day.month, day.day, 9, 30)
    resp = requests.post(
        b.url + f"{API}/referrals/{referral_b}/accept",
        json={"appointment_at": at.isoformat(), "place": "示范社区卫生服务中心2楼全科诊室"},
        headers=wang_b,
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json() == {"status": "accepted"}, resp.text

    def at_a(status: str) -> dict[str, Any] | None:
        got = requests.get(a.url + f"{API}/referrals/{referral_a}", headers=wang_a, timeout=10).json()
        return got if got["status"] == status else None

    accepted = _until(lambda: at_a("accepted"))
    assert accepted, "A never saw the acceptance"
    expected_utc = at.replace(tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(UTC)
    assert datetime.fromisoformat(accepted["appointment_at"]) == expected_utc
    assert accepted["place"] == "示范社区卫生服务中心2楼全科诊室" and accepted["responder_name"] == "王建国"
    # the patient is told where and when by SMS, in Beijing time (the account at A holds the phone)
    ((body,),) = a.rows("SELECT body FROM notifications WHERE kind = 'referral_accepted'")
    assert f"{day.year}年{day.month:02d}月{day.day:02d}日 09:30" in str(body)
    assert "示范社区卫生服务中心2楼全科诊室" in str(body) and "张德福" in str(body)
    mine = requests.get(a.url + f"{API}/referrals/{referral_a}", headers=zhang_a, timeout=10)
    assert mine.status_code == 200 and mine.json()["status"] == "accepted"

    # B reports the outcome: completed on both sides
    resp = requests.post(
        b.url + f"{API}/referrals/{referral_b}/outcome",
        json={"summary": "已到社区就诊，血压 128/78，继续原方案，每月社区随访。"},
        headers=wang_b,
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json() == {"status": "completed"}, resp.text
    completed = _until(lambda: at_a("completed"))
    assert completed and completed["outcome"]["summary"].startswith("已到社区就诊")
    assert requests.get(b.url + f"{API}/referrals/{referral_b}", headers=wang_b, timeout=10).json()["status"] == (
        "completed"
    )

    # B's physician confirms the carried diagnosis; 张伟 (B's demo world holds the same person)
    # asks for an online return visit at B for his father's hypertension
    carried = item["diagnoses"][0]["id"]
    resp = requests.post(
        b.url + f"{API}/referrals/{referral_b}/diagnoses/{carried}/confirm", headers=wang_b, timeout=10
    )
    assert resp.status_code == 200, resp.text
    zhang_b_world = world_b["accounts"]["patients"][0]
    zhang_b = _token(b, zhang_b_world["username"], zhang_b_world["password"])
    diagnoses = requests.get(b.url + f"{API}/diagnoses", headers=zhang_b, timeout=10).json()["items"]
    (dx,) = [d for d in diagnoses if d["institution"] == "北京朝阳医院" and d["diagnosed_on"] == "2020-06-01"]
    assert dx["status"] == "confirmed" and dx["icd10"] == "I10"
    father_b = dx["patient_id"]
    version = requests.get(b.url + f"{API}/consent", timeout=10).json()["version"]
    assert requests.post(
        b.url + f"{API}/consent", json={"patient_id": father_b, "version": version}, headers=zhang_b, timeout=10
    ).ok
    resp = requests.post(
        b.url + f"{API}/visits",
        json={"patient_id": father_b, "diagnosis_id": dx["id"], "department": "cardiology"},
        headers=zhang_b,
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    assert b.logged("referral.diagnosis_confirmed") == 1
