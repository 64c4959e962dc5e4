"""The identity pages' forms (log in, register, the phone code, family members)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length


class LoginForm(FlaskForm):
    username = StringField(_l("Phone number or username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=128)])


class RegisterForm(FlaskForm):
    name = StringField(_l("Real name"), validators=[DataRequired(), Length(max=100)])
    id_number = StringField(_l("Resident ID number"), validators=[DataRequired(), Length(max=32)])
    phone = StringField(_l("Mobile phone"), validators=[DataRequired(), Length(max=32)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(min=8, max=128)])
    confirm = PasswordField(_l("Repeat password"), validators=[DataRequired(), EqualTo("password")])


class CodeForm(FlaskForm):
    code = StringField(_l("Code from the SMS"), validators=[DataRequired(), Length(max=12)])


class FamilyForm(FlaskForm):
    name = StringField(_l("Real name"), validators=[DataRequired(), Length(max=100)])
    id_number = StringField(_l("Resident ID number"), validators=[DataRequired(), Length(max=32)])
    relation = SelectField(
        _l("Relation to you"),
        choices=[
            SelectChoice("child", _l("Child")),
            SelectChoice("parent", _l("Parent")),
            SelectChoice("spouse", _l("Spouse")),
            SelectChoice("other", _l("Other")),
        ],
    )


class ReclaimForm(FlaskForm):
    name = StringField(_l("Real name"), validators=[DataRequired(), Length(max=100)])
    id_number = StringField(_l("Resident ID number"), validators=[DataRequired(), Length(max=32)])
    phone = StringField(_l("A new mobile number of your own"), validators=[DataRequired(), Length(max=32)])
    password = PasswordField(_l("Password of your new account"), validators=[DataRequired(), Length(min=8, max=128)])
    confirm = PasswordField(_l("Repeat password"), validators=[DataRequired(), EqualTo("password")])
    photo = FileField(_l("Photo of your ID card (optional)"))
