"""Prescribing pages.

Physicians (`physician_page`: logged in, face checked since this login): the prescribing
page of a visit in progress — catalog search, up to 5 items, weight, long-term flag,
guardian and accompanying physician for a child under 6 — with every rule's verdict shown
live (`check`, which calls `services.evaluate_prescription`), signing through
`services.create_prescription`, the signed prescription and its PDF. The draft lives in
the page session (encrypted, since it may hold a guardian's ID number) so that a face
check in the middle of signing loses nothing.

Administrators: the formulary import (CSV, API.md `drugs import`) runs in a background
thread once the upload has committed (`prescriptions.imports`); its page polls the
progress every second, then shows the summary. Runs are rows in the database, so any
worker answers for any run; each import is audited (started, imported or failed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from flask_login import current_user
from pydantic import ValidationError

from clinic.core import crypto, idempotency
from clinic.core.audit import Actor
from clinic.core.db import db, record_id, utcnow
from clinic.core.errors import DomainError, RuleRefusal, Violation
from clinic.core.pages import admin_page, label_for, page_principal, physician_page, role_page
from clinic.core.web import handle_refusal
from clinic.visits import visit_room
from clinic.visits.models import Visit
from prescriptions import api, catalog, imports, rules, services
from prescriptions import document as rx_document
from prescriptions import ingredients as ing
from prescriptions.forms import ClassifyForm, ImportForm, VoidForm
from prescriptions.labels import CONTROL_CLASS, RX_STATUS, field_label
from prescriptions.models import Drug, FormularyImport, Prescription

log = logging.getLogger("clinic.prescriptions")

bp = Blueprint(
    "prescriptions",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/prescriptions",
)

FACE_REQUIRED = "face_verification_required"
ITEM_FIELDS = ("drug_id", "dose", "unit", "frequency", "route", "days", "quantity")
MAX_ROWS = 20  # rows read from a form; the rule (at most 5) reports more than 5
DRAFT_KEY = "rx_draft"

FREQUENCIES = tuple(f.zh for f in rules.FREQUENCIES.values())
UNITS = ("片", "粒", "mg", "g", "ml", "袋", "支", "U", "喷")


# --- the draft: form fields <-> a PrescriptionSpec ---------------------------------------------


def empty_draft() -> dict[str, Any]:
    return {
        "items": [],
        "replaces": "",
        "weight_kg": "",
        "long_term": False,
        "assessment_note": "",
        "guardian": {"patient_id": ""},
        "accompanying_physician": {"name": "", "license_no": "", "specialty": ""},
    }


def draft_from_form(form: Mapping[str, str]) -> dict[str, Any]:
    """The page's form as a draft (strings as typed; rows without a drug are dropped)."""
    draft = empty_draft()
    for n in range(MAX_ROWS):
        row = {k: (form.get(f"items-{n}-{k}") or "").strip()[:64] for k in ITEM_FIELDS}
        if row["drug_id"]:
            row["name"] = (form.get(f"items-{n}-name") or "").strip()[:200]
            draft["items"].append(row)
    draft["replaces"] = (form.get("replaces") or "").strip()[:36]
    draft["weight_kg"] = (form.get("weight_kg") or "").strip()[:16]
    draft["long_term"] = form.get("long_term") in ("1", "on", "true", "y")
    draft["assessment_note"] = (form.get("assessment_note") or "").strip()[:2000]
    draft["guardian"]["patient_id"] = (form.get("guardian_patient_id") or "").strip()[:64]
    for key in ("name", "license_no", "specialty"):
        draft["accompanying_physician"][key] = (form.get(f"physician_{key}") or "").strip()[:100]
    return draft


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts[:1] == ["items"] and len(parts) >= 3:
        return f"items-{parts[1]}-{parts[2]}"
    if parts[:1] == ["guardian"] and len(parts) >= 2:
        return f"guardian_{parts[1]}"
    if parts[:1] == ["accompanying_physician"] and len(parts) >= 2:
        return f"physician_{parts[1]}"
    return parts[0] if parts else "form"


