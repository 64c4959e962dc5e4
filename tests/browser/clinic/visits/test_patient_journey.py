"""A patient on a phone: register with a real name, confirm the phone, log out and in,
add a child, and read the pages in English and back in Chinese."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.support import factories as f

PASSWORD = "Zhang-2024pw"


def submit(page: Any) -> None:
    page.locator("main form button[type=submit]").first.click()


def test_patient_registers_confirms_phone_adds_a_child_and_switches_language(
    page: Any, sms_codes: list[str], shoot: Callable[[str], Path]
) -> None:
    phone = f.phone()
    child_born = date(date.today().year - 4, 3, 1)

    # Chinese by default
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("main")).to_contain_text("复诊")
    shoot("01-home")

    # register with a real name, a valid resident ID number, a phone and a password
    page.get_by_role("link", name="注册").first.click()
    expect(page).to_have_url(re.compile(r"/register$"))
    page.fill("#name", "张丽华")
    page.fill("#id_number", f.id_number(date(1986, 9, 14)))
    page.fill("#phone", phone)
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    shoot("02-register-filled")
    submit(page)

    # confirm the phone with the code the SMS backend sent
    expect(page).to_have_url(re.compile(r"/verify-phone$"))
    assert sms_codes, "no verification code was logged"
    shoot("03-verify-phone")
    page.fill("#code", sms_codes[-1])
    submit(page)
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(page.locator("#patients")).to_contain_text("张丽华")
    expect(page.locator("main")).not_to_contain_text("请确认您的手机号")
    shoot("04-home-verified")

    # log out, then log in with the phone number in its stored form (+86…; the number as a
    # patient types it is test_login_with_the_phone_number_as_typed below)
    page.locator("nav.menu form button").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#username", "+86" + phone)
    page.fill("#password", PASSWORD)
    shoot("05-login")
    submit(page)
    expect(page.locator("#patients")).to_contain_text("张丽华")

    # add a child as a family member (就诊人)
    page.locator("nav.menu").get_by_role("link", name="家庭成员").click()
    page.fill("#name", "张小宝")
    page.fill("#id_number", f.id_number(child_born))
    page.select_option("#relation", "child")
    submit(page)
    expect(page.locator("#patients li")).to_have_count(2)
    expect(page.locator("#patients")).to_contain_text("张小宝")
    shoot("06-family")

    # English, and back to Chinese; the choice sticks across pages
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("main")).to_contain_text("People on this account")
    expect(page.locator("nav.menu")).to_contain_text("Log out")
    shoot("07-family-en")
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("link", name="中文").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("nav.menu")).to_contain_text("退出登录")
    shoot("08-home-zh")


def test_login_with_the_phone_number_as_typed(page: Any) -> None:
    f_reg = f.patient(name="王强")  # a verified patient with a known password
    phone = f_reg.account.username.removeprefix("+86")
    page.goto("/login")
    page.fill("#username", phone)
    page.fill("#password", f.PASSWORD)
    submit(page)
    expect(page.locator("#patients")).to_contain_text("王强", timeout=3000)
