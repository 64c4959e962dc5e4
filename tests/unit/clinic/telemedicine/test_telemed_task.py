"""The FHIR Task lifecycle shared by remote consultations and referrals (issue 19)."""

from __future__ import annotations

import pytest

from clinic.telemedicine.rules import IllegalTaskTransition, TaskEvent, TaskStatus, transition

S, E = TaskStatus, TaskEvent


def test_the_happy_paths_of_a_consultation_and_a_referral() -> None:
    s = transition(S.REQUESTED, E.ACCEPT)
    assert s is S.ACCEPTED
    s = transition(s, E.START)
    assert s is S.IN_PROGRESS
    assert transition(s, E.COMPLETE) is S.COMPLETED
    assert transition(S.ACCEPTED, E.COMPLETE) is S.COMPLETED  # an opinion without questions back


@pytest.mark.parametrize(
    ("status", "event", "expected"),
    [
        (S.REQUESTED, E.REJECT, S.REJECTED),
        (S.REQUESTED, E.CANCEL, S.CANCELLED),
        (S.REQUESTED, E.FAIL, S.FAILED),
        (S.ACCEPTED, E.CANCEL, S.CANCELLED),
        (S.IN_PROGRESS, E.FAIL, S.FAILED),
    ],
)
def test_refusals_withdrawals_and_failures_end_it(status: TaskStatus, event: TaskEvent, expected: TaskStatus) -> None:
    assert transition(status, event) is expected


@pytest.mark.parametrize("ended", [S.COMPLETED, S.REJECTED, S.CANCELLED, S.FAILED])
@pytest.mark.parametrize("event", list(TaskEvent))
def test_nothing_moves_an_ended_request(ended: TaskStatus, event: TaskEvent) -> None:
    with pytest.raises(IllegalTaskTransition) as err:
        transition(ended, event)
    assert err.value.status == 409 and err.value.code == "illegal_transition"
    assert err.value.extra == {"status": ended.value, "event": event.value}


def test_a_request_cannot_be_completed_before_anyone_accepted_it() -> None:
    with pytest.raises(IllegalTaskTransition):
        transition(S.REQUESTED, E.COMPLETE)
    with pytest.raises(IllegalTaskTransition):
        transition(S.ACCEPTED, E.ACCEPT)
