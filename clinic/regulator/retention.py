"""Records retention (pure): what may be purged at a given moment, and what never may.

The 2022 supervision rules (互联网诊疗监管细则（试行）): medical records of online care
(visits, their notes, diagnoses, prescriptions) are kept at least 15 years; the
communication of a visit (chat messages, images, audio and video) at least 3 years.
This clinic keeps the long-lived records for ever: they have NO delete path at all
(no service, command or endpoint deletes them). Only the communication of a visit is
purgeable, and only once 3 full years have passed since the visit closed; a visit that
has not closed keeps all of it. The audit trail is never purged (its hash chain would
break, and it is the proof that the process is traceable, Art. 24).

Between institutions (issue 19; the 2014 telemedicine opinions, the Jilin measures): a
remote consultation's request, its attachments, the questions written back, the signed
opinion, the patient's consent to it, a referral and the diagnoses it carries, and every
signed message exchanged with a partner institution are medical records of the same
standing: 15 years at least, no delete path. The cooperation agreements are kept as long
(the legal basis of every message), the settlement statements between institutions as
accounting records (会计档案管理办法: 30 years). `TABLES` names the table of each kind.

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
    "consultation": Rule("consultation", 15, False, "consultation closed"),
    "consultation_consent": Rule("consultation_consent", 15, False, "accepted"),
    "consultation_attachment": Rule("consultation_attachment", 15, False, "consultation closed"),
    "consultation_note": Rule("consultation_note", 15, False, "consultation closed"),
    "consultation_opinion": Rule("consultation_opinion", 15, False, "signed"),
    "referral": Rule("referral", 15, False, "referral closed"),
    "referral_diagnosis": Rule("referral_diagnosis", 15, False, "referral closed"),
    "federation_message": Rule("federation_message", 15, False, "sent or received"),
    "partner_agreement": Rule("partner_agreement", 15, False, "agreement ended"),
    "settlement_statement": Rule("settlement_statement", 30, False, "exchanged"),
    "message": Rule("message", 3, True, "visit closed"),
    "message_image": Rule("message_image", 3, True, "visit closed"),
    "video_recording": Rule("video_recording", 3, True, "visit closed"),
}

COMMUNICATION_YEARS = RULES["message"].min_years

# Where each kind is stored. Every telemedicine table (tm_*) is here: a new one must be
# given its kind (tests/unit/clinic/regulator/test_retention_rules.py checks the metadata against this).
TABLES: dict[str, str] = {
    "visits": "visit",
    "visit_notes": "visit_note",
    "diagnoses": "diagnosis",
    "prescriptions": "prescription",
    "prescription_items": "prescription",
    "audit_entries": "audit_entry",
    "visit_messages": "message",
    "tm_consultations": "consultation",
    "tm_consult_consents": "consultation_consent",
    "tm_consult_attachments": "consultation_attachment",
    "tm_consult_notes": "consultation_note",
    "tm_consult_opinions": "consultation_opinion",
    "tm_referrals": "referral",
    "tm_referral_diagnoses": "referral_diagnosis",
    "tm_messages": "federation_message",
    "tm_partners": "partner_agreement",
    "tm_settlement_statements": "settlement_statement",
}


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


def kind_of_table(table: str) -> str | None:
    return TABLES.get(table)


def describe() -> list[dict[str, object]]:
    return [
        {
            "kind": r.kind,
            "min_years": r.min_years,
            "purgeable": r.purgeable,
            "counted_from": r.counted_from,
            "tables": sorted(t for t, k in TABLES.items() if k == r.kind),
        }
        for r in RULES.values()
    ]


def as_of(day: date) -> datetime:
    from datetime import UTC, time

    return datetime.combine(day, time.min, tzinfo=UTC)
