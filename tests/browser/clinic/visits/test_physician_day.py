"""A physician's day at a desk (1366×768), by the links and buttons on the screen only:
the face check, the workstation home's counts and lists, confirm a proof, accept a visit,
prescribe, see it come back from the pharmacist with the reasons (the home refreshes by
itself), revise it ("修改后重新签署", filled with the returned items) and sign it again."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from playwright.sync_api import expect

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from identity import face_services
from identity import services as identity
from identity.models import Role
from prescriptions.models import Prescription
from tests.browser.staff import assert_readable, desk, log_in
from tests.support import clinic_factories as cf
from tests.support import faces as F
from tests.support import factories as f
from tests.support.live_server import LiveServer
from tests.support.rx_factories import seed


def test_a_physicians_day(
    browser: Any, live_server: LiveServer, client: FlaskClient, screenshot_dir: Path, backend: dict[str, Any]
) -> None:
    cf.catalog()
    seed()
    doctor = f.staff(Role.PHYSICIAN, department="cardiology")
    other = f.staff(Role.PHYSICIAN, department="cardiology")
    with acting_as(Actor(None, "test")), unit_of_work():
        face_services.enroll_face(identity.get_account(doctor.id), F.astronaut())
    # a proof waiting for confirmation, and a patient waiting for a return visit
    proof_owner = f.patient(name="李四")
    cf.diagnosis(proof_owner.patient.id, proof_owner.account, "I10")
    waiting = cf.open_visit(client, other)
    pharmacist = f.staff(Role.PHARMACIST)
    ph = f.auth(f.token(client, pharmacist.username))

    with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-physician") as (page, shot):
        log_in(page, doctor.username)
        expect(page).to_have_url(re.compile(r"/face"))
        selfie = F.cropped(F.astronaut(), 0.2)
        page.set_input_files("#face-file", {"name": "selfie.jpg", "mimeType": "image/jpeg", "buffer": selfie})
        page.locator("#face-form button[type=submit]").click()
        expect(page.locator("#face-text")).to_contain_text("人脸核验有效")
        expect(page.locator("#face-recheck")).to_be_visible()
        expect(page.locator('#tiles [data-panel="proofs"] .count')).to_have_text("1")
        expect(page.locator('#tiles [data-panel="waiting"] .count')).to_have_text("1")
        assert_readable(page)
        shot("01-home")

        # confirm the proof from the home page's list
        page.locator("#panel-proofs a", has_text="李四").click()
        page.locator("#confirm").click()
        page.get_by_role("link", name="工作台").click()
        expect(page.locator('#tiles [data-panel="proofs"] .count')).to_have_text("0")

        # accept the waiting visit, then prescribe
        page.locator(f'#panel-waiting tr[data-id="{waiting["visit_id"]}"] a').click()
        page.locator("#accept").click()
        expect(page.locator("#history")).to_be_visible()
        assert_readable(page)
        shot("02-room")
        page.locator("#prescribe-link").click()
        page.fill("#q", "氨氯地平")
        page.locator("#results li.result", has_text="苯磺酸氨氯地平片").first.locator("button.add").click()
        expect(page.locator("#rules-ok")).to_be_visible()
        assert_readable(page)
        page.locator("#sign").click()
        expect(page.locator('#prescription[data-status="pending_review"]')).to_be_visible()
        first_id = page.url.rsplit("/", 1)[-1]

        # the pharmacist returns it; the home page shows it by itself
        page.get_by_role("link", name="工作台").click()
        expect(page.locator('#tiles [data-panel="returned"] .count')).to_have_text("0")
        assert client.post("/api/v1/pharmacy/queue/claim", headers=ph).status_code == 200
        returned = client.post(
            f"/api/v1/pharmacy/prescriptions/{first_id}/review",
            json={"decision": "return", "reasons": [{"code": "dose", "note": "请调整为每次2片"}]},
            headers=ph,
        )
        assert returned.status_code == 200, returned.get_json()
        expect(page.locator('#tiles [data-panel="returned"] .count')).to_have_text("1", timeout=30_000)
        expect(page.locator("#panel-returned")).to_contain_text("剂量、用法不适宜")
        assert_readable(page)
        shot("03-returned-alert")

        page.locator("#panel-returned a", has_text="修改后重新签署").click()
        expect(page.locator("#revising")).to_contain_text("请调整为每次2片")
        expect(page.locator("#items li.item")).to_have_count(1)
        assert_readable(page)
        shot("04-revise")
        page.fill('input[name="items-0-dose"]', "2")
        page.fill('input[name="items-0-quantity"]', "14")
        page.locator("#sign").click()
        expect(page.locator('#prescription[data-status="pending_review"]')).to_be_visible()
        expect(page.locator("#replaces")).to_be_visible()
        assert_readable(page)
        shot("05-resigned")
        new_id = page.url.rsplit("/", 1)[-1]

    revised = db.session.get(Prescription, uuid.UUID(new_id), populate_existing=True)
    assert revised is not None and str(revised.replaces_id) == first_id
