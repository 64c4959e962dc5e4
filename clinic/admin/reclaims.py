"""The staff check of requests to reclaim an ID number registered by someone else (a desk,
1366×768, from the admin menu): each waiting request with who holds the ID number now,
the ID card photo, approve, or reject with a reason. The claimant (and, on approval, the
account that loses the identity) are told through the notification centre
(`services.tell_reclaim_decision`): the factory registers that with identity, which imports
nothing above itself. Thin: parse, call one service, render."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from clinic.admin import services
from clinic.core.db import record_id
from clinic.core.errors import DomainError
from clinic.core.pages import admin_page, page_principal
from clinic.core.web import handle_refusal, private_image
from identity import reclaims

bp = Blueprint("admin_reclaims", __name__, template_folder="templates", url_prefix="/admin/reclaims")


def _page(status: int = 200) -> Any:
    waiting = reclaims.submitted()
    done = reclaims.decided()
    names = services.names(r.decided_by for r in done)
    return render_template(
        "admin/reclaims.html",
        waiting=[(r, reclaims.holder(r), reclaims.phone_in_use(r)) for r in waiting],
        done=done,
        names=names,
    ), status


@bp.get("")
@admin_page
def reclaims_page() -> Any:
    return _page()


@bp.post("/<reclaim_id>/approve")
@admin_page
def approve(reclaim_id: str) -> Any:
    try:
        reclaim = reclaims.approve(page_principal(), record_id(reclaim_id))
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _page(err.status)
    flash(
        _(
            "Approved: the ID number now belongs to %(name)s's new account; the old account is logged out.",
            name=reclaim.name,
        ),
        "ok",
    )
    return redirect(url_for(".reclaims_page"))


@bp.post("/<reclaim_id>/reject")
@admin_page
def reject(reclaim_id: str) -> Any:
    try:
        reclaim = reclaims.reject(page_principal(), record_id(reclaim_id), request.form.get("reason", ""))
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _page(err.status)
    flash(_("Rejected; %(name)s is told by SMS.", name=reclaim.name), "ok")
    return redirect(url_for(".reclaims_page"))


@bp.get("/<reclaim_id>/photo")
@admin_page
def photo(reclaim_id: str) -> Response:
    return private_image(*reclaims.photo(record_id(reclaim_id)))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
