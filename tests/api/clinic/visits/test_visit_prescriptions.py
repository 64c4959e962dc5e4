"""Issue 21 item 16: GET /visits/{id} lists the visit's prescriptions (API.md), for the
patient and for the physician; nobody else sees the visit at all."""

from __future__ import annotations

from flask.testing import FlaskClient

from identity.models import Role
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.rx_factories import item, visit_in_progress


def test_the_visit_lists_its_prescriptions_to_both_sides(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    before = client.get(f"/api/v1/visits/{v['visit_id']}", headers=f.auth(v["token"])).get_json()
    assert before["prescriptions"] == []
    signed = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"], days=5)]},
        headers=f.auth(v["face"]),
    )
    assert signed.status_code == 201, signed.get_json()
    rx_id = signed.get_json()["id"]
    for tok in (v["token"], f.token(client, v["doc"].username)):
        got = client.get(f"/api/v1/visits/{v['visit_id']}", headers=f.auth(tok))
        assert got.status_code == 200
        (rx,) = got.get_json()["prescriptions"]
        assert rx["id"] == rx_id and rx["status"] == "pending_review"
        (line,) = rx["items"]
        assert line["drug_id"] == v["drugs"]["amlodipine"] and line["days"] == 5
        assert line["drug_name"] == "苯磺酸氨氯地平片" and line["quantity"] == "5.00"
    other = f.staff(Role.PHYSICIAN, department="cardiology")
    assert refusal(client.get(f"/api/v1/visits/{v['visit_id']}", headers=f.auth(f.token(client, other.username)))) == (
        404,
        "not_found",
    )
