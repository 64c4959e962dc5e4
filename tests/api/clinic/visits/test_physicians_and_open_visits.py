"""The public physician directory, on/off duty, choosing a physician, the queue position,
and one open visit per diagnosis (API.md: POST /visits, "Patients' ... physicians")."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.db import db
from clinic.visits.models import Visit
from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal


def body(p: dict, **kw: object) -> dict:
    return {"patient_id": str(p["reg"].patient.id), "diagnosis_id": str(p["diag"].id), "department": "cardiology", **kw}


def test_directory_lists_qualified_physicians_with_duty_and_licence(ctx: Flask, client: FlaskClient) -> None:
    cf.catalog()
    a = f.staff(Role.PHYSICIAN, department="cardiology")
    e = f.staff(Role.PHYSICIAN, department="endocrinology")
    f.staff(Role.PHYSICIAN, department="cardiology", license_no=None)  # not qualified: not listed
    every = client.get("/api/v1/physicians").get_json()["items"]
    assert {p["id"] for p in every} == {str(a.id), str(e.id)}
    cardio = client.get("/api/v1/physicians?department=cardiology").get_json()["items"]
    assert [p["id"] for p in cardio] == [str(a.id)]
    p = cardio[0]
    assert p["license_no"] and p["practice_years"] >= 3 and p["on_duty"] is True and p["rating"] is None
    assert set(p) >= {"id", "name", "title", "department", "license_no", "practice_years", "on_duty", "rating"}

    tok = f.token(client, a.username)
    off = client.post("/api/v1/physicians/me/duty", json={"on_duty": False}, headers=f.auth(tok))
    assert off.status_code == 200 and off.get_json() == {"on_duty": False}
    assert client.get("/api/v1/physicians?department=cardiology").get_json()["items"][0]["on_duty"] is False
    patient = f.token(client, f.patient().account.username)
    assert refusal(client.post("/api/v1/physicians/me/duty", json={"on_duty": True}, headers=f.auth(patient))) == (
        403,
        "forbidden",
    )
    page = client.get("/physicians?department=cardiology").get_data(as_text=True)
    assert cardio[0]["name"] in page and "休息中" in page and cardio[0]["license_no"] in page


def test_a_chosen_physician_gets_the_visit_and_nobody_else(ctx: Flask, client: FlaskClient) -> None:
    cf.catalog()
    a = f.staff(Role.PHYSICIAN, department="cardiology")
    b = f.staff(Role.PHYSICIAN, department="cardiology")
    endo = f.staff(Role.PHYSICIAN, department="endocrinology")
    p = cf.ready_patient(client, a)
    h = f.auth(p["token"])

    wrong_dept = client.post("/api/v1/visits", json=body(p, physician_id=str(endo.id)), headers=h)
    assert wrong_dept.status_code == 422 and wrong_dept.get_json()["error"]["code"] == "physician_unavailable"
    client.post("/api/v1/physicians/me/duty", json={"on_duty": False}, headers=f.auth(f.token(client, b.username)))
    off_duty = client.post("/api/v1/visits", json=body(p, physician_id=str(b.id)), headers=h)
    assert off_duty.status_code == 422 and off_duty.get_json()["error"]["code"] == "physician_unavailable"
    assert db.session.scalar(select(func.count()).select_from(Visit)) == 0  # nothing stored

    made = client.post("/api/v1/visits", json=body(p, physician_id=str(a.id)), headers=h)
    assert made.status_code == 201, made.get_json()
    vid = made.get_json()["id"]
    got = client.get(f"/api/v1/visits/{vid}", headers=h).get_json()
    assert got["requested_physician_id"] == str(a.id) and got["queue_position"] == 1

    # b (back on duty) does not see it and may not take it; a does and may.
    client.post("/api/v1/physicians/me/duty", json={"on_duty": True}, headers=f.auth(f.token(client, b.username)))
    b_queue = client.get("/api/v1/visits?queue=waiting", headers=f.auth(f.token(client, b.username))).get_json()
    assert vid not in [v["id"] for v in b_queue["items"]]
    assert client.post(f"/api/v1/visits/{vid}/accept", headers=f.auth(cf.face_token(b))).status_code in (403, 404)
    a_queue = client.get("/api/v1/visits?queue=waiting", headers=f.auth(f.token(client, a.username))).get_json()
    assert vid in [v["id"] for v in a_queue["items"]]
    assert client.post(f"/api/v1/visits/{vid}/accept", headers=f.auth(cf.face_token(a))).status_code == 200


def test_queue_position_counts_who_waits_ahead(ctx: Flask, client: FlaskClient) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    first = cf.open_visit(client, doc)
    second = cf.open_visit(client, doc)
    pos = client.get(f"/api/v1/visits/{second['visit_id']}", headers=f.auth(second["token"])).get_json()
    assert pos["queue_position"] == 2
    assert (
        client.post(f"/api/v1/visits/{first['visit_id']}/accept", headers=f.auth(cf.face_token(doc))).status_code == 200
    )
    pos = client.get(f"/api/v1/visits/{second['visit_id']}", headers=f.auth(second["token"])).get_json()
    assert pos["queue_position"] == 1


def test_a_second_request_for_the_same_diagnosis_answers_409_with_the_open_visit(
    ctx: Flask, client: FlaskClient
) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    p = cf.open_visit(client, doc)
    again = client.post("/api/v1/visits", json=body(p), headers=f.auth(p["token"]))
    assert again.status_code == 409
    err = again.get_json()["error"]
    assert err["code"] == "visit_already_open" and err["visit_id"] == p["visit_id"]
    assert db.session.scalar(select(func.count()).select_from(Visit)) == 1
    # Once it is accepted it is still open; once completed, a new visit may be requested.
    face = cf.face_token(doc)
    client.post(f"/api/v1/visits/{p['visit_id']}/accept", headers=f.auth(face))
    assert refusal(client.post("/api/v1/visits", json=body(p), headers=f.auth(p["token"]))) == (
        409,
        "visit_already_open",
    )
    client.post(f"/api/v1/visits/{p['visit_id']}/complete", json={"note": "继续服药"}, headers=f.auth(face))
    assert client.post("/api/v1/visits", json=body(p), headers=f.auth(p["token"])).status_code == 201


def test_the_request_page_takes_the_patient_to_the_open_visit(ctx: Flask) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    api = ctx.test_client()
    p = cf.open_visit(api, doc)
    page = ctx.test_client()
    csrf = extract_csrf(page.get("/login").get_data(as_text=True))
    page.post("/login", data={"username": p["reg"].account.username, "password": f.PASSWORD, "csrf_token": csrf})
    form = page.get("/visits/new").get_data(as_text=True)
    resp = page.post(
        "/visits/new",
        data={"csrf_token": extract_csrf(form), "diagnosis_id": str(p["diag"].id), "complaint": "头晕"},
    )
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/visits/{p['visit_id']}")
    room = page.get(resp.headers["Location"]).get_data(as_text=True)
    assert "已有一个进行中的复诊" in room or "queue-position" in room
    assert db.session.scalar(select(func.count()).select_from(Visit)) == 1
