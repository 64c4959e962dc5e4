"""The phone is confirmed before the account can request visits (issue 21 item 11)."""

from __future__ import annotations

import logging
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.db import db
from clinic.visits.models import Visit
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f


@pytest.fixture(autouse=True)
def _catalog(ctx: Flask) -> None:
    cf.catalog()


def test_an_unconfirmed_phone_cannot_request_a_visit_until_confirmed(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="clinic.sms")
    physician = f.staff(Role.PHYSICIAN)
    reg = f.patient(verified=False)
    diag = cf.diagnosis(reg.patient.id, reg.account, "I10", confirm_by=physician)
    tok = f.token(client, reg.account.username)
    cf.consent(client, tok, reg.patient.id)
    body = {"patient_id": str(reg.patient.id), "diagnosis_id": str(diag.id), "department": "cardiology"}

    resp = client.post("/api/v1/visits", json=body, headers={**f.auth(tok), "Accept-Language": "zh-CN"})
    assert resp.status_code == 403
    err = resp.get_json()["error"]
    assert err["code"] == "phone_not_verified" and "手机" in err["message"]
    assert db.session.scalar(select(func.count()).select_from(Visit)) == 0

    code = re.findall(r"verification code (\d{6})", caplog.text)[-1]
    assert client.post("/api/v1/patients/verify-phone", json={"code": code}, headers=f.auth(tok)).status_code == 200
    resp = client.post("/api/v1/visits", json=body, headers=f.auth(tok))
    assert resp.status_code == 201, resp.get_json()


def test_the_refusal_is_in_the_openapi_document(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    refusal = doc["paths"]["/visits"]["post"]["responses"]["403"]
    assert "phone_not_verified" in str(refusal)
