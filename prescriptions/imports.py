"""The formulary import: a hospital formulary CSV (API.md `drugs import`) into the catalog
(`import_formulary`, also run by `flask drugs import`), and the runs of an import started
from the pages.

A hospital formulary can hold tens of thousands of rows, too many for one request. The
upload request records the run (`start_import`) and saves the file in the
instance folder; once that request has committed, this runner works through the file in a
thread of the same process (the file is on that host).

It commits like a job runner, through `unit_of_work()`: the rows go in batches of
`IMPORT_BATCH_ROWS`, and each batch commits together with the run's progress.
So:
- every gunicorn worker, and every host, reads the same progress from the database;
- on SQLite, other writers (visits, prescriptions) wait for one batch at most, never for
  the whole import;
- an import that fails or is cut off keeps the batches it committed, and its run says how
  many rows those were. Importing the same file again is safe: products are upserted by
  name, form and strength, and their control class is worked out again from the lists.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from clinic.core import audit
from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, get_or_404, unit_of_work, utcnow
from clinic.core.principal import Principal
from prescriptions import ingredients as ing
from prescriptions.catalog import ProductSpec, upsert_product
from prescriptions.models import Drug, FormularyImport, ImportState

log = logging.getLogger("clinic.prescriptions")

IMPORT_REQUIRED = ("name", "form", "strength", "route")
IMPORT_OPTIONAL = ("generic_name", "ingredients", "cold_chain", "generic_name_en", "atc_code")
TRUE = {"true", "1", "yes", "y", "是", "t"}
FALSE = {"false", "0", "no", "n", "否", "f", ""}


# --- import ------------------------------------------------------------------------


@dataclass
class ImportReport:
    path: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    controlled: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    unresolved: list[dict[str, Any]] = field(default_factory=list)
    unclassified: list[dict[str, Any]] = field(default_factory=list)  # held: not prescribable until classified
    fatal: str | None = None

    @property
    def imported(self) -> int:
        return self.created + self.updated

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows_read": self.rows_read,
            "imported": self.imported,
            "created": self.created,
            "updated": self.updated,
            "controlled": self.controlled,
            "refused": self.refused,
            "unresolved": self.unresolved,
            "unclassified": self.unclassified,
            "fatal": self.fatal,
        }

    def summary(self) -> str:
        lines = [
            f"{self.path}: {self.rows_read} rows read, {self.imported} imported "
            f"({self.created} new, {self.updated} updated), {len(self.refused)} refused"
        ]
        if self.fatal:
            lines.append(f"NOTHING IMPORTED: {self.fatal}")
        if self.controlled:
            lines.append(f"Classified as controlled ({len(self.controlled)}):")
            lines += [f"  row {c['row']}: {c['name']} → {c['control_class']}: {c['reason']}" for c in self.controlled]
        if self.unclassified:
            lines.append(
                f"Held as unclassified ({len(self.unclassified)}): not prescribable until a pharmacist "
                "or administrator classifies them (classification queue):"
            )
            lines += [f"  row {u['row']}: {u['name']}: {u['reason']}" for u in self.unclassified]
        if self.refused:
            lines.append("Refused:")
            lines += [f"  row {r['row']}: {r['reason']}" for r in self.refused]
        if self.unresolved:
            lines.append("Imported, but part of the name matched no known ingredient (check them):")
            lines += [f"  row {u['row']}: {u['name']}: '{u['text']}'" for u in self.unresolved]
        return "\n".join(lines)


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"cold_chain must be true or false, not {raw!r}")


LIMITS = {"name": 200, "form": 64, "strength": 100, "route": 64, "generic_name": 200, "generic_name_en": 200}


def _row_spec(row: dict[str, str | None]) -> ProductSpec:
    extra = [k for k in row if k is None]
    if extra or None in row.values():
        raise ValueError("wrong number of columns")
    values = {k: (v or "").strip() for k, v in row.items() if k}
    for col in IMPORT_REQUIRED:
        if col != "strength" and not values.get(col):
            raise ValueError(f"'{col}' is empty")
    for col, limit in LIMITS.items():
        if len(values.get(col, "")) > limit:
            raise ValueError(f"'{col}' is longer than {limit} characters")
    if any(ch in values["name"] for ch in "\x00\r\n\t"):
        raise ValueError("'name' contains control characters")
    parts = [p.strip() for p in values.get("ingredients", "").replace("；", ";").split(";")]
    if values.get("ingredients") and not all(parts):
        raise ValueError("'ingredients' has an empty entry (use ';' between names)")
    atc = values.get("atc_code") or None
    if atc and not (len(atc) <= 7 and atc[0].isalpha() and atc.isalnum()):
        raise ValueError(f"'atc_code' {atc!r} is not an ATC code")
    return ProductSpec(
        name=values["name"],
        form=values["form"],
        strength=values.get("strength", ""),
        route=values["route"],
        generic_name=values.get("generic_name", ""),
        generic_name_en=values.get("generic_name_en", ""),
        atc_code=atc.upper() if atc else None,
        cold_chain=_parse_bool(values.get("cold_chain", "")),
        ingredients=tuple(p for p in parts if p),
        source="import",
    )


def _infer_atc(c: ing.Classification) -> str | None:
    """An imported product without an ATC code takes it from a seeded product of the same ingredients."""
    if not c.ingredients:
        return None
    for drug in db.session.scalars(select(Drug).where(Drug.atc_code.is_not(None), Drug.source == "seed")):
        if tuple(drug.ingredients) == c.ingredients:
            return drug.atc_code
    return None


def read_rows(text: str) -> Iterator[tuple[int, dict[str, str | None]]]:
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        yield reader.line_num, row


def import_formulary(path: str | Path, progress: Any = None) -> ImportReport:
    """Import a hospital formulary CSV (API.md): classify every row, refuse malformed ones."""
    report = ImportReport(path=str(path))
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        report.fatal = "file not found"
        return report
    except (OSError, UnicodeDecodeError) as exc:
        report.fatal = f"cannot read the file as UTF-8 ({exc.__class__.__name__})"
        return report
    header = next(csv.reader(io.StringIO(text)), None)
    if not header:
        report.fatal = "the file is empty"
        return report
    columns = [h.strip() for h in header]
    missing = [c for c in IMPORT_REQUIRED if c not in columns]
    if missing:
        report.fatal = f"the header lacks the column(s) {', '.join(missing)}"
        return report
    unknown = [c for c in columns if c not in IMPORT_REQUIRED + IMPORT_OPTIONAL]
    session = db.session()
    reader = csv.DictReader(io.StringIO(text))
    reader.fieldnames = columns
    next(reader, None)  # the header itself
    rows = list(reader)
    total = len(rows)
    for index, row in enumerate(rows, start=2):
        report.rows_read += 1
        if progress is not None:
            progress(report.rows_read, total)
        for col in unknown:
            row.pop(col, None)
        try:
            spec = _row_spec(row)
        except ValueError as exc:
            report.refused.append({"row": index, "reason": str(exc)})
            continue
        # No savepoint per row: a row is refused above, by validation, or the import stops.
        # (pysqlite does not begin a transaction before SAVEPOINT, so on SQLite a per-row
        # savepoint committed each row on its own, whatever the caller's transaction.)
        if spec.atc_code is None:
            probe = ing.classify(spec.name, ingredients=spec.ingredients, generic_name=spec.generic_name)
            spec = ProductSpec(**{**spec.__dict__, "atc_code": _infer_atc(probe)})
        drug, c, created = upsert_product(spec)
        session.flush()
        if created:
            report.created += 1
        else:
            report.updated += 1
        if drug.control_class == ing.UNCLASSIFIED:
            report.unclassified.append(
                {"row": index, "name": spec.name, "drug_id": str(drug.id), "reason": drug.control_reason}
            )
        elif drug.control_class:
            report.controlled.append(
                {"row": index, "name": spec.name, "control_class": drug.control_class, "reason": drug.control_reason}
            )
        if c.unresolved and not c.ingredients and drug.control_class != ing.UNCLASSIFIED:
            report.unresolved.append({"row": index, "name": spec.name, "text": c.unresolved})
    if report.rows_read == 0:
        report.fatal = "no data rows"
    audit.record(
        session,
        "catalog.imported",
        subject_type="catalog",
        detail={
            "path": str(path),
            "rows": report.rows_read,
            "imported": report.imported,
            "controlled": len(report.controlled),
            "unclassified": [u["row"] for u in report.unclassified],
            "refused": [r["row"] for r in report.refused],
        },
    )
    return report


# --- formulary imports started from the pages ------------------------------------------

IMPORT_BATCH_ROWS = 200  # rows committed together with the run's progress
IMPORT_STALE_AFTER = timedelta(minutes=2)  # a running import that has not moved for this long stopped


def start_import(who: Principal, filename: str) -> FormularyImport:
    """Record that an administrator started importing a file (the runner does the rows)."""
    session = db.session()
    run = FormularyImport(filename=filename[:200] or "formulary.csv", started_by=who.account_id)
    session.add(run)
    session.flush()
    audit.record(
        session,
        "catalog.import_started",
        subject_type="formulary_import",
        subject_id=run.id,
        detail={"file": run.filename},
    )
    return run


def formulary_import(run_id: uuid.UUID) -> FormularyImport | None:
    return db.session.get(FormularyImport, run_id)


def recent_imports(limit: int = 20) -> list[FormularyImport]:
    return list(db.session.scalars(select(FormularyImport).order_by(FormularyImport.started_at.desc()).limit(limit)))


def import_status(run: FormularyImport, now: datetime | None = None) -> str:
    """running | done | failed, or interrupted: still marked running but not moving any more."""
    if run.state == ImportState.RUNNING and run.updated_at < (now or utcnow()) - IMPORT_STALE_AFTER:
        return "interrupted"
    return run.state.value


def record_import_progress(run_id: uuid.UUID, done: int, total: int) -> None:
    run = get_or_404(FormularyImport, run_id)
    run.done, run.total, run.updated_at = done, total, utcnow()


def finish_import(run_id: uuid.UUID, report: ImportReport) -> FormularyImport:
    run = get_or_404(FormularyImport, run_id)
    out = report.as_dict()
    out["path"] = run.filename  # not the temporary copy's path
    run.report, run.state = out, ImportState.DONE
    run.done = run.total = report.rows_read
    run.updated_at = run.finished_at = utcnow()
    return run


def fail_import(run_id: uuid.UUID, error: str, saved: int) -> FormularyImport:
    """The import stopped on `error` (an exception's name); its first `saved` rows were committed."""
    run = get_or_404(FormularyImport, run_id)
    run.state, run.error, run.done = ImportState.FAILED, error[:2000], saved
    run.updated_at = run.finished_at = utcnow()
    audit.record(
        db.session(),
        "catalog.import_failed",
        subject_type="formulary_import",
        subject_id=run.id,
        detail={"error": error, "rows_saved": saved},
    )
    return run


# --- the runner ----------------------------------------------------------------------------


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
        saved = 0

        def checkpoint(reading: int, total: int) -> None:
            # Called before each row: `reading - 1` rows are finished and flushed; a batch
            # commits with the run's progress, through the commit point.
            nonlocal saved
            finished = reading - 1
            if finished % IMPORT_BATCH_ROWS == 0:
                with unit_of_work():
                    record_import_progress(run_id, finished, total)
                saved = finished

        try:
            try:
                with unit_of_work():  # the last rows, with the run's report
                    finish_import(run_id, import_formulary(path, progress=checkpoint))
            except Exception as exc:  # the run must end visibly whatever happens
                log.exception("formulary import %s failed", run_id)
                with unit_of_work():
                    fail_import(run_id, exc.__class__.__name__, saved)
        except Exception:
            log.exception("could not record the failure of formulary import %s", run_id)
        finally:
            db.session.remove()
            path.unlink(missing_ok=True)
