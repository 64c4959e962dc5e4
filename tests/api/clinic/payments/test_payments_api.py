"""The consultation fee over HTTP: POST /visits with PAYMENTS=stripe, the signed Stripe webhook
(at /webhooks/stripe and /api/v1/webhooks/stripe), refunds on cancellation.

The real stripe SDK talks to localstripe (tests/support/localstripe.py); events are taken
from localstripe and delivered signed as Stripe signs them. This checks our code and the
SDK against localstripe's imitation of Stripe, not Stripe's real service.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.app import create_app
from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.payments.models import Payment, ProcessedEvent
from clinic.payments.rules import PaymentStatus
from clinic.visits.models import Visit
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.localstripe import DECLINED, LocalStripe, signed, stripe_config

PATHS = ["/webhooks/stripe", "/api/v1/webhooks/stripe"]


@pytest.fixture(scope="module")
def ls() -> Iterator[LocalStripe]:
    with LocalStripe() as server:
        yield server


@pytest.fixture(scope="module")
def pay_app(app: Flask, backend: dict[str, Any], ls: LocalStripe) -> Flask:
    """The app with PAYMENTS=stripe on the harness's (migrated) database."""
    return create_app(stripe_config(backend, ls))


@pytest.fixture
def world(ctx: Flask, pay_app: Flask) -> Iterator[dict[str, Any]]:
    with pay_app.app_context():
        client = pay_app.test_client()
        cf.catalog()
        yield {"client": client, "cardio": f.staff(Role.PHYSICIAN, department="cardiology")}


def audits(action: str) -> list[AuditEntry]:
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def count(model: type) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def visit_status(visit_id: str) -> str:
    db.session.expire_all()
    visit = db.session.get(Visit, uuid.UUID(visit_id))
    assert visit is not None
    return visit.status.value


def payment(visit_id: str) -> Payment:
    db.session.expire_all()
    return db.session.scalars(select(Payment).where(Payment.subject_id == uuid.UUID(visit_id))).one()


