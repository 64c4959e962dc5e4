"""China's ICD-10: a proof may carry a 国家临床版 2.0 code or a WHO code; the record keeps both,
maps the national code to its WHO category for the condition catalog, and shows the Chinese
name. Patients find the condition by typing its Chinese name."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient

from clinic.core.db import db
from clinic.visits import rules
from clinic.visits.models import Diagnosis
from identity.models import Role
from tests.api.clinic.visits.test_clinic_api import upload
from tests.integration.clinic.visits.test_visit_pages import login
from tests.integration.clinic.visits.test_visit_pages import upload as page_upload
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal


@pytest.mark.parametrize(
    ("raw", "who", "national"),
    [
        ("I10.x00", "I10", "I10.x00"),
        ("E11.900", "E11.9", "E11.900"),
        ("J45.900x001", "J45.9", "J45.900x001"),
        ("j45.900X001", "J45.9", "J45.900x001"),
        ("E11.9", "E11.9", None),
        ("I10", "I10", None),
        ("B18.100", "B18.1", "B18.100"),
    ],
)
def test_national_and_who_codes_parse(raw: str, who: str, national: str | None) -> None:
    assert rules.parse_icd10(raw) == rules.ParsedCode(who, national)


@pytest.mark.parametrize("raw", ["I10.x0", "Z99.x00x01", "U99.900", "高血压", "I10.900x0012", ""])
def test_what_is_neither_is_refused(raw: str) -> None:
    assert rules.parse_icd10(raw) is None


def test_a_national_code_uploads_and_maps_to_the_catalog(client: FlaskClient) -> None:
    cf.catalog()
    endo = f.staff(Role.PHYSICIAN, department="endocrinology")
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    resp = upload(client, tok, reg.patient.id, "E11.900")
    assert resp.status_code == 201, resp.get_json()
    diag_id = resp.get_json()["id"]
    got = client.get(f"/api/v1/diagnoses/{diag_id}", headers=f.auth(tok)).get_json()
    assert got["icd10"] == "E11.9" and got["icd10_national"] == "E11.900"
    assert got["condition_name"] == "2型糖尿病" and got["department"] == "endocrinology"
    stored = db.session.get(Diagnosis, uuid.UUID(diag_id))
    assert stored is not None and (stored.icd10, stored.icd10_national) == ("E11.9", "E11.900")
    # the endocrinologist confirms it: the national code is a condition of the catalog
    ok = client.post(f"/api/v1/diagnoses/{diag_id}/confirm", headers=f.auth(cf.face_token(endo)))
    assert ok.status_code == 200, ok.get_json()
    # a malformed national code is refused
    bad = upload(client, tok, reg.patient.id, "E11.90")
    assert refusal(bad) == (422, "invalid")


def test_conditions_are_searched_by_chinese_name(client: FlaskClient) -> None:
    cf.catalog()
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    items = client.get("/api/v1/conditions?q=高血压", headers=f.auth(tok)).get_json()["items"]
    assert [c["code"] for c in items] == ["I10"] and items[0]["name_zh"] == "原发性高血压"
    items = client.get("/api/v1/conditions?q=糖尿病", headers=f.auth(tok)).get_json()["items"]
    assert {c["code"] for c in items} == {"E10", "E11"}
    items = client.get("/api/v1/conditions?q=J45.900x001", headers=f.auth(tok)).get_json()["items"]
    assert items[0]["code"] == "J45"


def test_the_patient_picks_the_diagnosis_by_its_chinese_name(ctx: Flask) -> None:
    cf.catalog()
    reg = f.patient()
    page = ctx.test_client()
    login(page, reg.account.username)
    html = page.get("/diagnoses").get_data(as_text=True)
    assert 'data-search="/diagnoses/conditions.json"' in html and "diagnosis_search.js" in html
    assert "<script>" not in html  # no inline script (CSP)
    found = page.get("/diagnoses/conditions.json?q=哮").get_json()["items"]
    assert found == [{"name": "哮喘", "department": "respiratory"}]
    status, _ = page_upload(page, str(reg.patient.id), icd10="原发性高血压")
    assert status == 302
    diag = db.session.query(Diagnosis).one()
    assert diag.icd10 == "I10" and diag.icd10_national is None
