"""The runner of a formulary import started from the pages.

A hospital formulary can hold tens of thousands of rows, too many for one request. The
upload request records the run (`services.start_import`) and saves the file in the
instance folder; once that request has committed, this runner works through the file in a
thread of the same process (the file is on that host).

It owns its commits, like a job runner: the rows go in batches of
`services.IMPORT_BATCH_ROWS`, and each batch commits together with the run's progress.
So:
- every gunicorn worker, and every host, reads the same progress from the database;
- on SQLite, other writers (visits, prescriptions) wait for one batch at most, never for
  the whole import;
- an import that fails or is cut off keeps the batches it committed, and its run says how
  many rows those were. Importing the same file again is safe: products are upserted by
  name, form and strength, and their control class is worked out again from the lists.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db
from prescriptions import services

log = logging.getLogger("clinic.prescriptions")


def run_after_commit(session: Session, app: Flask, run_id: uuid.UUID, path: Path, actor: Actor) -> None:
    """Start the import in a thread once `session` commits the run; if it rolls back, drop the file."""
    started: list[bool] = []

    def start(_session: Session) -> None:  # the run is visible to the thread's own session now
        started.append(True)
        threading.Thread(
            target=run_import, args=(app, run_id, path, actor), name=f"import-{run_id}", daemon=True
        ).start()

    def discard(_session: Session) -> None:  # the request failed before its commit: no run, no file
        if not started:
            path.unlink(missing_ok=True)

    event.listen(session, "after_commit", start, once=True)
    event.listen(session, "after_rollback", discard, once=True)


def run_import(app: Flask, run_id: uuid.UUID, path: Path, actor: Actor) -> None:
    """Import `path` for the run `run_id`; whatever happens, the run ends done or failed."""
    with app.app_context(), acting_as(actor):
        session = db.session()
        saved = 0

        def checkpoint(reading: int, total: int) -> None:
            # Called before each row: `reading - 1` rows are finished and flushed.
            nonlocal saved
            finished = reading - 1
            if finished % services.IMPORT_BATCH_ROWS == 0:
                services.record_import_progress(run_id, finished, total)
                session.commit()
                saved = finished

        try:
            report = services.import_formulary(path, progress=checkpoint)
            services.finish_import(run_id, report)
            session.commit()
        except Exception as exc:  # the run must end visibly whatever happens
            log.exception("formulary import %s failed", run_id)
            session.rollback()
            try:
                services.fail_import(run_id, exc.__class__.__name__, saved)
                session.commit()
            except Exception:
                log.exception("could not record the failure of formulary import %s", run_id)
                session.rollback()
        finally:
            db.session.remove()
            path.unlink(missing_ok=True)
