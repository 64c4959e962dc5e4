"""Registration in a hospital lobby (issue 21 items 2 and 11): one public address for a
whole building, codes limited per phone, refusals spending nothing, and one answer
whether the ID number or the phone is taken."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient
from limits import parse_many

from tests.support import factories as f

LOBBY = "198.51.100.20"


def register(client: FlaskClient, address: str = LOBBY, **kw: str) -> tuple[int, dict]:
    body = {"name": "王小明", "id_number": f.id_number(date(1985, 1, 2)), "phone": f.phone(), "password": "Secret123x"}
    body.update(kw)
    resp = client.post("/api/v1/patients", json=body, environ_base={"REMOTE_ADDR": address})
    return resp.status_code, resp.get_json()


def codes_sent(caplog: pytest.LogCaptureFixture) -> list[str]:
    return re.findall(r"verification code (\d{6})", caplog.text)


def test_a_whole_lobby_registers_from_one_address(client: FlaskClient) -> None:
    statuses = [register(client)[0] for _ in range(25)]
    assert statuses == [201] * 25


def test_typos_do_not_spend_the_next_persons_quota(client: FlaskClient) -> None:
    for bad in ("110105194912310021", "11010520230230011X", "12345", "1101051949"):
        assert register(client, id_number=bad)[0] == 422
    assert register(client, phone="12345")[0] == 422
    assert register(client, password="short")[0] == 422
    assert register(client)[0] == 201


@pytest.fixture
def tight(ctx: Flask) -> Iterator[Flask]:
    saved = ctx.config["REGISTER_ADDRESS_RATE_LIMIT"]
    ctx.config["REGISTER_ADDRESS_RATE_LIMIT"] = "3 per hour"
    yield ctx
    ctx.config["REGISTER_ADDRESS_RATE_LIMIT"] = saved


def test_the_address_limit_counts_only_registrations(client: FlaskClient, tight: Flask) -> None:
    assert [register(client)[0] for _ in range(2)] == [201, 201]
    assert [register(client, phone="12345")[0] for _ in range(5)] == [422] * 5
    assert register(client)[0] == 201
    status, body = register(client)
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert register(client, address="198.51.100.21")[0] == 201  # another building


def test_the_default_address_limit_is_one_a_building_never_reaches(ctx: Flask) -> None:
    hourly = [i for i in parse_many(ctx.config["REGISTER_ADDRESS_RATE_LIMIT"]) if i.get_expiry() <= 3600]
    assert hourly and all(i.amount * 3600 / i.get_expiry() >= 100 for i in hourly)
    per_phone = {i.get_expiry(): i.amount for i in parse_many(ctx.config["SMS_PHONE_RATE_LIMIT"])}
    assert per_phone == {60: 1, 3600: 5, 86400: 10}


def test_codes_to_one_phone_are_limited_whoever_asks(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="clinic.sms")
    phone = f.phone()
    assert register(client, phone=phone)[0] == 201
    tok = f.token(client, "+86" + phone, "Secret123x")
    resp = client.post("/api/v1/patients/resend-code", headers=f.auth(tok), environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) <= 60
    assert len(codes_sent(caplog)) == 1


def test_one_answer_whether_the_id_number_or_the_phone_is_taken(client: FlaskClient) -> None:
    number, phone = f.id_number(date(1970, 3, 3)), f.phone()
    assert register(client, id_number=number, phone=phone)[0] == 201
    headers = {"Accept-Language": "zh-CN"}
    answers = []
    for kw in ({"id_number": number}, {"phone": phone}, {"id_number": number, "phone": phone}):
        body = {
            "name": "王小明",
            "id_number": f.id_number(date(1985, 1, 2)),
            "phone": f.phone(),
            "password": "Secret123x",
        }
        body.update(kw)
        resp = client.post("/api/v1/patients", json=body, headers=headers)
        answers.append((resp.status_code, resp.get_json()["error"]))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0] == (409, {"code": "already_registered", "message": "该身份证号或手机号已注册，请登录或找回账号"})
