"""Family-doctor pages of the administrator: the institution's level, the teams and their
service packages. On the family-doctor blueprint (views.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from werkzeug.wrappers import Response

from clinic.core.db import db, record_id
from clinic.core.errors import DomainError
from clinic.core.pages import admin_page
from clinic.family_doctor import rules, services
from clinic.family_doctor.views import bp, form_decimal, refused
from identity.models import Account, Role

# --- administrator ----------------------------------------------------------------------------


def _admin_page(status: int = 200) -> Any:
    physicians = list(
        db.session.scalars(select(Account).where(Account.role == Role.PHYSICIAN).order_by(Account.display_name))
    )
    return render_template(
        "family_doctor/admin.html",
        level=services.institution_level(),
        levels=rules.LEVELS,
        teams=services.list_teams(),
        physicians=physicians,
    ), status


@bp.get("/admin/family-doctor")
@admin_page
def admin() -> Any:
    return _admin_page()


def _admin_action(fn: Any, ok: Any) -> Response | Any:
    try:
        fn()
    except DomainError as err:
        flash(refused(err), "error")
        return _admin_page(err.status)
    flash(ok, "ok")
    return redirect(url_for("family_doctor.admin"))


@bp.post("/admin/family-doctor/level")
@admin_page
def admin_level() -> Any:
    return _admin_action(lambda: services.set_institution_level(request.form.get("level", "")), _l("Level saved."))


def _names(raw: str) -> list[str]:
    return [n.strip() for n in raw.replace("，", ",").split(",") if n.strip()]


@bp.post("/admin/family-doctor/teams")
@admin_page
def admin_team() -> Any:
    f = request.form
    members = [
        services.MemberSpec("", "physician", record_id(a)) for a in f.getlist("physicians") if a != f.get("lead_id")
    ]
    members += [services.MemberSpec(n, "nurse") for n in _names(f.get("nurses", ""))]
    members += [services.MemberSpec(n, "public_health") for n in _names(f.get("public_health", ""))]
    return _admin_action(
        lambda: services.create_team(f.get("name", ""), record_id(f.get("lead_id", "")), members), _l("Team created.")
    )


@bp.post("/admin/family-doctor/teams/<team_id>/packages")
@admin_page
def admin_package(team_id: str) -> Any:
    f = request.form
    fee = form_decimal(f.get("fee_yuan")) or Decimal(0)
    fee_fen = int((fee * 100).to_integral_value())

    def run() -> None:
        services.create_package(
            record_id(team_id), f.get("name", ""), f.getlist("conditions"), f.get("includes", ""), fee_fen
        )

    return _admin_action(run, _l("Package added."))
