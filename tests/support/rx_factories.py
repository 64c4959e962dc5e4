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
