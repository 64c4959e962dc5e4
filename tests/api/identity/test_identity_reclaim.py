"""Reclaiming an ID number registered by someone else (issue 21 item 11): the owner asks with a
new phone confirmed by SMS code, a staff member checks and decides, every step audited; the
answers never tell whether (or by whom) the ID number is registered."""

from __future__ import annotations

import io
import logging
import re
import uuid
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select

from clinic.core import limits
from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.notifications.models import InboxNotification, SmsMessage
from identity.models import Account, IdentityReclaim, Patient, ReclaimStatus, Role
from tests.support import factories as f
from tests.support import rx_factories as rx
from tests.support.answers import refusal

CLAIMANT_PASSWORD = "MyOwn2026pass"
ACCEPTED = "已受理，工作人员将核实后短信通知您"


@pytest.fixture
def sms(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="clinic.sms")
    return caplog


def last_code(caplog: pytest.LogCaptureFixture) -> str:
    codes = re.findall(r"verification code (\d{6})", caplog.text)
    assert codes, "no code was sent"
    return codes[-1]


def start(client: FlaskClient, id_number: str, phone: str, name: str = "李真", **extra: Any) -> Any:
    body = {"name": name, "id_number": id_number, "phone": phone, "password": CLAIMANT_PASSWORD}
    body.update(extra)
    return client.post("/api/v1/patients/reclaims", json=body)


def confirm(client: FlaskClient, reclaim_id: str, code: str) -> Any:
    return client.post(f"/api/v1/patients/reclaims/{reclaim_id}/verify-phone", json={"code": code})


def actions(subject_id: object) -> list[str]:
    rows = db.session.scalars(
        select(AuditEntry).where(AuditEntry.subject_id == str(subject_id)).order_by(AuditEntry.seq)
    )
    return [r.action for r in rows]


def entry(action: str, subject_id: object) -> AuditEntry:
    row = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == action, AuditEntry.subject_id == str(subject_id))
    ).first()
    assert row is not None, f"no {action} entry for {subject_id}"
    return row


def sms_to(phone: str, reclaim_id: str) -> list[str]:
    rows = db.session.scalars(select(SmsMessage).where(SmsMessage.subject_id == uuid.UUID(reclaim_id)))
    return [m.body for m in rows if m.to_phone == phone]


@pytest.fixture
def admin(client: FlaskClient) -> tuple[Account, dict[str, str]]:
    account = f.staff(Role.ADMIN)
    return account, f.auth(f.token(client, account.username))


def submitted_claim(client: FlaskClient, sms: pytest.LogCaptureFixture, id_number: str, **kw: Any) -> tuple[str, str]:
    phone = f.phone()
    resp = start(client, id_number, phone, **kw)
    assert resp.status_code == 202, resp.get_json()
    reclaim_id = resp.get_json()["reclaim_id"]
    resp = confirm(client, reclaim_id, last_code(sms))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["message"] == ACCEPTED
    return reclaim_id, phone


