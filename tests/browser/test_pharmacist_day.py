"""A pharmacist's day at a desk (1366×768), by the links and buttons on the screen only:
the queue from the menu, claim, return one with a reason, approve the next, print the
dispensing label, dispense. Every page on the way is checked for raw codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from playwright.sync_api import expect

from identity.models import Role
from tests.browser.staff import assert_readable, desk, log_in
from tests.support import factories as f
from tests.support.live_server import LiveServer
from tests.support.rx_factories import item, visit_in_progress


def test_a_pharmacists_day(
    browser: Any, live_server: LiveServer, client: FlaskClient, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    v = visit_in_progress(client)
    first = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])]},
        headers=f.auth(v["face"]),
    )
    assert first.status_code == 201, first.get_json()
    pharmacist = f.staff(Role.PHARMACIST)

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
            json={"items": [item(v["drugs"]["amlodipine"])], "replaces": first.get_json()["id"]},
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
        assert_readable(page)
        shot("04-to-dispense")
        page.get_by_role("button", name="发药").click()
        expect(page.locator(".flash")).to_contain_text("已发药")
        page.locator("#just-label").click()
        expect(page.locator("#label")).to_contain_text("苯磺酸氨氯地平片")
        expect(page.locator("#label")).to_contain_text("每日一次")
        expect(page.get_by_role("button", name="打印")).to_be_visible()
        assert_readable(page)
        shot("05-label")
