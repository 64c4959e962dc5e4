"""The two-way referral pages: physicians at a workstation refer a patient, answer a
referral (accept with when and where, decline, report the outcome) and confirm the
diagnoses it carried; patients on a phone see their referrals."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    DateTimeLocalField,
    HiddenField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length

from clinic.core.db import as_uuid, db, record_id
from clinic.core.errors import DomainError
from clinic.core.pages import page_principal, patient_page, physician_page
from clinic.core.web import handle_refusal
from clinic.telemedicine import partners, referral_diagnoses, referral_receiving, referral_sending, referrals, rules
from clinic.visits.models import Diagnosis, Visit
from identity.models import Account, Department, Patient

LEVEL_WORDS = {
    "三级": _l("Tertiary (三级)"),
    "二级": _l("Secondary (二级)"),
    "一级": _l("Primary (一级)"),
    "基层": _l("Primary care (基层)"),
}

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
    items = referrals.list_referrals(page_principal())
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
        partner = partners.get_partner(record_id(form.institution_id.data))
        direction = rules.direction_between(partners.own_level(), partner.level) or ""
        try:
            referral = referral_sending.send_referral(
                page_principal(),
                referral_sending.ReferralRequest(
                    patient_id=record_id(form.patient_id.data),
                    institution_id=partner.id,
                    direction=direction,
                    department=form.department.data or "",
                    reason=form.reason.data or "",
                    summary=form.summary.data or "",
                    visit_id=record_id(form.visit_id.data) if form.visit_id.data else None,
                ),
            )
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return render_template("telemedicine/referral_new.html", form=form, **_referral_helpers()), err.status
        flash(gettext("The referral is sent to %(name)s; you will see its answer here.", name=partner.name), "success")
        return redirect(url_for(".referral_page", referral_id=referral.id))
    return render_template("telemedicine/referral_new.html", form=form, **_referral_helpers())


def _referral_page(referral_id: str, status: int = 200, **forms: Any) -> Any:
    referral = referrals.referral_for(page_principal(), record_id(referral_id))
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
        referral_receiving.accept(
            page_principal(), record_id(referral_id), form.appointment_at.data, form.place.data or ""
        )
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
        referral_receiving.decline(page_principal(), record_id(referral_id), form.reason.data or "")
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
        referral_receiving.report_outcome(page_principal(), record_id(referral_id), form.summary.data or "")
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _referral_page(referral_id, err.status, outcome_form=form)
    flash(gettext("The outcome is reported back to the referring institution; the referral is completed."), "success")
    return redirect(url_for(".referral_page", referral_id=referral_id))


@referral_bp.post("/physician/referrals/<referral_id>/diagnoses/<carried_id>/confirm")
@physician_page
def referral_confirm_diagnosis(referral_id: str, carried_id: str) -> Any:
    try:
        carried = referral_diagnoses.confirm_carried(page_principal(), record_id(referral_id), record_id(carried_id))
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
        items=referrals.referrals_of_patient_account(page_principal()),
        own_name=partners.own_name(),
        **_referral_helpers(),
    )


@referral_bp.get("/referrals/<referral_id>")
@patient_page
def my_referral(referral_id: str) -> Any:
    return render_template(
        "telemedicine/referral_patient.html",
        r=referrals.referral_for(page_principal(), record_id(referral_id)),
        own_name=partners.own_name(),
        **_referral_helpers(),
    )