def test_the_owner_takes_the_id_number_back_and_the_squatter_is_logged_out(
    client: FlaskClient, sms: pytest.LogCaptureFixture, admin: tuple[Account, dict[str, str]]
) -> None:
    admin_account, admin_auth = admin
    squat = f.patient(name="冒名者", born=date(1975, 3, 8))
    patient_id = squat.patient.id
    victim_number = db.session.get(Patient, patient_id).id_number
    squatter_token = f.token(client, squat.account.username)
    assert client.get("/api/v1/me", headers=f.auth(squatter_token)).status_code == 200

    reclaim_id, phone = submitted_claim(client, sms, victim_number)

    # the staff check sees the request, who holds the number, masked numbers
    listed = client.get("/api/v1/admin/reclaims", headers=admin_auth).get_json()["items"]
    assert [r["id"] for r in listed] == [reclaim_id]
    item = listed[0]
    assert item["id_number_masked"] == victim_number[:3] + "*" * 11 + victim_number[-4:]
    assert item["holder"]["account_id"] == str(squat.account.id)
    assert item["phone_in_use"] is False

    resp = client.post(f"/api/v1/admin/reclaims/{reclaim_id}/approve", headers=admin_auth)
    assert resp.status_code == 200, resp.get_json()
    out = resp.get_json()
    assert out["status"] == "approved" and out["old_account_id"] == str(squat.account.id)

    db.session.expire_all()
    # the person (and every record hanging on them) is now on the claimant's new account
    moved = db.session.get(Patient, patient_id)
    assert moved is not None and str(moved.account_id) == out["new_account_id"]
    assert moved.name == "李真"
    new_account = db.session.get(Account, moved.account_id)
    assert new_account is not None and new_account.username == "+86" + phone
    assert new_account.phone_verified_at is not None
    old = db.session.get(Account, squat.account.id)
    assert old is not None and old.patients == []
    # every session of the old account ended; the claimant logs in with the new phone
    assert refusal(client.get("/api/v1/me", headers=f.auth(squatter_token))) == (401, "unauthenticated")
    mine = f.token(client, phone, CLAIMANT_PASSWORD)
    me = client.get("/api/v1/me", headers=f.auth(mine)).get_json()
    assert [p["id"] for p in me["patients"]] == [str(patient_id)] and me["phone_verified"] is True

    # audited, naming who acted
    assert actions(reclaim_id) == [
        "identity.reclaim_requested",
        "phone.code_sent",
        "identity.reclaim_code_confirmed",
        "identity.reclaim_approved",
    ]
    assert entry("identity.reclaim_approved", reclaim_id).actor_id == str(admin_account.id)
    assert entry("identity.reclaim_requested", reclaim_id).actor_role == "anonymous"
    moved_entry = entry("patient.account_changed", patient_id)
    assert moved_entry.detail["from_account_id"] == str(squat.account.id)
    assert moved_entry.actor_id == str(admin_account.id)
    assert entry("auth.sessions_ended", squat.account.id).detail == {"reason": "identity_reclaimed"}

    # the claimant is told (app and SMS), and so is the account that lost the identity
    kinds = {
        (n.kind, str(n.account_id))
        for n in db.session.scalars(select(InboxNotification).where(InboxNotification.subject_id == reclaim_id))
    }
    assert kinds == {("reclaim_approved", out["new_account_id"]), ("reclaim_lost", str(squat.account.id))}
    texts = sms_to("+86" + phone, reclaim_id)
    assert len(texts) == 1 and "已核实通过" in texts[0] and victim_number not in texts[0]

    # a decided request cannot be decided again
    again = client.post(f"/api/v1/admin/reclaims/{reclaim_id}/reject", headers=admin_auth, json={"reason": "重复"})
    assert refusal(again) == (409, "conflict")


def test_rejection_tells_the_claimant_and_changes_nothing(
    client: FlaskClient, sms: pytest.LogCaptureFixture, admin: tuple[Account, dict[str, str]]
) -> None:
    admin_account, admin_auth = admin
    holder = f.patient(name="真本人")
    number = db.session.get(Patient, holder.patient.id).id_number
    holder_token = f.token(client, holder.account.username)
    reclaim_id, phone = submitted_claim(client, sms, number, name="冒领者")

    blank = client.post(f"/api/v1/admin/reclaims/{reclaim_id}/reject", headers=admin_auth, json={"reason": " "})
    assert refusal(blank) == (422, "invalid")
    resp = client.post(
        f"/api/v1/admin/reclaims/{reclaim_id}/reject", headers=admin_auth, json={"reason": "身份证照片与本人不符"}
    )
    assert resp.status_code == 200 and resp.get_json()["status"] == "rejected"

    db.session.expire_all()
    assert db.session.get(Patient, holder.patient.id).account_id == holder.account.id
    assert client.get("/api/v1/me", headers=f.auth(holder_token)).status_code == 200
    assert db.session.scalars(select(Account).where(Account.username == "+86" + phone)).first() is None
    assert entry("identity.reclaim_rejected", reclaim_id).actor_id == str(admin_account.id)
    texts = sms_to("+86" + phone, reclaim_id)
    assert len(texts) == 1 and "身份证照片与本人不符" in texts[0]
    assert client.get("/api/v1/admin/reclaims", headers=admin_auth).get_json()["items"] == []


def test_the_answer_is_the_same_when_the_id_number_is_not_registered(
    client: FlaskClient, sms: pytest.LogCaptureFixture, admin: tuple[Account, dict[str, str]]
) -> None:
    taken = f.patient()
    taken_number = db.session.get(Patient, taken.patient.id).id_number
    free_number = f.id_number(date(1990, 6, 1))

    answers = []
    for number in (taken_number, free_number):
        first = start(client, number, f.phone())
        second = confirm(client, first.get_json()["reclaim_id"], last_code(sms))
        shape = lambda body: {k: v for k, v in body.items() if k != "reclaim_id"}  # noqa: E731
        answers.append((first.status_code, shape(first.get_json()), second.status_code, shape(second.get_json())))
    assert answers[0] == answers[1] == (202, {"status": "code_sent"}, 200, {"status": "submitted", "message": ACCEPTED})

    # the staff see the difference; approving the free number opens an account for it
    _, admin_auth = admin
    items = client.get("/api/v1/admin/reclaims", headers=admin_auth).get_json()["items"]
    free = next(i for i in items if i["holder"] is None)
    resp = client.post(f"/api/v1/admin/reclaims/{free['id']}/approve", headers=admin_auth)
    assert resp.status_code == 200 and resp.get_json()["old_account_id"] is None
    db.session.expire_all()
    created = db.session.get(Patient, uuid.UUID(resp.get_json()["patient_id"]))
    assert created is not None and created.id_number == free_number


