"""Pure rules of ratings and complaints."""

from __future__ import annotations

from datetime import date

from identity.rules import age_years

MIN_SCORE, MAX_SCORE = 1, 5
MAX_COMMENT = 1000
MAX_COMPLAINT = 2000
MAX_RESPONSE = 4000


def practice_years(since: date | None, today: date) -> int | None:
    """Whole years of independent practice (shown in the directory), None when unknown."""
    return age_years(since, today) if since is not None else None


def average_rating(total: int, count: int) -> float | None:
    """The directory's rating: the mean score to one decimal, None before the first rating."""
    return round(total / count, 1) if count else None
