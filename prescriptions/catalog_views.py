"""The drug catalog's pages.

Administrators: the formulary import (CSV, API.md `drugs import`) runs in a background
thread once the upload has committed (`prescriptions.imports`); its page polls the
progress every second, then shows the summary. Runs are rows in the database, so any
worker answers for any run; each import is audited (started, imported or failed).

Pharmacists and administrators: the classification queue, the products held because their
ingredients were not recognised against the control lists (`prescriptions.catalog`).

On the prescriptions blueprint, as before the split (endpoint names and url_for stay):
`prescriptions.views.init_app` imports this module before it registers the blueprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from clinic.core.audit import Actor
from clinic.core.db import db, record_id
from clinic.core.errors import DomainError
from clinic.core.pages import admin_page, page_principal, role_page
from clinic.core.web import handle_refusal
from prescriptions import catalog, imports
from prescriptions import ingredients as ing
from prescriptions.forms import ClassifyForm, ImportForm
from prescriptions.labels import CONTROL_CLASS
from prescriptions.models import Drug, FormularyImport
from prescriptions.views import bp

# --- administrators: formulary import with progress ---------------------------------------------


IMPORT_STATUS = {
    "running": _l("Running"),
    "done": _l("Done"),
    "failed": _l("Failed"),
    "interrupted": _l("Interrupted"),
}


def _run_view(run: FormularyImport) -> dict[str, Any]:
    """What the pages and the progress poll show of a run, whichever worker answers."""
    status = imports.import_status(run)
    return {
        "id": str(run.id),
        "filename": run.filename,
        "started_at": run.started_at,
        "state": status,
        "state_label": str(IMPORT_STATUS.get(status, status)),
        "total": run.total,
        "done": run.done,
        "report": run.report,
        "error": run.error,
    }


@bp.route("/admin/formulary", methods=["GET", "POST"])
@admin_page
def formulary() -> Any:
    form = ImportForm()
    if form.validate_on_submit():
        upload = form.file.data
        run = imports.start_import(page_principal(), Path(upload.filename or "formulary.csv").name)
        folder = Path(current_app.instance_path) / "imports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{run.id}.csv"
        upload.save(str(path))
        actor = Actor(id=str(current_user.id), role="admin", client_ip=request.remote_addr)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        imports.run_after_commit(db.session(), app, run.id, path, actor)
        return redirect(url_for(".import_run", run_id=run.id))
    status = 422 if form.errors else 200
    runs = [_run_view(r) for r in imports.recent_imports()]
    return render_template("prescriptions/formulary.html", form=form, runs=runs), status


def _run(run_id: str) -> dict[str, Any]:
    run = imports.formulary_import(record_id(run_id))
    if run is None:
        abort(404)
    return _run_view(run)


@bp.get("/admin/formulary/runs/<run_id>")
@admin_page
def import_run(run_id: str) -> Any:
    return render_template("prescriptions/import_run.html", run=_run(run_id))


@bp.get("/admin/formulary/runs/<run_id>/progress")
@admin_page
def import_run_json(run_id: str) -> Any:
    data = _run(run_id)
    data["started_at"] = data["started_at"].isoformat()
    resp = jsonify(data)
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --- the classification queue: drugs held because their ingredients were not recognised ---------


def _ingredient_names(drug: Drug) -> str:
    lex = ing.lexicon()
    return "、".join(lex.zh_of[k] for k in drug.ingredients if k in lex.zh_of) or "—"


@bp.route("/catalog/classification", methods=["GET"])
@role_page("admin", "pharmacist")
def classification_queue() -> Any:
    """Drugs held as unclassified, for a pharmacist or administrator to classify one by one."""
    held = catalog.unclassified_drugs()
    recent = catalog.recently_classified()
    return render_template(
        "prescriptions/classification.html",
        held=held,
        recent=recent,
        form=ClassifyForm(),
        ingredient_names=_ingredient_names,
        control_words=CONTROL_CLASS,
    )


@bp.route("/catalog/classification/<drug_id>", methods=["POST"])
@role_page("admin", "pharmacist")
def classify(drug_id: str) -> Any:
    form = ClassifyForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(str(error), "error")
        return redirect(url_for(".classification_queue"))
    try:
        drug = catalog.classify_drug(page_principal(), record_id(drug_id), form.choice.data or "", form.note.data or "")
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return redirect(url_for(".classification_queue"))
    label = CONTROL_CLASS[drug.control_class] if drug.control_class else gettext("an ordinary drug")
    flash(gettext("%(name)s is now classified as %(label)s.", name=drug.name, label=str(label)), "success")
    return redirect(url_for(".classification_queue"))
