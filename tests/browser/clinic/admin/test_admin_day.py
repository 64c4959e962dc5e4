"""An administrator's day at a desk (1366×768), by the links and buttons on the screen only:
stop and resume online services, register a delivery partner (its secret shown once),
record an incident, create a physician and enroll the face (bad photos refused next to the
field), then find the enrollment in the audit viewer."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from playwright.sync_api import expect

from identity.models import Role
from tests.browser.staff import assert_readable, desk, log_in
from tests.support import clinic_factories as cf
from tests.support import faces as F
from tests.support import factories as f
from tests.support.live_server import LiveServer


def test_an_administrators_day(
    browser: Any, live_server: LiveServer, client: FlaskClient, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    cf.catalog()
    admin = f.staff(Role.ADMIN)
    in_a_year = (date.today() + timedelta(days=365)).isoformat()

    with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-admin") as (page, shot):
        log_in(page, admin.username)
        expect(page.locator("#running")).to_be_visible()
        assert_readable(page)
        shot("01-console")

        # stop, then resume, with reasons; both in the history
        page.get_by_role("link", name="服务暂停").click()
        page.locator("#switch").click()
        expect(page.locator("#switch-form .field-error")).to_be_visible()  # a reason is required
        page.fill("#reason", "系统升级维护")
        page.locator("#switch").click()
        expect(page.locator("#switch-state")).to_contain_text("已暂停")
        page.fill("#reason", "维护完成")
        page.locator("#switch").click()
        expect(page.locator("#switch-state")).to_contain_text("正常运行")
        expect(page.locator("#switch-history tbody tr")).to_have_count(2)
        assert_readable(page)
        shot("02-suspension")

        # a delivery partner: a bad endpoint is refused next to the field; the secret shown once
        page.get_by_role("link", name="配送企业").click()
        page.fill("#name", "安达医药配送")
        page.fill("#license_no", "YPJY-京-2026-0099")
        page.fill("#license_valid_until", (date.today() - timedelta(days=1)).isoformat())
        page.fill("#regions", "11, 12")
        page.fill("#endpoint", "ftp://anda.example.com/orders")
        page.locator("#register-partner").click()
        expect(page.locator("#partner-form")).to_contain_text("许可证已过期")
        assert page.locator("#partner-form .field-error").count() >= 1
        page.fill("#license_valid_until", in_a_year)
        page.locator("#register-partner").click()
        expect(page.locator("#partner-form")).to_contain_text("http")  # the endpoint rule, in words
        page.fill("#endpoint", "https://anda.example.com/orders")
        page.locator("#register-partner").click()
        expect(page.locator("#secret-once")).to_be_visible()
        expect(page.locator("#partners")).to_contain_text("安达医药配送")
        shot("03-partner-secret")
        page.get_by_role("link", name="配送企业").click()
        expect(page.locator("#secret-once")).to_have_count(0)  # never shown again

        # an incident
        page.get_by_role("link", name="安全事件").click()
        page.select_option("#kind", label="数据安全事件")
        page.select_option("#severity", label="高")
        page.fill("#what", "发现一台工作站异常登录")
        page.fill("#scope", "医师工作站一台，未发现数据外泄")
        page.fill("#found_at", (date.today() - timedelta(days=1)).isoformat() + "T09:30")
        page.locator("#record-incident").click()
        expect(page.locator("#incidents")).to_contain_text("发现一台工作站异常登录")
        assert_readable(page)
        shot("04-incidents")

        # a physician: an expired licence is refused next to the field; then the face
        page.get_by_role("link", name="员工账号").click()
        page.select_option("#role", "physician")
        page.fill("#name", "王医生")
        page.fill("#username", "wang.doctor")
        page.fill("#password", "Clinic-2026-pass")
        page.select_option("#department", label="心血管内科")
        page.fill("#license_no", "110101199001011234")
        page.fill("#license_valid_until", (date.today() - timedelta(days=3)).isoformat())
        page.locator("#create-staff").click()
        expect(page.locator("#staff-form")).to_contain_text("资质已过期")
        expect(page.locator("#staff tbody tr", has_text="王医生")).to_have_count(0)  # nothing half-saved
        page.fill("#password", "Clinic-2026-pass")
        page.fill("#license_valid_until", (date.today() + timedelta(days=30)).isoformat())
        page.locator("#create-staff").click()
        expect(page).to_have_url(re.compile(r"/admin/staff/.+/face"))
        for bad in (cf.png(), F.side_by_side(F.astronaut(), F.grace_hopper())):
            page.set_input_files("#photo", {"name": "photo.png", "mimeType": "image/png", "buffer": bad})
            page.locator("#enroll").click()
            expect(page.locator("#face-enroll .field-error")).to_be_visible()
        page.set_input_files("#photo", {"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": F.astronaut()})
        page.locator("#enroll").click()
        row = page.locator("#staff tbody tr", has_text="王医生")
        expect(row).to_contain_text("已录入")
        expect(row).to_contain_text("即将到期")  # a credential expiring within 60 days
        assert_readable(page)
        shot("05-staff")

        # the audit viewer: find the face enrollment by choosing, not typing ids
        page.get_by_role("link", name="审计日志").click()
        page.select_option("#f-action", label="人脸核验")
        page.get_by_role("button", name="查询").click()
        expect(page.locator("#entries")).to_contain_text("录入人脸")
        expect(page.locator("#entries")).to_contain_text("管理员")
        assert_readable(page)
        shot("06-audit")
        with page.expect_download() as got:
            page.locator("#export").click()
        assert got.value.suggested_filename.endswith(".csv")
