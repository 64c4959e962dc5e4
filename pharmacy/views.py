"""Pharmacy pages. The pharmacist's workspace at a desk (1366×768): the review queue as a
list with "claim the next one", the review screen, the prescriptions reviewed, the ones to
dispense and their printable dispensing labels. The patient's tracking page (phone).
Thin: parse, call one service, render."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from flask import Blueprint, Flask, abort, flash, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from markupsafe import Markup
from werkzeug.wrappers import Response

from clinic.core.db import record_id, utcnow
from clinic.core.errors import DomainError
from clinic.core.pages import (
    Panel,
    Words,
    admin_page,
    label_for,
    page_principal,
    patient_page,
    pharmacist_page,
    register_panel,
)
from clinic.core.web import handle_refusal
from clinic.visits.models import Visit
from identity.models import Account, Role
from pharmacy import checkout, dispensing, regions, services, worklists
from pharmacy import partners as partner_registry
from pharmacy.forms import PartnerForm, ReviewForm
from pharmacy.labels import DELIVERY_STATUS
from prescriptions import document as rx_document
from prescriptions import reads as rx_reads
from prescriptions.labels import RX_STATUS

bp = Blueprint("pharmacy", __name__, template_folder="templates")


DECISIONS = ("approve", "return", "reject")


@bp.get("/pharmacy/queue")
@pharmacist_page
def queue() -> str:
    me = page_principal()
    return render_template(
        "pharmacy/queue.html", summary=worklists.queue_summary(me), rows=worklists.queue_rows(me), now=utcnow()
    )


@bp.post("/pharmacy/queue/claim")
@pharmacist_page
def claim() -> Response:
    try:
        rx_id = services.claim_next(page_principal())
    except DomainError as err:
        flash(handle_refusal(err), "error")
        return redirect(url_for("pharmacy.queue"))
    if rx_id is None:
        flash(_("The queue is empty."), "info")
        return redirect(url_for("pharmacy.queue"))
    return redirect(url_for("pharmacy.review_page", prescription_id=rx_id))


def _review_screen(prescription_id: str, form: ReviewForm, status: int = 200) -> Any:
    screen = services.review_screen(page_principal(), record_id(prescription_id))
    return render_template("pharmacy/review.html", s=screen, form=form), status


@bp.route("/pharmacy/review/<prescription_id>", methods=["GET", "POST"])
@pharmacist_page
def review_page(prescription_id: str) -> Any:
    form = ReviewForm()
    if request.method == "POST":
        decision = request.form.get("decision", "")
        if decision not in DECISIONS or not form.validate_on_submit():
            flash(_("Choose one of the three decisions; reasons come from the list."), "error")
            return _review_screen(prescription_id, form, 422)
        note = (form.note.data or "").strip()
        reasons = [{"code": c, "note": note} for c in form.reasons.data or []]
        if decision != "approve" and not reasons:
            form.reasons.errors = [_("Returning or rejecting needs at least one reason from the review standard.")]
            return _review_screen(prescription_id, form, 422)
        try:
            rx = services.decide(page_principal(), record_id(prescription_id), decision, reasons)
        except DomainError as err:
            flash(handle_refusal(err), "error")
            return _review_screen(prescription_id, form, err.status)
        flash(_("Decision recorded: %(status)s", status=label_for("rx", rx.status)), "success")
        return redirect(url_for("pharmacy.queue"))
    return _review_screen(prescription_id, form)


@bp.get("/pharmacy/reviewed")
@pharmacist_page
def reviewed() -> str:
    return render_template("pharmacy/reviewed.html", rows=worklists.reviewed_rows(page_principal()))


@bp.get("/pharmacy/to-dispense")
@pharmacist_page
def to_dispense() -> str:
    me = page_principal()
    return render_template(
        "pharmacy/to_dispense.html",
        rows=worklists.dispense_rows(me),
        checkers=[
            (str(a.id), a.staff.name if a.staff else a.display_name)
            for a in dispensing.on_duty_pharmacists(me.account_id)
        ],
    )


@bp.post("/pharmacy/prepare/<prescription_id>")
@pharmacist_page
def prepare(prescription_id: str) -> Response:
    """调配: I have made it up; another pharmacist checks it and issues it."""
    try:
        dispensing.prepare(page_principal(), record_id(prescription_id))
    except DomainError as err:
        flash(handle_refusal(err), "error")
    else:
        flash(_("Recorded that you made it up; another pharmacist now checks it and issues it."), "success")
    return redirect(url_for("pharmacy.to_dispense"))


@bp.post("/pharmacy/dispense/<prescription_id>")
@pharmacist_page
def dispense(prescription_id: str) -> Response:
    """核对、发药: I check what another made up, or I made it up and name who checked it."""
    if request.form.get("four_checks") != "1":
        flash(_("Confirm the check first: tick the box beside the button."), "error")
        return redirect(url_for("pharmacy.to_dispense"))
    try:
        delivery = dispensing.dispense(
            page_principal(),
            record_id(prescription_id),
            checked_by=request.form.get("checked_by") or None,
        )
    except DomainError as err:
        flash(handle_refusal(err), "error")
    else:
        flash(_("Dispensed; delivery: %(status)s", status=label_for("delivery", delivery.status)), "success")
        session["dispensed"] = prescription_id  # the next page offers its label
    return redirect(url_for("pharmacy.to_dispense"))


@bp.get("/pharmacy/label/<prescription_id>")
@pharmacist_page
def dispensing_label(prescription_id: str) -> str:
    return render_template(
        "pharmacy/label.html",
        sheet=dispensing.dispensing_label(page_principal(), record_id(prescription_id)),
    )


@bp.route("/prescriptions/<prescription_id>/track", methods=["GET", "POST"])
@patient_page
def track(prescription_id: str) -> Any:
    me = page_principal()
    rx_id = record_id(prescription_id)
    payment = None
    if request.method == "POST":
        form = request.form
        try:
            _record, payment = checkout.checkout(
                me,
                rx_id,
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
    rx = rx_reads.prescription_for(me, rx_id)
    view = checkout.delivery_view(me, rx_id)
    saved = checkout.saved_address(me.account_id, rx.id)
    typed = request.form.get("region_code") if request.method == "POST" else None
    return render_template(
        "pharmacy/track.html",
        rx=rx,
        d=view,
        payment=payment,
        rx_status=RX_STATUS,
        delivery_status=DELIVERY_STATUS,
        saved=saved,
        typed=_typed(saved),
        picker=_picker(typed or (saved.region_code if saved else None)),
    )


def _typed(saved: checkout.SavedAddress | None) -> dict[str, str]:
    """What the address form shows: what was just typed (a refusal keeps it), else the saved address."""
    if request.method == "POST":
        return {k: request.form.get(k, "") for k in ("recipient_name", "phone", "address")}
    if saved is None:
        return {"recipient_name": "", "phone": "", "address": ""}
    return {"recipient_name": saved.recipient_name, "phone": saved.phone_local, "address": saved.address}


def _picker(code: str | None) -> dict[str, Any]:
    """The three lists of the address picker, with a saved choice selected."""
    place = regions.place(code)
    province = city = district = ""
    if place is not None:
        district = place.code
        province = next((p.code for p in regions.provinces() if p.name == place.province), "")
        city = next((c.code for c in regions.cities(province) if c.name == place.city), "")
    return {
        "provinces": regions.provinces(),
        "cities": regions.cities(province) if province else (),
        "districts": regions.districts(city) if city else (),
        "province": province,
        "city": city,
        "district": district,
    }


@bp.get("/regions", endpoint="regions")
def regions_json() -> Response:
    """The address picker's next list: cities of a province, districts of a city."""
    parent = request.args.get("parent", "")
    items = regions.districts(parent) if request.args.get("level") == "district" else regions.cities(parent)
    resp = jsonify({"items": [{"code": d.code, "name": d.name} for d in items]})
    resp.headers["Cache-Control"] = "public, max-age=86400"
    return resp


