"""The administrator's partner institutions page in Chromium at a workstation (1366×768,
zh-CN): reached from the menu, a cooperation agreement registered by filling the form (the
partner's key fetched from its published JWKS and pinned), then listed in words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import expect
from sqlalchemy import select

from clinic.core.db import db
from clinic.telemedicine import envelope
from clinic.telemedicine.models import PartnerInstitution
from identity.models import Role
from tests.browser.staff import assert_readable, log_in
from tests.support import factories as f
from tests.support.live_server import LiveServer

STAFF = {"viewport": {"width": 1366, "height": 768}}


def _partner_jwks_app(jwk: dict[str, Any]) -> Any:
    body = json.dumps({"keys": [jwk]}).encode()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def test_an_administrator_registers_a_partner_by_clicking(
    browser: Any, live_server: LiveServer, ctx: Any, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    f.institution()
    admin = f.staff(Role.ADMIN)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = envelope.institution_key(pem.decode())
    desk = browser.new_context(base_url=live_server.url, locale="zh-CN", **STAFF)
    desk.set_default_timeout(20_000)
    page = desk.new_page()
    with LiveServer(_partner_jwks_app(key.public_jwk)) as partner:
        try:
            log_in(page, admin.username)
            page.get_by_role("link", name="合作机构", exact=True).click()
            expect(page.locator("h1")).to_have_text("合作机构")
            expect(page.locator("#partners-empty")).to_be_visible()
            page.fill("#name", "乙市第一人民医院")
            page.fill("#license_no", "PDY12345678")
            page.select_option("#level", label="三级")
            page.fill("#base_url", partner.url)
            page.fill("#jwks_url", partner.url + "/.well-known/jwks.json")
            page.get_by_label("心血管内科").check()
            page.get_by_label("内分泌科").check()
            page.select_option("#consult_min_title", label="主任医师")
            page.fill("#fee_yuan", "200")
            page.fill("#split_inviting", "30")  # a split that does not sum to 100 cannot be typed: invited is the rest
            page.get_by_role("button", name="登记并固定密钥").click()
            expect(page.locator("body")).to_contain_text("已登记与乙市第一人民医院的合作协议")
            row = page.locator("#partner-list tr", has_text="乙市第一人民医院")
            expect(row).to_contain_text("三级")
            expect(row).to_contain_text("远程会诊")
            expect(row).to_contain_text("双向转诊")
            expect(row).to_contain_text("心血管内科、内分泌科")
            expect(row.locator(".partner-title")).to_have_text("会诊由主任医师及以上职称的医师解答")
            expect(row).to_contain_text("200.00 元；邀请方 30% / 受邀方 70%")
            expect(row.locator(".partner-status")).to_have_text("有效")
            assert_readable(page)
            page.screenshot(path=str(screenshot_dir / f"{backend['name']}-partner-institutions.png"), full_page=True)

            # a bad address is refused in words, nothing registered
            page.fill("#name", "丙医院")
            page.fill("#license_no", "PDY0002")
            page.fill("#base_url", "ftp://partner.example")
            page.fill("#jwks_url", partner.url + "/.well-known/jwks.json")
            page.get_by_role("button", name="登记并固定密钥").click()
            expect(page.locator(".flash.error").first).to_be_visible()
            assert_readable(page)
            page.screenshot(path=str(screenshot_dir / f"{backend['name']}-partner-refused.png"), full_page=True)
        finally:
            desk.close()
    db.session.remove()
    (p,) = db.session.scalars(select(PartnerInstitution)).all()
    assert p.kid == key.kid and p.fee_fen == 20000 and (p.split_inviting, p.split_invited) == (30, 70)
    assert p.departments == ["cardiology", "endocrinology"] and p.consult_min_title == "主任医师"
