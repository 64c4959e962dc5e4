"""A contracted, stable patient's long-term prescription renewed from the last one by the
team's physician, in a return visit, with every prescription rule run again."""

from __future__ import annotations

import uuid
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.family_doctor import services
from prescriptions.models import Prescription, PrescriptionStatus
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support import fd_factories as fd
from tests.support.rx_factories import item, visit_in_progress

API = "/api/v1"


def contracted_with_a_long_term_prescription(client: FlaskClient) -> dict[str, Any]:
    v = visit_in_progress(client)
    fd.set_level("基层")
    doc = v["doc"]
    with acting_as(Actor(None, "test")), unit_of_work():
        team = services.create_team("全科一组", doc.id)
        pkg = services.create_package(team.id, "高血压包", ["I10"], "", 0)
        team_id, pkg_id = str(team.id), str(pkg.id)
    pid = str(v["reg"].patient.id)
    resp = client.post(
        f"{API}/family-doctor/contracts",
        json={"patient_id": pid, "team_id": team_id, "package_id": pkg_id, "agreement_version": fd.version(client)},
        headers=f.auth(v["token"]),
    )
    assert resp.status_code == 201, resp.get_json()
    lead = f.auth(f.token(client, doc.username))
    assert (
        client.post(f"{API}/family-doctor/contracts/{resp.get_json()['id']}/countersign", headers=lead).status_code
        == 200
    )
    first = client.post(
        f"{API}/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"], days=28)], "long_term": True},
        headers=f.auth(v["face"]),
    )
    assert first.status_code == 201, first.get_json()
    with unit_of_work():
        rx = db.session.get(Prescription, uuid.UUID(first.get_json()["id"]))
        assert rx is not None
        rx.status = PrescriptionStatus.APPROVED  # the pharmacist's approval is tested elsewhere
    client.post(f"{API}/visits/{v['visit_id']}/complete", json={"note": "血压稳定"}, headers=f.auth(v["face"]))
    # a new return visit for the renewal, accepted by the same team physician
    resp = client.post(
        f"{API}/visits",
        json={"patient_id": pid, "diagnosis_id": str(v["diag"].id), "department": "cardiology"},
        headers=f.auth(v["token"]),
    )
    assert resp.status_code == 201, resp.get_json()
    visit2 = resp.get_json()["id"]
    assert client.post(f"{API}/visits/{visit2}/accept", headers=f.auth(v["face"])).status_code == 200
    return {**v, "pid": pid, "visit2": visit2, "first": first.get_json()["id"]}


def reading(client: FlaskClient, w: dict[str, Any], s: int, d: int) -> None:
    resp = client.post(
        f"{API}/readings",
        json={"patient_id": w["pid"], "kind": "bp", "systolic": s, "diastolic": d},
        headers=f.auth(w["token"]),
    )
    assert resp.status_code == 201


def test_stable_patient_renewed_from_the_last_long_term_prescription(client: FlaskClient) -> None:
    w = contracted_with_a_long_term_prescription(client)
    url = f"{API}/family-doctor/patients/{w['pid']}/long-term-renewal"
    # no readings yet: not stable, refused with the rule
    resp = client.post(url, json={"visit_id": w["visit2"]}, headers=f.auth(w["face"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "not_stable"
    reading(client, w, 150, 92)
    resp = client.post(url, json={"visit_id": w["visit2"]}, headers=f.auth(w["face"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "not_stable"
    reading(client, w, 128, 80)
    # the prescription rules run again: an allergy recorded since the last one refuses it
    allergy(w, ["氨氯地平"])
    resp = client.post(url, json={"visit_id": w["visit2"]}, headers=f.auth(w["face"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "prescription_rejected"
    assert [v["code"] for v in resp.get_json()["error"]["violations"]] == ["allergy_conflict"]
    allergy(w, [])
    resp = client.post(url, json={"visit_id": w["visit2"]}, headers=f.auth(w["face"]))
    assert resp.status_code == 201, resp.get_json()
    out = resp.get_json()
    assert out["status"] == "pending_review" and out["long_term"] is True and out["jws"]
    db.session.remove()
    new = db.session.get(Prescription, uuid.UUID(out["id"]))
    old = db.session.get(Prescription, uuid.UUID(w["first"]))
    assert new is not None and old is not None
    assert str(new.visit_id) == w["visit2"] and new.physician_id == w["doc"].id
    assert [(i.drug_id, i.days, i.quantity) for i in new.items] == [(i.drug_id, i.days, i.quantity) for i in old.items]
    # the same renewal submitted twice is signed once (the prescribing service's guard)
    again = client.post(url, json={"visit_id": w["visit2"]}, headers=f.auth(w["face"]))
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "duplicate_submission"
    db.session.remove()
    assert len(db.session.scalars(select(Prescription.id)).all()) == 2


def allergy(w: dict[str, Any], names: list[str]) -> None:
    from identity.models import Patient

    with unit_of_work():
        patient = db.session.get(Patient, uuid.UUID(w["pid"]))
        assert patient is not None
        patient.allergies = names


def test_renewal_needs_a_fresh_face_and_a_visit_of_the_physician(client: FlaskClient) -> None:
    w = contracted_with_a_long_term_prescription(client)
    reading(client, w, 128, 80)
    url = f"{API}/family-doctor/patients/{w['pid']}/long-term-renewal"
    no_face = f.auth(f.token(client, w["doc"].username))
    resp = client.post(url, json={"visit_id": w["visit2"]}, headers=no_face)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "face_verification_required"
    # a physician outside the team: 404
    from identity.models import Role

    outsider = f.staff(Role.PHYSICIAN)
    resp = client.post(url, json={"visit_id": w["visit2"]}, headers=f.auth(cf.face_token(outsider)))
    assert resp.status_code == 404