@bp.get("/prescriptions/<prescription_id>/pdf")
@patient_page
def my_document(prescription_id: str) -> Response:
    """The printable prescription for the patient's own account (the staff have their own route)."""
    rx = rx_reads.prescription_for(page_principal(), record_id(prescription_id))
    return Response(
        rx_document.document_for(rx),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="prescription-{rx.id}.pdf"', "Cache-Control": "no-store"},
    )


# --- administrators: delivery partners --------------------------------------------------------


def _partners_page(form: PartnerForm, status: int = 200, secret: str | None = None, **extra: Any) -> Any:
    return render_template(
        "pharmacy/partners.html", form=form, partners=partner_registry.list_partners(), secret=secret, **extra
    ), status


def _endpoint_refused(form: PartnerForm, err: DomainError) -> None:
    message = handle_refusal(err)
    target = form.name if err.code == "partner_exists" else form.endpoint
    target.errors = [message]


@bp.route("/admin/partners", methods=["GET", "POST"])
@admin_page
def partners() -> Any:
    form = PartnerForm()
    if form.validate_on_submit():
        spec = partner_registry.PartnerSpec(
            name=(form.name.data or "").strip(),
            license_no=(form.license_no.data or "").strip(),
            license_valid_until=form.license_valid_until.data or date.today(),
            regions=form.region_codes(),
            cold_chain=bool(form.cold_chain.data),
            priority=int(form.priority.data or 100),
            endpoint=(form.endpoint.data or "").strip(),
            active=bool(form.active.data),
        )
        try:
            partner, secret = partner_registry.create_partner(spec)
        except DomainError as err:
            _endpoint_refused(form, err)
            return _partners_page(form, err.status)
        # shown once, in this answer only: never stored in the session or shown again
        return _partners_page(PartnerForm(formdata=None), 201, secret=secret, secret_for=partner.name)
    return _partners_page(form, 422 if form.errors else 200)


