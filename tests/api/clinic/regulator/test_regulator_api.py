"""The regulators' data interface over HTTP: scoped tokens, FHIR R4 Bundles (re-read with
the FHIR library and with FHIR 4.0.1 models), de-identification, paging, refusals, audit."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhirclient.models.bundle import Bundle as R4Bundle
from flask.testing import FlaskClient
from jose import jwt
from sqlalchemy import select

from clinic.core import audit, audit_verify
from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.regulator import access
from clinic.visits.models import Diagnosis, Visit
from identity.models import Account, Patient, Role
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal

TYPES = ["Organization", "Practitioner", "Patient", "Condition", "Encounter", "MedicationRequest", "AuditEvent"]


def read_bundle(resp: Any) -> dict[str, Any]:
    """The answer is a valid R4 searchset Bundle: parsed by fhir.resources and by FHIR 4.0.1 models."""
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == "application/fhir+json"
    text = resp.get_data(as_text=True)
    model = Bundle.model_validate_json(text)
    assert model.type == "searchset"
    data = json.loads(text)
    R4Bundle(data, strict=True)  # raises FHIRValidationError on anything that is not R4 4.0.1
    return data


@pytest.fixture
def world(client: FlaskClient) -> dict[str, Any]:
    cf.catalog()
    physician = f.staff(Role.PHYSICIAN)
    f.staff(Role.PHARMACIST)
    visit = cf.open_visit(client, physician)
    with unit_of_work():
        diag = db.session.get(Diagnosis, visit["diag"].id)
        assert diag is not None
        diag.reviewed_at = utcnow()
        v = db.session.get(Visit, uuid.UUID(visit["visit_id"]))
        assert v is not None
        v.physician_id = physician.id
    regulator = f.staff(Role.REGULATOR)
    admin = f.staff(Role.ADMIN)
    return {"physician": physician, "visit": visit, "regulator": regulator, "admin": admin}


def scoped(client: FlaskClient, username: str, scope: list[str] | None = None) -> str:
    login = f.token(client, username)
    resp = client.post("/api/v1/regulator/token", json={"scope": scope or ["read:deidentified"]}, headers=f.auth(login))
    assert resp.status_code == 200, resp.get_json()
    return str(resp.get_json()["access_token"])


def allow_identified(regulator: Account) -> None:
    with acting_as(Actor(None, "test")), unit_of_work():
        access.set_regulator_scopes(regulator.id, ["read:deidentified", "read:identified"])


def test_every_resource_type_is_a_valid_r4_searchset(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    for resource in TYPES:
        data = read_bundle(client.get(f"/api/v1/regulator/fhir/{resource}", headers=f.auth(tok)))
        assert data["total"] == len(data.get("entry", [])), resource
        for entry in data.get("entry", []):
            assert entry["resource"]["resourceType"] == resource
            assert entry["fullUrl"].endswith(f"/{resource}/{entry['resource']['id']}")
            assert entry["search"]["mode"] == "match"
        if resource != "MedicationRequest":  # prescriptions register their own builder
            assert data["total"] >= 1, resource


def test_resources_carry_what_the_regulator_needs(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    get = lambda r: read_bundle(client.get(f"/api/v1/regulator/fhir/{r}", headers=f.auth(tok)))  # noqa: E731
    orgs = [e["resource"] for e in get("Organization")["entry"]]
    inst = next(o for o in orgs if o["id"] == "institution")
    assert {i["value"] for i in inst["identifier"]} == {"PDY-TEST", "TEST-APPROVAL"}
    approval = next(i for i in inst["identifier"] if i["value"] == "TEST-APPROVAL")
    assert approval["period"]["end"]  # the approval's validity
    assert any(o.get("partOf", {}).get("reference") == "Organization/institution" for o in orgs)
    assert not any(o["id"] == "dept-psychiatry" for o in orgs)  # not approved

    pracs = {e["resource"]["id"]: e["resource"] for e in get("Practitioner")["entry"]}
    doc = pracs[str(world["physician"].id)]
    assert doc["qualification"][0]["identifier"][0]["value"] == world["physician"].staff.license_no

    cond = get("Condition")["entry"][0]["resource"]
    assert cond["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10",
        "code": "I10",
        "display": cond["code"]["coding"][0]["display"],
    }
    assert cond["verificationStatus"]["coding"][0]["code"] == "confirmed"

    enc = get("Encounter")["entry"][0]["resource"]
    assert enc["class"]["code"] == "VR" and enc["status"] == "arrived"
    assert enc["participant"][0]["individual"]["reference"] == f"Practitioner/{world['physician'].id}"
    assert enc["subject"]["reference"] == cond["subject"]["reference"]  # the same pseudonymous patient

    events = get("AuditEvent")["entry"]
    assert any(
        e["resource"]["type"]["code"] == "visit.requested" or e["resource"]["type"]["code"].startswith("visit.")
        for e in events
    )


def test_referral_shows_termination_and_where_the_patient_was_sent(client: FlaskClient, world: dict[str, Any]) -> None:
    with unit_of_work():
        v = db.session.get(Visit, uuid.UUID(world["visit"]["visit_id"]))
        assert v is not None
        from clinic.visits.models import VisitStatus

        v.status, v.closed_at = VisitStatus.REFERRED, utcnow()
        v.termination_reason, v.referral_advice = "Chest pain at rest", "Go to the emergency department now"
    tok = scoped(client, world["regulator"].username)
    enc = read_bundle(client.get("/api/v1/regulator/fhir/Encounter", headers=f.auth(tok)))["entry"][0]["resource"]
    assert enc["status"] == "finished" and enc["period"]["end"]
    assert "Go to the emergency department now" in enc["hospitalization"]["dischargeDisposition"]["text"]
    assert {x["valueString"] for x in enc["extension"]} >= {"Chest pain at rest"}


def test_patients_are_deidentified_unless_the_scope_allows_identity(client: FlaskClient, world: dict[str, Any]) -> None:
    patient: Patient = world["visit"]["reg"].patient
    tok = scoped(client, world["regulator"].username)
    resp = client.get("/api/v1/regulator/fhir/Patient", headers=f.auth(tok))
    text = resp.get_data(as_text=True)
    p = read_bundle(resp)["entry"][0]["resource"]
    assert "name" not in p
    assert patient.id_number not in text and patient.name not in text and str(patient.id) not in text
    assert p["birthDate"] == str(patient.birth_date.year) and p["gender"] in ("male", "female")
    assert p["identifier"][0]["value"] == p["id"] and len(p["id"]) == 32
    # stable: the same pseudonym on the next read and in other resources
    again = read_bundle(client.get("/api/v1/regulator/fhir/Patient", headers=f.auth(tok)))["entry"][0]["resource"]
    assert again["id"] == p["id"]
    # nor through the audit trail: no ID number, no patient name, no patient record id
    events = client.get("/api/v1/regulator/fhir/AuditEvent", headers=f.auth(tok)).get_data(as_text=True)
    assert patient.id_number not in events and patient.name not in events and str(patient.id) not in events

    # a plain de-identified account may not ask for identity
    login = f.token(client, world["regulator"].username)
    refused = client.post("/api/v1/regulator/token", json={"scope": ["read:identified"]}, headers=f.auth(login))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "scope_not_allowed"

    allow_identified(world["regulator"])
    tok = scoped(client, world["regulator"].username, ["read:identified"])
    p = read_bundle(client.get("/api/v1/regulator/fhir/Patient", headers=f.auth(tok)))["entry"][0]["resource"]
    assert p["id"] == str(patient.id) and p["name"][0]["text"] == patient.name
    assert patient.id_number in {i["value"] for i in p["identifier"]}
    assert p["birthDate"] == patient.birth_date.isoformat()


def test_scoped_tokens_are_short_lived_and_cannot_be_renewed(
    client: FlaskClient, world: dict[str, Any], ctx: Any
) -> None:
    tok = scoped(client, world["regulator"].username)
    claims = jwt.get_unverified_claims(tok)
    assert claims["scope"] == "read:deidentified" and claims["exp"] - claims["iat"] <= 300
    again = client.post("/api/v1/regulator/token", json={"scope": ["read:deidentified"]}, headers=f.auth(tok))
    assert again.status_code == 403 and again.get_json()["error"]["code"] == "scope_exchange_refused"
    expired, _ = __import__("identity.tokens", fromlist=["issue"]).issue(
        world["regulator"], extra={"scope": "read:deidentified", "exp": int(utcnow().timestamp()) - 1}
    )
    assert refusal(client.get("/api/v1/regulator/fhir/Patient", headers=f.auth(expired))) == (401, "unauthenticated")


def test_who_may_read_and_who_may_not_write(client: FlaskClient, world: dict[str, Any]) -> None:
    physician_tok = cf.face_token(world["physician"])
    patient_tok = world["visit"]["token"]
    for tok in (patient_tok, physician_tok, f.token(client, world["admin"].username)):
        resp = client.get("/api/v1/regulator/fhir/Patient", headers=f.auth(tok))
        assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
        assert "entry" not in resp.get_data(as_text=True)
    assert refusal(client.get("/api/v1/regulator/fhir/Patient")) == (401, "unauthenticated")

    login = f.token(client, world["regulator"].username)
    plain = client.get("/api/v1/regulator/fhir/Patient", headers=f.auth(login))
    assert plain.status_code == 403
    err = plain.get_json()["error"]
    assert err["code"] == "scope_required" and "/api/v1/regulator/token" in err["message"]

    tok = scoped(client, world["regulator"].username)
    writes = [
        (
            "/api/v1/admin/incidents",
            {"kind": "data_security", "severity": "low", "what": "x", "scope": "y", "found_at": "2025-01-01T00:00:00Z"},
        ),
        ("/api/v1/admin/suspension", {"suspended": True, "reason": "regulator says"}),
        (
            "/api/v1/visits",
            {"patient_id": str(uuid.uuid4()), "diagnosis_id": str(uuid.uuid4()), "department": "cardiology"},
        ),
        (f"/api/v1/visits/{world['visit']['visit_id']}/complete", {"note": "done"}),
        ("/api/v1/diagnoses/" + str(world["visit"]["diag"].id) + "/reject", {"reason": "no"}),
    ]
    for t in (tok, login):
        for path, body in writes:
            resp = client.post(path, json=body, headers=f.auth(t))
            assert resp.status_code == 403, (path, resp.get_json())
            assert resp.get_json()["error"]["code"] == "forbidden"


BAD_QUERIES = [
    ("since=yesterday", "RFC 3339"),
    ("since=2025-01-01T00:00:00", "offset"),
    ("since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "before"),
    ("since=2024-01-01T00:00:00Z&until=2024-06-01T00:00:00Z", "31 days"),
    ("page=0", "page"),
    ("page=abc", "page"),
    ("limit=5", "limit"),
]


def test_bad_windows_and_pages_are_422_with_the_reason(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    for query, fragment in BAD_QUERIES:
        resp = client.get(f"/api/v1/regulator/fhir/Encounter?{query}", headers=f.auth(tok))
        assert resp.status_code == 422, (query, resp.get_json())
        err = resp.get_json()["error"]
        assert err["code"] == "invalid" and fragment in err["message"], (query, err)
        assert "entry" not in resp.get_data(as_text=True)


def test_unknown_type_and_page_past_the_end_are_404(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    resp = client.get("/api/v1/regulator/fhir/Immunization", headers=f.auth(tok))
    assert resp.status_code == 404 and "AuditEvent" in resp.get_json()["error"]["message"]
    resp = client.get("/api/v1/regulator/fhir/Encounter?page=2", headers=f.auth(tok))
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "not_found" and "last page (1" in resp.get_json()["error"]["message"]
    # an empty window still answers page 1 (empty)
    empty = read_bundle(
        client.get(
            "/api/v1/regulator/fhir/Encounter?since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z",
            headers=f.auth(tok),
        )
    )
    assert empty["total"] == 0 and "entry" not in empty


def test_paging_with_links(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    with acting_as(Actor(None, "test")), unit_of_work() as s:
        for i in range(60):
            audit.record(s, "test.filler", subject_type="thing", subject_id=i)
    time.sleep(1.01)
    until = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # a fixed window: the reads themselves add audit entries after it
    first = read_bundle(client.get(f"/api/v1/regulator/fhir/AuditEvent?until={until}&page=1", headers=f.auth(tok)))
    total = first["total"]
    assert total > 60 and len(first["entry"]) == 50
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "previous" not in links and "page=2" in links["next"]
    assert f"until={until.replace(':', '%3A')}" in links["next"]
    second = read_bundle(client.get(links["next"], headers=f.auth(tok)))
    assert len(second["entry"]) == total - 50
    assert "next" not in {link["relation"] for link in second["link"]}
    seen = {e["resource"]["id"] for e in first["entry"]} | {e["resource"]["id"] for e in second["entry"]}
    assert len(seen) == total  # no resource twice, none missed


def test_every_regulator_read_is_audited(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    since = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    read_bundle(client.get(f"/api/v1/regulator/fhir/Condition?since={since}", headers=f.auth(tok)))
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "regulator.read").order_by(AuditEntry.seq.desc())
    ).first()
    assert entry is not None and entry.actor_id == str(world["regulator"].id)
    assert entry.detail["resource"] == "Condition" and entry.detail["since"] == since
    assert entry.detail["scope"] == ["read:deidentified"] and entry.detail["count"] == 1 and entry.detail["page"] == 1
    issued = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "regulator.token_issued")).first()
    assert issued is not None and audit_verify.verify_now().ok
