"""The patient's return-visit pages (a phone): proofs of in-person diagnoses (upload, follow
the review, the proof's document), informed consent, requesting a visit, paying for it
(when payments are on), the list of their visits and cancelling one."""

from __future__ import annotations

import uuid
from typing import Any

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_babel import lazy_gettext as _l
from werkzeug.wrappers import Response
from wtforms.fields.choices import SelectChoice

from clinic.core import storage
from clinic.core.config import settings
from clinic.core.db import as_uuid, db, record_id
from clinic.core.errors import DomainError, RuleRefusal
from clinic.core.pages import page_principal, participant_page, patient_page
from clinic.visits import condition_catalog, informed_consent, lifecycle, proofs, requesting, service_switch
from clinic.visits.forms import CancelForm, ConsentForm, DiagnosisForm, VisitRequestForm
from clinic.visits.models import Diagnosis, DiagnosisStatus
from clinic.visits.room_views import room_page
from clinic.visits.rules import VisitStatus
from clinic.visits.views import bp, condition_label, consent_html, english, me, read_upload, refused
from identity.models import Account, Role

# --- patients: proofs of in-person diagnoses --------------------------------------------


def _patient_choices(account: Account) -> list[SelectChoice]:
    return [SelectChoice(str(p.id), p.name) for p in account.patients]


def _diagnoses_page(form: DiagnosisForm, status: int = 200) -> Any:
    return render_template(
        "visits/diagnoses.html",
        form=form,
        diagnoses=proofs.diagnoses_of_account(page_principal().account_id),
        conditions=condition_catalog.list_conditions(),
        english=english(),
    ), status


@bp.route("/diagnoses", methods=["GET", "POST"])
@patient_page
def diagnoses() -> Any:
    account = me()
    form = DiagnosisForm()
    form.patient_id.choices = _patient_choices(account)
    if request.method == "POST":
        if not form.validate_on_submit():
            return _diagnoses_page(form, 422)
        typed = (form.icd10.data or "").strip()
        named = condition_catalog.condition_by_name(typed)  # the patient picked the condition by its name
        raw_code = named.code if named is not None else (typed.split()[0] if typed.split() else "")
        data = read_upload(form.document.data, settings().MAX_DOCUMENT_BYTES) or b""
        try:
            proofs.submit_diagnosis(
                page_principal(),
                record_id(form.patient_id.data),
                raw_code,
                form.institution.data,
                form.diagnosed_on.data,
                data,
                form.document_kind.data,
            )
        except DomainError as err:
            flash(refused(err), "error")
            return _diagnoses_page(form, err.status)
        flash(_l("Uploaded. A physician will review it; you can follow it here."), "ok")
        return redirect(url_for("visits.diagnoses"))
    return _diagnoses_page(form)


@bp.get("/diagnoses/conditions.json")
@patient_page
def condition_search() -> Response:
    """The condition catalog searched by name as the patient types (the upload form's list)."""
    q = (request.args.get("q") or "").strip()[:40]
    in_english = english()
    items = [
        {"name": c.name_en if in_english else c.name_zh, "department": c.department}
        for c in condition_catalog.search_conditions(q)
    ]
    resp = jsonify({"items": items})
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/diagnoses/<diagnosis_id>/document")
@participant_page
def diagnosis_document(diagnosis_id: str) -> Response:
    """The proof itself, only to its patient's account or a physician: never a static URL."""
    diag = proofs.diagnosis_for(page_principal(), record_id(diagnosis_id))
    try:
        data = storage.load(diag.document_path)
    except FileNotFoundError:
        abort(404)
    resp = Response(data, mimetype=diag.document_type)
    ext = diag.document_type.rsplit("/", 1)[-1].replace("jpeg", "jpg")
    # Never rendered as a page of this site: saved (or shown in an <img>), with no script.
    resp.headers["Content-Disposition"] = f'attachment; filename="diagnosis-{diag.id}.{ext}"'
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


# --- patients: informed consent ---------------------------------------------------------


def _consent_page(status: int = 200) -> Any:
    account = me()
    text = informed_consent.current_consent()
    people = [(p, informed_consent.has_current_consent(p.id)) for p in account.patients]
    return render_template(
        "visits/consent.html",
        consent=text,
        body=consent_html(text.text_en if english() else text.text_zh),
        people=people,
        next=_safe_next(request.args.get("next")),
        form=ConsentForm(),
    ), status


def _safe_next(target: str | None) -> str | None:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@bp.get("/consent")
@patient_page
def consent() -> Any:
    return _consent_page()


@bp.post("/consent")
@patient_page
def accept_consent() -> Any:
    form = ConsentForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        informed_consent.accept_consent(page_principal(), record_id(form.patient_id.data), form.version.data)
    except DomainError as err:
        flash(refused(err), "error")
        return _consent_page(err.status)
    flash(_l("Thank you: your consent is recorded."), "ok")
    return redirect(_safe_next(request.args.get("next")) or url_for("visits.consent"))


# --- patients: requesting, paying, following a visit ------------------------------------


def _confirmed(account: Account) -> list[Diagnosis]:
    return [d for d in proofs.diagnoses_of_account(account.id) if d.status == DiagnosisStatus.CONFIRMED]


def _chosen_physician(physician_id: str | None) -> Account | None:
    key = as_uuid(physician_id) if physician_id else None
    account = db.session.get(Account, key) if key is not None else None
    return account if account is not None and account.role == Role.PHYSICIAN else None


