"""Pure rules of the regulators' interface: time windows, paging, scopes, de-identification."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from clinic.regulator import rules

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def test_window_defaults_to_the_last_31_days() -> None:
    w = rules.parse_window(None, None, NOW)
    assert w.until == NOW and w.since == NOW - timedelta(days=31)


def test_window_accepts_z_and_offsets_and_normalizes_to_utc() -> None:
    w = rules.parse_window("2025-06-01T08:00:00+08:00", "2025-06-02T00:00:00Z", NOW)
    assert w.since == datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
    assert w.as_dict() == {"since": "2025-06-01T00:00:00Z", "until": "2025-06-02T00:00:00Z"}


def test_until_alone_sets_since_back_by_the_longest_window() -> None:
    w = rules.parse_window(None, "2025-03-01T00:00:00Z", NOW)
    assert w.since == datetime(2025, 1, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    "since,until,fragment",
    [
        ("yesterday", None, "RFC 3339"),
        ("2025-06-01", None, "date-time"),  # a date is not a date-time
        ("2025-06-01T00:00:00", None, "offset"),  # no zone
        ("2025-13-01T00:00:00Z", None, "RFC 3339"),
        ("2025-06-10T00:00:00Z", "2025-06-01T00:00:00Z", "before"),  # reversed
        ("2025-06-01T00:00:00Z", "2025-06-01T00:00:00Z", "before"),  # empty
        ("2025-01-01T00:00:00Z", "2025-03-01T00:00:00Z", "31 days"),  # too large
        ("2025-07-01T00:00:00Z", "2025-07-02T00:00:00Z", "future"),
    ],
)
def test_bad_windows_are_refused_with_the_reason(since: str, until: str | None, fragment: str) -> None:
    with pytest.raises(rules.WindowError, match=fragment):
        rules.parse_window(since, until, NOW)


def test_exactly_the_longest_window_is_allowed() -> None:
    rules.parse_window("2025-05-01T00:00:00Z", "2025-06-01T00:00:00Z", NOW)  # 31 days
    with pytest.raises(rules.WindowError):
        rules.parse_window("2025-05-01T00:00:00Z", "2025-06-01T00:00:01Z", NOW)


def test_paging() -> None:
    p = rules.page_info(1, 0)
    assert (p.pages, p.offset, p.has_next, p.has_prev) == (1, 0, False, False)  # an empty first page exists
    p = rules.page_info(2, 120)
    assert (p.pages, p.offset, p.has_next, p.has_prev) == (3, 50, True, True)
    assert rules.page_info(3, 120).offset == 100
    with pytest.raises(rules.PageOutOfRange, match="past the last page"):
        rules.page_info(4, 120)
    with pytest.raises(rules.PageOutOfRange):
        rules.page_info(0, 120)


def test_scopes_are_granted_only_when_allowed() -> None:
    assert rules.grantable_scopes(["read:deidentified"], ["read:deidentified"]) == (["read:deidentified"], [])
    assert rules.grantable_scopes(["read:identified"], ["read:deidentified"]) == ([], ["read:identified"])
    granted, refused = rules.grantable_scopes(["read:identified", "read:identified"], list(rules.KNOWN_SCOPES))
    assert granted == ["read:identified"] and refused == []
    assert rules.grantable_scopes(["admin:all"], ["admin:all"]) == ([], ["admin:all"])  # unknown never granted
    assert rules.identified(("read:identified",)) and not rules.identified(("read:deidentified",))


def test_deidentified_patient_keeps_birth_year_and_sex_only() -> None:
    assert rules.birth_year(date(1980, 5, 17)) == "1980"
    assert rules.birth_year(date(7, 1, 1)) == "0007"
    assert rules.fhir_gender("male") == "male" and rules.fhir_gender("female") == "female"
    assert rules.fhir_gender("") == "unknown"
