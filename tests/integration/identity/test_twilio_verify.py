"""Phone codes through Twilio Verify: the real twilio SDK against a local stand-in.

These tests check our adapter and the SDK's requests/answers against the stand-in's
imitation of Twilio's documented behaviour (tests/support/twilio_standin.py), not
Twilio's real service.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.app import create_app
from clinic.core import limits
from clinic.core.audit import AuditEntry
from clinic.core.db import db
from identity.models import Account, Patient
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.twilio_standin import TwilioStandin

PASSWORD = "Secret123x"


@pytest.fixture
def standin(twilio_standin: TwilioStandin) -> TwilioStandin:
    return twilio_standin


@pytest.fixture(scope="module")
def twilio_app(app: Flask, backend: dict[str, Any], twilio_server: TwilioStandin) -> Flask:
    """The app with SMS_BACKEND=twilio on the harness's (migrated) database."""
    return create_app(make_config(backend, **twilio_server.app_settings()))


@pytest.fixture
def tclient(ctx: Flask, twilio_app: Flask, standin: TwilioStandin) -> Iterator[FlaskClient]:
    """A client of the Twilio-configured app; `ctx` empties the tables afterwards."""
    with twilio_app.app_context():
        yield twilio_app.test_client()


def count(model: type) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def register(client: FlaskClient, phone: str) -> tuple[int, dict[str, Any]]:
    body = {"name": "李华", "id_number": f.id_number(date(1979, 4, 5)), "phone": phone, "password": PASSWORD}
    resp = client.post("/api/v1/patients", json=body)
    return resp.status_code, resp.get_json()


def registered(client: FlaskClient, standin: TwilioStandin) -> tuple[str, str]:
    """Register a patient; answer (E.164 phone, Bearer token)."""
    phone = f.phone()
    status, body = register(client, phone)
    assert status == 201, body
    e164 = "+86" + phone
    return e164, f.token(client, e164, PASSWORD)


def verify(client: FlaskClient, tok: str, code: str) -> Any:
    return client.post("/api/v1/patients/verify-phone", json={"code": code}, headers=f.auth(tok))


def me(client: FlaskClient, tok: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/api/v1/me", headers=f.auth(tok)).get_json()
    return body


def test_registration_sends_a_code_and_the_code_confirms_the_phone(
    tclient: FlaskClient, standin: TwilioStandin
) -> None:
    phone, tok = registered(tclient, standin)
    assert ("POST", f"/verify/v2/Services/{standin.verify_service_sid}/Verifications") in standin.requests
    assert len(standin.codes_sent_to(phone)) == 1
    assert me(tclient, tok)["phone_verified"] is False

    resp = verify(tclient, tok, standin.last_code(phone))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"status": "verified"}
    assert me(tclient, tok)["phone_verified"] is True
    assert ("POST", f"/verify/v2/Services/{standin.verify_service_sid}/VerificationCheck") in standin.requests
    actions = set(db.session.scalars(select(AuditEntry.action)))
    assert {"patient.registered", "phone.code_sent", "phone.verified"} <= actions


def test_wrong_code_is_refused_then_the_right_one_works(tclient: FlaskClient, standin: TwilioStandin) -> None:
    phone, tok = registered(tclient, standin)
    right = standin.last_code(phone)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    resp = verify(tclient, tok, wrong)
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "bad_code"
    assert me(tclient, tok)["phone_verified"] is False
    assert "phone.code_rejected" in set(db.session.scalars(select(AuditEntry.action)))
    assert verify(tclient, tok, right).status_code == 200
    assert me(tclient, tok)["phone_verified"] is True


def test_expired_verification_is_a_bad_code(tclient: FlaskClient, standin: TwilioStandin) -> None:
    phone, tok = registered(tclient, standin)
    code = standin.last_code(phone)
    standin.expire_all()
    resp = verify(tclient, tok, code)
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "bad_code"
    assert me(tclient, tok)["phone_verified"] is False


def test_unknown_verification_is_a_bad_code(tclient: FlaskClient, standin: TwilioStandin) -> None:
    _phone, tok = registered(tclient, standin)
    standin.reset()  # Twilio has no pending verification for this number any more
    resp = verify(tclient, tok, "123456")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "bad_code"


def test_resend_reaches_twilio_and_the_code_still_works(tclient: FlaskClient, standin: TwilioStandin) -> None:
    phone, tok = registered(tclient, standin)
    refused = tclient.post("/api/v1/patients/resend-code", headers=f.auth(tok))
    assert refusal(refused) == (429, "rate_limited")  # one code a minute to a phone (SMS_PHONE_RATE_LIMIT)
    limits.reset()  # ... a minute later
    resp = tclient.post("/api/v1/patients/resend-code", headers=f.auth(tok))
    assert resp.status_code == 200 and resp.get_json() == {"status": "sent"}
    assert len(standin.codes_sent_to(phone)) == 2
    assert verify(tclient, tok, standin.last_code(phone)).status_code == 200


@pytest.mark.parametrize("outage", ["http_503", "connection_refused"])
def test_twilio_down_registration_is_503_and_writes_nothing(
    tclient: FlaskClient, standin: TwilioStandin, outage: str
) -> None:
    if outage == "http_503":
        standin.failure = 503
    else:
        standin.stop()
    status, body = register(tclient, f.phone())
    assert status == 503, body
    assert body["error"]["code"] == "sms_unavailable" and body["error"]["message"]
    assert count(Account) == 0 and count(Patient) == 0
    assert "patient.registered" not in set(db.session.scalars(select(AuditEntry.action)))


def test_twilio_down_while_checking_is_503_and_the_phone_stays_unconfirmed(
    tclient: FlaskClient, standin: TwilioStandin
) -> None:
    phone, tok = registered(tclient, standin)
    code = standin.last_code(phone)
    standin.failure = 503
    resp = verify(tclient, tok, code)
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "sms_unavailable"
    standin.failure = None
    assert me(tclient, tok)["phone_verified"] is False
    assert verify(tclient, tok, code).status_code == 200


def test_the_standin_checks_credentials(standin: TwilioStandin) -> None:
    """The stand-in refuses a wrong auth token the way Twilio does (the SDK raises)."""
    from twilio.base.exceptions import TwilioRestException

    from clinic.core.twilio import make_client

    client = make_client(standin.account_sid, "wrong-token", standin.base_url)
    with pytest.raises(TwilioRestException) as info:
        client.verify.v2.services(standin.verify_service_sid).verifications.create(to="+8613800000000", channel="sms")
    assert info.value.status == 401 and info.value.code == 20003


def test_messages_api_through_the_sdk(standin: TwilioStandin) -> None:
    from clinic.core.twilio import make_client

    client = make_client(standin.account_sid, standin.auth_token, standin.base_url)
    msg = client.messages.create(to="+8613800000001", from_="+15005550006", body="您的处方已发货")
    assert msg.sid.startswith("SM") and msg.status == "queued" and msg.body == "您的处方已发货"
    assert standin.outbox[-1]["to"] == "+8613800000001"
