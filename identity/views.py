"""Identity pages: log in and out, patient registration with a phone code, family members,
reclaiming an ID number, the language, and the physician's workstation home and face check."""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response

from clinic.core import limits
from clinic.core.config import settings
from clinic.core.db import db, record_id
from clinic.core.errors import DomainError, Invalid
from clinic.core.pages import face_checked, page_principal, panels_for, physician_page
from clinic.core.web import handle_refusal
from identity import face_services, reclaims, services
from identity.face import ImageTooLarge
from identity.forms import CodeForm, FamilyForm, LoginForm, ReclaimForm, RegisterForm
from identity.login import end_sessions, log_in
from identity.models import Account, Institution, Role

bp = Blueprint("identity", __name__, template_folder="templates")


def institution_name() -> str:
    """The institution's name for the page header (two clinics side by side must be told
    apart, and a patient should see whose service this is); read once per request."""
    if "institution_name" not in g:
        inst = db.session.get(Institution, 1)
        g.institution_name = inst.name if inst is not None else ""
    return str(g.institution_name)


@bp.app_context_processor
def _institution() -> dict[str, Any]:
    return {"institution_name": institution_name}


login_manager = LoginManager()
login_manager.login_view = "identity.login"
login_manager.login_message = _l("Please log in to continue.")


@login_manager.user_loader
def _load_user(user_id: str) -> Account | None:
    """The session's account, if active and the session is of its current session version
    (a cookie from before a logout, password change or deactivation is refused)."""
    account_id, _, version = user_id.partition(":")
    try:
        account = services.get_account(record_id(account_id))
    except DomainError:
        return None
    return account if account.active and version == str(account.session_version) else None


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
    if current_user.is_authenticated and current_user.role == Role.PHYSICIAN and not face_checked():
        return redirect(url_for("identity.face"))
    if current_user.is_authenticated and current_user.role == Role.PHARMACIST:
        return redirect(url_for("pharmacy.queue"))  # the pharmacist's day starts at the queue
    if current_user.is_authenticated and current_user.role == Role.ADMIN:
        return redirect(url_for("admin.console"))
    if current_user.is_authenticated and current_user.role == Role.PHYSICIAN:
        return render_template("identity/workstation.html", **_workstation())
    return render_template("identity/home.html")


