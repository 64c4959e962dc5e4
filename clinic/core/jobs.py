"""Work that talks to the outside world, recorded in the same transaction as the state change.

A transactional outbox: a service calls `enqueue(session, kind, payload)` beside its state
change; the row `outbox_jobs` commits (or rolls back) with it, so a refused request sends
nothing and a committed one cannot lose its message. After the commit:

- with REDIS_URL set, an RQ job (`rq_run`, by outbox id) goes to the queue JOBS_QUEUE and an
  RQ worker (`flask --app wsgi jobs worker`) runs it;
- without Redis, the job runs inline right after the request's commit (in teardown, so the
  answer is already decided; a failure is logged, never shown to the user).

Running a job claims its row (compare-and-set to `running` with a lease `locked_until`),
calls the handler registered for its kind in a transaction of its own and marks the row
`done` in that same transaction. A failure schedules a retry with exponential backoff
(JOBS_BACKOFF_SECONDS × 2^(attempts-1), capped at JOBS_BACKOFF_MAX_SECONDS); after
JOBS_MAX_ATTEMPTS the row is `dead` and audited. The sweeper (`flask --app wsgi jobs run-due`)
runs rows whose retry time has come and rows left `running` past their lease (a worker
killed mid-send): delivery is at least once, so handlers must be safe to repeat. The lease
is short (JOBS_LEASE_SECONDS, 30 s) and renewed by a heartbeat while the handler runs, so a
dead worker's job is run again within a minute and a slow send is never run twice.

This module is core infrastructure: it imports no domain package.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click
from flask import Flask, current_app, has_app_context
from sqlalchemy import JSON, Enum, Index, Integer, String, Text, and_, event, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from clinic.core import audit
from clinic.core.audit import Actor, acting_as
from clinic.core.config import DEFAULTS, Config, settings
from clinic.core.db import Base, db, new_id, unit_of_work, utcnow

log = logging.getLogger("clinic.jobs")

JOB_ACTOR = Actor(id=None, role="job")


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


class OutboxJob(Base):
    __tablename__ = "outbox_jobs"
    __table_args__ = (Index("ix_outbox_jobs_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=JobStatus.PENDING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


Handler = Callable[[dict[str, Any]], None]
FailureHandler = Callable[[dict[str, Any], str, bool], None]
_handlers: dict[str, Handler] = {}
_failure_handlers: dict[str, FailureHandler] = {}
_app: Flask | None = None


class PermanentJobError(Exception):
    """Raised by a handler when trying again cannot help: the job goes straight to `dead`."""


def register(kind: str, fn: Handler, on_failure: FailureHandler | None = None) -> None:
    """Register the handler of a kind. It gets the payload, uses `db.session`, never commits.

    `on_failure(payload, error, final)` runs in the transaction that records a failed try
    (the handler's own writes are gone): the place to make the failure visible on the
    domain's row. `final` is true when no retry follows (the job is dead).
    """
    _handlers[kind] = fn
    if on_failure is not None:
        _failure_handlers[kind] = on_failure
    else:
        _failure_handlers.pop(kind, None)


def backoff_seconds(attempts: int, base: int, cap: int) -> int:
    """Delay before the next try after `attempts` failed tries: base × 2^(attempts-1), capped."""
    if attempts < 1:
        return 0
    return int(min(cap, base * (2 ** min(attempts - 1, 32))))


def enqueue(session: Session, kind: str, payload: dict[str, Any], *, delay_seconds: int = 0) -> OutboxJob:
    """Record a job in the caller's transaction; it runs after that transaction commits."""
    if kind not in _handlers:
        raise ValueError(f"no job handler registered for {kind!r}")
    job = OutboxJob(
        kind=kind,
        payload=audit._jsonable(payload),
        status=JobStatus.PENDING,
        attempts=0,
        next_attempt_at=utcnow() + timedelta(seconds=delay_seconds),
    )
    session.add(job)
    session.flush()
    if delay_seconds <= 0:
        session.info.setdefault("outbox_new", []).append(job.id)
    return job


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    new = session.info.pop("outbox_new", None)
    if new:
        session.info.setdefault("outbox_committed", []).extend(new)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop("outbox_new", None)


def _settings() -> Config:
    """The app's settings; outside an app (a bare worker import) the defaults."""
    return settings() if has_app_context() else DEFAULTS


def _due(now: datetime) -> Any:
    return or_(
        and_(OutboxJob.status == JobStatus.PENDING, OutboxJob.next_attempt_at <= now),
        and_(OutboxJob.status == JobStatus.RUNNING, OutboxJob.locked_until < now),
    )


def _claim(session: Session, job_id: uuid.UUID, now: datetime) -> datetime | None:
    """Compare-and-set one due row to `running` with a lease; None when someone else has it."""
    lease = now + timedelta(seconds=_settings().JOBS_LEASE_SECONDS)
    result = session.execute(
        update(OutboxJob)
        .where(OutboxJob.id == job_id, _due(now))
        .values(status=JobStatus.RUNNING, attempts=OutboxJob.attempts + 1, locked_until=lease)
        .execution_options(synchronize_session=False)
    )
    return lease if result.rowcount == 1 else None  # type: ignore[attr-defined]


def run_job(jid: uuid.UUID) -> str | None:
    """Claim and run one job now if it is due. Answers done | retry | dead, or None if not ours."""
    with acting_as(JOB_ACTOR):
        with unit_of_work() as session:
            lease = _claim(session, jid, utcnow())
        if lease is None:
            return None
        return _execute(jid, lease)


class _Heartbeat:
    """Renews a running job's short lease while its handler runs (every third of the lease),
    so a live worker keeps its job however long the send takes, and a dead one (killed,
    its machine gone) loses it within one lease: the sweeper runs it again. Each renewal is
    a compare-and-set on the lease it holds; once lost (taken over) it stops renewing."""

    def __init__(self, jid: uuid.UUID, lease: datetime) -> None:
        self.jid, self.lease = jid, lease
        self.seconds = _settings().JOBS_LEASE_SECONDS
        self._stop = threading.Event()
        self._app = current_app._get_current_object() if has_app_context() else _app  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._run, name=f"job-lease-{jid}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        if self._app is None:
            return
        while not self._stop.wait(max(self.seconds / 3, 0.2)):
            with self._app.app_context():
                try:
                    renewed = utcnow() + timedelta(seconds=self.seconds)
                    with unit_of_work() as s:
                        result = s.execute(
                            update(OutboxJob)
                            .where(
                                OutboxJob.id == self.jid,
                                OutboxJob.status == JobStatus.RUNNING,
                                OutboxJob.locked_until == self.lease,
                            )
                            .values(locked_until=renewed)
                        )
                    if result.rowcount != 1:  # type: ignore[attr-defined]
                        log.warning("job %s lost its lease", self.jid)
                        return
                    self.lease = renewed
                except Exception:  # the database briefly away: try again at the next beat
                    log.exception("renewing the lease of job %s failed", self.jid)
                finally:
                    db.session.remove()


def _execute(jid: uuid.UUID, lease: datetime) -> str:
    with _Heartbeat(jid, lease) as beat:
        outcome, error = _run_handler(jid)
    if outcome == "done":
        return outcome
    return _failed(jid, beat.lease, error)


def _run_handler(jid: uuid.UUID) -> tuple[str, BaseException | None]:
    try:
        with unit_of_work() as s:
            # The session belongs to whoever drained the job (a request's teardown, the
            # sweeper's loop) and may still hold rows the handler loads: read them afresh.
            s.expire_all()
            job = s.get(OutboxJob, jid, populate_existing=True)
            assert job is not None
            handler = _handlers.get(job.kind)
            if handler is None:
                raise PermanentJobError(f"no handler for job kind {job.kind!r}")
            handler(dict(job.payload))
            job.status, job.locked_until, job.finished_at, job.last_error = JobStatus.DONE, None, utcnow(), None
        log.info("job %s (%s) done", jid, job.kind)
        return "done", None
    except Exception as exc:  # the handler's writes are rolled back; record the failure
        return "failed", exc


def _failed(jid: uuid.UUID, lease: datetime, error: BaseException | None) -> str:
    with unit_of_work() as s:
        job = s.get(OutboxJob, jid, populate_existing=True)
        assert job is not None
        if job.status != JobStatus.RUNNING or job.locked_until != lease:
            return "lost_lease"  # our lease passed and another runner took the job over
        job.last_error = f"{type(error).__name__}: {error}"[:2000]
        job.locked_until = None
        permanent = isinstance(error, PermanentJobError)
        final = permanent or job.attempts >= _settings().JOBS_MAX_ATTEMPTS
        on_failure = _failure_handlers.get(job.kind)
        if on_failure is not None:
            on_failure(dict(job.payload), job.last_error, final)
        if final:
            job.status, job.finished_at = JobStatus.DEAD, utcnow()
            audit.record(
                s,
                "job.dead",
                subject_type="outbox_job",
                subject_id=job.id,
                detail={"kind": job.kind, "attempts": job.attempts, "error": job.last_error},
            )
            log.error("job %s (%s) is dead after %d attempts: %s", jid, job.kind, job.attempts, job.last_error)
            return "dead"
        delay = backoff_seconds(job.attempts, _settings().JOBS_BACKOFF_SECONDS, _settings().JOBS_BACKOFF_MAX_SECONDS)
        job.status, job.next_attempt_at = JobStatus.PENDING, utcnow() + timedelta(seconds=delay)
        log.warning("job %s (%s) attempt %d failed (%s); retry in %d s", jid, job.kind, job.attempts, error, delay)
    _schedule_retry(jid, delay)
    return "retry"


def due_ids(session: Session, limit: int, now: datetime | None = None) -> list[uuid.UUID]:
    """Ids of due rows, oldest first; PostgreSQL skips rows another sweeper has locked."""
    stmt = select(OutboxJob.id).where(_due(now or utcnow())).order_by(OutboxJob.next_attempt_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def run_due(limit: int = 100) -> dict[str, int]:
    """The sweeper: claim due rows (retries, expired leases) and run them. Answers counts."""
    counts: dict[str, int] = {}
    with acting_as(JOB_ACTOR):
        now = utcnow()
        with unit_of_work() as session:
            claimed = [(jid, lease) for jid in due_ids(session, limit, now) if (lease := _claim(session, jid, now))]
        for jid, lease in claimed:
            outcome = _execute(jid, lease)
            counts[outcome] = counts.get(outcome, 0) + 1
        drain()
    return counts


# --- after commit: hand the new jobs to RQ, or run them inline ---------------------------


def _redis_url() -> str:
    return _settings().REDIS_URL


def _queue() -> Any:
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(_redis_url(), socket_connect_timeout=2, socket_timeout=5)
    return Queue(_settings().JOBS_QUEUE, connection=conn)


def _schedule_retry(jid: uuid.UUID, delay: int) -> None:
    if not _redis_url():
        return  # no queue: the sweeper (`jobs run-due`) runs it when due
    try:
        _queue().enqueue_in(timedelta(seconds=delay), rq_run, str(jid), job_id=f"outbox-{jid}-{int(time.time())}")
    except Exception as exc:  # Redis down: the row is still there for the sweeper
        log.warning("could not schedule retry of job %s on Redis (%s); the sweeper will run it", jid, exc)


def drain() -> None:
    """Run (or hand to RQ) the jobs committed so far in this session. Never raises."""
    session = db.session()
    if session.info.get("outbox_draining"):
        return
    session.info["outbox_draining"] = True
    try:
        while ids := session.info.pop("outbox_committed", None):
            for jid in ids:
                try:
                    if _redis_url():
                        _queue().enqueue(rq_run, str(jid), job_id=f"outbox-{jid}")
                    else:
                        run_job(jid)
                except Exception:
                    log.exception("job %s could not be started now; it stays pending for the sweeper", jid)
                    session.rollback()
    finally:
        session.info.pop("outbox_draining", None)


def rq_run(job_id: str) -> str | None:
    """The RQ entry point: run one outbox row in the app's context (RQ hands the id over as text)."""
    jid = uuid.UUID(job_id)
    if has_app_context():
        outcome = run_job(jid)
        drain()
        return outcome
    if _app is None:
        raise RuntimeError("clinic.core.jobs.init_app was not called in this process")
    with _app.app_context():
        outcome = run_job(jid)
        drain()
        db.session.remove()
        return outcome


def init_app(app: Flask) -> None:
    global _app
    _app = app

    @app.teardown_request
    def _run_committed_jobs(_exc: BaseException | None) -> None:
        # Registered after the request's commit point: the answer is already decided.
        try:
            drain()
        except Exception:  # never break the user's response
            log.exception("running jobs after the request failed")

    group = click.Group("jobs", help="Outbox jobs: the RQ worker and the sweeper.")
    app.cli.add_command(group)

    @group.command("worker")
    @click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
    @click.option("--sweep-seconds", default=20, show_default=True, help="Also run due rows this often (0: never).")
    def worker_cmd(burst: bool, sweep_seconds: int) -> None:
        """Run the RQ worker on JOBS_QUEUE (needs REDIS_URL), with the sweeper beside it."""
        import threading

        from rq import SimpleWorker

        if not _redis_url():
            raise click.ClickException("REDIS_URL is not set; without Redis jobs run inline (use `jobs run-due`).")
        queue = _queue()
        if sweep_seconds > 0 and not burst:

            def sweep() -> None:
                while True:
                    time.sleep(sweep_seconds)
                    with app.app_context():
                        try:
                            run_due()
                        except Exception:
                            log.exception("sweeper failed")
                        finally:
                            db.session.remove()

            threading.Thread(target=sweep, name="jobs-sweeper", daemon=True).start()
        # SimpleWorker: no fork, so the database pool and app context stay valid. No RQ
        # scheduler process either: it was a child that outlived a killed worker, and the
        # sweeper above already runs every row whose retry time has come.
        SimpleWorker([queue], connection=queue.connection).work(burst=burst, with_scheduler=False)

    @group.command("run-due")
    @click.option("--loop", "loop_seconds", default=0, help="Repeat every N seconds (0: once).")
    @click.option("--limit", default=100, show_default=True)
    def run_due_cmd(loop_seconds: int, limit: int) -> None:
        """Run due jobs (retries, and rows whose worker died mid-run); print the counts."""
        while True:
            counts = run_due(limit)
            click.echo(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing due")
            if loop_seconds <= 0:
                return
            time.sleep(loop_seconds)
