"""Ratings of completed visits (once, 1–5) feeding the directory, and complaints answered
by the institution (API.md "Ratings and complaints"); bad input stores nothing."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.db import db
from clinic.feedback.models import Complaint, VisitRating
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal


def count(model: type) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def completed(client: FlaskClient) -> dict:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    v = cf.open_visit(client, doc)
    face = cf.face_token(doc)
    v["doc"], v["face"] = doc, face
    return v


def test_a_completed_visit_is_rated_once_and_the_directory_shows_it(ctx: Flask, client: FlaskClient) -> None:
    v = completed(client)
    h = f.auth(v["token"])
    url = f"/api/v1/visits/{v['visit_id']}/rating"
    early = client.post(url, json={"score": 5}, headers=h)
    assert early.status_code == 422 and early.get_json()["error"]["code"] == "visit_not_completed"
    client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(v["face"]))
    client.post(f"/api/v1/visits/{v['visit_id']}/complete", json={"note": "继续服药"}, headers=f.auth(v["face"]))
    for bad in ({"score": 0}, {"score": 6}, {"score": "five"}, {"score": 4, "comment": "x" * 1001}, {}):
        resp = client.post(url, json=bad, headers=h)
        assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid", bad
    assert count(VisitRating) == 0
    ok = client.post(url, json={"score": 4, "comment": "医生很耐心"}, headers=h)
    assert ok.status_code == 201 and ok.get_json()["score"] == 4
    again = client.post(url, json={"score": 1}, headers=h)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_rated"
    assert count(VisitRating) == 1
    stranger = f.auth(f.token(client, f.patient().account.username))
    assert refusal(client.post(url, json={"score": 1}, headers=stranger)) == (404, "not_found")
    listed = client.get("/api/v1/physicians?department=cardiology").get_json()["items"]
    assert [(p["rating"], p["ratings"]) for p in listed if p["id"] == str(v["doc"].id)] == [(4.0, 1)]


def test_complaints_are_filed_listed_and_answered_by_administrators(ctx: Flask, client: FlaskClient) -> None:
    v = completed(client)
    h = f.auth(v["token"])
    long = client.post("/api/v1/complaints", json={"text": "太" * 2001, "visit_id": v["visit_id"]}, headers=h)
    assert long.status_code == 422 and long.get_json()["error"]["code"] == "invalid"
    assert "text" in str(long.get_json()["error"].get("fields"))
    other = cf.open_visit(client, v["doc"])
    theirs = client.post("/api/v1/complaints", json={"text": "等太久", "visit_id": other["visit_id"]}, headers=h)
    assert refusal(theirs) == (404, "not_found")
    assert refusal(client.post("/api/v1/complaints", json={"text": "   "}, headers=h)) == (422, "invalid")
    assert count(Complaint) == 0
    made = client.post("/api/v1/complaints", json={"text": "等待时间太长", "visit_id": v["visit_id"]}, headers=h)
    assert made.status_code == 201 and made.get_json()["status"] == "open"
    cid = made.get_json()["id"]

    admin = f.auth(f.token(client, f.staff(Role.ADMIN).username))
    assert refusal(client.get("/api/v1/admin/complaints", headers=h)) == (403, "forbidden")
    items = client.get("/api/v1/admin/complaints", headers=admin).get_json()["items"]
    assert [c["id"] for c in items] == [cid] and items[0]["text"] == "等待时间太长"
    answer = client.post(f"/api/v1/admin/complaints/{cid}/answer", json={"response": "已加派医生"}, headers=admin)
    assert answer.status_code == 200 and answer.get_json()["status"] == "answered"
    twice = client.post(f"/api/v1/admin/complaints/{cid}/answer", json={"response": "再答"}, headers=admin)
    assert refusal(twice) == (409, "already_answered")
    assert refusal(client.post("/api/v1/admin/complaints/nope/answer", json={"response": "x"}, headers=admin)) == (
        404,
        "not_found",
    )
