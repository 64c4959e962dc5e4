"""Routing and dispatch to a delivery partner over HTTP (a local stand-in), through the outbox."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from flask import Flask
from sqlalchemy import select, text

from clinic.core import jobs
from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.core.jobs import JobStatus, OutboxJob
from clinic.notifications.models import SmsMessage as Notification
from pharmacy import delivery as deliveries
from pharmacy import partner_security, partners
from pharmacy.models import Delivery
from pharmacy.rules import DeliveryStatus
from tests.support.partner_standin import PartnerStandin

SECRET = "partner-secret-0123456789-abcdefghij"


@pytest.fixture
def partner_server(ctx: Flask) -> Iterator[PartnerStandin]:
    server = PartnerStandin(SECRET).start()
    yield server
    server.stop()


def make_partner(name: str, endpoint: str, **kw: object) -> str:
    spec = {
        "name": name,
        "license_no": "LIC-" + name,
        "license_valid_until": date.today() + timedelta(days=30),
        "regions": ["11"],
        "cold_chain": False,
        "priority": 10,
        "endpoint": endpoint,
        "secret": SECRET,
    }
    spec.update(kw)
    with acting_as(Actor(None, "test")), unit_of_work():
        partner, _ = partners.create_partner(partners.PartnerSpec(**spec))  # type: ignore[arg-type]
    return str(partner.id)


def deliver(cold: bool = False, region: str = "110105") -> uuid.UUID:
    rx = uuid.uuid4()
    with acting_as(Actor(None, "test")), unit_of_work():
        deliveries.create_delivery(
            rx,
            deliveries.Recipient("张三", "+8613800000001", "北京市朝阳区示范路1号", region),
            [{"drug_id": str(uuid.uuid4()), "name": "胰岛素", "quantity": "1", "cold_chain": cold}],
        )
    return rx


def delivery(rx: uuid.UUID) -> Delivery:
    d = db.session.scalars(
        select(Delivery).where(Delivery.prescription_id == rx).execution_options(populate_existing=True)
    ).one()
    return d


def dispatch_jobs() -> list[OutboxJob]:
    return list(
        db.session.scalars(
            select(OutboxJob).where(OutboxJob.kind == deliveries.DISPATCH_JOB).execution_options(populate_existing=True)
        )
    )


def make_due() -> None:
    with unit_of_work():
        for j in dispatch_jobs():
            if j.status == JobStatus.PENDING:
                j.next_attempt_at = utcnow() - timedelta(seconds=1)


def test_the_signed_order_reaches_the_partner_after_commit(partner_server: PartnerStandin) -> None:
    pid = make_partner("A", partner_server.url)
    rx = deliver()
    assert delivery(rx).status == DeliveryStatus.ROUTED and partner_server.calls == 0
    jobs.drain()
    assert len(partner_server.orders) == 1 and partner_server.refused == []  # the stand-in checked the HMAC
    order = partner_server.orders[0]["body"]
    assert order["prescription_id"] == str(rx)
    assert order["recipient"]["address"] == "北京市朝阳区示范路1号"
    assert order["callback_url"].endswith(f"/api/v1/partners/{pid}/callbacks")
    d = delivery(rx)
    assert d.status == DeliveryStatus.DISPATCHED and str(d.partner_id) == pid and d.dispatched_at is not None


def test_a_partner_down_loses_nothing_and_gets_it_once_back_up(partner_server: PartnerStandin) -> None:
    make_partner("A", partner_server.url)
    partner_server.failure = 500
    rx = deliver()
    jobs.drain()
    (job,) = dispatch_jobs()
    assert job.status == JobStatus.PENDING and job.attempts == 1 and "answered 500" in (job.last_error or "")
    assert delivery(rx).status == DeliveryStatus.ROUTED

    partner_server.stop()  # now refusing connections altogether
    make_due()
    assert jobs.run_due() == {"retry": 1}
    (job,) = dispatch_jobs()
    assert job.attempts == 2 and "unreachable" in (job.last_error or "")
    assert job.next_attempt_at > utcnow() + timedelta(seconds=50)  # backoff doubled (30 s, then 60 s)

    partner_server.failure = None
    partner_server.start()  # same port: the partner is back
    make_due()
    assert jobs.run_due() == {"done": 1}
    assert len(partner_server.orders) == 1
    assert delivery(rx).status == DeliveryStatus.DISPATCHED


def test_a_worker_killed_mid_send_resends(partner_server: PartnerStandin) -> None:
    make_partner("A", partner_server.url)
    rx = deliver()
    db.session().info.pop("outbox_committed", None)  # the process that committed it died too
    # a worker claimed the dispatch and died before recording the answer
    with unit_of_work():
        (job,) = dispatch_jobs()
        job.status, job.attempts, job.locked_until = JobStatus.RUNNING, 1, utcnow() - timedelta(seconds=1)
    assert partner_server.calls == 0
    assert jobs.run_due() == {"done": 1}
    assert len(partner_server.orders) == 1
    assert partner_server.orders[0]["idempotency_key"].startswith(str(delivery(rx).id))
    assert delivery(rx).status == DeliveryStatus.DISPATCHED


def test_cold_chain_goes_to_the_cold_chain_partner(partner_server: PartnerStandin) -> None:
    make_partner("plain", "http://127.0.0.1:9/x", priority=1)
    cold = make_partner("cold", partner_server.url, cold_chain=True, priority=50)
    rx = deliver(cold=True)
    assert str(delivery(rx).partner_id) == cold
    assert delivery(rx).routing["refused"] != {}


def test_no_qualified_partner_means_collect_at_the_pharmacy(ctx: Flask) -> None:
    make_partner("expired", "http://127.0.0.1:9/x", license_valid_until=date.today() - timedelta(days=1))
    make_partner("south", "http://127.0.0.1:9/y", regions=["44"])
    rx = deliver()
    d = delivery(rx)
    assert d.status == DeliveryStatus.COLLECT_AT_PHARMACY and d.partner_id is None
    refused = d.routing["refused"]
    assert sorted(map(tuple, refused.values())) == [("license_expired",), ("region_not_served",)]
    assert dispatch_jobs() == []
    jobs.drain()
    (note,) = db.session.scalars(select(Notification)).all()
    assert note.kind == "collect" and note.status == "logged" and "药房" in note.body


def test_the_partner_secret_is_encrypted_at_rest(ctx: Flask) -> None:
    make_partner("A", "http://127.0.0.1:9/x")
    raw = db.session.execute(text("SELECT secret FROM delivery_partners")).scalar_one()
    assert SECRET.encode() not in bytes(raw)
    assert db.session.scalars(select(deliveries.DeliveryPartner)).one().secret == SECRET


def test_order_headers_verify_with_the_rules() -> None:
    body = b'{"x":1}'
    headers = partner_security.signed_headers(SECRET, body, 1_800_000_000)
    assert (
        partner_security.signature_problem(SECRET, headers["X-Timestamp"], headers["X-Signature"], body, 1_800_000_010)
        is None
    )