def spec_from_draft(draft: Mapping[str, Any]) -> tuple[services.PrescriptionSpec | None, dict[str, str]]:
    """Validate the draft like the API does (the same request model); field errors by field name."""
    if not draft["items"]:
        return None, {"items": gettext("Add at least one drug.")}
    data: dict[str, Any] = {
        "items": [{k: (i.get(k) or None) for k in ITEM_FIELDS} for i in draft["items"]],
        "long_term": bool(draft["long_term"]),
        "assessment_note": draft["assessment_note"] or None,
    }
    if draft["weight_kg"]:
        data["weight_kg"] = draft["weight_kg"]
    if draft["guardian"].get("patient_id"):
        data["guardian"] = {"patient_id": draft["guardian"]["patient_id"]}
    if any(draft["accompanying_physician"].values()):
        data["accompanying_physician"] = {k: v or None for k, v in draft["accompanying_physician"].items()}
    try:
        body = api.PrescribeIn.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for e in exc.errors():
            name = _field_name(tuple(e["loc"]))
            errors.setdefault(name, f"{field_label(name)}：{gettext('Missing or not a valid value.')}")
        return None, errors
    return body.spec(), {}


def save_draft(visit_id: str, draft: dict[str, Any]) -> None:
    token = crypto.encrypt(json.dumps({"visit": visit_id, "draft": draft}).encode()).decode()
    session[DRAFT_KEY] = token


def load_draft(visit_id: str) -> dict[str, Any]:
    token = session.get(DRAFT_KEY)
    if not isinstance(token, str):
        return empty_draft()
    try:
        saved = json.loads(crypto.decrypt(token.encode()))
    except Exception:  # another key, a damaged cookie: start again
        return empty_draft()
    if saved.get("visit") != visit_id:
        return empty_draft()
    draft = empty_draft()
    draft.update(saved.get("draft") or {})
    return draft


# --- violations in the UI language -------------------------------------------------------------

# The rule violations on the prescribing page, in the UI language (the catalog has the Chinese);
# formatted with the violation's facts by `violation_message`.
MESSAGES: dict[str, LazyString] = {
    "controlled_substance": _l(
        "%(drug)s: specially controlled drugs (%(control)s) are never prescribed online (Art. 19)."
    ),
    "guardian_and_physician_required": _l(
        "A child under 6 needs a guardian recorded on the child's account and an accompanying "
        "physician (name, 15-digit licence number, specialty) (Art. 19). Check: %(missing)s."
    ),
    "diagnosis_mismatch": _l("%(drug)s is not indicated for the visit's confirmed diagnosis %(diagnosis)s (Art. 16)."),
    "too_many_items": _l("A prescription holds at most %(limit)s items; this one has %(count)s."),
    "supply_exceeds_limit": _l("%(drug)s: %(days)s days' supply exceeds the limit of %(limit)s days."),
    "weight_required": _l("The patient's weight is required under %(weight_age)s years."),
    "allergy_conflict": _l("%(drug)s contains %(ingredients)s, recorded as an allergy of the patient."),
    "duplicate_therapy": _l("%(ingredient)s is already prescribed in item %(other)s."),
    "duplicate_therapy_across": _l(
        "%(ingredient)s is already prescribed in another active prescription of this visit."
    ),
    "interaction_contraindicated": _l("%(pair)s: contraindicated together (%(source)s)."),
    "visit_not_active": _l("Only the attending physician of a visit in progress may prescribe (Art. 18)."),
    "dose_exceeds_maximum": _l("%(drug)s: %(dose_problem)s"),
    "quantity_mismatch": _l(
        "%(drug)s: the quantity %(quantity)s does not match dose × frequency × days: %(expected)s %(qunit)s "
        "(rounded up to whole packs of %(pack)s)."
    ),
    "unit_mismatch": _l("%(drug)s: %(unit_problem)s"),
    "drug_unclassified": _l(
        "%(drug)s: its ingredients are not yet classified against the control lists; it cannot be "
        "prescribed until a pharmacist or administrator classifies it."
    ),
}


