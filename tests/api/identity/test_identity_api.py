"""The Identity section of API.md over HTTP."""

from __future__ import annotations

import logging
import re
from datetime import date

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from identity.models import Account, Patient, Role
from tests.support import factories as f
from tests.support.answers import refusal


def register(client: FlaskClient, **kw: str) -> tuple[int, dict]:
    body = {"name": "王小明", "id_number": f.id_number(date(1985, 1, 2)), "phone": f.phone(), "password": "Secret123x"}
    body.update(kw)
    resp = client.post("/api/v1/patients", json=body)
    return resp.status_code, resp.get_json()


def count(model: type) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def sms_code(caplog: pytest.LogCaptureFixture) -> str:
    codes = re.findall(r"verification code (\d{6})", caplog.text)
    assert codes, "no code was sent"
    return codes[-1]


def test_register_verify_phone_and_login(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="clinic.sms")
    phone = f.phone()
    status, body = register(client, phone=phone)
    assert status == 201
    assert set(body) == {"account_id", "patient_id"}
    tok = f.token(client, "+86" + phone, "Secret123x")
    me = client.get("/api/v1/me", headers=f.auth(tok)).get_json()
    assert me["role"] == "patient" and me["phone_verified"] is False
    assert me["patients"][0]["birth_date"] == "1985-01-02"
    assert me["patients"][0]["relation"] == "self"
    assert "id_number" not in me["patients"][0] and me["patients"][0]["id_number_masked"].startswith("110")

    bad = client.post("/api/v1/patients/verify-phone", json={"code": "000000"}, headers=f.auth(tok))
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "bad_code"
    ok = client.post("/api/v1/patients/verify-phone", json={"code": sms_code(caplog)}, headers=f.auth(tok))
    assert ok.status_code == 200
    assert client.get("/api/v1/me", headers=f.auth(tok)).get_json()["phone_verified"] is True


def test_token_answer_shape(client: FlaskClient) -> None:
    reg = f.patient()
    resp = client.post("/api/v1/auth/token", json={"username": reg.account.username, "password": f.PASSWORD})
    body = resp.get_json()
    assert resp.status_code == 200
    assert body["token_type"] == "Bearer" and body["role"] == "patient" and 0 < body["expires_in"] <= 3600


def test_bad_credentials_are_refused_and_audited(client: FlaskClient) -> None:
    reg = f.patient()
    resp = client.post("/api/v1/auth/token", json={"username": reg.account.username, "password": "wrong-pass1"})
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "bad_credentials"
    unknown = client.post("/api/v1/auth/token", json={"username": "nobody", "password": "wrong-pass1"})
    assert unknown.get_json()["error"]["code"] == "bad_credentials"  # same answer: no account enumeration
    failed = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "auth.login_failed")).all()
    assert len(failed) == 2


def test_login_is_rate_limited(client: FlaskClient) -> None:
    reg = f.patient()
    statuses = [
        client.post(
            "/api/v1/auth/token", json={"username": reg.account.username, "password": "wrong-pass1"}
        ).status_code
        for _ in range(12)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    resp = client.post("/api/v1/auth/token", json={"username": reg.account.username, "password": f.PASSWORD})
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "rate_limited"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("id_number", "110105194912310021", "invalid_id_number"),
        ("id_number", "11010520230230011X", "invalid_id_number"),
        ("phone", "12345", "invalid_phone"),
        ("password", "short", "weak_password"),
    ],
)
def test_registration_refusals_write_nothing(client: FlaskClient, field: str, value: str, code: str) -> None:
    status, body = register(client, **{field: value})
    assert status == 422
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert count(Account) == 0 and count(Patient) == 0


def test_same_person_or_phone_cannot_register_twice(client: FlaskClient) -> None:
    number = f.id_number(date(1970, 3, 3))
    phone = f.phone()
    assert register(client, id_number=number, phone=phone)[0] == 201
    status, body = register(client, id_number=number)
    assert (status, body["error"]["code"]) == (409, "already_registered")
    status, body = register(client, phone=phone)
    assert (status, body["error"]["code"]) == (409, "already_registered")
    assert count(Account) == 1


def test_family_members_and_guardianship(client: FlaskClient) -> None:
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    child_born = date.today().replace(year=date.today().year - 3, day=1)
    resp = client.post(
        "/api/v1/accounts/me/patients",
        json={"name": "小明", "id_number": f.id_number(child_born), "relation": "child"},
        headers=f.auth(tok),
    )
    assert resp.status_code == 201
    people = client.get("/api/v1/me", headers=f.auth(tok)).get_json()["patients"]
    assert [p["relation"] for p in people] == ["self", "child"]
    assert people[1]["age_years"] == 2 or people[1]["age_years"] == 3
    bad = client.post(
        "/api/v1/accounts/me/patients",
        json={"name": "小红", "id_number": "110105194912310021", "relation": "child"},
        headers=f.auth(tok),
    )
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid_id_number"


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("/api/v1/auth/token", "post", b"{not json"),
        ("/api/v1/auth/token", "post", b"[1,2]"),
        ("/api/v1/auth/token", "post", b'{"username": 5}'),
        ("/api/v1/auth/token", "post", b'{"username": "a", "password": "b", "extra": 1}'),
        ("/api/v1/patients", "post", b'{"name": "x"}'),
        ("/api/v1/patients", "post", b""),
    ],
)
def test_malformed_bodies_get_the_envelope(client: FlaskClient, path: str, method: str, body: bytes) -> None:
    resp = getattr(client, method)(path, data=body, content_type="application/json")
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "invalid" and err["message"]


