"""The administrator's console (a desk, 1366×768): pages over the existing services — the
suspension switch and its history, incidents and the SMS to the regulator, staff accounts
(create, credentials expiring within 60 days, deactivate), physicians' face enrollment and
unlock, the condition catalog. Delivery partners have their pages in the pharmacy package,
the audit viewer in clinic/admin/audit_log.py. Thin: parse, call one service (this package's
clinic/admin/services.py, or the package whose change it is), render."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, url_for
from flask_babel import gettext as _

from clinic.admin import services
from clinic.admin.forms import (
    ConditionEditForm,
    ConditionForm,
    DeactivateForm,
    FaceForm,
    IncidentForm,
    StaffForm,
    SuspensionForm,
    choices,
)
from clinic.admin.labels import INCIDENT_KIND, SEVERITY
from clinic.core.config import settings
from clinic.core.db import record_id
from clinic.core.errors import DomainError, NotFound
from clinic.core.pages import BEIJING, admin_page, label_for, page_principal
from clinic.core.web import handle_refusal
from clinic.regulator import incidents as regulator
from clinic.regulator.models import IncidentKind, Severity
from clinic.visits import condition_catalog, service_switch
from identity import face_services
from identity import services as identity
from identity.models import Account, Role

bp = Blueprint("admin", __name__, template_folder="templates", url_prefix="/admin")
EXPIRING_DAYS = 60


@bp.get("")
@admin_page
def console() -> Any:
    today = date.today()
    staff = identity.staff_accounts()
    expiring = [
        a
        for a in staff
        if a.active and (e := identity.credential_expiry(a)) is not None and e <= today + timedelta(EXPIRING_DAYS)
    ]
    return render_template(
        "admin/console.html",
        switch=service_switch.suspension(),
        expiring=expiring,
        incidents=regulator.list_incidents(5),
    )


# --- the suspension switch -------------------------------------------------------------------


def _suspension_page(form: SuspensionForm, status: int = 200) -> Any:
    history = services.suspension_history()
    names = services.names(h.changed_by for h in history)
    return render_template(
        "admin/suspension.html", form=form, switch=service_switch.suspension(), history=history, names=names
    ), status


@bp.route("/suspension", methods=["GET", "POST"])
@admin_page
def suspension() -> Any:
    form = SuspensionForm()
    if form.validate_on_submit():
        current = service_switch.suspension()
        stop = not (current is not None and current.suspended)
        try:
            service_switch.set_suspension(page_principal(), stop, form.reason.data or "")
        except DomainError as err:
            form.reason.errors = [handle_refusal(err)]
            return _suspension_page(form, err.status)
        flash(_("Online services are stopped.") if stop else _("Online services are running again."), "ok")
        return redirect(url_for(".suspension"))
    return _suspension_page(form, 422 if form.errors else 200)


# --- incidents -------------------------------------------------------------------------------


def _incident_form() -> IncidentForm:
    form = IncidentForm()
    form.kind.choices = choices([(k, str(w)) for k, w in INCIDENT_KIND.items()])
    form.severity.choices = choices([(k, str(w)) for k, w in SEVERITY.items()])
    return form


def _incidents_page(form: IncidentForm, status: int = 200) -> Any:
    incidents = regulator.list_incidents()
    return render_template(
        "admin/incidents.html",
        form=form,
        incidents=incidents,
        names=services.names(i.reported_by for i in incidents),
        notices={i.id: regulator.regulator_notice(i) for i in incidents},
    ), status


@bp.route("/incidents", methods=["GET", "POST"])
@admin_page
def incidents() -> Any:
    form = _incident_form()
    if form.validate_on_submit():
        assert form.found_at.data is not None
        report = regulator.IncidentReport(
            kind=IncidentKind(form.kind.data),
            severity=Severity(form.severity.data),
            what=form.what.data or "",
            scope=form.scope.data or "",
            found_at=form.found_at.data.replace(tzinfo=BEIJING),
            suspend=bool(form.suspend.data),
        )
        try:
            regulator.record_incident(page_principal(), report)
        except DomainError as err:
            message = handle_refusal(err)
            target = form.found_at if "found_at" in err.message else form.suspend
            target.errors = [message]
            return _incidents_page(form, err.status)
        flash(_("Recorded. The regulator is told by SMS."), "ok")
        return redirect(url_for(".incidents"))
    return _incidents_page(form, 422 if form.errors else 200)


@bp.get("/incidents/<incident_id>")
@admin_page
def incident(incident_id: str) -> Any:
    """One incident and the SMS that told the regulator: its text, the number (masked), when, and its state."""
    found = regulator.get_incident(record_id(incident_id))
    return render_template(
        "admin/incident.html",
        incident=found,
        notice=regulator.regulator_notice(found),
        reporter=services.names([found.reported_by]).get(found.reported_by, "—"),
    )


# --- staff accounts, face enrollment ---------------------------------------------------------


def _staff_form() -> StaffForm:
    form = StaffForm()
    form.role.choices = choices(
        [("physician", label_for("role", "physician")), ("pharmacist", label_for("role", "pharmacist"))]
    )
    form.department.choices = choices([("", "—"), *services.departments()])
    return form


def _staff_page(form: StaffForm, status: int = 200) -> Any:
    today = date.today()
    staff = identity.staff_accounts()
    return render_template(
        "admin/staff.html",
        form=form,
        staff=staff,
        expiry=identity.credential_expiry,
        soon=today + timedelta(EXPIRING_DAYS),
        today=today,
        enrolled={a.id for a in staff if face_services.face_enrollment(a.id) is not None},
        locked={a.id for a in staff if face_services.face_locked(a.id)},
        deactivate_form=DeactivateForm(),
    ), status


@bp.route("/staff", methods=["GET", "POST"])
@admin_page
def staff() -> Any:
    form = _staff_form()
    if form.validate_on_submit():
        physician = form.role.data == "physician"
        spec = identity.StaffSpec(
            username=(form.username.data or "").strip(),
            password=form.password.data or "",
            role=Role(form.role.data),
            name=(form.name.data or "").strip(),
            department=form.department.data or None if physician else None,
            title=form.title.data or "",
            license_no=form.license_no.data or None if physician else None,
            practice_registration_no=form.license_no.data or None if physician else None,
            license_valid_until=form.license_valid_until.data if physician else None,
            independent_practice_since=date.today() - timedelta(days=365 * 5) if physician else None,
            qualification_no=None if physician else form.qualification_no.data or None,
            qualification_valid_until=None if physician else form.qualification_valid_until.data,
        )
        try:
            account = identity.create_staff(spec)
        except DomainError as err:
            message = handle_refusal(err)
            field = form.username if err.code == "username_taken" else form.password
            field.errors = [message]
            return _staff_page(form, err.status)
        flash(_("Account created for %(name)s.", name=account.display_name), "ok")
        if physician:
            return redirect(url_for(".face", account_id=account.id))
        return redirect(url_for(".staff"))
    return _staff_page(form, 422 if form.errors else 200)


@bp.post("/staff/<account_id>/deactivate")
@admin_page
def deactivate(account_id: str) -> Any:
    form = DeactivateForm()
    if not form.validate_on_submit():
        flash(_("Say why the account is deactivated."), "error")
        return _staff_page(_staff_form(), 422)
    try:
        account = identity.deactivate_staff(record_id(account_id), form.reason.data or "")
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _staff_page(_staff_form(), err.status)
    flash(_("%(name)s can no longer log in.", name=account.display_name), "ok")
    return redirect(url_for(".staff"))


def _physician(account_id: str) -> Account:
    account = identity.get_account(record_id(account_id))
    if account.role != Role.PHYSICIAN:
        raise NotFound("No such physician.")
    return account


def _face_page(account: Account, form: FaceForm, status: int = 200) -> Any:
    return render_template(
        "admin/face.html",
        account=account,
        form=form,
        enrollment=face_services.face_enrollment(account.id),
        locked=face_services.face_locked(account.id),
    ), status


@bp.route("/staff/<account_id>/face", methods=["GET", "POST"])
@admin_page
def face(account_id: str) -> Any:
    account = _physician(account_id)
    form = FaceForm()
    if form.validate_on_submit():
        cap = settings().FACE_MAX_UPLOAD_BYTES
        data = form.photo.data.stream.read(cap + 1)
        try:
            face_services.enroll_face(account, data)
        except DomainError as err:
            form.photo.errors = [handle_refusal(err)]
            return _face_page(account, form, err.status)
        flash(_("The reference photo is enrolled."), "ok")
        return redirect(url_for(".staff"))
    return _face_page(account, form, 422 if form.errors else 200)


@bp.post("/staff/<account_id>/unlock")
@admin_page
def unlock(account_id: str) -> Any:
    account = _physician(account_id)
    try:
        face_services.unlock_face(account)
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return redirect(url_for(".face", account_id=account_id))
    flash(_("The face check is unlocked."), "ok")
    return redirect(url_for(".face", account_id=account_id))


# --- the condition catalog -------------------------------------------------------------------


def _condition_page(form: ConditionForm, status: int = 200) -> Any:
    return render_template(
        "admin/conditions.html",
        form=form,
        conditions=condition_catalog.all_conditions(),
        departments=dict(services.departments()),
    ), status


@bp.route("/conditions", methods=["GET", "POST"])
@admin_page
def conditions() -> Any:
    form = ConditionForm()
    form.department.choices = choices(services.departments())
    if form.validate_on_submit():
        try:
            condition_catalog.add_condition(
                form.code.data or "", form.name_zh.data or "", form.department.data or "", bool(form.chronic.data)
            )
        except DomainError as err:
            target = form.department if "department" in err.message else form.code
            target.errors = [handle_refusal(err)]
            return _condition_page(form, err.status)
        flash(_("Saved."), "ok")
        return redirect(url_for(".conditions"))
    return _condition_page(form, 422 if form.errors else 200)


# The field a refusal of the service names (its `fields[0].loc`) carries the message.
_CONDITION_FIELDS = ("name_zh", "name_en", "department")


@bp.route("/conditions/<code>/edit", methods=["GET", "POST"])
@admin_page
def edit_condition(code: str) -> Any:
    cond = condition_catalog.get_condition(code)
    form = ConditionEditForm(obj=cond)
    form.department.choices = choices(services.departments())
    status = 200
    if form.validate_on_submit():
        change = condition_catalog.ConditionChange(
            name_zh=form.name_zh.data or "",
            name_en=form.name_en.data or "",
            department=form.department.data or "",
            chronic=bool(form.chronic.data),
            active=bool(form.active.data),
        )
        try:
            condition_catalog.update_condition(cond.code, change)
        except DomainError as err:
            message = handle_refusal(err)
            loc = next(iter(err.extra.get("fields") or [{}])).get("loc")
            getattr(form, loc if loc in _CONDITION_FIELDS else "name_zh").errors = [message]
            cond = condition_catalog.get_condition(code)  # the refusal rolled the session back
            return render_template("admin/condition_edit.html", form=form, condition=cond), err.status
        flash(_("%(name)s is saved.", name=change.name_zh.strip()), "ok")
        return redirect(url_for(".conditions"))
    if form.errors:
        status = 422
    return render_template("admin/condition_edit.html", form=form, condition=cond), status


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