def test_a_wrong_code_keeps_the_request_away_from_the_staff(
    client: FlaskClient, sms: pytest.LogCaptureFixture, admin: tuple[Account, dict[str, str]]
) -> None:
    _, admin_auth = admin
    number = db.session.get(Patient, f.patient().patient.id).id_number
    resp = start(client, number, f.phone())
    reclaim_id = resp.get_json()["reclaim_id"]
    right = last_code(sms)
    wrong = "000000" if right != "000000" else "111111"
    bad = confirm(client, reclaim_id, wrong)
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "bad_code"
    assert "identity.reclaim_code_rejected" in actions(reclaim_id)
    assert client.get("/api/v1/admin/reclaims", headers=admin_auth).get_json()["items"] == []
    approve = client.post(f"/api/v1/admin/reclaims/{reclaim_id}/approve", headers=admin_auth)
    assert refusal(approve) == (409, "conflict")  # not confirmed: nothing to decide
    assert confirm(client, reclaim_id, right).status_code == 200
    assert refusal(confirm(client, "not-an-id", right)) == (404, "not_found")


def test_code_checks_and_requests_are_rate_limited(client: FlaskClient, sms: pytest.LogCaptureFixture) -> None:
    number = db.session.get(Patient, f.patient().patient.id).id_number
    reclaim_id = start(client, number, f.phone()).get_json()["reclaim_id"]
    statuses = [confirm(client, reclaim_id, "999999").status_code for _ in range(6)]
    assert statuses[:5] == [422] * 5 and statuses[5] == 429  # CODE_RATE_LIMIT: 5 per 10 minutes

    # three requests a day for one ID number, whoever asks and whether it is registered or not
    for n in (number, f.id_number(date(1991, 2, 3))):
        got = [start(client, n, f.phone()).status_code for _ in range(4)]
        assert got == ([202, 202, 202, 429] if n != number else [202, 202, 429, 429])
    # one phone gets one code a minute, as at registration
    phone = f.phone()
    other = f.id_number(date(1992, 4, 5))
    assert start(client, other, phone).status_code == 202
    refused = start(client, f.id_number(date(1993, 4, 5)), phone)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"


@pytest.fixture
def narrow(ctx: Flask) -> Any:
    saved = ctx.config["RECLAIM_ADDRESS_RATE_LIMIT"]
    ctx.config["RECLAIM_ADDRESS_RATE_LIMIT"] = "2 per hour"
    yield ctx
    ctx.config["RECLAIM_ADDRESS_RATE_LIMIT"] = saved


def test_the_address_limit_counts_only_accepted_requests(client: FlaskClient, narrow: Flask) -> None:
    assert refusal(start(client, "110105194912310021", f.phone())) == (422, "invalid_id_number")  # check digit
    got = [start(client, f.id_number(date(1980 + i, 1, 1)), f.phone()).status_code for i in range(3)]
    assert got == [202, 202, 429]


def test_bad_input_is_a_clear_refusal_and_leaves_nothing(client: FlaskClient) -> None:
    number = f.id_number(date(1985, 5, 5))
    cases = [
        ({"id_number": "110105194912310021"}, 422, "invalid_id_number"),
        ({"phone": "12345"}, 422, "invalid_phone"),
        ({"password": "short"}, 422, "weak_password"),
        ({"name": "   "}, 422, "invalid"),
    ]
    for change, status, code in cases:
        body = {"name": "李真", "id_number": number, "phone": f.phone(), "password": CLAIMANT_PASSWORD, **change}
        resp = client.post("/api/v1/patients/reclaims", json=body)
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (status, code)
    # a photo that is not an image, sent as multipart
    form = {"name": "李真", "id_number": number, "phone": f.phone(), "password": CLAIMANT_PASSWORD}
    resp = client.post(
        "/api/v1/patients/reclaims",
        data={**form, "id_card_photo": (io.BytesIO(b"<html><script>x</script></html>"), "card.jpg")},
        content_type="multipart/form-data",
    )
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (422, "not_an_image")
    assert db.session.scalars(select(IdentityReclaim)).first() is None


