"""The physician's prescribing pages (`physician_page`: logged in, face checked since this login).

The prescribing page of a visit in progress — catalog search, up to 5 items, weight,
long-term flag, guardian and accompanying physician for a child under 6 — with every
rule's verdict shown live (`check`, which calls `services.evaluate_prescription`, in the
words of `prescriptions.labels`), signing through `services.create_prescription`, the
signed prescription, its voiding and revision, and its PDF. The draft lives in the page
session (encrypted, since it may hold a guardian's ID number) so that a face check in the
middle of signing loses nothing.

The drug catalog's pages (formulary import, classification queue) are
`prescriptions.catalog_views`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import date
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
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
from flask_login import current_user
from pydantic import ValidationError

from clinic.core import crypto, idempotency
from clinic.core.db import record_id, utcnow
from clinic.core.errors import DomainError, RuleRefusal
from clinic.core.pages import label_for, page_principal, physician_page
from clinic.core.web import handle_refusal
from clinic.visits.models import Visit
from prescriptions import api, catalog, dosing, lifecycle, reads, rules, services
from prescriptions import document as rx_document
from prescriptions.forms import VoidForm
from prescriptions.labels import RX_STATUS, field_label, violations_out
from prescriptions.models import Drug, Prescription

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

FREQUENCIES = tuple(f.zh for f in dosing.FREQUENCIES.values())
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


# --- the physician's prescribing page ----------------------------------------------------------


def _english() -> bool:
    return str(get_locale()) == "en"


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
    return {"rx": old, "outcome": reads.review_outcome(old.id)}


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
        "signed": reads.visit_prescriptions(visit.id),
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
    return reads.prescription_for(page_principal(), record_id(prescription_id))


def _prescription_page(rx: Prescription, void_form: VoidForm | None = None, status: int = 200) -> Any:
    return render_template(
        "prescriptions/prescription.html",
        rx=rx,
        rx_status=RX_STATUS,
        outcome=reads.review_outcome(rx.id),
        diagnosis_national=rx_document.national_code_of(rx),
        replaced_by=reads.replaced_by(rx.id),
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
        lifecycle.void_prescription(page_principal(), record_id(prescription_id), form.reason.data or "")
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


def visit_history(visit_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Prescription]]:
    found: dict[uuid.UUID, list[Prescription]] = {}
    for rx in reads.prescriptions_of_visits(visit_ids):
        found.setdefault(rx.visit_id, []).append(rx)
    return found


def init_app(app: Flask) -> None:
    # The drug catalog's pages are on this blueprint too (same endpoint names): the module adds
    # its routes to `bp` when imported, so import it before registering.
    importlib.import_module("prescriptions.catalog_views")

    app.register_blueprint(bp)
