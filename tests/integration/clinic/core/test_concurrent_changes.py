"""Two people changing the same record at the same moment: one wins, the other is told.

Each test lets request A load its record, then has request B (another thread, its own
session and connection) change that record and commit, then lets A go on from what it
loaded. Without a check, A would write over B's committed change (two physicians would
both "accept" one visit, a prescription would be dispensed twice). With the row version
check A's write matches no row: A answers 409 `conflict`, saves nothing, and B's change
stands. On both databases.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.payments.services import StartedPayment
from clinic.visits import lifecycle, proofs
from clinic.visits.models import Diagnosis, DiagnosisStatus, Visit
from identity import services as identity_services
from identity.models import Account, Patient, Relation, Role
from pharmacy import dispensing
from pharmacy.models import Delivery
from prescriptions import services as rx_services
from prescriptions.models import Prescription, PrescriptionStatus
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.races import interleave
from tests.support.rx_factories import item, prescribed, visit_in_progress


def audit_count(action: str) -> int:
    return int(db.session.scalar(select(func.count()).where(AuditEntry.action == action)) or 0)


CHANGED_MEANWHILE = "其他人同时修改了这条记录，您的操作未保存。请刷新后重试。"  # zh-CN, the default


def assert_conflict(resp: Any) -> None:
    assert resp.status_code == 409, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == {"code": "conflict", "message": CHANGED_MEANWHILE}


def test_two_physicians_accepting_one_visit_at_once(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    cf.catalog()
    first, second = (f.staff(Role.PHYSICIAN, department="cardiology") for _ in range(2))
    second_id = second.id
    v = cf.open_visit(client, first)
    url = f"/api/v1/visits/{v['visit_id']}/accept"
    second_face, first_face = cf.face_token(second), cf.face_token(first)
    other = ctx.test_client()
    overtaken = interleave(monkeypatch, lifecycle, "_load_visit", lambda: other.post(url, headers=f.auth(second_face)))

    resp = client.post(url, headers={**f.auth(first_face), "Accept-Language": "en"})

    assert overtaken[0].status_code == 200, overtaken[0].get_json()
    assert resp.status_code == 409 and resp.get_json()["error"] == {
        "code": "conflict",
        "message": "Someone else changed this record at the same time; nothing was saved. Reload it and try again.",
    }
    db.session.remove()
    visit = db.session.get(Visit, uuid.UUID(v["visit_id"]))
    assert visit is not None and visit.physician_id == second_id and visit.status.value == "in_progress"
    assert audit_count("visit.accepted") == 1
    # The refusal is on the record, like every other refusal.
    refused = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "request.refused")).all()
    assert [e.detail["code"] for e in refused] == ["conflict"]
    # The loser sees the visit is taken: it is no longer in the waiting queue for anyone else.
    again = client.post(url, headers=f.auth(first_face))
    assert again.status_code in (404, 409, 422), again.get_json()


def test_cancel_and_accept_at_once_do_not_both_happen(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    v = cf.open_visit(client, doc)
    other = ctx.test_client()
    cancel = f"/api/v1/visits/{v['visit_id']}/cancel"
    overtaken = interleave(
        monkeypatch,
        lifecycle,
        "_load_visit",
        lambda: other.post(cancel, json={"reason": "不需要了"}, headers=f.auth(v["token"])),
    )

    resp = client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(doc)))

    assert overtaken[0].status_code == 200, overtaken[0].get_json()
    assert_conflict(resp)
    db.session.remove()
    visit = db.session.get(Visit, uuid.UUID(v["visit_id"]))
    assert visit is not None and visit.status.value == "cancelled" and visit.physician_id is None


class RecordingPayments:
    """The payments port, recording what would reach Stripe."""

    def __init__(self) -> None:
        self.refunds: list[uuid.UUID] = []

    def start(self, purpose: str, subject_id: uuid.UUID, amount_fen: int, description: str) -> StartedPayment:
        return StartedPayment(f"pi_{subject_id.hex}", "secret", amount_fen, "cny")

    def refund(self, purpose: str, subject_id: uuid.UUID, reason: str) -> None:
        self.refunds.append(subject_id)


def test_a_cancel_that_loses_to_an_accept_refunds_nothing(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    payments = RecordingPayments()
    monkeypatch.setitem(ctx.extensions, "payments", payments)
    v = cf.open_visit(client, doc)
    visit_id = uuid.UUID(v["visit_id"])
    with acting_as(Actor(None, "payments")), unit_of_work():
        assert lifecycle.mark_visit_paid(visit_id) is not None
    doc_face = cf.face_token(doc)
    other = ctx.test_client()
    overtaken = interleave(
        monkeypatch,
        lifecycle,
        "_load_visit",
        lambda: other.post(f"/api/v1/visits/{visit_id}/accept", headers=f.auth(doc_face)),
    )

    resp = client.post(f"/api/v1/visits/{visit_id}/cancel", json={"reason": "不想等了"}, headers=f.auth(v["token"]))

    assert overtaken[0].status_code == 200, overtaken[0].get_json()
    assert_conflict(resp)
    assert payments.refunds == []  # the paid fee stays paid: the visit goes ahead
    db.session.remove()
    visit = db.session.get(Visit, visit_id)
    assert visit is not None and visit.status.value == "in_progress" and visit.cancel_reason is None


def test_confirm_and_reject_of_one_diagnosis_at_once(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    cf.catalog()
    first, second = (f.staff(Role.PHYSICIAN, department="cardiology") for _ in range(2))
    second_id = second.id
    reg = f.patient()
    diag_id = cf.diagnosis(reg.patient.id, reg.account).id
    other = ctx.test_client()
    second_face = cf.face_token(second)
    overtaken = interleave(
        monkeypatch,
        proofs,
        "_pending_diagnosis",
        lambda: other.post(
            f"/api/v1/diagnoses/{diag_id}/reject", json={"reason": "病历模糊，请重新上传"}, headers=f.auth(second_face)
        ),
    )

    resp = client.post(f"/api/v1/diagnoses/{diag_id}/confirm", headers=f.auth(cf.face_token(first)))

    assert overtaken[0].status_code == 200, overtaken[0].get_json()
    assert_conflict(resp)
    db.session.remove()
    saved = db.session.get(Diagnosis, diag_id)
    assert saved is not None and saved.status == DiagnosisStatus.REJECTED and saved.reviewed_by == second_id
    assert audit_count("diagnosis.confirmed") == 0 and audit_count("diagnosis.rejected") == 1


def test_one_prescription_dispensed_twice_at_once(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = prescribed(client)
    rx = v["rx"]
    pa, pb = f.staff(Role.PHARMACIST), f.staff(Role.PHARMACIST)
    a, b = f.auth(f.token(client, pa.username)), f.auth(f.token(client, pb.username))
    assert client.post("/api/v1/pharmacy/queue/claim", headers=a).status_code == 200
    decided = client.post(f"/api/v1/pharmacy/prescriptions/{rx}/review", json={"decision": "approve"}, headers=a)
    assert decided.status_code == 200, decided.get_json()
    checkout = client.post(
        f"/api/v1/prescriptions/{rx}/checkout", json={"collect_at_pharmacy": True}, headers=f.auth(v["token"])
    )
    assert checkout.status_code == 200 and checkout.get_json()["paid"] is True, checkout.get_json()
    url = f"/api/v1/pharmacy/prescriptions/{rx}/dispense"
    other = ctx.test_client()
    # each made it up and names the other as the checking pharmacist: two valid requests
    overtaken = interleave(
        monkeypatch, dispensing, "_rx", lambda: other.post(url, json={"checked_by": str(pa.id)}, headers=b)
    )

    resp = client.post(url, json={"checked_by": str(pb.id)}, headers=a)

    assert overtaken[0].status_code == 200, overtaken[0].get_json()
    # Dispensing re-reads the prescription with its review (locked on PostgreSQL), so the
    # later request sees it dispensed already and names that rule rather than the race.
    assert resp.status_code == 409, resp.get_json()
    assert resp.get_json()["error"]["code"] in ("illegal_transition", "conflict")
    db.session.remove()
    assert db.session.scalar(select(func.count()).select_from(Delivery)) == 1
    saved = db.session.get(Prescription, uuid.UUID(rx))
    assert saved is not None and saved.status.value == "dispensed"
    assert audit_count("prescription.dispensed") == 1


@pytest.mark.parametrize("second_phone", [False, True], ids=["double-submitted", "same-person-other-phone"])
def test_one_person_registering_twice_at_once(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch, second_phone: bool
) -> None:
    """Registration reads (is this ID number or phone taken?) then writes; the unique
    indexes refuse the slower of two, and it is answered like any taken ID number."""
    number = f.id_number(date(1985, 2, 3))
    phone = f.phone()
    body = {"name": "李雷", "id_number": number, "phone": phone, "password": "Zhang-san-2024"}
    other = ctx.test_client()
    other_body = {**body, "phone": f.phone() if second_phone else phone}
    overtaken = interleave(
        monkeypatch, identity_services, "hash_password", lambda: other.post("/api/v1/patients", json=other_body)
    )

    resp = client.post("/api/v1/patients", json=body, headers={"Accept-Language": "en"})

    assert overtaken[0].status_code == 201, overtaken[0].get_json()
    assert resp.status_code == 409, resp.get_json()
    assert resp.get_json()["error"] == {
        "code": "already_registered",
        "message": "This ID number or phone number is already registered; log in, or recover the account.",
    }
    db.session.remove()
    holders = db.session.scalars(select(Patient).where(Patient.relation == Relation.SELF)).all()
    assert len(holders) == 1 and db.session.scalar(select(func.count()).select_from(Account)) == 1
    assert audit_count("patient.registered") == 1


def test_a_child_on_both_parents_accounts_is_still_allowed(client: FlaskClient) -> None:
    """The real-name index is on account holders only: family members may be on several accounts."""
    child = f.id_number(date(2021, 9, 9))
    for parent in (f.patient("王强"), f.patient("刘丽")):
        tok = f.token(client, parent.account.username)
        resp = client.post(
            "/api/v1/accounts/me/patients",
            json={"name": "王小宝", "id_number": child, "relation": "child"},
            headers=f.auth(tok),
        )
        assert resp.status_code == 201, resp.get_json()


def test_a_prescription_signed_as_the_visit_is_closed_is_refused(
    client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prescription is judged on an open visit; if the physician refers the patient in
    another window at that moment, the prescription must not follow the closed visit."""
    v = visit_in_progress(client)
    other = ctx.test_client()
    overtaken = interleave(
        monkeypatch,
        rx_services,
        "_visit",
        lambda: other.post(
            f"/api/v1/visits/{v['visit_id']}/terminate",
            json={"reason": "胸痛加重", "referral_advice": "今天到心内科门诊就诊"},
            headers=f.auth(v["face"]),
        ),
    )

    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])]},
        headers=f.auth(v["face"]),
    )

    assert overtaken[0].status_code == 200, overtaken[0].get_json()
    assert_conflict(resp)
    db.session.remove()
    assert db.session.scalar(select(func.count()).select_from(Prescription)) == 0
    visit = db.session.get(Visit, uuid.UUID(v["visit_id"]))
    assert visit is not None and visit.status.value == "referred"
    assert audit_count("prescription.signed") == 0