def test_the_id_card_photo_is_kept_encrypted_and_shown_to_administrators_only(
    client: FlaskClient, sms: pytest.LogCaptureFixture, admin: tuple[Account, dict[str, str]]
) -> None:
    _, admin_auth = admin
    buf = io.BytesIO()
    Image.new("RGB", (640, 400), (200, 190, 170)).save(buf, "JPEG")
    photo = buf.getvalue()
    number = f.id_number(date(1970, 7, 7))
    form = {"name": "李真", "id_number": number, "phone": f.phone(), "password": CLAIMANT_PASSWORD}
    resp = client.post(
        "/api/v1/patients/reclaims",
        data={**form, "id_card_photo": (io.BytesIO(photo), "card.jpg")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 202, resp.get_json()
    reclaim_id = resp.get_json()["reclaim_id"]
    row = db.session.get(IdentityReclaim, uuid.UUID(reclaim_id))
    assert row is not None and row.status == ReclaimStatus.AWAITING_CODE and row.photo_file
    from clinic.core import storage

    assert storage.load(row.photo_file) != photo  # encrypted at rest
    got = client.get(f"/api/v1/admin/reclaims/{reclaim_id}/photo", headers=admin_auth)
    assert got.status_code == 200 and got.data == photo and got.mimetype == "image/jpeg"
    assert got.headers["Cache-Control"] == "no-store" and got.headers["X-Content-Type-Options"] == "nosniff"
    assert "identity.reclaim_photo_viewed" in actions(reclaim_id)
    patient = f.patient()
    tok = f.token(client, patient.account.username)
    assert refusal(client.get(f"/api/v1/admin/reclaims/{reclaim_id}/photo", headers=f.auth(tok))) == (403, "forbidden")


def test_approval_is_refused_when_the_new_phone_was_registered_meanwhile(
    client: FlaskClient, sms: pytest.LogCaptureFixture, admin: tuple[Account, dict[str, str]]
) -> None:
    _, admin_auth = admin
    number = db.session.get(Patient, f.patient().patient.id).id_number
    reclaim_id, phone = submitted_claim(client, sms, number)
    limits.reset()  # the phone's one-code-a-minute SMS limit: someone registers it later that day
    reg = client.post(
        "/api/v1/patients",
        json={"name": "路人", "id_number": f.id_number(date(1999, 9, 9)), "phone": phone, "password": "Secret123x"},
    )
    assert reg.status_code == 201
    item = client.get(f"/api/v1/admin/reclaims/{reclaim_id}", headers=admin_auth).get_json()
    assert item["phone_in_use"] is True
    resp = client.post(f"/api/v1/admin/reclaims/{reclaim_id}/approve", headers=admin_auth)
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (409, "phone_taken")
    db.session.expire_all()
    assert db.session.get(IdentityReclaim, uuid.UUID(reclaim_id)).status == ReclaimStatus.SUBMITTED


def test_the_reclaim_endpoints_are_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path in (
        "/patients/reclaims",
        "/patients/reclaims/{reclaim_id}/verify-phone",
        "/admin/reclaims",
        "/admin/reclaims/{reclaim_id}/approve",
        "/admin/reclaims/{reclaim_id}/reject",
    ):
        assert any(p.endswith(path) for p in paths), path


def test_the_squatters_visits_and_prescriptions_of_the_person_follow_the_owner(
    client: FlaskClient, sms: pytest.LogCaptureFixture, admin: tuple[Account, dict[str, str]]
) -> None:
    """What the squatter requested for the person (a visit, a prescription) is the person's
    record: after the reclaim the owner reads it and the old account no longer does."""
    _, admin_auth = admin
    v = rx.visit_in_progress(client)
    squat, visit_id = v["reg"], v["visit_id"]
    resp = client.post(
        f"/api/v1/visits/{visit_id}/prescriptions",
        json={"items": [rx.item(v["drugs"]["amlodipine"], days=7)]},
        headers=f.auth(v["face"]),
    )
    assert resp.status_code == 201, resp.get_json()
    rx_id = resp.get_json()["id"]
    victim_number = db.session.get(Patient, squat.patient.id).id_number

    reclaim_id, phone = submitted_claim(client, sms, victim_number)
    out = client.post(f"/api/v1/admin/reclaims/{reclaim_id}/approve", headers=admin_auth).get_json()
    assert entry("patient.account_changed", squat.patient.id).detail["records_moved"] == {
        "prescriptions": 1,
        "visits": 1,
    }

    owner = f.auth(f.token(client, phone, CLAIMANT_PASSWORD))
    assert client.get(f"/api/v1/visits/{visit_id}", headers=owner).status_code == 200
    mine = client.get("/api/v1/prescriptions", headers=owner).get_json()["items"]
    assert [p["id"] for p in mine] == [rx_id]
    assert str(db.session.get(Patient, squat.patient.id).account_id) == out["new_account_id"]

    # the squatter logs in again (its password still works for its own account): nothing of the person
    again = f.auth(f.token(client, squat.account.username))
    assert refusal(client.get(f"/api/v1/visits/{visit_id}", headers=again)) == (404, "not_found")
    assert client.get("/api/v1/prescriptions", headers=again).get_json()["items"] == []
    assert refusal(client.get(f"/api/v1/prescriptions/{rx_id}", headers=again)) == (404, "not_found")