def _dose_problem(d: Mapping[str, Any]) -> str:
    reason = d.get("reason")
    if reason == "frequency_not_allowed":
        return gettext("the frequency “%(f)s” is not allowed for this drug; allowed: %(allowed)s.") % {
            "f": d.get("frequency", ""),
            "allowed": "、".join(d.get("allowed", [])),
        }
    if reason == "no_pediatric_dose":
        return gettext("no dose for children is established for this product; it is not prescribed for a child.")
    unit = d.get("dose_unit", "")
    limits = "，".join(
        p
        for p in (
            gettext("at most %(x)s %(u)s a dose") % {"x": d["max_single"], "u": unit} if d.get("max_single") else "",
            gettext("at most %(x)s %(u)s a day") % {"x": d["max_daily"], "u": unit} if d.get("max_daily") else "",
        )
        if p
    )
    given = gettext("%(x)s %(u)s a dose") % {"x": d.get("single", ""), "u": unit}
    if d.get("daily"):
        given += "，" + gettext("%(x)s %(u)s a day") % {"x": d["daily"], "u": unit}
    by_weight = gettext(" (by the child's weight)") if d.get("per_kg") else ""
    return gettext("%(given)s exceeds the maximum: %(limits)s%(by_weight)s.") % {
        "given": given,
        "limits": limits,
        "by_weight": by_weight,
    }


def _unit_problem(d: Mapping[str, Any]) -> str:
    if d.get("allowed_units"):
        return gettext("a dose in “%(unit)s” does not fit this product; write it in %(allowed)s.") % {
            "unit": d.get("unit", ""),
            "allowed": "、".join(d["allowed_units"]),
        }
    if d.get("dispense_unit"):
        return gettext("the quantity is counted in %(u)s, not %(q)s.") % {
            "u": d["dispense_unit"],
            "q": d.get("quantity_unit", ""),
        }
    how = gettext("only whole or half units") if d.get("split") == "half" else gettext("only whole units")
    return gettext("the dose is %(units)s %(admin)s of %(per)s %(du)s each; this product is given in %(how)s.") % {
        "units": d.get("units", ""),
        "admin": d.get("admin_unit", ""),
        "per": d.get("per_unit", ""),
        "du": d.get("dose_unit", ""),
        "how": how,
    }


# What a child's prescription still lacks (rules.guardian_problems, rules.physician_problems), in words
MISSING: dict[str, LazyString] = {
    "guardian": _l("a guardian"),
    "guardian.name": _l("the guardian's name"),
    "guardian.relation": _l("the guardian's relation to the child"),
    "guardian.id_number": _l("the guardian's ID number"),
    "guardian.id_number (not an adult)": _l("the guardian must be an adult"),
    "guardian.not_recorded": _l("the guardian must be recorded as the child's guardian on the account"),
    "accompanying_physician": _l("an accompanying physician"),
    "accompanying_physician.name": _l("the accompanying physician's name"),
    "accompanying_physician.license_no": _l("the accompanying physician's licence number"),
    "accompanying_physician.license_no (15 digits)": _l(
        "the accompanying physician's licence number must be 15 digits"
    ),
    "accompanying_physician.specialty": _l("the accompanying physician's specialty"),
}


def _english() -> bool:
    return str(get_locale()) == "en"


def violation_message(v: Violation, names: list[str]) -> str:
    """A violation in the UI language: English shows the rule's own message."""
    code = "duplicate_therapy_across" if "other_prescription" in v.detail else v.code
    if _english() or code not in MESSAGES:
        return v.message
    d = v.detail
    params = {
        "drug": names[v.item] if v.item is not None and v.item < len(names) else "",
        "control": label_for("control", d.get("control_class")),
        "missing": "、".join(str(MISSING.get(str(m), m)) for m in d.get("missing", [])),
        "diagnosis": d.get("diagnosis") or "—",
        "limit": d.get("limit", ""),
        "count": d.get("count", ""),
        "days": d.get("days", ""),
        "weight_age": d.get("weight_age", ""),
        "ingredients": "、".join(d.get("ingredients", [])),
        "ingredient": d.get("ingredient", ""),
        "other": (d["other_item"] + 1) if isinstance(d.get("other_item"), int) else "",
        "pair": " + ".join(d.get("ingredients", [])),
        "source": d.get("source", ""),
        "dose_problem": _dose_problem(d) if v.code == "dose_exceeds_maximum" else "",
        "unit_problem": _unit_problem(d) if v.code == "unit_mismatch" else "",
        "quantity": d.get("quantity", ""),
        "expected": d.get("expected_min", "")
        if d.get("expected_min") == d.get("expected_max")
        else f"{d.get('expected_min', '')}–{d.get('expected_max', '')}",
        "qunit": d.get("quantity_unit", ""),
        "pack": d.get("pack", ""),
    }
    try:
        return str(MESSAGES[code]) % params
    except (KeyError, ValueError, TypeError):
        return v.message


