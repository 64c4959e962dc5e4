"""A child under 6 over HTTP (Art. 19): a guardian and an accompanying physician, or no prescription.

The account holds a child (like the demo account); the child's return visit for
hypertension (I10) is in progress with a face-verified cardiologist. An invalid guardian
ID number is a `prescription_rejected` refusal whose `guardian_and_physician_required`
violation names the field (`missing: ["guardian.id_number"]`): the rule is the one that
needs a valid guardian, so the refusal lists it with every other broken rule at once.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask.testing import FlaskClient

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from identity import services as identity
from identity.models import Account, Role
from prescriptions.models import Prescription
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.rx_factories import item, seed

GUARDIAN_BORN = date(1988, 6, 1)


def child_visit(client: FlaskClient) -> dict[str, Any]:
    cf.catalog()
    drugs = seed()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient("王芳", GUARDIAN_BORN)
    # three and a half: aged 3 on the UTC date and on Beijing's, whatever the hour
    born = date.today() - timedelta(days=3 * 365 + 180)
    with acting_as(Actor(str(reg.account.id), "patient")), unit_of_work():
        account = db.session.get(Account, reg.account.id)
        assert account is not None
        child = identity.add_family_member(account, "王小宝", f.id_number(born), "child")
    diag = cf.diagnosis(child.id, reg.account, "I10", confirm_by=doc)
    tok = f.token(client, reg.account.username)
    cf.consent(client, tok, child.id)
    resp = client.post(
        "/api/v1/visits",
        json={"patient_id": str(child.id), "diagnosis_id": str(diag.id), "department": "cardiology"},
        headers=f.auth(tok),
    )
    assert resp.status_code == 201, resp.get_json()
    visit_id = resp.get_json()["id"]
    face = cf.face_token(doc)
    assert client.post(f"/api/v1/visits/{visit_id}/accept", headers=f.auth(face)).status_code == 200
    return {"visit_id": visit_id, "face": face, "drugs": drugs, "doc": doc, "reg": reg, "child": child}


def body(drugs: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"items": [item(drugs["amlodipine"], days=3)], "weight_kg": "16.5", **extra}


GUARDIAN = {"name": "王芳", "id_number": "", "relation": "母亲"}
PHYSICIAN = {"name": "李医生", "license_no": "110110000012345", "specialty": "儿科"}  # 15 digits


def test_a_child_under_six_needs_a_valid_guardian_and_an_accompanying_physician(client: FlaskClient) -> None:
    v = child_visit(client)
    url = f"/api/v1/visits/{v['visit_id']}/prescriptions"
    headers = f.auth(v["face"])

    resp = client.post(url, json=body(v["drugs"]), headers=headers)
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "prescription_rejected"
    assert [x["code"] for x in err["violations"]] == ["guardian_and_physician_required"]
    assert err["violations"][0]["missing"] == ["guardian", "accompanying_physician"]
    assert err["violations"][0]["age_years"] == 3

    # a guardian whose ID number fails its checksum: the refusal names the field
    bad_id = f.id_number(GUARDIAN_BORN)
    bad_id = bad_id[:-1] + ("0" if bad_id[-1] != "0" else "1")
    resp = client.post(
        url,
        json=body(v["drugs"], guardian={**GUARDIAN, "id_number": bad_id}, accompanying_physician=PHYSICIAN),
        headers=headers,
    )
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "prescription_rejected"
    assert err["violations"][0]["code"] == "guardian_and_physician_required"
    assert err["violations"][0]["missing"] == ["guardian.id_number"]
    # a child cannot be the guardian
    resp = client.post(
        url,
        json=body(
            v["drugs"],
            guardian={**GUARDIAN, "id_number": f.id_number(date.today() - timedelta(days=10 * 365 + 180))},
            accompanying_physician=PHYSICIAN,
        ),
        headers=headers,
    )
    assert resp.get_json()["error"]["violations"][0]["missing"] == ["guardian.id_number (not an adult)"]
    # a valid adult ID number of someone not recorded on the child's account: not its guardian
    stranger = f.id_number(GUARDIAN_BORN)
    resp = client.post(
        url,
        json=body(v["drugs"], guardian={**GUARDIAN, "id_number": stranger}, accompanying_physician=PHYSICIAN),
        headers=headers,
    )
    assert resp.get_json()["error"]["violations"][0]["missing"] == ["guardian.not_recorded"]
    # the accompanying physician's licence number must be a 15-digit 医师执业证书编码
    holder_id = v["reg"].patient.id_number
    resp = client.post(
        url,
        json=body(
            v["drugs"],
            guardian={**GUARDIAN, "id_number": holder_id},
            accompanying_physician={**PHYSICIAN, "license_no": "110100000001"},
        ),
        headers=headers,
    )
    assert resp.get_json()["error"]["violations"][0]["missing"] == ["accompanying_physician.license_no (15 digits)"]
    # the child itself, named by patient_id, is not its own guardian
    resp = client.post(
        url,
        json=body(v["drugs"], guardian={"patient_id": str(v["child"].id)}, accompanying_physician=PHYSICIAN),
        headers=headers,
    )
    assert resp.get_json()["error"]["violations"][0]["missing"] == ["guardian.not_recorded"]
    # a guardian without a physician is still refused
    good_id = holder_id
    resp = client.post(url, json=body(v["drugs"], guardian={**GUARDIAN, "id_number": good_id}), headers=headers)
    assert resp.status_code == 422
    assert resp.get_json()["error"]["violations"][0]["missing"] == ["accompanying_physician"]
    assert db.session.query(Prescription).count() == 0

    resp = client.post(
        url,
        json=body(v["drugs"], guardian={**GUARDIAN, "id_number": good_id}, accompanying_physician=PHYSICIAN),
        headers=headers,
    )
    assert resp.status_code == 201, resp.get_json()
    rx_id = resp.get_json()["id"]
    got = client.get(f"/api/v1/prescriptions/{rx_id}", headers=headers).get_json()
    assert got["guardian"]["name"] == "王芳" and got["guardian"]["relation"] == "母亲"
    masked = got["guardian"]["id_number_masked"]
    assert masked.startswith(good_id[:3]) and masked.endswith(good_id[-4:]) and good_id not in str(got)
    assert "id_number_hash" not in got["guardian"]
    assert got["accompanying_physician"] == PHYSICIAN
    assert got["weight_kg"] == "16.50" or float(got["weight_kg"]) == 16.5
    assert got["guardian"]["patient_id"] == str(v["reg"].patient.id) and got["guardian"]["recorded_on_account"]


def test_the_guardian_named_by_patient_id_from_the_account(client: FlaskClient) -> None:
    v = child_visit(client)
    url = f"/api/v1/visits/{v['visit_id']}/prescriptions"
    holder = v["reg"].patient
    resp = client.post(
        url,
        json=body(v["drugs"], guardian={"patient_id": str(holder.id)}, accompanying_physician=PHYSICIAN),
        headers=f.auth(v["face"]),
    )
    assert resp.status_code == 201, resp.get_json()
    got = client.get(f"/api/v1/prescriptions/{resp.get_json()['id']}", headers=f.auth(v["face"])).get_json()
    assert got["guardian"]["name"] == holder.name and got["guardian"]["relation"] == "父母"
    # half a typed guardian is a bad request, not a rule refusal
    resp = client.post(url, json=body(v["drugs"], guardian={"name": "王芳"}), headers=f.auth(v["face"]))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid"
