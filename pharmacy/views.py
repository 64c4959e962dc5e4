"""Pharmacy pages: the pharmacist's queue and review screen (desktop), the patient's
prescription tracking page (phone). Thin: parse, call one service, render."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from clinic.core.errors import DomainError
from clinic.core.pages import patient_page, pharmacist_page
from clinic.core.web import handle_refusal
from pharmacy import review, rules
from pharmacy.labels import DELIVERY_STATUS
from prescriptions import services as rx_services
from prescriptions.views import RX_STATUS

bp = Blueprint("pharmacy", __name__, template_folder="templates")
F = TypeVar("F", bound=Callable[..., Any])


def _reason_labels() -> list[tuple[str, str]]:
    english = str(request.accept_languages.best or "").startswith("en")
    return [(code, en if english else zh) for code, (zh, en) in rules.REVIEW_REASONS.items()]


@bp.get("/pharmacy/queue")
@pharmacist_page
def queue() -> str:
    return render_template("pharmacy/queue.html", summary=review.queue_summary(str(current_user.id)))


@bp.post("/pharmacy/queue/claim")
@pharmacist_page
def claim() -> Response:
    try:
        rx_id = review.claim_next(str(current_user.id))
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return redirect(url_for("pharmacy.queue"))
    if rx_id is None:
        flash(_("The queue is empty."), "info")
        return redirect(url_for("pharmacy.queue"))
    return redirect(url_for("pharmacy.review_page", prescription_id=rx_id))


@bp.route("/pharmacy/review/<prescription_id>", methods=["GET", "POST"])
@pharmacist_page
def review_page(prescription_id: str) -> Any:
    if request.method == "POST":
        decision = request.form.get("decision", "")
        note = request.form.get("note", "").strip()[:500]
        reasons = [{"code": c, "note": note} for c in request.form.getlist("reasons")]
        try:
            rx = review.decide(str(current_user.id), prescription_id, decision, reasons)
        except DomainError as err:
            flash(handle_refusal(err), "error")
        else:
            flash(_("Decision recorded: %(status)s", status=rx.status.value), "success")
            return redirect(url_for("pharmacy.queue"))
    screen = review.review_screen(str(current_user.id), prescription_id)
    return render_template("pharmacy/review.html", s=screen, reasons=_reason_labels())


@bp.post("/pharmacy/dispense/<prescription_id>")
@pharmacist_page
def dispense(prescription_id: str) -> Response:
    try:
        delivery = review.dispense(str(current_user.id), prescription_id)
    except DomainError as err:
        flash(handle_refusal(err), "error")
    else:
        flash(
            _(
                "Dispensed; delivery: %(status)s",
                status=DELIVERY_STATUS.get(delivery.status.value, delivery.status.value),
            ),
            "success",
        )
    return redirect(url_for("pharmacy.queue"))


@bp.route("/prescriptions/<prescription_id>/track", methods=["GET", "POST"])
@patient_page
def track(prescription_id: str) -> Any:
    me = str(current_user.id)
    payment = None
    if request.method == "POST":
        form = request.form
        try:
            _record, payment = review.checkout(
                me,
                prescription_id,
                collect=form.get("collect") == "1",
                recipient_name=form.get("recipient_name", "").strip() or None,
                phone=form.get("phone", "").strip() or None,
                address=form.get("address", "").strip() or None,
                region_code=form.get("region_code", "").strip() or None,
            )
        except DomainError as err:
            flash(handle_refusal(err), "error")
        else:
            flash(_("Saved."), "success")
    rx = rx_services.prescription_for(me, "patient", prescription_id)
    view = review.delivery_view(me, "patient", prescription_id)
    return render_template(
        "pharmacy/track.html",
        rx=rx,
        d=view,
        payment=payment,
        rx_status=RX_STATUS,
        delivery_status=DELIVERY_STATUS,
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
