"""The pharmacist's forms (pages only; the API has its own request models)."""

from __future__ import annotations

import re
from datetime import date

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    IntegerField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    URLField,
    ValidationError,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from pharmacy.labels import REASON


class ReviewForm(FlaskForm):
    """Reasons from the review standard (处方审核规范) and a note; the decision is the button pressed."""

    reasons = SelectMultipleField(
        _l("Reasons (review standard)"),
        choices=[SelectChoice(code, str(words)) for code, words in REASON.items()],
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[Optional()],
    )
    note = TextAreaField(_l("Note to the physician"), validators=[Optional(), Length(max=500)])

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.reasons.choices = [SelectChoice(code, str(words)) for code, words in REASON.items()]


def _regions(form: FlaskForm, field: StringField) -> None:
    codes = [c.strip() for c in re.split(r"[\s,，、]+", field.data or "") if c.strip()]
    if not codes or any(not re.fullmatch(r"\d{2}(\d{2}){0,2}", c) for c in codes):
        raise ValidationError(_l("Province or city codes (GB/T 2260), e.g. 11, 3101; separated by commas."))


def _future(form: FlaskForm, field: DateField) -> None:
    if field.data is not None and field.data < date.today():
        raise ValidationError(_l("This date has passed: the licence has expired."))


class PartnerForm(FlaskForm):
    """A delivery partner (药品网络销售/配送 qualification), for registering or changing one."""

    name = StringField(_l("Name"), validators=[DataRequired(_l("Required.")), Length(max=120)])
    license_no = StringField(_l("Licence number"), validators=[DataRequired(_l("Required.")), Length(max=64)])
    license_valid_until = DateField(
        _l("Licence valid until"), validators=[DataRequired(_l("Give the licence's expiry date.")), _future]
    )
    regions = StringField(_l("Regions served"), validators=[DataRequired(_l("Required.")), _regions])
    cold_chain = BooleanField(_l("Cold chain"))
    priority = IntegerField(_l("Priority (lower goes first)"), default=100, validators=[NumberRange(0, 10000)])
    endpoint = URLField(_l("Order endpoint (https)"), validators=[DataRequired(_l("Required.")), Length(max=500)])
    active = BooleanField(_l("Active"), default=True)

    def region_codes(self) -> list[str]:
        return [c.strip() for c in re.split(r"[\s,，、]+", self.regions.data or "") if c.strip()]
