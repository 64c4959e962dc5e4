"""Issue 17 item 3: a partner's callback may carry its waybill number (运单号); the delivery
keeps the current one, each event the one it came with, and the patient's tracking
timeline shows each event in Beijing time with it. Partners that send none keep working;
a bad one is refused with nothing stored. While the dispatch to the partner is still
failing and retried, the patient reads "正在安排配送"."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from clinic.core import jobs
from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work
from clinic.core.jobs import JobStatus, OutboxJob
from identity.models import Role
from pharmacy import delivery as deliveries
from pharmacy import partners
from pharmacy.models import Delivery, DeliveryEvent
from tests.integration.pharmacy.test_pharmacy_pages import login
from tests.support import factories as f
from tests.support.partner_standin import PartnerStandin, callback, sign
from tests.support.rx_factories import approved

SECRET = "partner-secret-0123456789-abcdefghij"
WAYBILL = "SF1234567890123"


@pytest.fixture
def partner_server(ctx: Flask) -> Iterator[PartnerStandin]:
    server = PartnerStandin(SECRET).start()
    yield server
    server.stop()


def partner(name: str, endpoint: str, priority: int = 1) -> str:
    with acting_as(Actor(None, "test")), unit_of_work():
        p, _ = partners.create_partner(
            partners.PartnerSpec(
                name, "LIC-" + name, date.today() + timedelta(days=90), ["11"], False, priority, endpoint, SECRET
            )
        )
    return str(p.id)


def dispensed(client: FlaskClient) -> dict[str, Any]:
    """A prescription approved, its address given (payments off) and dispensed to a partner."""
    v = approved(client)
    rx, ph = v["rx"], v["pharmacist"]
    address = {"recipient_name": "张三", "phone": "13800138000", "address": "示范路1号", "region_code": "110105"}
    out = client.post(f"/api/v1/prescriptions/{rx}/checkout", json=address, headers=f.auth(v["token"]))
    assert out.status_code == 200, out.get_json()
    checker = f.staff(Role.PHARMACIST)  # two pharmacists dispense (处方管理办法 第三十七条)
    body = {"checked_by": str(checker.id)}
    disp = client.post(f"/api/v1/pharmacy/prescriptions/{rx}/dispense", json=body, headers=ph)
    assert disp.status_code == 200, disp.get_json()
    return {**v, "rx": rx, "pharmacist": ph}


def send(client: FlaskClient, pid: str, raw: bytes) -> Any:
    return client.post(f"/api/v1/partners/{pid}/callbacks", data=raw, headers=sign(SECRET, raw))


def delivery(rx: str) -> Delivery:
    db.session.expire_all()
    return db.session.scalars(select(Delivery).where(Delivery.prescription_id == uuid.UUID(rx))).unique().one()


def test_the_waybill_is_kept_and_shown_with_each_event(client: FlaskClient, partner_server: PartnerStandin) -> None:
    pid = partner("顺达", partner_server.url)
    d = dispensed(client)
    rx = d["rx"]
    first = send(client, pid, callback("e1", rx, "picked_up", "2026-11-23T08:00:00Z", waybill_no=WAYBILL))
    assert first.status_code == 200 and first.get_json() == {"status": "out_for_delivery", "duplicate": False}
    # an event without a waybill number (older partners) keeps the one the delivery has
    assert send(client, pid, callback("e2", rx, "in_transit", "2026-11-23T09:30:00Z")).status_code == 200
    assert delivery(rx).waybill_no == WAYBILL
    for who in (f.auth(d["token"]), d["pharmacist"]):
        track = client.get(f"/api/v1/prescriptions/{rx}/delivery", headers=who).get_json()
        assert track["waybill_no"] == WAYBILL
        assert [(e["status"], e["waybill_no"]) for e in track["events"]] == [
            ("dispatched", None),
            ("picked_up", WAYBILL),
            ("in_transit", None),
        ]
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "delivery.picked_up")).one()
    assert entry.detail["waybill_no"] == WAYBILL
    # the same event again with another number changes nothing
    again = send(client, pid, callback("e1", rx, "picked_up", waybill_no="ZTO000"))
    assert again.get_json()["duplicate"] is True and delivery(rx).waybill_no == WAYBILL

    # the patient's tracking timeline: each partner event, Beijing time, the waybill number
    page = login(client.application, d["reg"].account.username).get(f"/prescriptions/{rx}/track")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'<p id="waybill">运单号 <span translate="no">{WAYBILL}</span>' in html
    picked = html.split('data-status="picked_up"', 1)[1].split("</li>", 1)[0]
    assert "已揽收" in picked and "2026-11-23 16:00" in picked and f">{WAYBILL}<" in picked
    transit = html.split('data-status="in_transit"', 1)[1].split("</li>", 1)[0]
    assert "2026-11-23 17:30" in transit and "运单号" not in transit


def test_a_bad_waybill_number_is_refused_and_nothing_is_stored(
    client: FlaskClient, partner_server: PartnerStandin
) -> None:
    pid = partner("顺达", partner_server.url)
    rx = dispensed(client)["rx"]
    before = db.session.scalar(select(DeliveryEvent.id).where(DeliveryEvent.status == "picked_up"))
    assert before is None
    for bad in ("S" * 41, "", "   ", "运单123", "SF\t123", "SF\n123", "SF\u3000123", 1234567890):
        raw = json.dumps(
            {"event_id": f"bad-{bad!r}", "prescription_id": rx, "status": "picked_up", "at": "2026-11-23T08:00:00Z"}
            | {"waybill_no": bad}
        ).encode()
        resp = send(client, pid, raw)
        assert resp.status_code == 422, (bad, resp.get_json())
        error = resp.get_json()["error"]
        assert error["code"] == "invalid" and "waybill_no" in json.dumps(error), (bad, error)
    d = delivery(rx)
    assert d.status.value == "dispatched" and d.waybill_no is None
    assert db.session.scalar(select(DeliveryEvent.id).where(DeliveryEvent.status == "picked_up")) is None
    # at the limit: 40 printable characters, spaces inside; surrounding spaces are trimmed
    ok = "YT 7788-9900/1122" + "X" * 23
    assert send(client, pid, callback("good", rx, "picked_up", waybill_no=f"  {ok} ")).status_code == 200
    assert delivery(rx).waybill_no == ok


def test_a_reroute_drops_the_failed_partners_waybill(client: FlaskClient, partner_server: PartnerStandin) -> None:
    first = partner("顺达", partner_server.url, priority=1)
    second = partner("京达", partner_server.url, priority=2)
    rx = dispensed(client)["rx"]
    assert send(client, first, callback("a1", rx, "picked_up", waybill_no="SF0001")).status_code == 200
    assert send(client, first, callback("a2", rx, "failed", waybill_no="SF0001")).status_code == 200
    d = delivery(rx)
    assert str(d.partner_id) == second and d.waybill_no is None
    assert [e.waybill_no for e in d.events if e.partner_id is not None] == ["SF0001", "SF0001"]
    assert send(client, second, callback("b1", rx, "picked_up", waybill_no="JD0002")).status_code == 200
    assert delivery(rx).waybill_no == "JD0002"


def test_while_the_dispatch_fails_and_is_retried_the_patient_reads_arranging(client: FlaskClient) -> None:
    partner("顺达", "http://127.0.0.1:9/orders")  # nothing listens: every dispatch fails
    d = dispensed(client)
    rx = d["rx"]
    job = db.session.scalars(select(OutboxJob).where(OutboxJob.kind == deliveries.DISPATCH_JOB)).one()
    assert job.status == JobStatus.PENDING and job.attempts >= 1 and job.last_error  # failed, will retry
    assert delivery(rx).status.value == "routed"
    patient = login(client.application, d["reg"].account.username)
    track = patient.get(f"/prescriptions/{rx}/track").get_data(as_text=True)
    assert '<p id="delivery-status" data-status="routed">正在安排配送</p>' in track
    assert "已交配送企业" not in track and "顺达" not in track
    listing = patient.get("/my/prescriptions").get_data(as_text=True)
    assert "正在安排配送" in listing and "已交配送企业" not in listing
    assert client.get(f"/api/v1/prescriptions/{rx}/delivery", headers=f.auth(d["token"])).get_json()["status"] == (
        "routed"
    )
    jobs.run_due()  # not due yet: still routed, still "arranging"
    assert "正在安排配送" in patient.get(f"/prescriptions/{rx}/track").get_data(as_text=True)
