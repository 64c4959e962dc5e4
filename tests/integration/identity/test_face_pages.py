"""The physician's page login is password, then face; the demo physicians' enrolled photos."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login import login_user

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work
from identity import face_services, services, views
from identity.models import Account, Role
from tests.conftest import extract_csrf
from tests.support import faces as F
from tests.support import factories as f


def enrolled_physician(photo: bytes) -> Account:
    doctor = f.staff(Role.PHYSICIAN)
    with acting_as(Actor(None, "test")), unit_of_work():
        face_services.enroll_face(services.get_account(doctor.id), photo)
    return doctor


def page_login(client: FlaskClient, username: str) -> str:
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"username": username, "password": f.PASSWORD, "csrf_token": csrf})
    assert resp.status_code == 302
    return resp.headers["Location"]


def test_password_then_face_before_any_physician_page(client: FlaskClient, ctx: Flask) -> None:
    doctor = enrolled_physician(F.fr_images()["obama"])
    assert page_login(client, doctor.username).endswith("/face")
    home = client.get("/")
    assert home.status_code == 302 and "/face" in home.headers["Location"]
    page = client.get("/face")
    html = page.get_data(as_text=True)
    # the camera script is served from the clinic's static files (the CSP allows no inline script)
    assert page.status_code == 200 and 'type="file"' in html
    assert "/static/face.js" in html and "<script>" not in html
    script = client.get("/static/face.js")
    assert script.status_code == 200 and b"getUserMedia" in script.data
    csrf = extract_csrf(html)
    # a refusal is shown on the page, with its status
    resp = client.post("/face", data={"csrf_token": csrf, "image": (io.BytesIO(F.fr_images()["biden"]), "c.jpg")})
    assert resp.status_code == 403 and client.get("/").status_code == 302
    # without the CSRF token nothing happens
    resp = client.post("/face", data={"image": (io.BytesIO(F.fr_images()["obama2"]), "c.jpg")})
    assert resp.status_code == 400
    resp = client.post("/face", data={"csrf_token": csrf, "image": (io.BytesIO(F.fr_images()["obama2"]), "c.jpg")})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    with client.session_transaction() as sess:
        assert abs(sess["face_at"] - time.time()) < 5
    assert client.get("/").status_code == 200
    # a new login needs a new face check
    client.post("/logout", data={"csrf_token": csrf})
    page_login(client, doctor.username)
    assert client.get("/").status_code == 302


def test_the_camera_page_posts_and_gets_json(client: FlaskClient, ctx: Flask) -> None:
    doctor = enrolled_physician(F.fr_images()["obama"])
    page_login(client, doctor.username)
    csrf = extract_csrf(client.get("/face?next=/family").get_data(as_text=True))

    def capture(data: bytes) -> tuple[int, dict]:
        resp = client.post(
            "/face?next=/family",
            data={"csrf_token": csrf, "image": (io.BytesIO(data), "capture.jpg")},
            headers={"Accept": "application/json"},
        )
        return resp.status_code, resp.get_json()

    status, body = capture(F.insightface_images()["t1"])
    assert (status, body["error"]["code"]) == (422, "several_faces")
    status, body = capture(F.fr_images()["obama3"])
    assert (status, body) == (200, {"status": "verified", "redirect": "/family"})
    status, body = capture(F.fr_images()["obama3"])
    assert (status, body["error"]["code"]) == (409, "image_replayed")


def test_physician_page_decorator_and_page_claims(ctx: Flask) -> None:
    doctor = enrolled_physician(F.grace_hopper())
    patient = f.patient()

    @views.physician_page
    def workstation() -> str:
        face_services.require_fresh_face(views.page_principal())
        return "ok"

    with ctx.test_request_context("/work"):
        assert workstation().status_code == 302  # not logged in: to the login page
    with ctx.test_request_context("/work"):
        login_user(patient.account)
        with pytest.raises(Exception) as exc:
            workstation()
        assert getattr(exc.value, "code", None) == 403
    with ctx.test_request_context("/work"):
        login_user(doctor)
        resp = workstation()
        assert resp.status_code == 302 and "/face?next=/work" in resp.headers["Location"]
    with ctx.test_request_context("/work"):
        login_user(doctor)
        from flask import session

        session["face_at"] = int(time.time()) - 3600  # checked at this login, but an hour ago
        with pytest.raises(face_services.FaceVerificationRequired):
            workstation()
        session["face_at"] = int(time.time()) - 60
        assert workstation() == "ok"


def test_demo_physicians_are_enrolled_with_real_photos_of_different_people(client: FlaskClient, ctx: Flask) -> None:
    doctors = [f.staff(Role.PHYSICIAN), f.staff(Role.PHYSICIAN)]
    entries = [{"id": str(d.id), "username": d.username} for d in doctors]
    with acting_as(Actor(None, "cli")), unit_of_work():
        face_services.enroll_demo_physicians(entries)
    paths = [Path(e["face_image"]) for e in entries]
    assert all(p.is_absolute() and p.exists() for p in paths)
    assert paths[0].read_bytes() != paths[1].read_bytes()
    assert ctx.static_folder and not any(str(p).startswith(str(ctx.static_folder)) for p in paths)
    first, second = (p.read_bytes() for p in paths)
    tok0, tok1 = (f.token(client, d.username) for d in doctors)

    def check(tok: str, data: bytes) -> tuple[int, str | None]:
        resp = client.post("/api/v1/auth/face", data={"image": (io.BytesIO(data), "c.jpg")}, headers=f.auth(tok))
        return resp.status_code, (resp.get_json().get("error") or {}).get("code")

    assert check(tok0, first) == (409, "image_replayed")  # the enrolled photo itself is no live capture
    assert check(tok0, F.cropped(first, 0.2)) == (200, None)  # a new framing of the same face passes
    assert check(tok1, F.cropped(first, 0.25)) == (403, "face_mismatch")  # and is not the other physician
    assert check(tok1, F.cropped(second, 0.2)) == (200, None)
