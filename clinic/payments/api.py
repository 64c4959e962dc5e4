"""The Stripe webhook: POST /webhooks/stripe and POST /api/v1/webhooks/stripe (one handler).

No Bearer token: the `Stripe-Signature` header is the authentication. A forged, altered
or stale (over 5 minutes) delivery is 400 `bad_signature` and changes nothing; a
delivery of an event already applied answers 200 with `duplicate: true`.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from clinic.core.api import ApiRouter, ResponseModel, error_response
from clinic.core.audit import Actor, set_actor
from clinic.core.errors import DomainError, NotFound
from clinic.core.web import handle_refusal
from clinic.payments.services import StripePayments

router = ApiRouter("payments")

STRIPE = "stripe"


class WebhookOut(ResponseModel):
    received: bool
    event_id: str
    type: str
    duplicate: bool


def _port() -> StripePayments:
    port = current_app.extensions.get("payments")
    if not isinstance(port, StripePayments):
        raise NotFound("Payments are off.")
    return port


@router.post(
    "/webhooks/stripe",
    summary="Stripe events (signed with the Stripe-Signature header; no Bearer token). Also served at /webhooks/stripe",
    response=WebhookOut,
    auth="custom",
    errors={400: ["bad_signature", "invalid_payload"], 404: ["not_found"], 503: ["payments_unavailable"]},
)
def stripe_webhook() -> WebhookOut:
    set_actor(Actor(id=STRIPE, role="system", client_ip=request.remote_addr))
    port = _port()
    result = port.handle_webhook(request.get_data(cache=True), request.headers.get("Stripe-Signature"))
    return WebhookOut(received=True, event_id=result.event_id, type=result.type, duplicate=result.duplicate)


# The same handler outside /api/v1 (API.md names this path), answering the same JSON envelope.
bare = Blueprint("stripe_webhook", __name__)


@bare.post("/webhooks/stripe")
def stripe_webhook_bare() -> Response:
    try:
        out = stripe_webhook()
    except DomainError as err:
        return error_response(err, handle_refusal(err))
    return Response(out.model_dump_json(), status=200, mimetype="application/json")
