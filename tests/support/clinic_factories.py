"""Factories for the clinic domain: conditions, confirmed diagnoses, consent, visits."""

from __future__ import annotations

import io
import uuid
from datetime import date
from typing import Any

from flask.testing import FlaskClient
from PIL import Image

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work
from clinic.core.principal import Principal
from clinic.visits import condition_catalog, proofs
from clinic.visits.models import Diagnosis, DiagnosisStatus
from identity import tokens
from identity.models import Account, Role
from tests.support import factories as f


def png(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def catalog() -> None:
    f.institution(
        departments=(
            "cardiology",
            "endocrinology",
            "pediatrics",
            "respiratory",
            "rheumatology",
            "nephrology",
            "infectious",
            "general",
        )
    )
    with acting_as(Actor(None, "test")), unit_of_work():
        condition_catalog.seed_conditions()


def two_departments() -> dict[str, Account]:
    """The catalog, a cardiologist (`cardio`) and an endocrinologist (`endo`)."""
    catalog()
    return {
        "cardio": f.staff(Role.PHYSICIAN, department="cardiology"),
        "endo": f.staff(Role.PHYSICIAN, department="endocrinology"),
    }


def face_token(account: Account) -> str:
    """A token carrying a fresh face check (the face flow itself is tested in its own suite)."""
    from clinic.core.db import utcnow

    tok, _ = tokens.issue(account, face_verified_at=utcnow())
    return tok


def diagnosis(
    patient_id: uuid.UUID, account: Account, icd10: str = "I10", confirm_by: Account | None = None
) -> Diagnosis:
    with acting_as(Actor(str(account.id), "patient")), unit_of_work():
        diag = proofs.submit_diagnosis(
            Principal(account.id, "patient"),
            patient_id,
            icd10,
            "北京协和医院",
            date(2024, 3, 1),
            png(),
        )
        if confirm_by is not None:
            diag.status = DiagnosisStatus.CONFIRMED
            cond = condition_catalog.catalog_condition(diag.icd10)
            assert cond is not None
            diag.condition_code, diag.department = cond.code, cond.department
            diag.reviewed_by = confirm_by.id
    return diag


def consent(client: FlaskClient, tok: str, patient_id: uuid.UUID) -> None:
    version = client.get("/api/v1/consent").get_json()["version"]
    resp = client.post("/api/v1/consent", json={"patient_id": str(patient_id), "version": version}, headers=f.auth(tok))
    assert resp.status_code == 201, resp.get_json()


def ready_patient(client: FlaskClient, physician: Account, icd10: str = "I10") -> dict[str, Any]:
    """A patient with a confirmed diagnosis and current consent, and their token."""
    reg = f.patient()
    diag = diagnosis(reg.patient.id, reg.account, icd10, confirm_by=physician)
    tok = f.token(client, reg.account.username)
    consent(client, tok, reg.patient.id)
    return {"reg": reg, "diag": diag, "token": tok}


def open_visit(
    client: FlaskClient, physician: Account, department: str = "cardiology", icd10: str = "I10"
) -> dict[str, Any]:
    p = ready_patient(client, physician, icd10)
    resp = client.post(
        "/api/v1/visits",
        json={"patient_id": str(p["reg"].patient.id), "diagnosis_id": str(p["diag"].id), "department": department},
        headers=f.auth(p["token"]),
    )
    assert resp.status_code == 201, resp.get_json()
    p["visit_id"] = resp.get_json()["id"]
    return p
