"""POST /visits/{id}/prescriptions, GET /prescriptions/{id} and its document (API.md § Prescriptions)."""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import pypdf
import pytest
import zxingcpp
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.core.errors import Conflict
from identity.models import Role
from prescriptions import lifecycle, services, signing
from prescriptions.models import Prescription
from prescriptions.rules import PrescriptionEvent
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.rx_factories import item, visit_in_progress


def count() -> int:
    return int(db.session.scalar(select(func.count()).select_from(Prescription)) or 0)


def test_the_physician_signs_and_everyone_entitled_reads(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])]},
        headers=f.auth(v["face"]),
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "pending_review" and body["jws"].count(".") == 2
    content = signing.verify(body["jws"])
    assert content["prescription_id"] == body["id"] and content["items"][0]["name"] == "苯磺酸氨氯地平片"
    assert content["physician"]["id"] == str(v["doc"].id)

    pharmacist = f.staff(Role.PHARMACIST)
    for tok in (v["token"], f.token(client, v["doc"].username), f.token(client, pharmacist.username)):
        got = client.get(f"/api/v1/prescriptions/{body['id']}", headers=f.auth(tok))
        assert got.status_code == 200, got.get_json()
        assert got.get_json()["jws"] == body["jws"] and got.get_json()["items"][0]["days"] == 7
    stranger = f.patient(name="李四")
    other_doc = f.staff(Role.PHYSICIAN)
    for tok in (f.token(client, stranger.account.username), f.token(client, other_doc.username)):
        assert refusal(client.get(f"/api/v1/prescriptions/{body['id']}", headers=f.auth(tok))) == (404, "not_found")
    assert refusal(client.get(f"/api/v1/prescriptions/{uuid.uuid4()}", headers=f.auth(v["token"]))) == (
        404,
        "not_found",
    )

    pdf = client.get(f"/api/v1/prescriptions/{body['id']}/document", headers=f.auth(v["token"]))
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    page = pypdf.PdfReader(io.BytesIO(pdf.data)).pages[0]
    text = page.extract_text()
    assert "苯磺酸氨氯地平片" in text and "待审核" in text and "I10" in text
    # the QR code (vector) holds the id and the detached signature; no approval yet
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rx.pdf").write_bytes(pdf.data)
        subprocess.run(["pdftoppm", "-r", "150", "-png", "-singlefile", f"{tmp}/rx.pdf", f"{tmp}/rx"], check=True)
        qr = zxingcpp.read_barcodes(Image.open(f"{tmp}/rx.png"))
    assert json.loads(qr[0].text) == {"rx": body["id"], "jws": signing.detached(body["jws"]), "approval_jws": None}

    # any change after signing fails verification
    rx = db.session.get(Prescription, uuid.UUID(body["id"]))
    assert rx is not None
    assert services.verify_prescription(rx).prescription_id == body["id"]
    rx.content = {**rx.content, "items": [{**rx.content["items"][0], "days": 8}]}
    with pytest.raises(signing.InvalidSignature):
        services.verify_prescription(rx)


def test_every_violation_at_once_and_nothing_stored(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    d = v["drugs"]
    items = [item(d["amlodipine"], days=10), item(d["metformin"]), item(d["oxycodone"])]
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions", json={"items": items}, headers=f.auth(v["face"])
    )
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "prescription_rejected"
    got = {(x["code"], x.get("item")) for x in err["violations"]}
    assert {("supply_exceeds_limit", 0), ("diagnosis_mismatch", 1), ("controlled_substance", 2)} <= got
    assert count() == 0


def test_refusals_and_bad_input(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    url = f"/api/v1/visits/{v['visit_id']}/prescriptions"
    good = {"items": [item(v["drugs"]["amlodipine"])]}
    no_face = client.post(url, json=good, headers=f.auth(f.token(client, v["doc"].username)))
    assert no_face.status_code == 403 and no_face.get_json()["error"]["code"] == "face_verification_required"
    other = f.staff(Role.PHYSICIAN)
    resp = client.post(url, json=good, headers=f.auth(cf.face_token(other)))
    assert resp.status_code == 422
    assert [x["code"] for x in resp.get_json()["error"]["violations"]] == ["visit_not_active"]
    bad_bodies = [
        {"items": [item(str(uuid.uuid4()))]},
        {"items": [item("not-a-uuid")]},
        {"items": [item(v["drugs"]["amlodipine"], dose="-1")]},
        {"items": [item(v["drugs"]["amlodipine"], quantity="1e9")]},
        {"items": [item(v["drugs"]["amlodipine"], days=1000)]},
        {"items": []},
        {"items": [item(v["drugs"]["amlodipine"])], "weight_kg": 0},
        {"items": [item(v["drugs"]["amlodipine"])], "extra": 1},
    ]
    for body in bad_bodies:
        resp = client.post(url, json=body, headers=f.auth(v["face"]))
        assert resp.status_code == 422, body
        assert resp.get_json()["error"]["code"] in ("invalid", "unknown_drug"), resp.get_json()
    assert refusal(
        client.post(f"/api/v1/visits/{uuid.uuid4()}/prescriptions", json=good, headers=f.auth(v["face"]))
    ) == (404, "not_found")
    assert count() == 0


def test_lifecycle_expiry_and_single_dispensing(client: FlaskClient) -> None:
    v = visit_in_progress(client)
    url = f"/api/v1/visits/{v['visit_id']}/prescriptions"
    ids = []
    # two prescriptions: the same one twice would be a duplicate
    for drug, unit in (("amlodipine", "片"), ("valsartan", "粒")):
        resp = client.post(url, json={"items": [item(v["drugs"][drug], unit=unit)]}, headers=f.auth(v["face"]))
        assert resp.status_code == 201
        ids.append(uuid.UUID(resp.get_json()["id"]))
    with acting_as(Actor(None, "test")), unit_of_work():
        first = db.session.get(Prescription, ids[0])
        assert first is not None
        assert first.expires_at - first.signed_at == timedelta(days=1)
        lifecycle.transition(first, PrescriptionEvent.APPROVE)
        lifecycle.transition(first, PrescriptionEvent.DISPENSE)
    with acting_as(Actor(None, "test")), unit_of_work():
        first = db.session.get(Prescription, ids[0])
        assert first is not None
        with pytest.raises(Conflict, match=r"^A prescription that is dispensed cannot become dispensed\.$"):
            lifecycle.transition(first, PrescriptionEvent.DISPENSE)
        with pytest.raises(Conflict, match=r"^A prescription that is dispensed cannot become approved\.$"):
            lifecycle.transition(first, PrescriptionEvent.APPROVE)
    with acting_as(Actor(None, "test")), unit_of_work():
        assert lifecycle.expire_overdue(utcnow()) == 0
        assert lifecycle.expire_overdue(utcnow() + timedelta(days=1, seconds=1)) == 1
    second = db.session.get(Prescription, ids[1])
    assert second is not None and second.status.value == "expired"
    dispensed = db.session.get(Prescription, ids[0])
    assert dispensed is not None and dispensed.status.value == "dispensed" and dispensed.dispensed_at is not None
