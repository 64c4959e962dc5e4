"""The administrators' audit viewer: filters, paging, CSV export, the chain check shown."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import update

from clinic.core import audit
from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work
from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import factories as f
from tests.support.answers import refusal


def seed() -> dict[str, Any]:
    admin = f.staff(Role.ADMIN)
    reg = f.patient("赵六")
    with acting_as(Actor("doctor-1", "physician")), unit_of_work() as s:
        for i in range(55):
            audit.record(s, "visit.message", subject_type="visit", subject_id=f"v{i % 3}")
        audit.record(s, "visit.completed", subject_type="visit", subject_id="v1")
        audit.record(s, "diagnosis.confirmed", subject_type="patient", subject_id=reg.patient.id)
    return {"admin": admin, "reg": reg}


def page_login(client: FlaskClient, username: str) -> None:
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"username": username, "password": f.PASSWORD, "csrf_token": csrf})
    assert resp.status_code in (302, 303)


def test_api_filters_and_pages(client: FlaskClient) -> None:
    w = seed()
    h = f.auth(f.token(client, w["admin"].username))
    body = client.get("/api/v1/audit?actor=doctor-1&action=visit.message", headers=h).get_json()
    assert body["total"] == 55 and body["pages"] == 2 and len(body["items"]) == 50
    assert body["items"][0]["seq"] > body["items"][-1]["seq"]  # newest first
    page2 = client.get("/api/v1/audit?actor=doctor-1&action=visit.message&page=2", headers=h).get_json()
    assert len(page2["items"]) == 5
    family = client.get("/api/v1/audit?action=visit.&subject=v1", headers=h).get_json()
    assert {i["action"] for i in family["items"]} == {"visit.message", "visit.completed"}
    assert family["total"] == 19
    patient = client.get(f"/api/v1/audit?subject={w['reg'].patient.id}", headers=h).get_json()
    assert [i["action"] for i in patient["items"]] == ["diagnosis.confirmed"]
    window = client.get("/api/v1/audit?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z", headers=h).get_json()
    assert window["total"] == 0 and window["items"] == []
    bad = client.get("/api/v1/audit?since=last-week", headers=h)
    assert bad.status_code == 422 and "RFC 3339" in bad.get_json()["error"]["message"]
    past = client.get("/api/v1/audit?actor=doctor-1&page=9", headers=h)
    assert past.status_code == 404 and past.get_json()["error"]["code"] == "not_found"
    for role in (Role.PHYSICIAN, Role.REGULATOR):
        other = f.auth(f.token(client, f.staff(role).username))
        assert refusal(client.get("/api/v1/audit", headers=other)) == (403, "forbidden")


def test_page_shows_the_chain_check_and_exports_csv(client: FlaskClient) -> None:
    w = seed()
    page_login(client, w["admin"].username)
    html = client.get("/admin/audit?action=visit.completed").get_data(as_text=True)
    assert (
        'data-chain="ok"' in html and "visit.completed" in html and "visit.message" not in html.split('id="entries"')[1]
    )

    resp = client.get("/admin/audit.csv?subject=v1&action=visit.")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert len(rows) == 19 and {r["subject_id"] for r in rows} == {"v1"}
    # each row carries its RFC 6962 leaf hash and the log's Ed25519 signature on it, both in
    # hex: a base64 signature may start with "+", which a spreadsheet reads as a formula
    assert all(re.fullmatch(r"[0-9a-f]{64}", r["hash"]) and re.fullmatch(r"[0-9a-f]{128}", r["sig"]) for r in rows)
    db.session.expire_all()
    assert db.session.query(AuditEntry).filter(AuditEntry.action == "audit.exported").count() == 1

    # a tampered entry shows as a broken chain
    with unit_of_work() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(action="visit.tampered"))
    html = client.get("/admin/audit").get_data(as_text=True)
    assert 'data-chain="broken"' in html


def test_page_is_for_administrators_only(client: FlaskClient) -> None:
    pharmacist = f.staff(Role.PHARMACIST)
    resp = client.get("/admin/audit")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]  # not logged in
    page_login(client, pharmacist.username)
    assert refusal(client.get("/admin/audit")) == (403, "forbidden")
    assert refusal(client.get("/admin/audit.csv")) == (403, "forbidden")
