"""Dose, unit and quantity refusals over HTTP: every violation in one refusal, nothing signed."""

from __future__ import annotations

from flask.testing import FlaskClient

from clinic.core.db import db
from identity.models import Role
from prescriptions.models import Prescription
from tests.support import factories as f
from tests.support.rx_factories import item, visit_in_progress


def _post(client: FlaskClient, v: dict, items: list[dict]) -> tuple[int, dict]:  # type: ignore[type-arg]
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions", json={"items": items}, headers=f.auth(v["face"])
    )
    return resp.status_code, resp.get_json()


def test_the_issues_hypertension_cases_are_refused_together(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    d = v["drugs"]
    status, body = _post(
        client,
        v,
        [
            item(d["amlodipine"], dose="5", unit="片", quantity="7"),  # 5 tablets a day, 7 tablets for 7 days
            item(d["valsartan"], dose="5", unit="mg"),  # 5 mg from an 80 mg capsule
        ],
    )
    assert status == 422 and body["error"]["code"] == "prescription_rejected"
    got = {(x["code"], x.get("item")) for x in body["error"]["violations"]}
    assert got == {("dose_exceeds_maximum", 0), ("quantity_mismatch", 0), ("unit_mismatch", 1)}
    assert db.session.query(Prescription).count() == 0

    # the same drugs, dosed right, are signed; the quantity unit is the product's
    status, body = _post(
        client,
        v,
        [item(d["amlodipine"], dose="5", unit="mg", quantity_unit="片"), item(d["valsartan"], dose="80", unit="mg")],
    )
    assert status == 201, body


def test_glargine_three_times_a_day_is_refused(client: FlaskClient) -> None:
    v = visit_in_progress(client, icd10="E11", department="endocrinology")
    glargine = v["drugs"]["insulin glargine"]
    status, body = _post(client, v, [item(glargine, dose="10", unit="单位", frequency="每日三次", quantity="1")])
    assert status == 422
    (viol,) = body["error"]["violations"]
    assert viol["code"] == "dose_exceeds_maximum" and viol["reason"] == "frequency_not_allowed"
    assert db.session.query(Prescription).count() == 0
    status, body = _post(client, v, [item(glargine, dose="10", unit="单位", frequency="每日一次", quantity="1")])
    assert status == 201, body


def test_the_pharmacist_sees_the_reference_beside_each_item(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    status, body = _post(client, v, [item(v["drugs"]["amlodipine"], dose="5", unit="mg")])
    assert status == 201, body
    h = f.auth(f.token(client, f.staff(Role.PHARMACIST).username))
    screen = client.get(f"/api/v1/pharmacy/prescriptions/{body['id']}/review", headers=h).get_json()
    ref = screen["items"][0]["dosing_reference"]
    assert ref["frequencies"] == "每日一次" and "每日最大 10 mg" in ref["adult"] and "络活喜" in ref["source"]
    assert screen["rules"] == []
