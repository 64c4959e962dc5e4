"""Sessions end for real, and every page carries the security headers (issue 21 item 14)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from clinic.core.db import db, unit_of_work
from identity import services
from identity.models import Account, Role
from tests.conftest import extract_csrf, make_config
from tests.support import factories as f
from tests.support.answers import refusal


def page_login(client: FlaskClient, username: str, password: str = f.PASSWORD) -> None:
    page = client.get("/login")
    resp = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": extract_csrf(page.get_data(as_text=True))},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]


def logged_in(client: FlaskClient) -> bool:
    return client.get("/family").status_code == 200


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_a_cookie_captured_before_logout_no_longer_works(client: FlaskClient, ctx: Flask) -> None:
    reg = f.patient()
    page_login(client, reg.account.username)
    assert logged_in(client)
    captured = session_cookie(client)
    home = client.get("/").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": extract_csrf(home)})
    assert not logged_in(client)

    thief = ctx.test_client()
    thief.set_cookie("session", captured)
    resp = thief.get("/family")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_a_password_change_ends_other_sessions_and_tokens(client: FlaskClient, ctx: Flask) -> None:
    reg = f.patient()
    other_device = ctx.test_client()
    page_login(other_device, reg.account.username)
    assert logged_in(other_device)
    tok = f.token(client, reg.account.username)
    resp = client.post(
        "/api/v1/accounts/me/password",
        json={"current_password": f.PASSWORD, "new_password": "A-new-passw0rd"},
        headers=f.auth(tok),
    )
    assert resp.status_code == 200, resp.get_json()
    assert not logged_in(other_device)
    assert refusal(client.get("/api/v1/me", headers=f.auth(tok))) == (401, "unauthenticated")
    assert f.token(client, reg.account.username, "A-new-passw0rd")


def test_a_wrong_current_password_changes_nothing(client: FlaskClient) -> None:
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    resp = client.post(
        "/api/v1/accounts/me/password",
        json={"current_password": "not-it-123", "new_password": "A-new-passw0rd"},
        headers=f.auth(tok),
    )
    assert refusal(resp) == (401, "bad_credentials")
    assert client.get("/api/v1/me", headers=f.auth(tok)).status_code == 200


def test_deactivation_ends_every_session(client: FlaskClient) -> None:
    admin = f.staff(Role.ADMIN)
    page_login(client, admin.username)
    assert refusal(client.get("/family")) == (403, "forbidden")  # logged in (a patients' page: not theirs)
    captured = session_cookie(client)
    with unit_of_work():
        services.set_active(db.session.get(Account, admin.id) or admin, False)
    with unit_of_work():
        services.set_active(db.session.get(Account, admin.id) or admin, True)  # reactivated later: still ended
    client.set_cookie("session", captured)
    resp = client.get("/family")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


PAGES = ["/", "/login", "/register"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_carries_the_security_headers(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert "'unsafe-inline'" not in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "Strict-Transport-Security" not in resp.headers  # development over HTTP


def test_api_answers_carry_them_too(client: FlaskClient) -> None:
    resp = client.get("/api/v1/consent")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


def test_hsts_in_production(backend: dict, ctx: Flask) -> None:
    from clinic.app import create_app

    cfg = make_config(backend)
    cfg.ENV = "production"
    cfg.SESSION_COOKIE_SECURE = True
    cfg.AUDIT_LOG_KEY = "test-audit-log-key-0123456789abcdef"
    prod = create_app(cfg)
    resp = prod.test_client().get("/login", base_url="https://clinic.example")
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_no_template_has_inline_script_or_handlers(project_root: Path) -> None:
    offenders = []
    for template in project_root.glob("**/templates/**/*.html"):
        if ".venv" in template.parts:
            continue
        text = template.read_text()
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) or re.search(r"\son[a-z]+\s*=", text):
            offenders.append(str(template.relative_to(project_root)))
    assert offenders == []
