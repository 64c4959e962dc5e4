"""Issue 21 item 3: a physician reads a diagnosis only where they have a reason to.

Their department's queue of pending proofs, a proof they reviewed, or a patient they
treat. Anything else is 404, the same answer as an id that does not exist.
"""

from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal


@pytest.fixture
def world(ctx: Flask, client: FlaskClient) -> dict:
    return cf.two_departments()


def _read(client: FlaskClient, who: object, diag_id: object) -> int:
    tok = f.token(client, who.username)  # type: ignore[attr-defined]
    return client.get(f"/api/v1/diagnoses/{diag_id}", headers=f.auth(tok)).status_code


def test_pending_proofs_only_to_their_department(client: FlaskClient, world: dict) -> None:
    reg = f.patient()
    heart = cf.diagnosis(reg.patient.id, reg.account, "I10")  # cardiology
    sugar = cf.diagnosis(reg.patient.id, reg.account, "E11")  # endocrinology
    assert _read(client, world["cardio"], heart.id) == 200
    assert _read(client, world["endo"], heart.id) == 404
    assert _read(client, world["endo"], sugar.id) == 200
    assert _read(client, world["cardio"], sugar.id) == 404
    # The proof's document page follows the same rule.
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": world["endo"].username, "password": f.PASSWORD, "csrf_token": csrf})
    with client.session_transaction() as sess:
        sess["face_at"] = int(time.time())  # the page's face gate (tested with photos elsewhere)
    assert client.get(f"/diagnoses/{sugar.id}/document").status_code == 200
    assert refusal(client.get(f"/diagnoses/{heart.id}/document")) == (404, "not_found")


def test_reviewed_proofs_to_the_reviewer_and_the_treating_physician(client: FlaskClient, world: dict) -> None:
    cardio, endo = world["cardio"], world["endo"]
    other_cardio = f.staff(Role.PHYSICIAN, department="cardiology")
    v = cf.open_visit(client, cardio)  # confirmed by cardio, visit waiting in cardiology
    diag_id = v["diag"].id
    assert _read(client, cardio, diag_id) == 200  # the reviewer
    assert _read(client, other_cardio, diag_id) == 404  # confirmed: no longer in any queue
    assert _read(client, endo, diag_id) == 404
    accepted = client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(other_cardio)))
    assert accepted.status_code == 200
    assert _read(client, other_cardio, diag_id) == 200  # now treats the patient
    # Another diagnosis of a patient they treat, in another department.
    sugar = cf.diagnosis(v["reg"].patient.id, v["reg"].account, "E11", confirm_by=endo)
    assert _read(client, other_cardio, sugar.id) == 200
    assert _read(client, f.staff(Role.PHYSICIAN, department="cardiology"), sugar.id) == 404
