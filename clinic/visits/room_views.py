"""The visit room, the page both sides of a visit use: the visit and its notes, the polled
messages, sending a message or an image, the images sent, and the Twilio Video token and
SDK. `room_page` also answers the patient's and the physician's refused actions."""

from __future__ import annotations

from typing import Any

from flask import current_app, flash, jsonify, redirect, render_template, send_from_directory, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response

from clinic.core import twilio as twilio_adapter
from clinic.core.config import PROJECT_ROOT, settings
from clinic.core.db import record_id
from clinic.core.errors import DomainError
from clinic.core.pages import page_principal, participant_page
from clinic.visits import lifecycle, queues, rules, visit_room
from clinic.visits.forms import CancelForm, CompleteForm, MessageForm, TerminateForm
from clinic.visits.views import bp, me, read_upload, refused
from identity.models import Role

# --- the visit room (both sides) --------------------------------------------------------


def room_page(visit_id: str, status: int = 200, **forms: FlaskForm) -> Any:
    account = me()
    visit = lifecycle.visit_for(page_principal(), record_id(visit_id))
    if account.role == Role.PATIENT:
        visit_room.patient_present(visit)
    notes = list(visit.notes)
    ctx = {
        "queue_position": queues.queue_position(visit),
        "room_extras": [extra(visit, account) for extra in current_app.extensions.get("visit_room_extras", [])],
        "visit": visit,
        "account": account,
        "is_physician": account.role == Role.PHYSICIAN,
        "mine": visit.physician_id == account.id,
        "completion": [n for n in notes if n.kind == "completion"],
        "message_form": forms.get("message_form") or MessageForm(),
        "complete_form": forms.get("complete_form") or CompleteForm(),
        "terminate_form": forms.get("terminate_form") or TerminateForm(),
        "cancel_form": forms.get("cancel_form") or CancelForm(),
        "can_cancel": rules.can_cancel(visit.status),
        "payments_on": current_app.extensions.get("payments") is not None,
    }
    if account.role == Role.PHYSICIAN:
        history = visit_room.patient_history(account.id, visit)
        ctx["history"] = [h for h in history if not h.current]
        weights = [rx.weight_kg for h in history for rx in h.prescriptions if rx.weight_kg is not None]
        ctx["known_weight"] = weights[0] if weights else None
    return render_template("visits/room.html", **ctx), status


@bp.get("/visits/<visit_id>")
@participant_page
def room(visit_id: str) -> Any:
    return room_page(visit_id)


@bp.get("/visits/<visit_id>/live")
@participant_page
def live(visit_id: str) -> Any:
    """What the room polls every few seconds: the status and the messages (HTML)."""
    account = me()
    visit = lifecycle.visit_for(page_principal(), record_id(visit_id))
    if account.role == Role.PATIENT:
        visit_room.patient_present(visit)
    html = render_template("visits/_messages.html", visit=visit, account=account, messages=visit.messages)
    resp = jsonify(
        {
            "status": visit.status.value,
            "count": len(visit.messages),
            "html": html,
            "queue_position": queues.queue_position(visit),
        }
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/visits/<visit_id>/video-token")
@participant_page
def video_token(visit_id: str) -> Any:
    """The room page's Twilio Video token: participants only, while the visit is in progress."""
    grant = visit_room.video_grant(page_principal(), record_id(visit_id))
    cfg = settings()
    token = twilio_adapter.video_token(
        cfg.TWILIO_ACCOUNT_SID, cfg.TWILIO_API_KEY_SID, cfg.TWILIO_API_KEY_SECRET, grant.identity, grant.room
    )
    resp = jsonify({"token": token, "room": grant.room})
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/vendor/twilio-video.min.js")
def twilio_video_sdk() -> Response:
    """The Twilio Video SDK from the project's npm install (package-lock.json), served by the app."""
    return send_from_directory(
        PROJECT_ROOT / "node_modules" / "twilio-video" / "dist", "twilio-video.min.js", max_age=86400
    )


@bp.post("/visits/<visit_id>/messages")
@participant_page
def send_message(visit_id: str) -> Any:
    form = MessageForm()
    if not form.validate_on_submit():
        return room_page(visit_id, status=422, message_form=form)
    image = read_upload(form.image.data, settings().MAX_IMAGE_BYTES)
    text = (form.text.data or "").strip() or None
    try:
        visit_room.post_message(page_principal(), record_id(visit_id), text, image)
    except DomainError as err:
        flash(refused(err), "error")
        return room_page(visit_id, status=err.status, message_form=form)
    return redirect(url_for("visits.room", visit_id=visit_id, _anchor="send"))


@bp.get("/visits/<visit_id>/messages/<message_id>/image")
@participant_page
def message_image(visit_id: str, message_id: str) -> Response:
    data, mime = visit_room.message_image(page_principal(), record_id(visit_id), record_id(message_id))
    resp = Response(data, mimetype=mime)
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Disposition"] = "attachment"  # shown by <img>, never opened as a page
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return resp
