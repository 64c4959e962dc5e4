"""Issue 21 item 6: a prescription is signed once, however often it is sent.

With an `Idempotency-Key` a repeat answers the first answer; without one an identical
prescription for the same visit within a minute is refused as `duplicate_submission`;
`duplicate_therapy` also looks across the visit's active prescriptions; 8 identical
POSTs at the same moment store exactly one (on both databases).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.db import db
from prescriptions.models import Prescription
from tests.conftest import extract_csrf
from tests.support import factories as f
from tests.support.rx_factories import item, visit_in_progress


def stored() -> int:
    db.session.expire_all()
    return int(db.session.scalar(select(func.count()).select_from(Prescription)) or 0)


def post(client: FlaskClient, v: dict[str, Any], body: dict[str, Any], key: str | None = None) -> Any:
    headers = f.auth(v["face"]) | ({"Idempotency-Key": key} if key else {})
    return client.post(f"/api/v1/visits/{v['visit_id']}/prescriptions", json=body, headers=headers)


def test_a_repeat_under_the_same_key_answers_the_first_answer(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    body = {"items": [item(v["drugs"]["amlodipine"])]}
    first = post(client, v, body, key="sign-7f3a9c21")
    assert first.status_code == 201, first.get_json()
    again = post(client, v, body, key="sign-7f3a9c21")
    assert again.status_code == 201 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert stored() == 1
    other = post(client, v, {"items": [item(v["drugs"]["amlodipine"], days=5)]}, key="sign-7f3a9c21")
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    bad = post(client, v, body, key="x")
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid"
    assert stored() == 1


def test_without_a_key_the_same_prescription_within_a_minute_is_refused(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    body = {"items": [item(v["drugs"]["amlodipine"])]}
    first = post(client, v, body)
    assert first.status_code == 201, first.get_json()
    again = post(client, v, body)
    err = again.get_json()["error"]
    assert again.status_code == 409 and err["code"] == "duplicate_submission"
    assert err["prescription_id"] == first.get_json()["id"]
    assert stored() == 1


def test_duplicate_therapy_looks_across_the_visits_active_prescriptions(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    assert post(client, v, {"items": [item(v["drugs"]["amlodipine"])]}).status_code == 201
    # not identical (another supply), the same ingredient: a second amlodipine is refused
    second = post(client, v, {"items": [item(v["drugs"]["amlodipine"], days=3)]})
    err = second.get_json()["error"]
    assert second.status_code == 422 and err["code"] == "prescription_rejected"
    assert [x["code"] for x in err["violations"]] == ["duplicate_therapy"]
    assert err["violations"][0]["ingredient"] == "amlodipine"
    # another drug is fine
    assert post(client, v, {"items": [item(v["drugs"]["valsartan"], unit="粒")]}).status_code == 201
    assert stored() == 2


def _eight_at_once(app: Flask, v: dict[str, Any], key: str | None) -> list[Any]:
    body = {"items": [item(v["drugs"]["amlodipine"])]}
    start = threading.Barrier(8)
    answers: list[Any] = [None] * 8

    def one(n: int) -> None:
        client = app.test_client()
        start.wait()
        resp = post(client, v, body, key)
        answers[n] = (resp.status_code, resp.get_json())
        db.session.remove()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers


def test_eight_at_once_with_one_key_store_one_and_answer_it(ctx: Flask, client: FlaskClient) -> None:
    v = visit_in_progress(client)
    db.session.remove()
    answers = _eight_at_once(ctx, v, "tap-tap-tap-tap")
    assert stored() == 1
    ids = {body.get("id") for status, body in answers if status == 201}
    assert len(ids) == 1, answers
    # every one of them answers that prescription
    assert [status for status, _ in answers] == [201] * 8, [(s, b.get("error")) for s, b in answers]


def test_eight_at_once_without_a_key_store_one(ctx: Flask, client: FlaskClient) -> None:
    v = visit_in_progress(client)
    db.session.remove()
    answers = _eight_at_once(ctx, v, None)
    assert stored() == 1
    assert sorted(status for status, _ in answers).count(201) == 1, answers
    # the others lost the race (409 conflict), came after it (409 duplicate_submission), or
    # read it in the middle of their checks (422 duplicate_therapy): none stored anything
    refusals = {(status, body["error"]["code"]) for status, body in answers if status != 201}
    assert refusals <= {(409, "conflict"), (409, "duplicate_submission"), (422, "prescription_rejected")}, answers


def test_the_page_signs_once_on_a_double_tap(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    doc = v["doc"]
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": doc.username, "password": f.PASSWORD, "csrf_token": csrf})
    import time

    with client.session_transaction() as sess:
        sess["face_at"] = int(time.time())
    page = client.get(f"/physician/visits/{v['visit_id']}/prescribe").get_data(as_text=True)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert key is not None
    form = {
        "csrf_token": extract_csrf(page),
        "idempotency_key": key.group(1),
        "action": "sign",
        "items-0-drug_id": v["drugs"]["amlodipine"],
        "items-0-dose": "1",
        "items-0-unit": "片",
        "items-0-frequency": "每日一次",
        "items-0-route": "口服",
        "items-0-days": "7",
        "items-0-quantity": "7",
    }
    one = client.post(f"/physician/visits/{v['visit_id']}/prescribe", data=form)
    two = client.post(f"/physician/visits/{v['visit_id']}/prescribe", data=form)
    assert one.status_code == 302, one.get_data(as_text=True)[-800:]
    assert two.status_code == 302 and two.headers["Location"] == one.headers["Location"]
    assert stored() == 1
