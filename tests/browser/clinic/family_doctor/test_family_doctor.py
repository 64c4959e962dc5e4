"""Family doctor in a browser: a patient on a phone signs with a team (reading the
agreement), the lead physician at a desk countersigns from the panel, the patient enters
an urgent blood pressure and is told at once to go to a hospital in person, and the
team's panel shows the alert at the top."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work
from clinic.family_doctor import services
from identity import face_services
from identity import services as identity
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import faces as F
from tests.support import factories as f
from tests.support import fd_factories as fd
from tests.support.live_server import LiveServer

DESK = {"viewport": {"width": 1366, "height": 768}}


def test_sign_urgent_reading_go_in_person_and_team_alert(
    page: Any,
    browser: Any,
    live_server: LiveServer,
    shoot: Callable[[str], Path],
    screenshot_dir: Path,
    backend: dict[str, Any],
) -> None:
    cf.catalog()
    fd.set_level("基层")
    lead = f.staff(Role.PHYSICIAN, department="general")
    with acting_as(Actor(None, "test")), unit_of_work():
        face_services.enroll_face(identity.get_account(lead.id), F.astronaut())
        team = services.create_team("全科一组", lead.id, [services.MemberSpec("周护士", "nurse")])
        services.create_package(team.id, "高血压随访包", ["I10"], "每年至少4次随访，居家血压监测", 0)
    reg = f.patient("陈秀兰")
    cf.diagnosis(reg.patient.id, reg.account, "I10", confirm_by=lead)

    # --- the patient, on a phone, finds the family doctor from the home page and signs ----
    page.goto("/login")
    page.fill("#username", reg.account.username)
    page.fill("#password", f.PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    expect(page).to_have_url(re.compile(r"/$"))
    page.locator('nav.menu a[href="/family-doctor"]').click()
    page.locator(f'.fd-person[data-patient="{reg.patient.id}"] a.button').first.click()
    expect(page.locator("#agreement-text")).to_contain_text("可能的风险")
    page.locator("label.package").first.click()
    page.locator("#read").check()
    shoot("fd-01-sign")
    page.locator("#sign").click()
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(page.locator("#contract-status")).to_have_text("待医生确认")

    # --- the lead physician at a desk passes the face check and countersigns -------------
    desk = browser.new_context(base_url=live_server.url, locale="zh-CN", **DESK)
    desk.set_default_timeout(20_000)
    doc = desk.new_page()

    def doc_shot(name: str) -> None:
        doc.screenshot(path=str(screenshot_dir / f"{backend['name']}-{name}.png"), full_page=True)

    try:
        doc.goto("/login")
        doc.fill("#username", lead.username)
        doc.fill("#password", f.PASSWORD)
        doc.locator("main form button[type=submit]").first.click()
        expect(doc).to_have_url(re.compile(r"/face"))
        doc.set_input_files(
            "#face-file", {"name": "selfie.jpg", "mimeType": "image/jpeg", "buffer": F.cropped(F.astronaut(), 0.2)}
        )
        doc.locator("#face-form button[type=submit]").click()
        expect(doc.locator(".flash.ok")).to_be_visible()
        doc.locator('nav.menu a[href="/family-doctor/team"]').click()
        expect(doc.locator("#tile-pending .count")).to_have_text("1")
        doc.locator("#panel button.countersign").click()
        expect(doc.locator(".flash.ok")).to_contain_text("已确认签约")

        # --- the patient enters an urgent blood pressure -------------------------------
        page.reload()
        expect(page.locator("#contract-status")).to_have_text("生效中")
        expect(page.locator("#next-due")).to_be_visible()
        page.fill("#systolic", "186")
        page.fill("#diastolic", "112")
        page.locator("#save-reading").click()
        result = page.locator("#result.go-in-person")
        expect(result).to_be_visible()
        expect(result).to_contain_text("请立即到医院线下就诊")
        expect(result).to_contain_text("120")
        expect(page.locator("#chart svg.fd-chart")).to_have_count(1)
        shoot("fd-02-urgent")

        # --- the team's panel shows the alert first ------------------------------------
        doc.locator('nav.menu a[href="/family-doctor/team"]').click()
        expect(doc.locator("#tile-alerts .count")).to_have_text("1")
        first = doc.locator("#panel tr.panel-row").first
        expect(first).to_have_class(re.compile("row-urgent"))
        expect(first.locator(".alert-badge")).to_contain_text("186/112 mmHg")
        doc_shot("fd-03-panel-alert")
        first.locator("a").first.click()
        expect(doc.locator("#alerts")).to_contain_text("186/112")
        expect(doc.locator("svg.fd-chart")).to_have_count(1)
        doc_shot("fd-04-team-patient")
    finally:
        desk.close()
