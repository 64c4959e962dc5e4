"""Partner registry (admin) and signed partner callbacks over HTTP, with SMS through the real
Twilio SDK against the local stand-in."""

from __future__ import annotations

import json
import time
import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work
from clinic.notifications.models import SmsMessage as Notification
from identity.models import Role
from pharmacy import delivery as deliveries
from pharmacy import partners
from pharmacy.models import Delivery, DeliveryEvent
from pharmacy.rules import DeliveryStatus
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.partner_standin import sign
from tests.support.twilio_standin import TwilioStandin

PHONE = "+8613800000077"


@pytest.fixture
def sms(ctx: Flask, twilio_standin: TwilioStandin, monkeypatch: pytest.MonkeyPatch) -> TwilioStandin:
    for key, value in twilio_standin.app_settings().items():
        monkeypatch.setitem(ctx.config, key, value)
    return twilio_standin


def partner(name: str = "A", **kw: Any) -> tuple[str, str]:
    spec: dict[str, Any] = {
        "name": name,
        "license_no": "LIC-" + name,
        "license_valid_until": date.today() + timedelta(days=30),
        "regions": ["11"],
        "cold_chain": False,
        "priority": 10,
        "endpoint": "http://127.0.0.1:9/orders",  # nothing listens: dispatch retries; callbacks don't care
    }
    spec.update(kw)
    with acting_as(Actor(None, "test")), unit_of_work():
        p, secret = partners.create_partner(partners.PartnerSpec(**spec))
    return str(p.id), secret


def routed(status: DeliveryStatus = DeliveryStatus.DISPATCHED) -> uuid.UUID:
    rx = uuid.uuid4()
    with acting_as(Actor(None, "test")), unit_of_work():
        d = deliveries.create_delivery(
            rx,
            deliveries.Recipient("张三", PHONE, "北京市朝阳区示范路1号", "110105"),
            [{"drug_id": str(uuid.uuid4()), "name": "氨氯地平片", "quantity": "7", "cold_chain": False}],
        )
        d.status = status
    db.session().info.pop("outbox_committed", None)  # leave the dispatch job alone in these tests
    return rx


def post(
    client: FlaskClient, pid: str, secret: str, body: dict[str, Any], ts: int | None = None, sig: str | None = None
) -> Any:
    raw = json.dumps(body).encode()
    headers = sign(secret, raw, ts)
    if sig is not None:
        headers["X-Signature"] = sig
    return client.post(f"/api/v1/partners/{pid}/callbacks", data=raw, headers=headers)


def event(rx: uuid.UUID, status: str, event_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "prescription_id": str(rx),
        "status": status,
        "at": "2026-11-23T08:00:00Z",
    }


def delivery(rx: uuid.UUID) -> Delivery:
    return db.session.scalars(
        select(Delivery).where(Delivery.prescription_id == rx).execution_options(populate_existing=True)
    ).one()


def count(model: type) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def refusals(reason: str) -> list[AuditEntry]:
    rows = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "partner.callback_refused")).all()
    return [r for r in rows if r.detail.get("reason") == reason]


# --- registry --------------------------------------------------------------------------


def test_admin_registers_and_lists_partners_secret_shown_once(client: FlaskClient) -> None:
    f.staff(Role.ADMIN, username="admin1")
    h = f.auth(f.token(client, "admin1"))
    body = {
        "name": "冷链康运",
        "license_no": "YPJY-2024-0002",
        "license_valid_until": "2030-01-01",
        "regions": ["31", "1101"],
        "cold_chain": True,
        "priority": 5,
        "endpoint": "https://partner.example/orders",
    }
    resp = client.post("/api/v1/admin/partners", json=body, headers=h)
    assert resp.status_code == 201, resp.get_json()
    created = resp.get_json()
    assert len(created["secret"]) >= 32 and created["cold_chain"] is True
    listed = client.get("/api/v1/admin/partners", headers=h).get_json()["items"]
    assert [p["id"] for p in listed] == [created["id"]] and listed[0]["secret"] is None
    again = client.post("/api/v1/admin/partners", json=body, headers=h)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "partner_exists"
    bad = client.post("/api/v1/admin/partners", json={**body, "name": "x", "regions": ["abc"]}, headers=h)
    assert refusal(bad) == (422, "invalid")
    rotated = client.post(f"/api/v1/admin/partners/{created['id']}", json={"rotate_secret": True}, headers=h)
    assert rotated.status_code == 200 and rotated.get_json()["secret"] not in (None, created["secret"])


def test_only_admins_manage_partners(client: FlaskClient) -> None:
    f.staff(Role.PHARMACIST, username="ph1")
    resp = client.get("/api/v1/admin/partners", headers=f.auth(f.token(client, "ph1")))
    assert refusal(resp) == (403, "forbidden")


# --- callbacks ----------------------------------------------------------------------------


def test_status_moves_to_the_door_with_sms_each_step(client: FlaskClient, sms: TwilioStandin) -> None:
    pid, secret = partner()
    rx = routed()
    resp = post(client, pid, secret, event(rx, "picked_up"))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"status": "out_for_delivery", "duplicate": False}
    assert post(client, pid, secret, event(rx, "in_transit")).get_json()["status"] == "out_for_delivery"
    assert post(client, pid, secret, event(rx, "delivered")).get_json()["status"] == "delivered"
    assert delivery(rx).status == DeliveryStatus.DELIVERED and delivery(rx).delivered_at is not None
    bodies = [m["body"] for m in sms.outbox if m["to"] == PHONE]
    assert len(bodies) == 2 and "取件配送" in bodies[0] and "已送达" in bodies[1]  # shipped, delivered
    assert {n.status for n in db.session.scalars(select(Notification))} == {"sent"}


