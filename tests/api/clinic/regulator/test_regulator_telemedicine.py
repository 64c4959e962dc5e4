"""Consultations and referrals between institutions in the regulators' FHIR interface
(issue 19 item 6): ServiceRequest, Task and DiagnosticReport, valid R4 (re-read with FHIR
4.0.1 models), in both roles an institution can play, joined across institutions by the
shared Task identifier, de-identified unless the scope allows identity."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from clinic.core import audit
from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work, utcnow
from clinic.regulator import telemedicine_fhir as tf
from clinic.regulator.fhir import Chained, EmptySource
from clinic.telemedicine.models import (
    Consultation,
    ConsultationAttachment,
    ConsultationOpinion,
    PartnerInstitution,
    Referral,
    ReferralDiagnosis,
)
from identity.models import Role
from tests.api.clinic.regulator.test_regulator_api import allow_identified, read_bundle, scoped
from tests.support import factories as f

FHIR = "/api/v1/regulator/fhir"
QUESTION = "血压控制不佳，是否调整降压方案？"
OPINION = "建议加用氨氯地平5mg每日一次。"
PARTNER_PATIENT = "赵六"


def _partner() -> PartnerInstitution:
    today = utcnow().date()
    return PartnerInstitution(
        name="乙市第一人民医院",
        license_no="PDY12345678",
        level="三级",
        base_url="https://partner.example",
        public_jwk={"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "inst-partner"},
        kid="inst-partner",
        services=["consultation", "referral"],
        departments=[],
        fee_fen=20000,
        split_inviting=20,
        split_invited=80,
        valid_from=today - timedelta(days=1),
        valid_until=today + timedelta(days=364),
    )


@pytest.fixture
def world(client: FlaskClient) -> dict[str, Any]:
    physician = f.staff(Role.PHYSICIAN)
    reg = f.patient(name="张伟")
    now = utcnow()
    with unit_of_work() as s:
        partner = _partner()
        s.add(partner)
        s.flush()
        common: dict[str, Any] = {
            "partner_id": partner.id,
            "department": "cardiology",
            "question": QUESTION,
            "summary": "高血压10年",
            "conditions": [{"icd10": "I10", "name": "高血压"}],
            "fee_fen": 20000,
            "split_inviting": 20,
            "split_invited": 80,
        }
        # we invited the partner about our patient; it answered, we acknowledged
        asked = Consultation(
            task_id=str(uuid.uuid4()),
            role="inviting",
            status="completed",
            urgency="urgent",
            patient_id=reg.patient.id,
            requested_by=physician.id,
            patient_json=json.dumps({"name": "张伟", "sex": "male", "birth_date": "1965-03-12"}),
            requester_name="王建国",
            specialist_name="钱主任",
            specialist_title="主任医师",
            requested_at=now - timedelta(hours=5),
            accepted_at=now - timedelta(hours=4),
            completed_at=now - timedelta(hours=3),
            acknowledged_at=now - timedelta(hours=2),
            acknowledged_by=physician.id,
            **common,
        )
        # the partner invited us about its patient; our physician took it, not yet answered
        taken = Consultation(
            task_id=str(uuid.uuid4()),
            role="invited",
            status="accepted",
            urgency="routine",
            patient_id=None,
            patient_json=json.dumps({"name": PARTNER_PATIENT, "sex": "female", "birth_date": "1970-01-01"}),
            requester_name="孙医生",
            accepted_by=physician.id,
            requested_at=now - timedelta(hours=1),
            accepted_at=now - timedelta(minutes=30),
            **common,
        )
        s.add_all([asked, taken])
        s.flush()
        s.add(
            ConsultationAttachment(
                consultation_id=asked.id,
                shared_id="doc-1",
                filename="ecg.pdf",
                media_type="application/pdf",
                size=2048,
                sha256="ab" * 32,
                path="telemedicine/x.pdf",
            )
        )
        opinion = ConsultationOpinion(
            consultation_id=asked.id,
            opinion=OPINION,
            recommendations="两周后复诊",
            jws="eyJhbGciOiJFUzI1NiJ9.eyJvIjoxfQ.c2ln",
            signer_kid="dr-qian-1",
            signer_jwk={"kty": "EC"},
            signer_name="钱主任",
            signer_title="主任医师",
            signed_at=now - timedelta(hours=3),
        )
        down = Referral(
            shared_id=str(uuid.uuid4()),
            role="sending",
            partner_id=partner.id,
            direction="down",
            status="completed",
            department="general",
            reason="病情稳定，回社区随访",
            summary="高血压控制良好",
            patient_id=reg.patient.id,
            patient_name="张伟",
            requested_by=physician.id,
            requester_name="王建国",
            responder_name="周医生",
            appointment_at=now + timedelta(days=2),
            place="社区卫生服务中心二楼全科诊室",
            outcome_summary="已接诊，继续随访",
            created_at=now - timedelta(hours=6),
            responded_at=now - timedelta(hours=5),
            closed_at=now - timedelta(hours=1),
        )
        up = Referral(
            shared_id=str(uuid.uuid4()),
            role="receiving",
            partner_id=partner.id,
            direction="up",
            status="rejected",
            department="cardiology",
            reason="需上级医院评估",
            summary="胸痛",
            patient_id=None,
            patient_name=PARTNER_PATIENT,
            identity_match="mismatch",
            requester_name="孙医生",
            responded_by=physician.id,
            decline_reason="本科室床位已满",
            created_at=now - timedelta(hours=2),
            responded_at=now - timedelta(hours=1),
        )
        s.add_all([opinion, down, up])
        s.flush()
        s.add(
            ReferralDiagnosis(
                referral_id=down.id, icd10="I10", name="高血压", institution="甲医院", diagnosed_on=now.date()
            )
        )
    return {
        "physician": physician,
        "patient": reg.patient,
        "asked": asked,
        "taken": taken,
        "opinion": opinion,
        "down": down,
        "up": up,
        "regulator": f.staff(Role.REGULATOR),
    }


def _read(client: FlaskClient, tok: str, resource: str, query: str = "") -> list[dict[str, Any]]:
    data = read_bundle(client.get(f"{FHIR}/{resource}{query}", headers=f.auth(tok)))
    assert data["total"] == len(data.get("entry", []))
    return [e["resource"] for e in data.get("entry", [])]


def test_consultations_and_referrals_are_valid_r4_and_deidentified(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    requests_ = {r["id"]: r for r in _read(client, tok, "ServiceRequest")}
    asked, taken, down, up = (world[k] for k in ("asked", "taken", "down", "up"))
    assert set(requests_) == {
        f"consultation-{asked.id}",
        f"consultation-{taken.id}",
        f"referral-{down.id}",
        f"referral-{up.id}",
    }

    sr = requests_[f"consultation-{asked.id}"]
    assert sr["identifier"] == [{"system": tf.SYS_TASK, "value": asked.task_id}]
    assert (sr["status"], sr["intent"], sr["priority"]) == ("completed", "order", "urgent")
    assert sr["requester"] == {"reference": f"Practitioner/{world['physician'].id}"}
    assert sr["performer"][0]["display"] == "乙市第一人民医院"  # the invited institution, by licence
    assert sr["performer"][0]["identifier"]["value"] == "PDY12345678"
    assert sr["reasonCode"][0]["coding"][0]["code"] == "I10"
    assert sr["supportingInfo"][0]["identifier"]["value"] == "doc-1"
    assert {"url": tf.EXT_ROLE, "valueCode": "inviting"} in sr["extension"]
    # our patient by pseudonym; the partner's patient by a pseudonym of the partner and the task
    assert (
        sr["subject"]["reference"].startswith("Patient/") and str(world["patient"].id) not in sr["subject"]["reference"]
    )
    theirs = requests_[f"consultation-{taken.id}"]
    assert theirs["subject"]["identifier"]["system"] == tf.SYS_PARTNER_PATIENT and "display" not in theirs["subject"]
    assert theirs["status"] == "active"
    assert theirs["performer"] == [
        {"reference": "Organization/institution"},
        {"reference": f"Practitioner/{world['physician'].id}"},
    ]
    refer_down = requests_[f"referral-{down.id}"]
    assert refer_down["code"]["text"] == "下转 Referral down" and refer_down["occurrenceDateTime"]
    assert {"url": tf.EXT_DIRECTION, "valueCode": "down"} in refer_down["extension"]
    assert requests_[f"referral-{up.id}"]["status"] == "revoked"
    # no free text and no names of patients without the identified scope
    text = json.dumps(
        [requests_, _read(client, tok, "Task"), _read(client, tok, "DiagnosticReport")], ensure_ascii=False
    )
    for secret in (QUESTION, OPINION, PARTNER_PATIENT, "张伟", "病情稳定", "床位已满", "二楼全科诊室", "eyJhbGci"):
        assert secret not in text, secret

    tasks = {t["id"]: t for t in _read(client, tok, "Task")}
    assert {k: t["status"] for k, t in tasks.items()} == {
        f"consultation-{asked.id}": "completed",
        f"consultation-{taken.id}": "accepted",
        f"referral-{down.id}": "completed",
        f"referral-{up.id}": "rejected",
    }
    done = tasks[f"consultation-{asked.id}"]
    assert done["basedOn"] == [{"reference": f"ServiceRequest/consultation-{asked.id}"}]
    assert done["output"][0]["valueReference"] == {"reference": f"DiagnosticReport/opinion-{world['opinion'].id}"}
    assert done["businessStatus"]["text"].startswith("会诊意见已确认")
    assert done["identifier"] == sr["identifier"]  # the id both institutions share

    (report,) = _read(client, tok, "DiagnosticReport")
    assert report["id"] == f"opinion-{world['opinion'].id}" and report["status"] == "final"
    assert report["code"]["coding"][0] == {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
    assert report["basedOn"] == [{"reference": f"ServiceRequest/consultation-{asked.id}"}]
    assert {"url": tf.EXT_SIGNER_KID, "valueString": "dr-qian-1"} in report["extension"]
    assert "conclusion" not in report and "presentedForm" not in report


def test_identified_scope_reads_the_text_and_the_signed_opinion(client: FlaskClient, world: dict[str, Any]) -> None:
    allow_identified(world["regulator"])
    tok = scoped(client, world["regulator"].username, ["read:deidentified", "read:identified"])
    requests_ = {r["id"]: r for r in _read(client, tok, "ServiceRequest")}
    sr = requests_[f"consultation-{world['asked'].id}"]
    assert sr["subject"] == {"reference": f"Patient/{world['patient'].id}"}
    assert any(QUESTION in n["text"] for n in sr["note"])
    assert requests_[f"consultation-{world['taken'].id}"]["subject"]["display"] == PARTNER_PATIENT
    assert requests_[f"referral-{world['down'].id}"]["locationCode"] == [{"text": "社区卫生服务中心二楼全科诊室"}]
    (report,) = _read(client, tok, "DiagnosticReport")
    assert OPINION in report["conclusion"]
    (form,) = report["presentedForm"]
    assert form["contentType"] == "application/jose"
    assert base64.b64decode(form["data"]).decode() == world["opinion"].jws
    tasks = {t["id"]: t for t in _read(client, tok, "Task")}
    assert tasks[f"referral-{world['up'].id}"]["statusReason"] == {"text": "本科室床位已满"}
    assert tasks[f"referral-{world['down'].id}"]["output"][0]["valueString"] == "已接诊，继续随访"


def test_the_window_and_paging_cover_both_kinds(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    since = (utcnow() - timedelta(minutes=150)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # requested in the last 150 minutes: the consultation we were asked and the referral up
    recent = _read(client, tok, "ServiceRequest", f"?since={since}")
    assert {r["id"] for r in recent} == {f"consultation-{world['taken'].id}", f"referral-{world['up'].id}"}
    old = (utcnow() - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    older = (utcnow() - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _read(client, tok, "Task", f"?since={old}&until={older}") == []


class _Fixed(EmptySource):
    def __init__(self, items: list[str]) -> None:
        self.items = items

    def count(self, ctx: Any) -> int:
        return len(self.items)

    def page(self, ctx: Any, offset: int, limit: int) -> list[Any]:
        return self.items[offset : offset + limit]


@pytest.mark.parametrize(("offset", "limit"), [(0, 2), (1, 3), (3, 2), (4, 10), (6, 5), (0, 10)])
def test_chained_sources_page_as_one_list(offset: int, limit: int) -> None:
    parts = [_Fixed(["a", "b", "c"]), _Fixed([]), _Fixed(["d", "e"])]
    chained = Chained(parts)
    assert chained.count(None) == 5
    assert chained.page(None, offset, limit) == ["a", "b", "c", "d", "e"][offset : offset + limit]


def test_audit_events_of_consultations_and_referrals_point_at_their_requests(
    client: FlaskClient, world: dict[str, Any]
) -> None:
    with acting_as(Actor(None, "test")), unit_of_work() as s:
        audit.record(s, "consultation.acknowledged", subject_type="consultation", subject_id=world["asked"].id)
        audit.record(s, "referral.outcome_reported", subject_type="referral", subject_id=world["down"].id)
    tok = scoped(client, world["regulator"].username)
    what = {
        e["type"]["code"]: e["entity"][0]["what"]
        for e in _read(client, tok, "AuditEvent")
        if e["type"]["code"] in ("consultation.acknowledged", "referral.outcome_reported")
    }
    assert what == {
        "consultation.acknowledged": {"reference": f"ServiceRequest/consultation-{world['asked'].id}"},
        "referral.outcome_reported": {"reference": f"ServiceRequest/referral-{world['down'].id}"},
    }
