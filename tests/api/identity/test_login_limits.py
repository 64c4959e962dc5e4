"""Login limits on the normalised identity (issue 21 item 1, OWASP ASVS 2.2.1).

Every spelling of one login (a phone typed with spaces, +86 or dashes; a staff name with
whitespace around it) counts against the one account it resolves to, from any address;
the owner at an address they logged in from is not locked out by someone else's guesses.
"""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from identity import login
from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import factories as f


def spellings(e164: str) -> list[str]:
    n = e164.removeprefix("+86")
    return [
        n,
        "+86" + n,
        "+86 " + n,
        "86" + n,
        "0086" + n,
        f"{n[:3]} {n[3:7]} {n[7:]}",
        f"{n[:3]}-{n[3:7]}-{n[7:]}",
        f"+86-{n[:3]}-{n[3:7]}-{n[7:]}",
        f" {n} ",
        f"(+86) {n}",
        n.translate(str.maketrans("0123456789", "０１２３４５６７８９")),  # full-width digits
        f"+86\t{n}",
    ]


def failed_checks() -> int:
    db.session.remove()
    q = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "auth.login_failed")
    return int(db.session.scalar(q) or 0)


def api_login(client: FlaskClient, username: str, password: str, address: str) -> int:
    resp = client.post(
        "/api/v1/auth/token",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )
    return resp.status_code


def test_every_spelling_of_a_phone_resolves_to_one_identity(client: FlaskClient) -> None:
    reg = f.patient()
    keys = {login.login_identity(s) for s in spellings(reg.account.username)}
    assert keys == {f"account:{reg.account.id}"}


def test_twelve_spellings_from_twelve_addresses_get_ten_password_checks(client: FlaskClient) -> None:
    reg = f.patient()
    names = spellings(reg.account.username)
    statuses = [api_login(client, names[i % 12], "wrong-pass1", f"203.0.113.{i % 12 + 1}") for i in range(90)]
    assert statuses.count(401) == 10
    assert statuses[10:] == [429] * 80
    assert failed_checks() == 10  # the passwords actually tried
    resp = client.post(
        "/api/v1/auth/token",
        json={"username": names[3], "password": "wrong-pass1"},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1


def test_the_owner_is_not_locked_out_from_their_usual_address(client: FlaskClient) -> None:
    reg = f.patient()
    usual = "192.0.2.10"
    assert api_login(client, reg.account.username, f.PASSWORD, usual) == 200
    attack = [api_login(client, reg.account.username, "wrong-pass1", f"203.0.113.{i + 1}") for i in range(40)]
    assert attack.count(401) == 10 and 429 in attack
    # the owner, from the address they always use, with their password
    assert api_login(client, reg.account.username, f.PASSWORD, usual) == 200
    # ... and the successful login ended the back-off: the owner at a new address gets in too
    assert api_login(client, reg.account.username, f.PASSWORD, "192.0.2.99") == 200


def test_a_confirmed_phone_code_ends_the_back_off(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import re

    caplog.set_level(logging.WARNING, logger="clinic.sms")
    reg = f.patient(verified=False)
    tok = f.token(client, reg.account.username)
    codes = re.findall(r"verification code (\d{6})", caplog.text)
    for i in range(12):
        api_login(client, reg.account.username, "wrong-pass1", f"203.0.113.{i + 1}")
    assert api_login(client, reg.account.username, f.PASSWORD, "192.0.2.44") == 429
    resp = client.post("/api/v1/patients/verify-phone", json={"code": codes[-1]}, headers=f.auth(tok))
    assert resp.status_code == 200
    assert api_login(client, reg.account.username, f.PASSWORD, "192.0.2.44") == 200


def test_the_back_off_doubles_up_to_its_cap() -> None:
    assert [login.backoff_seconds(n, 10, 30, 900) for n in (0, 9, 10, 11, 12, 14, 20)] == [
        0,
        0,
        30,
        60,
        120,
        480,
        900,
    ]


def page_login(client: FlaskClient, username: str, password: str, address: str) -> int:
    page = client.get("/login", environ_base={"REMOTE_ADDR": address})
    resp = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": extract_csrf(page.get_data(as_text=True))},
        environ_base={"REMOTE_ADDR": address},
    )
    return resp.status_code


@pytest.mark.parametrize("addresses", [1, 60])
def test_whitespace_variants_of_a_staff_name_on_the_page_login(client: FlaskClient, addresses: int) -> None:
    admin = f.staff(Role.ADMIN, username="admin")
    variants = [" admin", "admin ", "\tadmin", "admin\u3000", "\u00a0admin", " admin\t", "admin\n", "  admin  "]
    statuses = [
        page_login(client, variants[i % len(variants)], f"guess-{i}x", f"203.0.113.{i % addresses + 1}")
        for i in range(60)
    ]
    assert statuses.count(401) == 10 and statuses.count(429) == 50
    assert failed_checks() == 10
    assert login.login_identity(" admin\u3000") == f"account:{admin.id}"


def test_one_address_cannot_sweep_many_accounts(client: FlaskClient) -> None:
    people = [f.patient() for _ in range(4)]
    statuses = [api_login(client, people[i % 4].account.username, "wrong-pass1", "203.0.113.50") for i in range(40)]
    assert statuses[:30] == [401] * 30 and statuses[30:] == [429] * 10
