"""The return-visit pages over the test client: refusals with their status, who may see
what, the face gate on physicians' acts (the full journey in a browser is
tests/browser/clinic/visits/test_visit_journey.py)."""

from __future__ import annotations

import io
import re
import time
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.payments.services import StartedPayment
from clinic.visits import lifecycle
from clinic.visits.models import ConsentAcceptance, Diagnosis, DiagnosisStatus, Visit, VisitStatus
from identity import services as identity_services
from identity.models import Account, Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.races import interleave


def login(client: FlaskClient, username: str) -> None:
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"username": username, "password": f.PASSWORD, "csrf_token": csrf})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1500:]


def face_checked(client: FlaskClient, at: float | None = None) -> None:
    """The face check itself is tested with real photos elsewhere; here its session mark."""
    with client.session_transaction() as sess:
        sess["face_at"] = int(at if at is not None else time.time())


def csrf_of(client: FlaskClient, path: str) -> str:
    return extract_csrf(client.get(path).get_data(as_text=True))


def upload(client: FlaskClient, patient_id: str, icd10: str = "I10", **extra: object) -> tuple[int, str]:
    data = {
        "csrf_token": csrf_of(client, "/diagnoses"),
        "patient_id": patient_id,
        "icd10": icd10,
        "institution": "北京协和医院",
        "diagnosed_on": "2024-03-01",
        "document_kind": "outpatient_record",
        "document": (io.BytesIO(cf.png()), "record.png"),
    }
    data.update(extra)
    resp = client.post("/diagnoses", data=data, content_type="multipart/form-data")
    return resp.status_code, resp.get_data(as_text=True)


def test_patient_uploads_a_proof_and_bad_input_is_refused_with_its_status(ctx: Flask) -> None:
    cf.catalog()
    client = ctx.test_client()
    reg = f.patient()
    login(client, reg.account.username)
    page = client.get("/diagnoses").get_data(as_text=True)
    assert (
        'list="condition-list"' in page
        and 'value="原发性高血压"' in page
        and 'value="I10"' not in page
        and 'capture="environment"' in page
    )

    status, html = upload(client, str(reg.patient.id), "XYZ")
    assert status == 422 and "flash error" in html
    status, html = upload(client, str(reg.patient.id), icd10="I10", diagnosed_on=date(2999, 1, 1).isoformat())
    assert status == 422
    status, _ = upload(client, str(reg.patient.id), document=(io.BytesIO(b"not an image"), "x.png"))
    assert status == 422
    assert db.session.query(Diagnosis).count() == 0

    status, _ = upload(client, str(reg.patient.id), "I10 原发性高血压")
    assert status == 302
    listing = client.get("/diagnoses").get_data(as_text=True)
    assert 'data-status="pending"' in listing
    diag = db.session.query(Diagnosis).one()
    doc = client.get(f"/diagnoses/{diag.id}/document")
    assert doc.status_code == 200 and doc.mimetype == "image/png" and doc.data == cf.png()
    assert "no-store" in doc.headers["Cache-Control"]

    # another account never sees it, and no form goes through without its CSRF token
    other = f.patient(name="李四")
    other_client = ctx.test_client()
    login(other_client, other.account.username)
    assert refusal(other_client.get(f"/diagnoses/{diag.id}/document")) == (404, "not_found")
    resp = client.post("/consent", data={"patient_id": str(reg.patient.id), "version": "x"})
    assert refusal(resp) == (400, "bad_request")


