"""调配 and 核对、发药: two pharmacists dispense each prescription (处方管理办法 第三十七条, 处方标准
后记), recorded with their times, audited, and refused in words when the rule is broken."""

from __future__ import annotations

import uuid
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work
from identity.models import Account, Role
from pharmacy.models import Delivery, Review
from tests.api.clinic.regulator.test_regulator_api import read_bundle, scoped
from tests.api.pharmacy.test_pharmacy_review import claim, decide, prescribed, status
from tests.support import factories as f
from tests.support.answers import refusal


def _pharmacist(client: FlaskClient) -> tuple[str, dict[str, str]]:
    account = f.staff(Role.PHARMACIST)
    return str(account.id), f.auth(f.token(client, account.username))


def approved_to_collect(client: FlaskClient) -> dict[str, Any]:
    """An approved prescription the patient collects at the counter (payments off: fee waived)."""
    p = prescribed(client)
    reviewer_id, reviewer = _pharmacist(client)
    assert claim(client, reviewer).status_code == 200
    assert decide(client, reviewer, p["rx"], "approve").status_code == 200
    out = client.post(
        f"/api/v1/prescriptions/{p['rx']}/checkout", json={"collect_at_pharmacy": True}, headers=f.auth(p["token"])
    )
    assert out.status_code == 200 and out.get_json()["paid"] is True, out.get_json()
    return {**p, "reviewer_id": reviewer_id, "reviewer": reviewer}


def dispense(client: FlaskClient, rx: str, h: dict[str, str], body: dict[str, str] | None = None) -> Any:
    url = f"/api/v1/pharmacy/prescriptions/{rx}/dispense"
    return client.post(url, json=body, headers=h) if body is not None else client.post(url, headers=h)


def review_row(rx: str) -> Review:
    row = db.session.get(Review, uuid.UUID(rx), populate_existing=True)
    assert row is not None
    return row


def audit_details(action: str) -> list[dict[str, Any]]:
    return [e.detail for e in db.session.scalars(select(AuditEntry).where(AuditEntry.action == action))]


def test_one_makes_it_up_another_checks_it_on_their_own_screen(client: FlaskClient) -> None:
    p = approved_to_collect(client)
    a_id, a = _pharmacist(client)
    b_id, b = _pharmacist(client)

    made = client.post(f"/api/v1/pharmacy/prescriptions/{p['rx']}/prepare", headers=a)
    assert made.status_code == 200, made.get_json()
    assert made.get_json()["dispensed_by"]["id"] == a_id and made.get_json()["checked_by"] is None
    assert made.get_json()["dispensed_at"]
    assert status(p["rx"]) == "approved"  # made up, not issued yet
    # the one who made it up cannot also check it; a third pharmacist cannot make it up again
    alone = dispense(client, p["rx"], a)
    assert alone.status_code == 422 and alone.get_json()["error"]["code"] == "same_pharmacist"
    _, c = _pharmacist(client)
    again = client.post(f"/api/v1/pharmacy/prescriptions/{p['rx']}/prepare", headers=c)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_prepared"

    issued = dispense(client, p["rx"], b)  # B checks what A made up
    assert issued.status_code == 200, issued.get_json()
    got = issued.get_json()
    assert got["status"] == "dispensed" and got["delivery_status"] == "collect_at_pharmacy"
    assert got["dispensed_by"]["id"] == a_id and got["checked_by"]["id"] == b_id
    assert got["dispensed_by"]["name"] and got["checked_by"]["name"]
    row = review_row(p["rx"])
    assert str(row.prepared_by) == a_id and str(row.checked_by) == b_id
    assert row.prepared_at is not None and row.checked_at is not None and row.prepared_at <= row.checked_at
    assert audit_details("prescription.prepared") == [{"dispensed_by": a_id}]
    (detail,) = audit_details("prescription.dispensing_pharmacists")
    assert detail["dispensed_by"] == a_id and detail["checked_by"] == b_id and detail["recorded_by"] == b_id
    assert refusal(dispense(client, p["rx"], c, {"dispensed_by": a_id})) == (409, "illegal_transition")  # issued once


def test_the_dispenser_names_the_on_duty_colleague_who_checked_it(client: FlaskClient) -> None:
    p = approved_to_collect(client)
    a_id, a = _pharmacist(client)
    b_id, _ = _pharmacist(client)
    # the reviewer may be one of the two: nothing asks for a third person
    issued = dispense(client, p["rx"], a, {"checked_by": p["reviewer_id"]})
    assert issued.status_code == 200, issued.get_json()
    assert issued.get_json()["dispensed_by"]["id"] == a_id
    assert issued.get_json()["checked_by"]["id"] == p["reviewer_id"]
    assert b_id not in {str(review_row(p["rx"]).prepared_by), str(review_row(p["rx"]).checked_by)}


