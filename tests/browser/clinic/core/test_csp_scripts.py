"""The pages' scripts run under the Content-Security-Policy (issue 21 item 14): the face
check's script, moved out of its template, still runs, and Chromium reports no CSP
violation on the pages a physician and a patient open."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from identity.models import Role
from tests.support import factories as f
from tests.support.live_server import LiveServer


def test_face_page_script_runs_and_nothing_is_blocked(
    browser: Any, live_server: LiveServer, ctx: Any, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    desk = browser.new_context(base_url=live_server.url, locale="zh-CN", viewport={"width": 1366, "height": 768})
    desk.set_default_timeout(15_000)
    page = desk.new_page()
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        page.goto("/login")
        page.fill("#username", doctor.username)
        page.fill("#password", f.PASSWORD)
        page.locator("main form button[type=submit]").first.click()
        expect(page).to_have_url(re.compile(r"/face"))
        # headless Chromium has no camera: face.js says so (it ran, from its static file)
        expect(page.locator("#camera-status")).to_have_text(re.compile(r"\S"))
        page.screenshot(path=str(screenshot_dir / f"{backend['name']}-csp-face.png"), full_page=True)
        page.goto("/")
        assert violations == []
    finally:
        desk.close()


def test_patient_pages_report_no_csp_violation(page: Any, shoot: Callable[[str], Path]) -> None:
    reg = f.patient()
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto("/login")
    page.fill("#username", reg.account.username)
    page.fill("#password", f.PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    for path in ("/", "/family", "/diagnoses"):
        page.goto(path)
    shoot("csp-diagnoses")
    assert violations == []
