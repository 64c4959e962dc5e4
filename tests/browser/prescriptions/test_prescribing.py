"""Prescribing in Chromium at a workstation: a face-verified physician in a visit in progress
searches the catalog, adds a drug, sees the rules answer live as the form changes (a
supply over the limit, a controlled drug), fixes the draft, signs, and sees the
prescription pending the pharmacist's review."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
from tests.support.rx_factories import seed

DESKTOP = {"viewport": {"width": 1280, "height": 900}}


def test_a_physician_prescribes_with_the_rules_shown_live(
    browser: Any,
    live_server: LiveServer,
    ctx: Any,
    screenshot_dir: Path,
    backend: dict[str, Any],
) -> None:
    cf.catalog()
    seed()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    with acting_as(Actor(None, "test")), unit_of_work():
        face_services.enroll_face(identity.get_account(doctor.id), F.astronaut())
    api = ctx.test_client()
    visit_id = cf.open_visit(api, doctor)["visit_id"]
    assert api.post(f"/api/v1/visits/{visit_id}/accept", headers=f.auth(cf.face_token(doctor))).status_code == 200

    desk = browser.new_context(base_url=live_server.url, locale="zh-CN", **DESKTOP)
    desk.set_default_timeout(20_000)
    page = desk.new_page()

    def shot(name: str) -> None:
        page.screenshot(path=str(screenshot_dir / f"{backend['name']}-{name}.png"), full_page=True)

    try:
        # password, then the face check, then straight to the prescribing page
        page.goto(f"/physician/visits/{visit_id}/prescribe")
        expect(page).to_have_url(re.compile(r"/login"))
        page.fill("#username", doctor.username)
        page.fill("#password", f.PASSWORD)
        page.locator("main form button[type=submit]").first.click()
        expect(page).to_have_url(re.compile(r"/face"))
        selfie = F.cropped(F.astronaut(), 0.2)
        page.set_input_files("#face-file", {"name": "selfie.jpg", "mimeType": "image/jpeg", "buffer": selfie})
        page.locator("#face-form button[type=submit]").click()
        expect(page.locator(".flash.ok")).to_be_visible()
        page.goto(f"/physician/visits/{visit_id}/prescribe")
        expect(page.locator("#rx-form")).to_be_visible()

        # search as you type, add from the results
        page.fill("#q", "氨氯地平")
        result = page.locator("#results li.result", has_text="苯磺酸氨氯地平片").first
        expect(result).to_be_visible()
        result.locator("button.add").click()
        expect(page.locator("#items li.item")).to_have_count(1)
        expect(page.locator("#rules-ok")).to_be_visible()

        # 10 days for a chronic condition without the long-term flag: over the 7-day limit
        page.fill('input[name="items-0-days"]', "10")
        violation = page.locator('#violations li[data-code="supply_exceeds_limit"]')
        expect(violation).to_be_visible()
        expect(violation).to_contain_text("10天")
        expect(page.locator("#rules-ok")).to_be_hidden()
        expect(page.locator("#items li.item.broken")).to_have_count(1)

        # a controlled drug: refused online, whatever the rest says
        page.fill("#q", "羟考酮")
        page.locator("#results li.result", has_text="盐酸羟考酮缓释片").first.locator("button.add").click()
        expect(page.locator('#violations li[data-code="controlled_substance"]')).to_be_visible()
        shot("rx-01-live-violations")

        # fix both: remove the controlled drug, back to 7 days
        page.locator("#items li.item").nth(1).locator("button.remove").click()
        expect(page.locator("#items li.item")).to_have_count(1)
        page.fill('input[name="items-0-days"]', "7")
        page.fill('input[name="items-0-quantity"]', "7")
        expect(page.locator("#violations li")).to_have_count(0)
        expect(page.locator("#rules-ok")).to_be_visible()
        shot("rx-02-ready")

        page.locator("#sign").click()
        expect(page).to_have_url(re.compile(r"/physician/prescriptions/[0-9a-f-]+$"))
        expect(page.locator('#prescription[data-status="pending_review"]')).to_be_visible()
        expect(page.locator("#prescription tr.rx-item")).to_have_count(1)
        expect(page.locator("#rx-document")).to_have_attribute("href", re.compile(r"/document$"))
        shot("rx-03-signed")
    finally:
        desk.close()