def test_refusals_name_the_rule_and_write_nothing(client: FlaskClient) -> None:
    p = approved_to_collect(client)
    a_id, a = _pharmacist(client)
    b_id, b = _pharmacist(client)
    physician = f.staff(Role.PHYSICIAN)
    physician_id, physician_login = str(physician.id), physician.username

    def refused(resp: Any, http: int, code: str) -> None:
        assert resp.status_code == http and resp.get_json()["error"]["code"] == code, resp.get_json()
        row = review_row(p["rx"])
        assert row.prepared_by is None and row.checked_by is None and status(p["rx"]) == "approved"

    # one pharmacist alone: nobody to check
    refused(dispense(client, p["rx"], a), 422, "checker_required")
    refused(dispense(client, p["rx"], a, {}), 422, "checker_required")
    # the same person twice
    refused(dispense(client, p["rx"], a, {"checked_by": a_id}), 422, "same_pharmacist")
    refused(dispense(client, p["rx"], a, {"dispensed_by": a_id, "checked_by": a_id}), 422, "same_pharmacist")
    # not a pharmacist: a physician, an unknown id, rubbish
    for who in (physician_id, str(uuid.uuid4()), "nobody"):
        refused(dispense(client, p["rx"], a, {"checked_by": who}), 422, "not_a_pharmacist")
        refused(dispense(client, p["rx"], a, {"dispensed_by": who}), 422, "not_a_pharmacist")
    # a pharmacist whose qualification has lapsed, or who is off duty
    lapsed, off = str(f.staff(Role.PHARMACIST).id), str(f.staff(Role.PHARMACIST).id)
    with acting_as(Actor(None, "test")), unit_of_work():
        for acc, field, value in ((lapsed, "qualification_valid_until", None), (off, "on_duty", False)):
            got = db.session.get(Account, uuid.UUID(acc))
            assert got is not None and got.staff is not None
            setattr(got.staff, field, value)
    refused(dispense(client, p["rx"], a, {"checked_by": lapsed}), 422, "not_a_pharmacist")
    refused(dispense(client, p["rx"], a, {"checked_by": off}), 422, "pharmacist_off_duty")
    # the caller must be one of the two
    refused(dispense(client, p["rx"], a, {"dispensed_by": b_id, "checked_by": p["reviewer_id"]}), 422, "not_involved")
    # not a pharmacist calling at all
    doc = f.auth(f.token(client, physician_login))
    refused(dispense(client, p["rx"], doc, {"checked_by": b_id}), 403, "forbidden")
    assert refusal(client.post(f"/api/v1/pharmacy/prescriptions/{p['rx']}/prepare", headers=doc)) == (403, "forbidden")
    assert db.session.scalar(select(Delivery).where(Delivery.prescription_id == uuid.UUID(p["rx"]))) is None
    # and a valid pair still works afterwards
    assert dispense(client, p["rx"], b, {"dispensed_by": a_id}).status_code == 200


def test_only_an_approved_paid_prescription_is_made_up_or_issued(client: FlaskClient) -> None:
    p = prescribed(client)  # pending review
    a_id, a = _pharmacist(client)
    _, b = _pharmacist(client)
    for resp in (
        client.post(f"/api/v1/pharmacy/prescriptions/{p['rx']}/prepare", headers=a),
        dispense(client, p["rx"], b, {"dispensed_by": a_id}),
    ):
        assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "illegal_transition", resp.get_json()
    assert review_row(p["rx"]).prepared_by is None and status(p["rx"]) == "pending_review"
    # approved, but the patient has not said where it goes yet
    assert claim(client, a).status_code == 200 and decide(client, a, p["rx"], "approve").status_code == 200
    early = client.post(f"/api/v1/pharmacy/prescriptions/{p['rx']}/prepare", headers=a)
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "no_delivery_address"


def test_the_regulator_reads_who_dispensed_and_who_checked(client: FlaskClient) -> None:
    p = approved_to_collect(client)
    a_id, a = _pharmacist(client)
    b_id, _ = _pharmacist(client)
    assert dispense(client, p["rx"], a, {"checked_by": b_id}).status_code == 200
    tok = scoped(client, f.staff(Role.REGULATOR).username)
    data = read_bundle(client.get("/api/v1/regulator/fhir/MedicationRequest", headers=f.auth(tok)))
    (mr,) = [e["resource"] for e in data["entry"] if e["resource"]["groupIdentifier"]["value"] == p["rx"]]
    (ext,) = [e for e in mr["extension"] if e["url"] == "urn:clinic:fhir:dispensing-pharmacists"]
    parts = {e["url"]: e for e in ext["extension"]}
    assert parts["packager"]["valueReference"]["reference"] == f"Practitioner/{a_id}"
    assert parts["finalchecker"]["valueReference"]["reference"] == f"Practitioner/{b_id}"
    assert parts["packagedAt"]["valueDateTime"] and parts["checkedAt"]["valueDateTime"]
