"""A whole return visit in a browser: a patient on a phone registers, confirms the phone,
uploads proof of an in-person diagnosis; a physician at a workstation passes the face
check with a new photo of the enrolled face and confirms the proof; the patient accepts
consent, requests a visit and writes; the physician takes the visit, replies and
completes it with a note; the patient sees it completed, with the note."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from playwright.sync_api import expect

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work
from identity import face_services
from identity import services as identity
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import faces as F
from tests.support import factories as f
from tests.support.live_server import LiveServer

PASSWORD = "Chen-2024pw"
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def record_photo() -> bytes:
    """A small 'photo' of an outpatient record, made with Pillow."""
    img = Image.new("RGB", (600, 800), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 20, 580, 90), outline=(40, 40, 40), width=3)
    for i, line in enumerate(["Outpatient record", "Dx: I10 essential hypertension", "2024-03-01"]):
        draw.text((40, 130 + 40 * i), line, fill=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def enrolled_physician() -> Any:
    """A cardiologist whose reference face is the astronaut photo (Eileen Collins)."""
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    with acting_as(Actor(None, "test")), unit_of_work():
        face_services.enroll_face(identity.get_account(doctor.id), F.astronaut())
    return doctor


def test_return_visit_from_registration_to_the_completed_note(
    page: Any,
    browser: Any,
    live_server: LiveServer,
    sms_codes: list[str],
    shoot: Callable[[str], Path],
    screenshot_dir: Path,
    backend: dict[str, Any],
) -> None:
    cf.catalog()
    doctor = enrolled_physician()
    phone = f.phone()

    # --- the patient registers on a phone and confirms the phone number -----------------
    page.goto("/register")
    page.fill("#name", "陈秀兰")
    page.fill("#id_number", f.id_number(date(1962, 4, 9)))
    page.fill("#phone", phone)
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    expect(page).to_have_url(re.compile(r"/verify-phone$"))
    assert sms_codes, "no verification code was logged"
    page.fill("#code", sms_codes[-1])
    page.locator("main form button[type=submit]").first.click()
    expect(page).to_have_url(re.compile(r"/$"))

    # --- uploads proof of the in-person diagnosis, picking the condition from the list --
    page.locator('nav.menu a[href="/diagnoses"]').click()
    expect(page).to_have_url(re.compile(r"/diagnoses$"))
    page.locator("details.picker summary").click()
    page.locator("#condition-chips .chip", has_text="原发性高血压").click()
    expect(page.locator("#icd10")).to_have_value("原发性高血压")
    page.fill("#institution", "北京大学第一医院")
    page.fill("#diagnosed_on", "2024-03-01")
    page.select_option("#document_kind", "outpatient_record")
    page.set_input_files("#document", {"name": "record.png", "mimeType": "image/png", "buffer": record_photo()})
    shoot("visit-01-upload-filled")
    page.locator("#diagnosis-form button[type=submit]").click()
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(page.locator('#diagnoses .diagnosis[data-status="pending"]')).to_have_count(1)
    shoot("visit-02-proof-pending")

    # --- the physician logs in at a workstation, passes the face check -------------------
    desk = browser.new_context(base_url=live_server.url, locale="zh-CN", **DESKTOP)
    desk.set_default_timeout(20_000)
    doc = desk.new_page()

    def doc_shot(name: str) -> None:
        doc.screenshot(path=str(screenshot_dir / f"{backend['name']}-{name}.png"), full_page=True)

    try:
        doc.goto("/login")
        doc.fill("#username", doctor.username)
        doc.fill("#password", f.PASSWORD)
        doc.locator("main form button[type=submit]").first.click()
        expect(doc).to_have_url(re.compile(r"/face"))
        # a new photo of the enrolled person (another framing), not the enrolled bytes
        selfie = F.cropped(F.astronaut(), 0.2)
        doc.set_input_files("#face-file", {"name": "selfie.jpg", "mimeType": "image/jpeg", "buffer": selfie})
        doc.locator("#face-form button[type=submit]").click()
        expect(doc.locator(".flash.ok")).to_be_visible()

        # --- confirms the proof from the queue, looking at the document inline ----------
        doc.locator('nav.menu a[href="/physician/proofs"]').click()
        expect(doc.locator("#proofs .proof-row")).to_have_count(1)
        doc.locator("#proofs .proof-row a").click()
        expect(doc.locator("img#document")).to_be_visible()
        assert doc.locator("img#document").evaluate("img => img.naturalWidth") == 600
        doc_shot("visit-03-physician-proof")
        doc.locator("#confirm").click()
        expect(doc).to_have_url(re.compile(r"/physician/proofs$"))
        expect(doc.locator("#no-proofs")).to_be_visible()

        # --- the patient: consent first, then the request --------------------------------
        page.reload()
        expect(page.locator('#diagnoses .diagnosis[data-status="confirmed"]')).to_have_count(1)
        page.locator("#diagnoses .diagnosis a.button").click()
        expect(page).to_have_url(re.compile(r"/visits/new\?diagnosis="))
        page.fill("#complaint", "最近血压 135/85，按时服药，想复诊续方。")
        page.locator("#visit-form button[type=submit]").click()
        expect(page).to_have_url(re.compile(r"/consent\?next="))
        expect(page.locator("#consent-text")).to_contain_text("互联网")
        shoot("visit-04-consent")
        page.locator(".consent-person .accept-consent").click()
        expect(page).to_have_url(re.compile(r"/visits/new\?diagnosis="))
        page.fill("#complaint", "最近血压 135/85，按时服药，想复诊续方。")
        page.locator("#visit-form button[type=submit]").click()
        expect(page.locator('#visit[data-status="waiting"]')).to_be_visible()
        page.fill("#text", "医生您好，最近早上有点头晕。")
        page.locator("#send-button").click()
        expect(page.locator("#messages .msg.me")).to_contain_text("有点头晕")
        shoot("visit-05-room-waiting")

        # --- the physician takes the visit from the queue and replies --------------------
        doc.locator('nav.menu a[href="/physician/visits"]').click()
        expect(doc.locator("#waiting .visit-row")).to_have_count(1)
        doc.locator("#waiting .visit-row a").click()
        expect(doc.locator("#messages")).to_contain_text("有点头晕")
        doc.locator("#accept").click()
        expect(doc.locator('#visit[data-status="in_progress"]')).to_be_visible()
        doc.fill("#text", "头晕多在起床时吗？请起床动作慢一些，继续监测血压。")
        doc.locator("#send-button").click()
        expect(doc.locator("#messages .msg.me")).to_contain_text("继续监测血压")
        doc_shot("visit-06-physician-room")

        # --- the patient's room follows by itself (polling): status and the reply --------
        expect(page.locator('#visit[data-status="in_progress"]')).to_be_visible()
        expect(page.locator("#messages .msg.them")).to_contain_text("继续监测血压")
        page.fill("#text", "是的，起床时明显。")
        page.locator("#send-button").click()
        expect(page.locator("#messages .msg.me").last).to_contain_text("起床时明显")
        shoot("visit-07-room-in-progress")

        # --- the physician completes the visit with a note -------------------------------
        expect(doc.locator("#messages .msg.them").last).to_contain_text("起床时明显")
        note = "高血压复诊：血压控制尚可，体位性头晕。继续氨氯地平 5mg 每日一次，起床放慢，两周后复诊。"
        doc.fill("#note", note)
        doc.locator("#complete").click()
        expect(doc.locator('#visit[data-status="completed"]')).to_be_visible()
        expect(doc.locator("#send")).to_have_count(0)
    finally:
        desk.close()

    # --- the patient sees it completed, with the physician's note ------------------------
    expect(page.locator('#visit[data-status="completed"]')).to_be_visible()
    expect(page.locator("#visit-note")).to_contain_text("两周后复诊")
    expect(page.locator("#send")).to_have_count(0)
    shoot("visit-08-completed")
    page.locator('nav.menu a[href="/visits"]').click()
    expect(page.locator('#visits .visit-row[data-status="completed"]')).to_have_count(1)
    shoot("visit-09-my-visits")


def test_a_referred_patient_sees_what_to_do_and_where_first_on_the_phone(
    page: Any, ctx: Any, shoot: Callable[[str], Path]
) -> None:
    """The physician ended the visit (through the API here): the phone shows the advice first."""
    cf.catalog()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    api = ctx.test_client()
    opened = cf.open_visit(api, doctor)
    visit_id = opened["visit_id"]
    face = f.auth(cf.face_token(doctor))
    assert api.post(f"/api/v1/visits/{visit_id}/accept", headers=face).status_code == 200
    advice = "今天到心血管内科门诊就诊，携带近一周血压记录；如胸痛加重立即拨打120。"
    resp = api.post(
        f"/api/v1/visits/{visit_id}/terminate",
        json={"reason": "新发胸痛，需要当面检查和心电图。", "referral_advice": advice},
        headers=face,
    )
    assert resp.status_code == 200, resp.get_json()

    page.goto("/login")
    page.fill("#username", opened["reg"].account.username)
    page.fill("#password", f.PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    page.locator('nav.menu a[href="/visits"]').click()
    page.locator('#visits .visit-row[data-status="referred"] a').click()
    referral = page.locator("#referral")
    expect(referral).to_be_visible()
    expect(page.locator("#referral-advice")).to_have_text(advice)
    # it comes before the conversation, and nothing more can be written
    assert referral.bounding_box()["y"] < page.locator("#conversation").bounding_box()["y"]
    expect(page.locator("#send")).to_have_count(0)
    shoot("visit-10-referred")
