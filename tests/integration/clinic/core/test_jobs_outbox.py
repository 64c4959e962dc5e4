"""The transactional outbox: jobs commit with the state change, run after it, retry, and survive
a dead worker or a dead Redis."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from clinic.core import jobs
from clinic.core.audit import AuditEntry
from clinic.core.db import db, unit_of_work, utcnow
from clinic.core.jobs import JobStatus, OutboxJob

CALLS: list[dict[str, Any]] = []
FAILURES = {"left": 0}


def _record(payload: dict[str, Any]) -> None:
    CALLS.append(payload)


def _flaky(payload: dict[str, Any]) -> None:
    # a write that must be rolled back when the handler fails
    db.session.add(OutboxJob(kind="test.marker", payload={"from": payload["n"]}, status=JobStatus.DONE))
    if FAILURES["left"] > 0:
        FAILURES["left"] -= 1
        raise ConnectionError("partner down")
    CALLS.append(payload)


def _permanent(payload: dict[str, Any]) -> None:
    raise jobs.PermanentJobError("cannot ever work")


def _chain(payload: dict[str, Any]) -> None:
    CALLS.append(payload)
    jobs.enqueue(db.session(), "test.record", {"n": payload["n"] + 1, "chained": True})


jobs.register("test.record", _record)
jobs.register("test.flaky", _flaky)
jobs.register("test.permanent", _permanent)
jobs.register("test.chain", _chain)
FAILED: list[tuple[Any, str, bool]] = []


def _failed(payload: dict[str, Any], error: str, final: bool) -> None:
    # runs in the transaction that records the failure: its writes stay
    FAILED.append((payload["n"], error, final))
    db.session.add(OutboxJob(kind="test.failure_note", payload={"n": payload["n"]}, status=JobStatus.DONE))


jobs.register("test.noted", _flaky, on_failure=_failed)


@pytest.fixture(autouse=True)
def _reset(ctx: Flask) -> None:
    CALLS.clear()
    FAILED.clear()
    FAILURES["left"] = 0


def job(jid: uuid.UUID) -> OutboxJob:
    row = db.session.get(OutboxJob, jid, populate_existing=True)
    assert row is not None
    return row


def enqueue(kind: str, **payload: Any) -> uuid.UUID:
    with unit_of_work() as s:
        jid = jobs.enqueue(s, kind, payload).id
    return jid


def test_a_rolled_back_transaction_sends_nothing() -> None:
    with pytest.raises(RuntimeError), unit_of_work() as s:
        jobs.enqueue(s, "test.record", {"n": 1})
        raise RuntimeError("the state change was refused")
    jobs.drain()
    assert CALLS == []
    assert db.session.scalars(select(OutboxJob)).all() == []


def test_unknown_kind_is_refused_at_enqueue() -> None:
    with pytest.raises(ValueError), unit_of_work() as s:
        jobs.enqueue(s, "no.such.kind", {})


def test_committed_job_runs_inline_after_commit_once() -> None:
    jid = enqueue("test.record", n=1)
    assert CALLS == []  # not before the commit point hands it over
    jobs.drain()
    assert CALLS == [{"n": 1}]
    row = job(jid)
    assert row.status == JobStatus.DONE and row.attempts == 1 and row.finished_at is not None
    assert jobs.run_job(jid) is None  # done: never run again
    jobs.drain()
    assert CALLS == [{"n": 1}]


def test_jobs_enqueued_by_a_job_run_too() -> None:
    enqueue("test.chain", n=1)
    jobs.drain()
    assert CALLS == [{"n": 1}, {"n": 2, "chained": True}]


def test_failure_retries_with_exponential_backoff_and_rolls_back_the_handlers_writes(ctx: Flask) -> None:
    FAILURES["left"] = 2
    jid = enqueue("test.flaky", n=7)
    before = utcnow()
    jobs.drain()
    row = job(jid)
    assert row.status == JobStatus.PENDING and row.attempts == 1
    assert "partner down" in (row.last_error or "")
    base = ctx.config["JOBS_BACKOFF_SECONDS"]
    assert before + timedelta(seconds=base - 1) <= row.next_attempt_at <= utcnow() + timedelta(seconds=base)
    assert db.session.scalars(select(OutboxJob).where(OutboxJob.kind == "test.marker")).all() == []

    assert jobs.run_due() == {}  # not due yet
    _make_due(jid)
    assert jobs.run_due() == {"retry": 1}
    row = job(jid)
    assert row.attempts == 2
    assert row.next_attempt_at >= utcnow() + timedelta(seconds=2 * base - 2)  # doubled

    _make_due(jid)
    assert jobs.run_due() == {"done": 1}
    assert CALLS == [{"n": 7}] and job(jid).status == JobStatus.DONE
    assert len(db.session.scalars(select(OutboxJob).where(OutboxJob.kind == "test.marker")).all()) == 1


def _make_due(jid: uuid.UUID) -> None:
    with unit_of_work():
        job(jid).next_attempt_at = utcnow() - timedelta(seconds=1)


def test_after_max_attempts_the_job_is_dead_and_audited(ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ctx.config, "JOBS_MAX_ATTEMPTS", 3)
    FAILURES["left"] = 99
    jid = enqueue("test.flaky", n=1)
    jobs.drain()
    for _ in range(2):
        _make_due(jid)
        jobs.run_due()
    row = job(jid)
    assert row.status == JobStatus.DEAD and row.attempts == 3
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "job.dead")).one()
    assert entry.subject_id == str(jid) and entry.detail["kind"] == "test.flaky"
    _make_due(jid)
    assert jobs.run_due() == {}  # dead stays dead


def test_permanent_error_is_dead_at_once() -> None:
    jid = enqueue("test.permanent")
    jobs.drain()
    assert job(jid).status == JobStatus.DEAD and job(jid).attempts == 1


def test_a_worker_killed_mid_run_leaves_a_row_the_sweeper_resends() -> None:
    jid = enqueue("test.record", n=3)
    # the worker claimed it (running, lease) and died before finishing
    with unit_of_work():
        row = job(jid)
        row.status, row.attempts, row.locked_until = JobStatus.RUNNING, 1, utcnow() + timedelta(seconds=300)
    assert jobs.run_due() == {}  # lease still held: another worker may be sending it
    with unit_of_work():
        job(jid).locked_until = utcnow() - timedelta(seconds=1)
    assert jobs.run_due() == {"done": 1}
    assert CALLS == [{"n": 3}]
    row = job(jid)
    assert row.status == JobStatus.DONE and row.attempts == 2


def test_two_runners_never_run_the_same_job_twice() -> None:
    jid = enqueue("test.record", n=1)
    outcomes = [jobs.run_job(jid), jobs.run_job(jid), *jobs.run_due().keys()]
    assert outcomes == ["done", None]
    assert CALLS == [{"n": 1}]


def test_with_redis_the_job_goes_to_rq_and_a_worker_runs_it(ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    redis = pytest.importorskip("redis")
    from rq import Queue, SimpleWorker

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    queue_name = f"clinic-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(ctx.config, "REDIS_URL", url)
    monkeypatch.setitem(ctx.config, "JOBS_QUEUE", queue_name)
    conn = redis.Redis.from_url(url)
    queue = Queue(queue_name, connection=conn)
    try:
        jid = enqueue("test.record", n=5)
        jobs.drain()
        assert CALLS == [] and queue.count == 1  # handed to RQ, not run inline
        assert job(jid).status == JobStatus.PENDING
        SimpleWorker([queue], connection=conn).work(burst=True)
        assert CALLS == [{"n": 5}]
        assert job(jid).status == JobStatus.DONE
    finally:
        queue.empty()
        queue.delete(delete_jobs=True)


def test_redis_down_loses_nothing(ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ctx.config, "REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    jid = enqueue("test.record", n=9)
    jobs.drain()  # logs, never raises
    assert CALLS == [] and job(jid).status == JobStatus.PENDING
    monkeypatch.setitem(ctx.config, "REDIS_URL", "")
    assert jobs.run_due() == {"done": 1}  # the sweeper runs it
    assert CALLS == [{"n": 9}]


def test_on_failure_sees_each_failed_try_and_knows_the_last(ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ctx.config, "JOBS_MAX_ATTEMPTS", 2)
    FAILURES["left"] = 99
    jid = enqueue("test.noted", n=5)
    jobs.drain()
    _make_due(jid)
    jobs.run_due()
    assert job(jid).status == JobStatus.DEAD
    assert [(n, final) for n, _, final in FAILED] == [(5, False), (5, True)]
    assert all("ConnectionError: partner down" in error for _, error, _ in FAILED)
    notes = db.session.scalars(select(OutboxJob).where(OutboxJob.kind == "test.failure_note")).all()
    assert len(notes) == 2  # kept, unlike the handler's own writes
    assert db.session.scalars(select(OutboxJob).where(OutboxJob.kind == "test.marker")).all() == []


SEEN: list[str | None] = []


def _read_marker(payload: dict[str, Any]) -> None:
    row = db.session.get(OutboxJob, uuid.UUID(payload["marker"]))
    SEEN.append(row.last_error if row is not None else None)


jobs.register("test.read_marker", _read_marker)


def test_a_handler_reads_the_rows_as_committed_not_as_the_session_cached_them() -> None:
    """Jobs run in the session of whoever drained them (a request's teardown, the sweeper's
    loop), and that session may still hold a row a handler loads. The handler must see the
    row as it is in the database: a sweeper deciding from a stale copy would, say, text
    the regulator again about an incident another runner has already reported."""
    SEEN.clear()
    with unit_of_work() as s:
        marker = OutboxJob(kind="test.marker", payload={}, status=JobStatus.DONE, last_error="as loaded")
        s.add(marker)
    held = db.session.get(OutboxJob, marker.id)  # still in this session's identity map
    assert held is not None and held.last_error == "as loaded"
    with db.engine.begin() as conn:  # another runner changes it meanwhile
        conn.execute(
            OutboxJob.__table__.update().where(OutboxJob.id == marker.id).values(last_error="changed by another")
        )
    enqueue("test.read_marker", marker=str(marker.id))
    jobs.drain()
    assert SEEN == ["changed by another"]
