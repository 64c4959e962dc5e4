"""Pages: the public physician directory (phone), rating a visit, complaints; the
administrators' complaints page (desktop). Thin: parse, call one service, render."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from markupsafe import Markup
from sqlalchemy import select
from wtforms import HiddenField, RadioField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from clinic.core.db import db, record_id
from clinic.core.errors import DomainError
from clinic.core.pages import admin_page, page_principal, patient_page
from clinic.core.web import handle_refusal
from clinic.feedback import rules, services
from clinic.visits.models import Visit, VisitStatus
from identity import services as identity
from identity.models import Account, Department, Role

bp = Blueprint("feedback", __name__, template_folder="templates")


class RatingForm(FlaskForm):
    score = RadioField(
        _l("Your rating"),
        choices=[
            SelectChoice("5", _l("5 — very satisfied")),
            SelectChoice("4", _l("4 — satisfied")),
            SelectChoice("3", _l("3 — so-so")),
            SelectChoice("2", _l("2 — dissatisfied")),
            SelectChoice("1", _l("1 — very dissatisfied")),
        ],
        validators=[DataRequired(message=_l("Choose a rating from 1 to 5."))],
    )
    comment = TextAreaField(_l("Comment (optional)"), validators=[Optional(), Length(max=rules.MAX_COMMENT)])


class ComplaintForm(FlaskForm):
    visit_id = HiddenField(validators=[Optional()])
    prescription_id = HiddenField(validators=[Optional()])
    text = TextAreaField(
        _l("What went wrong?"),
        validators=[
            DataRequired(message=_l("Write what the complaint is about.")),
            Length(max=rules.MAX_COMPLAINT, message=_l("A complaint is at most 2,000 characters.")),
        ],
    )


class AnswerForm(FlaskForm):
    response = TextAreaField(
        _l("Answer to the patient"), validators=[DataRequired(), Length(min=1, max=rules.MAX_RESPONSE)]
    )


def _english() -> bool:
    return str(get_locale()) == "en"


# --- the public directory -----------------------------------------------------------------


@bp.get("/physicians")
def directory() -> Any:
    department = request.args.get("department") or None
    approved = identity.institution_status().approved_departments
    departments = [d for d in db.session.scalars(select(Department).order_by(Department.code)) if d.code in approved]
    return render_template(
        "feedback/directory.html",
        physicians=services.physician_directory(department),
        departments=departments,
        department=department,
        english=_english(),
    )


# --- rating a visit -------------------------------------------------------------------------


@bp.post("/visits/<visit_id>/rate")
@patient_page
def rate(visit_id: str) -> Any:
    form = RatingForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for e in errors:
                flash(str(e), "error")
        return redirect(url_for("visits.room", visit_id=visit_id, _anchor="rating"))
    try:
        services.rate_visit(page_principal(), record_id(visit_id), int(form.score.data or 0), form.comment.data or "")
    except DomainError as err:
        flash(handle_refusal(err), "error")
    else:
        flash(_l("Thank you for rating this visit."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id, _anchor="rating"))


def room_block(visit: Visit, account: Account) -> Markup:
    """In the patient's visit room: the rating of a completed visit and the complaint link."""
    if account.role != Role.PATIENT:
        return Markup("")
    return Markup(
        render_template(
            "feedback/_room.html",
            visit=visit,
            rating=services.rating_of(visit.id),
            can_rate=visit.status == VisitStatus.COMPLETED,
            form=RatingForm(),
        )
    )


# --- complaints ----------------------------------------------------------------------------


@bp.route("/complaints", methods=["GET", "POST"])
@patient_page
def complaints() -> Any:
    form = ComplaintForm()
    status = 200
    if request.method == "GET":
        form.visit_id.data = request.args.get("visit", "")
        form.prescription_id.data = request.args.get("prescription", "")
    elif form.validate_on_submit():
        try:
            services.file_complaint(
                page_principal(),
                form.text.data or "",
                record_id(form.visit_id.data) if form.visit_id.data else None,
                record_id(form.prescription_id.data) if form.prescription_id.data else None,
            )
        except DomainError as err:
            flash(handle_refusal(err), "error")
            status = err.status
        else:
            flash(_l("Your complaint is recorded; the hospital answers it here."), "ok")
            return redirect(url_for("feedback.complaints"))
    else:
        status = 422
    return render_template(
        "feedback/complaints.html", form=form, mine=services.complaints_of(page_principal().account_id)
    ), status


@bp.get("/admin/complaints")
@admin_page
def admin_complaints() -> Any:
    return render_template(
        "feedback/admin_complaints.html", items=services.all_complaints(page_principal()), form=AnswerForm()
    )


@bp.post("/admin/complaints/<complaint_id>/answer")
@admin_page
def answer(complaint_id: str) -> Any:
    form = AnswerForm()
    if not form.validate_on_submit():
        flash(_l("Write the answer."), "error")
        return redirect(url_for("feedback.admin_complaints"))
    try:
        services.answer_complaint(page_principal(), record_id(complaint_id), form.response.data or "")
    except DomainError as err:
        flash(handle_refusal(err), "error")
    else:
        flash(_l("The answer is sent to the patient."), "ok")
    return redirect(url_for("feedback.admin_complaints"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
