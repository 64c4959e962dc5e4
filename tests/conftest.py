"""Test harness.

Every test that needs a database runs on SQLite, and also on PostgreSQL when
TEST_DATABASE_URL is set (`.ci/run` sets it when PostgreSQL answers). The schema is
made by the Alembic migrations, never by create_all; each test starts from empty
tables (they are emptied after it), so the app's own commits are exercised for real.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings

from clinic.core.config import Config

if TYPE_CHECKING:
    from flask import Flask

    from tests.support.twilio_standin import TwilioStandin

# The app, the database layer and the stand-ins are imported inside the fixtures that use
# them, not here: every test collected pays for what this module imports at the top, and a
# unit test of the rules needs neither the factory (every package, Alembic, the extensions)
# nor a server (`pytest tests/unit -m "not slow"` stays a quick loop).

pytest_plugins = ["tests.support.clinic_pair"]  # `pair`: two clinics side by side (issue 19)

# Hypothesis's per-example deadline (200 ms) measures wall time, which on a shared or busy
# machine (CI, xdist workers) says more about the neighbours than about the code: a property
# test failed with DeadlineExceeded at 374 ms under load. The properties are what is checked.
hypothesis_settings.register_profile("clinic", deadline=None)
hypothesis_settings.load_profile("clinic")

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


def _pg_database(base_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from clinic.core.db import db

    url = make_url(base_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"clinic_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        db.session.remove()
        if db._engine is not None and db._engine.url.database == name:
            db._engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp(f"inst-{request.param}")
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp / 'test.sqlite3'}"])
        gen = None
    else:
        gen = _pg_database(os.environ["TEST_DATABASE_URL"])
        urls = gen
    url = next(urls)
    yield {"name": request.param, "url": url, "instance": tmp}
    if gen is not None:
        with contextlib.suppress(StopIteration):
            next(gen)


def make_config(backend: dict[str, Any], **extra: Any) -> Config:
    cfg = Config(
        ENV="testing",
        TESTING=True,
        INSTANCE_PATH=str(backend["instance"]),
        DATABASE_URL=backend["url"],
        JWT_SECRET="test-jwt-secret-that-is-long-enough-000",
        SECRET_KEY="test-secret-key",
        LOOKUP_KEY="test-lookup-key",
        # The tests' partner stand-ins listen on 127.0.0.1 as in development; the endpoint
        # rule itself is tested with it off (tests/api/pharmacy/test_partner_endpoints.py).
        PARTNER_PRIVATE_ENDPOINTS=True,
    )
    for key, value in extra.items():
        setattr(cfg, key, value) if hasattr(cfg, key) else cfg.extra.__setitem__(key, value)
    cfg.finalize()
    return cfg


class IsolatedClient(FlaskClient):
    """Each request runs in a fresh context, as in production: nothing the test holds in
    its own app context (`g`, Flask-Login's cached user, the audit actor) leaks into a
    request, and nothing one request leaves in `g` reaches the next."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        return contextvars.Context().run(super().open, *args, **kwargs)


@pytest.fixture(scope="session")
def app(backend: dict[str, Any]) -> Iterator[Flask]:
    from flask_migrate import upgrade

    from clinic.app import create_app

    application = create_app(make_config(backend))
    application.test_client_class = IsolatedClient
    with application.app_context():
        upgrade()
    yield application


def _empty_tables() -> None:
    from sqlalchemy import text, update

    from clinic.core.db import Base, db

    db.session.remove()
    engine = db.engine
    from clinic.core.auditlog import AuditLogState

    tables = [t for t in reversed(Base.metadata.sorted_tables) if t.name != AuditLogState.__tablename__]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(t.delete())
        conn.execute(update(AuditLogState).values(size=0, frontier=[]))


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    """An app context on a clean database; the rows are removed after the test."""
    from sqlalchemy.engine import make_url

    from clinic.core import limits
    from clinic.core.db import db

    if str(db.engine.url) != str(
        make_url(app.config["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1))
    ):
        db.configure(app.config["DATABASE_URL"])
    limits.reset()
    with app.test_request_context():
        yield app
    _empty_tables()
    db.session.remove()


@pytest.fixture
def client(ctx: Flask) -> FlaskClient:
    return ctx.test_client()


def extract_csrf(html: str) -> str:
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert m, "no CSRF token on the page"
    return m.group(1)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def twilio_server() -> Iterator[TwilioStandin]:
    """The local Twilio stand-in (Verify v2, Messages) that the real SDK is pointed at,
    started once on a fixed port. Its settings (`app_settings()`) never change, so
    module-scoped apps may be configured from it; tests use `twilio_standin`."""
    from tests.support.twilio_standin import TwilioStandin

    server = TwilioStandin().start()
    yield server
    server.stop()


@pytest.fixture
def twilio_standin(twilio_server: TwilioStandin) -> Iterator[TwilioStandin]:
    """The stand-in, fresh for this test: no verifications, no outbox, no outage, and
    serving again if an earlier test stopped it. Reset before and after, so what one test
    breaks (`failure = 503`, `stop()`) never reaches the next, in any order."""
    twilio_server.reset()
    yield twilio_server
    twilio_server.reset()


def _backend_of(item: pytest.Item) -> int:
    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("backend") if callspec is not None else None
    return 0 if name is None else 1 + BACKENDS.index(name)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Random order (pytest-randomly shuffles modules, then the tests in each) within each
    database: the tests without one first, then SQLite's, then PostgreSQL's. The backend is a
    session fixture, so a shuffled suite would otherwise drop and re-migrate a database at
    every switch between them. The sort is stable: the shuffled order is kept inside a group."""
    items.sort(key=_backend_of)
