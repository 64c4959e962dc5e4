"""Payments end to end: localstripe delivering signed events to the live app, two deliveries of
one event at the same moment, money arriving for a visit being cancelled, refunds made at the
provider. The real stripe SDK against localstripe (not Stripe's real service).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select

from clinic.app import create_app
from clinic.core import audit_sequencer, audit_verify
from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.payments.models import Payment, ProcessedEvent
from clinic.payments.rules import PaymentStatus
from clinic.visits.models import Visit
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.live_server import LiveServer
from tests.support.localstripe import WEBHOOK_SECRET, LocalStripe, signed, stripe_config, wait_for


@pytest.fixture(scope="module")
def ls() -> Iterator[LocalStripe]:
    with LocalStripe() as server:
        yield server


@pytest.fixture(scope="module")
def pay_app(app: Flask, backend: dict[str, Any], ls: LocalStripe) -> Flask:
    return create_app(stripe_config(backend, ls))


@pytest.fixture
def live(ctx: Flask, pay_app: Flask) -> Iterator[LiveServer]:
    with pay_app.app_context():
        cf.catalog()
        with LiveServer(pay_app) as server:
            yield server


@pytest.fixture
def cardio(live: LiveServer) -> Any:
    return f.staff(Role.PHYSICIAN, department="cardiology")


def new_visit(pay_app: Flask, cardio: Any) -> dict[str, Any]:
    client = pay_app.test_client()
    v = cf.open_visit(client, cardio)
    visit = db.session.get(Visit, uuid.UUID(v["visit_id"]))
    assert visit is not None and visit.status.value == "awaiting_payment"
    v["intent"] = payment(v["visit_id"]).provider_ref
    v["client"] = client
    return v


def status(visit_id: str) -> str:
    db.session.remove()
    visit = db.session.get(Visit, uuid.UUID(visit_id))
    assert visit is not None
    return visit.status.value


def payment(visit_id: str) -> Payment:
    db.session.remove()
    return db.session.scalars(select(Payment).where(Payment.subject_id == uuid.UUID(visit_id))).one()


def n_audits(action: str) -> int:
    """Entries of `action` in the log. The live server's request commits its entries as pending
    and its sequencer thread files them within the merge delay; a pass here files them now, so
    the count does not depend on how busy the machine is."""
    audit_sequencer.checkpoint_now()
    db.session.expire_all()
    return int(db.session.scalar(select(func.count()).where(AuditEntry.action == action)) or 0)


def test_localstripe_delivers_the_signed_event_to_the_live_app(
    live: LiveServer, pay_app: Flask, cardio: Any, ls: LocalStripe
) -> None:
    ls.configure_webhook(f"{live.url}/webhooks/stripe", WEBHOOK_SECRET, events=["payment_intent.succeeded"])
    try:
        v = new_visit(pay_app, cardio)
        ls.pay(v["intent"])
        wait_for(lambda: status(v["visit_id"]) == "waiting", timeout=15)
        assert payment(v["visit_id"]).status == PaymentStatus.SUCCEEDED
        assert n_audits("visit.paid") == 1
    finally:
        # later events of this localstripe go nowhere (connection refused on the discard port)
        ls.configure_webhook("http://127.0.0.1:9/", WEBHOOK_SECRET)


def test_one_event_delivered_twice_at_once_takes_effect_once(
    live: LiveServer, pay_app: Flask, cardio: Any, ls: LocalStripe
) -> None:
    v = new_visit(pay_app, cardio)
    ls.pay(v["intent"])
    body, headers = signed(ls.event_for("payment_intent.succeeded", v["intent"]))
    barrier = threading.Barrier(4)
    answers: list[dict[str, Any]] = []

    def send() -> None:
        barrier.wait()
        resp = requests.post(f"{live.url}/webhooks/stripe", data=body, headers=headers, timeout=60)
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 4
    assert sorted(a["duplicate"] for a in answers) == [False, True, True, True]
    assert status(v["visit_id"]) == "waiting"
    assert n_audits("visit.paid") == 1 and n_audits("payment.succeeded") == 1
    assert int(db.session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0) == 1
    assert audit_verify.verify_now().ok


def test_money_arriving_while_the_visit_is_cancelled_is_refunded(
    live: LiveServer, pay_app: Flask, cardio: Any, ls: LocalStripe
) -> None:
    v = new_visit(pay_app, cardio)
    ls.pay(v["intent"])  # paid at the provider; its webhook has not arrived yet
    resp = v["client"].post(
        f"/api/v1/visits/{v['visit_id']}/cancel", json={"reason": "取消"}, headers=f.auth(v["token"])
    )
    assert resp.status_code == 200, resp.get_json()
    # The intent could not be voided any more, so the payment was recorded and refunded.
    assert [r.amount for r in ls.refunds(v["intent"])] == [2000]
    row = payment(v["visit_id"])
    assert row.status == PaymentStatus.REFUNDED and row.paid_at is not None

    # The late event changes nothing: the visit stays cancelled, no second refund.
    body, headers = signed(ls.event_for("payment_intent.succeeded", v["intent"]))
    assert v["client"].post("/webhooks/stripe", data=body, headers=headers).status_code == 200
    assert status(v["visit_id"]) == "cancelled"
    assert n_audits("visit.paid") == 0
    assert len(ls.refunds(v["intent"])) == 1


def test_a_refund_made_at_the_provider_is_recorded(
    live: LiveServer, pay_app: Flask, cardio: Any, ls: LocalStripe
) -> None:
    v = new_visit(pay_app, cardio)
    charge = ls.pay(v["intent"]).latest_charge
    body, headers = signed(ls.event_for("payment_intent.succeeded", v["intent"]))
    assert v["client"].post("/webhooks/stripe", data=body, headers=headers).status_code == 200
    ls.client.v1.refunds.create({"payment_intent": v["intent"]})
    # localstripe sends no charge.refunded; this is the event Stripe documents for it.
    event = {
        "id": f"evt_{uuid.uuid4().hex[:14]}",
        "object": "event",
        "type": "charge.refunded",
        "data": {"object": {"id": str(charge), "object": "charge", "payment_intent": v["intent"], "refunded": True}},
    }
    body, headers = signed(json.dumps(event))
    resp = v["client"].post("/api/v1/webhooks/stripe", data=body, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    assert payment(v["visit_id"]).status == PaymentStatus.REFUNDED
    assert n_audits("payment.refunded") == 1


def test_an_event_for_an_unknown_intent_is_recorded_and_ignored(live: LiveServer, pay_app: Flask) -> None:
    event = {
        "id": "evt_unknown_1",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_not_ours", "object": "payment_intent", "amount": 2000, "currency": "cny"}},
    }
    body, headers = signed(json.dumps(event))
    resp = pay_app.test_client().post("/webhooks/stripe", data=body, headers=headers)
    assert resp.status_code == 200 and resp.get_json()["duplicate"] is False
    assert n_audits("payment.event_unmatched") == 1
    assert n_audits("visit.paid") == 0
