"""A referral's direction against the two institutions' levels (2018 measures Art. 21–23):
up from a lower level to a higher one, down from a higher one to a lower one."""

from __future__ import annotations

import pytest

from clinic.telemedicine.rules import direction_between, direction_violations


@pytest.mark.parametrize(
    ("sender", "receiver", "expected"),
    [
        ("三级", "基层", "down"),
        ("三级", "二级", "down"),
        ("二级", "一级", "down"),
        ("基层", "三级", "up"),
        ("一级", "二级", "up"),
        ("二级", "三级", "up"),
        ("三级", "三级", None),
        ("一级", "基层", None),  # 基层 is the level of 一级 institutions and community centres
        ("", "三级", None),
    ],
)
def test_the_direction_follows_the_levels(sender: str, receiver: str, expected: str | None) -> None:
    assert direction_between(sender, receiver) == expected


def test_a_sensible_referral_has_no_violation() -> None:
    assert direction_violations("down", "三级", "基层") == []
    assert direction_violations("up", "基层", "三级") == []


@pytest.mark.parametrize(
    ("direction", "sender", "receiver", "says"),
    [
        ("up", "三级", "基层", "referral up goes from a lower-level"),
        ("down", "基层", "三级", "referral down goes from a higher-level"),
        ("down", "三级", "三级", "same level"),
        ("down", "", "基层", "level is not set"),
        ("sideways", "三级", "基层", "up or down"),
    ],
)
def test_a_referral_that_makes_no_sense_is_refused_by_name(
    direction: str, sender: str, receiver: str, says: str
) -> None:
    (v,) = direction_violations(direction, sender, receiver)
    assert v.code == "bad_direction" and says in v.message
