"""Payment use cases: start a payment, refund or void it, apply the provider's events once.

`StripePayments` is the `PaymentsPort` the clinic domains call (clinic.visits.lifecycle):
`start()` when a fee is due, `refund()` when the thing paid for is cancelled. What a
successful payment means is registered per purpose by the app (`register_purpose`), so
this package knows nothing about visits or prescriptions.

Services flush and audit; the request's commit point commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from clinic.core import audit
from clinic.core.db import db, new_id, utcnow
from clinic.core.errors import DomainError
from clinic.payments.gateway import IntentNotCancellable, StripeGateway
from clinic.payments.models import Payment, ProcessedEvent
from clinic.payments.rules import OPEN, PaymentEvent, PaymentStatus, transition

log = logging.getLogger(__name__)

CURRENCY = "cny"

OnPaid = Callable[[uuid.UUID], object]
_purposes: dict[str, OnPaid] = {}


def register_purpose(purpose: str, on_paid: OnPaid) -> None:
    """What a succeeded payment of `purpose` does (called with the subject id, once)."""
    _purposes[purpose] = on_paid


def registered_purposes() -> frozenset[str]:
    return frozenset(_purposes)


class InvalidPayload(DomainError):
    status = 400
    code = "invalid_payload"
    default_message = "The webhook body is not a Stripe event."


@dataclass(frozen=True)
class StartedPayment:
    """What the client needs to pay a fee: the PaymentIntent and its client secret."""

    payment_intent_id: str
    client_secret: str
    amount_fen: int
    currency: str


@dataclass(frozen=True)
class WebhookResult:
    event_id: str
    type: str
    duplicate: bool


def _move(payment: Payment, event: PaymentEvent) -> None:
    payment.status = transition(payment.status, event)


def _payments_of(purpose: str, subject_id: uuid.UUID) -> list[Payment]:
    query = (
        select(Payment)
        .where(Payment.purpose == purpose, Payment.subject_id == subject_id)
        .order_by(Payment.created_at.desc())
        .with_for_update()
    )
    return list(db.session.scalars(query))


def _by_intent(intent_id: str) -> Payment | None:
    return db.session.scalars(select(Payment).where(Payment.provider_ref == intent_id).with_for_update()).first()


def _record_once(event_id: str, event_type: str) -> bool:
    """Record the event as processed; False when it already is. The primary key settles a
    race between two deliveries of one event: the second insert waits for the first
    delivery's transaction and then does nothing (no refused flush, so nothing to roll
    back here; the request's commit point commits the record with the event's effects, or
    neither)."""
    session = db.session()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(ProcessedEvent)
        .values(event_id=event_id, provider="stripe", type=event_type, received_at=utcnow())
        .on_conflict_do_nothing(index_elements=[ProcessedEvent.event_id])
        .returning(ProcessedEvent.event_id)
    )
    return session.scalar(stmt) is not None


class StripePayments:
    """The PaymentsPort backed by Stripe PaymentIntents."""

    def __init__(self, gateway: StripeGateway, webhook_secret: str, tolerance: int = 300) -> None:
        self.gateway = gateway
        self.webhook_secret = webhook_secret
        self.tolerance = tolerance

    # --- called by the domains -------------------------------------------------------

    def start(self, purpose: str, subject_id: uuid.UUID, amount_fen: int, description: str) -> StartedPayment:
        """Create a PaymentIntent for the fee; answer what the client needs to pay it."""
        if purpose not in _purposes:
            raise ValueError(f"payment purpose {purpose!r} is not registered")
        if amount_fen <= 0:
            raise ValueError("a payment needs a positive amount")
        session = db.session()
        payment_id = new_id()
        intent = self.gateway.create_intent(
            amount_fen,
            CURRENCY,
            metadata={
                "purpose": purpose,
                "subject_id": str(subject_id),
                "payment_id": str(payment_id),
                # Stripe takes `description` too; localstripe refuses it, so it travels here.
                "description": description[:500],
            },
            idempotency_key=f"payment-{payment_id}",
        )
        payment = Payment(
            id=payment_id,
            purpose=purpose,
            subject_id=subject_id,
            amount_fen=amount_fen,
            currency=CURRENCY,
            provider="stripe",
            provider_ref=intent.id,
            status=PaymentStatus.REQUIRES_PAYMENT,
        )
        session.add(payment)
        session.flush()
        audit.record(
            session,
            "payment.started",
            subject_type="payment",
            subject_id=payment.id,
            detail={"purpose": purpose, "subject": str(subject_id), "amount_fen": amount_fen, "intent": intent.id},
        )
        return StartedPayment(
            payment_intent_id=intent.id,
            client_secret=intent.client_secret,
            amount_fen=amount_fen,
            currency=CURRENCY,
        )

    def refund(self, purpose: str, subject_id: uuid.UUID, reason: str) -> None:
        """Give the fee back: refund what was paid, void what was not (at the provider first)."""
        for payment in _payments_of(purpose, subject_id):
            if payment.status == PaymentStatus.SUCCEEDED:
                self._refund(payment, reason)
            elif payment.status in OPEN:
                self._void(payment, reason)

    def _refund(self, payment: Payment, reason: str) -> None:
        payment.refund_ref = self.gateway.refund(
            payment.provider_ref,
            metadata={"reason": reason[:500], "payment_id": str(payment.id)},
            idempotency_key=f"refund-{payment.id}",
        )
        _move(payment, PaymentEvent.REFUND)
        payment.refunded_at = utcnow()
        audit.record(
            db.session(),
            "payment.refunded",
            subject_type="payment",
            subject_id=payment.id,
            detail={
                "purpose": payment.purpose,
                "subject": str(payment.subject_id),
                "amount_fen": payment.amount_fen,
                "refund": payment.refund_ref,
                "reason": reason[:200],
            },
        )

    def _void(self, payment: Payment, reason: str) -> None:
        try:
            intent = self.gateway.cancel_intent(payment.provider_ref, idempotency_key=f"cancel-{payment.id}")
        except IntentNotCancellable:
            intent = self.gateway.retrieve_intent(payment.provider_ref)
        if intent.status == "succeeded":
            # Paid a moment ago (its webhook not here yet): record the payment, then refund it.
            _move(payment, PaymentEvent.PAID)
            payment.paid_at = utcnow()
            self._refund(payment, reason)
            return
        if intent.status != "canceled":
            log.warning("intent %s could not be cancelled (status %s)", intent.id, intent.status)
        _move(payment, PaymentEvent.CANCEL)
        audit.record(
            db.session(),
            "payment.cancelled",
            subject_type="payment",
            subject_id=payment.id,
            detail={"purpose": payment.purpose, "subject": str(payment.subject_id), "reason": reason[:200]},
        )

    # --- the provider's webhook ------------------------------------------------------

    def handle_webhook(self, payload: bytes, sig_header: str | None) -> WebhookResult:
        """Verify, record the event id once, apply it. A replay answers `duplicate` and changes nothing."""
        event = self.gateway.construct_event(payload, sig_header, self.webhook_secret, self.tolerance)
        event_id, event_type = str(getattr(event, "id", "") or ""), str(getattr(event, "type", "") or "")
        if not event_id or not event_type:
            raise InvalidPayload()
        if db.session.get(ProcessedEvent, event_id) is not None or not _record_once(event_id, event_type):
            return WebhookResult(event_id, event_type, duplicate=True)
        obj = event.data.object.to_dict() if getattr(event, "data", None) is not None else {}
        handler = _HANDLERS.get(event_type)
        if handler is not None:
            handler(self, event_id, obj)
        return WebhookResult(event_id, event_type, duplicate=False)

    def _intent_succeeded(self, event_id: str, obj: dict[str, Any]) -> None:
        payment = _by_intent(str(obj.get("id", "")))
        if payment is None:
            return _unknown(event_id, obj)
        session = db.session()
        if (
            int(obj.get("amount") or 0) != payment.amount_fen
            or str(obj.get("currency", "")).lower() != payment.currency
        ):
            audit.record(
                session,
                "payment.mismatch",
                subject_type="payment",
                subject_id=payment.id,
                detail={"event": event_id, "amount": obj.get("amount"), "currency": obj.get("currency")},
            )
            return None
        if payment.status in OPEN:
            _move(payment, PaymentEvent.PAID)
            payment.paid_at = utcnow()
            audit.record(
                session,
                "payment.succeeded",
                subject_type="payment",
                subject_id=payment.id,
                detail={"event": event_id, "purpose": payment.purpose, "subject": str(payment.subject_id)},
            )
            on_paid = _purposes.get(payment.purpose)
            if on_paid is None:
                log.error("no handler registered for payment purpose %s", payment.purpose)
            else:
                on_paid(payment.subject_id)
        elif payment.status == PaymentStatus.CANCELLED:
            # The intent was voided (the subject was cancelled) but the money arrived: give it back.
            payment.paid_at = utcnow()
            self._refund(payment, "paid after cancellation")
        return None

    def _intent_failed(self, event_id: str, obj: dict[str, Any]) -> None:
        payment = _by_intent(str(obj.get("id", "")))
        if payment is None:
            return _unknown(event_id, obj)
        if payment.status in OPEN:
            _move(payment, PaymentEvent.FAIL)
            error = obj.get("last_payment_error") or {}
            payment.failure_code = str(error.get("code") or "payment_failed")[:64]
            audit.record(
                db.session(),
                "payment.failed",
                subject_type="payment",
                subject_id=payment.id,
                detail={"event": event_id, "code": payment.failure_code},
            )
        return None

    def _intent_canceled(self, event_id: str, obj: dict[str, Any]) -> None:
        payment = _by_intent(str(obj.get("id", "")))
        if payment is None:
            return _unknown(event_id, obj)
        if payment.status in OPEN:
            _move(payment, PaymentEvent.CANCEL)
            audit.record(
                db.session(),
                "payment.cancelled",
                subject_type="payment",
                subject_id=payment.id,
                detail={"event": event_id},
            )
        return None

    def _charge_refunded(self, event_id: str, obj: dict[str, Any]) -> None:
        """A refund made outside the clinic (the provider's dashboard) is recorded too."""
        payment = _by_intent(str(obj.get("payment_intent") or ""))
        if payment is None:
            return _unknown(event_id, obj)
        if payment.status == PaymentStatus.SUCCEEDED and obj.get("refunded"):
            _move(payment, PaymentEvent.REFUND)
            payment.refunded_at = utcnow()
            audit.record(
                db.session(),
                "payment.refunded",
                subject_type="payment",
                subject_id=payment.id,
                detail={"event": event_id, "source": "provider"},
            )
        return None


def _unknown(event_id: str, obj: dict[str, Any]) -> None:
    audit.record(
        db.session(),
        "payment.event_unmatched",
        subject_type="provider_event",
        subject_id=event_id,
        detail={"object": str(obj.get("id", ""))[:255]},
    )


_HANDLERS: dict[str, Callable[[StripePayments, str, dict[str, Any]], None]] = {
    "payment_intent.succeeded": StripePayments._intent_succeeded,
    "payment_intent.payment_failed": StripePayments._intent_failed,
    "payment_intent.canceled": StripePayments._intent_canceled,
    "charge.refunded": StripePayments._charge_refunded,
}


def payment_of(purpose: str, subject_id: uuid.UUID) -> Payment | None:
    """The newest payment for a subject (for pages and tests)."""
    return db.session.scalars(
        select(Payment)
        .where(Payment.purpose == purpose, Payment.subject_id == subject_id)
        .order_by(Payment.created_at.desc())
    ).first()
