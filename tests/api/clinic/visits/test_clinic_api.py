"""The clinic section of API.md: diagnoses, consent, return visits, suspension."""

from __future__ import annotations

from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.visits.models import ConsentAcceptance, Diagnosis, Visit, VisitMessage
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal


@pytest.fixture
def world(ctx: Flask, client: FlaskClient) -> dict:
    return {**cf.two_departments(), "client": client}


def n(model: type) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def stored_files(client: FlaskClient) -> set[str]:
    from pathlib import Path

    folder = Path(client.application.instance_path) / "uploads" / "diagnoses"
    return {p.name for p in folder.glob("*")} if folder.exists() else set()


def upload(
    client: FlaskClient, tok: str, patient_id: object, icd10: str = "I10", document: bytes | None = None, **kw: str
):
    data = {
        "patient_id": str(patient_id),
        "icd10": icd10,
        "institution": "北京协和医院",
        "diagnosed_on": "2024-05-06",
        **kw,
    }
    import io

    data["document"] = (io.BytesIO(document if document is not None else cf.png()), "record.png")  # type: ignore[assignment]
    return client.post("/api/v1/diagnoses", data=data, headers=f.auth(tok), content_type="multipart/form-data")


def test_whole_return_visit_journey(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    reg = f.patient()
    tok = f.token(client, reg.account.username)

    resp = upload(client, tok, reg.patient.id, "I10")
    assert resp.status_code == 201 and resp.get_json()["status"] == "pending"
    diag_id = resp.get_json()["id"]

    # The physician's queue shows it; confirming needs a face check.
    plain = f.token(client, cardio.username)
    queue = client.get("/api/v1/diagnoses", headers=f.auth(plain)).get_json()["items"]
    assert [d["id"] for d in queue] == [diag_id]
    refused = client.post(f"/api/v1/diagnoses/{diag_id}/confirm", headers=f.auth(plain))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "face_verification_required"
    face = cf.face_token(cardio)
    ok = client.post(f"/api/v1/diagnoses/{diag_id}/confirm", headers=f.auth(face))
    assert ok.status_code == 200 and ok.get_json() == {"status": "confirmed"}

    # No consent yet → refused; then consent and request.
    body = {"patient_id": str(reg.patient.id), "diagnosis_id": diag_id, "department": "cardiology"}
    no_consent = client.post("/api/v1/visits", json=body, headers=f.auth(tok))
    assert no_consent.status_code == 422 and no_consent.get_json()["error"]["code"] == "consent_required"
    cf.consent(client, tok, reg.patient.id)
    created = client.post("/api/v1/visits", json=body, headers=f.auth(tok))
    assert created.status_code == 201
    visit = created.get_json()
    assert visit["status"] == "waiting"  # payments are off by default

    waiting = client.get("/api/v1/visits?queue=waiting", headers=f.auth(face)).get_json()["items"]
    assert [v["id"] for v in waiting] == [visit["id"]]
    accepted = client.post(f"/api/v1/visits/{visit['id']}/accept", headers=f.auth(face))
    assert accepted.get_json() == {"status": "in_progress"}

    assert (
        client.post(
            f"/api/v1/visits/{visit['id']}/messages", json={"text": "血压最近 135/85"}, headers=f.auth(tok)
        ).status_code
        == 201
    )
    assert (
        client.post(
            f"/api/v1/visits/{visit['id']}/messages", json={"text": "继续目前用药"}, headers=f.auth(face)
        ).status_code
        == 201
    )
    import io

    img = client.post(
        f"/api/v1/visits/{visit['id']}/messages",
        data={"image": (io.BytesIO(cf.png()), "bp.png"), "text": "血压记录"},
        headers=f.auth(tok),
        content_type="multipart/form-data",
    )
    assert img.status_code == 201 and img.get_json()["has_image"] is True
    image = client.get(f"/api/v1/visits/{visit['id']}/messages/{img.get_json()['id']}/image", headers=f.auth(face))
    assert image.status_code == 200 and image.mimetype == "image/png" and image.data == cf.png()

    video = client.get(f"/api/v1/visits/{visit['id']}/video-token", headers=f.auth(tok)).get_json()
    assert video["room"] == f"visit-{visit['id']}" and video["token"].count(".") == 2

    done = client.post(
        f"/api/v1/visits/{visit['id']}/complete", json={"note": "血压控制良好，继续氨氯地平。"}, headers=f.auth(face)
    )
    assert done.get_json() == {"status": "completed"}
    seen = client.get(f"/api/v1/visits/{visit['id']}", headers=f.auth(tok)).get_json()
    assert seen["status"] == "completed"
    assert [m["text"] for m in seen["messages"]] == ["血压最近 135/85", "继续目前用药", "血压记录"]
    assert seen["notes"][0]["text"].startswith("血压控制良好")
    closed = client.post(f"/api/v1/visits/{visit['id']}/messages", json={"text": "还在吗"}, headers=f.auth(tok))
    assert closed.status_code == 409 and closed.get_json()["error"]["code"] == "visit_closed"

    actions = set(db.session.scalars(select(AuditEntry.action)))
    assert {
        "diagnosis.submitted",
        "diagnosis.confirmed",
        "consent.accepted",
        "visit.requested",
        "visit.accepted",
        "visit.completed",
    } <= actions


def test_first_visit_is_refused(world: dict) -> None:
    client = world["client"]
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    cf.consent(client, tok, reg.patient.id)
    import uuid

    resp = client.post(
        "/api/v1/visits",
        json={"patient_id": str(reg.patient.id), "diagnosis_id": str(uuid.uuid4()), "department": "cardiology"},
        headers=f.auth(tok),
    )
    err = resp.get_json()["error"]
    assert resp.status_code == 422 and err["code"] == "first_visit_not_allowed"
    assert n(Visit) == 0


def test_another_persons_diagnosis_counts_as_none(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    other = cf.ready_patient(client, cardio)
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    cf.consent(client, tok, reg.patient.id)
    resp = client.post(
        "/api/v1/visits",
        json={"patient_id": str(reg.patient.id), "diagnosis_id": str(other["diag"].id), "department": "cardiology"},
        headers=f.auth(tok),
    )
    assert resp.get_json()["error"]["code"] == "first_visit_not_allowed"


def test_pending_diagnosis_and_wrong_department_are_all_listed(world: dict) -> None:
    client = world["client"]
    reg = f.patient()
    diag = cf.diagnosis(reg.patient.id, reg.account, "I10")
    tok = f.token(client, reg.account.username)
    resp = client.post(
        "/api/v1/visits",
        json={"patient_id": str(reg.patient.id), "diagnosis_id": str(diag.id), "department": "psychiatry"},
        headers=f.auth(tok),
    )
    err = resp.get_json()["error"]
    assert err["code"] == "diagnosis_not_confirmed"
    assert [v["code"] for v in err["violations"]] == [
        "diagnosis_not_confirmed",
        "consent_required",
        "department_not_approved",
    ]
    assert all(v["message"] for v in err["violations"])


def test_visit_for_same_diagnosis_only_in_its_department(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    p = cf.ready_patient(client, cardio, "I10")
    resp = client.post(
        "/api/v1/visits",
        json={"patient_id": str(p["reg"].patient.id), "diagnosis_id": str(p["diag"].id), "department": "endocrinology"},
        headers=f.auth(p["token"]),
    )
    assert resp.get_json()["error"]["code"] == "department_not_approved"


def test_condition_outside_catalog_cannot_be_confirmed(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    diag_id = upload(client, tok, reg.patient.id, "F32.1").get_json()[
        "id"
    ]  # a depressive episode: not followed up online here
    resp = client.post(f"/api/v1/diagnoses/{diag_id}/confirm", headers=f.auth(cf.face_token(cardio)))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "not_eligible_condition"
    assert db.session.get(Diagnosis, __import__("uuid").UUID(diag_id)).status.value == "pending"  # type: ignore[union-attr]


def test_only_the_treating_department_confirms(world: dict) -> None:
    client, endo = world["client"], world["endo"]
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    diag_id = upload(client, tok, reg.patient.id, "I10").get_json()["id"]
    resp = client.post(f"/api/v1/diagnoses/{diag_id}/confirm", headers=f.auth(cf.face_token(endo)))
    err = resp.get_json()["error"]
    assert resp.status_code == 403 and err["code"] == "not_qualified"
    assert [v["code"] for v in err["violations"]] == ["wrong_department"]


def test_rejection_reason_reaches_the_patient(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    diag_id = upload(client, tok, reg.patient.id, "I10").get_json()["id"]
    resp = client.post(
        f"/api/v1/diagnoses/{diag_id}/reject",
        json={"reason": "病历照片不清晰，请重新上传"},
        headers=f.auth(f.token(client, cardio.username)),
    )
    assert resp.get_json() == {"status": "rejected"}
    mine = client.get(f"/api/v1/diagnoses/{diag_id}", headers=f.auth(tok)).get_json()
    assert mine["status"] == "rejected" and mine["rejection_reason"] == "病历照片不清晰，请重新上传"


@pytest.mark.parametrize(
    ("document", "fields", "status", "code"),
    [
        (b"MZ\x90\x00not a document", {}, 422, "invalid_upload"),
        (cf.png()[:50], {}, 422, "invalid_upload"),
        (None, {"icd10": "ZZZ"}, 422, "invalid"),
        (None, {"diagnosed_on": "2999-01-01"}, 422, "invalid"),
        (None, {"diagnosed_on": "yesterday"}, 422, "invalid"),
        (None, {"document_kind": "selfie"}, 422, "invalid"),
    ],
)
def test_bad_proofs_store_nothing(world: dict, document: bytes | None, fields: dict, status: int, code: str) -> None:
    client = world["client"]
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    before = stored_files(client)
    resp = upload(client, tok, reg.patient.id, document=document, **fields)
    assert resp.status_code == status and resp.get_json()["error"]["code"] == code
    assert n(Diagnosis) == 0
    assert stored_files(client) == before


def test_oversized_proof_is_413(world: dict) -> None:
    client = world["client"]
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    resp = upload(client, tok, reg.patient.id, document=cf.png() + b"\x00" * (11 * 1024 * 1024))
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "too_large"
    assert n(Diagnosis) == 0


def test_proof_for_someone_elses_patient_is_404(world: dict) -> None:
    client = world["client"]
    a, b = f.patient(), f.patient(name="李四")
    resp = upload(client, f.token(client, a.account.username), b.patient.id)
    assert refusal(resp) == (404, "not_found") and resp.get_json()["error"]["code"] == "not_found"


def test_stale_consent_version(world: dict) -> None:
    client = world["client"]
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    resp = client.post(
        "/api/v1/consent", json={"patient_id": str(reg.patient.id), "version": "2020-01-01"}, headers=f.auth(tok)
    )
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "stale_version"
    assert n(ConsentAcceptance) == 0
    current = client.get("/api/v1/consent").get_json()
    assert "复诊" in current["text_zh"] and "return visit" in current["text_en"] and len(current["sha256"]) == 64


def test_another_account_sees_404_for_a_visit(world: dict) -> None:
    client, cardio, endo = world["client"], world["cardio"], world["endo"]
    v = cf.open_visit(client, cardio)
    stranger = f.patient(name="王五")
    stok = f.token(client, stranger.account.username)
    for path in ("", "/video-token"):
        resp = client.get(f"/api/v1/visits/{v['visit_id']}{path}", headers=f.auth(stok))
        assert refusal(resp) == (404, "not_found") and resp.get_json()["error"]["code"] == "not_found"
    assert refusal(client.get(f"/api/v1/visits/{v['visit_id']}", headers=f.auth(f.token(client, endo.username)))) == (
        404,
        "not_found",
    )
    assert refusal(
        client.post(f"/api/v1/visits/{v['visit_id']}/messages", json={"text": "hi"}, headers=f.auth(stok))
    ) == (404, "not_found")
    assert refusal(client.get("/api/v1/visits/not-a-uuid", headers=f.auth(stok))) == (404, "not_found")


def test_accept_needs_face_and_qualification(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    v = cf.open_visit(client, cardio)
    no_face = client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(f.token(client, cardio.username)))
    assert no_face.status_code == 403 and no_face.get_json()["error"]["code"] == "face_verification_required"
    junior = f.staff(
        Role.PHYSICIAN,
        department="cardiology",
        independent_practice_since=date.today().replace(year=date.today().year - 1),
    )
    resp = client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(junior)))
    err = resp.get_json()["error"]
    assert resp.status_code == 403 and err["code"] == "not_qualified"
    assert "insufficient_practice_years" in [x["code"] for x in err["violations"]]
    expired = f.staff(Role.PHYSICIAN, department="cardiology", license_valid_until=date(2020, 1, 1))
    resp = client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(expired)))
    assert "license_expired" in [x["code"] for x in resp.get_json()["error"]["violations"]]
    assert db.session.get(Visit, __import__("uuid").UUID(v["visit_id"])).status.value == "waiting"  # type: ignore[union-attr]


def test_referral_stops_the_visit_for_good(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    v = cf.open_visit(client, cardio)
    face = cf.face_token(cardio)
    client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(face))
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/terminate",
        json={
            "reason": "新发胸痛，需面诊",
            "referral_advice": "请今日到心内科门诊或急诊就诊，完善心电图和心肌酶检查。",
        },
        headers=f.auth(face),
    )
    assert resp.get_json() == {"status": "referred"}
    seen = client.get(f"/api/v1/visits/{v['visit_id']}", headers=f.auth(v["token"])).get_json()
    assert seen["referral_advice"].startswith("请今日到心内科") and seen["termination_reason"] == "新发胸痛，需面诊"
    for path, body in [
        ("complete", {"note": "x" * 3}),
        ("accept", None),
        ("terminate", {"reason": "ab", "referral_advice": "cd"}),
    ]:
        again = client.post(f"/api/v1/visits/{v['visit_id']}/{path}", json=body, headers=f.auth(face))
        assert again.status_code == 409 and again.get_json()["error"]["code"] == "visit_closed"
    assert refusal(client.get(f"/api/v1/visits/{v['visit_id']}/video-token", headers=f.auth(v["token"]))) == (
        409,
        "visit_not_in_progress",
    )