def new_visit(world: dict[str, Any]) -> dict[str, Any]:
    client = world["client"]
    p = cf.ready_patient(client, world["cardio"])
    resp = client.post(
        "/api/v1/visits",
        json={"patient_id": str(p["reg"].patient.id), "diagnosis_id": str(p["diag"].id), "department": "cardiology"},
        headers=f.auth(p["token"]),
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    p.update(visit_id=body["id"], created=body, intent=body["payment"]["payment_intent_id"])
    return p


def deliver(client: FlaskClient, event: Any, path: str = PATHS[0], **kw: Any) -> Any:
    body, headers = signed(event, **kw)
    return client.post(path, data=body, headers=headers)


def paid_visit(world: dict[str, Any], ls: LocalStripe) -> dict[str, Any]:
    v = new_visit(world)
    assert ls.pay(v["intent"]).status == "succeeded"
    resp = deliver(world["client"], ls.event_for("payment_intent.succeeded", v["intent"]))
    assert resp.status_code == 200, resp.get_json()
    assert visit_status(v["visit_id"]) == "waiting"
    return v


def test_visit_waits_for_its_fee_and_the_signed_event_moves_it_once(world: dict[str, Any], ls: LocalStripe) -> None:
    client = world["client"]
    v = new_visit(world)
    created = v["created"]
    assert created["status"] == "awaiting_payment"
    assert created["fee_fen"] == 2000
    pay = created["payment"]
    assert pay["amount_fen"] == 2000 and pay["currency"] == "cny"
    assert pay["client_secret"].startswith(pay["payment_intent_id"] + "_secret_")

    # The PaymentIntent exists at the provider, for this visit and amount.
    intent = ls.intent(v["intent"])
    assert intent.amount == 2000 and intent.currency == "cny"
    assert intent.metadata["purpose"] == "consultation" and intent.metadata["subject_id"] == v["visit_id"]
    assert payment(v["visit_id"]).status == PaymentStatus.REQUIRES_PAYMENT

    # The patient pays (what Stripe.js does with the client secret), Stripe sends the event.
    assert ls.pay(v["intent"]).status == "succeeded"
    event = ls.event_for("payment_intent.succeeded", v["intent"])
    first = deliver(client, event, PATHS[0])
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {
        "received": True,
        "event_id": event.id,
        "type": "payment_intent.succeeded",
        "duplicate": False,
    }
    assert visit_status(v["visit_id"]) == "waiting"
    row = payment(v["visit_id"])
    assert row.status == PaymentStatus.SUCCEEDED and row.paid_at is not None

    # The same event again, at either path, freshly signed: answered, and nothing happens twice.
    for path in PATHS:
        again = deliver(client, event, path)
        assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert len(audits("visit.paid")) == 1
    [paid] = audits("payment.succeeded")
    assert paid.actor_id == "stripe" and paid.actor_role == "system"
    assert count(ProcessedEvent) == 1

    # The physician's queue now shows it.
    queue = client.get("/api/v1/visits?queue=waiting", headers=f.auth(f.token(client, world["cardio"].username)))
    assert [item["id"] for item in queue.get_json()["items"]] == [v["visit_id"]]


@pytest.mark.parametrize("path", PATHS)
def test_forged_or_altered_webhooks_change_nothing(world: dict[str, Any], ls: LocalStripe, path: str) -> None:
    client = world["client"]
    v = new_visit(world)
    ls.pay(v["intent"])
    event = ls.event_for("payment_intent.succeeded", v["intent"])
    payload = json.dumps(event.to_dict())
    entries_before = count(AuditEntry)

    attempts = [
        # signed with another secret
        client.post(path, data=payload, headers=signed(payload, secret="whsec_attacker")[1]),
        # a valid signature of a different body
        client.post(path, data=payload.replace('"amount": 2000', '"amount": 1'), headers=signed(payload)[1]),
        # no signature at all, and a malformed one
        client.post(path, data=payload, headers={"Content-Type": "application/json"}),
        client.post(path, data=payload, headers={"Stripe-Signature": "t=abc,v1=zz"}),
        # a genuine delivery recorded long ago and replayed (outside the 5-minute tolerance)
        deliver(client, event, path, timestamp=int(time.time()) - 600),
        # not even text
        client.post(path, data=b"\xff\xfe\x00", headers=signed("x")[1]),
    ]
    for resp in attempts:
        assert resp.status_code == 400, resp.get_data(as_text=True)
        assert resp.get_json()["error"]["code"] == "bad_signature"
    assert visit_status(v["visit_id"]) == "awaiting_payment"
    assert payment(v["visit_id"]).status == PaymentStatus.REQUIRES_PAYMENT
    assert count(ProcessedEvent) == 0
    # Only the refusals themselves were recorded.
    new = list(db.session.scalars(select(AuditEntry).where(AuditEntry.seq > entries_before)))
    assert {e.action for e in new} == {"request.refused"} and len(new) == len(attempts)

    # The genuine event still takes effect afterwards: the forgeries burned nothing.
    assert deliver(client, event, path).status_code == 200
    assert visit_status(v["visit_id"]) == "waiting"


def test_declined_card_leaves_the_visit_awaiting_payment(world: dict[str, Any], ls: LocalStripe) -> None:
    client = world["client"]
    v = new_visit(world)
    with pytest.raises(stripe.CardError) as declined:
        ls.pay(v["intent"], DECLINED)
    assert declined.value.code == "card_declined"
    resp = deliver(client, ls.event_for("payment_intent.payment_failed", v["intent"]))
    assert resp.status_code == 200
    assert visit_status(v["visit_id"]) == "awaiting_payment"
    row = payment(v["visit_id"])
    assert row.status == PaymentStatus.FAILED and row.failure_code == "card_declined"
    assert audits("visit.paid") == []
    # (Stripe lets the customer retry with another card on the same intent; localstripe
    # cannot confirm an intent again after a declined charge, so that is not exercised here.)


def test_patient_cancelling_before_acceptance_is_refunded(world: dict[str, Any], ls: LocalStripe) -> None:
    client = world["client"]
    v = paid_visit(world, ls)
    resp = client.post(f"/api/v1/visits/{v['visit_id']}/cancel", json={"reason": "改约"}, headers=f.auth(v["token"]))
    assert resp.status_code == 200 and resp.get_json() == {"status": "cancelled"}

    [refund] = ls.refunds(v["intent"])
    assert refund.amount == 2000 and refund.status == "succeeded"
    row = payment(v["visit_id"])
    assert row.status == PaymentStatus.REFUNDED and row.refund_ref == refund.id and row.refunded_at is not None
    [entry] = audits("payment.refunded")
    assert entry.detail["refund"] == refund.id and entry.detail["amount_fen"] == 2000


def test_institution_cancelling_refunds(world: dict[str, Any], ls: LocalStripe) -> None:
    client = world["client"]
    v = paid_visit(world, ls)
    admin = f.staff(Role.ADMIN)
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/cancel",
        json={"reason": "医生停诊"},
        headers=f.auth(f.token(client, admin.username)),
    )
    assert resp.status_code == 200, resp.get_json()
    assert visit_status(v["visit_id"]) == "cancelled"
    assert [r.amount for r in ls.refunds(v["intent"])] == [2000]
    assert payment(v["visit_id"]).status == PaymentStatus.REFUNDED


def test_cancelling_an_unpaid_visit_voids_its_intent(world: dict[str, Any], ls: LocalStripe) -> None:
    client = world["client"]
    v = new_visit(world)
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/cancel", json={"reason": "不需要了"}, headers=f.auth(v["token"])
    )
    assert resp.status_code == 200
    assert ls.intent(v["intent"]).status == "canceled"
    assert payment(v["visit_id"]).status == PaymentStatus.CANCELLED
    assert audits("payment.refunded") == []
    # The voided intent can no longer be paid.
    with pytest.raises(stripe.InvalidRequestError):
        ls.pay(v["intent"])


def test_accepted_visit_cannot_be_cancelled_by_the_patient_nor_refunded(world: dict[str, Any], ls: LocalStripe) -> None:
    client, cardio = world["client"], world["cardio"]
    v = paid_visit(world, ls)
    accepted = client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(cardio)))
    assert accepted.status_code == 200, accepted.get_json()
    resp = client.post(f"/api/v1/visits/{v['visit_id']}/cancel", json={"reason": "x"}, headers=f.auth(v["token"]))
    assert refusal(resp) == (409, "illegal_transition")
    assert ls.refunds(v["intent"]) == []
    assert payment(v["visit_id"]).status == PaymentStatus.SUCCEEDED


def test_webhook_is_documented_without_bearer_auth(world: dict[str, Any]) -> None:
    doc = world["client"].get("/api/v1/openapi.json").get_json()
    op = doc["paths"]["/webhooks/stripe"]["post"]
    assert "security" not in op
    assert "bad_signature" in op["responses"]["400"]["description"]
    health = doc["paths"]["/health/db"]["get"]
    assert "security" not in health


def test_webhook_with_payments_off_is_404(client: FlaskClient) -> None:
    body, headers = signed('{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {}}}')
    for path in PATHS:
        resp = client.post(path, data=body, headers=headers)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
