"""A proof in the national clinical edition (国家临床版 2.0) is shown by the national code's own
Chinese name where the clinic's table names it (clinic/visits/data/icd10_national.json): on the
patient's pages, the physician's pages, the pharmacist's screen and the prescription PDF's
临床诊断 — not only by the catalog condition's name."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from clinic.visits import rules
from clinic.visits.condition_catalog import DEFAULT_CONDITIONS
from identity.models import Role
from tests.integration.clinic.visits.test_visit_pages import face_checked, login
from tests.support import factories as f
from tests.support.rx_factories import item, visit_in_progress

CODE, NAME, CATALOG = "I10.x00x028", "高血压病2级（极高危）", "原发性高血压"


def test_every_named_code_parses_falls_under_the_catalog_and_names_its_source() -> None:
    data = json.loads(rules.NATIONAL_NAMES.read_text(encoding="utf-8"))
    catalog = [code for code, *_ in DEFAULT_CONDITIONS]
    assert len(data["codes"]) >= 20
    for code, entry in data["codes"].items():
        parsed = rules.parse_icd10(code)
        assert parsed is not None and parsed.national == code, code
        assert rules.match_condition(parsed.who, catalog), code
        assert entry["source"] in data["sources"] and entry["name"], code
    assert rules.national_name("j45.900X001") == "支气管哮喘"
    assert rules.national_name("E11.9") is None and rules.national_name(None) is None


def test_the_national_name_is_what_everyone_reads(client: FlaskClient, ctx: Flask, tmp_path: Path) -> None:
    v = visit_in_progress(client, icd10=CODE)
    shown = f"{NAME} ({CODE})"
    # the API says it beside the catalog name
    diag = client.get(f"/api/v1/diagnoses/{v['diag'].id}", headers=f.auth(v["token"])).get_json()
    assert (diag["icd10"], diag["icd10_national"]) == ("I10", CODE)
    assert diag["national_name"] == NAME and diag["condition_name"] == CATALOG

    # the patient's pages
    patient = ctx.test_client()
    login(patient, v["reg"].account.username)
    assert shown in patient.get("/diagnoses").get_data(as_text=True)
    assert shown in patient.get(f"/visits/{v['visit_id']}").get_data(as_text=True)

    # the physician's pages: the visit room and the prescribing page
    doc = ctx.test_client()
    login(doc, v["doc"].username)
    face_checked(doc)
    assert shown in doc.get(f"/visits/{v['visit_id']}").get_data(as_text=True)
    prescribe = doc.get(f"/physician/visits/{v['visit_id']}/prescribe").get_data(as_text=True)
    assert shown in prescribe

    signed = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])]},
        headers=f.auth(v["face"]),
    )
    assert signed.status_code == 201, signed.get_json()
    rx = signed.get_json()["id"]
    assert shown in doc.get(f"/physician/prescriptions/{rx}").get_data(as_text=True)

    # the pharmacist's queue and review screen
    pharmacist = f.staff(Role.PHARMACIST)
    ph = ctx.test_client()
    login(ph, pharmacist.username)
    assert shown in ph.get("/pharmacy/queue").get_data(as_text=True)
    screen = client.get(
        f"/api/v1/pharmacy/prescriptions/{rx}/review", headers=f.auth(f.token(client, pharmacist.username))
    ).get_json()
    assert screen["diagnosis"]["icd10_national"] == CODE

    # the prescription document's 临床诊断
    if not shutil.which("pdftotext"):
        pytest.skip("poppler-utils (make chromium)")
    pdf = client.get(f"/api/v1/prescriptions/{rx}/document", headers=f.auth(v["token"]))
    assert pdf.status_code == 200
    (tmp_path / "rx.pdf").write_bytes(pdf.data)
    subprocess.run(["pdftotext", "-layout", str(tmp_path / "rx.pdf"), str(tmp_path / "rx.txt")], check=True)
    text = (tmp_path / "rx.txt").read_text(encoding="utf-8")
    assert f"临床诊断：{NAME}（{CODE}）" in text


def test_a_national_code_the_table_does_not_name_keeps_the_catalog_name(client: FlaskClient, ctx: Flask) -> None:
    v = visit_in_progress(client, icd10="I10.x00x099")  # well formed, accepted, not in the table
    diag = client.get(f"/api/v1/diagnoses/{v['diag'].id}", headers=f.auth(v["token"])).get_json()
    assert diag["national_name"] is None and diag["condition_name"] == CATALOG
    patient = ctx.test_client()
    login(patient, v["reg"].account.username)
    assert f"{CATALOG} (I10.x00x099)" in patient.get("/diagnoses").get_data(as_text=True)