def test_only_the_visits_physician_acts_in_it(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    other = f.staff(Role.PHYSICIAN, department="cardiology")
    v = cf.open_visit(client, cardio)
    client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(cardio)))
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/complete", json={"note": "done"}, headers=f.auth(cf.face_token(other))
    )
    assert refusal(resp) == (404, "not_found")  # the visit is not theirs: not revealed


def test_suspension_stops_new_visits_but_not_running_ones(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    admin = f.staff(Role.ADMIN)
    atok = f.token(client, admin.username)
    running = cf.open_visit(client, cardio)
    face = cf.face_token(cardio)
    client.post(f"/api/v1/visits/{running['visit_id']}/accept", headers=f.auth(face))
    waiting = cf.open_visit(client, cardio)
    p = cf.ready_patient(client, cardio)

    resp = client.post(
        "/api/v1/admin/suspension", json={"suspended": True, "reason": "系统安全事件排查"}, headers=f.auth(atok)
    )
    assert resp.status_code == 200 and resp.get_json()["suspended"] is True
    new = client.post(
        "/api/v1/visits",
        json={"patient_id": str(p["reg"].patient.id), "diagnosis_id": str(p["diag"].id), "department": "cardiology"},
        headers=f.auth(p["token"]),
    )
    assert new.status_code == 503
    assert (
        new.get_json()["error"]["code"] == "service_suspended"
        and "系统安全事件排查" in new.get_json()["error"]["message"]
    )
    assert refusal(client.post(f"/api/v1/visits/{waiting['visit_id']}/accept", headers=f.auth(face))) == (
        503,
        "service_suspended",
    )
    assert (
        client.post(
            f"/api/v1/visits/{running['visit_id']}/complete", json={"note": "按期复诊"}, headers=f.auth(face)
        ).status_code
        == 200
    )

    client.post("/api/v1/admin/suspension", json={"suspended": False, "reason": "排查完毕"}, headers=f.auth(atok))
    again = client.post(
        "/api/v1/visits",
        json={"patient_id": str(p["reg"].patient.id), "diagnosis_id": str(p["diag"].id), "department": "cardiology"},
        headers=f.auth(p["token"]),
    )
    assert again.status_code == 201
    actions = list(
        db.session.scalars(
            select(AuditEntry.action).where(AuditEntry.action.like("service.%")).order_by(AuditEntry.seq)
        )
    )
    assert actions == ["service.suspended", "service.resumed"]
    assert refusal(
        client.post("/api/v1/admin/suspension", json={"suspended": True, "reason": "x1"}, headers=f.auth(p["token"]))
    ) == (403, "forbidden")


def test_patient_cancels_before_acceptance(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    v = cf.open_visit(client, cardio)
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/cancel", json={"reason": "已到线下就诊"}, headers=f.auth(v["token"])
    )
    assert resp.get_json() == {"status": "cancelled"}
    late = client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(cardio)))
    assert refusal(late) == (409, "visit_closed")


