"""The return-visit pages' forms (patients on a phone, physicians at a workstation)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import DateField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

DOCUMENT_KINDS = [
    ("outpatient_record", _l("Outpatient record")),
    ("inpatient_record", _l("Inpatient record")),
    ("discharge_summary", _l("Discharge summary")),
    ("diagnosis_certificate", _l("Diagnosis certificate")),
]


class DiagnosisForm(FlaskForm):
    patient_id = SelectField(_l("Who was diagnosed"), validators=[DataRequired()])
    icd10 = StringField(
        _l("Diagnosis"),
        validators=[DataRequired(), Length(min=2, max=40)],
        description=_l(
            "Type the condition's name (e.g. 高血压) and pick it from the list; the code printed on your "
            "record (e.g. I10 or E11.900) works too."
        ),
    )
    institution = StringField(_l("Hospital that diagnosed it"), validators=[DataRequired(), Length(min=2, max=200)])
    diagnosed_on = DateField(_l("Date of the diagnosis"), validators=[DataRequired()])
    document_kind = SelectField(
        _l("Kind of document"),
        choices=[SelectChoice(kind, label) for kind, label in DOCUMENT_KINDS],
        default="outpatient_record",
    )
    document = FileField(_l("Photo or PDF of the document"), validators=[FileRequired()])


class ConsentForm(FlaskForm):
    patient_id = HiddenField(validators=[DataRequired()])
    version = HiddenField(validators=[DataRequired()])


class VisitRequestForm(FlaskForm):
    diagnosis_id = SelectField(_l("Return visit for"), validators=[DataRequired()])
    physician_id = HiddenField(validators=[Optional()])
    complaint = TextAreaField(
        _l("How are you now? (optional)"),
        validators=[Optional(), Length(max=2000)],
        description=_l("For example: your recent readings, how you take your medicine, what you want to ask."),
    )


class MessageForm(FlaskForm):
    text = TextAreaField(_l("Message"), validators=[Optional(), Length(max=4000)])
    image = FileField(_l("Attach a photo"))


class CancelForm(FlaskForm):
    reason = StringField(_l("Reason (optional)"), validators=[Optional(), Length(max=1000)])


class RejectForm(FlaskForm):
    reason = TextAreaField(_l("Reason the patient will see"), validators=[DataRequired(), Length(min=2, max=1000)])


class CompleteForm(FlaskForm):
    note = TextAreaField(_l("Visit note (medical record)"), validators=[DataRequired(), Length(min=2, max=20000)])


class TerminateForm(FlaskForm):
    reason = TextAreaField(_l("Why online care must stop"), validators=[DataRequired(), Length(min=2, max=2000)])
    referral_advice = TextAreaField(
        _l("Referral advice: what to do and where"), validators=[DataRequired(), Length(min=2, max=2000)]
    )