def test_the_expiry_run_leaves_a_prescription_a_pharmacist_acts_on_meanwhile(client: FlaskClient, ctx: Flask) -> None:
    """`flask drugs expire` expires each overdue prescription in its own transaction: the one
    a pharmacist rejects at that very moment stays rejected, the others expire."""
    v = visit_in_progress(client)
    ids = []
    # three different prescriptions: the same one again would be a duplicate submission
    for drug, unit in (("amlodipine", "片"), ("valsartan", "粒"), ("hydrochlorothiazide", "片")):
        resp = client.post(
            f"/api/v1/visits/{v['visit_id']}/prescriptions",
            json={"items": [item(v["drugs"][drug], unit=unit)]},
            headers=f.auth(v["face"]),
        )
        assert resp.status_code == 201, resp.get_json()
        ids.append(uuid.UUID(resp.get_json()["id"]))
    with db.engine.begin() as conn:  # all three past their validity
        conn.execute(update(Prescription).values(expires_at=utcnow() - timedelta(minutes=1)))
    target, fired = ids[1], list[bool]()

    def pharmacist_rejects_it_now(session: Session, *_: Any) -> None:
        if not fired and any(isinstance(o, Prescription) and o.id == target for o in session.dirty):
            fired.append(True)
            with db.engine.begin() as conn:
                conn.execute(
                    update(Prescription)
                    .where(Prescription.id == target)
                    .values(status=PrescriptionStatus.REJECTED, version=Prescription.version + 1)
                )

    event.listen(Session, "before_flush", pharmacist_rejects_it_now)
    try:
        result = ctx.test_cli_runner().invoke(args=["drugs", "expire"])
    finally:
        event.remove(Session, "before_flush", pharmacist_rejects_it_now)

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"expired": 2, "changed_meanwhile": 1}
    db.session.remove()
    statuses = {rx.id: rx.status.value for rx in db.session.scalars(select(Prescription))}
    assert statuses == {ids[0]: "expired", target: "rejected", ids[2]: "expired"}
    assert audit_count("prescription.expired") == 2