def test_messages_refuse_bad_images_and_store_nothing(world: dict) -> None:
    import io

    client, cardio = world["client"], world["cardio"]
    v = cf.open_visit(client, cardio)
    client.post(f"/api/v1/visits/{v['visit_id']}/accept", headers=f.auth(cf.face_token(cardio)))
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/messages",
        data={"image": (io.BytesIO(b"%PDF-1.4\n%%EOF"), "x.pdf")},
        headers=f.auth(v["token"]),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_upload"
    empty = client.post(f"/api/v1/visits/{v['visit_id']}/messages", json={}, headers=f.auth(v["token"]))
    assert refusal(empty) == (422, "invalid")
    assert n(VisitMessage) == 0


def test_admin_edits_the_condition_catalog(world: dict) -> None:
    client = world["client"]
    admin = f.staff(Role.ADMIN)
    atok = f.token(client, admin.username)
    ok = client.post(
        "/api/v1/admin/conditions",
        json={"code": "g40", "name_zh": "癫痫", "department": "general", "chronic": True},
        headers=f.auth(atok),
    )
    assert ok.status_code == 200 and ok.get_json()["code"] == "G40" and ok.get_json()["name_en"] == "Epilepsy"
    bad = client.post(
        "/api/v1/admin/conditions",
        json={"code": "Q99.99", "name_zh": "x", "department": "general"},
        headers=f.auth(atok),
    )
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid_icd10"
    listed = client.get("/api/v1/conditions", headers=f.auth(atok)).get_json()["items"]
    assert "G40" in [c["code"] for c in listed] and "I10" in [c["code"] for c in listed]