def test_the_same_event_again_changes_nothing(client: FlaskClient, sms: TwilioStandin) -> None:
    pid, secret = partner()
    rx = routed()
    ev = event(rx, "picked_up", "evt-1")
    assert post(client, pid, secret, ev).status_code == 200
    events, notes = count(DeliveryEvent), count(Notification)
    again = post(client, pid, secret, ev)
    assert again.status_code == 200 and again.get_json() == {"status": "out_for_delivery", "duplicate": True}
    assert (count(DeliveryEvent), count(Notification)) == (events, notes)
    assert len(sms.outbox) == 1


@pytest.mark.parametrize("problem", ["mismatch", "stale", "missing", "other_partner_secret", "unknown_partner"])
def test_bad_signatures_are_401_and_change_nothing(client: FlaskClient, problem: str) -> None:
    pid, secret = partner()
    other_pid, other_secret = partner("B")
    rx = routed()
    ev = event(rx, "picked_up")
    if problem == "mismatch":
        resp = post(client, pid, secret, ev, sig="sha256=" + "0" * 64)
    elif problem == "stale":
        resp = post(client, pid, secret, ev, ts=int(time.time()) - 301)
    elif problem == "missing":
        resp = client.post(f"/api/v1/partners/{pid}/callbacks", json=ev)
    elif problem == "other_partner_secret":
        resp = post(client, pid, other_secret, ev)
    else:
        resp = post(client, str(uuid.uuid4()), secret, ev)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "bad_signature"
    assert delivery(rx).status == DeliveryStatus.DISPATCHED and count(DeliveryEvent) == 0
    expected = {"other_partner_secret": "mismatch"}.get(problem, problem)
    assert len(refusals(expected)) == 1


def test_unknown_prescription_is_404_after_a_valid_signature(client: FlaskClient) -> None:
    pid, secret = partner()
    other_pid, other_secret = partner("B")
    rx = routed()  # assigned to partner A (priority/name)
    resp = post(client, pid, secret, event(uuid.uuid4(), "picked_up"))
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    # another partner's delivery is as unknown as a missing one
    assert refusal(post(client, other_pid, other_secret, event(rx, "picked_up"))) == (404, "not_found")
    assert delivery(rx).status == DeliveryStatus.DISPATCHED
    assert len(refusals("unknown_prescription")) == 2


def test_an_illegal_jump_is_409_and_changes_nothing(client: FlaskClient) -> None:
    pid, secret = partner()
    rx = routed()
    resp = post(client, pid, secret, event(rx, "delivered"))  # never picked up
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "illegal_status_transition"
    assert delivery(rx).status == DeliveryStatus.DISPATCHED and count(DeliveryEvent) == 0
    assert len(refusals("illegal_status_transition")) == 1


def test_invalid_body_after_a_valid_signature_is_422(client: FlaskClient) -> None:
    pid, secret = partner()
    rx = routed()
    resp = post(client, pid, secret, {**event(rx, "lost_in_space")})
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid"


def test_a_failed_delivery_is_rerouted_then_returned(client: FlaskClient, sms: TwilioStandin) -> None:
    a, a_secret = partner("A", priority=1)
    b, b_secret = partner("B", priority=2)
    rx = routed()
    assert str(delivery(rx).partner_id) == a
    resp = post(client, a, a_secret, event(rx, "failed"))
    assert resp.status_code == 200 and resp.get_json()["status"] == "routed"
    assert str(delivery(rx).partner_id) == b
    with unit_of_work():
        delivery(rx).status = DeliveryStatus.DISPATCHED
    resp = post(client, b, b_secret, event(rx, "failed"))
    assert resp.get_json()["status"] == "returned"
    assert delivery(rx).partner_id == uuid.UUID(b)  # the last partner stays on record
    assert any("药房" in m["body"] for m in sms.outbox)
    actions = {e.action for e in db.session.scalars(select(AuditEntry))}
    assert {"delivery.rerouted", "delivery.returned", "delivery.failed"} <= actions


def test_twilio_down_keeps_the_sms_for_a_retry(client: FlaskClient, sms: TwilioStandin) -> None:
    from clinic.core import jobs
    from clinic.core.jobs import JobStatus, OutboxJob

    pid, secret = partner()
    rx = routed()
    sms.failure = 503
    resp = post(client, pid, secret, event(rx, "picked_up"))
    assert resp.status_code == 200  # the partner's answer never depends on Twilio
    (job,) = db.session.scalars(select(OutboxJob).where(OutboxJob.kind == "sms")).all()
    assert job.status == JobStatus.PENDING and job.attempts == 1
    sms.failure = None
    with unit_of_work():
        db.session.get(OutboxJob, job.id).next_attempt_at = job.created_at  # type: ignore[union-attr]
    jobs.run_due()
    assert db.session.get(OutboxJob, job.id, populate_existing=True).status == JobStatus.DONE  # type: ignore[union-attr]
    assert len(sms.outbox) == 1
