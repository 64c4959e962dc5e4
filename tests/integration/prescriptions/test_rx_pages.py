"""The prescribing pages over the test client: the live rule check, the face gate with
the draft kept, signing, the physician's PDF, who may see what; the admin formulary
import with its progress and summary (the browser journey is tests/browser/prescriptions/test_prescribing.py)."""

from __future__ import annotations

import io
import time
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from clinic.core.db import db
from identity.models import Role
from prescriptions.models import Prescription
from tests.integration.clinic.visits.test_visit_pages import csrf_of, face_checked, login
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.rx_factories import visit_in_progress


def form(drug_id: str, days: int = 7, **extra: str) -> dict[str, str]:
    return {
        "items-0-drug_id": drug_id,
        "items-0-dose": "1",
        "items-0-unit": "片",
        "items-0-frequency": "每日一次",
        "items-0-route": "口服",
        "items-0-days": str(days),
        "items-0-quantity": str(days),
        **extra,
    }


def physician(ctx: Flask) -> tuple[FlaskClient, dict[str, Any], str]:
    v = visit_in_progress(ctx.test_client())
    doc = ctx.test_client()
    login(doc, v["doc"].username)
    face_checked(doc)
    url = f"/physician/visits/{v['visit_id']}/prescribe"
    return doc, v, url


def test_the_check_shows_every_rule_live_and_signing_needs_a_fresh_face(ctx: Flask) -> None:
    doc, v, url = physician(ctx)
    assert f'href="{url}"' in doc.get(f"/visits/{v['visit_id']}").get_data(as_text=True)  # the room links here
    page = doc.get(url)
    assert page.status_code == 200 and 'id="rx-form"' in page.get_data(as_text=True)
    csrf = csrf_of(doc, url)
    headers = {"X-CSRFToken": csrf}

    found = doc.get(f"{url}/drugs?q=氨氯地平").get_json()["items"]
    assert found and found[0]["id"] == v["drugs"]["amlodipine"]

    # too long for the 7-day limit: the rule says so, by code, in the UI language (zh-CN default)
    body = doc.post(f"{url}/check", data=form(v["drugs"]["amlodipine"], 10), headers=headers).get_json()
    assert body["ok"] is False
    assert [x["code"] for x in body["violations"]] == ["supply_exceeds_limit"]
    assert "10天" in body["violations"][0]["message"]
    doc.set_cookie("lang", "en")  # the language switch; pages ignore the browser's Accept-Language
    en = doc.post(f"{url}/check", data=form(v["drugs"]["amlodipine"], 10), headers={**headers, "Accept-Language": "en"})
    assert "exceeds the limit of 7" in en.get_json()["violations"][0]["message"]
    doc.delete_cookie("lang")
    # a field that is not valid is named, nothing is evaluated
    bad = doc.post(f"{url}/check", data=form(v["drugs"]["amlodipine"], 0), headers=headers).get_json()
    assert "items-0-days" in bad["errors"] and bad["ok"] is False
    # without the CSRF token the check is refused
    assert refusal(doc.post(f"{url}/check", data=form(v["drugs"]["amlodipine"]))) == (400, "bad_request")
    ok = doc.post(f"{url}/check", data=form(v["drugs"]["amlodipine"]), headers=headers).get_json()
    refs = ok.pop("references")
    assert ok == {"ok": True, "violations": [], "errors": {}, "names": [ok["names"][0]]}
    assert refs[0]["frequencies"] == "每日一次" and "最大 10 mg" in refs[0]["adult"]  # the dosing reference

    # signing refused by a rule: the page shows the codes, nothing stored
    resp = doc.post(url, data={**form(v["drugs"]["amlodipine"], 10), "action": "sign", "csrf_token": csrf})
    assert resp.status_code == 422 and 'data-code="supply_exceeds_limit"' in resp.get_data(as_text=True)
    assert db.session.query(Prescription).count() == 0

    # the face check is too old: to the face page and back here, with the draft kept
    face_checked(doc, time.time() - 3600)
    resp = doc.post(url, data={**form(v["drugs"]["amlodipine"], 6), "action": "sign", "csrf_token": csrf})
    assert resp.status_code == 302 and "/face?next=" in resp.headers["Location"]
    assert db.session.query(Prescription).count() == 0
    face_checked(doc)
    again = doc.get(url).get_data(as_text=True)
    assert 'name="items-0-days" value="6"' in again and v["drugs"]["amlodipine"] in again
    assert "6天" not in again  # the kept draft breaks no rule

    resp = doc.post(url, data={**form(v["drugs"]["amlodipine"], 6), "action": "sign", "csrf_token": csrf})
    assert resp.status_code == 302 and "/physician/prescriptions/" in resp.headers["Location"]
    rx_page = doc.get(resp.headers["Location"])
    html = rx_page.get_data(as_text=True)
    assert rx_page.status_code == 200 and 'data-status="pending_review"' in html
    rx = db.session.query(Prescription).one()
    assert rx.items[0].days == 6 and str(rx.physician_id) == str(v["doc"].id)
    pdf = doc.get(f"/physician/prescriptions/{rx.id}/document")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF") and pdf.mimetype == "application/pdf"
    # the draft is gone after signing
    assert 'name="items-0-drug_id"' not in doc.get(url).get_data(as_text=True)

    # another physician sees neither the visit nor the prescription
    other = f.staff(Role.PHYSICIAN, department="cardiology")
    them = ctx.test_client()
    login(them, other.username)
    face_checked(them)
    assert refusal(them.get(url)) == (404, "not_found")
    assert refusal(them.get(f"/physician/prescriptions/{rx.id}")) == (404, "not_found")
    assert refusal(them.get(f"/physician/prescriptions/{rx.id}/document")) == (404, "not_found")


