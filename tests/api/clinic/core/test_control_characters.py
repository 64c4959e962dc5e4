"""Issue 21 item 5: free text with NUL or another control character is refused at the edge
(422 `invalid`, naming the field) on every kind of input — JSON, nested JSON, multipart form,
query string, page forms — and never reaches PostgreSQL (where a NUL was a 500)."""

from __future__ import annotations

import io

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.core.text import is_clean
from clinic.visits.models import Diagnosis, DiagnosisStatus
from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.rx_factories import item, visit_in_progress


def refused(resp: object, field: str) -> None:
    body = resp.get_json()  # type: ignore[attr-defined]
    assert resp.status_code == 422, body  # type: ignore[attr-defined]
    assert body["error"]["code"] == "invalid"
    assert field in [x["loc"] for x in body["error"]["fields"]]
    assert field in body["error"]["message"]


@pytest.mark.parametrize("bad", ["\u0000", "正常\u0000", "a\u0007b", "\u001b[31m", "x\u009b", "\ud800"])
def test_rejecting_a_proof_with_a_control_character(ctx: Flask, client: FlaskClient, bad: str) -> None:
    cf.catalog()
    cardio = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient()
    diag = cf.diagnosis(reg.patient.id, reg.account, "I10")
    resp = client.post(
        f"/api/v1/diagnoses/{diag.id}/reject",
        json={"reason": f"资料不清{bad}晰"},
        headers=f.auth(f.token(client, cardio.username)),
    )
    refused(resp, "reason")
    db.session.expire_all()
    assert db.session.get(Diagnosis, diag.id).status == DiagnosisStatus.PENDING  # type: ignore[union-attr]
    # The refusal is on the record, and the record itself holds no control character.
    entry = db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
    assert entry is not None and entry.action == "request.refused"


def test_line_breaks_and_tabs_are_text(ctx: Flask, client: FlaskClient) -> None:
    cf.catalog()
    cardio = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient()
    diag = cf.diagnosis(reg.patient.id, reg.account, "I10")
    reason = "第一行\r\n第二行\n\t缩进"
    resp = client.post(
        f"/api/v1/diagnoses/{diag.id}/reject", json={"reason": reason}, headers=f.auth(f.token(client, cardio.username))
    )
    assert resp.status_code == 200, resp.get_json()
    db.session.expire_all()
    assert db.session.get(Diagnosis, diag.id).rejection_reason == reason  # type: ignore[union-attr]


def test_every_kind_of_input(ctx: Flask, client: FlaskClient) -> None:
    v = visit_in_progress(client)
    # nested JSON: an item's unit
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"], unit="片\u0000")]},
        headers=f.auth(v["face"]),
    )
    refused(resp, "items.0.unit")
    # the visit note
    refused(
        client.post(f"/api/v1/visits/{v['visit_id']}/complete", json={"note": "\u0000"}, headers=f.auth(v["face"])),
        "note",
    )
    # a query string
    refused(client.get("/api/v1/drugs?q=%00", headers=f.auth(f.token(client, v["doc"].username))), "q")
    # a multipart form beside a file
    data = {
        "patient_id": str(v["reg"].patient.id),
        "icd10": "I10",
        "institution": "北京协和\u0000医院",
        "diagnosed_on": "2024-05-06",
        "document": (io.BytesIO(cf.png()), "record.png"),
    }
    resp = client.post("/api/v1/diagnoses", data=data, headers=f.auth(v["token"]), content_type="multipart/form-data")
    refused(resp, "institution")
    # a message in the visit room
    refused(
        client.post(f"/api/v1/visits/{v['visit_id']}/messages", json={"text": "hi\u0000"}, headers=f.auth(v["token"])),
        "text",
    )


def test_page_forms_refuse_them_too(ctx: Flask, client: FlaskClient) -> None:
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"username": "138\u00000000", "password": "x", "csrf_token": csrf})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "控制字符" in page and "\u0000" not in page


def test_is_clean() -> None:
    assert is_clean("血压 135/85\n\t好") and is_clean("a\r\nb")
    assert not any(is_clean(s) for s in ("\u0000", "\u001f", "\u007f", "\u0085", "\ud83d"))


def test_a_control_character_in_the_path_is_a_plain_404(ctx: Flask, client: FlaskClient) -> None:
    cf.catalog()
    cardio = f.staff(Role.PHYSICIAN, department="cardiology")
    tok = f.token(client, cardio.username)
    assert refusal(client.get("/api/v1/visits/%00", headers=f.auth(tok))) == (404, "not_found")
    resp = client.post("/api/v1/diagnoses/%00%1b/reject", json={"reason": "看不清"}, headers=f.auth(tok))
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
