"""The pharmacists' review queue, decisions, drug fee, dispensing and tracking (API.md § Pharmacy)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from clinic.core import jobs
from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.notifications.models import SmsMessage as Notification
from clinic.payments.services import StartedPayment
from identity.models import Role
from pharmacy import checkout, partners
from pharmacy.models import Review
from pharmacy.rules import ReviewState
from prescriptions import lifecycle as rx_lifecycle
from prescriptions.models import Prescription
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.partner_standin import PartnerStandin, sign
from tests.support.rx_factories import prescribed

SECRET = "partner-secret-0123456789-abcdefghij"


def pharmacist(client: FlaskClient) -> dict[str, str]:
    return f.auth(f.token(client, f.staff(Role.PHARMACIST).username))


def account_id(client: FlaskClient, h: dict[str, str]) -> str:
    return str(client.get("/api/v1/me", headers=h).get_json()["id"])


def status(rx: str) -> str:
    got = db.session.get(Prescription, uuid.UUID(rx), populate_existing=True)
    assert got is not None
    return got.status.value


def claim(client: FlaskClient, h: dict[str, str]) -> Any:
    return client.post("/api/v1/pharmacy/queue/claim", headers=h)


def decide(client: FlaskClient, h: dict[str, str], rx: str, decision: str, reasons: list[Any] | None = None) -> Any:
    body = {"decision": decision, "reasons": reasons or []}
    return client.post(f"/api/v1/pharmacy/prescriptions/{rx}/review", json=body, headers=h)


def actions() -> list[str]:
    return [e.action for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq))]


@pytest.fixture
def partner_server(ctx: Flask) -> Iterator[PartnerStandin]:
    server = PartnerStandin(SECRET).start()
    yield server
    server.stop()


def test_claim_review_approve_pay_dispense_deliver(client: FlaskClient, partner_server: PartnerStandin) -> None:
    with acting_as(Actor(None, "test")), unit_of_work():
        partner, _ = partners.create_partner(
            partners.PartnerSpec(
                "顺达", "LIC-1", date.today() + timedelta(days=90), ["11"], False, 1, partner_server.url, SECRET
            )
        )
    p = prescribed(client)
    a, b = pharmacist(client), pharmacist(client)

    got = claim(client, a)
    assert got.status_code == 200 and got.get_json() == {"prescription_id": p["rx"]}
    assert claim(client, b).status_code == 204  # the only one is held by A
    refused = decide(client, b, p["rx"], "approve")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_claimed"
    assert status(p["rx"]) == "pending_review" and "prescription.review_refused" in actions()

    screen = client.get(f"/api/v1/pharmacy/prescriptions/{p['rx']}/review", headers=a).get_json()
    assert screen["signature_valid"] is True and screen["rules"] == [] and screen["claimed_by_me"] is True
    assert screen["patient"]["age"] and "allergies" in screen["patient"] and screen["diagnosis"]["icd10"] == "I10"
    assert screen["items"][0]["name"] == "苯磺酸氨氯地平片"

    approved = decide(client, a, p["rx"], "approve")
    assert approved.status_code == 200, approved.get_json()
    assert approved.get_json()["status"] == "approved" and status(p["rx"]) == "approved"
    counter = approved.get_json()["pharmacist_jws"]
    v1 = client.post("/api/v1/pharmacy/verify", json={"jws": counter}, headers=a).get_json()
    assert v1 == {"valid": True, "prescription_id": p["rx"], "kind": "pharmacist_review"}
    v2 = client.post("/api/v1/pharmacy/verify", json={"jws": p["jws"]}, headers=a).get_json()
    assert v2 == {"valid": True, "prescription_id": p["rx"], "kind": "prescription"}
    bad = client.post("/api/v1/pharmacy/verify", json={"jws": counter[:-4] + "AAAA"}, headers=a)
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid_signature"
    assert refusal(decide(client, a, p["rx"], "approve")) == (409, "not_claimed")  # decided: no longer claimed

    # nothing is dispensed before the patient says where it goes (payments off: fee waived)
    early = client.post(f"/api/v1/pharmacy/prescriptions/{p['rx']}/dispense", headers=a)
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "no_delivery_address"
    out = client.post(
        f"/api/v1/prescriptions/{p['rx']}/checkout",
        json={
            "recipient_name": "张三",
            "phone": "+8613800000001",
            "address": "北京市朝阳区1号",
            "region_code": "110105",
        },
        headers=f.auth(p["token"]),
    )
    assert out.status_code == 200 and out.get_json()["paid"] is True, out.get_json()

    # A made it up (调配) and names B, on duty beside A, as the pharmacist who checked it (核对、发药)
    disp = client.post(
        f"/api/v1/pharmacy/prescriptions/{p['rx']}/dispense", json={"checked_by": account_id(client, b)}, headers=a
    )
    assert disp.status_code == 200, disp.get_json()
    got = disp.get_json()
    assert {k: got[k] for k in ("status", "delivery_status", "partner")} == {
        "status": "dispensed",
        "delivery_status": "routed",
        "partner": "顺达",
    }
    assert got["dispensed_by"]["id"] == account_id(client, a) and got["checked_by"]["id"] == account_id(client, b)
    assert len(partner_server.orders) == 1  # sent right after the commit, signed
    track = client.get(f"/api/v1/prescriptions/{p['rx']}/delivery", headers=a).get_json()
    assert track["status"] == "dispatched"
    again = client.post(f"/api/v1/pharmacy/prescriptions/{p['rx']}/dispense", headers=b)
    assert refusal(again) == (409, "illegal_transition") and len(partner_server.orders) == 1  # dispensed once

    for st in ("picked_up", "delivered"):
        raw = json.dumps({"event_id": st, "prescription_id": p["rx"], "status": st, "at": "2026-11-23T08:00:00Z"})
        resp = client.post(f"/api/v1/partners/{partner.id}/callbacks", data=raw, headers=sign(SECRET, raw.encode()))
        assert resp.status_code == 200, resp.get_json()
    assert status(p["rx"]) == "delivered"
    track = client.get(f"/api/v1/prescriptions/{p['rx']}/delivery", headers=f.auth(p["token"])).get_json()
    assert track["partner"]["name"] == "顺达" and track["status"] == "delivered"
    assert [e["status"] for e in track["events"]] == ["dispatched", "picked_up", "delivered"]
    stranger = f.patient(name="李四")
    assert refusal(
        client.get(
            f"/api/v1/prescriptions/{p['rx']}/delivery", headers=f.auth(f.token(client, stranger.account.username))
        )
    ) == (404, "not_found")
    about_rx = select(Notification).where(Notification.subject_type == "prescription")
    kinds = [n.kind for n in db.session.scalars(about_rx.order_by(Notification.created_at))]
    assert kinds == ["approved", "shipped", "delivered"]  # the visit's own SMS (accepted) aside
    assert {"prescription.claimed", "prescription.reviewed", "prescription.dispensed"} <= set(actions())


def test_a_signature_that_fails_cannot_be_approved(client: FlaskClient) -> None:
    p = prescribed(client)
    with unit_of_work():
        rx = db.session.get(Prescription, uuid.UUID(p["rx"]))
        assert rx is not None
        rx.content = {**rx.content, "weight_kg": "99"}  # changed after signing
    a = pharmacist(client)
    assert claim(client, a).status_code == 200
    screen = client.get(f"/api/v1/pharmacy/prescriptions/{p['rx']}/review", headers=a).get_json()
    assert screen["signature_valid"] is False
    resp = decide(client, a, p["rx"], "approve")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_signature"
    assert status(p["rx"]) == "pending_review"
    assert any(
        e.detail.get("reason") == "invalid_signature"
        for e in db.session.scalars(select(AuditEntry).where(AuditEntry.action == "prescription.review_refused"))
    )
    rejected = decide(client, a, p["rx"], "reject", [{"code": "legality", "note": "签名无法验证"}])
    assert rejected.status_code == 200 and rejected.get_json()["status"] == "rejected"
    note = db.session.scalars(select(Notification).where(Notification.subject_type == "prescription")).one()
    assert note.kind == "rejected" and "处方合法性" in note.body and "复诊" in note.body  # what to do next


def test_reject_and_return_need_reasons_from_the_standard(client: FlaskClient) -> None:
    p = prescribed(client)
    a = pharmacist(client)
    claim(client, a)
    assert refusal(decide(client, a, p["rx"], "reject")) == (422, "invalid")
    assert refusal(decide(client, a, p["rx"], "return", ["not_a_reason"])) == (422, "invalid")
    resp = decide(client, a, p["rx"], "return", ["dose", {"code": "interaction", "note": "x"}])
    assert resp.status_code == 200 and status(p["rx"]) == "returned"
    rec = db.session.get(Review, uuid.UUID(p["rx"]), populate_existing=True)
    assert rec is not None and [r["code"] for r in rec.reasons] == ["dose", "interaction"]


def test_an_abandoned_claim_returns_to_the_queue(client: FlaskClient) -> None:
    p = prescribed(client)
    a, b = pharmacist(client), pharmacist(client)
    assert claim(client, a).status_code == 200
    with unit_of_work():
        db.session.execute(update(Review).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
    assert claim(client, b).get_json() == {"prescription_id": p["rx"]}
    assert refusal(decide(client, a, p["rx"], "approve")) == (409, "not_claimed")  # A's claim is gone
    assert decide(client, b, p["rx"], "approve").status_code == 200


def test_unqualified_pharmacist_cannot_claim(client: FlaskClient) -> None:
    prescribed(client)
    expired = f.staff(Role.PHARMACIST, qualification_valid_until=date.today() - timedelta(days=1))
    resp = claim(client, f.auth(f.token(client, expired.username)))
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "not_qualified"


NO_SUCH_PRESCRIPTIONS = ("not-a-uuid", str(uuid.uuid4()))  # a malformed id and an unknown one
PHARMACIST_ACTS = (
    ("GET", "review", None),
    ("POST", "review", {"decision": "approve", "reasons": []}),
    ("POST", "prepare", None),
    ("POST", "dispense", {}),
)


@pytest.mark.parametrize("rx_id", NO_SUCH_PRESCRIPTIONS)
@pytest.mark.parametrize(("method", "act", "body"), PHARMACIST_ACTS)
def test_an_unqualified_pharmacist_is_refused_before_any_prescription_is_looked_up(
    client: FlaskClient, rx_id: str, method: str, act: str, body: dict[str, Any] | None
) -> None:
    """The qualification is checked first, whatever the id names: not_qualified, never a 404
    that would tell an unqualified pharmacist which prescriptions exist."""
    expired = f.staff(Role.PHARMACIST, qualification_valid_until=date.today() - timedelta(days=1))
    url = f"/api/v1/pharmacy/prescriptions/{rx_id}/{act}"
    unqualified = client.open(url, method=method, json=body, headers=f.auth(f.token(client, expired.username)))
    assert refusal(unqualified) == (403, "not_qualified")
    qualified = client.open(url, method=method, json=body, headers=pharmacist(client))
    assert refusal(qualified) == (404, "not_found")


class FakePayments:
    def __init__(self) -> None:
        self.started: list[tuple[str, uuid.UUID, int]] = []

    def start(self, purpose: str, subject_id: uuid.UUID, amount_fen: int, description: str) -> StartedPayment:
        self.started.append((purpose, subject_id, amount_fen))
        return StartedPayment("pi_test", "secret", amount_fen, "cny")

    def refund(self, purpose: str, subject_id: uuid.UUID, reason: str) -> None:
        return None


def test_no_dispensing_before_the_drug_fee_is_paid(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = prescribed(client)  # the consultation was free (payments off until now)
    port = FakePayments()
    monkeypatch.setitem(ctx.extensions, "payments", port)
    a = pharmacist(client)
    claim(client, a)
    assert decide(client, a, p["rx"], "approve").status_code == 200
    out = client.post(
        f"/api/v1/prescriptions/{p['rx']}/checkout", json={"collect_at_pharmacy": True}, headers=f.auth(p["token"])
    )
    assert out.status_code == 200 and out.get_json()["paid"] is False
    assert out.get_json()["payment"]["client_secret"] == "secret"
    assert port.started == [("drug_fee", uuid.UUID(p["rx"]), ctx.config["DRUG_FEE_FEN"])]
    resp = client.post(f"/api/v1/pharmacy/prescriptions/{p['rx']}/dispense", headers=a)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "drug_fee_unpaid"
    assert status(p["rx"]) == "approved"
    with acting_as(Actor(None, "payments")), unit_of_work():
        checkout.mark_drug_fee_paid(uuid.UUID(p["rx"]))
    b = pharmacist(client)  # checks what A made up and hands it over at the counter
    resp = client.post(
        f"/api/v1/pharmacy/prescriptions/{p['rx']}/dispense", json={"dispensed_by": account_id(client, a)}, headers=b
    )
    assert resp.status_code == 200 and resp.get_json()["delivery_status"] == "collect_at_pharmacy"
    jobs.drain()


def test_a_prescription_that_expires_while_claimed_leaves_the_queue_undecided(client: FlaskClient, ctx: Flask) -> None:
    p = prescribed(client)
    a = pharmacist(client)
    queued = db.session.get(Review, uuid.UUID(p["rx"]))
    assert queued is not None and queued.state == ReviewState.PENDING  # queued when signed
    assert claim(client, a).status_code == 200
    rx = db.session.get(Prescription, uuid.UUID(p["rx"]), populate_existing=True)
    assert rx is not None
    assert rx_lifecycle.expire_if_overdue(rx.id, rx.expires_at)  # its validity ends while claimed
    db.session.commit()
    review = db.session.get(Review, rx.id, populate_existing=True)
    assert review is not None and review.state == ReviewState.CLOSED and review.claim_expires_at is None
    late = decide(client, a, p["rx"], "approve")
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "not_claimed"
