"""The administrators' console forms: each refuses bad input in words next to the field."""

from __future__ import annotations

from datetime import date

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
    ValidationError,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, Regexp

REQUIRED = _l("Required.")


class SuspensionForm(FlaskForm):
    reason = TextAreaField(
        _l("Reason (shown to patients and kept in the record)"),
        validators=[DataRequired(REQUIRED), Length(min=2, max=1000, message=_l("Between 2 and 1000 characters."))],
    )


def _not_past(form: FlaskForm, field: DateField) -> None:
    if field.data is not None and field.data < date.today():
        raise ValidationError(_l("This date has passed: the credential has expired."))


class StaffForm(FlaskForm):
    role = SelectField(_l("Role"), validators=[DataRequired(REQUIRED)])
    name = StringField(_l("Real name"), validators=[DataRequired(REQUIRED), Length(max=100)])
    username = StringField(
        _l("Username"),
        validators=[
            DataRequired(REQUIRED),
            Length(min=3, max=64),
            Regexp(r"^[A-Za-z0-9._-]+$", message=_l("Letters, digits, dot, dash and underscore only.")),
        ],
    )
    password = PasswordField(_l("Initial password"), validators=[DataRequired(REQUIRED), Length(min=8, max=128)])
    department = SelectField(_l("Department (physicians)"), validators=[Optional()])
    title = StringField(_l("Title"), validators=[Optional(), Length(max=64)])
    license_no = StringField(_l("Practice licence number (physicians)"), validators=[Optional(), Length(max=64)])
    license_valid_until = DateField(_l("Licence valid until"), validators=[Optional(), _not_past])
    qualification_no = StringField(_l("Pharmacist qualification number"), validators=[Optional(), Length(max=64)])
    qualification_valid_until = DateField(_l("Qualification valid until"), validators=[Optional(), _not_past])

    def validate_license_no(self, field: StringField) -> None:
        if self.role.data == "physician" and not field.data:
            raise ValidationError(_l("A physician needs a practice licence number."))

    def validate_license_valid_until(self, field: DateField) -> None:
        if self.role.data == "physician" and field.data is None:
            raise ValidationError(_l("A physician's licence needs its expiry date."))

    def validate_department(self, field: SelectField) -> None:
        if self.role.data == "physician" and not field.data:
            raise ValidationError(_l("A physician belongs to a department."))

    def validate_qualification_no(self, field: StringField) -> None:
        if self.role.data == "pharmacist" and not field.data:
            raise ValidationError(_l("A pharmacist needs a qualification number."))

    def validate_qualification_valid_until(self, field: DateField) -> None:
        if self.role.data == "pharmacist" and field.data is None:
            raise ValidationError(_l("A pharmacist's qualification needs its expiry date."))


class DeactivateForm(FlaskForm):
    reason = StringField(_l("Reason"), validators=[DataRequired(REQUIRED), Length(min=2, max=500)])


class FaceForm(FlaskForm):
    photo = FileField(_l("Reference photo (exactly one face)"), validators=[FileRequired(REQUIRED)])


class IncidentForm(FlaskForm):
    kind = SelectField(_l("Kind"), validators=[DataRequired(REQUIRED)])
    severity = SelectField(_l("Severity"), validators=[DataRequired(REQUIRED)])
    what = TextAreaField(_l("What happened"), validators=[DataRequired(REQUIRED), Length(min=2, max=4000)])
    scope = TextAreaField(_l("Who or what is affected"), validators=[DataRequired(REQUIRED), Length(min=2, max=2000)])
    found_at = DateTimeLocalField(
        _l("Found at (Beijing time)"), format="%Y-%m-%dT%H:%M", validators=[DataRequired(_l("Give a date and time."))]
    )
    suspend = BooleanField(_l("Stop all online services now (clinical adverse events only)"))


NAME_ZH_REQUIRED = _l("Give the condition's name in Chinese.")
NAME_ZH_LENGTH = _l("The name in Chinese is at most 100 characters.")


class ConditionForm(FlaskForm):
    code = StringField(
        _l("ICD-10 code"),
        validators=[
            DataRequired(_l("Give the condition's ICD-10 code.")),
            Length(min=3, max=16, message=_l("The ICD-10 code is 3 to 16 characters, such as I10 or B18.1.")),
        ],
    )
    name_zh = StringField(
        _l("Name in Chinese"), validators=[DataRequired(NAME_ZH_REQUIRED), Length(max=100, message=NAME_ZH_LENGTH)]
    )
    department = SelectField(_l("Department"), validators=[DataRequired(_l("Choose the department."))])
    chronic = BooleanField(_l("Chronic condition"), default=True)


class ConditionEditForm(FlaskForm):
    """Changing a catalog entry: everything but its ICD-10 code (its identity)."""

    name_zh = StringField(
        _l("Name in Chinese"), validators=[DataRequired(NAME_ZH_REQUIRED), Length(max=100, message=NAME_ZH_LENGTH)]
    )
    name_en = StringField(
        _l("Name in English"),
        validators=[
            DataRequired(_l("Give the condition's name in English.")),
            Length(max=200, message=_l("The name in English is at most 200 characters.")),
        ],
    )
    department = SelectField(
        _l("Department"), validators=[DataRequired(_l("Choose the department."))], validate_choice=False
    )
    chronic = BooleanField(_l("Chronic condition"))
    active = BooleanField(_l("Offered for online return visits"))


def choices(pairs: list[tuple[str, str]]) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in pairs]
