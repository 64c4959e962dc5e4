"""Refusals speak the caller's language: zh-CN by default, English on request."""

from __future__ import annotations

from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient

from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f


@pytest.fixture
def pending(ctx: Flask, client: FlaskClient) -> dict:
    cf.catalog()
    cardio = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient()
    diag = cf.diagnosis(reg.patient.id, reg.account, "I10")
    return {"cardio": cardio, "diag": diag, "reg": reg}


def test_face_refusal_with_its_number_in_chinese_and_english(client: FlaskClient, pending: dict) -> None:
    tok = f.token(client, pending["cardio"].username)
    url = f"/api/v1/diagnoses/{pending['diag'].id}/confirm"
    zh = client.post(url, headers={**f.auth(tok), "Accept-Language": "zh-CN"}).get_json()["error"]
    assert zh["code"] == "face_verification_required"
    assert "人脸核验" in zh["message"] and "10 分钟" in zh["message"]
    en = client.post(url, headers={**f.auth(tok), "Accept-Language": "en"}).get_json()["error"]
    assert en["message"] == "Verify your face first: these acts need a face check within the last 10 minutes."


def test_rule_refusal_lists_each_violation_in_the_callers_language(client: FlaskClient, pending: dict) -> None:
    expired = f.staff(Role.PHYSICIAN, department="cardiology", license_valid_until=date(2020, 1, 1))
    url = f"/api/v1/diagnoses/{pending['diag'].id}/confirm"
    tok = cf.face_token(expired)
    zh = client.post(url, headers={**f.auth(tok), "Accept-Language": "zh-CN"}).get_json()["error"]
    assert zh["code"] == "not_qualified"
    assert zh["message"].startswith("该医师暂不能开展互联网诊疗：")
    assert [v["code"] for v in zh["violations"]] == ["license_expired"]
    assert all(not v["message"].isascii() for v in zh["violations"])
    en = client.post(url, headers={**f.auth(tok), "Accept-Language": "en"}).get_json()["error"]
    assert en["message"].startswith("The physician may not practise online:") and "expired" in en["message"]


def test_status_words_inside_a_message_are_translated(client: FlaskClient, pending: dict) -> None:
    tok = f.token(client, pending["reg"].account.username)
    cf.consent(client, tok, pending["reg"].patient.id)
    cardio = pending["cardio"]
    v = cf.open_visit(client, cardio)
    client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(cardio)))
    client.post(
        f"/api/v1/visits/{v['visit_id']}/complete", json={"note": "稳定"}, headers=f.auth(cf.face_token(cardio))
    )
    err = client.post(
        f"/api/v1/visits/{v['visit_id']}/messages",
        json={"text": "在吗"},
        headers={**f.auth(v["token"]), "Accept-Language": "zh-CN"},
    ).get_json()["error"]
    assert err["code"] == "visit_closed" and "已完成" in err["message"] and "completed" not in err["message"]


def test_pages_are_chinese_whatever_the_browser_says_until_english_is_chosen(client: FlaskClient) -> None:
    page = client.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"}).get_data(as_text=True)
    assert 'lang="zh-CN"' in page and "登录" in page
    client.get("/lang/en")
    page = client.get("/login", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert 'lang="en"' in page and "Log in" in page