def _workstation() -> dict[str, Any]:
    """The physician's home: every domain's panels, and how long the face check still holds."""
    panels = panels_for(page_principal())
    now = int(time.time())
    face_at = session.get("face_at")
    until = face_at + settings().FACE_FRESH_SECONDS if isinstance(face_at, int) else None
    left = max(0, (until - now) // 60) if until else 0
    sig = hashlib.sha256(
        "|".join(f"{p.panel.key}:{','.join(str(getattr(r, 'id', r)) for r in p.rows)}" for p in panels).encode()
    ).hexdigest()[:16]
    staff = current_user.staff
    return {
        "panels": panels,
        "face_until": until,
        "face_left": left,
        "now": now,
        "sig": sig,
        "on_duty": bool(staff is not None and staff.on_duty),
    }


@bp.post("/workstation/duty")
@physician_page
def workstation_duty() -> Response:
    """On or off duty: the public directory shows it and new department visits are routed by it."""
    on_duty = request.form.get("on_duty") == "1"
    services.set_on_duty(page_principal(), on_duty)
    if on_duty:
        flash(_l("You are on duty: new visits to your department can come to you."), "ok")
    else:
        flash(_l("You are off duty: no new visits are routed to you until you come back on duty."), "ok")
    return redirect(url_for("identity.home"))


@bp.get("/workstation/live")
@physician_page
def workstation_live() -> Response:
    """What the workstation home polls: the panels (HTML) and a signature of what they hold."""
    data = _workstation()
    resp = jsonify(
        {
            "sig": data["sig"],
            "html": render_template("identity/_panels.html", panels=data["panels"]),
            "counts": {p.panel.key: p.count for p in data["panels"]},
            "face_until": data["face_until"],
        }
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit():
        try:
            account = log_in(form.username.data, form.password.data, request.remote_addr)
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return render_template("identity/login.html", form=form), err.status
        session.pop("face_at", None)  # a physician proves their face again after every login
        login_user(account)
        target = _safe_next(request.args.get("next"))
        return redirect(target if target and account.role != Role.PHYSICIAN else home_for(account))
    return render_template("identity/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Response:
    session.pop("face_at", None)
    end_sessions(current_user._get_current_object(), "logout")
    logout_user()
    session.clear()
    return redirect(url_for("identity.login"))


@bp.route("/register", methods=["GET", "POST"])
def register() -> Any:
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            reg = services.register_patient(
                form.name.data, form.id_number.data, form.phone.data, form.password.data, request.remote_addr or "-"
            )
        except DomainError as err:
            flash(handle_refusal(err), "error")
            taken = err.code == "already_registered"
            return render_template("identity/register.html", form=form, taken=taken), err.status
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


# --- reclaiming an ID number registered by someone else (identity/reclaims.py) --------------


@bp.route("/reclaim", methods=["GET", "POST"])
def reclaim() -> Any:
    """The claimant's request: name, ID number, a new phone, the new account's password and
    optionally a photo of the ID card. A code goes to the new phone."""
    form = ReclaimForm()
    if form.validate_on_submit():
        try:
            photo = None
            upload = form.photo.data
            if isinstance(upload, FileStorage) and upload.filename:
                cap = settings().RECLAIM_PHOTO_MAX_BYTES
                photo = upload.stream.read(cap + 1)
                if len(photo) > cap:
                    raise ImageTooLarge(f"The image is larger than {cap // (1024 * 1024)} MB.")
            started = reclaims.start(
                form.name.data or "",
                form.id_number.data or "",
                form.phone.data or "",
                form.password.data or "",
                photo,
                request.remote_addr or "-",
            )
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return render_template("identity/reclaim.html", form=form), err.status
        session["reclaim_id"] = str(started.id)
        flash(_l("We sent a code to your new phone."), "ok")
        return redirect(url_for("identity.reclaim_code"))
    return render_template("identity/reclaim.html", form=form), (422 if form.errors else 200)


def _reclaim_id() -> str | None:
    value = session.get("reclaim_id")
    return value if isinstance(value, str) else None


@bp.route("/reclaim/code", methods=["GET", "POST"])
def reclaim_code() -> Any:
    reclaim_id = _reclaim_id()
    if reclaim_id is None:
        return redirect(url_for("identity.reclaim"))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            limits.check("CODE_RATE_LIMIT", "verify-reclaim", reclaim_id)
            reclaims.confirm_code(record_id(reclaim_id), form.code.data or "")
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return render_template("identity/reclaim_code.html", form=form), err.status
        session.pop("reclaim_id", None)
        session["reclaim_done"] = True
        return redirect(url_for("identity.reclaim_done"))
    return render_template("identity/reclaim_code.html", form=form), (422 if form.errors else 200)


@bp.post("/reclaim/code/resend")
def reclaim_resend() -> Any:
    reclaim_id = _reclaim_id()
    if reclaim_id is None:
        return redirect(url_for("identity.reclaim"))
    try:
        reclaims.resend_code(record_id(reclaim_id))
        flash(_l("A new code is on its way."), "ok")
    except DomainError as err:
        flash(handle_refusal(err), "error")
    return redirect(url_for("identity.reclaim_code"))


@bp.get("/reclaim/done")
def reclaim_done() -> Any:
    if not session.get("reclaim_done"):
        return redirect(url_for("identity.reclaim"))
    return render_template("identity/reclaim_done.html", accepted=_l(reclaims.ACCEPTED))


@bp.get("/lang/<code>")
def set_language(code: str) -> Response:
    resp = redirect(_safe_next(request.args.get("next")) or url_for("identity.home"))
    if code in ("zh_CN", "en"):
        resp.set_cookie("lang", code, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
    return resp


# --- physicians' face check on pages: the decorators live in clinic.core.pages ------------

__all__ = ["bp", "face_checked", "login_manager", "page_principal", "physician_page"]


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


@bp.route("/face", methods=["GET", "POST"])
@login_required
def face() -> Any:
    """The workstation's face check: camera capture (getUserMedia) or an uploaded picture."""
    account: Account = current_user._get_current_object()
    if account.role != Role.PHYSICIAN:
        abort(403)
    target = _safe_next(request.values.get("next")) or url_for("identity.home")
    if request.method == "GET":
        return render_template("identity/face.html", next=target)
    # CSRF is checked by CSRFProtect before we get here.
    try:
        limits.check("FACE_RATE_LIMIT", "face", str(account.id))
        upload = request.files.get("image")
        if upload is None or not upload.filename:
            raise Invalid("Take a picture or choose one first.", code="invalid")
        cap = settings().FACE_MAX_UPLOAD_BYTES
        data = upload.stream.read(cap + 1)
        if len(data) > cap:
            raise ImageTooLarge(f"The image is larger than {cap // (1024 * 1024)} MB.")
        verified_at = face_services.verify_face(account, data)
    except DomainError as err:
        message = handle_refusal(err)
        if _wants_json():
            return jsonify({"error": {"code": err.code, "message": message}}), err.status
        flash(message, "error")
        return render_template("identity/face.html", next=target, code=err.code), err.status
    session["face_at"] = int(verified_at.timestamp())
    if _wants_json():
        return jsonify({"status": "verified", "redirect": target})
    flash(_l("Face verified."), "ok")
    return redirect(target)


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.register_blueprint(bp)
