"""The Stripe adapter: the real stripe SDK (16.x), pointed at Stripe or, in tests, localstripe.

Only this module talks to the SDK. Stripe 16 objects are not dicts: attributes or
`.to_dict()`. Amounts are in the currency's minor unit (fen for CNY).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe

from clinic.core.errors import DomainError, ServiceUnavailable


class PaymentsUnavailable(ServiceUnavailable):
    code = "payments_unavailable"
    default_message = "The payment provider cannot be reached; nothing was charged or changed. Try again later."


class BadSignature(DomainError):
    status = 400
    code = "bad_signature"
    default_message = "The webhook signature is missing, wrong or too old."


class IntentNotCancellable(Exception):
    """The provider refused to cancel the intent (e.g. it has just succeeded)."""


@dataclass(frozen=True)
class Intent:
    id: str
    client_secret: str
    status: str  # Stripe's own status: requires_payment_method, succeeded, canceled, ...
    amount: int
    currency: str


def _intent(obj: Any) -> Intent:
    return Intent(
        id=str(obj.id),
        client_secret=str(obj.client_secret or ""),
        status=str(obj.status),
        amount=int(obj.amount),
        currency=str(obj.currency),
    )


class StripeGateway:
    def __init__(self, secret_key: str, api_base: str = "", timeout: float = 15.0, max_retries: int = 2) -> None:
        kwargs: dict[str, Any] = {
            "http_client": stripe.new_default_http_client(timeout=timeout),
            "max_network_retries": max_retries,  # safe: every write carries an idempotency key
        }
        if api_base:
            kwargs["base_addresses"] = {"api": api_base}
        self._client = stripe.StripeClient(secret_key, **kwargs)

    def create_intent(self, amount: int, currency: str, metadata: dict[str, str], idempotency_key: str) -> Intent:
        # No `automatic_payment_methods` (localstripe lacks it); card is what we take online.
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "payment_method_types": ["card"],
            "metadata": metadata,
        }
        return _intent(self._call(self._client.v1.payment_intents.create, params, {"idempotency_key": idempotency_key}))

    def retrieve_intent(self, intent_id: str) -> Intent:
        return _intent(self._call(self._client.v1.payment_intents.retrieve, intent_id))

    def cancel_intent(self, intent_id: str, idempotency_key: str) -> Intent:
        try:
            obj = self._client.v1.payment_intents.cancel(intent_id, options={"idempotency_key": idempotency_key})
        except stripe.InvalidRequestError as exc:
            raise IntentNotCancellable(str(exc)) from exc
        except stripe.StripeError as exc:
            raise PaymentsUnavailable() from exc
        return _intent(obj)

    def refund(self, intent_id: str, metadata: dict[str, str], idempotency_key: str) -> str:
        params = {"payment_intent": intent_id, "metadata": metadata}
        refund = self._call(self._client.v1.refunds.create, params, {"idempotency_key": idempotency_key})
        return str(refund.id)

    @staticmethod
    def construct_event(payload: bytes, sig_header: str | None, secret: str, tolerance: int = 300) -> Any:
        """Verify `Stripe-Signature` (HMAC-SHA256 over "<t>.<body>", at most `tolerance` s old)."""
        try:
            return stripe.Webhook.construct_event(payload, sig_header, secret, tolerance=tolerance)
        except (stripe.SignatureVerificationError, ValueError) as exc:  # ValueError: not UTF-8/JSON
            raise BadSignature() from exc

    @staticmethod
    def _call(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except stripe.StripeError as exc:
            raise PaymentsUnavailable() from exc
