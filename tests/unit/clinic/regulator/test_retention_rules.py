"""Records retention: only a closed visit's communication, and only after 3 full years."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clinic.regulator import retention

CLOSED = datetime(2021, 3, 10, 9, 30, tzinfo=UTC)


def test_messages_and_images_go_only_after_three_full_years() -> None:
    for kind in ("message", "message_image", "video_recording"):
        assert not retention.purgeable(kind, CLOSED, CLOSED + timedelta(days=3 * 365))  # one leap day short
        assert not retention.purgeable(kind, CLOSED, datetime(2024, 3, 10, 9, 29, 59, tzinfo=UTC))
        assert retention.purgeable(kind, CLOSED, datetime(2024, 3, 10, 9, 30, tzinfo=UTC))


def test_an_open_visit_keeps_its_messages() -> None:
    assert not retention.purgeable("message", None, datetime(2099, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("kind", ["visit", "visit_note", "diagnosis", "prescription", "audit_entry", "unknown"])
def test_records_are_never_purgeable_even_after_fifteen_years(kind: str) -> None:
    assert not retention.purgeable(kind, CLOSED, CLOSED + timedelta(days=365 * 40))


def test_records_are_kept_at_least_fifteen_years_and_communication_three() -> None:
    by_kind = {r["kind"]: r for r in retention.describe()}
    for kind in ("visit", "visit_note", "diagnosis", "prescription", "audit_entry"):
        assert by_kind[kind]["min_years"] >= 15 and by_kind[kind]["purgeable"] is False
    for kind in ("message", "message_image", "video_recording"):
        assert by_kind[kind]["min_years"] >= 3


def test_leap_day_closes_count_to_the_first_of_march() -> None:
    leap = datetime(2020, 2, 29, 12, 0, tzinfo=UTC)
    assert retention.keep_until("message", leap) == datetime(2023, 3, 1, 0, 0, tzinfo=UTC)
    assert not retention.purgeable("message", leap, datetime(2023, 2, 28, 23, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    "now",
    [
        datetime(2024, 2, 29, 8, 0, tzinfo=UTC),
        datetime(2024, 3, 1, 0, 0, tzinfo=UTC),
        datetime(2023, 3, 1, 12, 0, tzinfo=UTC),
        datetime(2023, 3, 1, 0, 0, tzinfo=UTC),
        datetime(2023, 2, 28, 23, 0, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
    ],
)
def test_the_database_cutoff_agrees_with_the_rule(now: datetime) -> None:
    """The purge's SQL cutoff never selects a message the pure rule would keep."""
    cut = retention.cutoff(now)
    for minutes in range(-4 * 24 * 60, 4 * 24 * 60 + 1, 30):
        closed = cut + timedelta(minutes=minutes)
        if closed <= cut:
            assert retention.purgeable("message", closed, now), (closed, now)
