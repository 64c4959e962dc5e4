"""The visit room's patient history shows what prescriptions add through a reader the app
factory registers on each app: another app made in the same process (the browser tests'
live app, a second clinic) adds no second copy of it."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from clinic.app import create_app
from clinic.core.db import db
from clinic.family_doctor import services as fd_services
from clinic.visits import lifecycle, visit_room
from clinic.visits.models import Visit
from prescriptions import views as rx_views
from tests.conftest import make_config
from tests.support.rx_factories import prescribed


def test_the_history_reader_is_wired_once_per_app(app: Flask, backend: dict[str, Any]) -> None:
    assert app.extensions[visit_room.HISTORY_READERS] == [rx_views.visit_history]
    other = create_app(make_config(backend))
    assert other.extensions[visit_room.HISTORY_READERS] == [rx_views.visit_history]
    assert app.extensions[visit_room.HISTORY_READERS] == [rx_views.visit_history]


def test_the_family_doctor_queue_hook_is_wired_once(app: Flask) -> None:
    assert app.extensions[lifecycle.VISIT_FIRST] == [fd_services.visit_first]


def test_the_room_history_lists_the_visits_prescription(client: FlaskClient) -> None:
    v = prescribed(client)
    with client.application.test_request_context():
        visit = db.session.get(Visit, uuid.UUID(v["visit_id"]))
        assert visit is not None and visit.physician_id is not None
        (current,) = visit_room.patient_history(visit.physician_id, visit)
        assert current.current and [str(rx.id) for rx in current.prescriptions] == [v["rx"]]
