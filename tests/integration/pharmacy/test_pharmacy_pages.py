"""The pharmacist's queue and review screen, and the patient's tracking page, over the session login."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import factories as f
from tests.support.answers import refusal
from tests.support.rx_factories import prescribed


def login(app: Flask, username: str) -> FlaskClient:
    c = app.test_client()
    csrf = extract_csrf(c.get("/login").get_data(as_text=True))
    resp = c.post("/login", data={"username": username, "password": f.PASSWORD, "csrf_token": csrf})
    assert resp.status_code in (302, 303), resp.get_data(as_text=True)[:300]
    return c


def test_pharmacist_claims_reviews_and_patient_tracks(client: FlaskClient, ctx: Flask) -> None:
    v = prescribed(client)
    rx = v["rx"]
    ph = login(ctx, f.staff(Role.PHARMACIST).username)
    page = ph.get("/pharmacy/queue").get_data(as_text=True)
    assert 'id="waiting"' in page and "<strong>1</strong>" in page
    claimed = ph.post("/pharmacy/queue/claim", data={"csrf_token": extract_csrf(page)})
    assert claimed.status_code == 302 and claimed.headers["Location"].endswith(f"/pharmacy/review/{rx}")
    screen = ph.get(f"/pharmacy/review/{rx}").get_data(as_text=True)
    assert "苯磺酸氨氯地平片" in screen and 'id="signature" class="verdict ok"' in screen and "I10" in screen
    done = ph.post(
        f"/pharmacy/review/{rx}",
        data={"csrf_token": extract_csrf(screen), "decision": "approve"},
        follow_redirects=True,
    )
    assert done.status_code == 200 and "审核通过" in done.get_data(as_text=True)
    assert 'id="to-dispense"' in ph.get("/pharmacy/to-dispense").get_data(as_text=True)  # the menu's 待发药

    patient = login(ctx, v["reg"].account.username)
    track = patient.get(f"/prescriptions/{rx}/track")
    assert track.status_code == 200 and 'id="checkout"' in track.get_data(as_text=True)
    saved = patient.post(
        f"/prescriptions/{rx}/track",
        data={"csrf_token": extract_csrf(track.get_data(as_text=True)), "collect": "1"},
    )
    assert saved.status_code == 200 and 'id="paid"' in saved.get_data(as_text=True)
    assert refusal(ph.get(f"/prescriptions/{rx}/track")) == (403, "forbidden")
    # The patient reads the statuses in Chinese, not the API's codes.
    page = saved.get_data(as_text=True)
    assert '<span class="badge approved">审核通过</span>' in page
    assert '<p id="delivery-status" data-status="not_dispensed">尚未发药' in page
    # 调配 by this pharmacist, 核对、发药 by another on their own screen
    queue = ph.get("/pharmacy/queue").get_data(as_text=True)
    alone = ph.post(f"/pharmacy/dispense/{rx}", data={"csrf_token": extract_csrf(queue), "four_checks": "1"})
    assert alone.status_code == 302  # nobody named to check: refused, nothing dispensed
    assert "须由另一位药师核对" in ph.get("/pharmacy/to-dispense").get_data(as_text=True)
    prepared = ph.post(f"/pharmacy/prepare/{rx}", data={"csrf_token": extract_csrf(queue)})
    assert prepared.status_code == 302
    assert "本人已调配" in ph.get("/pharmacy/to-dispense").get_data(as_text=True)
    checker = f.staff(Role.PHARMACIST)
    ph2 = login(ctx, checker.username)
    listing = ph2.get("/pharmacy/to-dispense").get_data(as_text=True)
    assert "已调配" in listing and "核对无误，发药" in listing
    unticked = ph2.post(f"/pharmacy/dispense/{rx}", data={"csrf_token": extract_csrf(listing)})
    assert unticked.status_code == 302 and "四查十对" in ph2.get("/pharmacy/to-dispense").get_data(as_text=True)
    dispensed = ph2.post(f"/pharmacy/dispense/{rx}", data={"csrf_token": extract_csrf(listing), "four_checks": "1"})
    assert dispensed.status_code == 302
    after = ph2.get("/pharmacy/to-dispense").get_data(as_text=True)
    assert "已发药；配送状态：请到药房自取" in after and f"/pharmacy/label/{rx}" in after
    label_page = ph2.get(f"/pharmacy/label/{rx}").get_data(as_text=True)
    assert checker.staff is not None and checker.staff.name in label_page
    label = ph.get(f"/pharmacy/label/{rx}").get_data(as_text=True)
    assert "苯磺酸氨氯地平片" in label and "每日一次" in label
    page = patient.get(f"/prescriptions/{rx}/track").get_data(as_text=True)
    assert '<span class="badge dispensed">已发药</span>' in page
    assert '<p id="delivery-status" data-status="collect_at_pharmacy">请到药房自取' in page
    assert "collect_at_pharmacy<" not in page and ">dispensed<" not in page


@pytest.mark.parametrize("rx_id", ["not-a-uuid", str(uuid.uuid4())])
@pytest.mark.parametrize("page", ["review", "label"])
def test_an_unqualified_pharmacist_is_refused_before_the_prescription_is_looked_up(
    ctx: Flask, rx_id: str, page: str
) -> None:
    """On the pages as on the API: not_qualified, whether the id is malformed or unknown."""
    expired = f.staff(Role.PHARMACIST, qualification_valid_until=date.today() - timedelta(days=1))
    assert refusal(login(ctx, expired.username).get(f"/pharmacy/{page}/{rx_id}")) == (403, "not_qualified")
    assert refusal(login(ctx, f.staff(Role.PHARMACIST).username).get(f"/pharmacy/{page}/{rx_id}")) == (404, "not_found")