def visit_request(client: FlaskClient, p: dict, **over: str):
    body = {"patient_id": str(p["reg"].patient.id), "diagnosis_id": str(p["diag"].id), "department": "cardiology"}
    return client.post("/api/v1/visits", json={**body, **over}, headers=f.auth(p["token"]))


def test_withdrawn_condition_closes_the_door_to_new_visits(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    p = cf.ready_patient(client, cardio, "I10")
    atok = f.token(client, f.staff(Role.ADMIN).username)
    withdrawn = client.post(
        "/api/v1/admin/conditions",
        json={"code": "I10", "name_zh": "原发性高血压", "department": "cardiology", "active": False},
        headers=f.auth(atok),
    )
    assert withdrawn.status_code == 200
    resp = visit_request(client, p)
    err = resp.get_json()["error"]
    assert resp.status_code == 422 and err["code"] == "diagnosis_not_confirmed"
    assert err["violations"][0]["message"] == "该病情已不适合在线复诊。"  # "no longer followed up online"
    assert n(Visit) == 0


def test_another_accounts_patient_is_404_and_suspension_is_said_first(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    mine, theirs = cf.ready_patient(client, cardio), cf.ready_patient(client, cardio)
    stranger = visit_request(client, mine, patient_id=str(theirs["reg"].patient.id))
    assert stranger.status_code == 404 and stranger.get_json()["error"]["code"] == "not_found"

    atok = f.token(client, f.staff(Role.ADMIN).username)
    client.post("/api/v1/admin/suspension", json={"suspended": True, "reason": "停机维护"}, headers=f.auth(atok))
    for p in (mine, {**mine, "reg": theirs["reg"]}):  # own patient, and another account's
        resp = visit_request(client, mine, patient_id=str(p["reg"].patient.id))
        assert resp.status_code == 503 and "停机维护" in resp.get_json()["error"]["message"]
    assert n(Visit) == 0


def test_department_without_online_approval_is_refused(world: dict) -> None:
    client, cardio = world["client"], world["cardio"]
    p = cf.ready_patient(client, cardio)
    resp = visit_request(client, p, department="psychiatry")  # not approved for online care
    err = resp.get_json()["error"]
    assert resp.status_code == 422 and err["code"] == "department_not_approved"
    assert [v["code"] for v in err["violations"]] == ["department_not_approved"]
    assert n(Visit) == 0
