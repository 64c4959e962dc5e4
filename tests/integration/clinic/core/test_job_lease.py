"""Issue 21 item 10: a worker that dies is noticed within a minute, a live one keeps its job.

A running job holds a short lease renewed by a heartbeat while its handler runs: a slow
send is never taken over (and sent twice) by the sweeper; a killed worker's job is run
again once its lease has passed, and the sweeper beside the worker looks every 20 s.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask

from clinic.core import jobs
from clinic.core.config import Config
from clinic.core.db import db, unit_of_work, utcnow
from clinic.core.jobs import JobStatus, OutboxJob

CALLS: list[dict[str, Any]] = []


def _slow(payload: dict[str, Any]) -> None:
    time.sleep(float(payload["seconds"]))
    CALLS.append(payload)


jobs.register("test.slow", _slow)


@pytest.fixture
def short_lease(ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> Flask:
    CALLS.clear()
    monkeypatch.setitem(ctx.config, "JOBS_LEASE_SECONDS", 1)
    return ctx


def _enqueue(**payload: Any) -> Any:
    with unit_of_work() as s:
        return jobs.enqueue(s, "test.slow", payload).id


def test_a_dead_worker_is_noticed_within_a_minute_by_default(ctx: Flask) -> None:
    assert Config().JOBS_LEASE_SECONDS <= 30
    worker = ctx.cli.commands["jobs"].commands["worker"]  # type: ignore[attr-defined]
    sweep = next(p for p in worker.params if p.name == "sweep_seconds")
    assert Config().JOBS_LEASE_SECONDS + int(sweep.default) <= 60


def test_a_slow_job_keeps_its_lease_and_runs_once(short_lease: Flask) -> None:
    jid = _enqueue(seconds=2.5)
    swept: list[dict[str, int]] = []

    def sweeper() -> None:  # another worker's sweeper, looking while the job runs
        with short_lease.app_context():
            for _ in range(3):
                time.sleep(0.8)
                swept.append(jobs.run_due())
            db.session.remove()

    other = threading.Thread(target=sweeper)
    other.start()
    jobs.drain()  # runs the job here (inline, no Redis): 2.5 s, more than twice the lease
    other.join()
    assert CALLS == [{"seconds": 2.5}]  # sent once: the heartbeat kept the lease
    assert all(s == {} for s in swept), swept
    row = db.session.get(OutboxJob, jid, populate_existing=True)
    assert row is not None and row.status == JobStatus.DONE and row.attempts == 1


def test_a_killed_workers_job_is_run_again_after_its_lease(short_lease: Flask) -> None:
    jid = _enqueue(seconds=0)
    with unit_of_work() as s:  # a worker claims it, then is killed: no heartbeat renews it
        assert jobs._claim(s, jid, utcnow()) is not None
    CALLS.clear()
    assert jobs.run_due() == {}  # its lease still holds
    time.sleep(1.2)
    assert jobs.run_due() == {"done": 1}
    assert CALLS == [{"seconds": 0}]
