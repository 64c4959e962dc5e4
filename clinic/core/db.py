"""The database: one engine, one scoped session, typed declarative models.

Services use `db.session`, add and flush, and never commit. There are two commit points:
a web request commits once after its view returns (clinic/core/web.py, `_commit_point`,
which rolls back a refused or failed request), and CLI commands and jobs run inside
`unit_of_work()`. So a failed request, command or job leaves nothing half-written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Integer, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    declared_attr,
    mapped_column,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, always returns timezone-aware UTC datetimes (SQLite forgets zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime()}


class Versioned:
    """Optimistic concurrency for records that people change one after another.

    Each row carries a version; every UPDATE the ORM issues names the version it loaded
    (`WHERE id = ... AND version = ...`) and counts it up. When someone else changed and
    committed the row in between, the UPDATE matches nothing and SQLAlchemy raises
    StaleDataError instead of writing over their change; requests answer it with 409
    `conflict` (clinic.core.web) and save nothing. Works the same on SQLite and PostgreSQL,
    whatever the isolation level. Core INSERTs get version 1 from the column default.
    """

    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


class Database:
    """Engine and session for the app. `metadata` makes it usable by Flask-Migrate."""

    metadata = Base.metadata

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self.session: scoped_session[Session] = scoped_session(sessionmaker(expire_on_commit=False))

    def configure(self, url: str, **engine_options: Any) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        if url.startswith("sqlite"):
            engine_options.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        else:
            engine_options.setdefault("pool_pre_ping", True)
        if self._engine is not None:
            self.session.remove()
            self._engine.dispose()
        self._engine = create_engine(url, **engine_options)
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        self.session.configure(bind=self._engine)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("database not configured")
        return self._engine

    def get_engine(self) -> Engine:  # Flask-Migrate's name for it
        return self.engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL never corrupts the database; it syncs at checkpoints rather than at
    # every commit (the embedded default is for development; production runs PostgreSQL).
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


db = Database()

M = TypeVar("M")


def as_uuid(value: object) -> uuid.UUID | None:
    """An id from a path, body or token as a UUID, or None when it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


NO_RECORD = uuid.UUID(int=0)
"""The nil UUID: `new_id()` never makes it, so no row has it."""


def record_id(value: object) -> uuid.UUID:
    """An id from a URL or a form, typed for a service. A malformed one names no record: it
    becomes `NO_RECORD`, so the service runs its own checks in their usual order (role,
    qualification, face) and its lookup then answers 404, as for an unknown id. Edges call
    this; services take `uuid.UUID` only."""
    return as_uuid(value) or NO_RECORD


def get_or_404(model: type[M], key: object, message: str | None = None) -> M:
    """Load a row by its UUID primary key; a malformed or unknown id is the same 404."""
    from clinic.core.errors import NotFound

    ident = as_uuid(key)
    obj = db.session.get(model, ident) if ident is not None else None
    if obj is None:
        raise NotFound(message)
    return obj


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """The one commit point for CLI commands and jobs: commit on success, else roll back."""
    session = db.session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
