"""A remote consultation between two clinics side by side (issue 19 items 3 and 5): two real
app processes, two databases, their demo worlds, linked both ways by agreements. The
patient at A consents; A's cardiologist asks B's cardiology department; B's specialist
(face-verified, 主任医师) accepts and answers; the opinion arrives at A signed with the
specialist's key (published in B's JWKS) and is acknowledged; the two institutions' monthly
statements agree. A message with a changed byte is refused by B and nothing is stored."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import requests
from jose import jws as jose_jws

from tests.support.clinic_pair import Clinic

API = "/api/v1"
JWKS = "/.well-known/jwks.json"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _login(c: Clinic, account: dict[str, Any]) -> dict[str, str]:
    resp = requests.post(
        c.url + API + "/auth/token", json={"username": account["username"], "password": account["password"]}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    return {"Authorization": "Bearer " + resp.json()["access_token"]}


def _face(c: Clinic, physician: dict[str, Any]) -> dict[str, str]:
    with open(physician["face_probe_image"], "rb") as fh:
        resp = requests.post(
            c.url + API + "/auth/face",
            files={"image": ("face.jpg", fh, "image/jpeg")},
            headers=_login(c, physician),
            timeout=120,
        )
    assert resp.status_code == 200, resp.text
    return {"Authorization": "Bearer " + resp.json()["access_token"]}


def _until(what: Callable[[], Any], seconds: float = 60) -> Any:
    """The outbox delivers right after each commit; give a busy machine time."""
    deadline = time.monotonic() + seconds
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_a_remote_consultation_from_request_to_acknowledged_opinion_and_agreed_settlement(
    pair: tuple[Clinic, Clinic],
) -> None:
    a, b = pair
    world_a, world_b = json.loads(a.flask("demo")), json.loads(b.flask("demo"))
    # both agreements say 200 yuan, 20:80 (the harness's link() sets the terms on A's side only)
    terms = ("--fee-fen", "20000", "--split", "20:80")
    b_at_a = a.flask("partners", "link", "--name", "乙医院", "--base-url", b.url, "--jwks-url", b.url + JWKS, *terms)
    a_at_b = b.flask("partners", "link", "--name", "甲医院", "--base-url", a.url, "--jwks-url", a.url + JWKS, *terms)

    # the patient at A: the visit consent, a visit with A's cardiologist, the remote-consultation consent
    holder = world_a["accounts"]["patients"][0]
    person = holder["patients"][0]
    hypertension = next(d for d in person["confirmed_diagnoses"] if d["icd10"] == "I10")
    patient_h = _login(a, holder)
    version = requests.get(a.url + API + "/consent", timeout=30).json()["version"]
    requests.post(
        a.url + API + "/consent", json={"patient_id": person["id"], "version": version}, headers=patient_h, timeout=30
    )
    visit = requests.post(
        a.url + API + "/visits",
        json={"patient_id": person["id"], "diagnosis_id": hypertension["id"], "department": "cardiology"},
        headers=patient_h,
        timeout=30,
    )
    assert visit.status_code == 201, visit.text
    doc_a = next(p for p in world_a["accounts"]["physicians"] if p["department"] == "cardiology")
    face_a = _face(a, doc_a)
    accepted = requests.post(a.url + API + f"/visits/{visit.json()['id']}/accept", headers=face_a, timeout=30)
    assert accepted.status_code == 200, accepted.text

    body = {
        "patient_id": person["id"],
        "institution_id": b_at_a,
        "department": "cardiology",
        "question": "血压控制不佳，是否需要调整联合用药？",
        "summary": "高血压7年，近三月家庭血压150/95 mmHg。",
        "urgency": "routine",
        "present_physician_ids": [doc_a["id"]],
        "visit_id": visit.json()["id"],
    }
    refused = requests.post(a.url + API + "/consultations", json=body, headers=face_a, timeout=30)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "consent_required"
    text = requests.get(a.url + API + "/consultations/consent", timeout=30).json()
    consent = requests.post(
        a.url + API + "/consultations/consent",
        json={"patient_id": person["id"], "version": text["version"]},
        headers=patient_h,
        timeout=30,
    )
    assert consent.status_code == 201, consent.text

    created = requests.post(a.url + API + "/consultations", json=body, headers=face_a, timeout=30)
    assert created.status_code == 201 and created.json()["status"] == "requested", created.text
    cid_a, task_id = created.json()["id"], created.json()["task_id"]
    attached = requests.post(
        a.url + API + f"/consultations/{cid_a}/attachments",
        files={"file": ("心电图.pdf", PDF, "application/pdf")},
        headers=face_a,
        timeout=30,
    )
    assert attached.status_code == 201, attached.text

    # B: the request (and its attachment) in the cardiology queue; its senior cardiologist takes it
    doc_b = next(p for p in world_b["accounts"]["physicians"] if p["department"] == "cardiology")
    face_b = _face(b, doc_b)

    def queued() -> Any:
        items = requests.get(b.url + API + "/consultations?role=invited", headers=face_b, timeout=30).json()["items"]
        return items[0] if items else None

    item = _until(queued)
    assert item and item["task_id"] == task_id and item["partner"]["name"] == "甲医院", item
    cid_b = item["id"]
    assert set(item["patient"]) == {"name", "sex", "birth_date"}  # the minimum identity
    got = _until(
        lambda: requests.get(b.url + API + f"/consultations/{cid_b}", headers=face_b, timeout=30).json()["attachments"]
    )
    assert [x["filename"] for x in got] == ["心电图.pdf"]
    other_b = next(p for p in world_b["accounts"]["physicians"] if p["department"] != "cardiology")
    assert (
        requests.get(b.url + API + f"/consultations/{cid_b}", headers=_login(b, other_b), timeout=30).status_code == 404
    )
    took = requests.post(b.url + API + f"/consultations/{cid_b}/accept", headers=face_b, timeout=30)
    assert took.status_code == 200 and took.json()["status"] == "accepted", took.text
    assert _until(
        lambda: (
            requests.get(a.url + API + f"/consultations/{cid_a}", headers=face_a, timeout=30).json()["status"]
            == "accepted"
        )
    )
    answered = requests.post(
        b.url + API + f"/consultations/{cid_b}/opinion",
        json={
            "opinion": "高血压2级，很高危；目前方案控制不佳。",
            "recommendations": "加用氨氯地平5 mg每日一次，两周后复查。",
        },
        headers=face_b,
        timeout=30,
    )
    assert answered.status_code == 200 and answered.json() == {"status": "completed"}, answered.text

    # A: the opinion arrives signed by the specialist's own key, the one B publishes
    def completed() -> Any:
        c = requests.get(a.url + API + f"/consultations/{cid_a}", headers=face_a, timeout=30).json()
        return c if c["opinion"] else None

    detail = _until(completed)
    assert detail and detail["status"] == "completed", detail
    opinion = detail["opinion"]
    b_keys = {k["kid"]: k for k in requests.get(b.url + "/.well-known/jwks.json", timeout=30).json()["keys"]}
    assert opinion["signer_kid"] in b_keys and not opinion["signer_kid"].startswith("inst-")
    signed = json.loads(jose_jws.verify(opinion["jws"], b_keys[opinion["signer_kid"]], algorithms=["ES256"]))
    assert (
        signed["task_id"] == task_id
        and signed["opinion"] == opinion["opinion"] == "高血压2级，很高危；目前方案控制不佳。"
    )
    assert signed["signer"]["name"] == doc_b["name"] and detail["specialist"] == doc_b["name"]
    ack = requests.post(a.url + API + f"/consultations/{cid_a}/acknowledge", headers=face_a, timeout=30)
    assert ack.status_code == 200, ack.text

    # the month's statements: A sends its own, B records it and answers with its own; both agree
    admin_a, admin_b = _login(a, world_a["accounts"]["admin"]), _login(b, world_b["accounts"]["admin"])
    month = requests.get(a.url + API + f"/admin/settlements?partner_id={b_at_a}", headers=admin_a, timeout=30).json()[
        "month"
    ]
    sent = requests.post(
        a.url + API + "/admin/settlements/statements",
        json={"partner_id": b_at_a, "month": month},
        headers=admin_a,
        timeout=30,
    )
    assert sent.status_code == 202, sent.text

    def reconciled() -> Any:
        s = requests.get(
            a.url + API + f"/admin/settlements?partner_id={b_at_a}&month={month}", headers=admin_a, timeout=30
        )
        return s.json() if s.json()["matches_partner"] is not None else None

    at_a = _until(reconciled)
    assert at_a and at_a["matches_partner"] is True, at_a
    assert (at_a["count"], at_a["total_fen"], at_a["inviting_share_fen"], at_a["invited_share_fen"]) == (
        1,
        20000,
        4000,
        16000,
    )
    assert at_a["owed_to_partner_fen"] == 16000
    at_b = requests.get(
        b.url + API + f"/admin/settlements?partner_id={a_at_b}&month={month}", headers=admin_b, timeout=30
    )
    s_b = at_b.json()
    assert s_b["matches_partner"] is True and s_b["owed_by_partner_fen"] == 16000 and s_b["total_fen"] == 20000, s_b

    # a message with one byte changed, signed with A's real key: B answers 401 and stores nothing
    before = b.rows("SELECT count(*) FROM tm_messages")[0][0]
    pem = (a.db_path.parent / "institution_signing_key.pem").read_text()
    bundle = {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {
                "fullUrl": "urn:uuid:5a1f0b6e-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "MessageHeader",
                    "id": "5a1f0b6e-0000-4000-8000-000000000001",
                    "eventCoding": {"system": "urn:clinic:federation-event", "code": "ping"},
                    "source": {"endpoint": a.url},
                },
            }
        ],
    }
    token = str(jose_jws.sign(json.dumps(bundle).encode(), pem, headers={"kid": _inst_kid(a)}, algorithm="ES256"))
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[-3] ^= 0x01
    changed = ".".join([head, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode(), sig])
    resp = requests.post(
        b.url + API + "/federation/messages", data=changed, headers={"Content-Type": "application/jose"}, timeout=30
    )
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "bad_signature", resp.text
    assert b.rows("SELECT count(*) FROM tm_messages")[0][0] == before
    good = requests.post(
        b.url + API + "/federation/messages", data=token, headers={"Content-Type": "application/jose"}, timeout=30
    )
    assert good.status_code == 202, good.text  # the same message unchanged is A's: accepted
    assert b.rows("SELECT count(*) FROM tm_messages")[0][0] == before + 1


def _inst_kid(c: Clinic) -> str:
    keys = requests.get(c.url + "/.well-known/jwks.json", timeout=30).json()["keys"]
    return str(next(k["kid"] for k in keys if k["kid"].startswith("inst-")))
