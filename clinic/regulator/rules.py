"""Pure rules of the regulators' interface: time windows, paging, scopes, de-identification.

No Flask, no session: plain values in, plain values (or a named error) out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# Art. 24 of the 2018 measures: a data interface for the regulators. They read in windows
# of at most MAX_WINDOW_DAYS, a page of PAGE_SIZE resources at a time.
MAX_WINDOW_DAYS = 31
PAGE_SIZE = 50
SCOPED_TOKEN_SECONDS = 300

SCOPE_DEIDENTIFIED = "read:deidentified"
SCOPE_IDENTIFIED = "read:identified"
KNOWN_SCOPES = (SCOPE_DEIDENTIFIED, SCOPE_IDENTIFIED)
DEFAULT_SCOPES = (SCOPE_DEIDENTIFIED,)


class WindowError(ValueError):
    """A time window that cannot be served; the message says why."""


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    def as_dict(self) -> dict[str, str]:
        return {"since": rfc3339(self.since), "until": rfc3339(self.until)}


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_instant(raw: str, name: str) -> datetime:
    """An RFC 3339 date-time WITH an offset (e.g. 2025-01-31T00:00:00Z), as aware UTC."""
    text = raw.strip()
    if "T" not in text and "t" not in text:
        raise WindowError(f"'{name}' must be an RFC 3339 date-time such as 2025-01-31T00:00:00Z, not {raw[:40]!r}.")
    try:
        value = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise WindowError(f"'{name}' is not an RFC 3339 date-time (e.g. 2025-01-31T00:00:00Z): {raw[:40]!r}.") from None
    if value.tzinfo is None:
        raise WindowError(f"'{name}' needs a time-zone offset (Z or +08:00): {raw[:40]!r}.")
    return value.astimezone(UTC)


def parse_window(since: str | None, until: str | None, now: datetime, max_days: int = MAX_WINDOW_DAYS) -> Window:
    """The window [since, until). Either end may be left out: `until` defaults to now,
    `since` to `until` minus the longest window. Refused: malformed, reversed, empty,
    longer than `max_days`, or starting in the future."""
    end = parse_instant(until, "until") if until else now.astimezone(UTC)
    start = parse_instant(since, "since") if since else end - timedelta(days=max_days)
    if start >= end:
        raise WindowError("'since' must be before 'until'.")
    if end - start > timedelta(days=max_days):
        raise WindowError(f"The time window is longer than {max_days} days; ask for it in parts.")
    if start > now:
        raise WindowError("The time window starts in the future.")
    return Window(start, end)


@dataclass(frozen=True)
class PageInfo:
    page: int
    pages: int
    total: int
    offset: int
    size: int

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def has_prev(self) -> bool:
        return self.page > 1


class PageOutOfRange(ValueError):
    pass


def page_info(page: int, total: int, size: int = PAGE_SIZE) -> PageInfo:
    """Page 1 always exists (empty when there is nothing); past the last page is refused."""
    if page < 1:
        raise PageOutOfRange("Pages are numbered from 1.")
    pages = max(1, math.ceil(total / size))
    if page > pages:
        raise PageOutOfRange(f"Page {page} is past the last page ({pages}; {total} resources in this window).")
    return PageInfo(page=page, pages=pages, total=total, offset=(page - 1) * size, size=size)


def grantable_scopes(requested: list[str], allowed: list[str]) -> tuple[list[str], list[str]]:
    """(granted, refused): a scope is granted only if the account is allowed it."""
    granted = [s for s in dict.fromkeys(requested) if s in allowed and s in KNOWN_SCOPES]
    refused = [s for s in dict.fromkeys(requested) if s not in granted]
    return granted, refused


def identified(scopes: list[str] | tuple[str, ...]) -> bool:
    return SCOPE_IDENTIFIED in scopes


def birth_year(born: date) -> str:
    return f"{born.year:04d}"


def fhir_gender(sex: str) -> str:
    return {"M": "male", "F": "female", "male": "male", "female": "female"}.get(sex, "unknown")
