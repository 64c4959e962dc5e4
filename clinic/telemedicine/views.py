"""The administrator's page of partner institutions: register a cooperation agreement
(its key fetched from the partner's published JWKS and pinned) and list them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    DateField,
    DateTimeLocalField,
    DecimalField,
    HiddenField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from clinic.core.db import as_uuid, db
from clinic.core.errors import DomainError, Invalid
from clinic.core.pages import admin_page, page_principal, patient_page, physician_page
from clinic.core.web import handle_refusal
from clinic.telemedicine import consultations, referrals, rules, services
from clinic.telemedicine.models import PartnerInstitution
from clinic.telemedicine.rules import N_
from clinic.visits.models import Diagnosis, Visit
from clinic.visits.views import consent_html
from identity import services as identity
from identity.models import Account, Department, Patient, Role

bp = Blueprint("telemedicine", __name__, template_folder="templates", url_prefix="/admin")

SERVICE_WORDS = {
    "consultation": _l("Remote consultation"),
    "remote_diagnosis": _l("Remote diagnosis"),
    "referral": _l("Two-way referral"),
}
LEVEL_WORDS = {
    "三级": _l("Tertiary (三级)"),
    "二级": _l("Secondary (二级)"),
    "一级": _l("Primary (一级)"),
    "基层": _l("Primary care (基层)"),
}


class PartnerForm(FlaskForm):
    name = StringField(_l("Institution name"), validators=[DataRequired(), Length(max=200)])
    license_no = StringField(_l("Practice licence number"), validators=[DataRequired(), Length(max=64)])
    level = SelectField(_l("Level"), choices=list(LEVEL_WORDS.items()))
    base_url = StringField(_l("Address (https)"), validators=[DataRequired(), Length(max=300)])
    jwks_url = StringField(_l("Where it publishes its keys"), validators=[DataRequired(), Length(max=300)])
    services = SelectMultipleField(
        _l("Services agreed"),
        choices=list(SERVICE_WORDS.items()),
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[DataRequired()],
    )
    departments = SelectMultipleField(
        _l("Departments (none ticked: all)"),
        choices=[],
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validate_choice=True,
    )
    consult_min_title = SelectField(
        _l("Lowest title that may answer a consultation"),
        choices=[
            ("", _l("No requirement")),
            ("住院医师", "住院医师"),
            ("主治医师", "主治医师"),
            ("副主任医师", "副主任医师"),
            ("主任医师", "主任医师"),
        ],
        default="副主任医师",
    )
    fee_yuan = DecimalField(
        _l("Fee per consultation (yuan)"),
        places=2,
        default=0,
        validators=[Optional(), NumberRange(min=0, max=1_000_000)],
    )
    split_inviting = IntegerField(
        _l("Inviting institution's share (%)"), default=20, validators=[NumberRange(min=0, max=100)]
    )
    valid_from = DateField(_l("Valid from"), validators=[DataRequired()])
    valid_until = DateField(_l("Valid until"), validators=[Optional()])


@bp.route("/partner-institutions", methods=["GET", "POST"])
@admin_page
def partners_page() -> Any:
    form = PartnerForm()
    form.departments.choices = [
        (d.code, d.name_zh if str(get_locale()) != "en" else d.name_en)
        for d in db.session.scalars(select(Department).where(Department.approved).order_by(Department.code))
    ]
    if not form.is_submitted():
        form.valid_from.data = services.today()
        form.valid_until.data = services.today() + timedelta(days=365)
        form.services.data = ["consultation", "referral"]
    elif form.validate():
        try:
            jwk = services.fetch_institution_key(form.jwks_url.data or "")
            inviting = int(form.split_inviting.data or 0)
            start = form.valid_from.data or services.today()
            partner = services.register_partner(
                rules.AgreementTerms(
                    name=form.name.data or "",
                    license_no=form.license_no.data or "",
                    level=form.level.data or "",
                    base_url=form.base_url.data or "",
                    public_jwk=jwk,
                    services=tuple(form.services.data or ()),
                    departments=tuple(form.departments.data or ()),
                    fee_fen=int((form.fee_yuan.data or 0) * 100),
                    split_inviting=inviting,
                    split_invited=100 - inviting,
                    valid_from=start,
                    valid_until=form.valid_until.data or start + timedelta(days=365),
                )
            )
            partner.consult_min_title = form.consult_min_title.data or ""
        except DomainError as err:
            flash(handle_refusal(err), "error")
        else:
            flash(
                gettext("The agreement with %(name)s is registered and its key is pinned.", name=partner.name),
                "success",
            )
            return redirect(url_for(".partners_page"))
    return render_template(
        "telemedicine/partners.html",
        form=form,
        partners=services.list_partners(),
        in_force=services.agreement_in_force,
        service_words=SERVICE_WORDS,
        level_words=LEVEL_WORDS,
        own_level=services.own_level(),
        department_names=_department_names(),
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(referral_bp)  # the referral pages (physicians, patients)
    app.register_blueprint(consult_bp)  # remote consultations (physicians, patients), settlements (admin)


# --- two-way referral pages (physicians at a workstation, patients on a phone) ---------------

referral_bp = Blueprint("referrals", __name__, template_folder="templates")

REFERRAL_STATUS_WORDS = {
    "requested": _l("Awaiting an answer"),
    "accepted": _l("Referral accepted"),
    "in-progress": _l("In care"),
    "completed": _l("Completed"),
    "rejected": _l("Declined"),
    "cancelled": _l("Withdrawn"),
    "failed": _l("Could not be delivered"),
}
DIRECTION_WORDS = {
    "up": _l("Referral up (to a higher-level institution)"),
    "down": _l("Referral down (to a lower-level institution)"),
}
MATCH_WORDS = {
    "matched": _l("Matched to a patient already here by real name and ID number"),
    "added": _l("Added as a family member of the account holding the referral's phone number"),
    "created": _l("New here: an account was opened for the referral's phone number"),
    "mismatch": _l("The ID number is known here under another name: check the identity before going on"),
}


class ReferralForm(FlaskForm):
    patient_id = SelectField(_l("Patient"), validators=[DataRequired()])
    institution_id = SelectField(_l("Receiving institution"), validators=[DataRequired()])
    department = SelectField(_l("Receiving department"), validators=[DataRequired()])
    reason = TextAreaField(_l("Reason for the referral"), validators=[DataRequired(), Length(min=2, max=2000)])
    summary = TextAreaField(
        _l("Clinical summary (course, current treatment, what the receiving physician should know)"),
        validators=[DataRequired(), Length(min=2, max=20000)],
    )
    visit_id = HiddenField()


class AcceptForm(FlaskForm):
    appointment_at = DateTimeLocalField(
        _l("Appointment (Beijing time)"), format="%Y-%m-%dT%H:%M", validators=[DataRequired()]
    )
    place = StringField(_l("Where (building, floor, clinic room)"), validators=[DataRequired(), Length(min=2, max=300)])


class DeclineForm(FlaskForm):
    reason = TextAreaField(_l("Why the referral is declined"), validators=[DataRequired(), Length(min=2, max=2000)])


class OutcomeForm(FlaskForm):
    summary = TextAreaField(
        _l("Outcome (diagnosis, treatment, advice for the follow-up)"),
        validators=[DataRequired(), Length(min=2, max=20000)],
    )


def _me() -> Account:
    account: Account = current_user._get_current_object()
    return account


def _referral_helpers() -> dict[str, Any]:
    return {
        "referral_status_words": REFERRAL_STATUS_WORDS,
        "direction_words": DIRECTION_WORDS,
        "match_words": MATCH_WORDS,
        "level_words": LEVEL_WORDS,
    }


def _my_patients(physician: Account) -> list[Patient]:
    """The patients this physician has seen (a visit of theirs, a proof they reviewed)."""
    seen = (
        select(Visit.patient_id)
        .where(Visit.physician_id == physician.id)
        .union(select(Diagnosis.patient_id).where(Diagnosis.reviewed_by == physician.id))
    )
    return list(db.session.scalars(select(Patient).where(Patient.id.in_(seen)).order_by(Patient.name)))


def _referral_form() -> ReferralForm:
    form = ReferralForm()
    form.patient_id.choices = [(str(p.id), p.name) for p in _my_patients(_me())]
    partners = referrals.partners_for_referral()
    form.institution_id.choices = [(str(p.id), f"{p.name}（{LEVEL_WORDS.get(p.level, p.level)}）") for p in partners]
    # Departments a partner agreed to receive (an agreement with no list: any approved one);
    # never a department not approved for internet care (急诊, 精神科).
    agreed = {d for p in partners for d in p.departments}
    if any(not p.departments for p in partners):
        agreed = set()
    form.department.choices = [
        (d.code, d.name_zh if str(get_locale()) != "en" else d.name_en)
        for d in db.session.scalars(select(Department).where(Department.approved).order_by(Department.code))
        if not agreed or d.code in agreed
    ]
    return form


@referral_bp.get("/physician/referrals")
@physician_page
def referral_index() -> Any:
    items = referrals.list_referrals(current_user.id)
    receiving = [r for r in items if r.role == referrals.RECEIVING]
    return render_template(
        "telemedicine/referrals.html",
        to_answer=[r for r in receiving if r.status == "requested"],
        in_care=[r for r in receiving if r.status in ("accepted", "in-progress")],
        sent=[r for r in items if r.role == referrals.SENDING],
        closed=[r for r in receiving if r.status not in ("requested", "accepted", "in-progress")],
        **_referral_helpers(),
    )


@referral_bp.route("/physician/referrals/new", methods=["GET", "POST"])
@physician_page
def referral_new() -> Any:
    form = _referral_form()
    if not form.is_submitted():
        form.patient_id.data = request.args.get("patient_id") or form.patient_id.data
        form.visit_id.data = request.args.get("visit_id") or ""
        visit = db.session.get(Visit, as_uuid(form.visit_id.data)) if as_uuid(form.visit_id.data) else None
        if visit is not None:
            form.department.data = visit.department
    elif form.validate():
        partner = services.get_partner(form.institution_id.data or "")
        direction = referrals.direction_between(services.own_level(), partner.level) or ""
        try:
            referral = referrals.send_referral(
                current_user.id,
                referrals.ReferralRequest(
                    patient_id=form.patient_id.data or "",
                    institution_id=form.institution_id.data or "",
                    direction=direction,
                    department=form.department.data or "",
                    reason=form.reason.data or "",
                    summary=form.summary.data or "",
                    visit_id=form.visit_id.data or None,
                ),
            )
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return render_template("telemedicine/referral_new.html", form=form, **_referral_helpers()), err.status
        flash(gettext("The referral is sent to %(name)s; you will see its answer here.", name=partner.name), "success")
        return redirect(url_for(".referral_page", referral_id=referral.id))
    return render_template("telemedicine/referral_new.html", form=form, **_referral_helpers())


def _referral_page(referral_id: str, status: int = 200, **forms: Any) -> Any:
    referral = referrals.referral_for(current_user.id, referral_id)
    return (
        render_template(
            "telemedicine/referral.html",
            r=referral,
            accept_form=forms.get("accept_form") or AcceptForm(prefix="accept"),
            decline_form=forms.get("decline_form") or DeclineForm(prefix="decline"),
            outcome_form=forms.get("outcome_form") or OutcomeForm(prefix="outcome"),
            patient=db.session.get(Patient, referral.patient_id) if referral.patient_id else None,
            **_referral_helpers(),
        ),
        status,
    )


@referral_bp.get("/physician/referrals/<referral_id>")
@physician_page
def referral_page(referral_id: str) -> Any:
    return _referral_page(referral_id)


@referral_bp.post("/physician/referrals/<referral_id>/accept")
@physician_page
def referral_accept(referral_id: str) -> Any:
    form = AcceptForm(prefix="accept")
    if not form.validate_on_submit() or form.appointment_at.data is None:
        return _referral_page(referral_id, 422, accept_form=form)
    try:
        referrals.accept(current_user.id, referral_id, form.appointment_at.data, form.place.data or "")
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _referral_page(referral_id, err.status, accept_form=form)
    flash(gettext("Accepted: the patient is told where and when."), "success")
    return redirect(url_for(".referral_page", referral_id=referral_id))


@referral_bp.post("/physician/referrals/<referral_id>/decline")
@physician_page
def referral_decline(referral_id: str) -> Any:
    form = DeclineForm(prefix="decline")
    if not form.validate_on_submit():
        return _referral_page(referral_id, 422, decline_form=form)
    try:
        referrals.decline(current_user.id, referral_id, form.reason.data or "")
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _referral_page(referral_id, err.status, decline_form=form)
    flash(gettext("Declined; the referring institution sees your reason."), "success")
    return redirect(url_for(".referral_page", referral_id=referral_id))


@referral_bp.post("/physician/referrals/<referral_id>/outcome")
@physician_page
def referral_outcome(referral_id: str) -> Any:
    form = OutcomeForm(prefix="outcome")
    if not form.validate_on_submit():
        return _referral_page(referral_id, 422, outcome_form=form)
    try:
        referrals.report_outcome(current_user.id, referral_id, form.summary.data or "")
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _referral_page(referral_id, err.status, outcome_form=form)
    flash(gettext("The outcome is reported back to the referring institution; the referral is completed."), "success")
    return redirect(url_for(".referral_page", referral_id=referral_id))


@referral_bp.post("/physician/referrals/<referral_id>/diagnoses/<carried_id>/confirm")
@physician_page
def referral_confirm_diagnosis(referral_id: str, carried_id: str) -> Any:
    try:
        carried = referrals.confirm_carried(page_principal(), referral_id, carried_id)
    except DomainError as err:
        if err.code == "face_verification_required":
            flash(handle_refusal(err), "error")
            return redirect(url_for("identity.face", next=url_for(".referral_page", referral_id=referral_id)))
        flash(handle_refusal(err), "error")
        return _referral_page(referral_id, err.status)
    flash(
        gettext("Confirmed: the patient may now request online return visits here for %(name)s.", name=carried.name),
        "success",
    )
    return redirect(url_for(".referral_page", referral_id=referral_id))


@referral_bp.get("/referrals")
@patient_page
def my_referrals() -> Any:
    return render_template(
        "telemedicine/referral_mine.html",
        items=referrals.referrals_of_patient_account(_me()),
        own_name=services.own_name(),
        **_referral_helpers(),
    )


@referral_bp.get("/referrals/<referral_id>")
@patient_page
def my_referral(referral_id: str) -> Any:
    return render_template(
        "telemedicine/referral_patient.html",
        r=referrals.referral_for(current_user.id, referral_id),
        own_name=services.own_name(),
        **_referral_helpers(),
    )


# --- remote consultation and settlements (tm-consult's section) ------------------------------

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
    return identity.get_account(str(current_user.id))


def _department_names() -> dict[str, str]:
    return {d.code: d.name_zh for d in db.session.scalars(select(Department))}


def _consult_patients(physician: Account) -> list[Patient]:
    """The patients this physician has seen in a visit (whom they may ask a consultation for)."""
    ids = select(Visit.patient_id).where(Visit.physician_id == physician.id).distinct()
    return list(db.session.scalars(select(Patient).where(Patient.id.in_(ids)).order_by(Patient.name)))


def _consult_partners() -> list[PartnerInstitution]:
    return [p for p in services.list_partners() if "consultation" in p.services and services.agreement_in_force(p)]


def _words() -> dict[str, Any]:
    return {
        "status_words": STATUS_WORDS,
        "urgency_words": URGENCY_WORDS,
        "sex_words": SEX_WORDS,
        "departments": _department_names(),
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
    me = _consult_me()
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
    names = _department_names()
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
            c = consultations.request_consultation(
                page_principal(),
                consultations.ConsultationRequest(
                    patient_id=form.patient_id.data or "",
                    institution_id=form.institution_id.data or "",
                    department=form.department.data or "",
                    question=form.question.data or "",
                    summary=form.summary.data or "",
                    urgency=form.urgency.data or "routine",
                    present_physician_ids=tuple(form.present.data or ()),
                    visit_id=visit_id,
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
    c = consultations.consultation_for(me, consultation_id)
    return (
        render_template(
            "telemedicine/consult_detail.html",
            c=c,
            me=me,
            patient=consultations.patient_of(c),
            attachments=consultations.attachments_of(c),
            notes=consultations.notes_of(c),
            opinion=consultations.opinion_of(c),
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
    limit = int(current_app.config.get("CONSULT_MAX_ATTACHMENT_BYTES", consultations.DEFAULT_MAX_ATTACHMENT_BYTES))
    data = upload.stream.read(limit + 1) if upload is not None else b""
    name = upload.filename or "" if upload is not None else ""
    return _act(
        consultation_id,
        lambda: consultations.add_attachment(str(current_user.id), consultation_id, name, data),
        _l("The attachment is added and sent to the invited institution."),
    )


@consult_bp.post("/physician/consultations/<consultation_id>/accept")
@physician_page
def consultation_accept(consultation_id: str) -> Any:
    return _act(
        consultation_id,
        lambda: consultations.accept(page_principal(), consultation_id),
        _l("You have taken this consultation."),
    )


@consult_bp.post("/physician/consultations/<consultation_id>/messages")
@physician_page
def consultation_note(consultation_id: str) -> Any:
    text = (request.form.get("text") or "").strip()[:4000]

    def act() -> None:
        if not text:
            raise Invalid(N_("Write a message first."))
        consultations.write_note(str(current_user.id), consultation_id, text)

    return _act(consultation_id, act, _l("The message is sent to the other institution."))


@consult_bp.post("/physician/consultations/<consultation_id>/opinion")
@physician_page
def consultation_opinion(consultation_id: str) -> Any:
    opinion = (request.form.get("opinion") or "").strip()[:8000]
    recommendations = (request.form.get("recommendations") or "").strip()[:8000]

    def act() -> None:
        if not opinion:
            raise Invalid(N_("Write the consultation opinion first."))
        consultations.write_opinion(page_principal(), consultation_id, opinion, recommendations)

    return _act(consultation_id, act, _l("The opinion is signed with your key and sent back."))


@consult_bp.post("/physician/consultations/<consultation_id>/acknowledge")
@physician_page
def consultation_acknowledge(consultation_id: str) -> Any:
    return _act(
        consultation_id,
        lambda: consultations.acknowledge(str(current_user.id), consultation_id),
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
        lambda reason: consultations.decline(str(current_user.id), consultation_id, reason),
        _l("The consultation is declined; the requesting institution is told why."),
    )


@consult_bp.post("/physician/consultations/<consultation_id>/cancel")
@physician_page
def consultation_cancel(consultation_id: str) -> Any:
    return _reasoned(
        consultation_id,
        lambda reason: consultations.cancel(str(current_user.id), consultation_id, reason),
        _l("The request is withdrawn; the invited institution is told why."),
    )


@consult_bp.get("/physician/consultations/<consultation_id>/attachments/<attachment_id>")
@physician_page
def consultation_attachment(consultation_id: str, attachment_id: str) -> Any:
    att, data = consultations.attachment_bytes(_consult_me(), consultation_id, attachment_id)
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
    text = consultations.current_consent()
    if request.method == "POST":
        if not validate_csrf_form():
            abort(400)
        try:
            consultations.accept_consent(me, request.form.get("patient_id", ""), request.form.get("version", ""))
        except DomainError as err:
            flash(handle_refusal(err), "error")
        else:
            flash(_l("Your consent to remote consultations is recorded."), "ok")
            return redirect(url_for(".consultation_consent"))
    people = [(p, consultations.current_consent_of(p.id) is not None) for p in me.patients]
    return render_template(
        "telemedicine/consult_consent.html", consent=text, body=consent_html(text.text_zh), people=people
    )


@consult_bp.route("/admin/settlements", methods=["GET", "POST"])
@admin_page
def settlements_page() -> Any:
    month = request.values.get("month") or consultations.current_month()
    if not consultations.valid_month(month):
        month = consultations.current_month()
    if request.method == "POST":
        if not validate_csrf_form():
            abort(400)
        try:
            consultations.send_statement(request.form.get("partner_id", ""), month)
        except DomainError as err:
            flash(handle_refusal(err), "error")
        else:
            flash(_l("The statement is sent, signed; the partner answers with its own."), "ok")
        return redirect(url_for(".settlements_page", month=month))
    rows = [consultations.settlement(p.id, month) for p in services.list_partners()]
    year, mon = (int(x) for x in consultations.current_month().split("-"))
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
