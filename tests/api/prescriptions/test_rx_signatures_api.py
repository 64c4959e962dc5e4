"""What the signatures carry and whom they bind (issue 14 item 5, issue 21 item 15).

The prescription JWS carries iss, iat, exp and per item the dosage form and the quantity
unit; the pharmacist's approval JWS is returned by GET /prescriptions/{id} every time,
rides in the regulator's MedicationRequest and verifies with the JWKS. A JWS is valid
only when its key was issued to the person the payload names as signer, and was valid
when it was signed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient
from jose import jws

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from identity.models import Role
from prescriptions import signing
from prescriptions.models import Prescription, SigningKey
from tests.api.clinic.regulator.test_regulator_api import read_bundle, scoped
from tests.support import factories as f
from tests.support.rx_factories import item, visit_in_progress


def _verify_with_jwks(client: FlaskClient, token: str) -> dict[str, Any]:
    keys = {k["kid"]: k for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
    kid = jws.get_unverified_header(token)["kid"]
    return dict(json.loads(jws.verify(token, keys[kid], algorithms=["ES256"])))


def _approved(client: FlaskClient) -> dict[str, Any]:
    v = visit_in_progress(client)
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"], dose="5", unit="mg")]},
        headers=f.auth(v["face"]),
    )
    assert resp.status_code == 201, resp.get_json()
    rx = resp.get_json()
    pharmacist = f.staff(Role.PHARMACIST)
    h = f.auth(f.token(client, pharmacist.username))
    assert client.post("/api/v1/pharmacy/queue/claim", headers=h).get_json()["prescription_id"] == rx["id"]
    r = client.post(f"/api/v1/pharmacy/prescriptions/{rx['id']}/review", json={"decision": "approve"}, headers=h)
    assert r.status_code == 200, r.get_json()
    return {**v, "rx": rx, "pharmacist": pharmacist, "ph": h}


def test_the_prescription_jws_carries_issuer_times_form_and_unit(client: FlaskClient) -> None:
    a = _approved(client)
    payload = _verify_with_jwks(client, a["rx"]["jws"])
    rx = db.session.get(Prescription, uuid.UUID(a["rx"]["id"]))
    assert rx is not None
    assert payload["iss"] == "urn:clinic:institution:" + rx.content["iss"].rsplit(":", 1)[1]
    assert payload["iss"].startswith("urn:clinic:institution:") and len(payload["iss"]) > 23
    signed = rx.signed_at if rx.signed_at.tzinfo else rx.signed_at.replace(tzinfo=UTC)
    expires = rx.expires_at if rx.expires_at.tzinfo else rx.expires_at.replace(tzinfo=UTC)
    assert payload["iat"] == int(signed.timestamp()) and payload["exp"] == int(expires.timestamp())
    assert payload["exp"] > payload["iat"]
    (it,) = payload["items"]
    assert it["form"] == "片剂" and it["quantity_unit"] == "片" and it["quantity"] == "7"


def test_the_approval_jws_is_returned_every_time_and_verifies(client: FlaskClient) -> None:
    a = _approved(client)
    url = f"/api/v1/prescriptions/{a['rx']['id']}"
    # the patient, the physician and the pharmacist, as often as they ask
    for headers in (f.auth(a["token"]), f.auth(a["token"]), f.auth(a["face"]), a["ph"]):
        got = client.get(url, headers=headers).get_json()
        assert got["approval_jws"], got
    first = client.get(url, headers=a["ph"]).get_json()
    again = client.get(url, headers=a["ph"]).get_json()
    assert first["approval_jws"] == again["approval_jws"]
    assert first["items"][0]["form"] == "片剂" and first["items"][0]["quantity_unit"] == "片"
    approval = _verify_with_jwks(client, first["approval_jws"])
    assert approval["type"] == "pharmacist_review" and approval["pharmacist"]["id"] == str(a["pharmacist"].id)
    assert approval["iss"] == _verify_with_jwks(client, first["jws"])["iss"] and approval["exp"] > approval["iat"]
    ok = client.post("/api/v1/pharmacy/verify", json={"jws": first["approval_jws"]}, headers=a["ph"])
    assert ok.status_code == 200 and ok.get_json()["kind"] == "pharmacist_review"

    # the regulator's MedicationRequest carries both signatures (detached: de-identified scope)
    tok = scoped(client, f.staff(Role.REGULATOR).username)
    data = read_bundle(client.get("/api/v1/regulator/fhir/MedicationRequest", headers=f.auth(tok)))
    ext = {e["url"]: e.get("valueString") for e in data["entry"][0]["resource"]["extension"]}
    assert ext["urn:clinic:fhir:approval-jws-detached"] == signing.detached(first["approval_jws"])
    assert ext["urn:clinic:fhir:prescription-jws-detached"] == signing.detached(first["jws"])
    # put the payload back: it verifies with the JWKS
    payload = first["approval_jws"].split(".")[1]
    assert _verify_with_jwks(client, signing.attach(ext["urn:clinic:fhir:approval-jws-detached"], payload))


def test_a_jws_signed_with_another_persons_key_is_invalid(client: FlaskClient) -> None:
    a = _approved(client)
    rx = db.session.get(Prescription, uuid.UUID(a["rx"]["id"]))
    assert rx is not None
    rx_id, genuine, content = rx.id, rx.jws, dict(rx.content)
    other = f.staff(Role.PHYSICIAN)
    with acting_as(Actor(None, "test")), unit_of_work():
        forged, _kid = signing.sign(other.id, content)  # the same content, naming the first physician
    resp = client.post("/api/v1/pharmacy/verify", json={"jws": forged}, headers=a["ph"])
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_signature"
    # the pharmacist's approval signed by the physician's key: invalid too
    approval = client.get(f"/api/v1/prescriptions/{rx_id}", headers=a["ph"]).get_json()["approval_jws"]
    approval_content = _verify_with_jwks(client, approval)
    with acting_as(Actor(None, "test")), unit_of_work():
        forged, _kid = signing.sign(a["doc"].id, approval_content)
    resp = client.post("/api/v1/pharmacy/verify", json={"jws": forged}, headers=a["ph"])
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_signature"
    # the genuine ones still verify
    assert client.post("/api/v1/pharmacy/verify", json={"jws": genuine}, headers=a["ph"]).status_code == 200


def test_a_key_is_valid_only_from_its_making_until_its_retirement(client: FlaskClient) -> None:
    a = _approved(client)
    rx = db.session.get(Prescription, uuid.UUID(a["rx"]["id"]))
    assert rx is not None
    key = db.session.get(SigningKey, rx.kid)
    assert key is not None
    signing.check_signer(key, rx.content)  # valid as signed
    signed = datetime.fromtimestamp(rx.content["iat"], UTC)
    key.retired_at = signed - timedelta(minutes=1)  # retired before the signing time
    try:
        try:
            signing.check_signer(key, rx.content)
        except signing.InvalidSignature as err:
            assert "not valid when" in err.message
        else:
            raise AssertionError("a key retired before the signing time verified")
        key.retired_at = signed + timedelta(days=1)  # retired later: what it signed before stays valid
        signing.check_signer(key, rx.content)
        backdated = {**rx.content, "iat": rx.content["iat"] - 86400}  # claims a time before the key existed
        try:
            signing.check_signer(key, backdated)
        except signing.InvalidSignature:
            pass
        else:
            raise AssertionError("a content signed before its key existed verified")
    finally:
        db.session.rollback()
