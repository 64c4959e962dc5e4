"""Contracted patients reach their family-doctor team first: a waiting return visit is held
for the team's physician in that department for 30 minutes; the return-visit gate still
applies to the request itself."""

from __future__ import annotations

import uuid
from datetime import timedelta

from flask.testing import FlaskClient
from sqlalchemy import select

from clinic.core.db import db, unit_of_work
from clinic.visits import queues
from clinic.visits.models import Diagnosis, Visit
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support import fd_factories as fd

API = "/api/v1"


def test_team_first_then_the_department(client: FlaskClient) -> None:
    world = fd.team(client)
    outsider = f.staff(Role.PHYSICIAN, department="cardiology")
    p = fd.patient(client, world)
    fd.active_contract(client, world, p)
    cf.consent(client, p["token"], p["reg"].patient.id)
    diag = db.session.get(type(p["reg"].patient), p["reg"].patient.id)
    assert diag is not None

    diagnosis_id = db.session.scalars(select(Diagnosis.id).where(Diagnosis.patient_id == p["reg"].patient.id)).one()
    resp = client.post(
        f"{API}/visits",
        json={"patient_id": p["patient_id"], "diagnosis_id": str(diagnosis_id), "department": "cardiology"},
        headers=f.auth(p["token"]),
    )
    assert resp.status_code == 201, resp.get_json()
    vid = resp.get_json()["id"]
    # another visit, of a patient with no contract, waiting longer
    other = cf.open_visit(client, outsider)
    with unit_of_work():
        v = db.session.get(Visit, uuid.UUID(other["visit_id"]))
        assert v is not None
        v.created_at = v.created_at - timedelta(minutes=5)
    db.session.remove()
    assert [str(v.id) for v in queues.waiting_visits_for(world.member.id)][0] == vid
    assert vid not in [str(v.id) for v in queues.waiting_visits_for(outsider.id)]
    resp = client.post(f"{API}/visits/{vid}/accept", headers=f.auth(cf.face_token(outsider)))
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "held_for_team"
    assert "家庭医生团队" in resp.get_json()["error"]["message"]
    # after 30 minutes anyone in the department may take it
    with unit_of_work():
        v = db.session.get(Visit, uuid.UUID(vid))
        assert v is not None
        v.created_at = v.created_at - timedelta(minutes=30)
    db.session.remove()
    assert vid in [str(v.id) for v in queues.waiting_visits_for(outsider.id)]
    resp = client.post(f"{API}/visits/{vid}/accept", headers=f.auth(cf.face_token(world.member)))
    assert resp.status_code == 200, resp.get_json()


def test_the_team_physician_takes_it_at_once(client: FlaskClient) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    fd.active_contract(client, world, p)
    cf.consent(client, p["token"], p["reg"].patient.id)

    diagnosis_id = db.session.scalars(select(Diagnosis.id).where(Diagnosis.patient_id == p["reg"].patient.id)).one()
    resp = client.post(
        f"{API}/visits",
        json={"patient_id": p["patient_id"], "diagnosis_id": str(diagnosis_id), "department": "cardiology"},
        headers=f.auth(p["token"]),
    )
    vid = resp.get_json()["id"]
    resp = client.post(f"{API}/visits/{vid}/accept", headers=f.auth(cf.face_token(world.member)))
    assert resp.status_code == 200, resp.get_json()