@bp.route("/admin/partners/<partner_id>", methods=["GET", "POST"])
@admin_page
def partner(partner_id: str) -> Any:
    found = next((p for p in partner_registry.list_partners() if str(p.id) == partner_id), None)
    if found is None:
        abort(404)
    form = PartnerForm(obj=found)
    if request.method == "GET":
        form.regions.data = ", ".join(found.regions)
    secret = None
    status = 200
    if request.method == "POST":
        rotate = request.form.get("rotate") == "1"
        form.name.data = found.name  # the name is the partner's identity here: not changed
        if rotate or form.validate_on_submit():
            changes = (
                {}
                if rotate
                else {
                    "license_no": form.license_no.data,
                    "license_valid_until": form.license_valid_until.data,
                    "regions": form.region_codes(),
                    "cold_chain": bool(form.cold_chain.data),
                    "priority": form.priority.data,
                    "endpoint": form.endpoint.data,
                    "active": bool(form.active.data),
                }
            )
            try:
                found, secret = partner_registry.update_partner(found.id, changes, rotate_secret=rotate)
            except DomainError as err:
                _endpoint_refused(form, err)
                status = err.status
            else:
                flash(_("The new secret is shown below, once.") if rotate else _("Saved."), "ok")
        else:
            status = 422
    return render_template("pharmacy/partner.html", form=form, partner=found, secret=secret), status


# --- the physician's home: prescriptions the pharmacists sent back ---------------------------


def _ended(physician_id: uuid.UUID) -> list[dict[str, Any]]:
    return [{"rx": rx, "outcome": rx_reads.review_outcome(rx.id)} for rx in rx_reads.ended_unrevised(physician_id)]


@bp.get("/my/prescriptions")
@patient_page
def my_prescriptions() -> str:
    """我的处方: every prescription of the people on the account, newest first."""
    return render_template(
        "pharmacy/my_prescriptions.html",
        items=checkout.patient_prescriptions(page_principal().account_id),
        rx_status=RX_STATUS,
        delivery_status=DELIVERY_STATUS,
    )


def room_block(visit: Visit, account: Account) -> Markup:
    """In the patient's visit room: the visit's prescriptions, each linking to its page."""
    if account.role != Role.PATIENT:
        return Markup("")
    items = checkout.patient_prescriptions(account.id, visit_id=visit.id)
    if not items:
        return Markup("")
    return Markup(
        render_template(
            "pharmacy/_visit_prescriptions.html", items=items, rx_status=RX_STATUS, delivery_status=DELIVERY_STATUS
        )
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    register_panel(
        "physician",
        Panel(
            "returned",
            Words("药师退回或驳回的处方", "Prescriptions returned or rejected"),
            "pharmacy/_panel_returned.html",
            _ended,
            order=5,
            alert=True,
        ),
    )
    app.extensions.setdefault("visit_room_extras", []).append(room_block)
