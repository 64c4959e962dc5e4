"""Incidents: recorded by an administrator, the regulator contact told by SMS right after the
commit through the outbox (the real twilio SDK against the local stand-in; an outage is
retried until it goes through), an adverse event can stop the service; all audited."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import delete, select, update

from clinic.app import create_app
from clinic.core import jobs
from clinic.core.audit import AuditEntry
from clinic.core.db import db, unit_of_work, utcnow
from clinic.core.jobs import OutboxJob
from clinic.core.pages import bj
from clinic.notifications.models import SmsMessage
from clinic.regulator.models import Incident
from clinic.visits import service_switch
from identity.models import Role
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.twilio_standin import TwilioStandin

CONTACT = "+8613900139000"
FROM = "+15005550006"


@pytest.fixture
def standin(twilio_standin: TwilioStandin) -> TwilioStandin:
    return twilio_standin


@pytest.fixture(scope="module")
def sms_app(app: Flask, backend: dict[str, Any], twilio_server: TwilioStandin) -> Flask:
    cfg = make_config(backend, **twilio_server.app_settings(), TWILIO_SMS_FROM=FROM, REGULATOR_CONTACT_PHONE=CONTACT)
    return create_app(cfg)


@pytest.fixture
def sclient(ctx: Flask, sms_app: Flask, standin: TwilioStandin) -> Iterator[FlaskClient]:
    with sms_app.app_context():
        yield sms_app.test_client()


def incident(**kw: Any) -> dict[str, Any]:
    body = {
        "kind": "data_security",
        "severity": "high",
        "what": "Laptop with an export of 120 patients' phone numbers stolen",
        "scope": "120 patients: names and phone numbers",
        "found_at": "2025-01-05T09:00:00+08:00",
    }
    body.update(kw)
    return body


def actions() -> list[str]:
    return [e.action for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq))]


def test_data_security_incident_is_reported_to_the_regulator_at_once(
    sclient: FlaskClient, standin: TwilioStandin
) -> None:
    f.institution()  # its name signs the SMS
    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    resp = sclient.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok))
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    # The answer is decided before the SMS goes out (after the commit): queued, no error yet.
    assert body["regulator_notified"] is False and body["notification_error"] is None
    assert body["kind"] == "data_security" and body["suspension_triggered"] is False
    sms = [m for m in standin.outbox if m["kind"] == "message"]
    assert len(sms) == 1 and sms[0]["to"] == CONTACT and sms[0]["from"] == FROM
    assert "120 patients" in sms[0]["body"] and body["id"] in sms[0]["body"]
    # Chinese, and the time it was found in Beijing time (found_at was given as +08:00)
    assert sms[0]["body"].startswith("【测试互联网医院】") and "数据安全事件（严重程度：" in sms[0]["body"]
    assert "发现时间 2025-01-05 09:00（北京时间）" in sms[0]["body"]
    assert actions().index("incident.recorded") < actions().index("incident.regulator_notified")
    notified = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "incident.regulator_notified")).one()
    assert notified.actor_role == "job" and CONTACT not in str(notified.detail)  # masked
    listed = sclient.get("/api/v1/admin/incidents", headers=f.auth(tok)).get_json()["items"]
    assert [i["id"] for i in listed] == [body["id"]]
    assert listed[0]["regulator_notified"] is True and listed[0]["regulator_notified_at"]


def test_an_sms_outage_keeps_the_incident_and_says_so(sclient: FlaskClient, standin: TwilioStandin) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    standin.failure = 503
    resp = sclient.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok))
    assert resp.status_code == 201
    listed = sclient.get("/api/v1/admin/incidents", headers=f.auth(tok)).get_json()["items"]
    assert listed[0]["regulator_notified"] is False
    assert listed[0]["notification_error"].startswith("will retry: NoticeNotSent")
    assert "incident.notification_failed" in actions() and "incident.regulator_notified" not in actions()
    # Twilio is back; the retry comes due and the sweeper sends it: the notice is not lost.
    standin.failure = None
    with unit_of_work():
        db.session.execute(update(OutboxJob).values(next_attempt_at=utcnow()))
    assert jobs.run_due() == {"done": 1}
    db.session.remove()
    row = db.session.get(Incident, uuid.UUID(resp.get_json()["id"]))
    assert row is not None and row.regulator_notified_at is not None and row.notification_error is None
    assert len([m for m in standin.outbox if m["kind"] == "message"]) == 1
    assert actions()[-1] == "incident.regulator_notified"


def test_adverse_event_can_suspend_all_online_services(sclient: FlaskClient, standin: TwilioStandin) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    resp = sclient.post(
        "/api/v1/admin/incidents",
        json=incident(kind="adverse_event", severity="critical", what="Wrong dose dispensed", suspend=True),
        headers=f.auth(tok),
    )
    assert resp.status_code == 201 and resp.get_json()["suspension_triggered"] is True
    assert service_switch.suspension() is not None and "Wrong dose dispensed" in service_switch.suspension().reason  # type: ignore[union-attr]
    assert {"incident.recorded", "service.suspended", "incident.regulator_notified"} <= set(actions())


def test_refusals(sclient: FlaskClient, standin: TwilioStandin) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    cases = [
        (incident(suspend=True), "suspension_not_applicable"),
        (incident(found_at="2999-01-01T00:00:00Z"), "invalid"),
        (incident(found_at="2025-01-05T09:00:00"), "invalid"),
        (incident(kind="rumour"), "invalid"),
        (incident(what=""), "invalid"),
    ]
    for body, code in cases:
        resp = sclient.post("/api/v1/admin/incidents", json=body, headers=f.auth(tok))
        assert resp.status_code == 422 and resp.get_json()["error"]["code"] == code, (body, resp.get_json())
    assert db.session.scalars(select(Incident)).first() is None
    assert service_switch.suspension() is None
    assert not [m for m in standin.outbox if m["kind"] == "message"]
    for role in (Role.REGULATOR, Role.PHYSICIAN, Role.PHARMACIST):
        other = f.token(sclient, f.staff(role).username)
        resp = sclient.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(other))
        assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"


def test_without_a_contact_the_incident_is_kept_and_the_gap_recorded(client: FlaskClient) -> None:
    admin = f.staff(Role.ADMIN)
    resp = client.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(f.token(client, admin.username)))
    assert resp.status_code == 201 and resp.get_json()["regulator_notified"] is False
    assert "REGULATOR_CONTACT_PHONE" in resp.get_json()["notification_error"]
    assert "incident.notification_skipped" in actions()


# --- following the SMS to the regulator (issue 16 item 5) ----------------------------------------

MASKED = "+86 139****9000"


def sms_of(sclient: FlaskClient, tok: str, incident_id: str) -> dict[str, Any]:
    resp = sclient.get(f"/api/v1/admin/incidents/{incident_id}", headers=f.auth(tok))
    assert resp.status_code == 200, resp.get_json()
    sms: dict[str, Any] = resp.get_json()["regulator_sms"]
    return sms


def test_the_sms_text_number_time_and_state_are_kept_and_shown(sclient: FlaskClient, standin: TwilioStandin) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    created = sclient.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok)).get_json()
    # Answered before the commit: the text is written with the incident, still queued.
    assert created["regulator_sms"]["state"] == "queued" and created["regulator_sms"]["to"] == MASKED
    [sent] = [m for m in standin.outbox if m["kind"] == "message"]
    sms = sms_of(sclient, tok, created["id"])
    assert sms["state"] == "sent" and sms["text"] == sent["body"] and created["id"] in sms["text"]
    assert sms["to"] == MASKED and CONTACT not in json.dumps(sms)
    assert sms["reference"].startswith("SM") and len(sms["reference"]) == 34
    assert sms["sent_at"] and sms["queued_at"] <= sms["sent_at"] and sms["failed_tries"] == 0
    # The record keeps the full number (encrypted at rest) and the exact text.
    row = db.session.scalars(select(SmsMessage).where(SmsMessage.subject_id == uuid.UUID(created["id"]))).one()
    assert (row.to_phone, row.body, row.status, row.subject_type) == (CONTACT, sent["body"], "sent", "incident")
    listed = sclient.get("/api/v1/admin/incidents", headers=f.auth(tok)).get_json()["items"]
    assert listed[0]["regulator_sms"] == sms


def test_retries_are_followed_until_sent_or_given_up(
    sclient: FlaskClient, sms_app: Flask, standin: TwilioStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    monkeypatch.setitem(sms_app.config, "JOBS_MAX_ATTEMPTS", 2)
    standin.failure = 503
    first = sclient.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok)).get_json()["id"]
    sms = sms_of(sclient, tok, first)
    assert sms["state"] == "retrying" and sms["failed_tries"] == 1 and sms["last_failure_at"]
    assert sms["text"] and first in sms["text"] and sms["sent_at"] is None and sms["reference"] is None
    with unit_of_work():
        db.session.execute(update(OutboxJob).values(next_attempt_at=utcnow()))
    jobs.run_due()  # the second try fails too: the outbox gives up
    db.session.remove()
    sms = sms_of(sclient, tok, first)
    assert sms["state"] == "failed" and sms["failed_tries"] == 2 and sms["sent_at"] is None
    assert not [m for m in standin.outbox if m["kind"] == "message"]


def test_a_development_log_and_a_missing_contact_say_so(client: FlaskClient, ctx: Flask) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(client, admin.username)
    created = client.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok)).get_json()
    sms = client.get(f"/api/v1/admin/incidents/{created['id']}", headers=f.auth(tok)).get_json()["regulator_sms"]
    assert sms == {
        "state": "not_configured",
        "text": None,
        "to": None,
        "queued_at": None,
        "sent_at": None,
        "reference": None,
        "failed_tries": 0,
        "last_failure_at": None,
    }
    before = ctx.config["REGULATOR_CONTACT_PHONE"]
    ctx.config["REGULATOR_CONTACT_PHONE"] = "13900139000"
    try:
        logged = client.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok)).get_json()
    finally:  # put back, not pop: a popped key stays set in the typed Config that settings() reads
        ctx.config["REGULATOR_CONTACT_PHONE"] = before
    sms = client.get(f"/api/v1/admin/incidents/{logged['id']}", headers=f.auth(tok)).get_json()["regulator_sms"]
    assert sms["state"] == "logged" and sms["to"] == "139****9000" and sms["sent_at"] and sms["reference"] is None


def test_a_notice_queued_before_texts_were_kept_is_written_when_it_goes_out(
    sclient: FlaskClient, standin: TwilioStandin
) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    standin.failure = 503
    iid = sclient.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok)).get_json()["id"]
    # As an outbox row written by the previous release: no SMS record, only the incident's id.
    with unit_of_work():
        db.session.execute(delete(SmsMessage).where(SmsMessage.subject_id == uuid.UUID(iid)))
        db.session.execute(update(OutboxJob).values(payload={"incident_id": iid}, next_attempt_at=utcnow()))
    standin.failure = None
    assert jobs.run_due() == {"done": 1}
    db.session.remove()
    [sent] = [m for m in standin.outbox if m["kind"] == "message"]
    sms = sms_of(sclient, tok, iid)
    assert sms["state"] == "sent" and sms["text"] == sent["body"] and sent["to"] == CONTACT


def test_one_incident_is_for_administrators_only(sclient: FlaskClient) -> None:
    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    iid = sclient.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok)).get_json()["id"]
    assert refusal(sclient.get(f"/api/v1/admin/incidents/{uuid.uuid4()}", headers=f.auth(tok))) == (404, "not_found")
    assert refusal(sclient.get("/api/v1/admin/incidents/not-an-id", headers=f.auth(tok))) == (404, "not_found")
    other = f.token(sclient, f.staff(Role.REGULATOR).username)
    resp = sclient.get(f"/api/v1/admin/incidents/{iid}", headers=f.auth(other))
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"


def test_the_incident_page_shows_the_sms_in_words_and_beijing_time(
    sclient: FlaskClient, sms_app: Flask, standin: TwilioStandin
) -> None:
    from tests.integration.pharmacy.test_pharmacy_pages import login

    admin = f.staff(Role.ADMIN)
    tok = f.token(sclient, admin.username)
    iid = sclient.post("/api/v1/admin/incidents", json=incident(), headers=f.auth(tok)).get_json()["id"]
    row = db.session.scalars(select(SmsMessage).where(SmsMessage.subject_id == uuid.UUID(iid))).one()
    page = login(sms_app, admin.username)
    listing = page.get("/admin/incidents").get_data(as_text=True)
    assert f'href="/admin/incidents/{iid}"' in listing and "查看短信" in listing and "已由短信平台发出" in listing
    html = page.get(f"/admin/incidents/{iid}").get_data(as_text=True)
    assert MASKED in html and CONTACT not in html and "已由短信平台发出" in html
    assert escape(row.body) in html and bj(row.sent_at) in html and row.provider_ref in html
    assert refusal(page.get(f"/admin/incidents/{uuid.uuid4()}")) == (404, "not_found")
