"""`flask retention purge`: only communication of visits closed 3+ years ago goes; medical
records stay whatever their age; a dry run changes nothing; the purge is audited."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core import audit_verify, storage
from clinic.core.audit import AuditEntry
from clinic.core.db import db, unit_of_work, utcnow
from clinic.visits.models import Diagnosis, Visit, VisitMessage, VisitNote, VisitStatus
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f


def closed_visit(client: FlaskClient, physician: Any, years_ago: float, messages: int) -> dict[str, Any]:
    v = cf.open_visit(client, physician)
    vid = uuid.UUID(v["visit_id"])
    closed = utcnow() - timedelta(days=365.25 * years_ago)
    with unit_of_work() as s:
        visit = s.get(Visit, vid)
        assert visit is not None
        visit.status, visit.physician_id, visit.closed_at = VisitStatus.COMPLETED, physician.id, closed
        visit.created_at = closed - timedelta(hours=1)
        s.add(
            VisitNote(visit_id=vid, author_id=physician.id, kind="completion", text="BP controlled", created_at=closed)
        )
        paths = []
        for i in range(messages):
            msg = VisitMessage(
                visit_id=vid, sender_id=physician.id, sender_role="physician", text=f"message {i}", created_at=closed
            )
            if i == 0:
                msg.image_path = storage.save(f"visits/{vid}", cf.png(), "png")
                msg.image_type = "image/png"
                paths.append(msg.image_path)
            s.add(msg)
    v["paths"] = paths
    v["id"] = vid
    return v


def count(model: Any, visit_id: uuid.UUID) -> int:
    col = model.visit_id if hasattr(model, "visit_id") else model.id
    return int(db.session.scalar(select(func.count()).select_from(model).where(col == visit_id)) or 0)


def test_purge_removes_only_expired_communication(client: FlaskClient, ctx: Flask) -> None:
    cf.catalog()
    physician = f.staff(Role.PHYSICIAN)
    old = closed_visit(client, physician, years_ago=3.2, messages=3)
    ancient = closed_visit(client, physician, years_ago=20, messages=2)
    recent = closed_visit(client, physician, years_ago=2.9, messages=2)
    open_ = cf.open_visit(client, physician)  # still waiting: never purged
    with unit_of_work():
        db.session.add(
            VisitMessage(
                visit_id=uuid.UUID(open_["visit_id"]), sender_id=physician.id, sender_role="physician", text="hi"
            )
        )
    root = storage.root()
    runner = ctx.test_cli_runner()

    dry = runner.invoke(args=["retention", "purge", "--dry-run", "--batch-size", "2"])
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.output.strip().splitlines()[-1])
    assert summary == {**summary, "dry_run": True, "messages": 5, "images": 2, "files_removed": 0, "visits": 2}
    db.session.expire_all()
    assert count(VisitMessage, old["id"]) == 3 and (root / old["paths"][0]).exists()
    assert not db.session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purged")).first()

    real = runner.invoke(args=["retention", "purge", "--batch-size", "2"])
    assert real.exit_code == 0, real.output
    summary = json.loads(real.output.strip().splitlines()[-1])
    assert (summary["messages"], summary["images"], summary["files_removed"], summary["visits"]) == (5, 2, 2, 2)
    db.session.expire_all()
    for gone in (old, ancient):
        assert count(VisitMessage, gone["id"]) == 0
        assert not (root / gone["paths"][0]).exists()
        # the medical record stays: visit, its note, its diagnosis (kept >= 15 years; 20 years here)
        assert db.session.get(Visit, gone["id"]) is not None
        assert count(VisitNote, gone["id"]) == 1
        assert db.session.get(Diagnosis, gone["diag"].id) is not None
    assert count(VisitMessage, recent["id"]) == 2 and (root / recent["paths"][0]).exists()
    assert count(VisitMessage, uuid.UUID(open_["visit_id"])) == 1

    entries = list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purged")))
    assert sum(e.detail["messages"] for e in entries) == 5
    assert {v for e in entries for v in e.detail["visits"]} == {str(old["id"]), str(ancient["id"])}
    assert audit_verify.verify_now().ok

    again = runner.invoke(args=["retention", "purge"])
    assert json.loads(again.output.strip().splitlines()[-1])["messages"] == 0  # nothing left past its period


def test_as_of_judges_periods_at_that_date(client: FlaskClient, ctx: Flask) -> None:
    cf.catalog()
    physician = f.staff(Role.PHYSICIAN)
    old = closed_visit(client, physician, years_ago=3.5, messages=1)
    earlier = (utcnow() - timedelta(days=365)).strftime("%Y-%m-%d")
    result = ctx.test_cli_runner().invoke(args=["retention", "purge", "--as-of", earlier])
    assert json.loads(result.output.strip().splitlines()[-1])["messages"] == 0  # 2.5 years then
    assert count(VisitMessage, old["id"]) == 1
    future = ctx.test_cli_runner().invoke(args=["retention", "purge", "--as-of", "2999-01-01"])
    assert future.exit_code != 0 and "future" in future.output