def test_tokens_never_work_for_another_role(client: FlaskClient) -> None:
    reg = f.patient()
    physician = f.staff(Role.PHYSICIAN)
    ptok = f.token(client, physician.username)
    resp = client.post("/api/v1/patients/verify-phone", json={"code": "123456"}, headers=f.auth(ptok))
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    patient_tok = f.token(client, reg.account.username)
    resp = client.get("/api/v1/audit/verify", headers=f.auth(patient_tok))
    assert resp.status_code == 403


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer not-a-jwt",
        "Basic abc",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIiwicm9sZSI6ImFkbWluIn0.",
    ],
)
def test_missing_or_forged_tokens_are_401(client: FlaskClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    resp = client.get("/api/v1/me", headers=headers)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "unauthenticated"


def test_token_signed_with_another_algorithm_or_key_is_refused(client: FlaskClient) -> None:
    from jose import jwt

    reg = f.patient()
    claims = {"sub": str(reg.account.id), "role": "patient", "typ": "access", "exp": 4102444800}
    wrong_key = jwt.encode(claims, "some-other-secret", algorithm="HS256")
    assert refusal(client.get("/api/v1/me", headers=f.auth(wrong_key))) == (401, "unauthenticated")
    right_key_wrong_alg = jwt.encode(claims, "test-jwt-secret-that-is-long-enough-000", algorithm="HS512")
    assert refusal(client.get("/api/v1/me", headers=f.auth(right_key_wrong_alg))) == (401, "unauthenticated")


def test_expired_token_is_refused(client: FlaskClient) -> None:
    from jose import jwt

    reg = f.patient()
    claims = {"sub": str(reg.account.id), "role": "patient", "typ": "access", "exp": 1000}
    tok = jwt.encode(claims, "test-jwt-secret-that-is-long-enough-000", algorithm="HS256")
    assert refusal(client.get("/api/v1/me", headers=f.auth(tok))) == (401, "unauthenticated")


def test_a_token_already_accepted_is_refused_once_it_expires(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signatures are remembered per process; the token's times are checked on every call."""
    from datetime import timedelta

    from identity import tokens

    reg = f.patient()
    tok = f.token(client, reg.account.username)
    assert client.get("/api/v1/me", headers=f.auth(tok)).status_code == 200
    assert client.get("/api/v1/me", headers=f.auth(tok)).status_code == 200  # the remembered signature
    later = tokens.utcnow() + timedelta(seconds=int(client.application.config["JWT_EXPIRES_SECONDS"]) + 1)
    monkeypatch.setattr(tokens, "utcnow", lambda: later)
    resp = client.get("/api/v1/me", headers=f.auth(tok))
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthenticated"


def test_a_remembered_token_is_not_accepted_under_another_secret(client: FlaskClient) -> None:
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    assert client.get("/api/v1/me", headers=f.auth(tok)).status_code == 200
    app = client.application
    saved = app.config["JWT_SECRET"]
    app.config["JWT_SECRET"] = "a-rotated-secret-that-is-long-enough-111"
    try:
        assert refusal(client.get("/api/v1/me", headers=f.auth(tok))) == (401, "unauthenticated")
    finally:
        app.config["JWT_SECRET"] = saved


def test_tokens_without_expiry_or_with_a_future_start_are_refused(client: FlaskClient) -> None:
    from jose import jwt

    from identity import tokens

    reg = f.patient()
    secret = "test-jwt-secret-that-is-long-enough-000"
    now = int(tokens.utcnow().timestamp())
    base = {"sub": str(reg.account.id), "role": "patient", "typ": "access"}
    no_exp = jwt.encode(base, secret, algorithm="HS256")
    not_yet = jwt.encode({**base, "exp": now + 600, "nbf": now + 300}, secret, algorithm="HS256")
    float_exp = jwt.encode({**base, "exp": now + 600.5}, secret, algorithm="HS256")
    for tok in (no_exp, not_yet, float_exp):
        assert refusal(client.get("/api/v1/me", headers=f.auth(tok))) == (401, "unauthenticated")


def test_disabled_account_token_stops_working(client: FlaskClient) -> None:
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    account = db.session.get(Account, reg.account.id)
    assert account is not None
    account.active = False
    db.session.commit()
    assert refusal(client.get("/api/v1/me", headers=f.auth(tok))) == (401, "unauthenticated")


def test_unknown_paths_and_methods_use_the_envelope(client: FlaskClient) -> None:
    resp = client.get("/api/v1/nothing-here")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    resp = client.get("/api/v1/auth/token")
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "method_not_allowed"


def test_api_ignores_session_cookies(client: FlaskClient) -> None:
    """Pages log in with a cookie; that cookie never authenticates /api/v1."""
    reg = f.patient()
    page = client.get("/login")
    from tests.conftest import extract_csrf

    client.post(
        "/login",
        data={
            "username": reg.account.username,
            "password": f.PASSWORD,
            "csrf_token": extract_csrf(page.get_data(as_text=True)),
        },
    )
    assert client.get("/").status_code == 200
    assert refusal(client.get("/api/v1/me")) == (401, "unauthenticated")


@pytest.mark.parametrize("typed", ["{n}", "+86{n}", "+86 {n}", "86{n}", " {n} "])
def test_patients_log_in_with_their_phone_as_they_type_it(client: FlaskClient, typed: str) -> None:
    reg = f.patient()
    number = reg.account.username.removeprefix("+86")
    resp = client.post("/api/v1/auth/token", json={"username": typed.format(n=number), "password": f.PASSWORD})
    assert resp.status_code == 200 and resp.get_json()["role"] == "patient"
