"""我的处方 over HTTP: the list (API and page), the patient's own PDF, the address given
with official division codes and a mainland mobile (refusals name the field, nothing is
stored), the saved address shown back, and the reminder before an unpaid prescription expires."""

from __future__ import annotations

import uuid
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.notifications.models import InboxNotification
from pharmacy import checkout
from pharmacy.models import Review
from prescriptions.models import Prescription
from tests.conftest import extract_csrf
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.rx_factories import approved


def login(client: FlaskClient, username: str) -> None:
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    assert (
        client.post("/login", data={"username": username, "password": f.PASSWORD, "csrf_token": csrf}).status_code
        == 302
    )


def test_the_list_the_pdf_and_other_accounts(ctx: Flask, client: FlaskClient) -> None:
    p = approved(client)
    h = f.auth(p["token"])
    listed = client.get("/api/v1/prescriptions", headers=h).get_json()["items"]
    assert [x["id"] for x in listed] == [p["rx"]]
    first = listed[0]
    assert first["status"] == "approved" and first["visit_id"] == p["visit_id"] and first["physician"]["name"]
    assert first["items"][0]["name"] and first["delivery_status"] == "not_dispensed" and first["fee_fen"] == 0
    pdf = client.get(f"/api/v1/prescriptions/{p['rx']}/document", headers=h)
    assert pdf.status_code == 200 and pdf.data[:4] == b"%PDF"

    other = f.token(client, f.patient().account.username)
    assert client.get("/api/v1/prescriptions", headers=f.auth(other)).get_json()["items"] == []
    assert refusal(client.get(f"/api/v1/prescriptions/{p['rx']}/document", headers=f.auth(other))) == (404, "not_found")
    body = {"recipient_name": "李四", "phone": "13800138000", "region_code": "110105", "address": "示范路1号"}
    assert refusal(client.post(f"/api/v1/prescriptions/{p['rx']}/checkout", json=body, headers=f.auth(other))) == (
        404,
        "not_found",
    )

    page = ctx.test_client()
    login(page, p["reg"].account.username)
    html = page.get("/my/prescriptions").get_data(as_text=True)
    assert p["rx"] in html and "审核通过" in html
    own = page.get(f"/prescriptions/{p['rx']}/pdf")
    assert own.status_code == 200 and own.data[:4] == b"%PDF"
    room = page.get(f"/visits/{p['visit_id']}").get_data(as_text=True)
    assert 'id="visit-prescriptions"' in room and f"/prescriptions/{p['rx']}/track" in room


def test_addresses_are_refused_by_field_in_words_and_nothing_is_stored(ctx: Flask, client: FlaskClient) -> None:
    p = approved(client)
    h = f.auth(p["token"])
    url = f"/api/v1/prescriptions/{p['rx']}/checkout"
    bad = client.post(
        url, json={"recipient_name": "", "phone": "12345", "region_code": "999999", "address": ""}, headers=h
    )
    assert bad.status_code == 422
    err = bad.get_json()["error"]
    assert err["code"] == "invalid"
    assert {v["field"] for v in err["violations"]} == {"recipient_name", "phone", "region_code", "address"}
    hk = client.post(
        url,
        json={"recipient_name": "张三", "phone": "13800138000", "region_code": "810000", "address": "弥敦道1号"},
        headers=h,
    )
    assert hk.status_code == 422 and [v["field"] for v in hk.get_json()["error"]["violations"]] == ["region_code"]
    stored = db.session.get(Review, uuid.UUID(p["rx"]), populate_existing=True)
    assert stored is not None and stored.recipient_name is None and stored.region_code is None

    # on the page: the refusal names the field in Chinese, never its API name
    page = ctx.test_client()
    login(page, p["reg"].account.username)
    track = f"/prescriptions/{p['rx']}/track"
    csrf = extract_csrf(page.get(track).get_data(as_text=True))
    form = {
        "csrf_token": csrf,
        "recipient_name": "张三",
        "phone": "12345",
        "region_code": "110105",
        "address": "示范路1号",
    }
    html = page.post(track, data=form).get_data(as_text=True)
    assert "收件人手机号" in html and "phone" not in html.split("flash error")[1][:200]

    good = client.post(
        url,
        json={"recipient_name": "张三", "phone": "138 0013 8000", "region_code": "110105", "address": "示范路1号"},
        headers=h,
    )
    assert good.status_code == 200, good.get_json()
    stored = db.session.get(Review, uuid.UUID(p["rx"]), populate_existing=True)
    assert stored is not None and stored.recipient_phone == "+8613800138000" and stored.region_code == "110105"
    shown = page.get(track).get_data(as_text=True)
    assert "北京市 朝阳区" in shown and 'value="110105" selected' in shown and 'id="region-picker"' in shown


def test_the_picker_lists_come_from_the_division_codes(ctx: Flask) -> None:
    web = ctx.test_client()
    cities = web.get("/regions?parent=44").get_json()["items"]
    assert {"code": "4403", "name": "深圳市"} in cities
    districts = web.get("/regions?level=district&parent=4403").get_json()["items"]
    assert {"code": "440305", "name": "南山区"} in districts
    # a municipality: the city level is itself, its districts hang under it
    assert web.get("/regions?parent=11").get_json()["items"] == [{"code": "11", "name": "北京市"}]
    assert {"code": "110105", "name": "朝阳区"} in web.get("/regions?level=district&parent=11").get_json()["items"]
    assert web.get("/regions?parent=99").get_json()["items"] == []


def test_an_unpaid_prescription_about_to_expire_is_reminded_once(ctx: Flask, client: FlaskClient) -> None:
    p = approved(client)
    rx_id = uuid.UUID(p["rx"])
    db.session.execute(
        update(Review).where(Review.prescription_id == rx_id).values(fee_waived=False, paid_at=None, fee_fen=3000)
    )
    db.session.execute(
        update(Prescription).where(Prescription.id == rx_id).values(expires_at=utcnow() + timedelta(hours=6))
    )
    db.session.commit()
    with acting_as(Actor(None, "test")), unit_of_work():
        assert checkout.remind_expiring_unpaid(utcnow(), timedelta(hours=24)) == 1
    with acting_as(Actor(None, "test")), unit_of_work():
        assert checkout.remind_expiring_unpaid(utcnow(), timedelta(hours=24)) == 0
    notes = db.session.scalars(select(InboxNotification).where(InboxNotification.kind == "expiring")).all()
    assert len(notes) == 1 and notes[0].link == f"/prescriptions/{p['rx']}/track"
