"""Remote consultation between institutions (API.md "Between institutions", issue 19 items 3
and 5): the consent, the request and its attachments, the invited side's queue, accept
(qualified, title, face), the signed opinion, acknowledgement, and the monthly settlement
with its reconciliation. The partner institution is played by a key of the test's own: its
messages are signed with it and posted to the inbox; ours to it are read from the outbox."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from jose import jws as jose_jws
from PIL import Image
from sqlalchemy import func, select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.notifications.models import InboxNotification
from clinic.telemedicine import consultation_opinions as opinions
from clinic.telemedicine import consultations as consult
from clinic.telemedicine import envelope, federation, partners, settlements
from clinic.telemedicine.models import (
    Consultation,
    ConsultationAttachment,
    ConsultationOpinion,
    FederationMessage,
    SettlementStatement,
)
from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal

API = "/api/v1"
PARTNER_URL = "http://127.0.0.1:9"  # nobody listens: our messages to it wait in the outbox


def _key() -> envelope.InstitutionKey:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return envelope.institution_key(pem.decode())


def count(model: Any, *where: Any) -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def audits(action: str) -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).where(AuditEntry.action == action)) or 0)


def admin_headers(client: FlaskClient) -> dict[str, str]:
    return f.auth(f.token(client, f.staff(Role.ADMIN).username))


def register(client: FlaskClient, key: envelope.InstitutionKey, **kw: Any) -> str:
    today = partners.today()
    body: dict[str, Any] = {
        "name": "乙市第一人民医院",
        "license_no": "PDY12345678",
        "level": "三级",
        "base_url": PARTNER_URL,
        "public_jwk": dict(key.public_jwk),
        "services": ["consultation", "referral"],
        "departments": ["cardiology"],
        "fee_fen": 20000,
        "fee_split": {"inviting": 20, "invited": 80},
        "valid_from": (today - timedelta(days=1)).isoformat(),
        "valid_until": (today + timedelta(days=364)).isoformat(),
    }
    body.update(kw)
    resp = client.post(f"{API}/admin/partner-institutions", json=body, headers=admin_headers(client))
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def inbox(client: FlaskClient, key: envelope.InstitutionKey, event: str, resources: list[dict[str, Any]]) -> Any:
    bundle = envelope.build_message(event, PARTNER_URL, "乙市第一人民医院", "http://localhost", resources)
    return client.post(
        f"{API}/federation/messages", data=envelope.sign(key, bundle), headers={"Content-Type": "application/jose"}
    )


def sent(event: str) -> list[dict[str, Any]]:
    """The bundles of the messages we signed for the partner, oldest first."""
    db.session.remove()
    rows = db.session.scalars(
        select(FederationMessage)
        .where(FederationMessage.direction == "out", FederationMessage.event_code == event)
        .order_by(FederationMessage.created_at)
    ).all()
    return [envelope.verify(m.jws, partners.own_key().public_jwk) for m in rows]


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def give_consent(client: FlaskClient, token: str, patient_id: uuid.UUID) -> None:
    version = client.get(f"{API}/consultations/consent").get_json()["version"]
    resp = client.post(
        f"{API}/consultations/consent", json={"patient_id": str(patient_id), "version": version}, headers=f.auth(token)
    )
    assert resp.status_code == 201, resp.get_json()


@pytest.fixture
def world(client: FlaskClient) -> dict[str, Any]:
    """Our cardiologist treating a patient in a visit, and a partner agreement."""
    cf.catalog()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology", title="主治医师")
    p = cf.open_visit(client, doctor)
    face = cf.face_token(doctor)
    assert client.post(f"{API}/visits/{p['visit_id']}/accept", headers=f.auth(face)).status_code == 200
    key = _key()
    return {
        "doctor": doctor,
        "face": face,
        "patient": p,
        "patient_id": p["reg"].patient.id,
        "key": key,
        "partner_id": register(client, key),
    }


def request_body(w: dict[str, Any], **kw: Any) -> dict[str, Any]:
    body = {
        "patient_id": str(w["patient_id"]),
        "institution_id": w["partner_id"],
        "department": "cardiology",
        "question": "血压控制不佳，是否调整联合用药？",
        "summary": "58岁男性，高血压病史7年，近三月家庭血压150/95。",
        "urgency": "routine",
        "present_physician_ids": [str(w["doctor"].id)],
        "visit_id": w["patient"]["visit_id"],
    }
    body.update(kw)
    return body


def ask(client: FlaskClient, w: dict[str, Any], **kw: Any) -> Any:
    return client.post(f"{API}/consultations", json=request_body(w, **kw), headers=f.auth(w["face"]))


# --- consent ----------------------------------------------------------------------------------


def test_the_consent_text_says_what_is_shared_the_fee_and_who_stays_responsible(client: FlaskClient) -> None:
    body = client.get(f"{API}/consultations/consent").get_json()
    assert body["version"] and len(body["sha256"]) == 64
    assert "受邀方" in body["text_zh"] and "承担诊疗责任" in body["text_zh"] and "费" in body["text_zh"]
    assert "身份证号" in body["text_zh"]  # what is NOT sent
    assert "inviting institution" in body["text_en"]


def test_a_stale_consent_version_is_refused(client: FlaskClient) -> None:
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    resp = client.post(
        f"{API}/consultations/consent",
        json={"patient_id": str(reg.patient.id), "version": "2000-01-01"},
        headers=f.auth(tok),
    )
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "stale_version"
    other = f.patient()
    version = client.get(f"{API}/consultations/consent").get_json()["version"]
    resp = client.post(
        f"{API}/consultations/consent",
        json={"patient_id": str(other.patient.id), "version": version},
        headers=f.auth(tok),
    )
    assert resp.status_code == 404  # another account's person
    give_consent(client, tok, reg.patient.id)
    assert audits("consultation.consent_accepted") == 1


# --- requesting ---------------------------------------------------------------------------------


def test_without_the_patients_consent_the_request_is_422_and_nothing_is_written(
    client: FlaskClient, world: dict[str, Any]
) -> None:
    resp = ask(client, world)
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "consent_required", resp.get_json()
    assert count(Consultation) == 0 and count(FederationMessage) == 0
    assert audits("consultation.refused") == 1 and audits("consultation.requested") == 0


@pytest.mark.parametrize("case", ["unknown", "expired", "department", "service"])
def test_without_an_agreement_covering_it_the_request_is_403_no_agreement(
    client: FlaskClient, world: dict[str, Any], case: str
) -> None:
    give_consent(client, world["patient"]["token"], world["patient_id"])
    today = partners.today()
    institution = {
        "unknown": lambda: str(uuid.uuid4()),
        "expired": lambda: register(
            client,
            _key(),
            valid_from=(today - timedelta(days=60)).isoformat(),
            valid_until=(today - timedelta(days=1)).isoformat(),
        ),
        "department": lambda: register(client, _key(), departments=["endocrinology"]),
        "service": lambda: register(client, _key(), services=["referral"]),
    }[case]()
    resp = ask(client, world, institution_id=institution)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "no_agreement", resp.get_json()
    assert count(Consultation) == 0 and count(FederationMessage) == 0
    assert audits("consultation.refused") == 1


def test_a_request_needs_a_fresh_face_check_and_your_own_patient(client: FlaskClient, world: dict[str, Any]) -> None:
    give_consent(client, world["patient"]["token"], world["patient_id"])
    plain = f.auth(f.token(client, world["doctor"].username))
    resp = client.post(f"{API}/consultations", json=request_body(world), headers=plain)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "face_verification_required"
    stranger = f.staff(Role.PHYSICIAN, department="cardiology")
    resp = client.post(f"{API}/consultations", json=request_body(world), headers=f.auth(cf.face_token(stranger)))
    assert resp.status_code == 404  # not a patient of theirs: not revealed
    assert count(Consultation) == 0 and count(FederationMessage) == 0


def test_a_request_is_recorded_audited_and_sent_signed_with_the_minimum_identity(
    client: FlaskClient, world: dict[str, Any]
) -> None:
    give_consent(client, world["patient"]["token"], world["patient_id"])
    resp = ask(client, world, urgency="urgent")
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "requested"
    (bundle,) = sent(consult.EV_REQUEST)
    (task,), (sr,), (patient,) = (resources(bundle, k) for k in ("Task", "ServiceRequest", "Patient"))
    assert task["identifier"][0]["value"] == sr["identifier"][0]["value"] == body["task_id"]
    assert task["status"] == "requested" and task["priority"] == "urgent"
    assert sr["performerType"]["coding"][0]["code"] == "cardiology"
    assert set(patient) == {"resourceType", "id", "name", "gender", "birthDate"}  # no ID number, phone, address
    assert [c["code"]["coding"][0]["code"] for c in resources(bundle, "Condition")] == ["I10"]
    detail = client.get(f"{API}/consultations/{body['id']}", headers=f.auth(world["face"])).get_json()
    assert detail["role"] == "inviting" and detail["fee_fen"] == 20000 and detail["opinion"] is None
    assert detail["present_physicians"][0]["id"] == str(world["doctor"].id)
    assert audits("consultation.requested") == 1 and audits("federation.message_sent") == 1
    listed = client.get(f"{API}/consultations?role=inviting", headers=f.auth(world["face"])).get_json()["items"]
    assert [c["id"] for c in listed] == [body["id"]]


# --- attachments -----------------------------------------------------------------------------------


def _image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(buf, fmt)
    return buf.getvalue()


def _upload(client: FlaskClient, w: dict[str, Any], cid: str, data: bytes, name: str) -> Any:
    return client.post(
        f"{API}/consultations/{cid}/attachments",
        data={"file": (io.BytesIO(data), name)},
        headers=f.auth(w["face"]),
        content_type="multipart/form-data",
    )


def _files(app: Flask) -> list[Path]:
    root = Path(app.config.get("UPLOAD_DIR") or Path(app.instance_path) / "uploads") / "consultations"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_attachments_pdf_jpeg_png_are_kept_and_sent_others_refused_with_nothing_stored(
    client: FlaskClient, app: Flask, world: dict[str, Any]
) -> None:
    give_consent(client, world["patient"]["token"], world["patient_id"])
    cid = ask(client, world).get_json()["id"]
    before = len(_files(app))
    for data, name in [(cf.PDF, "心电图.pdf"), (_image("JPEG"), "ct.jpg"), (_image("PNG"), "lab.png")]:
        resp = _upload(client, world, cid, data, name)
        assert resp.status_code == 201, resp.get_json()
    docs = [resources(b, "DocumentReference")[0] for b in sent(consult.EV_ATTACHMENT)]
    assert [d["content"][0]["attachment"]["contentType"] for d in docs] == [
        "application/pdf",
        "image/jpeg",
        "image/png",
    ]
    assert base64.b64decode(docs[0]["content"][0]["attachment"]["data"]) == cf.PDF
    assert len(_files(app)) == before + 3 and audits("consultation.attachment_added") == 3

    refusals = [
        (_image("WEBP"), "scan.webp", 422, "invalid_upload"),  # an image, but not one of the three types
        (_image("GIF"), "scan.gif", 422, "invalid_upload"),
        (b"<html><script>alert(1)</script></html>", "x.pdf", 422, "invalid_upload"),
        (b"%PDF-1.4\n" + b"0" * (5 * 1024 * 1024) + b"\n%%EOF\n", "big.pdf", 413, "too_large"),
    ]
    for data, name, status, code in refusals:
        resp = _upload(client, world, cid, data, name)
        assert resp.status_code == status and resp.get_json()["error"]["code"] == code, (name, resp.get_json())
    assert count(ConsultationAttachment) == 3 and len(_files(app)) == before + 3
    assert len(sent(consult.EV_ATTACHMENT)) == 3
    assert audits("consultation.refused") == len(refusals)
    got = client.get(f"{API}/consultations/{cid}", headers=f.auth(world["face"])).get_json()["attachments"]
    assert [a["filename"] for a in got] == ["心电图.pdf", "ct.jpg", "lab.png"]
    one = client.get(f"{API}/consultations/{cid}/attachments/{got[0]['id']}", headers=f.auth(world["face"]))
    assert one.status_code == 200 and one.data == cf.PDF and one.mimetype == "application/pdf"


# --- the invited side ------------------------------------------------------------------------------


def _incoming_request(w: dict[str, Any], department: str = "cardiology") -> tuple[str, list[dict[str, Any]]]:
    task_id = str(uuid.uuid4())
    ident = [{"system": consult.TASK_SYSTEM, "value": task_id}]
    pid = str(uuid.uuid4())
    return task_id, [
        {
            "resourceType": "Task",
            "id": str(uuid.uuid4()),
            "identifier": ident,
            "status": "requested",
            "intent": "order",
            "priority": "routine",
            "description": "胸闷一周，请会诊",
            "for": {"reference": f"Patient/{pid}"},
            "note": [{"text": "在场医师：赵医生（主治医师）"}],
        },
        {
            "resourceType": "ServiceRequest",
            "id": task_id,
            "identifier": ident,
            "status": "active",
            "intent": "order",
            "priority": "routine",
            "subject": {"reference": f"Patient/{pid}"},
            "requester": {"display": "赵医生"},
            "performerType": {"coding": [{"system": consult.DEPARTMENT_SYSTEM, "code": department}]},
            "reasonCode": [{"text": "胸闷一周，请会诊"}],
            "note": [{"text": "心电图ST段压低"}],
        },
        {"resourceType": "Patient", "id": pid, "name": [{"text": "钱七"}], "gender": "male", "birthDate": "1960-02-03"},
    ]


def test_a_partners_request_reaches_the_department_queue_and_only_a_qualified_senior_may_take_it(
    client: FlaskClient, world: dict[str, Any]
) -> None:
    task_id, res = _incoming_request(world)
    assert inbox(client, world["key"], consult.EV_REQUEST, res).status_code == 202
    junior = world["doctor"]  # cardiology, 主治医师: below the agreement's 副主任医师
    senior = f.staff(Role.PHYSICIAN, department="cardiology", title="副主任医师")
    other_dept = f.staff(Role.PHYSICIAN, department="endocrinology", title="主任医师")
    told = InboxNotification.kind == "consultation_received"  # the department's physicians at the time
    assert count(InboxNotification, told) == 1
    assert count(InboxNotification, told, InboxNotification.account_id == junior.id) == 1
    queue = client.get(f"{API}/consultations?role=invited&status=requested", headers=f.auth(cf.face_token(senior)))
    (item,) = queue.get_json()["items"]
    assert (
        item["task_id"] == task_id
        and item["patient"]["name"] == "钱七"
        and item["partner"]["name"] == "乙市第一人民医院"
    )
    cid = item["id"]
    # the endocrinologist does not even see it
    assert refusal(client.get(f"{API}/consultations/{cid}", headers=f.auth(cf.face_token(other_dept)))) == (
        404,
        "not_found",
    )

    resp = client.post(f"{API}/consultations/{cid}/accept", headers=f.auth(cf.face_token(junior)))
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "not_qualified", resp.get_json()
    assert resp.get_json()["error"]["violations"][0]["code"] == "title_below_requirement"
    plain = f.auth(f.token(client, senior.username))
    resp = client.post(f"{API}/consultations/{cid}/accept", headers=plain)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "face_verification_required"
    assert count(Consultation, Consultation.status == "requested") == 1
    assert sent(consult.EV_ACCEPTED) == [] and audits("consultation.refused") == 1

    face = cf.face_token(senior)
    resp = client.post(f"{API}/consultations/{cid}/accept", headers=f.auth(face))
    assert resp.status_code == 200 and resp.get_json() == {"status": "accepted"}
    (accepted,) = sent(consult.EV_ACCEPTED)
    assert resources(accepted, "Task")[0]["status"] == "accepted"
    again = client.post(f"{API}/consultations/{cid}/accept", headers=f.auth(face))
    assert refusal(again) == (409, "illegal_transition")

    resp = client.post(f"{API}/consultations/{cid}/messages", json={"text": "请补充近期心脏超声"}, headers=f.auth(face))
    assert resp.status_code == 201
    assert client.get(f"{API}/consultations/{cid}", headers=f.auth(face)).get_json()["status"] == "in-progress"

    resp = client.post(
        f"{API}/consultations/{cid}/opinion",
        json={"opinion": "考虑稳定型心绞痛", "recommendations": "加用单硝酸异山梨酯，建议冠脉CTA"},
        headers=f.auth(face),
    )
    assert resp.status_code == 200 and resp.get_json() == {"status": "completed"}, resp.get_json()
    (msg,) = sent(consult.EV_OPINION)
    (report,) = resources(msg, "DiagnosticReport")
    token = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    jwk = json.loads(report["extension"][0]["valueString"])
    content = opinions.verify_opinion(token, jwk)
    assert content["task_id"] == task_id and content["opinion"] == report["conclusion"] == "考虑稳定型心绞痛"
    assert content["signer"]["title"] == "副主任医师" and jwk["kid"].startswith("rx-")  # the physician's own key
    db.session.remove()
    (op,) = db.session.scalars(select(ConsultationOpinion)).all()
    assert op.jws == token and op.signer_kid == jwk["kid"]
    assert audits("consultation.accepted") == 1 and audits("consultation.completed") == 1


def test_a_physician_of_the_invited_department_declines_from_the_page_saying_why(
    client: FlaskClient, world: dict[str, Any]
) -> None:
    task_id, res = _incoming_request(world)
    assert inbox(client, world["key"], consult.EV_REQUEST, res).status_code == 202
    (cid,) = db.session.scalars(select(Consultation.id)).all()
    doctor = world["doctor"]  # cardiology: the department asked
    client.get("/logout")
    login = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"username": doctor.username, "password": f.PASSWORD, "csrf_token": extract_csrf(login)})
    with client.session_transaction() as sess:
        sess["face_at"] = int(time.time())  # the face check done at login
    page = client.get(f"/physician/consultations/{cid}").get_data(as_text=True)
    assert "不接受此会诊" in page and "撤回申请" not in page  # withdrawing is the inviting side's
    url = f"/physician/consultations/{cid}/decline"
    refused = client.post(url, data={"csrf_token": extract_csrf(page), "reason": ""})
    assert refused.status_code == 422 and "请说明原因（对方机构的医师会看到）。" in refused.get_data(as_text=True)
    assert sent(consult.EV_REJECTED) == []
    resp = client.post(url, data={"csrf_token": extract_csrf(page), "reason": "本科室本周无副主任以上医师排班"})
    assert resp.status_code == 302
    db.session.remove()
    assert db.session.get(Consultation, cid).status == "rejected"
    (msg,) = sent(consult.EV_REJECTED)
    (task,) = resources(msg, "Task")
    assert task["status"] == "rejected" and task["statusReason"]["text"] == "本科室本周无副主任以上医师排班"
    assert audits("consultation.rejected") == 1


def test_a_request_for_a_department_the_agreement_does_not_cover_is_refused(
    client: FlaskClient, world: dict[str, Any]
) -> None:
    _, res = _incoming_request(world, department="endocrinology")
    resp = inbox(client, world["key"], consult.EV_REQUEST, res)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "no_agreement"
    assert count(Consultation) == 0 and count(FederationMessage) == 0


# --- the opinion comes back --------------------------------------------------------------------------


def _physician_key() -> tuple[str, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    from prescriptions.signing import public_jwk

    return pem, public_jwk(private.public_key(), "rx-partner-specialist")


def _opinion_message(task_id: str, opinion: str, signed_opinion: str | None = None) -> list[dict[str, Any]]:
    pem, jwk = _physician_key()
    content = {
        "type": "consultation_opinion",
        "task_id": task_id,
        "opinion": signed_opinion or opinion,
        "recommendations": "低盐饮食，加用氨氯地平",
        "signer": {"name": "孙主任", "title": "主任医师", "department": "cardiology", "license_no": "X"},
        "institution": "乙市第一人民医院",
        "signed_at": "2026-12-02T08:00:00+00:00",
    }
    token = str(
        jose_jws.sign(
            json.dumps(content, ensure_ascii=False).encode(), pem, headers={"kid": jwk["kid"]}, algorithm="ES256"
        )
    )
    ident = [{"system": consult.TASK_SYSTEM, "value": task_id}]
    return [
        {
            "resourceType": "Task",
            "id": str(uuid.uuid4()),
            "identifier": ident,
            "status": "completed",
            "intent": "order",
        },
        {
            "resourceType": "DiagnosticReport",
            "id": str(uuid.uuid4()),
            "extension": [{"url": opinions.SIGNER_JWK_URL, "valueString": json.dumps(jwk)}],
            "identifier": ident,
            "status": "final",
            "code": {"text": "远程会诊意见"},
            "issued": "2026-12-02T08:00:00+00:00",
            "conclusion": opinion,
            "presentedForm": [{"contentType": "application/jose", "data": base64.b64encode(token.encode()).decode()}],
        },
    ]


def test_the_signed_opinion_arrives_and_the_inviting_physician_acknowledges_it(
    client: FlaskClient, world: dict[str, Any]
) -> None:
    give_consent(client, world["patient"]["token"], world["patient_id"])
    created = ask(client, world).get_json()
    cid, task_id = created["id"], created["task_id"]
    headers = f.auth(world["face"])
    resp = client.post(f"{API}/consultations/{cid}/acknowledge", headers=headers)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "no_opinion"

    ident = [{"system": consult.TASK_SYSTEM, "value": task_id}]
    accepted = [
        {
            "resourceType": "Task",
            "id": str(uuid.uuid4()),
            "identifier": ident,
            "status": "accepted",
            "intent": "order",
            "owner": {"display": "孙主任（主任医师）"},
        }
    ]
    assert inbox(client, world["key"], consult.EV_ACCEPTED, accepted).status_code == 202
    detail = client.get(f"{API}/consultations/{cid}", headers=headers).get_json()
    assert detail["status"] == "accepted" and (detail["specialist"], detail["specialist_title"]) == (
        "孙主任",
        "主任医师",
    )

    # a report whose text is not what the specialist signed: 401, nothing stored
    forged = _opinion_message(task_id, "无需处理", signed_opinion="考虑高血压2级")
    resp = inbox(client, world["key"], consult.EV_OPINION, forged)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "bad_signature"
    assert count(ConsultationOpinion) == 0

    assert (
        inbox(client, world["key"], consult.EV_OPINION, _opinion_message(task_id, "考虑高血压2级")).status_code == 202
    )
    detail = client.get(f"{API}/consultations/{cid}", headers=headers).get_json()
    assert detail["status"] == "completed" and detail["opinion"]["opinion"] == "考虑高血压2级"
    assert detail["opinion"]["recommendations"] == "低盐饮食，加用氨氯地平"
    assert opinions.verify_opinion(detail["opinion"]["jws"], detail["opinion"]["signer_jwk"])["task_id"] == task_id
    assert detail["completed_at"].startswith("2026-12-02T08:00:00")  # the signing time, the same on both sides

    other = f.staff(Role.PHYSICIAN, department="cardiology")
    assert refusal(
        client.post(f"{API}/consultations/{cid}/acknowledge", headers=f.auth(f.token(client, other.username)))
    ) == (404, "not_found")
    resp = client.post(f"{API}/consultations/{cid}/acknowledge", headers=headers)
    assert resp.status_code == 200 and resp.get_json()["status"] == "completed"
    assert audits("consultation.acknowledged") == 1 and audits("consultation.opinion_received") == 1
    mine = InboxNotification.account_id == world["doctor"].id
    assert count(InboxNotification, mine, InboxNotification.kind == "consultation_answered") == 2  # accepted, answered


# --- settlements --------------------------------------------------------------------------------------


def _statement(month: str, lines: list[tuple[str, bool, int]]) -> list[dict[str, Any]]:
    def money(fen: int) -> dict[str, Any]:
        return {"value": fen / 100, "currency": "CNY"}

    return [
        {
            "resourceType": "Invoice",
            "id": str(uuid.uuid4()),
            "identifier": [{"system": settlements.SETTLEMENT_SYSTEM, "value": month}],
            "status": "issued",
            "lineItem": [
                {
                    "sequence": i + 1,
                    "chargeItemCodeableConcept": {
                        "coding": [
                            {"system": consult.TASK_SYSTEM, "code": task},
                            {"system": settlements.INVITING_SYSTEM, "code": "sender" if sender_invited else "receiver"},
                        ]
                    },
                    "priceComponent": [
                        {"type": "base", "amount": money(fee)},
                        {"type": "informational", "code": {"text": "inviting"}, "amount": money(fee * 20 // 100)},
                        {"type": "informational", "code": {"text": "invited"}, "amount": money(fee - fee * 20 // 100)},
                    ],
                }
                for i, (task, sender_invited, fee) in enumerate(lines)
            ],
        }
    ]


def test_the_monthly_settlement_is_reconciled_with_the_partners_statement(
    client: FlaskClient, world: dict[str, Any]
) -> None:
    give_consent(client, world["patient"]["token"], world["patient_id"])
    created = ask(client, world).get_json()
    task_id = created["task_id"]
    assert inbox(client, world["key"], consult.EV_OPINION, _opinion_message(task_id, "意见")).status_code == 202
    month = "2026-12"  # the opinion was signed 2026-12-02
    admin = admin_headers(client)
    url = f"{API}/admin/settlements?partner_id={world['partner_id']}&month={month}"
    s = client.get(url, headers=admin).get_json()
    assert (s["count"], s["total_fen"], s["inviting_share_fen"], s["invited_share_fen"]) == (1, 20000, 4000, 16000)
    assert s["owed_to_partner_fen"] == 16000 and s["owed_by_partner_fen"] == 0
    assert s["matches_partner"] is None and s["difference"] is None

    # the partner's statement agrees (it was the invited side: "receiver" invited)
    resp = inbox(client, world["key"], consult.EV_STATEMENT, _statement(month, [(task_id, False, 20000)]))
    assert resp.status_code == 202
    s = client.get(url, headers=admin).get_json()
    assert s["matches_partner"] is True and s["difference"]["total_fen"] == 0
    assert s["partner_statement"]["count"] == 1
    (answer,) = sent(consult.EV_STATEMENT)  # we answered with ours
    assert resources(answer, "Invoice")[0]["lineItem"][0]["chargeItemCodeableConcept"]["coding"][0]["code"] == task_id

    # a later statement that claims a fee of 250 yuan and one consultation more
    other = str(uuid.uuid4())
    resp = inbox(
        client, world["key"], consult.EV_STATEMENT, _statement(month, [(task_id, False, 25000), (other, False, 20000)])
    )
    assert resp.status_code == 202
    s = client.get(url, headers=admin).get_json()
    assert s["matches_partner"] is False
    d = s["difference"]
    assert (d["count"], d["total_fen"], d["only_partner"], d["differing"]) == (-1, -25000, [other], [task_id])
    assert len(sent(consult.EV_STATEMENT)) == 1  # ours has not changed: not sent again
    assert count(SettlementStatement, SettlementStatement.direction == "in") == 2

    assert refusal(
        client.get(f"{API}/admin/settlements?partner_id={world['partner_id']}&month=2026-13", headers=admin)
    ) == (422, "invalid")
    doctor = f.auth(f.token(client, world["doctor"].username))
    assert refusal(client.get(url, headers=doctor)) == (403, "forbidden")


def test_an_administrator_sends_the_statement_signed(client: FlaskClient, world: dict[str, Any]) -> None:
    admin = admin_headers(client)
    resp = client.post(
        f"{API}/admin/settlements/statements",
        json={"partner_id": world["partner_id"], "month": "2026-11"},
        headers=admin,
    )
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["sent_statement"]["count"] == 0 and resp.get_json()["matches_partner"] is None
    (bundle,) = sent(consult.EV_STATEMENT)
    assert resources(bundle, "Invoice")[0]["identifier"][0]["value"] == "2026-11"
    assert audits("settlement.statement_sent") == 1


def test_consultation_records_have_no_delete_path(app: Flask) -> None:
    deletes = [
        r.rule
        for r in app.url_map.iter_rules()
        if "consultation" in r.rule or "settlement" in r.rule
        if r.methods and ({"DELETE", "PUT", "PATCH"} & set(r.methods))
    ]
    assert deletes == []


def test_a_request_the_outbox_gives_up_on_fails(client: FlaskClient, world: dict[str, Any]) -> None:
    from clinic.core.audit import Actor, acting_as
    from clinic.core.db import unit_of_work

    give_consent(client, world["patient"]["token"], world["patient_id"])
    cid = ask(client, world).get_json()["id"]
    db.session.remove()
    message = db.session.scalars(select(FederationMessage).where(FederationMessage.direction == "out")).one()
    payload = {"message": str(message.id)}
    headers = f.auth(world["face"])
    with acting_as(Actor(None, "job")), unit_of_work():
        federation._delivery_failed(payload, "partner unreachable", False)  # another try follows
    assert client.get(f"{API}/consultations/{cid}", headers=headers).get_json()["status"] == "requested"
    with acting_as(Actor(None, "job")), unit_of_work():
        federation._delivery_failed(payload, "partner unreachable", True)  # the outbox gives up
    assert client.get(f"{API}/consultations/{cid}", headers=headers).get_json()["status"] == "failed"
    assert audits("consultation.failed") == 1
