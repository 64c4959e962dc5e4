"""Two-way referral between institutions (API.md "Between institutions"; issue 19 item 4):
sending up or down against the agreement and the levels, the receiving side's queue, its
answers and the closed loop as signed messages, and the carry-over of confirmed diagnoses
to the return-visit gate. The partner is played by a key of the test's own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.notifications.models import InboxNotification, SmsMessage
from clinic.telemedicine import envelope, federation, partners, referrals
from clinic.telemedicine.models import FederationMessage, Referral
from identity.models import Patient, Role
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.referral_messages import OWN_URL, PARTNER_URL, request_from_partner

API = "/api/v1"


def _key() -> envelope.InstitutionKey:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return envelope.institution_key(pem.decode())


def count(model: Any, *where: Any) -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def audits(action: str) -> int:
    return count(AuditEntry, AuditEntry.action == action)


def partner(client: FlaskClient, key: envelope.InstitutionKey, **kw: Any) -> str:
    today = partners.today()
    body: dict[str, Any] = {
        "name": "乙区社区卫生服务中心",
        "license_no": "PDY-B",
        "level": "基层",
        "base_url": PARTNER_URL,
        "public_jwk": dict(key.public_jwk),
        "services": ["consultation", "referral"],
        "departments": [],
        "fee_fen": 0,
        "fee_split": {"inviting": 20, "invited": 80},
        "valid_from": (today - timedelta(days=1)).isoformat(),
        "valid_until": (today + timedelta(days=364)).isoformat(),
    }
    body.update(kw)
    admin = f.auth(f.token(client, f.staff(Role.ADMIN).username))
    resp = client.post(f"{API}/admin/partner-institutions", json=body, headers=admin)
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def physician_headers(client: FlaskClient, physician: Any) -> dict[str, str]:
    return f.auth(f.token(client, physician.username))


def referral_body(patient_id: Any, institution_id: str, **kw: Any) -> dict[str, Any]:
    body = {
        "patient_id": str(patient_id),
        "institution_id": institution_id,
        "direction": "down",
        "department": "cardiology",
        "reason": "高血压病情稳定，转回社区继续随访",
        "summary": "血压控制达标三个月，继续氨氯地平 5mg qd。",
    }
    body.update(kw)
    return body


def post_message(client: FlaskClient, token: str) -> Any:
    return client.post(f"{API}/federation/messages", data=token, headers={"Content-Type": "application/jose"})


def sent_bundle(event: str) -> dict[str, Any]:
    db.session.remove()
    message = db.session.scalars(
        select(FederationMessage).where(FederationMessage.direction == "out", FederationMessage.event_code == event)
    ).one()
    return envelope.verify(message.jws, partners.own_key().public_jwk)


def by_type(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in bundle["entry"]:
        out.setdefault(e["resource"]["resourceType"], []).append(e["resource"])
    return out


# --- sending ---------------------------------------------------------------------------------


def test_a_referral_down_is_sent_as_a_signed_fhir_message_with_the_confirmed_diagnoses(client: FlaskClient) -> None:
    cf.catalog()
    physician = f.staff(Role.PHYSICIAN)
    p = cf.ready_patient(client, physician, "I10")
    pid = partner(client, _key())
    resp = client.post(
        f"{API}/referrals", json=referral_body(p["reg"].patient.id, pid), headers=physician_headers(client, physician)
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["status"] == "requested"
    found = by_type(sent_bundle(referrals.REQUEST_EVENT))
    (task,), (sr,), (person,) = found["Task"], found["ServiceRequest"], found["Patient"]
    assert task["status"] == "requested" and task["intent"] == "order"
    assert sr["reasonCode"][0]["text"].startswith("高血压") and "氨氯地平" in sr["note"][0]["text"]
    assert sr["orderDetail"][0]["coding"][0]["code"] == "down"
    assert person["name"][0]["text"] == "张三" and person["identifier"][0]["value"] == p["reg"].patient.id_number
    assert [c["code"]["coding"][0]["code"] for c in found["Condition"]] == ["I10"]
    assert found["MessageHeader"][0]["eventCoding"]["code"] == "referral-request"
    detail = client.get(f"{API}/referrals/{resp.get_json()['id']}", headers=physician_headers(client, physician))
    body = detail.get_json()
    assert (
        body["role"] == "sending"
        and body["direction"] == "down"
        and body["shared_id"] == task["identifier"][0]["value"]
    )
    assert [d["icd10"] for d in body["diagnoses"]] == ["I10"]
    assert audits("referral.sent") == 1


def test_refusals_when_sending(client: FlaskClient) -> None:
    cf.catalog()
    physician = f.staff(Role.PHYSICIAN)
    p = cf.ready_patient(client, physician, "I10")
    headers = physician_headers(client, physician)
    patient_id = p["reg"].patient.id
    today = partners.today()

    def send(institution_id: str, **kw: Any) -> Any:
        return client.post(f"{API}/referrals", json=referral_body(patient_id, institution_id, **kw), headers=headers)

    # no agreement in force: 403, audited, nothing stored, nothing sent
    expired = partner(
        client,
        _key(),
        valid_from=(today - timedelta(days=30)).isoformat(),
        valid_until=(today - timedelta(days=1)).isoformat(),
    )
    resp = send(expired)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "no_agreement", resp.get_json()
    # an agreement for consultations only
    consult_only = partner(client, _key(), services=["consultation"])
    resp = send(consult_only)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "no_agreement"
    assert resp.get_json()["error"]["service"] == "referral" and "双向转诊" in resp.get_json()["error"]["message"]
    assert audits("referral.refused") == 2
    # we are 三级: down to another 三级 is neither up nor down; up to a 基层 makes no sense
    peer = partner(client, _key(), level="三级")
    resp = send(peer)
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "bad_direction"
    primary = partner(client, _key())
    resp = send(primary, direction="up")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "bad_direction"
    assert "向上转诊应由下级医疗机构（三级）" in resp.get_json()["error"]["message"]
    assert audits("referral.refused") == 4
    # an unknown partner; a patient who is not this physician's; a patient may not refer
    assert refusal(send(str(uuid.uuid4()))) == (404, "not_found")
    other = f.staff(Role.PHYSICIAN)
    resp = client.post(
        f"{API}/referrals", json=referral_body(patient_id, primary), headers=physician_headers(client, other)
    )
    assert resp.status_code == 404
    resp = client.post(f"{API}/referrals", json=referral_body(patient_id, primary), headers=f.auth(p["token"]))
    assert resp.status_code == 403
    # a department outside the agreement
    narrow = partner(client, _key(), departments=["endocrinology"])
    resp = send(narrow)
    assert resp.status_code == 422 and resp.get_json()["error"]["fields"][0]["loc"] == "department"
    assert count(Referral) == 0 and count(FederationMessage) == 0


# --- receiving -----------------------------------------------------------------------------


def status_from_partner(key: envelope.InstitutionKey, shared: str, status: str, **extra: Any) -> str:
    ident = [{"system": referrals.TASK_SYSTEM, "value": shared}]
    task = {"resourceType": "Task", "id": str(uuid.uuid4()), "identifier": ident, "status": status, "intent": "order"}
    task.update(extra.pop("task", {}))
    resources = [task, *extra.pop("resources", [])]
    bundle = envelope.build_message(referrals.STATUS_EVENT, PARTNER_URL, "乙", OWN_URL, resources)
    return envelope.sign(key, bundle)


def test_a_referral_up_arrives_in_the_queue_with_the_patient_matched_by_name_and_id(client: FlaskClient) -> None:
    cf.catalog()
    key = _key()
    partner(client, key)
    known = f.patient("李四")
    token, shared = request_from_partner(key, "李四", known.patient.id_number)
    resp = post_message(client, token)
    assert resp.status_code == 202, resp.get_json()
    assert post_message(client, token).get_json()["duplicate"] is True  # delivered twice: kept once
    physician = f.staff(Role.PHYSICIAN)
    queue = client.get(f"{API}/referrals?role=receiving&status=requested", headers=physician_headers(client, physician))
    (item,) = queue.get_json()["items"]
    assert item["shared_id"] == shared and item["direction"] == "up" and item["status"] == "requested"
    assert item["patient_id"] == str(known.patient.id) and item["identity_match"] == "matched"
    assert item["reason"].startswith("血压控制不佳") and item["requester_name"] == "周医生"
    assert [d["icd10"] for d in item["diagnoses"]] == ["I10"] and item["diagnoses"][0]["confirmed"] is False
    assert client.get(f"{API}/referrals?role=sending", headers=physician_headers(client, physician)).get_json() == {
        "items": []
    }
    assert audits("referral.received") == 1


def test_an_unknown_patient_is_added_and_a_name_that_does_not_match_is_not(client: FlaskClient) -> None:
    cf.catalog()
    key = _key()
    partner(client, key)
    new_id = f.id_number(datetime(1958, 2, 3).date())
    assert post_message(client, request_from_partner(key, "王五", new_id)[0]).status_code == 202
    db.session.remove()
    (created,) = db.session.scalars(select(Patient).where(Patient.name == "王五")).all()
    assert created.id_number == new_id and created.account.phone == "+8613912345678"
    known = f.patient("赵六")
    assert post_message(client, request_from_partner(key, "赵七", known.patient.id_number)[0]).status_code == 202
    db.session.remove()
    matches = {r.patient_name: (r.identity_match, r.patient_id) for r in db.session.scalars(select(Referral))}
    assert matches["王五"] == ("created", created.id) and matches["赵七"] == ("mismatch", None)


def test_a_request_against_the_levels_or_without_the_service_is_refused_and_not_kept(client: FlaskClient) -> None:
    cf.catalog()
    key, other = _key(), _key()
    partner(client, key)  # a 基层 partner referring "down" to us (三级) makes no sense
    resp = post_message(
        client, request_from_partner(key, "李四", f.id_number(datetime(1970, 1, 1).date()), direction="down")[0]
    )
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "bad_direction"
    partner(client, other, services=["consultation"], base_url="http://127.0.0.1:8")
    bundle_token = request_from_partner(other, "李四", f.id_number(datetime(1970, 1, 1).date()))[0]
    resp = post_message(client, bundle_token)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "no_agreement"
    assert count(Referral) == 0 and count(FederationMessage) == 0 and count(Patient, Patient.name == "李四") == 0


def _received(client: FlaskClient, key: envelope.InstitutionKey, name: str = "李四") -> tuple[str, Any]:
    known = f.patient(name)
    token, _shared = request_from_partner(key, name, known.patient.id_number)
    assert post_message(client, token).status_code == 202
    db.session.remove()
    rid = db.session.scalars(select(Referral.id).where(Referral.patient_name == name)).one()
    return str(rid), known


def test_accept_decline_outcome_on_the_receiving_side(client: FlaskClient) -> None:
    cf.catalog()
    key = _key()
    partner(client, key)
    rid, _known = _received(client, key)
    physician = f.staff(Role.PHYSICIAN)
    headers = physician_headers(client, physician)
    when = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    accept = {"appointment_at": when.isoformat(), "place": "门诊楼3层心内科5诊室"}
    # not a physician: an administrator, a pharmacist, a patient
    for role in (Role.ADMIN, Role.PHARMACIST):
        resp = client.post(
            f"{API}/referrals/{rid}/accept", json=accept, headers=f.auth(f.token(client, f.staff(role).username))
        )
        assert resp.status_code == 403, (role, resp.get_json())
    # the outcome before it is accepted: the lifecycle refuses it
    resp = client.post(f"{API}/referrals/{rid}/outcome", json={"summary": "已诊治"}, headers=headers)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "illegal_transition"
    # an appointment in the past
    past = {"appointment_at": (when - timedelta(days=10)).isoformat(), "place": "门诊楼"}
    resp = client.post(f"{API}/referrals/{rid}/accept", json=past, headers=headers)
    assert resp.status_code == 422
    resp = client.post(f"{API}/referrals/{rid}/accept", json=accept, headers=headers)
    assert resp.status_code == 200 and resp.get_json() == {"status": "accepted"}, resp.get_json()
    found = by_type(sent_bundle(referrals.STATUS_EVENT))
    assert found["Task"][0]["status"] == "accepted"
    assert datetime.fromisoformat(found["Appointment"][0]["start"]) == when
    assert found["Appointment"][0]["description"] == "门诊楼3层心内科5诊室"
    # accepted once; cannot be declined now
    assert refusal(client.post(f"{API}/referrals/{rid}/accept", json=accept, headers=headers)) == (
        409,
        "illegal_transition",
    )
    resp = client.post(f"{API}/referrals/{rid}/decline", json={"reason": "床位已满"}, headers=headers)
    assert resp.status_code == 409
    resp = client.post(
        f"{API}/referrals/{rid}/outcome", json={"summary": "调整为四联降压，血压达标后转回。"}, headers=headers
    )
    assert resp.status_code == 200 and resp.get_json() == {"status": "completed"}
    detail = client.get(f"{API}/referrals/{rid}", headers=headers).get_json()
    assert detail["status"] == "completed" and detail["outcome"]["summary"].startswith("调整为四联降压")
    assert detail["place"] == "门诊楼3层心内科5诊室"
    assert audits("referral.accepted") == 1 and audits("referral.outcome_reported") == 1
    # declining another one
    rid2, _ = _received(client, key, "孙八")
    resp = client.post(f"{API}/referrals/{rid2}/decline", json={"reason": "本院暂无该专科床位"}, headers=headers)
    assert resp.status_code == 200 and resp.get_json() == {"status": "rejected"}
    resp = client.post(f"{API}/referrals/{rid2}/outcome", json={"summary": "x" * 5}, headers=headers)
    assert resp.status_code == 409


def test_the_sending_side_applies_the_answers_and_tells_the_patient_in_beijing_time(client: FlaskClient) -> None:
    cf.catalog()
    key = _key()
    physician = f.staff(Role.PHYSICIAN)
    p = cf.ready_patient(client, physician, "I10")
    pid = partner(client, key)
    headers = physician_headers(client, physician)
    rid = client.post(f"{API}/referrals", json=referral_body(p["reg"].patient.id, pid), headers=headers).get_json()[
        "id"
    ]
    shared = client.get(f"{API}/referrals/{rid}", headers=headers).get_json()["shared_id"]
    # the outcome cannot come before the acceptance
    resp = post_message(client, status_from_partner(key, shared, "completed"))
    assert (
        refusal(resp) == (409, "illegal_transition")
        and count(FederationMessage, FederationMessage.direction == "in") == 0
    )
    at = datetime(2030, 3, 4, 1, 30, tzinfo=UTC)  # 09:30 in Beijing
    appointment = {
        "resourceType": "Appointment",
        "id": str(uuid.uuid4()),
        "status": "booked",
        "start": at.isoformat(),
        "end": (at + timedelta(minutes=30)).isoformat(),
        "description": "社区卫生服务中心2楼全科诊室",
        "participant": [{"actor": {"display": "社区卫生服务中心2楼全科诊室"}, "status": "accepted"}],
    }
    token = status_from_partner(key, shared, "accepted", task={"owner": {"display": "钱医生"}}, resources=[appointment])
    assert post_message(client, token).status_code == 202
    body = client.get(f"{API}/referrals/{rid}", headers=headers).get_json()
    assert body["status"] == "accepted" and body["responder_name"] == "钱医生"
    assert body["place"] == "社区卫生服务中心2楼全科诊室"
    db.session.remove()
    (sms,) = db.session.scalars(select(SmsMessage).where(SmsMessage.kind == "referral_accepted")).all()
    assert "2030年03月04日 09:30" in sms.body and "社区卫生服务中心2楼全科诊室" in sms.body
    assert count(InboxNotification, InboxNotification.kind == "referral_accepted") == 1
    # the patient sees it; another patient does not
    assert client.get(f"{API}/referrals/{rid}", headers=f.auth(p["token"])).status_code == 200
    stranger = f.patient("路人")
    assert refusal(
        client.get(f"{API}/referrals/{rid}", headers=f.auth(f.token(client, stranger.account.username)))
    ) == (404, "not_found")
    outcome = status_from_partner(
        key, shared, "completed", task={"output": [{"type": {"text": "outcome"}, "valueString": "继续社区随访"}]}
    )
    assert post_message(client, outcome).status_code == 202
    body = client.get(f"{API}/referrals/{rid}", headers=headers).get_json()
    assert body["status"] == "completed" and body["outcome"]["summary"] == "继续社区随访"
    assert audits("referral.completed") == 1


def test_a_carried_diagnosis_once_confirmed_here_passes_the_return_visit_gate(client: FlaskClient) -> None:
    cf.catalog()
    key = _key()
    partner(client, key, level="三级", base_url=PARTNER_URL)
    # we are the primary-care side this time
    from clinic.core.db import unit_of_work
    from identity.models import Institution

    with unit_of_work() as s:
        inst = s.get(Institution, 1)
        assert inst is not None
        inst.level = "基层"
    known = f.patient("周九")
    token, _ = request_from_partner(key, "周九", known.patient.id_number, direction="down")
    assert post_message(client, token).status_code == 202
    db.session.remove()
    referral = db.session.scalars(select(Referral)).one()
    rid, carried = str(referral.id), str(referral.diagnoses[0].id)
    physician = f.staff(Role.PHYSICIAN)
    face = f.auth(cf.face_token(physician))
    patient_headers = f.auth(f.token(client, known.account.username))
    cf.consent(client, f.token(client, known.account.username), known.patient.id)
    # before the acceptance, and without a fresh face check: refused
    assert refusal(client.post(f"{API}/referrals/{rid}/diagnoses/{carried}/confirm", headers=face)) == (
        409,
        "illegal_transition",
    )
    when = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert (
        client.post(
            f"{API}/referrals/{rid}/accept", json={"appointment_at": when, "place": "全科诊室"}, headers=face
        ).status_code
        == 200
    )
    no_face = physician_headers(client, physician)
    resp = client.post(f"{API}/referrals/{rid}/diagnoses/{carried}/confirm", headers=no_face)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "face_verification_required"
    # until it is confirmed, the patient's diagnoses here hold nothing to return for
    assert client.get(f"{API}/diagnoses", headers=patient_headers).get_json()["items"] == []
    resp = client.post(f"{API}/referrals/{rid}/diagnoses/{carried}/confirm", headers=face)
    assert resp.status_code == 200, resp.get_json()
    assert refusal(client.post(f"{API}/referrals/{rid}/diagnoses/{carried}/confirm", headers=face)) == (
        409,
        "already_reviewed",
    )
    (diag,) = client.get(f"{API}/diagnoses", headers=patient_headers).get_json()["items"]
    assert diag["status"] == "confirmed" and diag["icd10"] == "I10" and diag["institution"] == "乙区人民医院"
    visit = client.post(
        f"{API}/visits",
        json={"patient_id": str(known.patient.id), "diagnosis_id": diag["id"], "department": "cardiology"},
        headers=patient_headers,
    )
    assert visit.status_code == 201, visit.get_json()
    assert audits("referral.diagnosis_confirmed") == 1 and audits("diagnosis.confirmed") == 1


@pytest.mark.parametrize("role", ["sending", "receiving"])
def test_the_list_refuses_unknown_filters(client: FlaskClient, role: str) -> None:
    physician = f.staff(Role.PHYSICIAN)
    headers = physician_headers(client, physician)
    assert client.get(f"{API}/referrals?role={role}", headers=headers).status_code == 200
    assert refusal(client.get(f"{API}/referrals?role=both", headers=headers)) == (422, "invalid")
    assert refusal(client.get(f"{API}/referrals?status=done", headers=headers)) == (422, "invalid")


def test_a_request_the_outbox_gives_up_on_fails_and_the_physician_is_told(client: FlaskClient) -> None:
    from clinic.core.audit import Actor, acting_as
    from clinic.core.db import unit_of_work

    cf.catalog()
    physician = f.staff(Role.PHYSICIAN)
    p = cf.ready_patient(client, physician, "I10")
    pid = partner(client, _key())
    headers = physician_headers(client, physician)
    rid = client.post(f"{API}/referrals", json=referral_body(p["reg"].patient.id, pid), headers=headers).get_json()[
        "id"
    ]
    db.session.remove()
    message = db.session.scalars(select(FederationMessage).where(FederationMessage.direction == "out")).one()
    payload = {"message": str(message.id)}
    with acting_as(Actor(None, "job")), unit_of_work():
        federation._delivery_failed(payload, "partner unreachable", False)  # another try follows
    assert client.get(f"{API}/referrals/{rid}", headers=headers).get_json()["status"] == "requested"
    with acting_as(Actor(None, "job")), unit_of_work():
        federation._delivery_failed(payload, "partner unreachable", True)  # the outbox gives up
    assert client.get(f"{API}/referrals/{rid}", headers=headers).get_json()["status"] == "failed"
    assert audits("referral.failed") == 1
    note = InboxNotification.account_id == physician.id
    assert count(InboxNotification, note, InboxNotification.kind == "referral_answered") == 1
