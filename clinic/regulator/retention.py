"""Records retention (pure): what may be purged at a given moment, and what never may.

The 2022 supervision rules (互联网诊疗监管细则（试行）): medical records of online care
(visits, their notes, diagnoses, prescriptions) are kept at least 15 years; the
communication of a visit (chat messages, images, audio and video) at least 3 years.
This clinic keeps the long-lived records for ever: they have NO delete path at all
(no service, command or endpoint deletes them). Only the communication of a visit is
purgeable, and only once 3 full years have passed since the visit closed; a visit that
has not closed keeps all of it. The audit trail is never purged (its hash chain would
break, and it is the proof that the process is traceable, Art. 24).

Audio and video: visits use live Twilio Video rooms; no recording is stored here, so
there is nothing of them to keep or purge. Were recordings added, they take the
"communication" rule below.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True)
class Rule:
    kind: str
    min_years: int
    purgeable: bool
    counted_from: str


RULES: dict[str, Rule] = {
    "visit": Rule("visit", 15, False, "visit closed"),
    "visit_note": Rule("visit_note", 15, False, "visit closed"),
    "diagnosis": Rule("diagnosis", 15, False, "confirmed"),
    "prescription": Rule("prescription", 15, False, "issued"),
    "audit_entry": Rule("audit_entry", 15, False, "recorded"),
    "message": Rule("message", 3, True, "visit closed"),
    "message_image": Rule("message_image", 3, True, "visit closed"),
    "video_recording": Rule("video_recording", 3, True, "visit closed"),
}

COMMUNICATION_YEARS = RULES["message"].min_years


def add_years(when: datetime, years: int) -> datetime:
    """The same moment `years` later; 29 February becomes the start of 1 March when the
    target year has no 29 February (never earlier, and order-preserving)."""
    try:
        return when.replace(year=when.year + years)
    except ValueError:  # 29 Feb into a non-leap year
        return when.replace(year=when.year + years, month=3, day=1, hour=0, minute=0, second=0, microsecond=0)


def keep_until(kind: str, start: datetime) -> datetime:
    return add_years(start, RULES[kind].min_years)


def purgeable(kind: str, visit_closed_at: datetime | None, now: datetime) -> bool:
    """May a record of this kind be removed at `now`? Only communication of a closed
    visit whose retention period has fully passed; never a medical record."""
    rule = RULES.get(kind)
    if rule is None or not rule.purgeable or visit_closed_at is None:
        return False
    return now >= keep_until(kind, visit_closed_at)


def cutoff(now: datetime, years: int = COMMUNICATION_YEARS) -> datetime:
    """Visits closed at or before this moment have passed the communication period at `now`."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # now is 29 Feb: the whole of 28 Feb `years` earlier has passed its period
        return now.replace(year=now.year - years, day=28, hour=23, minute=59, second=59, microsecond=999999)


def describe() -> list[dict[str, object]]:
    return [
        {"kind": r.kind, "min_years": r.min_years, "purgeable": r.purgeable, "counted_from": r.counted_from}
        for r in RULES.values()
    ]


def as_of(day: date) -> datetime:
    from datetime import UTC, time

    return datetime.combine(day, time.min, tzinfo=UTC)