def _request_form(account: Account, confirmed: list[Diagnosis]) -> VisitRequestForm:
    form = VisitRequestForm()
    # One optgroup per person (wtforms groups adjacent choices with the same optgroup).
    person_order: dict[uuid.UUID, int] = {}
    for d in confirmed:
        person_order.setdefault(d.patient_id, len(person_order))
    by_person = sorted(confirmed, key=lambda d: person_order[d.patient_id])
    form.diagnosis_id.choices = [
        SelectChoice(str(d.id), condition_label(d), optgroup=d.patient.name) for d in by_person
    ]
    if request.method == "GET":
        if request.args.get("diagnosis"):
            form.diagnosis_id.data = request.args["diagnosis"]
        if request.args.get("physician"):
            form.physician_id.data = request.args["physician"]
        # Back from the consent detour: what the patient had typed is still there.
        draft = session.pop("visit_draft", None)
        if isinstance(draft, dict) and draft.get("diagnosis_id") == form.diagnosis_id.data:
            form.complaint.data = str(draft.get("complaint") or "")
            form.physician_id.data = form.physician_id.data or draft.get("physician_id") or ""
    return form


def _request_page(form: VisitRequestForm, confirmed: list[Diagnosis], status: int = 200) -> Any:
    consented = {d.patient_id: informed_consent.has_current_consent(d.patient_id) for d in confirmed}
    return render_template(
        "visits/request.html",
        form=form,
        confirmed=confirmed,
        consented=consented,
        suspended=service_switch.suspension(),
        physician=_chosen_physician(form.physician_id.data),
    ), status


@bp.route("/visits/new", methods=["GET", "POST"])
@patient_page
def request_visit() -> Any:
    account = me()
    confirmed = _confirmed(account)
    form = _request_form(account, confirmed)
    if request.method == "POST":
        if not form.validate_on_submit():
            return _request_page(form, confirmed, 422)
        chosen = next((d for d in confirmed if str(d.id) == form.diagnosis_id.data), None)
        if chosen is None:
            abort(422)
        physician = _chosen_physician(form.physician_id.data)
        back = url_for(
            "visits.request_visit", diagnosis=str(chosen.id), physician=str(physician.id) if physician else None
        )
        try:
            new = requesting.request_visit(
                page_principal(),
                chosen.patient_id,
                chosen.id,
                chosen.department or "",
                form.complaint.data or "",
                physician.id if physician else None,
            )
        except requesting.VisitAlreadyOpen as err:
            refused(err)  # rolled back and recorded
            flash(_l("This diagnosis already has an open visit: here it is."), "error")
            return redirect(url_for("visits.room", visit_id=err.extra["visit_id"]))
        except RuleRefusal as err:
            message = refused(err)
            if any(v.code == "consent_required" for v in err.violations):
                flash(_l("Before a first online visit, please read and accept the informed consent."), "error")
                session["visit_draft"] = {
                    "diagnosis_id": str(chosen.id),
                    "complaint": (form.complaint.data or "")[:2000],
                    "physician_id": str(physician.id) if physician else "",
                }
                return redirect(url_for("visits.consent", next=back))
            flash(message, "error")
            return _request_page(form, confirmed, err.status)
        except DomainError as err:
            flash(refused(err), "error")
            return _request_page(form, confirmed, err.status)
        if new.payment is not None:
            # What the pay page needs to resume the PaymentIntent (the last few visits only).
            payments = dict(list(session.get("visit_payments", {}).items())[-4:])
            payments[str(new.id)] = {
                "client_secret": new.payment.client_secret,
                "amount_fen": new.payment.amount_fen,
            }
            session["visit_payments"] = payments
        if new.status == VisitStatus.AWAITING_PAYMENT:
            return redirect(url_for("visits.pay", visit_id=new.id))
        flash(_l("Your visit is requested. A physician of the department will take it shortly."), "ok")
        return redirect(url_for("visits.room", visit_id=new.id))
    return _request_page(form, confirmed)


@bp.get("/visits")
@patient_page
def my_visits() -> Any:
    return render_template("visits/my_visits.html", visits=lifecycle.visits_of(page_principal()))


@bp.get("/visits/<visit_id>/pay")
@patient_page
def pay(visit_id: str) -> Any:
    visit = lifecycle.visit_for(page_principal(), record_id(visit_id))
    if current_app.extensions.get("payments") is None or visit.status != VisitStatus.AWAITING_PAYMENT:
        return redirect(url_for("visits.room", visit_id=visit.id))
    stored = session.get("visit_payments", {}).get(str(visit.id), {})
    stripe_on = settings().PAYMENTS == "stripe"
    return render_template(
        "visits/pay.html",
        visit=visit,
        amount_fen=int(stored.get("amount_fen") or visit.fee_fen),
        client_secret=stored.get("client_secret") if stripe_on else None,
        publishable_key=settings().STRIPE_PUBLISHABLE_KEY if stripe_on else "",
        stripe_on=stripe_on,
        cancel_form=CancelForm(),
    )


@bp.post("/visits/<visit_id>/cancel")
@patient_page
def cancel(visit_id: str) -> Any:
    form = CancelForm()
    if not form.validate_on_submit():
        abort(400)
    reason = form.reason.data or "cancelled by the patient"
    try:
        lifecycle.cancel_visit(page_principal(), record_id(visit_id), reason)
    except DomainError as err:
        flash(refused(err), "error")
        return room_page(visit_id, status=err.status)
    flash(_l("The visit is cancelled. A paid fee is refunded."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id))
