"""The prescribing pages' forms (the prescription itself is the API's request model, see views)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField, TextAreaField
from wtforms.validators import DataRequired, Length

from prescriptions import catalog
from prescriptions import ingredients as ing
from prescriptions.labels import CONTROL_CLASS


class ImportForm(FlaskForm):
    file = FileField(_l("Formulary (UTF-8 CSV with a header)"), validators=[FileRequired()])


class VoidForm(FlaskForm):
    reason = TextAreaField(
        _l("Why it is voided"),
        validators=[
            DataRequired(_l("Say why the prescription is voided.")),
            Length(min=2, max=500, message=_l("Between 2 and 500 characters.")),
        ],
    )


class ClassifyForm(FlaskForm):
    choice = SelectField(
        _l("Classification"),
        choices=[
            ("", _l("Choose…")),
            ("ordinary", _l("Ordinary drug (not specially controlled)")),
            *((code, CONTROL_CLASS[code]) for code in ing.CONTROL_CLASSES),
        ],
        validators=[DataRequired(message=_l("Choose a classification."))],
    )
    note = TextAreaField(
        _l("Reason (e.g. the ingredients and the list checked)"),
        validators=[
            DataRequired(message=_l("Give the reason for the classification.")),
            Length(max=catalog.NOTE_MAX),
        ],
    )
