"""The classification queue in Chromium at a staff workstation (1366×768): a pharmacist
finds the drugs an import held as unclassified through the menu, classifies one with a
reason, and sees it leave the queue and appear among the recent decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from identity.models import Role
from prescriptions import imports
from prescriptions.models import Drug
from tests.support import factories as f
from tests.support.live_server import LiveServer

STAFF = {"viewport": {"width": 1366, "height": 768}}
CSV = """name,form,strength,route,generic_name,ingredients,cold_chain
院内制剂甲片,片剂,10mg,口服,,,false
某新药胶囊,胶囊,20mg,口服,,阿托伐他汀;未知成分丙,false
苯磺酸氨氯地平片,片剂,5mg,口服,氨氯地平,,false
"""


def test_a_pharmacist_classifies_a_held_drug_by_clicking(
    browser: Any, live_server: LiveServer, ctx: Any, tmp_path: Path, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    f.institution()
    path = tmp_path / "formulary.csv"
    path.write_text(CSV, encoding="utf-8")
    with acting_as(Actor(None, "test")), unit_of_work():
        assert len(imports.import_formulary(path).unclassified) == 2
    pharmacist = f.staff(Role.PHARMACIST)

    desk = browser.new_context(base_url=live_server.url, locale="zh-CN", **STAFF)
    desk.set_default_timeout(20_000)
    page = desk.new_page()
    try:
        page.goto("/login")
        page.fill("#username", pharmacist.username)
        page.fill("#password", f.PASSWORD)
        page.locator("main form button[type=submit]").first.click()
        page.get_by_role("link", name="待分类药品").click()
        expect(page.locator("h1")).to_have_text("待分类药品")
        row = page.locator("#held tr", has_text="院内制剂甲片")
        expect(row).to_contain_text("成分未能识别")
        page.screenshot(path=str(screenshot_dir / f"{backend['name']}-classification-queue.png"), full_page=True)
        row.locator("select[name=choice]").select_option(label="普通药品（非特殊管理）")
        row.locator("textarea[name=note]").fill("院内制剂，说明书成分为维生素C，无管制成分")
        row.get_by_role("button", name="确认分类").click()
        expect(page.locator("body")).to_contain_text("已将院内制剂甲片分类为普通药品")
        expect(page.locator("#held")).not_to_contain_text("院内制剂甲片")
        expect(page.locator("#recent")).to_contain_text("院内制剂甲片")
        page.screenshot(path=str(screenshot_dir / f"{backend['name']}-classification-done.png"), full_page=True)
    finally:
        desk.close()
    db.session.remove()
    drug = db.session.scalar(select(Drug).where(Drug.name == "院内制剂甲片"))
    assert drug is not None and drug.control_class is None and drug.classified_by == pharmacist.id
