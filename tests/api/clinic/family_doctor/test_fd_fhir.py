"""Family-doctor contracts and follow-ups (CarePlan) and home readings (Observation) in the
regulators' FHIR interface: valid R4, de-identified by default."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from identity.models import Role
from tests.api.clinic.regulator.test_regulator_api import allow_identified, read_bundle, scoped
from tests.support import factories as f
from tests.support import fd_factories as fd


def world(client: FlaskClient) -> dict[str, Any]:
    w = fd.team(client)
    p = fd.patient(client, w, icd10=("I10", "E11"))
    cid = fd.active_contract(client, w, p)
    for body in (
        {"kind": "bp", "systolic": 186, "diastolic": 100},
        {"kind": "glucose", "glucose_mmol": 3.2, "fasting": True},
        {"kind": "weight", "weight_kg": 70.5},
    ):
        resp = client.post("/api/v1/readings", json={"patient_id": p["patient_id"], **body}, headers=f.auth(p["token"]))
        assert resp.status_code == 201
    resp = client.post(
        f"/api/v1/family-doctor/patients/{p['patient_id']}/followups",
        json={"method": "phone", "classification": "uncontrolled"},
        headers=f.auth(w.lead_token),
    )
    assert resp.status_code == 201
    return {"team": w, "patient": p, "contract_id": cid, "regulator": f.staff(Role.REGULATOR)}


def test_careplan_and_observations_are_valid_r4_and_deidentified(client: FlaskClient) -> None:
    w = world(client)
    tok = scoped(client, w["regulator"].username)
    plans = read_bundle(client.get("/api/v1/regulator/fhir/CarePlan", headers=f.auth(tok)))
    (plan,) = [e["resource"] for e in plans["entry"]]
    assert plan["id"] == w["contract_id"] and plan["status"] == "active" and plan["intent"] == "plan"
    assert plan["author"]["reference"] == f"Practitioner/{w['team'].lead.id}"
    assert [a["detail"]["status"] for a in plan["activity"]] == ["completed", "scheduled"]
    agreement = next(e for e in plan["extension"] if e["url"].endswith("family-doctor-agreement"))
    assert {x["url"] for x in agreement["extension"]} == {"version", "sha256", "signedAt"}
    pid = w["patient"]["patient_id"]
    assert plan["subject"]["reference"] != f"Patient/{pid}"  # a pseudonym by default
    obs = read_bundle(client.get("/api/v1/regulator/fhir/Observation", headers=f.auth(tok)))
    by_code = {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in obs["entry"]}
    assert set(by_code) == {"85354-9", "14771-0", "29463-7"}
    bp = by_code["85354-9"]
    assert [c["valueQuantity"]["value"] for c in bp["component"]] == [186, 100]
    assert bp["interpretation"][0]["coding"][0]["code"] == "HH"
    assert by_code["14771-0"]["interpretation"][0]["coding"][0]["code"] == "LL"
    assert by_code["29463-7"]["interpretation"][0]["coding"][0]["code"] == "N"
    text = str(plans) + str(obs)
    assert w["patient"]["reg"].patient.name not in text and pid not in text
    assert {e["resource"]["subject"]["reference"] for e in obs["entry"]} == {plan["subject"]["reference"]}


def test_identified_scope_names_the_patient_record(client: FlaskClient) -> None:
    w = world(client)
    allow_identified(w["regulator"])
    tok = scoped(client, w["regulator"].username, ["read:identified"])
    plans = read_bundle(client.get("/api/v1/regulator/fhir/CarePlan", headers=f.auth(tok)))
    assert plans["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{w['patient']['patient_id']}"
