"""Issue 16 item 5 leftovers at a desk (1366×768), by what is on the screen only: the
administrator changes a condition in the catalog (a bad name refused next to the field in
words), then follows an incident's SMS to the regulator (text, masked number, Beijing time,
delivery state)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import expect

from identity.models import Role
from tests.browser.staff import assert_readable, desk, log_in
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.live_server import LiveServer
from tests.support.twilio_standin import TwilioStandin


def test_an_administrator_changes_a_condition_in_the_catalog(
    browser: Any, live_server: LiveServer, client: FlaskClient, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    cf.catalog()
    admin = f.staff(Role.ADMIN)
    with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-catalog") as (page, shot):
        log_in(page, admin.username)
        page.get_by_role("link", name="病种目录").click()
        row = page.locator("#conditions tbody tr", has_text="血管舒缩性和变应性鼻炎")
        expect(row).to_contain_text("全科")
        assert_readable(page)
        shot("01-catalog")
        row.get_by_role("link", name="修改").click()
        expect(page.get_by_role("heading", name="修改病种 · 血管舒缩性和变应性鼻炎")).to_be_visible()
        page.get_by_label("中文名称").fill("")
        page.get_by_role("button", name="保存修改").click()
        expect(page.locator("#condition-edit .field-error")).to_have_text("请填写疾病的中文名称。")
        assert_readable(page)
        shot("02-refused")
        page.get_by_label("中文名称").fill("过敏性鼻炎")
        page.get_by_label("英文名称").fill("Allergic rhinitis")
        page.get_by_label("科室").select_option(label="呼吸内科")
        page.get_by_label("慢性病").check()
        page.get_by_label("提供在线复诊").uncheck()
        shot("03-filled")
        page.get_by_role("button", name="保存修改").click()
        expect(page.locator(".flash")).to_contain_text("已保存“过敏性鼻炎”")
        row = page.locator("#conditions tbody tr", has_text="过敏性鼻炎")
        expect(row).to_contain_text("呼吸内科")
        expect(row).to_contain_text("Allergic rhinitis")
        expect(row.locator("td").nth(2)).to_have_text("是")  # chronic
        expect(row.locator("td").nth(3)).to_have_text("否")  # no longer offered
        assert_readable(page)
        shot("04-saved")
        # offered again, from the same row
        row.get_by_role("link", name="修改").click()
        page.get_by_label("提供在线复诊").check()
        page.get_by_role("button", name="保存修改").click()
        expect(page.locator("#conditions tbody tr", has_text="过敏性鼻炎").locator("td").nth(3)).to_have_text("是")
        # the audit viewer shows the change in words
        page.get_by_role("link", name="审计日志").click()
        expect(page.locator("body")).to_contain_text("修改病种目录")
        shot("05-audit")


def record(page: Any, what: str) -> None:
    page.get_by_role("link", name="安全事件").click()
    page.get_by_label("类别").select_option(label="数据安全事件")
    page.get_by_label("严重程度").select_option(label="高")
    page.fill("#what", what)
    page.fill("#scope", "医师工作站一台，未发现数据外泄")
    page.fill("#found_at", (date.today() - timedelta(days=1)).isoformat() + "T09:30")
    page.get_by_role("button", name="登记并通知监管部门").click()
    expect(page.locator("#incidents")).to_contain_text(what)


def test_an_administrator_follows_the_sms_to_the_regulator(
    browser: Any,
    live_server: LiveServer,
    live_app: Flask,
    client: FlaskClient,
    twilio_standin: TwilioStandin,
    monkeypatch: pytest.MonkeyPatch,
    screenshot_dir: Path,
    backend: dict[str, Any],
) -> None:
    for key, value in twilio_standin.app_settings().items():
        monkeypatch.setitem(live_app.config, key, value)
    monkeypatch.setitem(live_app.config, "TWILIO_SMS_FROM", "+15005550006")
    monkeypatch.setitem(live_app.config, "REGULATOR_CONTACT_PHONE", "+8613900139000")
    cf.catalog()
    admin = f.staff(Role.ADMIN)
    with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-incident-sms") as (page, shot):
        log_in(page, admin.username)
        record(page, "发现一台工作站异常登录")
        row = page.locator("#incidents tbody tr", has_text="发现一台工作站异常登录")
        expect(row).to_contain_text("已由短信平台发出")
        assert_readable(page)
        shot("01-list")
        row.get_by_role("link", name="查看短信").click()
        expect(page.locator("#sms-state")).to_have_text("已由短信平台发出")
        [sent] = [m for m in twilio_standin.outbox if m["kind"] == "message"]
        expect(page.locator("#sms-text")).to_have_text(sent["body"])
        expect(page.locator("#sms-to")).to_have_text("+86 139****9000")
        expect(page.locator("#sms-sent")).to_have_text(re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$"))
        expect(page.locator("#sms-reference")).to_have_text(re.compile(r"^SM[0-9a-f]{32}$"))
        expect(page.locator("body")).not_to_contain_text("13900139000")
        assert_readable(page)
        shot("02-sent")

        # Twilio is down: the admin sees the SMS written, failed, and being retried
        twilio_standin.failure = 503
        page.get_by_role("link", name="全部安全事件").click()
        record(page, "备份磁带遗失")
        row = page.locator("#incidents tbody tr", has_text="备份磁带遗失")
        expect(row).to_contain_text("发送失败，正在重试")
        row.get_by_role("link", name="查看短信").click()
        expect(page.locator("#sms-state")).to_have_text("发送失败，正在重试")
        expect(page.locator("#sms-text")).to_contain_text("备份磁带遗失")
        expect(page.locator("#sms-sent")).to_have_text("—")
        expect(page.locator("#sms-failures")).to_contain_text("1 次")
        assert_readable(page)
        shot("03-retrying")
