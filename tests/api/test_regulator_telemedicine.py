"""Referrals between institutions in the regulators' FHIR interface (issue 19 item 6):
ServiceRequest and Task, valid R4 (re-read with FHIR
4.0.1 models), in both roles an institution can play, joined across institutions by the
shared Task identifier, de-identified unless the scope allows identity."""

from __future__ import annotations

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
from clinic.regulator.fhir import EmptySource
from clinic.telemedicine.models import PartnerInstitution, Referral, ReferralDiagnosis
from identity.models import Role
from tests.api.test_regulator_api import allow_identified, read_bundle, scoped
from tests.support import factories as f

FHIR = "/api/v1/regulator/fhir"
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
        s.add_all([down, up])
        s.flush()
        s.add(
            ReferralDiagnosis(
                referral_id=down.id, icd10="I10", name="高血压", institution="甲医院", diagnosed_on=now.date()
            )
        )
    return {
        "physician": physician,
        "patient": reg.patient,
        "down": down,
        "up": up,
        "regulator": f.staff(Role.REGULATOR),
    }


def _read(client: FlaskClient, tok: str, resource: str, query: str = "") -> list[dict[str, Any]]:
    data = read_bundle(client.get(f"{FHIR}/{resource}{query}", headers=f.auth(tok)))
    assert data["total"] == len(data.get("entry", []))
    return [e["resource"] for e in data.get("entry", [])]


def test_referrals_are_valid_r4_and_deidentified(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    down, up = world["down"], world["up"]
    requests_ = {r["id"]: r for r in _read(client, tok, "ServiceRequest")}
    assert set(requests_) == {f"referral-{down.id}", f"referral-{up.id}"}

    sr = requests_[f"referral-{down.id}"]
    assert sr["identifier"] == [{"system": tf.SYS_TASK, "value": down.shared_id}]
    assert (sr["status"], sr["intent"]) == ("completed", "order")
    assert sr["code"]["text"] == "下转 Referral down" and sr["occurrenceDateTime"]
    assert {"url": tf.EXT_DIRECTION, "valueCode": "down"} in sr["extension"]
    assert {"url": tf.EXT_ROLE, "valueCode": "sending"} in sr["extension"]
    assert sr["requester"] == {"reference": f"Practitioner/{world['physician'].id}"}
    assert sr["performer"][0] == {
        "identifier": {"system": "urn:clinic:identifier:practice-license", "value": "PDY12345678"},
        "display": "乙市第一人民医院",
    }
    assert sr["reasonCode"][0]["coding"][0]["code"] == "I10"
    # our patient by pseudonym; the partner's patient by a pseudonym of the partner and the task
    assert sr["subject"]["reference"].startswith("Patient/")
    assert str(world["patient"].id) not in sr["subject"]["reference"]
    theirs = requests_[f"referral-{up.id}"]
    assert theirs["status"] == "revoked"
    assert theirs["subject"]["identifier"]["system"] == tf.SYS_PARTNER_PATIENT and "display" not in theirs["subject"]
    assert theirs["performer"] == [
        {"reference": "Organization/institution"},
        {"reference": f"Practitioner/{world['physician'].id}"},
    ]

    tasks = {t["id"]: t for t in _read(client, tok, "Task")}
    assert {k: t["status"] for k, t in tasks.items()} == {
        f"referral-{down.id}": "completed",
        f"referral-{up.id}": "rejected",
    }
    done = tasks[f"referral-{down.id}"]
    assert done["basedOn"] == [{"reference": f"ServiceRequest/referral-{down.id}"}]
    assert done["identifier"] == sr["identifier"]  # the id both institutions share
    assert done["businessStatus"]["text"].startswith("接诊结果已回报")
    assert done["executionPeriod"]["start"] and done["executionPeriod"]["end"]
    # no free text and no names of patients without the identified scope
    text = json.dumps([requests_, tasks], ensure_ascii=False)
    for secret in (PARTNER_PATIENT, "张伟", "病情稳定", "床位已满", "二楼全科诊室", "已接诊，继续随访"):
        assert secret not in text, secret


def test_identified_scope_reads_names_and_text(client: FlaskClient, world: dict[str, Any]) -> None:
    allow_identified(world["regulator"])
    tok = scoped(client, world["regulator"].username, ["read:deidentified", "read:identified"])
    requests_ = {r["id"]: r for r in _read(client, tok, "ServiceRequest")}
    sr = requests_[f"referral-{world['down'].id}"]
    assert sr["subject"] == {"reference": f"Patient/{world['patient'].id}"}
    assert any("病情稳定" in n["text"] for n in sr["note"])
    assert sr["locationCode"] == [{"text": "社区卫生服务中心二楼全科诊室"}]
    assert requests_[f"referral-{world['up'].id}"]["subject"]["display"] == PARTNER_PATIENT
    tasks = {t["id"]: t for t in _read(client, tok, "Task")}
    assert tasks[f"referral-{world['up'].id}"]["statusReason"] == {"text": "本科室床位已满"}
    assert tasks[f"referral-{world['down'].id}"]["output"][0]["valueString"] == "已接诊，继续随访"


def test_the_window_selects_by_the_request_time(client: FlaskClient, world: dict[str, Any]) -> None:
    tok = scoped(client, world["regulator"].username)
    since = (utcnow() - timedelta(minutes=150)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = _read(client, tok, "ServiceRequest", f"?since={since}")
    assert [r["id"] for r in recent] == [f"referral-{world['up'].id}"]  # sent 2 h ago; the other 6 h
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
    chained = tf.Chained(parts)
    assert chained.count(None) == 5
    assert chained.page(None, offset, limit) == ["a", "b", "c", "d", "e"][offset : offset + limit]


def test_audit_events_of_referrals_point_at_their_requests(client: FlaskClient, world: dict[str, Any]) -> None:
    with acting_as(Actor(None, "test")), unit_of_work() as s:
        audit.record(s, "referral.outcome_reported", subject_type="referral", subject_id=world["down"].id)
    tok = scoped(client, world["regulator"].username)
    what = [
        e["entity"][0]["what"]
        for e in _read(client, tok, "AuditEvent")
        if e["type"]["code"] == "referral.outcome_reported"
    ]
    assert what == [{"reference": f"ServiceRequest/referral-{world['down'].id}"}]
