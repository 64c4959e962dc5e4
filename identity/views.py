"""Identity pages: log in and out, patient registration with a phone code, family members."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from clinic.core import limits
from clinic.core.db import db
from clinic.core.errors import DomainError
from clinic.core.web import handle_refusal
from identity import services
from identity.models import Account, Role

bp = Blueprint("identity", __name__, template_folder="templates")
login_manager = LoginManager()
login_manager.login_view = "identity.login"
login_manager.login_message = _l("Please log in to continue.")


@login_manager.user_loader
def _load_user(user_id: str) -> Account | None:
    try:
        account = services.get_account(user_id)
    except DomainError:
        return None
    return account if account.active else None


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
        choices=[("child", _l("Child")), ("parent", _l("Parent")), ("spouse", _l("Spouse")), ("other", _l("Other"))],
    )


def _safe_next(target: str | None) -> str | None:
    if not target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc and target.startswith("/") else None


def home_for(account: Account) -> str:
    if account.role == Role.PHYSICIAN:
        return url_for("identity.face")
    return url_for("identity.home")


@bp.get("/")
def home() -> Any:
    return render_template("identity/home.html")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit():
        try:
            limits.check("LOGIN_RATE_LIMIT", "login-ip", request.remote_addr or "-")
            limits.check("LOGIN_RATE_LIMIT", "login-user", form.username.data.lower())
            account = services.authenticate(form.username.data, form.password.data)
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return render_template("identity/login.html", form=form), err.status
        login_user(account)
        target = _safe_next(request.args.get("next"))
        return redirect(target if target and account.role != Role.PHYSICIAN else home_for(account))
    return render_template("identity/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Response:
    logout_user()
    return redirect(url_for("identity.login"))


@bp.route("/register", methods=["GET", "POST"])
def register() -> Any:
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            limits.check("CODE_RATE_LIMIT", "register-ip", request.remote_addr or "-")
            reg = services.register_patient(form.name.data, form.id_number.data, form.phone.data, form.password.data)
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return render_template("identity/register.html", form=form), err.status
        db.session.flush()
        login_user(reg.account)
        flash(_l("Registered. We sent a code to your phone."), "ok")
        return redirect(url_for("identity.verify_phone"))
    return render_template("identity/register.html", form=form), (422 if form.errors else 200)


def _patient_account() -> Account:
    account: Account = current_user._get_current_object()
    if account.role != Role.PATIENT:
        abort(403)
    return account


@bp.route("/verify-phone", methods=["GET", "POST"])
@login_required
def verify_phone() -> Any:
    account = _patient_account()
    form = CodeForm()
    if form.validate_on_submit():
        try:
            limits.check("CODE_RATE_LIMIT", "verify", str(account.id))
            services.verify_phone(account, form.code.data)
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return render_template("identity/verify_phone.html", form=form), err.status
        flash(_l("Your phone number is confirmed."), "ok")
        return redirect(url_for("identity.home"))
    return render_template("identity/verify_phone.html", form=form)


@bp.post("/verify-phone/resend")
@login_required
def resend_code() -> Any:
    account = _patient_account()
    try:
        limits.check("CODE_RATE_LIMIT", "code", str(account.id))
        services.send_phone_code(account)
        flash(_l("A new code is on its way."), "ok")
    except DomainError as err:
        flash(handle_refusal(err), "error")
    return redirect(url_for("identity.verify_phone"))


@bp.route("/family", methods=["GET", "POST"])
@login_required
def family() -> Any:
    account = _patient_account()
    form = FamilyForm()
    status = 200
    if form.validate_on_submit():
        try:
            services.add_family_member(account, form.name.data, form.id_number.data, form.relation.data)
        except DomainError as err:
            flash(handle_refusal(err), "error")
            status = err.status
        else:
            flash(_l("Added to your account."), "ok")
            return redirect(url_for("identity.family"))
    return render_template("identity/family.html", form=form, account=account), status


@bp.get("/lang/<code>")
def set_language(code: str) -> Response:
    resp = redirect(_safe_next(request.args.get("next")) or url_for("identity.home"))
    if code in ("zh_CN", "en"):
        resp.set_cookie("lang", code, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
    return resp


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.register_blueprint(bp)
