"""A pharmacist's day at a desk (1366×768), by the links and buttons on the screen only:
the queue from the menu, claim, return one with a reason, approve the next, print the
dispensing label, make it up (调配) and hand it to a colleague, who checks it and issues it
(核对、发药) at their own desk. Every page on the way is checked for raw codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from playwright.sync_api import expect

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from identity.models import Role, StaffProfile
from tests.browser.staff import assert_readable, desk, log_in
from tests.support import factories as f
from tests.support.live_server import LiveServer
from tests.support.rx_factories import item, prescribed


def test_a_pharmacists_day(
    browser: Any, live_server: LiveServer, client: FlaskClient, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    v = prescribed(client)
    pharmacist = f.staff(Role.PHARMACIST)
    checker = f.staff(Role.PHARMACIST)
    made_up_by = "王敏"
    with acting_as(Actor(None, "test")), unit_of_work():
        for account, name in ((pharmacist, made_up_by), (checker, "李静")):
            staff = db.session.get(StaffProfile, account.id)
            assert staff is not None
            staff.name = name

    with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-pharmacist") as (page, shot):
        log_in(page, pharmacist.username)
        page.get_by_role("link", name="审方队列").click()
        expect(page.locator("#queue tbody tr")).to_have_count(1)
        expect(page.locator("#queue")).to_contain_text("原发性高血压")
        expect(page.locator("#queue")).to_contain_text("苯磺酸氨氯地平片")
        assert_readable(page)
        shot("01-queue")

        page.get_by_role("button", name="领取下一张").click()
        expect(page).to_have_url(re.compile(r"/pharmacy/review/"))
        expect(page.locator("#signature")).to_have_class(re.compile("ok"))
        assert_readable(page)
        shot("02-review")
        # returning needs a reason: refused in words next to the reasons, nothing decided
        page.get_by_role("button", name=re.compile("退回医师")).click()
        expect(page.locator("#decide .field-error")).to_contain_text("至少")
        page.get_by_label("剂量、用法不适宜").check()
        page.fill("#note", "请按说明书调整剂量")
        page.get_by_role("button", name=re.compile("退回医师")).click()
        expect(page.locator(".flash")).to_contain_text("已退回医师修改")

        # the physician signs a revision (the physician's own journey does it in pages)
        second = client.post(
            f"/api/v1/visits/{v['visit_id']}/prescriptions",
            json={"items": [item(v["drugs"]["amlodipine"])], "replaces": v["rx"]},
            headers=f.auth(v["face"]),
        )
        assert second.status_code == 201, second.get_json()
        page.get_by_role("link", name="审方队列").click()
        page.get_by_role("button", name="领取下一张").click()
        page.get_by_role("button", name=re.compile("审核通过")).click()
        expect(page.locator(".flash")).to_contain_text("审核通过")

        page.get_by_role("link", name="已审处方").click()
        expect(page.locator("#reviewed tbody tr")).to_have_count(2)
        expect(page.locator("#reviewed")).to_contain_text("剂量、用法不适宜")
        assert_readable(page)
        shot("03-reviewed")
        # a decided prescription offers no decision any more
        page.locator("#reviewed tbody tr").first.get_by_role("link").click()
        expect(page.locator("#no-decision")).to_be_visible()
        expect(page.locator("#decide")).to_have_count(0)
        assert_readable(page)

        # the patient says they collect at the pharmacy (their own page)
        patient = client.post(
            f"/api/v1/prescriptions/{second.get_json()['id']}/checkout",
            json={"collect_at_pharmacy": True},
            headers=f.auth(v["token"]),
        )
        assert patient.status_code == 200, patient.get_json()
        page.get_by_role("link", name="待发药").click()
        expect(page.locator("#to-dispense tbody tr")).to_have_count(1)
        # the colleague on duty is offered as the checker; this pharmacist is not
        expect(page.locator("#to-dispense select option")).to_have_text(["— 请选择 —", "李静"])
        assert_readable(page)
        shot("04-to-dispense")
        # 调配: this pharmacist made it up and hands it over; checking it alone is not offered
        page.get_by_role("button", name="调配完成，交他人核对").click()
        expect(page.locator(".flash")).to_contain_text("已记录由您调配")
        expect(page.locator("#to-dispense .prepared")).to_contain_text("本人已调配")
        expect(page.get_by_role("button", name="核对无误，发药")).to_have_count(0)
        assert_readable(page)
        shot("05-made-up")

    # 核对、发药: the colleague checks it at their own desk
    with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-checker") as (page, shot):
        log_in(page, checker.username)
        page.get_by_role("link", name="待发药").click()
        row = page.locator("#to-dispense tbody tr")
        expect(row).to_contain_text(f"{made_up_by} 已调配")
        page.get_by_role("button", name="核对无误，发药").click()  # the box is not ticked yet
        expect(page.locator("#to-dispense tbody tr")).to_have_count(1)  # the browser asks for the tick
        page.get_by_label("已按“四查十对”核对").check()
        assert_readable(page)
        shot("06-check")
        page.get_by_role("button", name="核对无误，发药").click()
        expect(page.locator(".flash")).to_contain_text("已发药")
        page.locator("#just-label").click()
        expect(page.locator("#label")).to_contain_text("苯磺酸氨氯地平片")
        expect(page.locator("#label")).to_contain_text("每日一次")
        expect(page.locator("#label-pharmacists")).to_contain_text(f"调配: {made_up_by}")
        expect(page.locator("#label-pharmacists")).to_contain_text("核对、发药: 李静")
        expect(page.get_by_role("button", name="打印")).to_be_visible()
        assert_readable(page)
        shot("07-label")
