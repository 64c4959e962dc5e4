"""Concurrent pharmacists never claim the same prescription (threads, one session each).

On PostgreSQL this exercises `SELECT ... FOR UPDATE SKIP LOCKED` for real; on SQLite the
writers are serialized and the compare-and-set on the claim does the same job.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, new_id, unit_of_work
from clinic.core.principal import Principal
from identity.models import Role
from pharmacy import services
from pharmacy.models import Review
from prescriptions.models import Prescription
from tests.support import factories as f
from tests.support.rx_factories import prescribed

CLAIMERS = 4


def clone_pending(template: uuid.UUID, n: int) -> None:
    """n more pending prescriptions like `template` (same visit and content), each queued."""
    rx_table, q_table = Prescription.__table__, Review.__table__
    with unit_of_work() as s:
        row = dict(s.execute(select(rx_table).where(rx_table.c.id == template)).mappings().one())
        tpl_q = dict(s.execute(select(q_table).where(q_table.c.prescription_id == template)).mappings().one())
        rows, queue = [], []
        for i in range(n):
            rid = new_id()
            rows.append({**row, "id": rid})
            queue.append(
                {**tpl_q, "prescription_id": rid, "queued_at": row["signed_at"].replace(microsecond=i % 999999)}
            )
        s.execute(rx_table.insert(), rows)
        s.execute(q_table.insert(), queue)


def test_concurrent_claimers_never_share_one(client: FlaskClient, ctx: Flask) -> None:
    v = prescribed(client)
    total = 60
    clone_pending(uuid.UUID(v["rx"]), total - 1)
    pharmacists = [str(f.staff(Role.PHARMACIST).id) for _ in range(CLAIMERS)]
    db.session.remove()

    claims: dict[str, list[uuid.UUID]] = {p: [] for p in pharmacists}
    errors: list[BaseException] = []
    start = threading.Barrier(CLAIMERS)

    def claimer(pid: str) -> None:
        with ctx.app_context(), acting_as(Actor(pid, "pharmacist")):
            try:
                start.wait()
                while True:
                    with unit_of_work():
                        got = services.claim_next(Principal(uuid.UUID(pid), "pharmacist"))
                    if got is None:
                        return
                    claims[pid].append(got)
            except BaseException as exc:  # surfaced below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=claimer, args=(p,)) for p in pharmacists]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    every = [c for got in claims.values() for c in got]
    assert len(every) == total
    assert Counter(every).most_common(1)[0][1] == 1  # zero double claims
    held: Any = db.session.execute(select(Review.claimed_by, func.count()).group_by(Review.claimed_by)).all()
    assert {str(who): n for who, n in held} == {p: len(c) for p, c in claims.items() if c}
    if db.engine.dialect.name == "postgresql":
        assert sum(1 for c in claims.values() if c) >= 2  # they really ran side by side
