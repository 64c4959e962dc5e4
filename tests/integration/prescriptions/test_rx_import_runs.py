"""Formulary imports started from the pages are rows in the database, imported in batches.

Before, the runs lived in the memory of the worker that ran them: with two gunicorn
workers (the default of `make run`), the progress page answered 404 whenever the other
worker took the request. These tests pin what replaced that: any worker answers for any
run, each batch commits with the run's progress, a failure keeps what was committed and
says so, and a run that stopped moving shows as interrupted.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.core.principal import Principal
from identity.models import Role
from prescriptions import imports
from prescriptions.models import Drug, FormularyImport, ImportState
from tests.integration.clinic.visits.test_visit_pages import login
from tests.support import factories as f
from tests.support.answers import refusal

ROWS = [f"院内测试片{i},片剂,{i}mg,口服,,,false" for i in range(1, 6)]
CSV = "name,form,strength,route,generic_name,ingredients,cold_chain\n" + "\n".join(ROWS) + "\n"


def admin_page(ctx: Flask) -> tuple[FlaskClient, Any]:
    f.institution()
    admin = f.staff(Role.ADMIN)
    page = ctx.test_client()
    login(page, admin.username)
    return page, admin


def start(admin: Any, filename: str = "formulary.csv") -> uuid.UUID:
    with acting_as(Actor(str(admin.id), "admin")), unit_of_work():
        return imports.start_import(Principal(admin.id, "admin"), filename).id


def run_in_thread(ctx: Flask, run_id: uuid.UUID, path: Path, admin: Any) -> None:
    """As the upload page does it: a thread of its own, its own sessions and commits."""
    worker = threading.Thread(
        target=imports.run_import, args=(ctx, run_id, path, Actor(str(admin.id), "admin")), daemon=True
    )
    worker.start()
    worker.join(60)
    assert not worker.is_alive()
    db.session.remove()


def imported_names() -> set[str]:
    return set(db.session.scalars(select(Drug.name).where(Drug.source == "import")))


def actions() -> list[str]:
    return list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)))


def test_any_worker_answers_for_a_run_it_did_not_start(ctx: Flask) -> None:
    # The run is started "elsewhere" (no thread of this process knows it): only the row exists.
    page, admin = admin_page(ctx)
    run_id = start(admin, "其他工作进程.csv")
    with unit_of_work():
        imports.record_import_progress(run_id, 200, 1000)
    progress = page.get(f"/admin/formulary/runs/{run_id}/progress")
    assert progress.status_code == 200
    data = progress.get_json()
    assert (data["state"], data["done"], data["total"], data["filename"]) == ("running", 200, 1000, "其他工作进程.csv")
    html = page.get(f"/admin/formulary/runs/{run_id}").get_data(as_text=True)
    assert 'id="import-progress"' in html and 'value="200"' in html
    assert "其他工作进程.csv" in page.get("/admin/formulary").get_data(as_text=True)
    assert refusal(page.get(f"/admin/formulary/runs/{uuid.uuid4()}/progress")) == (404, "not_found")
    assert refusal(page.get("/admin/formulary/runs/not-a-uuid")) == (404, "not_found")


def test_each_batch_commits_with_the_progress_and_the_run_ends_done(
    ctx: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page, admin = admin_page(ctx)
    monkeypatch.setattr(imports, "IMPORT_BATCH_ROWS", 2)
    seen: list[tuple[int, int, set[str]]] = []
    record = imports.record_import_progress

    def spy(run_id: uuid.UUID, done: int, total: int) -> None:
        # What another connection sees at each checkpoint: the batches committed so far.
        with db.engine.connect() as other:
            names = set(other.scalars(select(Drug.name).where(Drug.source == "import")))
        seen.append((done, total, names))
        record(run_id, done, total)

    monkeypatch.setattr(imports, "record_import_progress", spy)
    run_id = start(admin)
    path = tmp_path / "f.csv"
    path.write_text(CSV, encoding="utf-8")
    run_in_thread(ctx, run_id, path, admin)

    assert [(d, t) for d, t, _ in seen] == [(0, 5), (2, 5), (4, 5)]
    assert seen[0][2] == set() and seen[1][2] == set()
    assert seen[2][2] == {"院内测试片1", "院内测试片2"}  # the first batch was committed before row 5
    run = db.session.get(FormularyImport, run_id)
    assert run is not None and run.state == ImportState.DONE and (run.done, run.total) == (5, 5)
    assert run.report is not None and run.report["imported"] == 5 and run.report["path"] == "formulary.csv"
    assert imported_names() == {f"院内测试片{i}" for i in range(1, 6)}
    assert actions().count("catalog.import_started") == 1 and actions()[-1] == "catalog.imported"
    assert not path.exists()  # the uploaded copy is removed once imported
    assert page.get(f"/admin/formulary/runs/{run_id}/progress").get_json()["state"] == "done"


def test_a_failure_keeps_the_committed_batches_and_says_how_many(
    ctx: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page, admin = admin_page(ctx)
    monkeypatch.setattr(imports, "IMPORT_BATCH_ROWS", 2)
    record = imports.record_import_progress

    def failing(run_id: uuid.UUID, done: int, total: int) -> None:
        if done == 4:
            raise OSError("disk full")
        record(run_id, done, total)

    monkeypatch.setattr(imports, "record_import_progress", failing)
    run_id = start(admin)
    path = tmp_path / "f.csv"
    path.write_text(CSV, encoding="utf-8")
    run_in_thread(ctx, run_id, path, admin)

    assert imported_names() == {"院内测试片1", "院内测试片2"}  # rows 3 and 4 were rolled back
    data = page.get(f"/admin/formulary/runs/{run_id}/progress").get_json()
    assert data["state"] == "failed" and data["done"] == 2
    assert data["error"] == "OSError"
    assert "catalog.import_failed" in actions() and "catalog.imported" not in actions()
    failed = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "catalog.import_failed"))
    assert failed is not None and failed.detail == {"error": "OSError", "rows_saved": 2}
    html = page.get(f"/admin/formulary/runs/{run_id}").get_data(as_text=True)
    assert 'id="import-failed"' in html and "OSError" in html and "前 2 行已保存" in html
    assert not path.exists()


def test_a_run_that_stopped_moving_shows_as_interrupted(ctx: Flask) -> None:
    page, admin = admin_page(ctx)
    run_id = start(admin)
    with unit_of_work():
        imports.record_import_progress(run_id, 400, 900)
        run = db.session.get(FormularyImport, run_id)
        assert run is not None
        run.updated_at = utcnow() - imports.IMPORT_STALE_AFTER - timedelta(seconds=1)
    data = page.get(f"/admin/formulary/runs/{run_id}/progress").get_json()
    assert data["state"] == "interrupted" and data["done"] == 400
    html = page.get(f"/admin/formulary/runs/{run_id}").get_data(as_text=True)
    assert 'id="import-interrupted"' in html and "400" in html and 'id="import-progress"' not in html
    # A run that moved recently is still running.
    with unit_of_work():
        imports.record_import_progress(run_id, 401, 900)
    assert page.get(f"/admin/formulary/runs/{run_id}/progress").get_json()["state"] == "running"


def test_an_upload_whose_request_rolls_back_leaves_neither_run_nor_file(ctx: Flask, tmp_path: Path) -> None:
    _, admin = admin_page(ctx)
    path = tmp_path / "upload.csv"
    path.write_text(CSV, encoding="utf-8")
    actor = Actor(str(admin.id), "admin")
    with acting_as(actor):
        session = db.session()
        run = imports.start_import(Principal(admin.id, "admin"), "upload.csv")
        imports.run_after_commit(session, ctx, run.id, path, actor)
        session.rollback()
    assert not path.exists()
    assert db.session.scalar(select(FormularyImport.id)) is None
    assert imported_names() == set()
