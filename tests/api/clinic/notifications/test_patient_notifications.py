"""Every change a patient waits for: exactly one SMS (through the outbox, the real Twilio
SDK against the local stand-in) and one in-app notification, whose link works."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from clinic.core.db import db, utcnow
from clinic.notifications.models import InboxNotification
from clinic.visits.models import Diagnosis, Visit
from identity.models import Account, Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.rx_factories import prescribed
from tests.support.twilio_standin import TwilioStandin


@pytest.fixture
def sms(ctx: Flask, twilio_standin: TwilioStandin, monkeypatch: pytest.MonkeyPatch) -> TwilioStandin:
    for key, value in twilio_standin.app_settings().items():
        monkeypatch.setitem(ctx.config, key, value)
    return twilio_standin


def inbox(account_id: Any) -> list[InboxNotification]:
    return list(
        db.session.scalars(
            select(InboxNotification)
            .where(InboxNotification.account_id == account_id)
            .order_by(InboxNotification.created_at)
            .execution_options(populate_existing=True)
        )
    )


class Watch:
    """What one action sent to one account: SMS in the stand-in, notifications in the app."""

    def __init__(self, sms: TwilioStandin, account: Account) -> None:
        self.sms, self.account_id = sms, account.id
        fresh = db.session.get(Account, account.id)
        assert fresh is not None
        self.username, self.phone = fresh.username, fresh.phone
        self.mark()

    def mark(self) -> None:
        self.seen_sms = len(self.sms.outbox)
        self.seen_notes = len(inbox(self.account_id))

    def new(self) -> tuple[list[dict[str, Any]], list[InboxNotification]]:
        texts = [m for m in self.sms.outbox[self.seen_sms :] if m["to"] == self.phone]
        notes = inbox(self.account_id)[self.seen_notes :]
        self.mark()
        return texts, notes


def login(client: FlaskClient, username: str) -> None:
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"username": username, "password": f.PASSWORD, "csrf_token": csrf})
    assert resp.status_code == 302


def assert_one(w: Watch, kind: str, ctx: Flask, *, says: str = "") -> InboxNotification:
    texts, notes = w.new()
    assert [n.kind for n in notes] == [kind]
    assert len(texts) == 1, texts
    body = texts[0]["body"]
    assert body.startswith("【") and (says in body)
    # The SMS's short link opens (after login) the page the notification is about.
    code = re.search(r"/n/([A-Za-z0-9]+)$", body)
    assert code and code.group(1) == notes[0].short_code
    page = ctx.test_client()
    login(page, w.username)
    opened = page.get(f"/n/{code.group(1)}")
    assert opened.status_code == 302 and opened.headers["Location"].endswith(notes[0].link)
    assert page.get(notes[0].link).status_code == 200
    assert inbox(w.account_id)[-1].read_at is not None  # opening it marked it read
    return notes[0]


def left_room(visit_id: str) -> None:
    db.session.execute(
        update(Visit).where(Visit.id == uuid.UUID(visit_id)).values(patient_seen_at=utcnow() - timedelta(minutes=5))
    )
    db.session.commit()


def test_proof_confirmed_and_rejected_each_tell_the_patient_once(
    ctx: Flask, client: FlaskClient, sms: TwilioStandin
) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient()
    cf.diagnosis(reg.patient.id, reg.account, "I10")
    cf.diagnosis(reg.patient.id, reg.account, "I25")
    d1, d2 = db.session.scalars(select(Diagnosis.id).order_by(Diagnosis.icd10)).all()
    w = Watch(sms, reg.account)
    face = cf.face_token(doc)
    assert client.post(f"/api/v1/diagnoses/{d1}/confirm", headers=f.auth(face)).status_code == 200
    assert_one(w, "proof_confirmed", ctx, says="原发性高血压")
    resp = client.post(f"/api/v1/diagnoses/{d2}/reject", json={"reason": "病历照片看不清"}, headers=f.auth(face))
    assert resp.status_code == 200
    assert_one(w, "proof_rejected", ctx, says="病历照片看不清")


def test_visit_accepted_message_completed_each_once_and_messages_do_not_storm(
    ctx: Flask, client: FlaskClient, sms: TwilioStandin
) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    v = cf.open_visit(client, doc)
    w = Watch(sms, v["reg"].account)
    face = cf.face_token(doc)
    vid = v["visit_id"]
    assert client.post(f"/api/v1/visits/{vid}/accept", headers=f.auth(face)).status_code == 200
    assert_one(w, "visit_accepted", ctx, says="接诊")

    # The patient left the room (opening the link above put them in it): the first message
    # is texted, the next ones within 10 minutes are not (the notification centre lists them).
    left_room(vid)
    say = {"text": "请把最近一周的血压发给我"}
    assert client.post(f"/api/v1/visits/{vid}/messages", json=say, headers=f.auth(face)).status_code == 201
    assert_one(w, "visit_message", ctx, says="新消息")
    left_room(vid)  # again: following the link took the patient into the room
    assert client.post(f"/api/v1/visits/{vid}/messages", json=say, headers=f.auth(face)).status_code == 201
    texts, notes = w.new()
    assert texts == [] and [n.kind for n in notes] == ["visit_message"]

    # Ten minutes later another message is texted again.
    for n in inbox(w.account_id):
        n.created_at = utcnow() - timedelta(minutes=11)
    db.session.commit()
    assert client.post(f"/api/v1/visits/{vid}/messages", json=say, headers=f.auth(face)).status_code == 201
    texts, notes = w.new()
    assert len(texts) == 1 and len(notes) == 1

    # While the patient has the room open, a message is neither texted nor notified.
    page = ctx.test_client()
    login(page, w.username)
    assert page.get(f"/visits/{vid}/live").status_code == 200
    assert client.post(f"/api/v1/visits/{vid}/messages", json=say, headers=f.auth(face)).status_code == 201
    assert w.new() == ([], [])

    done = client.post(f"/api/v1/visits/{vid}/complete", json={"note": "血压控制良好，继续服药"}, headers=f.auth(face))
    assert done.status_code == 200
    assert_one(w, "visit_completed", ctx, says="复诊已结束")


def test_referral_tells_the_patient_with_the_advice(ctx: Flask, client: FlaskClient, sms: TwilioStandin) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    v = cf.open_visit(client, doc)
    face = cf.face_token(doc)
    assert client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(face)).status_code == 200
    w = Watch(sms, v["reg"].account)
    body = {"reason": "胸痛加重", "referral_advice": "请今天到心内科门诊就诊"}
    assert client.post(f"/api/v1/visits/{v['visit_id']}/terminate", json=body, headers=f.auth(face)).status_code == 200
    assert_one(w, "visit_referred", ctx, says="请今天到心内科门诊就诊")


@pytest.mark.parametrize(
    ("decision", "kind", "says"),
    [("approve", "approved", "通过"), ("return", "returned", "退回"), ("reject", "rejected", "未通过")],
)
def test_each_pharmacist_decision_tells_the_patient_once_with_a_link_to_the_prescription(
    ctx: Flask, client: FlaskClient, sms: TwilioStandin, decision: str, kind: str, says: str
) -> None:
    v = prescribed(client)
    rx = v["rx"]
    h = f.auth(f.token(client, f.staff(Role.PHARMACIST).username))
    assert client.post("/api/v1/pharmacy/queue/claim", headers=h).status_code == 200
    w = Watch(sms, v["reg"].account)
    reasons = [] if decision == "approve" else ["dose"]
    resp = client.post(
        f"/api/v1/pharmacy/prescriptions/{rx}/review", json={"decision": decision, "reasons": reasons}, headers=h
    )
    assert resp.status_code == 200, resp.get_json()
    note = assert_one(w, kind, ctx, says=says)
    assert note.link == f"/prescriptions/{rx}/track"


def test_notifications_api_lists_counts_and_marks_read_only_ones_own(
    ctx: Flask, client: FlaskClient, sms: TwilioStandin
) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    v = cf.open_visit(client, doc)
    face = cf.face_token(doc)
    assert client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(face)).status_code == 200
    got = client.get("/api/v1/notifications", headers=f.auth(v["token"])).get_json()
    assert got["unread"] == 1 and got["items"][0]["kind"] == "visit_accepted"
    first = got["items"][0]
    assert first["link"] == f"/visits/{v['visit_id']}" and "接诊" in first["text"] and first["read"] is False
    other = f.patient()
    stranger = f.auth(f.token(client, other.account.username))
    assert refusal(client.post(f"/api/v1/notifications/{first['id']}/read", headers=stranger)) == (404, "not_found")
    assert refusal(client.post("/api/v1/notifications/not-an-id/read", headers=stranger)) == (404, "not_found")
    assert client.post(f"/api/v1/notifications/{first['id']}/read", headers=f.auth(v["token"])).status_code == 200
    again = client.get("/api/v1/notifications", headers=f.auth(v["token"])).get_json()
    assert again["unread"] == 0 and again["items"][0]["read"] is True
    assert refusal(client.get("/api/v1/notifications")) == (401, "unauthenticated")
    # The header of every page shows the unread count; the centre lists them in Chinese.
    page = ctx.test_client()
    login(page, v["reg"].account.username)
    html = page.get("/notifications").get_data(as_text=True)
    assert "接诊" in html and 'id="unread-count"' not in html
