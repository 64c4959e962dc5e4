"""The remote-consultation pages: physicians request, answer and follow consultations
(attachments, notes, the signed opinion, the acknowledgement); patients accept the
consultation consent; the administrator reads and sends the monthly settlements."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    SelectField,
    SelectMultipleField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from clinic.core.config import settings
from clinic.core.db import db, record_id
from clinic.core.errors import DomainError, Invalid
from clinic.core.pages import admin_page, page_principal, patient_page, physician_page
from clinic.core.web import handle_refusal
from clinic.telemedicine import (
    consultation_answers,
    consultation_attachments,
    consultation_opinions,
    consultation_requests,
    consultations,
    partners,
    rules,
    settlements,
)
from clinic.telemedicine import consultation_consent as consent
from clinic.telemedicine.models import PartnerInstitution
from clinic.telemedicine.rules import N_
from clinic.visits.models import Visit
from clinic.visits.views import consent_html
from identity import services as identity
from identity.models import Account, Department, Patient, Role

consult_bp = Blueprint("consultations", __name__, template_folder="templates")

STATUS_WORDS = {
    "requested": _l("Awaiting acceptance"),
    "accepted": _l("Accepted by a specialist"),
    "in-progress": _l("In progress"),
    "completed": _l("Opinion given"),
    "rejected": _l("Declined"),
    "cancelled": _l("Withdrawn"),
    "failed": _l("Could not be delivered"),
}
URGENCY_WORDS = {"routine": _l("Routine consultation"), "urgent": _l("Urgent consultation")}
SEX_WORDS = {"male": _l("Male"), "female": _l("Female")}


def _consult_me() -> Account:
    return identity.get_account(current_user.id)


def department_names() -> dict[str, str]:
    return {d.code: d.name_zh for d in db.session.scalars(select(Department))}


def _consult_patients(physician: Account) -> list[Patient]:
    """The patients this physician has seen in a visit (whom they may ask a consultation for)."""
    ids = select(Visit.patient_id).where(Visit.physician_id == physician.id).distinct()
    return list(db.session.scalars(select(Patient).where(Patient.id.in_(ids)).order_by(Patient.name)))


def _consult_partners() -> list[PartnerInstitution]:
    return [p for p in partners.list_partners() if "consultation" in p.services and partners.agreement_in_force(p)]


def _words() -> dict[str, Any]:
    return {
        "status_words": STATUS_WORDS,
        "urgency_words": URGENCY_WORDS,
        "sex_words": SEX_WORDS,
        "departments": department_names(),
        "consultations_patient": consultations.patient_of,
    }


class ConsultationForm(FlaskForm):
    patient_id = SelectField(_l("Patient"), validators=[DataRequired()])
    institution_id = SelectField(_l("Invited institution"), validators=[DataRequired()])
    department = SelectField(_l("Department asked"), validators=[DataRequired()])
    urgency = SelectField(_l("Urgency"), choices=list(URGENCY_WORDS.items()), default="routine")
    question = TextAreaField(_l("Question for the specialist"), validators=[DataRequired(), Length(max=2000)])
    summary = TextAreaField(_l("Clinical summary"), validators=[DataRequired(), Length(max=8000)])
    present = SelectMultipleField(
        _l("Physicians of this institution present"),
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[DataRequired()],
    )


@consult_bp.route("/physician/consultations")
@physician_page
def consultation_list() -> Any:
    me = page_principal()
    return render_template(
        "telemedicine/consultations.html",
        inviting=consultations.consultations_of(me, consultations.INVITING, None),
        invited=consultations.consultations_of(me, consultations.INVITED, None),
        **_words(),
    )


@consult_bp.route("/physician/consultations/new", methods=["GET", "POST"])
@physician_page
def consultation_new() -> Any:
    me = _consult_me()
    form = ConsultationForm()
    patients = _consult_patients(me)
    partners = _consult_partners()
    names = department_names()
    form.patient_id.choices = [(str(p.id), p.name) for p in patients]
    form.institution_id.choices = [(str(p.id), p.name) for p in partners]
    codes = sorted({d for p in partners for d in p.departments} or set(names))
    form.department.choices = [(c, names.get(c, c)) for c in codes]
    doctors = db.session.scalars(select(Account).where(Account.role == Role.PHYSICIAN, Account.active.is_(True))).all()
    form.present.choices = [(str(d.id), d.staff.name if d.staff else d.username) for d in doctors]
    visit_id = request.args.get("visit_id") or None
    if not form.is_submitted():
        form.present.data = [str(me.id)]
        if request.args.get("patient_id"):
            form.patient_id.data = request.args["patient_id"]
        if me.staff and me.staff.department_code in codes:
            form.department.data = me.staff.department_code
    elif form.validate():
        try:
            c = consultation_requests.request_consultation(
                page_principal(),
                consultation_requests.ConsultationRequest(
                    patient_id=record_id(form.patient_id.data),
                    institution_id=record_id(form.institution_id.data),
                    department=form.department.data or "",
                    question=form.question.data or "",
                    summary=form.summary.data or "",
                    urgency=form.urgency.data or "routine",
                    present_physician_ids=tuple(record_id(p) for p in form.present.data or ()),
                    visit_id=record_id(visit_id) if visit_id else None,
                ),
            )
        except DomainError as err:
            flash(handle_refusal(err), "error")
        else:
            flash(gettext("The consultation request has been sent, signed, to %(name)s.", name=c.partner.name), "ok")
            return redirect(url_for(".consultation_page", consultation_id=c.id))
    return render_template(
        "telemedicine/consult_new.html", form=form, patients=patients, partners=partners, visit_id=visit_id
    )


def _consultation_view(consultation_id: str, status: int = 200) -> Any:
    me = _consult_me()
    c = consultations.consultation_for(page_principal(), record_id(consultation_id))
    return (
        render_template(
            "telemedicine/consult_detail.html",
            c=c,
            me=me,
            patient=consultations.patient_of(c),
            attachments=consultation_attachments.attachments_of(c),
            notes=consultations.notes_of(c),
            opinion=consultation_opinions.opinion_of(c),
            terminal=c.status in ("completed", "rejected", "cancelled", "failed"),
            **_words(),
        ),
        status,
    )


@consult_bp.route("/physician/consultations/<consultation_id>")
@physician_page
def consultation_page(consultation_id: str) -> Any:
    return _consultation_view(consultation_id)


def _act(consultation_id: str, act: Any, done: Any) -> Any:
    try:
        act()
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _consultation_view(consultation_id, status=err.status)
    flash(done, "ok")
    return redirect(url_for(".consultation_page", consultation_id=consultation_id))


@consult_bp.post("/physician/consultations/<consultation_id>/attachments")
@physician_page
def consultation_attach(consultation_id: str) -> Any:
    upload = request.files.get("file")
    limit = settings().CONSULT_MAX_ATTACHMENT_BYTES
    data = upload.stream.read(limit + 1) if upload is not None else b""
    name = upload.filename or "" if upload is not None else ""
    return _act(
        consultation_id,
        lambda: consultation_attachments.add_attachment(page_principal(), record_id(consultation_id), name, data),
        _l("The attachment is added and sent to the invited institution."),
    )


@consult_bp.post("/physician/consultations/<consultation_id>/accept")
@physician_page
def consultation_accept(consultation_id: str) -> Any:
    return _act(
        consultation_id,
        lambda: consultation_answers.accept(page_principal(), record_id(consultation_id)),
        _l("You have taken this consultation."),
    )


@consult_bp.post("/physician/consultations/<consultation_id>/messages")
@physician_page
def consultation_note(consultation_id: str) -> Any:
    text = (request.form.get("text") or "").strip()[:4000]

    def act() -> None:
        if not text:
            raise Invalid(N_("Write a message first."))
        consultations.write_note(page_principal(), record_id(consultation_id), text)

    return _act(consultation_id, act, _l("The message is sent to the other institution."))


@consult_bp.post("/physician/consultations/<consultation_id>/opinion")
@physician_page
def consultation_opinion(consultation_id: str) -> Any:
    opinion = (request.form.get("opinion") or "").strip()[:8000]
    recommendations = (request.form.get("recommendations") or "").strip()[:8000]

    def act() -> None:
        if not opinion:
            raise Invalid(N_("Write the consultation opinion first."))
        consultation_opinions.write_opinion(page_principal(), record_id(consultation_id), opinion, recommendations)

    return _act(consultation_id, act, _l("The opinion is signed with your key and sent back."))


@consult_bp.post("/physician/consultations/<consultation_id>/acknowledge")
@physician_page
def consultation_acknowledge(consultation_id: str) -> Any:
    return _act(
        consultation_id,
        lambda: consultation_requests.acknowledge(page_principal(), record_id(consultation_id)),
        _l("You have acknowledged the opinion."),
    )


def _reasoned(consultation_id: str, act: Any, done: Any) -> Any:
    reason = (request.form.get("reason") or "")[:500]
    return _act(consultation_id, lambda: act(reason), done)


@consult_bp.post("/physician/consultations/<consultation_id>/decline")
@physician_page
def consultation_decline(consultation_id: str) -> Any:
    return _reasoned(
        consultation_id,
        lambda reason: consultation_answers.decline(page_principal(), record_id(consultation_id), reason),
        _l("The consultation is declined; the requesting institution is told why."),
    )


@consult_bp.post("/physician/consultations/<consultation_id>/cancel")
@physician_page
def consultation_cancel(consultation_id: str) -> Any:
    return _reasoned(
        consultation_id,
        lambda reason: consultation_requests.cancel(page_principal(), record_id(consultation_id), reason),
        _l("The request is withdrawn; the invited institution is told why."),
    )


@consult_bp.get("/physician/consultations/<consultation_id>/attachments/<attachment_id>")
@physician_page
def consultation_attachment(consultation_id: str, attachment_id: str) -> Any:
    att, data = consultation_attachments.attachment_bytes(
        page_principal(), record_id(consultation_id), record_id(attachment_id)
    )
    return Response(
        data,
        mimetype=att.media_type,
        headers={
            "Cache-Control": "private, no-store",
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


@consult_bp.route("/me/consultation-consent", methods=["GET", "POST"])
@patient_page
def consultation_consent() -> Any:
    me = _consult_me()
    text = consent.current_consent()
    if request.method == "POST":
        if not validate_csrf_form():
            abort(400)
        try:
            consent.accept_consent(
                page_principal(), record_id(request.form.get("patient_id", "")), request.form.get("version", "")
            )
        except DomainError as err:
            flash(handle_refusal(err), "error")
        else:
            flash(_l("Your consent to remote consultations is recorded."), "ok")
            return redirect(url_for(".consultation_consent"))
    people = [(p, consent.current_consent_of(p.id) is not None) for p in me.patients]
    return render_template(
        "telemedicine/consult_consent.html", consent=text, body=consent_html(text.text_zh), people=people
    )


@consult_bp.route("/admin/settlements", methods=["GET", "POST"])
@admin_page
def settlements_page() -> Any:
    month = request.values.get("month") or settlements.current_month()
    if not rules.valid_month(month):
        month = settlements.current_month()
    if request.method == "POST":
        if not validate_csrf_form():
            abort(400)
        try:
            settlements.send_statement(record_id(request.form.get("partner_id", "")), month)
        except DomainError as err:
            flash(handle_refusal(err), "error")
        else:
            flash(_l("The statement is sent, signed; the partner answers with its own."), "ok")
        return redirect(url_for(".settlements_page", month=month))
    rows = [settlements.settlement(p.id, month) for p in partners.list_partners()]
    year, mon = (int(x) for x in settlements.current_month().split("-"))
    months = []
    for _ in range(24):  # this month and the 23 before it
        months.append(f"{year:04d}-{mon:02d}")
        year, mon = (year - 1, 12) if mon == 1 else (year, mon - 1)
    if month not in months:
        months.append(month)
    return render_template("telemedicine/settlements.html", rows=rows, month=month, months=months)


def validate_csrf_form() -> bool:
    from flask_wtf.csrf import CSRFError, validate_csrf

    try:
        validate_csrf(request.form.get("csrf_token", ""))
    except CSRFError:
        return False
    except Exception:  # a missing or malformed token
        return False
    return True
