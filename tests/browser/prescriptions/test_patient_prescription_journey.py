"""Issue 17 on a phone (390×844): a patient registers, is told their proof was confirmed,
chooses a physician from the directory, requests a visit (through the consent detour,
which keeps what was typed), chats, is told of the prescription, opens its PDF, pays
(payments off: nothing to pay), gives an address with the province → city → district
picker, follows the timeline to delivered and rates the visit — only by clicking what is
on the screen. The staff's side goes through the API (their pages have their own tests).
A second test: a duplicate request lands on the open visit."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.visits.models import Diagnosis
from identity.models import Account, Role, StaffProfile
from pharmacy import partners as pharmacy
from pharmacy.models import DeliveryPartner
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.partner_standin import PartnerStandin, sign
from tests.support.rx_factories import item, seed

PASSWORD = "Chen-2024pw"
SECRET = "partner-secret-0123456789-abcdefghij"


@pytest.fixture
def partner_server(ctx: Any) -> Iterator[PartnerStandin]:
    server = PartnerStandin(SECRET).start()
    yield server
    server.stop()


def register(page: Any, sms_codes: list[str], name: str) -> str:
    phone = f.phone()
    page.goto("/")
    page.locator('a[href="/register"]').first.click()
    page.fill("#name", name)
    page.fill("#id_number", f.id_number(date(1962, 4, 9)))
    page.fill("#phone", phone)
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    expect(page).to_have_url(re.compile(r"/verify-phone$"))
    page.fill("#code", sms_codes[-1])
    page.locator("main form button[type=submit]").first.click()
    expect(page).to_have_url(re.compile(r"/$"))
    return phone


def upload_proof(page: Any) -> None:
    page.locator('nav.menu a[href="/diagnoses"]').click()
    page.locator("details.picker summary").click()
    page.locator('#condition-chips .chip[data-name="原发性高血压"]').click()
    page.fill("#institution", "北京大学第一医院")
    page.fill("#diagnosed_on", "2024-03-01")
    page.set_input_files("#document", {"name": "record.png", "mimeType": "image/png", "buffer": cf.png((300, 400))})
    page.locator("#diagnosis-form button[type=submit]").click()
    expect(page.locator('#diagnoses .diagnosis[data-status="pending"]')).to_have_count(1)


def face(doctor_id: Any) -> dict[str, str]:
    account = db.session.get(Account, doctor_id)
    assert account is not None
    return f.auth(cf.face_token(account))


def confirm_newest_proof(api: Any, doctor_id: Any) -> None:
    diag_id = db.session.scalars(select(Diagnosis.id).order_by(Diagnosis.created_at.desc())).first()
    resp = api.post(f"/api/v1/diagnoses/{diag_id}/confirm", headers=face(doctor_id))
    assert resp.status_code == 200, resp.get_json()


def test_from_registration_to_a_delivered_prescription_on_a_phone(
    page: Any, ctx: Any, sms_codes: list[str], shoot: Callable[[str], Path], partner_server: PartnerStandin
) -> None:
    cf.catalog()
    drugs = seed()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    doctor_id = doctor.id
    with acting_as(Actor(None, "test")), unit_of_work():
        pharmacy.create_partner(
            pharmacy.PartnerSpec(
                "顺达", "LIC-1", date.today() + timedelta(days=90), ["11"], False, 1, partner_server.url, SECRET
            )
        )
    partner_id = str(db.session.scalars(select(DeliveryPartner.id)).one())
    doctor_name = db.session.scalars(select(StaffProfile.name).where(StaffProfile.account_id == doctor.id)).one()
    api = ctx.test_client()

    register(page, sms_codes, "陈秀兰")
    upload_proof(page)
    confirm_newest_proof(api, doctor.id)

    # --- told in the app: the header counts it, the centre links to the proofs page --------
    page.reload()
    expect(page.locator("#unread-count")).to_have_text("1")
    page.locator("#notifications-link").click()
    expect(page.locator("#notifications .notification.unread")).to_contain_text("已由医生确认")
    shoot("rx-01-notifications")
    page.locator("#notifications .notification-open").first.click()
    expect(page).to_have_url(re.compile(r"/diagnoses$"))
    expect(page.locator("#unread-count")).to_have_count(0)

    # --- chooses a physician from the directory and requests the visit ----------------------
    page.locator("#menu-physicians").click()
    expect(page.locator("#physicians .physician")).to_have_count(1)
    expect(page.locator("#physicians .physician")).to_contain_text("在岗")
    shoot("rx-02-directory")
    page.locator("#physicians .physician a.choose").click()
    expect(page.locator("#chosen-physician")).to_contain_text(doctor_name)
    page.fill("#complaint", "血压 135/85，想续开氨氯地平。")
    page.locator("#visit-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/consent\?next="))
    page.locator(".consent-person .accept-consent").click()
    expect(page.locator("#complaint")).to_have_value("血压 135/85，想续开氨氯地平。")  # kept
    page.locator("#visit-form button[type=submit]").click()
    expect(page.locator('#visit[data-status="waiting"]')).to_be_visible()
    expect(page.locator("#queue-position")).to_contain_text("1")
    shoot("rx-03-waiting")

    # --- the physician takes it, writes, prescribes and completes (API) ---------------------
    visit_id = page.url.rstrip("/").split("/")[-1]
    doc_h = face(doctor_id)
    assert api.post(f"/api/v1/visits/{visit_id}/accept", headers=doc_h).status_code == 200
    expect(page.locator('#visit[data-status="in_progress"]')).to_be_visible(timeout=20_000)
    expect(page.locator("#video-join")).to_be_visible()
    assert page.evaluate("() => typeof Twilio !== 'undefined' && typeof Twilio.Video.connect === 'function'")
    api.post(f"/api/v1/visits/{visit_id}/messages", json={"text": "继续氨氯地平 5mg 每日一次。"}, headers=doc_h)
    expect(page.locator("#messages .msg.them")).to_contain_text("氨氯地平", timeout=20_000)
    page.fill("#text", "好的，谢谢医生。")
    page.locator("#send-button").click()
    expect(page.locator("#messages .msg.me").last).to_contain_text("谢谢医生")
    made = api.post(
        f"/api/v1/visits/{visit_id}/prescriptions", json={"items": [item(drugs["amlodipine"])]}, headers=doc_h
    )
    assert made.status_code == 201, made.get_json()
    rx = made.get_json()["id"]
    done = api.post(f"/api/v1/visits/{visit_id}/complete", json={"note": "血压控制尚可，继续服药。"}, headers=doc_h)
    assert done.status_code == 200
    pharmacist = f.auth(f.token(api, f.staff(Role.PHARMACIST).username))
    assert api.post("/api/v1/pharmacy/queue/claim", headers=pharmacist).status_code == 200
    decided = api.post(f"/api/v1/pharmacy/prescriptions/{rx}/review", json={"decision": "approve"}, headers=pharmacist)
    assert decided.status_code == 200, decided.get_json()

    # --- the patient: from the notification to the prescription, its PDF, the address ------
    page.reload()
    page.locator("#notifications-link").click()
    page.locator('#notifications .notification[data-kind="approved"] .notification-open').click()
    expect(page).to_have_url(re.compile(rf"/prescriptions/{rx}/track$"))
    expect(page.locator("#rx-status")).to_contain_text("审核通过")
    pdf = page.request.get(page.locator("#pdf-link").get_attribute("href"))
    assert pdf.status == 200 and pdf.body()[:4] == b"%PDF"
    page.fill("#recipient_name", "陈秀兰")
    page.fill("#phone", "12345")
    page.select_option("#province", label="北京市")
    expect(page.locator("#city option")).to_have_count(2)
    expect(page.locator("#district option", has_text="朝阳区")).to_have_count(1)
    page.select_option("#district", label="朝阳区")
    page.fill("#address", "示范路 1 号 2 单元 301")
    page.locator("#save-address").click()
    expect(page.locator(".flash.error")).to_contain_text("手机号")  # the field in words
    page.fill("#phone", "138 0013 8000")
    page.locator("#save-address").click()
    expect(page.locator(".flash.success, .flash.ok")).to_be_visible()
    expect(page.locator("#saved-address")).to_contain_text("朝阳区")
    expect(page.locator("#district")).to_have_value("110105")
    shoot("rx-04-address")

    # --- dispensed and delivered (pharmacist, partner callbacks); the timeline follows ------
    checker = f.staff(Role.PHARMACIST)  # 调配 by the reviewer, 核对、发药 by a colleague
    disp = api.post(
        f"/api/v1/pharmacy/prescriptions/{rx}/dispense", json={"checked_by": str(checker.id)}, headers=pharmacist
    )
    assert disp.status_code == 200, disp.get_json()
    pid = partner_id
    for st in ("picked_up", "delivered"):
        raw = json.dumps({"event_id": st, "prescription_id": rx, "status": st, "at": "2026-11-23T08:00:00Z"})
        resp = api.post(f"/api/v1/partners/{pid}/callbacks", data=raw, headers=sign(SECRET, raw.encode()))
        assert resp.status_code == 200, resp.get_json()
    page.locator("#menu-prescriptions").click()
    page.locator(f'#prescriptions .rx[data-prescription="{rx}"] a.button').click()
    expect(page.locator("#delivery-status")).to_contain_text("已送达")
    expect(page.locator('#events li[data-status="delivered"]')).to_contain_text("2026-11-23 16:00")  # Beijing time
    shoot("rx-05-timeline")

    # --- rates the visit from the visit room ------------------------------------------------
    page.locator('nav.menu a[href="/visits"]').click()
    page.locator('#visits .visit-row[data-status="completed"] a').first.click()
    expect(page.locator("#visit-prescriptions")).to_be_visible()
    page.locator('#rate-form input[value="5"]').check()
    page.fill("#comment", "医生很耐心")
    page.locator("#rate").click()
    expect(page.locator("#rated")).to_contain_text("医生很耐心")
    shoot("rx-06-rated")


def test_a_duplicate_request_lands_on_the_open_visit(
    page: Any, ctx: Any, sms_codes: list[str], shoot: Callable[[str], Path]
) -> None:
    cf.catalog()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    api = ctx.test_client()
    register(page, sms_codes, "王建国")
    upload_proof(page)
    confirm_newest_proof(api, doctor.id)
    page.locator('nav.menu a[href="/visits/new"], #menu-physicians').first.click()
    if "/physicians" in page.url:
        page.locator("#physicians .physician a.choose").click()
    page.fill("#complaint", "第一次申请")
    page.locator("#visit-form button[type=submit]").click()
    page.locator(".consent-person .accept-consent").click()
    page.locator("#visit-form button[type=submit]").click()
    expect(page.locator('#visit[data-status="waiting"]')).to_be_visible()
    first = page.url
    page.locator("#menu-physicians").click()
    page.locator("#physicians .physician a.choose").click()
    page.fill("#complaint", "又申请了一次")
    page.locator("#visit-form button[type=submit]").click()
    expect(page).to_have_url(first)
    expect(page.locator(".flash.error")).to_contain_text("已有一个进行中的复诊")
    shoot("rx-07-duplicate")
