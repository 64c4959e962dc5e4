"""Prescription test helpers: a seeded catalog and a visit in progress."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work
from identity.models import Account, Role
from prescriptions import catalog
from tests.support import clinic_factories as cf
from tests.support import factories as f


def seed() -> dict[str, str]:
    with acting_as(Actor(None, "test")), unit_of_work():
        return catalog.seed_catalog()


def visit_in_progress(client: FlaskClient, icd10: str = "I10", department: str = "cardiology") -> dict[str, Any]:
    """A seeded catalog, a physician and a patient whose return visit the physician has accepted."""
    cf.catalog()
    drugs = seed()
    doc = f.staff(Role.PHYSICIAN, department=department)
    v = cf.open_visit(client, doc, department=department, icd10=icd10)
    face = cf.face_token(doc)
    resp = client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(face))
    assert resp.status_code == 200, resp.get_json()
    return {**v, "doc": doc, "face": face, "drugs": drugs}


def prescribed(client: FlaskClient, icd10: str = "I10", department: str = "cardiology") -> dict[str, Any]:
    """A visit in progress whose physician has signed one prescription (amlodipine, 7 days),
    waiting for the pharmacists: `visit_in_progress`'s keys plus `rx` (its id) and `jws`."""
    v = visit_in_progress(client, icd10=icd10, department=department)
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])]},
        headers=f.auth(v["face"]),
    )
    assert resp.status_code == 201, resp.get_json()
    return {**v, "rx": resp.get_json()["id"], "jws": resp.get_json()["jws"]}


def approved(client: FlaskClient) -> dict[str, Any]:
    """`prescribed`, then a pharmacist claims it from the queue and approves it:
    `prescribed`'s keys plus `pharmacist` (that pharmacist's auth headers)."""
    v = prescribed(client)
    ph = f.auth(f.token(client, f.staff(Role.PHARMACIST).username))
    claimed = client.post("/api/v1/pharmacy/queue/claim", headers=ph)
    assert claimed.status_code == 200 and claimed.get_json()["prescription_id"] == v["rx"], claimed.get_json()
    ok = client.post(f"/api/v1/pharmacy/prescriptions/{v['rx']}/review", json={"decision": "approve"}, headers=ph)
    assert ok.status_code == 200, ok.get_json()
    return {**v, "pharmacist": ph}


def item(drug_id: str, days: int = 7, **kw: Any) -> dict[str, Any]:
    return {
        "drug_id": drug_id,
        "dose": "1",
        "unit": "片",
        "frequency": "每日一次",
        "route": "口服",
        "days": days,
        "quantity": str(days),
        **kw,
    }


def physician_face(doc: Account) -> str:
    return cf.face_token(doc)
