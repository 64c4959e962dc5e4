"""The prescribing page for a child under 6: the guardian is chosen from the people recorded
on the child's account (not typed), the accompanying physician's licence number is checked."""

from __future__ import annotations

from flask import Flask

from clinic.core.db import db
from prescriptions.models import Prescription
from tests.api.prescriptions.test_rx_guardian_api import PHYSICIAN, child_visit
from tests.integration.clinic.visits.test_visit_pages import csrf_of, face_checked, login
from tests.integration.prescriptions.test_rx_pages import form


def test_the_guardian_is_picked_from_the_account(ctx: Flask) -> None:
    v = child_visit(ctx.test_client())
    doc = ctx.test_client()
    login(doc, v["doc"].username)
    face_checked(doc)
    url = f"/physician/visits/{v['visit_id']}/prescribe"
    page = doc.get(url).get_data(as_text=True)
    holder = v["reg"].patient
    assert 'name="guardian_patient_id"' in page and f'value="{holder.id}"' in page and "王芳（父母" in page
    assert 'name="guardian_name"' not in page and 'name="guardian_id_number"' not in page  # nothing typed
    assert str(v["child"].id) not in page.split('name="guardian_patient_id"')[1].split("</select>")[0]

    data = form(v["drugs"]["amlodipine"], days=3, weight_kg="16.5", csrf_token=csrf_of(doc, url))
    physician = {f"physician_{k}": val for k, val in PHYSICIAN.items()}
    bad = doc.post(
        f"{url}/check",
        data={**data, **physician, "physician_license_no": "12345", "guardian_patient_id": str(holder.id)},
    ).get_json()
    (viol,) = bad["violations"]
    assert viol["code"] == "guardian_and_physician_required" and "15位数字" in viol["message"]
    good = doc.post(f"{url}/check", data={**data, **physician, "guardian_patient_id": str(holder.id)}).get_json()
    assert good["ok"] is True, good
    signed = doc.post(url, data={**data, **physician, "guardian_patient_id": str(holder.id), "action": "sign"})
    assert signed.status_code == 302, signed.get_data(as_text=True)[:500]
    rx = db.session.query(Prescription).one()
    assert rx.guardian is not None and rx.guardian["patient_id"] == str(holder.id) and rx.guardian["name"] == "王芳"
