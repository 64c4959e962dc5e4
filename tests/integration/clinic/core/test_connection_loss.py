"""Issue 21 item 7: a database connection killed in the middle of a request.

On PostgreSQL the request's backend is terminated (pg_terminate_backend) while it runs:
a read is retried once on a fresh connection and answers normally; a write answers 503
`service_unavailable` with Retry-After, and nothing of it is saved. Never a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select, text

from clinic.core.db import db
from clinic.visits import lifecycle, visit_room
from clinic.visits.models import VisitMessage
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f


@pytest.fixture
def killer(ctx: Flask, backend: dict[str, Any]) -> Iterator[Callable[[], None]]:
    if backend["name"] != "postgresql":
        pytest.skip("connections are killed on PostgreSQL (SQLite has none to lose)")
    admin = create_engine(db.engine.url, isolation_level="AUTOCOMMIT")

    def kill_this_requests_connection() -> None:
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True

    yield kill_this_requests_connection
    admin.dispose()


def _once(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, kill: Callable[[], None]) -> list[int]:
    original = getattr(module, name)
    calls: list[int] = []

    def killed_the_first_time(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            kill()
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, killed_the_first_time)
    return calls


def test_a_read_is_retried_once_and_answers(
    client: FlaskClient, killer: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    cardio = f.staff(Role.PHYSICIAN, department="cardiology")
    cf.catalog()
    v = cf.open_visit(client, cardio)
    calls = _once(monkeypatch, lifecycle, "visit_for", killer)
    resp = client.get(f"/api/v1/visits/{v['visit_id']}", headers=f.auth(v["token"]))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["id"] == v["visit_id"] and len(calls) == 2  # the retry ran it again
    assert "X-Clinic-Connection-Lost" not in resp.headers


def test_a_write_answers_503_and_saves_nothing(
    client: FlaskClient, killer: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    cardio = f.staff(Role.PHYSICIAN, department="cardiology")
    cf.catalog()
    v = cf.open_visit(client, cardio)
    calls = _once(monkeypatch, visit_room, "post_message", killer)
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/messages", json={"text": "血压 130/80"}, headers=f.auth(v["token"])
    )
    assert resp.status_code == 503, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["error"]["code"] == "service_unavailable" and resp.headers["Retry-After"] == "1"
    assert len(calls) == 1  # a write is never replayed
    assert db.session.scalar(select(func.count()).select_from(VisitMessage)) == 0
    # the next request gets a healthy connection from the pool
    again = client.post(
        f"/api/v1/visits/{v['visit_id']}/messages", json={"text": "血压 130/80"}, headers=f.auth(v["token"])
    )
    assert again.status_code == 201