def violations_out(violations: list[Violation], draft: Mapping[str, Any]) -> list[dict[str, Any]]:
    names = [i.get("name") or "" for i in draft["items"]]
    return [
        {
            "code": v.code,
            "title": label_for("rule", v.code),
            "item": v.item,
            "message": violation_message(v, names),
            "detail": v.detail,
        }
        for v in violations
    ]


# --- the physician's prescribing page ----------------------------------------------------------


def _visit(visit_id: str) -> Visit:
    return services.prescribing_visit(page_principal(), record_id(visit_id))


def _today() -> date:
    return utcnow().astimezone(services.CHINA).date()


def _evaluate(visit: Visit, draft: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every rule's verdict on the draft (and the fields that are not valid yet)."""
    spec, errors = spec_from_draft(draft)
    if spec is None:
        return [], errors
    try:
        violations, drugs = services.evaluate_prescription(page_principal().account_id, visit, spec)
    except DomainError as err:  # an unknown drug id
        return [], {"items": gettext(err.message)}
    for row, i in zip(draft["items"], spec.items, strict=True):
        row["name"] = _drug_label(drugs[i.drug_id])
        reference = catalog.dosing_summary(drugs[i.drug_id])
        row["reference"] = asdict(reference) if reference is not None else None
    return violations_out(violations, draft), {}


def _drug_label(d: Drug) -> str:
    return " ".join(p for p in (d.name, d.strength) if p)


def _replacing(draft: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ended prescription this draft revises, with the pharmacist's reasons."""
    if not draft.get("replaces"):
        return None
    try:
        old = _my_prescription(draft["replaces"])
    except DomainError:
        return None
    return {"rx": old, "outcome": services.review_outcome(old.id)}


def _page(visit: Visit, draft: dict[str, Any], status: int = 200, **extra: Any) -> Any:
    today = _today()
    born = visit.patient.birth_date
    weight_age = services.weight_required_age()
    violations, errors = extra.pop("checked", None) or _evaluate(visit, draft)
    ctx = {
        "visit": visit,
        "draft": draft,
        "violations": violations,
        "errors": errors,
        "age": rules.age_display(born, today),
        "english": _english(),
        "child": rules.is_under(born, today, rules.GUARDIAN_AGE),
        "guardians": services.recorded_guardians(visit.patient, today)
        if rules.is_under(born, today, rules.GUARDIAN_AGE)
        else (),
        "weight_age": weight_age,
        "weight_needed": rules.is_under(born, today, weight_age),
        "max_items": rules.MAX_ITEMS,
        "frequencies": FREQUENCIES,
        "units": UNITS,
        "signed": services.visit_prescriptions(visit.id),
        "replacing": _replacing(draft),
        "rx_status": RX_STATUS,
        "results": extra.pop("results", None),
        "q": extra.pop("q", ""),
        "idempotency_key": uuid.uuid4().hex,  # the sign button's one-time token
        **extra,
    }
    return render_template("prescriptions/prescribe.html", **ctx), status


def _new_row(drug: Drug) -> dict[str, Any]:
    unit = "粒" if "胶囊" in drug.form else ("片" if "片" in drug.form else "")
    return {
        "drug_id": str(drug.id),
        "name": _drug_label(drug),
        "dose": "1",
        "unit": unit,
        "frequency": FREQUENCIES[0],
        "route": drug.route or "口服",
        "days": "7",
        "quantity": "7",
    }


@bp.get("/physician/visits/<visit_id>/prescribe")
@physician_page
def prescribe(visit_id: str) -> Any:
    visit = _visit(visit_id)
    draft = load_draft(visit_id)
    q = (request.args.get("q") or "").strip()[:50]
    results = _search(q) if q else None
    return _page(visit, draft, results=results, q=q)


def _search(q: str) -> list[Drug]:
    try:
        return catalog.search_drugs(q)
    except DomainError:
        return []


@bp.post("/physician/visits/<visit_id>/prescribe")
@physician_page
def prescribe_post(visit_id: str) -> Any:
    """The form without JavaScript (search, add, remove, check) and signing."""
    visit = _visit(visit_id)
    draft = draft_from_form(request.form)
    action = request.form.get("action", "check")
    q = (request.form.get("q") or "").strip()[:50]
    if request.form.get("add"):
        try:
            drug = catalog.get_drugs([record_id(request.form["add"])])
        except DomainError:
            abort(422)
        if len(draft["items"]) < rules.MAX_ITEMS:
            draft["items"].append(_new_row(next(iter(drug.values()))))
        else:
            flash(_l("A prescription holds at most 5 items."), "error")
        action = "check"
    elif request.form.get("remove"):
        with contextlib.suppress(ValueError, IndexError):
            del draft["items"][int(request.form["remove"])]
        action = "check"
    save_draft(visit_id, draft)
    if action == "search":
        return _page(visit, draft, results=_search(q) if q else None, q=q)
    if action != "sign":
        return _page(visit, draft, q=q)
    spec, errors = spec_from_draft(draft)
    if spec is None:
        return _page(visit, draft, 422, checked=([], errors))
    try:
        rx_id = _sign_once(visit_id, spec, draft.get("replaces") or None)
    except DomainError as err:
        message = handle_refusal(err)
        if err.code == FACE_REQUIRED:
            flash(message, "error")  # the draft is kept: the face page comes back here
            return redirect(url_for("identity.face", next=url_for(".prescribe", visit_id=visit_id)))
        if isinstance(err, RuleRefusal):
            flash(gettext("Not signed: fix what the rules below say."), "error")
            return _page(visit, draft, err.status, checked=(violations_out(err.violations, draft), {}))
        flash(message, "error")
        return _page(visit, draft, err.status)
    session.pop(DRAFT_KEY, None)
    flash(_l("Signed. The prescription goes to a pharmacist for review."), "ok")
    return redirect(url_for(".prescription", prescription_id=rx_id))


def _sign_once(visit_id: str, spec: services.PrescriptionSpec, replaces: str | None = None) -> str:
    """Sign; the form's one-time token makes a double tap (or a resent form) sign once and
    answer the first prescription (clinic.core.idempotency). Without it, an identical
    prescription within a minute is refused as `duplicate_submission`."""
    try:
        key = idempotency.checked_key(request.form.get("idempotency_key") or None)
    except DomainError:
        key = None
    visit, revised = record_id(visit_id), record_id(replaces) if replaces else None
    if key is None:
        return str(services.create_prescription(page_principal(), visit, spec, replaces=revised).id)

    def sign() -> tuple[int, dict[str, Any]]:
        rx = services.create_prescription(page_principal(), visit, spec, refuse_repeats=False, replaces=revised)
        return 201, {"id": str(rx.id)}

    answer, _ = idempotency.run_once(
        current_user.id, "page_prescribe", key, idempotency.fingerprint("POST", request.path, b""), sign
    )
    return str(answer.response["id"])


@bp.post("/physician/visits/<visit_id>/prescribe/check")
@physician_page
def check(visit_id: str) -> Any:
    """The live verdict (the page posts its form here as it changes); the draft is kept too."""
    visit = _visit(visit_id)
    draft = draft_from_form(request.form)
    save_draft(visit_id, draft)
    violations, errors = _evaluate(visit, draft)
    resp = jsonify(
        {
            "ok": not violations and not errors,
            "violations": violations,
            "errors": errors,
            "names": [i.get("name", "") for i in draft["items"]],
            "references": [i.get("reference") for i in draft["items"]],
        }
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/physician/visits/<visit_id>/prescribe/drugs")
@physician_page
def drugs(visit_id: str) -> Any:
    """Catalog search for the page (the session's own JSON, not the Bearer API)."""
    _visit(visit_id)
    q = (request.args.get("q") or "").strip()[:50]
    found = _search(q) if q else []
    resp = jsonify(
        {
            "items": [
                {
                    "id": str(d.id),
                    "name": d.name,
                    "label": _drug_label(d),
                    "generic_name": d.generic_name,
                    "generic_name_en": d.generic_name_en,
                    "form": d.form,
                    "strength": d.strength,
                    "route": d.route,
                    "control_class": d.control_class,
                    "control_label": label_for("control", d.control_class) if d.control_class else "",
                    "cold_chain": d.cold_chain,
                    "row": _new_row(d),
                }
                for d in found
            ]
        }
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _my_prescription(prescription_id: str) -> Prescription:
    return services.prescription_for(page_principal(), record_id(prescription_id))


def _prescription_page(rx: Prescription, void_form: VoidForm | None = None, status: int = 200) -> Any:
    return render_template(
        "prescriptions/prescription.html",
        rx=rx,
        rx_status=RX_STATUS,
        outcome=services.review_outcome(rx.id),
        diagnosis_national=rx_document.national_code_of(rx),
        replaced_by=services.replaced_by(rx.id),
        revisable=rx.status.value in ("returned", "rejected", "cancelled"),
        void_form=void_form or VoidForm(),
    ), status


@bp.get("/physician/prescriptions/<prescription_id>")
@physician_page
def prescription(prescription_id: str) -> Any:
    return _prescription_page(_my_prescription(prescription_id))


@bp.post("/physician/prescriptions/<prescription_id>/void")
@physician_page
def void(prescription_id: str) -> Any:
    rx = _my_prescription(prescription_id)
    form = VoidForm()
    if not form.validate_on_submit():
        return _prescription_page(rx, form, 422)
    try:
        services.void_prescription(page_principal(), record_id(prescription_id), form.reason.data or "")
    except DomainError as err:
        form.reason.errors = [handle_refusal(err)]
        return _prescription_page(_my_prescription(prescription_id), form, err.status)
    flash(_l("The prescription is voided; the pharmacists no longer see it."), "ok")
    return redirect(url_for(".prescription", prescription_id=prescription_id))


@bp.get("/physician/prescriptions/<prescription_id>/revise")
@physician_page
def revise(prescription_id: str) -> Any:
    """修改后重新签署: the prescribing page, filled with the ended prescription's items."""
    rx = _my_prescription(prescription_id)
    c = rx.content
    draft = empty_draft()
    draft["replaces"] = str(rx.id)
    draft["items"] = [
        {
            "drug_id": i["drug_id"],
            "name": " ".join(p for p in (i.get("name", ""), i.get("strength", "")) if p),
            "dose": str(i["dose"]),
            "unit": i["unit"],
            "frequency": i["frequency"],
            "route": i["route"],
            "days": str(i["days"]),
            "quantity": str(i["quantity"]),
        }
        for i in c.get("items", [])
    ]
    draft["weight_kg"] = c.get("weight_kg") or ""
    draft["long_term"] = bool(c.get("long_term"))
    draft["assessment_note"] = rx.assessment_note or ""
    if rx.guardian:  # the ID number is kept masked: the physician types it again
        draft["guardian"].update(name=rx.guardian.get("name", ""), relation=rx.guardian.get("relation", ""))
    if rx.accompanying_physician:
        draft["accompanying_physician"].update(rx.accompanying_physician)
    save_draft(str(rx.visit_id), draft)
    return redirect(url_for(".prescribe", visit_id=rx.visit_id))


@bp.get("/physician/prescriptions/<prescription_id>/document")
@physician_page
def document(prescription_id: str) -> Response:
    rx = _my_prescription(prescription_id)
    return Response(
        rx_document.document_for(rx),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="prescription-{rx.id}.pdf"', "Cache-Control": "no-store"},
    )


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


def _history(visit_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Prescription]]:
    found: dict[uuid.UUID, list[Prescription]] = {}
    for rx in services.prescriptions_of_visits(visit_ids):
        found.setdefault(rx.visit_id, []).append(rx)
    return found


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    visit_room.on_history(_history)  # the visit room's patient history shows prescriptions
