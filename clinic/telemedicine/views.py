"""The administrator's page of partner institutions: register a cooperation agreement
(its key fetched from the partner's published JWKS and pinned) and list them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, url_for
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    DateField,
    DecimalField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from clinic.core.db import db
from clinic.core.errors import DomainError
from clinic.core.pages import admin_page
from clinic.core.web import handle_refusal
from clinic.telemedicine import partners, rules
from clinic.telemedicine.consultation_views import consult_bp, department_names
from clinic.telemedicine.referral_views import LEVEL_WORDS, referral_bp
from identity.models import Department

bp = Blueprint("telemedicine", __name__, template_folder="templates", url_prefix="/admin")

SERVICE_WORDS = {
    "consultation": _l("Remote consultation"),
    "remote_diagnosis": _l("Remote diagnosis"),
    "referral": _l("Two-way referral"),
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
        form.valid_from.data = partners.today()
        form.valid_until.data = partners.today() + timedelta(days=365)
        form.services.data = ["consultation", "referral"]
    elif form.validate():
        try:
            jwk = partners.fetch_institution_key(form.jwks_url.data or "")
            inviting = int(form.split_inviting.data or 0)
            start = form.valid_from.data or partners.today()
            partner = partners.register_partner(
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
        partners=partners.list_partners(),
        in_force=partners.agreement_in_force,
        service_words=SERVICE_WORDS,
        level_words=LEVEL_WORDS,
        own_level=partners.own_level(),
        department_names=department_names(),
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(referral_bp)  # the referral pages (physicians, patients)
    app.register_blueprint(consult_bp)  # remote consultations (physicians, patients), settlements (admin)
