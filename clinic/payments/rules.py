"""The payment lifecycle (pure: no Flask, no session).

requires_payment ──paid──▶ succeeded ──refund──▶ refunded
      │  ▲  └────fail──▶ failed (the customer may try another card: paid/fail/cancel again)
      └──┴─────cancel──▶ cancelled ──refund──▶ refunded (money that arrived after the intent
                                                 was voided is given back at once)
"""

from __future__ import annotations

import enum

from clinic.core.errors import Conflict


class PaymentStatus(enum.StrEnum):
    REQUIRES_PAYMENT = "requires_payment"
    SUCCEEDED = "succeeded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    FAILED = "failed"


class PaymentEvent(enum.StrEnum):
    PAID = "paid"
    FAIL = "fail"
    CANCEL = "cancel"
    REFUND = "refund"


_MOVES: dict[tuple[PaymentStatus, PaymentEvent], PaymentStatus] = {
    (PaymentStatus.REQUIRES_PAYMENT, PaymentEvent.PAID): PaymentStatus.SUCCEEDED,
    (PaymentStatus.REQUIRES_PAYMENT, PaymentEvent.FAIL): PaymentStatus.FAILED,
    (PaymentStatus.REQUIRES_PAYMENT, PaymentEvent.CANCEL): PaymentStatus.CANCELLED,
    (PaymentStatus.FAILED, PaymentEvent.PAID): PaymentStatus.SUCCEEDED,
    (PaymentStatus.FAILED, PaymentEvent.FAIL): PaymentStatus.FAILED,
    (PaymentStatus.FAILED, PaymentEvent.CANCEL): PaymentStatus.CANCELLED,
    (PaymentStatus.SUCCEEDED, PaymentEvent.REFUND): PaymentStatus.REFUNDED,
    (PaymentStatus.CANCELLED, PaymentEvent.REFUND): PaymentStatus.REFUNDED,
}

OPEN = frozenset({PaymentStatus.REQUIRES_PAYMENT, PaymentStatus.FAILED})


class IllegalPaymentTransition(Conflict):
    code = "illegal_payment_transition"


def transition(status: PaymentStatus | str, event: PaymentEvent) -> PaymentStatus:
    """The one place a payment changes status; an illegal move is refused by name."""
    current = PaymentStatus(status)
    nxt = _MOVES.get((current, event))
    if nxt is None:
        raise IllegalPaymentTransition(f"A payment that is {current.value} cannot {event.value}.")
    return nxt


def can(status: PaymentStatus | str, event: PaymentEvent) -> bool:
    return (PaymentStatus(status), event) in _MOVES
