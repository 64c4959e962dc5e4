"""Video in the visit room, tested up to the SDK's connection (which needs Twilio's cloud):
the SDK is served by the app from the npm install (package-lock.json), the room page loads
it and its own static script (no inline script), and the page's token route answers the
visit's participants only, while the visit is in progress, with a Twilio Video grant for
the visit's room."""

from __future__ import annotations

import re

import jwt
from flask import Flask
from flask.testing import FlaskClient

from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal


def login(client: FlaskClient, username: str) -> None:
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"username": username, "password": f.PASSWORD, "csrf_token": csrf})
    assert resp.status_code == 302


def test_the_sdk_is_served_by_the_app_itself(ctx: Flask) -> None:
    sdk = ctx.test_client().get("/vendor/twilio-video.min.js")
    assert sdk.status_code == 200 and b"Twilio" in sdk.data[:5000] and len(sdk.data) > 100_000
    assert "javascript" in sdk.headers["Content-Type"]


def test_only_participants_of_a_visit_in_progress_get_a_video_token(ctx: Flask) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    api = ctx.test_client()
    v = cf.open_visit(api, doc)
    vid = v["visit_id"]
    patient = ctx.test_client()
    login(patient, v["reg"].account.username)
    waiting = patient.get(f"/visits/{vid}/video-token")
    assert refusal(waiting) == (409, "visit_not_in_progress")  # not in progress yet
    assert 'id="video"' not in patient.get(f"/visits/{vid}").get_data(as_text=True)

    assert api.post(f"/api/v1/visits/{vid}/accept", headers=f.auth(cf.face_token(doc))).status_code == 200
    room = patient.get(f"/visits/{vid}").get_data(as_text=True)
    assert 'id="video-join"' in room and 'id="video-camera"' in room and 'id="video-mic"' in room
    assert '<script src="/vendor/twilio-video.min.js"></script>' in room and "video.js" in room
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", room) and "onclick" not in room  # no inline script
    got = patient.get(f"/visits/{vid}/video-token")
    assert got.status_code == 200
    grant = got.get_json()
    assert grant["room"] == f"visit-{vid}"
    claims = jwt.decode(grant["token"], options={"verify_signature": False})
    assert claims["grants"]["video"]["room"] == f"visit-{vid}"

    stranger = ctx.test_client()
    login(stranger, f.patient().account.username)
    assert refusal(stranger.get(f"/visits/{vid}/video-token")) == (404, "not_found")
    other_doc = f.staff(Role.PHYSICIAN, department="cardiology")
    colleague = ctx.test_client()
    login(colleague, other_doc.username)
    with colleague.session_transaction() as sess:
        sess["face_at"] = 2_000_000_000
    assert colleague.get(f"/visits/{vid}/video-token").status_code in (403, 404)
