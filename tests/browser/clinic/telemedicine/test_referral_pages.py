"""The referral pages, by the links and buttons on the screen only (issue 19 items 4 and 7).

This clinic is a primary-care centre (基层). A tertiary partner's signed referral down
arrives; a physician (1366×768) finds it under 双向转诊, accepts it with a Beijing-time
appointment and place, confirms the diagnosis the patient comes with; the patient (390×844)
sees where and when under 我的转诊; the physician reports the outcome. Then the physician
refers one of their own patients up to the partner from the referral form. Every page
shows words, not codes, and fits the screen."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient
from playwright.sync_api import expect
from sqlalchemy import select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.telemedicine import envelope, partners
from clinic.telemedicine.models import Referral
from identity import face_services
from identity import services as identity
from identity.models import Institution, Role
from tests.browser.staff import PHONE, assert_readable, desk, log_in
from tests.support import clinic_factories as cf
from tests.support import faces as F
from tests.support import factories as f
from tests.support.live_server import LiveServer
from tests.support.referral_messages import PARTNER_URL, request_from_partner


def _partner(client: FlaskClient) -> envelope.InstitutionKey:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = envelope.institution_key(pem.decode())
    today = partners.today()
    admin = f.auth(f.token(client, f.staff(Role.ADMIN).username))
    resp = client.post(
        "/api/v1/admin/partner-institutions",
        json={
            "name": "甲市第一人民医院",
            "license_no": "PDY-A",
            "level": "三级",
            "base_url": PARTNER_URL,
            "public_jwk": dict(key.public_jwk),
            "services": ["referral"],
            "departments": [],
            "fee_fen": 0,
            "fee_split": {"inviting": 20, "invited": 80},
            "valid_from": (today - timedelta(days=1)).isoformat(),
            "valid_until": (today + timedelta(days=364)).isoformat(),
        },
        headers=admin,
    )
    assert resp.status_code == 201, resp.get_json()
    return key


def test_referral_pages_receive_answer_confirm_and_send(
    browser: Any, live_server: LiveServer, client: FlaskClient, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    cf.catalog()
    with unit_of_work() as s:
        inst = s.get(Institution, 1)
        assert inst is not None
        inst.level = "基层"
    key = _partner(client)
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    with acting_as(Actor(None, "test")), unit_of_work():
        face_services.enroll_face(identity.get_account(doctor.id), F.astronaut())
    referred = f.patient(name="吴桂兰", born=date(1952, 4, 9))
    token, _shared = request_from_partner(key, "吴桂兰", referred.patient.id_number, direction="down")
    resp = client.post("/api/v1/federation/messages", data=token, headers={"Content-Type": "application/jose"})
    assert resp.status_code == 202, resp.get_json()
    # a patient of this physician's own, to refer up
    own = cf.ready_patient(client, doctor, "E11")
    day = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=2)).date()

    with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-referral") as (page, shot):
        log_in(page, doctor.username)
        expect(page).to_have_url(re.compile(r"/face"))
        selfie = F.cropped(F.astronaut(), 0.2)
        page.set_input_files("#face-file", {"name": "selfie.jpg", "mimeType": "image/jpeg", "buffer": selfie})
        page.locator("#face-form button[type=submit]").click()
        expect(page.locator("#face-text")).to_contain_text("人脸核验有效")

        page.get_by_role("link", name="双向转诊").click()
        expect(page.locator("#to-answer")).to_contain_text("吴桂兰")
        assert_readable(page)
        shot("01-queue")
        page.locator("#to-answer a", has_text="吴桂兰").click()
        expect(page.locator("#referral-status")).to_have_text("待接收")
        expect(page.locator("#identity-match")).to_contain_text("已按真实姓名和身份证号匹配")
        expect(page.locator("#summary")).to_contain_text("170/100")
        assert_readable(page)
        shot("02-referral")
        page.fill("#accept-appointment_at", f"{day.isoformat()}T14:30")
        page.fill("#accept-place", "社区卫生服务中心1楼全科诊室")
        page.get_by_role("button", name="接收并通知患者").click()
        expect(page.locator("#referral-status")).to_have_text("已接收")
        expect(page.locator("#appointment")).to_contain_text(f"{day.isoformat()} 14:30")
        page.get_by_role("button", name="确认此诊断").click()
        expect(page.locator("#carried")).to_contain_text("本院已确认")
        assert_readable(page)
        shot("03-accepted-confirmed")

        # the patient, on a phone: where and when
        with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-referral-patient", PHONE) as (
            phone,
            pshot,
        ):
            log_in(phone, referred.account.username)
            phone.get_by_role("link", name="我的转诊").click()
            phone.locator("#my-referrals a").first.click()
            expect(phone.locator("#when")).to_have_text(f"{day.isoformat()} 14:30")
            expect(phone.locator("#where")).to_contain_text("社区卫生服务中心1楼全科诊室")
            assert_readable(phone)
            pshot("01-where-and-when")

        page.fill("#outcome-summary", "血压控制平稳，继续社区随访。")
        page.get_by_role("button", name="反馈诊疗结果").click()
        expect(page.locator("#referral-status")).to_have_text("已完成")
        expect(page.locator("#outcome")).to_contain_text("继续社区随访")
        assert_readable(page)

        # refer one of the physician's own patients up to the tertiary partner
        page.get_by_role("link", name="返回转诊列表").click()
        page.get_by_role("link", name="发起转诊").click()
        page.select_option("#patient_id", label=own["reg"].patient.name)
        offered = page.locator("#department option").all_inner_texts()
        assert "心血管内科" in offered and "精神科" not in offered  # never a department not approved online
        page.select_option("#department", label="心血管内科")
        page.fill("#reason", "血糖控制不佳，需上级医院调整方案")
        page.fill("#summary", "二甲双胍联合格列美脲三个月，空腹血糖仍 11 mmol/L。")
        assert_readable(page)
        shot("04-new")
        page.get_by_role("button", name="发送转诊").click()
        expect(page.locator("#referral-status")).to_have_text("待接收")
        expect(page.locator("h1")).to_contain_text("向上转诊")
        assert_readable(page)
        shot("05-sent")

    db.session.remove()
    sent = db.session.scalars(select(Referral).where(Referral.role == "sending")).one()
    assert sent.direction == "up" and sent.patient_id == own["reg"].patient.id
