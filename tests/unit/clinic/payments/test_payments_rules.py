"""The payment lifecycle: every (status, event) pair is either a named move or refused by name."""

from __future__ import annotations

import pytest

from clinic.payments.rules import IllegalPaymentTransition, PaymentEvent, PaymentStatus, can, transition

S, E = PaymentStatus, PaymentEvent
ALLOWED = {
    (S.REQUIRES_PAYMENT, E.PAID): S.SUCCEEDED,
    (S.REQUIRES_PAYMENT, E.FAIL): S.FAILED,
    (S.REQUIRES_PAYMENT, E.CANCEL): S.CANCELLED,
    (S.FAILED, E.PAID): S.SUCCEEDED,  # another card after a decline
    (S.FAILED, E.FAIL): S.FAILED,
    (S.FAILED, E.CANCEL): S.CANCELLED,
    (S.SUCCEEDED, E.REFUND): S.REFUNDED,
    (S.CANCELLED, E.REFUND): S.REFUNDED,  # money that arrived after the intent was voided
}


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("event", list(E))
def test_every_move_is_decided(status: PaymentStatus, event: PaymentEvent) -> None:
    expected = ALLOWED.get((status, event))
    assert can(status, event) is (expected is not None)
    if expected is None:
        with pytest.raises(IllegalPaymentTransition) as err:
            transition(status, event)
        assert err.value.code == "illegal_payment_transition" and status.value in err.value.message
    else:
        assert transition(status.value, event) == expected


def test_paid_money_is_never_paid_twice_or_voided() -> None:
    for event in (E.PAID, E.CANCEL, E.FAIL):
        assert not can(S.SUCCEEDED, event)
        assert not can(S.REFUNDED, event)
