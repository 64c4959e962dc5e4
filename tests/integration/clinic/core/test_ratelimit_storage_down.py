"""Redis unreachable is not login down (issue 21 item 4): the rate limits fall back to the
process's memory, say so in the log and the audit trail, and keep limiting."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from clinic.app import create_app
from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work
from identity import face_services, services
from identity.models import Role
from tests.conftest import IsolatedClient, make_config
from tests.support import faces as F
from tests.support import factories as f


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_down_app(ctx: Flask, backend: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(make_config(backend, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"))
    app.test_client_class = IsolatedClient
    yield app


def test_login_registration_and_face_answer_with_redis_unreachable(
    redis_down_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = redis_down_app.test_client()
    reg = f.patient()
    doctor = f.staff(Role.PHYSICIAN)
    with acting_as(Actor(None, "test")), unit_of_work():
        face_services.enroll_face(services.get_account(doctor.id), F.fr_images()["obama"])

    resp = client.post("/api/v1/auth/token", json={"username": reg.account.username, "password": f.PASSWORD})
    assert resp.status_code == 200, resp.get_json()
    assert "rate-limit storage unreachable" in caplog.text

    body = {"name": "李四", "id_number": f.id_number(date(1990, 2, 3)), "phone": f.phone(), "password": "Secret123x"}
    resp = client.post("/api/v1/patients", json=body)
    assert resp.status_code == 201, resp.get_json()

    tok = f.token(client, doctor.username)
    resp = client.post(
        "/api/v1/auth/face",
        data={"image": (io.BytesIO(F.fr_images()["obama2"]), "capture.jpg")},
        headers=f.auth(tok),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200, resp.get_json()

    db.session.remove()
    fallbacks = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "ratelimit.storage_fallback")).all()
    assert len(fallbacks) == 1  # one entry for the switch, not one per request
    assert fallbacks[0].subject_id == "rate_limit_storage"


def test_limits_still_hold_in_memory_while_redis_is_down(redis_down_app: Flask) -> None:
    client = redis_down_app.test_client()
    reg = f.patient()
    statuses = [
        client.post(
            "/api/v1/auth/token", json={"username": reg.account.username, "password": "wrong-pass1"}
        ).status_code
        for _ in range(12)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]


def test_the_page_login_works_with_redis_unreachable(redis_down_app: Flask) -> None:
    from tests.conftest import extract_csrf

    client = redis_down_app.test_client()
    reg = f.patient()
    page = client.get("/login")
    resp = client.post(
        "/login",
        data={
            "username": reg.account.username,
            "password": f.PASSWORD,
            "csrf_token": extract_csrf(page.get_data(as_text=True)),
        },
    )
    assert resp.status_code == 302