def test_the_page_works_without_javascript_search_add_remove(ctx: Flask) -> None:
    doc, v, url = physician(ctx)
    csrf = csrf_of(doc, url)
    html = doc.post(url, data={"action": "search", "q": "羟考酮", "csrf_token": csrf}).get_data(as_text=True)
    assert 'name="add"' in html and "盐酸羟考酮缓释片" in html
    html = doc.post(url, data={"add": v["drugs"]["amlodipine"], "csrf_token": csrf}).get_data(as_text=True)
    assert 'name="items-0-drug_id" value="{}"'.format(v["drugs"]["amlodipine"]) in html
    assert 'id="rules-ok"' in html and 'id="rules-ok" hidden' not in html
    html = doc.post(url, data={"remove": "0", **form(v["drugs"]["amlodipine"]), "csrf_token": csrf}).get_data(
        as_text=True
    )
    assert 'name="items-0-drug_id"' not in html


def test_pages_refuse_other_roles(ctx: Flask) -> None:
    v = visit_in_progress(ctx.test_client())
    patient = ctx.test_client()
    login(patient, v["reg"].account.username)
    assert refusal(patient.get(f"/physician/visits/{v['visit_id']}/prescribe")) == (403, "forbidden")
    assert refusal(patient.get("/admin/formulary")) == (403, "forbidden")
    anonymous = ctx.test_client()
    assert anonymous.get("/admin/formulary").status_code == 302


CSV = (
    "name,form,strength,route,generic_name,ingredients,cold_chain\n"
    "盐酸羟考酮缓释片,缓释片,10mg,口服,羟考酮,,false\n"
    "苯磺酸氨氯地平片(院内),片剂,5mg,口服,氨氯地平,,false\n"
    ",片剂,5mg,口服,,,false\n"
    "某某片,片剂,5mg,口服,,,maybe\n"
)


def test_admin_imports_a_formulary_and_sees_progress_then_the_summary(ctx: Flask) -> None:
    f.institution()
    admin = f.staff(Role.ADMIN)
    page = ctx.test_client()
    login(page, admin.username)
    assert page.get("/admin/formulary").status_code == 200
    csrf = csrf_of(page, "/admin/formulary")
    refused = page.post("/admin/formulary", data={"csrf_token": csrf})  # no file
    assert refused.status_code == 422 and 'class="field-error">该字段是必填字段。' in refused.get_data(as_text=True)
    resp = page.post(
        "/admin/formulary",
        data={"csrf_token": csrf, "file": (io.BytesIO(CSV.encode()), "formulary.csv")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 302
    run_url = resp.headers["Location"]
    for _ in range(100):
        progress = page.get(run_url + "/progress").get_json()
        if progress["state"] != "running":
            break
        assert progress["done"] <= progress["total"] or progress["total"] == 0
        time.sleep(0.1)
    assert progress["state"] == "done", progress
    assert (progress["done"], progress["total"]) == (4, 4)
    report = progress["report"]
    assert report["rows_read"] == 4 and report["imported"] == 2
    assert [(c["row"], c["control_class"]) for c in report["controlled"]] == [(2, "narcotic")]
    assert [r["row"] for r in report["refused"]] == [4, 5]
    html = page.get(run_url).get_data(as_text=True)
    assert 'id="import-summary"' in html and 'data-row="2"' in html and "麻醉药品" in html and ">narcotic<" not in html
    assert "cold_chain must be true or false" in html
