"""Reclaiming an ID number in Chromium, by visible text only: the owner finds the path from
the registration refusal at phone size (390×844), asks with a new phone and the SMS code and
sees the neutral answer; an administrator at a desk (1366×768) finds the request in the menu,
with masked numbers and Beijing times, and approves it; the squatter's page session ends and
the owner logs in with the new phone."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from typing import Any

from flask import Flask
from playwright.sync_api import expect

from clinic.core.db import db
from identity.models import Patient, Role
from tests.browser.staff import PHONE, assert_readable, desk, log_in
from tests.support import factories as f
from tests.support.live_server import LiveServer

NEW_PASSWORD = "MyOwn2026pass"


def _card_photo(path: Path) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (856, 540), (232, 226, 210))
    ImageDraw.Draw(img).rectangle((40, 60, 260, 330), fill=(180, 170, 160))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    path.write_bytes(buf.getvalue())
    return path


def test_the_owner_reclaims_an_id_number_and_staff_approve_it(
    browser: Any,
    live_server: LiveServer,
    ctx: Flask,
    screenshot_dir: Path,
    sms_codes: list[str],
    backend: dict[str, Any],
) -> None:
    squat = f.patient(name="冒名者", born=date(1968, 11, 2))  # (its registration sent a code too)
    number = db.session.get(Patient, squat.patient.id).id_number
    admin = f.staff(Role.ADMIN)
    new_phone = f.phone()
    shots = screenshot_dir
    prefix = f"{backend['name']}-reclaim"

    # the squatter is logged in on their phone
    with desk(browser, live_server.url, shots, f"{prefix}-squatter", PHONE) as (squatter, _):
        log_in(squatter, squat.account.username)
        expect(squatter.get_by_role("link", name="我的诊断")).to_be_visible()

        with desk(browser, live_server.url, shots, f"{prefix}-owner", PHONE) as (page, shot):
            # registering is refused with one answer, and the refusal shows the way back
            page.goto("/")
            page.get_by_role("link", name="注册").first.click()
            page.get_by_label("真实姓名").fill("李真")
            page.get_by_label("身份证号").fill(number)
            page.get_by_label("手机号").fill(new_phone)
            page.get_by_label("密码", exact=True).fill(NEW_PASSWORD)
            page.get_by_label("再次输入密码").fill(NEW_PASSWORD)
            page.get_by_role("button", name="注册").click()
            expect(page.locator(".flash.error").first).to_contain_text("该身份证号或手机号已注册，请登录或找回账号")
            assert_readable(page)
            shot("01-register-refused")
            page.get_by_role("link", name="身份证号被他人注册？申请找回").click()

            # the request: a bad ID number first, refused next to the form; then the real one
            expect(page.get_by_role("heading", name="找回身份证号")).to_be_visible()
            page.get_by_label("真实姓名").fill("李真")
            page.get_by_label("身份证号").fill("110105194912310021")
            page.get_by_label("本人新的手机号").fill(new_phone)
            page.get_by_label("新账号的登录密码").fill(NEW_PASSWORD)
            page.get_by_label("再次输入密码").fill(NEW_PASSWORD)
            page.get_by_role("button", name="发送验证码").click()
            expect(page.locator(".flash.error")).to_contain_text("身份证号")
            page.get_by_label("身份证号").fill(number)
            page.get_by_label("新账号的登录密码").fill(NEW_PASSWORD)
            page.get_by_label("再次输入密码").fill(NEW_PASSWORD)
            page.get_by_label("身份证照片（选填）").set_input_files(str(_card_photo(shots / f"{prefix}-card.jpg")))
            assert_readable(page)
            shot("02-request")
            page.get_by_role("button", name="发送验证码").click()

            # the code: a wrong one is refused, the right one gives the neutral answer
            expect(page.get_by_role("heading", name="验证新手机号")).to_be_visible()
            code = sms_codes[-1]  # the last one sent: to the new phone
            page.get_by_label("短信验证码").fill("000000" if code != "000000" else "111111")
            page.get_by_role("button", name="提交申请").click()
            expect(page.locator(".flash.error")).to_contain_text("验证码错误")
            page.get_by_label("短信验证码").fill(code)
            page.get_by_role("button", name="提交申请").click()
            expect(page.locator("#accepted")).to_have_text("已受理，工作人员将核实后短信通知您")
            assert_readable(page)
            shot("03-accepted")

            # the login page has the same way in
            page.get_by_role("link", name="返回登录").click()
            expect(page.get_by_role("link", name="身份证号被他人注册？申请找回")).to_be_visible()
            shot("04-login-link")

        # the administrator's check at a desk
        with desk(browser, live_server.url, shots, f"{prefix}-admin") as (desk_page, desk_shot):
            log_in(desk_page, admin.username)
            desk_page.get_by_role("link", name="身份证号找回").click()
            row = desk_page.locator("#waiting tbody tr", has_text="李真")
            expect(row).to_contain_text(number[:3] + "*" * 11 + number[-4:])
            expect(row).to_contain_text(new_phone[:3] + "****" + new_phone[-4:])
            expect(row).to_contain_text("冒名者")
            expect(desk_page.locator("body")).not_to_contain_text(number)
            assert_readable(desk_page)
            desk_shot("05-waiting")
            with desk_page.expect_popup() as popup:
                row.get_by_role("link", name="查看照片").click()
            assert popup.value.evaluate("document.contentType") == "image/jpeg"
            popup.value.close()
            row.get_by_text("批准", exact=True).click()
            row.get_by_role("button", name="确认批准").click()
            expect(desk_page.locator(".flash.ok")).to_contain_text("已批准")
            expect(desk_page.locator("#none-waiting")).to_be_visible()
            expect(desk_page.locator("#decided")).to_contain_text("已批准")
            assert_readable(desk_page)
            desk_shot("06-approved")

        # the squatter's session has ended
        squatter.reload()
        expect(squatter.get_by_role("link", name="我的诊断")).to_have_count(0)
        expect(squatter.get_by_role("link", name="登录")).to_be_visible()

    # the owner logs in with the new phone and finds themself on the account
    with desk(browser, live_server.url, shots, f"{prefix}-owner-after", PHONE) as (page, shot):
        log_in(page, new_phone, NEW_PASSWORD)
        expect(page.locator("#patients")).to_contain_text("李真")
        assert_readable(page)
        shot("07-owner-home")
