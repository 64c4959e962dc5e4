"""The staff check of requests to reclaim an ID number registered by someone else (a desk,
1366×768, from the admin menu): each waiting request with who holds the ID number now,
the ID card photo, approve, or reject with a reason. The claimant (and, on approval, the
account that loses the identity) are told through the notification centre: `init_app`
registers that with identity, which imports nothing above itself. Thin: parse, call one
service, render."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from clinic.core.db import db
from clinic.core.errors import DomainError
from clinic.core.pages import admin_page
from clinic.core.web import handle_refusal
from clinic.notifications import notify
from identity import reclaims
from identity.models import Account, IdentityReclaim, ReclaimStatus

bp = Blueprint("admin_reclaims", __name__, template_folder="templates", url_prefix="/admin/reclaims")


def tell(session: Session, reclaim: IdentityReclaim) -> None:
    """The decision, told: the claimant by SMS (and in the app once they have an account);
    on approval the account that loses the identity too."""
    subject = reclaim.id
    id_number, phone = reclaim.masked_id_number, reclaim.masked_phone
    if reclaim.status == ReclaimStatus.APPROVED:
        notify(
            session,
            account_id=reclaim.new_account_id,
            kind="reclaim_approved",
            link="/",
            subject_type="identity_reclaim",
            subject_id=subject,
            id_number=id_number,
            phone=None,
            mobile=phone,
        )
        if reclaim.old_account_id is not None:
            notify(
                session,
                account_id=reclaim.old_account_id,
                kind="reclaim_lost",
                link="/",
                subject_type="identity_reclaim",
                subject_id=subject,
                id_number=id_number,
            )
    elif reclaim.status == ReclaimStatus.REJECTED:
        notify(
            session,
            account_id=None,
            phone=reclaim.phone,
            kind="reclaim_rejected",
            link="/reclaim",
            subject_type="identity_reclaim",
            subject_id=subject,
            id_number=id_number,
            reason=reclaim.reason,
        )


def _page(status: int = 200) -> Any:
    waiting = reclaims.submitted()
    done = reclaims.decided()
    deciders = {r.decided_by for r in done if r.decided_by}
    names = (
        {a.id: a.display_name for a in db.session.scalars(select(Account).where(Account.id.in_(deciders)))}
        if deciders
        else {}
    )
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
        reclaim = reclaims.approve(reclaim_id)
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
        reclaim = reclaims.reject(reclaim_id, request.form.get("reason", ""))
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return _page(err.status)
    flash(_("Rejected; %(name)s is told by SMS.", name=reclaim.name), "ok")
    return redirect(url_for(".reclaims_page"))


@bp.get("/<reclaim_id>/photo")
@admin_page
def photo(reclaim_id: str) -> Response:
    data, media_type = reclaims.photo(reclaim_id)
    resp = Response(data, mimetype=media_type)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    reclaims.set_teller(app, tell)