def test_request_sends_to_consent_first_then_the_room_and_its_live_feed(ctx: Flask) -> None:
    cf.catalog()
    client = ctx.test_client()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient()
    diag = cf.diagnosis(reg.patient.id, reg.account, "I10", confirm_by=doctor)
    login(client, reg.account.username)
    form = client.get("/visits/new").get_data(as_text=True)
    assert str(diag.id) in form and "consent" in form
    csrf = extract_csrf(form)
    resp = client.post("/visits/new", data={"csrf_token": csrf, "diagnosis_id": str(diag.id)})
    assert resp.status_code == 302 and "/consent?next=" in resp.headers["Location"]
    consent_page = client.get(resp.headers["Location"]).get_data(as_text=True)
    version = re.search(r'name="version" value="([^"]+)"', consent_page)
    assert version
    resp = client.post(
        resp.headers["Location"].replace("/consent", "/consent", 1),
        data={"csrf_token": csrf, "patient_id": str(reg.patient.id), "version": "1999-01-01"},
    )
    assert resp.status_code == 409  # a stale version is refused and shown
    resp = client.post(
        "/consent?next=/visits/new", data={"csrf_token": csrf, "patient_id": str(reg.patient.id), "version": version[1]}
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/visits/new"

    resp = client.post("/visits/new", data={"csrf_token": csrf, "diagnosis_id": str(diag.id), "complaint": "BP 135/85"})
    assert resp.status_code == 302  # payments are off: no payment step
    visit = db.session.query(Visit).one()
    assert visit.status == VisitStatus.WAITING and visit.department == "cardiology"
    assert resp.headers["Location"] == f"/visits/{visit.id}"
    assert client.get(f"/visits/{visit.id}/pay").status_code == 302

    resp = client.post(f"/visits/{visit.id}/messages", data={"csrf_token": csrf, "text": "你好"})
    assert resp.status_code == 302
    live = client.get(f"/visits/{visit.id}/live").get_json()
    assert live["status"] == "waiting" and live["count"] == 1 and "你好" in live["html"]
    resp = client.post(f"/visits/{visit.id}/messages", data={"csrf_token": csrf, "text": ""})
    assert resp.status_code == 422  # neither text nor image


def test_consent_for_a_person_not_on_the_account_or_a_malformed_id_is_404_and_records_nothing(ctx: Flask) -> None:
    client = ctx.test_client()
    reg = f.patient()
    other = f.patient(name="李四")
    login(client, reg.account.username)
    page = client.get("/consent").get_data(as_text=True)
    csrf = extract_csrf(page)
    version = re.search(r'name="version" value="([^"]+)"', page)
    assert version
    for patient_id in (str(other.patient.id), "not-a-uuid"):
        resp = client.post("/consent", data={"csrf_token": csrf, "patient_id": patient_id, "version": version[1]})
        assert resp.status_code == 404 and "未找到。" in resp.get_data(as_text=True)
    assert db.session.query(ConsentAcceptance).count() == 0


def test_the_request_form_groups_the_confirmed_diagnoses_by_person(ctx: Flask) -> None:
    cf.catalog()
    client = ctx.test_client()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient(name="王芳")
    with acting_as(Actor(str(reg.account.id), "patient")), unit_of_work():
        account = db.session.get(Account, reg.account.id)
        assert account is not None
        child = identity_services.add_family_member(account, "王小明", f.id_number(date(2019, 6, 1)), "child")
        child_id = child.id
    own = cf.diagnosis(reg.patient.id, reg.account, "I10", confirm_by=doctor)
    kid = cf.diagnosis(child_id, reg.account, "J45", confirm_by=doctor)
    later = cf.diagnosis(reg.patient.id, reg.account, "E11", confirm_by=doctor)
    cf.diagnosis(reg.patient.id, reg.account, "M10")  # not confirmed: not offered
    login(client, reg.account.username)
    page = client.get("/visits/new").get_data(as_text=True)
    groups = re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', page, re.S)
    assert [name for name, _ in groups] == ["王芳", "王小明"]  # one group per person, in order
    assert sorted(re.findall(r'value="([^"]+)"', groups[0][1])) == sorted([str(own.id), str(later.id)])
    assert re.findall(r'value="([^"]+)"', groups[1][1]) == [str(kid.id)]


def test_physician_acts_need_a_fresh_face_check_and_stale_ones_go_to_the_face_page(ctx: Flask) -> None:
    cf.catalog()
    client = ctx.test_client()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient()
    pending = cf.diagnosis(reg.patient.id, reg.account, "I10")
    login(client, doctor.username)
    resp = client.get("/physician/proofs")
    assert resp.status_code == 302 and "/face?next=/physician/proofs" in resp.headers["Location"]

    face_checked(client, time.time() - 3600)  # checked at login, but an hour ago
    queue = client.get("/physician/proofs").get_data(as_text=True)
    assert str(pending.id) in queue
    csrf = extract_csrf(client.get(f"/physician/proofs/{pending.id}").get_data(as_text=True))
    resp = client.post(f"/physician/proofs/{pending.id}/confirm", data={"csrf_token": csrf})
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/face?next=") and str(pending.id) in resp.headers["Location"]
    assert db.session.get(Diagnosis, pending.id).status == DiagnosisStatus.PENDING

    face_checked(client)
    resp = client.post(f"/physician/proofs/{pending.id}/confirm", data={"csrf_token": csrf})
    assert resp.status_code == 302 and resp.headers["Location"] == "/physician/proofs"
    db.session.expire_all()
    assert db.session.get(Diagnosis, pending.id).status == DiagnosisStatus.CONFIRMED
    resp = client.post(f"/physician/proofs/{pending.id}/confirm", data={"csrf_token": csrf})
    assert resp.status_code == 409  # already reviewed: shown, not a 500

    # a proof outside the catalog is declined with a reason the patient reads
    odd = cf.diagnosis(reg.patient.id, reg.account, "S52.5")
    resp = client.post(f"/physician/proofs/{odd.id}/confirm", data={"csrf_token": csrf})
    assert resp.status_code == 422
    resp = client.post(f"/physician/proofs/{odd.id}/reject", data={"csrf_token": csrf, "reason": "骨折需门诊复查"})
    assert resp.status_code == 302
    patient = ctx.test_client()
    login(patient, reg.account.username)
    assert "骨折需门诊复查" in patient.get("/diagnoses").get_data(as_text=True)

    # a patient's pages are not a physician's, and the reverse
    assert refusal(patient.get("/physician/proofs")) == (403, "forbidden")
    assert refusal(client.get("/diagnoses")) == (403, "forbidden")


def test_physician_accepts_replies_and_refers_the_patient_sees_the_advice(ctx: Flask) -> None:
    cf.catalog()
    client = ctx.test_client()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    api = ctx.test_client()
    p = cf.open_visit(api, doctor)
    visit_id = p["visit_id"]
    login(client, doctor.username)
    face_checked(client)
    assert visit_id in client.get("/physician/visits").get_data(as_text=True)
    csrf = csrf_of(client, f"/visits/{visit_id}")
    resp = client.post(f"/physician/visits/{visit_id}/complete", data={"csrf_token": csrf, "note": "ok"})
    assert resp.status_code == 403  # not theirs yet: refused on the page with its status, saying why
    assert "只有本次复诊的医师可以执行此操作。" in resp.get_data(as_text=True)
    assert client.post(f"/physician/visits/{visit_id}/accept", data={"csrf_token": csrf}).status_code == 302
    image = {"csrf_token": csrf, "text": "", "image": (io.BytesIO(cf.png()), "p.png")}
    resp = client.post(f"/visits/{visit_id}/messages", data=image, content_type="multipart/form-data")
    assert resp.status_code == 302
    room = client.get(f"/visits/{visit_id}").get_data(as_text=True)
    src = re.search(r'<img class="msg-image" src="([^"]+)"', room)
    assert src and client.get(src[1]).data == cf.png()
    resp = client.post(f"/physician/visits/{visit_id}/terminate", data={"csrf_token": csrf, "reason": "x"})
    assert resp.status_code == 422  # both fields are needed, each says what is wrong with it
    text = resp.get_data(as_text=True)
    assert 'class="field-error">字段长度必须介于 2 到 2000 个字符之间。' in text  # the reason "x"
    assert 'class="field-error">该字段是必填字段。' in text  # the referral advice
    resp = client.post(
        f"/physician/visits/{visit_id}/terminate",
        data={"csrf_token": csrf, "reason": "胸痛加重", "referral_advice": "今天到心内科门诊就诊，带上近期心电图"},
    )
    assert resp.status_code == 302

    patient = ctx.test_client()
    login(patient, p["reg"].account.username)
    room = patient.get(f"/visits/{visit_id}").get_data(as_text=True)
    assert 'id="referral"' in room and "今天到心内科门诊就诊" in room and 'id="send"' not in room
    assert patient.get(src[1]).status_code == 200
    outsider = ctx.test_client()
    login(outsider, f.patient(name="王五").account.username)
    assert refusal(outsider.get(f"/visits/{visit_id}")) == (404, "not_found")
    assert refusal(outsider.get(src[1])) == (404, "not_found")


def test_a_physician_who_loses_the_race_for_a_visit_gets_a_conflict_page(
    ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    cf.catalog()
    first, second = (f.staff(Role.PHYSICIAN, department="cardiology") for _ in range(2))
    visit_id = cf.open_visit(ctx.test_client(), first)["visit_id"]
    page = ctx.test_client()
    login(page, first.username)
    face_checked(page)
    csrf = csrf_of(page, "/physician/visits")
    other, second_face = ctx.test_client(), cf.face_token(second)
    taken = interleave(
        monkeypatch,
        lifecycle,
        "_load_visit",
        lambda: other.post(f"/api/v1/visits/{visit_id}/accept", headers=f.auth(second_face)),
    )

    resp = page.post(f"/physician/visits/{visit_id}/accept", data={"csrf_token": csrf})

    assert taken[0].status_code == 200
    html = resp.get_data(as_text=True)
    assert resp.status_code == 409 and 'data-code="conflict"' in html
    assert "其他人同时修改了这条记录，您的操作未保存。请刷新后重试。" in html
    # The "you have taken this visit" note the view flashed before the commit failed is gone.
    assert "您已接诊" not in html and "您已接诊" not in page.get("/physician/visits").get_data(as_text=True)


class FakePayments:
    """The payments port as the visit pages meet it (Stripe itself is tested with localstripe)."""

    def __init__(self) -> None:
        self.refunds: list[str] = []

    def start(self, purpose: str, subject_id: Any, amount_fen: int, description: str) -> StartedPayment:
        return StartedPayment(
            payment_intent_id="pi_123", client_secret="pi_123_secret_abc", amount_fen=amount_fen, currency="cny"
        )

    def refund(self, purpose: str, subject_id: Any, reason: str) -> None:
        self.refunds.append(str(subject_id))


def test_with_payments_on_the_request_goes_to_a_pay_page_in_yuan(ctx: Flask, backend: dict[str, Any]) -> None:
    from clinic.app import create_app
    from tests.conftest import make_config

    paying = create_app(make_config(backend, PAYMENTS="off", STRIPE_PUBLISHABLE_KEY="pk_test_123"))
    port = FakePayments()
    paying.extensions["payments"] = port
    paying.config.update(PAYMENTS="stripe", CONSULTATION_FEE_FEN=2550)
    cf.catalog()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient()
    diag = cf.diagnosis(reg.patient.id, reg.account, "I10", confirm_by=doctor)
    api = FlaskClient(paying)
    cf.consent(api, f.token(api, reg.account.username), reg.patient.id)
    client = FlaskClient(paying)
    login(client, reg.account.username)
    csrf = csrf_of(client, "/visits/new")
    resp = client.post("/visits/new", data={"csrf_token": csrf, "diagnosis_id": str(diag.id)})
    visit = db.session.query(Visit).one()
    assert visit.status == VisitStatus.AWAITING_PAYMENT
    assert resp.status_code == 302 and resp.headers["Location"] == f"/visits/{visit.id}/pay"
    pay = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "¥25.50" in pay and "pi_123_secret_abc" in pay and "https://js.stripe.com/v3/" in pay
    assert "pk_test_123" in pay
    assert 'id="pay-link"' in client.get(f"/visits/{visit.id}").get_data(as_text=True)
    resp = client.post(f"/visits/{visit.id}/cancel", data={"csrf_token": csrf})
    assert resp.status_code == 302 and port.refunds == [str(visit.id)]
    db.session.expire_all()
    assert db.session.get(Visit, visit.id).status == VisitStatus.CANCELLED
    assert client.get(f"/visits/{visit.id}/pay").status_code == 302  # nothing left to pay
