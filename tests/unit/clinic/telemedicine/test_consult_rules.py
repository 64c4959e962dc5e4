"""Remote consultation's pure rules (issue 19 items 3, 5): the agreement's title requirement
(Jilin measures Art. 14), the Beijing month a consultation is settled in, and the
reconciliation of two institutions' monthly statements (Jilin Art. 41–44)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clinic.telemedicine.rules import (
    Statement,
    StatementLine,
    meets_title,
    reconcile,
    shares,
    title_rank,
    valid_month,
)
from clinic.telemedicine.settlements import month_of


@pytest.mark.parametrize(
    ("title", "required", "ok"),
    [
        ("主任医师", "副主任医师", True),
        ("副主任医师", "副主任医师", True),
        ("主治医师", "副主任医师", False),
        ("住院医师", "主治医师", False),
        ("", "副主任医师", False),  # no title recorded: not enough
        ("药师", "副主任医师", False),  # not a physician's title
        ("主治医师", "", True),  # the agreement asks for none
        ("主治医师", None, True),
    ],
)
def test_a_title_at_or_above_the_agreements_requirement(title: str, required: str | None, ok: bool) -> None:
    assert meets_title(title, required) is ok


def test_titles_rank_in_order() -> None:
    assert title_rank("住院医师") < title_rank("主治医师") < title_rank("副主任医师") < title_rank("主任医师")


def test_a_consultation_completed_late_on_the_last_utc_day_is_settled_in_the_beijing_month() -> None:
    assert month_of(datetime(2026, 11, 30, 17, 0, tzinfo=UTC)) == "2026-12"  # 01:00 on 1 December in Beijing
    assert month_of(datetime(2026, 11, 30, 15, 59, tzinfo=UTC)) == "2026-11"


@pytest.mark.parametrize(("text", "ok"), [("2026-12", True), ("2026-13", False), ("2026-1", False), ("26-12", False)])
def test_months_are_yyyy_mm(text: str, ok: bool) -> None:
    assert valid_month(text) is ok


def _line(task: str, we_invited: bool, fee: int = 20000, split: int = 20) -> StatementLine:
    inviting, invited = shares(fee, split)
    return StatementLine(task, we_invited, fee, inviting, invited)


def test_statements_that_agree_match_each_one_seen_from_its_own_side() -> None:
    ours = Statement((_line("t1", True), _line("t2", False, fee=30000)))
    theirs = Statement((_line("t2", True, fee=30000), _line("t1", False)))  # the partner invited t2
    r = reconcile(ours, theirs)
    assert r.matches and (r.count, r.total_fen, r.only_here, r.only_partner, r.differing) == (0, 0, [], [], [])
    assert ours.owed_to_partner_fen == 16000 and ours.owed_by_partner_fen == 24000


def test_a_missing_consultation_and_a_different_fee_are_shown() -> None:
    ours = Statement((_line("t1", True), _line("t2", True), _line("t3", True)))
    theirs = Statement((_line("t1", False), _line("t2", False, fee=25000), _line("t4", False)))
    r = reconcile(ours, theirs)
    assert not r.matches
    assert r.only_here == ["t3"] and r.only_partner == ["t4"] and r.differing == ["t2"]
    assert r.count == 0 and r.total_fen == -5000
    assert r.invited_share_fen == 16000 - 20000


def test_the_same_consultation_claimed_as_inviting_by_both_sides_differs() -> None:
    r = reconcile(Statement((_line("t1", True),)), Statement((_line("t1", True),)))
    assert not r.matches and r.differing == ["t1"]


def test_the_invited_side_gets_the_odd_fen() -> None:
    assert shares(10001, 20) == (2000, 8001)
    s = Statement((_line("t1", True, fee=10001),))
    assert (s.count, s.total_fen, s.inviting_share_fen, s.invited_share_fen) == (1, 10001, 2000, 8001)
