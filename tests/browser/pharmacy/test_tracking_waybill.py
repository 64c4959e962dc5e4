"""Issue 17 item 3 on a phone (390×844): the patient follows the tracking timeline from
"我的处方" by clicking, and reads each partner event in Beijing time with the waybill
number the partner's callback carried; before the partner has accepted the order the
page says "正在安排配送"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import expect
from sqlalchemy import update

from clinic.core import jobs
from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.core.jobs import OutboxJob
from identity.models import Role
from pharmacy import partners
from tests.browser.staff import assert_readable, log_in
from tests.support import factories as f
from tests.support.partner_standin import PartnerStandin, callback, sign
from tests.support.rx_factories import prescribed

SECRET = "partner-secret-0123456789-abcdefghij"
WAYBILL = "SF1234567890123"


@pytest.fixture
def partner_server(ctx: Flask) -> Iterator[PartnerStandin]:
    server = PartnerStandin(SECRET).start()
    yield server
    server.stop()


def test_the_patient_reads_the_waybill_number_on_the_timeline(
    page: Any, client: FlaskClient, partner_server: PartnerStandin, shoot: Callable[[str], Path]
) -> None:
    with acting_as(Actor(None, "test")), unit_of_work():
        partner, _ = partners.create_partner(
            partners.PartnerSpec(
                "顺丰医药", "LIC-1", date.today() + timedelta(days=90), ["11"], False, 1, partner_server.url, SECRET
            )
        )
    pid = str(partner.id)
    v = prescribed(client)
    rx = v["rx"]
    ph = f.auth(f.token(client, f.staff(Role.PHARMACIST).username))
    client.post("/api/v1/pharmacy/queue/claim", headers=ph)
    client.post(f"/api/v1/pharmacy/prescriptions/{rx}/review", json={"decision": "approve", "reasons": []}, headers=ph)
    address = {"recipient_name": "张三", "phone": "13800138000", "address": "示范路1号", "region_code": "110105"}
    assert (
        client.post(f"/api/v1/prescriptions/{rx}/checkout", json=address, headers=f.auth(v["token"])).status_code == 200
    )
    partner_server.failure = 503  # the partner is down: the dispatch fails and is retried
    checker = f.staff(Role.PHARMACIST)  # two pharmacists dispense (处方管理办法 第三十七条)
    body = {"checked_by": str(checker.id)}
    assert client.post(f"/api/v1/pharmacy/prescriptions/{rx}/dispense", json=body, headers=ph).status_code == 200

    log_in(page, v["reg"].account.username)
    page.get_by_role("link", name="我的处方").first.click()
    card = page.locator(f'#prescriptions .rx[data-prescription="{rx}"]')
    expect(card).to_contain_text("正在安排配送")
    card.get_by_role("link", name="查看处方").click()
    expect(page.locator("#delivery-status")).to_have_text("正在安排配送")
    expect(page.locator("body")).not_to_contain_text("已交配送企业")
    assert_readable(page)
    shoot("waybill-01-arranging")

    # The partner is back: the retry goes through; then it picks up, carries and delivers,
    # each callback with or without its waybill number
    partner_server.failure = None
    with unit_of_work():
        db.session.execute(update(OutboxJob).values(next_attempt_at=utcnow()))
    assert jobs.run_due() == {"done": 1}
    for event_id, status, at, waybill in (
        ("e1", "picked_up", "2026-11-23T08:00:00Z", WAYBILL),
        ("e2", "in_transit", "2026-11-23T10:15:00Z", None),
        ("e3", "delivered", "2026-11-24T02:05:00Z", WAYBILL),
    ):
        raw = callback(event_id, rx, status, at, waybill_no=waybill)
        resp = client.post(f"/api/v1/partners/{pid}/callbacks", data=raw, headers=sign(SECRET, raw))
        assert resp.status_code == 200, resp.get_json()
    page.get_by_role("link", name="我的处方").first.click()
    page.locator(f'#prescriptions .rx[data-prescription="{rx}"]').get_by_role("link", name="查看处方").click()
    expect(page.locator("#delivery-status")).to_have_text("已送达 · 顺丰医药")
    expect(page.locator("#waybill")).to_have_text(f"运单号 {WAYBILL}")
    picked = page.locator('#events li[data-status="picked_up"]')
    expect(picked).to_contain_text("已揽收")
    expect(picked).to_contain_text("2026-11-23 16:00")  # Beijing time
    expect(picked).to_contain_text(f"运单号 {WAYBILL}")
    expect(page.locator('#events li[data-status="in_transit"]')).to_contain_text("2026-11-23 18:15")
    expect(page.locator('#events li[data-status="in_transit"]')).not_to_contain_text("运单号")
    expect(page.locator('#events li[data-status="delivered"]')).to_contain_text("2026-11-24 10:05")
    page.locator("#events").scroll_into_view_if_needed()
    assert_readable(page)
    shoot("waybill-02-timeline")
