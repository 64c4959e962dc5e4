"""MedicationRequest for the regulators: each prescription item, with its signer, its
pharmacist reviewer and status, as a valid FHIR R4 resource; patients de-identified."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from identity.models import Role
from tests.api.clinic.regulator.test_regulator_api import read_bundle, scoped
from tests.support import factories as f
from tests.support.rx_factories import item, visit_in_progress


def test_prescriptions_as_medication_requests(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"], days=5)]},
        headers=f.auth(v["face"]),
    )
    assert resp.status_code == 201, resp.get_json()
    rx = resp.get_json()["id"]
    regulator = f.staff(Role.REGULATOR)
    tok = scoped(client, regulator.username)

    def first() -> dict[str, Any]:
        data = read_bundle(client.get("/api/v1/regulator/fhir/MedicationRequest", headers=f.auth(tok)))
        assert data["total"] == 1
        return dict(data["entry"][0]["resource"])

    mr = first()
    assert mr["groupIdentifier"]["value"] == rx and mr["intent"] == "order"
    assert mr["status"] == "on-hold" and mr["statusReason"]["text"] == "awaiting pharmacist review"
    assert mr["requester"]["reference"] == f"Practitioner/{v['doc'].id}"  # the signer
    assert mr["encounter"]["reference"] == f"Encounter/{v['visit_id']}"
    assert mr["dispenseRequest"]["expectedSupplyDuration"]["value"] == 5
    assert mr["reasonCode"][0]["coding"][0]["code"] == "I10"
    assert str(v["reg"].patient.id) not in mr["subject"]["reference"]  # pseudonymous
    assert {"url": "urn:clinic:fhir:prescription-status", "valueCode": "pending_review"} in mr["extension"]

    pharmacist = f.staff(Role.PHARMACIST)
    h = f.auth(f.token(client, pharmacist.username))
    assert client.post("/api/v1/pharmacy/queue/claim", headers=h).get_json()["prescription_id"] == rx
    decided = client.post(
        f"/api/v1/pharmacy/prescriptions/{rx}/review", json={"decision": "approve", "reasons": []}, headers=h
    )
    assert decided.status_code == 200, decided.get_json()

    mr = first()
    assert mr["status"] == "active"
    review = next(e for e in mr["extension"] if e["url"] == "urn:clinic:fhir:pharmacist-review")
    parts = {x["url"]: x for x in review["extension"]}
    assert parts["reviewer"]["valueReference"]["reference"] == f"Practitioner/{pharmacist.id}"
    assert parts["decision"]["valueCode"] == "approve" and parts["decidedAt"]["valueDateTime"]
