"""The remote-consultation pages (issue 19 item 7): the patient's consent, the physician's
request form, list and consultation page, and the administrator's settlements, driven
through the real forms (CSRF on) in Chinese."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.db import db
from clinic.telemedicine import envelope, partners
from clinic.telemedicine.models import Consultation, ConsultationConsent, SettlementStatement
from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f

PARTNER_URL = "http://127.0.0.1:9"


def _log_in(client: FlaskClient, username: str) -> None:
    client.get("/logout")
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": username, "password": f.PASSWORD, "csrf_token": csrf})


def _partner(client: FlaskClient) -> str:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = envelope.institution_key(pem.decode())
    today = partners.today()
    admin = f.auth(f.token(client, f.staff(Role.ADMIN, username="adm-pages").username))
    resp = client.post(
        "/api/v1/admin/partner-institutions",
        json={
            "name": "吉林大学第一医院",
            "license_no": "PDY22010001",
            "level": "三级",
            "base_url": PARTNER_URL,
            "public_jwk": dict(key.public_jwk),
            "services": ["consultation"],
            "departments": [],
            "fee_fen": 20000,
            "fee_split": {"inviting": 20, "invited": 80},
            "valid_from": (today - timedelta(days=1)).isoformat(),
            "valid_until": (today + timedelta(days=300)).isoformat(),
        },
        headers=admin,
    )
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def _count(model: Any) -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def test_consent_request_and_settlement_pages(client: FlaskClient) -> None:
    cf.catalog()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology", username="dr-pages")
    p = cf.open_visit(client, doctor)
    assert (
        client.post(f"/api/v1/visits/{p['visit_id']}/accept", headers=f.auth(cf.face_token(doctor))).status_code == 200
    )
    partner_id = _partner(client)
    patient = p["reg"]

    # the patient reads the consent in Chinese and accepts it for the person on the account
    _log_in(client, patient.account.username)
    page = client.get("/me/consultation-consent", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "远程会诊知情同意书" in page and "承担诊疗责任" in page
    version = re.search(r'name="version" value="([^"]+)"', page)
    assert version is not None
    resp = client.post(
        "/me/consultation-consent",
        data={"patient_id": str(patient.patient.id), "version": version.group(1), "csrf_token": extract_csrf(page)},
    )
    assert resp.status_code == 302 and _count(ConsultationConsent) == 1
    assert "已同意" in client.get("/me/consultation-consent").get_data(as_text=True)

    # the physician requests a consultation from the form (the face check done at login)
    _log_in(client, doctor.username)
    with client.session_transaction() as sess:
        sess["face_at"] = int(time.time())
    form = client.get(f"/physician/consultations/new?patient_id={patient.patient.id}&visit_id={p['visit_id']}")
    html = form.get_data(as_text=True)
    assert form.status_code == 200 and "吉林大学第一医院" in html and "申请远程会诊" in html
    resp = client.post(
        f"/physician/consultations/new?visit_id={p['visit_id']}",
        data={
            "csrf_token": extract_csrf(html),
            "patient_id": str(patient.patient.id),
            "institution_id": partner_id,
            "department": "cardiology",
            "urgency": "urgent",
            "question": "血压控制不佳，是否调整用药？",
            "summary": "高血压7年。",
            "present": [str(doctor.id)],
        },
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    db.session.remove()
    (c,) = db.session.scalars(select(Consultation)).all()
    assert c.visit_id is not None and str(c.visit_id) == p["visit_id"] and c.urgency == "urgent"
    detail = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "血压控制不佳" in detail and "待接受" in detail and "紧急" in detail
    listing = client.get("/physician/consultations").get_data(as_text=True)
    assert "我发起的会诊" in listing and "吉林大学第一医院" in listing

    # the administrator's settlements: no statement from the partner yet; ours is sent signed
    _log_in(client, "adm-pages")
    page = client.get("/admin/settlements").get_data(as_text=True)
    assert "与合作机构的会诊费结算" in page and "尚未收到对方结算单" in page
    resp = client.post(
        "/admin/settlements",
        data={"csrf_token": extract_csrf(page), "partner_id": partner_id, "month": partners.today().strftime("%Y-%m")},
    )
    assert resp.status_code == 302 and _count(SettlementStatement) == 1
    assert "本方结算单已于" in client.get(resp.headers["Location"]).get_data(as_text=True)

    # the requesting physician withdraws the request from its page, saying why
    _log_in(client, doctor.username)
    with client.session_transaction() as sess:
        sess["face_at"] = int(time.time())
    detail = client.get(f"/physician/consultations/{c.id}").get_data(as_text=True)
    assert "撤回申请" in detail and 'id="decline-form"' not in detail  # declining is the invited side's
    url = f"/physician/consultations/{c.id}/cancel"
    resp = client.post(url, data={"csrf_token": extract_csrf(detail), "reason": " "})
    assert resp.status_code == 422 and "请说明原因" in resp.get_data(as_text=True)
    resp = client.post(url, data={"csrf_token": extract_csrf(detail), "reason": "患者已到院面诊"})
    assert resp.status_code == 302
    db.session.remove()
    assert db.session.get(Consultation, c.id).status == "cancelled"
    after = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "撤回申请" not in after and "已撤销" in after and "会诊申请已撤回" in after
