"""Pure rules of family-doctor contracts, follow-up schedules and home readings.

No Flask, no session. Thresholds follow the 国家基本公共卫生服务规范（第三版）(2017):
高血压患者健康管理服务规范 and 2型糖尿病患者健康管理服务规范 —
- urgent referral (紧急转诊): systolic ≥ 180 or diastolic ≥ 110 mmHg; glucose ≥ 16.7
  or ≤ 3.9 mmol/L;
- controlled blood pressure: below 140/90 mmHg (65 and older: below 150/90 mmHg);
- controlled fasting glucose: below 7.0 mmol/L (non-fasting: below 10.0 mmol/L, the
  target of the 中国2型糖尿病防治指南);
- at least four follow-ups a year: the next one 3 months after a controlled follow-up,
  2 weeks after an uncontrolled one (and 2 weeks after an urgent referral, to follow it up).
"""

from __future__ import annotations

import calendar
import enum
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from clinic.core.errors import Violation


def N_(message: str) -> str:
    """Mark a message for the translation catalog; pages and the API show it translated."""
    return message


PRIMARY_CARE_LEVEL = "基层"
LEVELS = ("三级", "二级", "一级", "基层")

CONTRACT_DAYS_MONTHS = 12  # a contract runs one year
RENEW_WINDOW_DAYS = 60  # renewal opens this many days before the end (and stays open after it)

HYPERTENSION = "I10"
DIABETES_T2 = "E11"
FOLLOWED_CONDITIONS = (HYPERTENSION, DIABETES_T2)

# Blood pressure, mmHg
BP_URGENT_SYSTOLIC = 180
BP_URGENT_DIASTOLIC = 110
BP_TARGET_SYSTOLIC = 140
BP_TARGET_SYSTOLIC_ELDERLY = 150
BP_TARGET_DIASTOLIC = 90
ELDERLY_AGE = 65
# Glucose, mmol/L
GLUCOSE_URGENT_HIGH = Decimal("16.7")
GLUCOSE_URGENT_LOW = Decimal("3.9")
GLUCOSE_TARGET_FASTING = Decimal("7.0")
GLUCOSE_TARGET_RANDOM = Decimal("10.0")

# What a human body and a home meter can give; anything outside is a typing or device error.
SYSTOLIC_RANGE = (50, 300)
DIASTOLIC_RANGE = (20, 200)
GLUCOSE_RANGE = (Decimal("0.6"), Decimal("50.0"))
WEIGHT_RANGE = (Decimal("1.0"), Decimal("350.0"))

CONTROLLED_INTERVAL_MONTHS = 3
UNCONTROLLED_INTERVAL_DAYS = 14
FIRST_FOLLOWUP_DAYS = 14  # the first follow-up after a contract takes effect
REMIND_DAYS_BEFORE = 3  # SMS reminders: this many days before, and on the day
TEAM_FIRST_MINUTES = 30  # a contracted patient's waiting visit is held this long for their team


def visit_first(*, on_team: bool, team_can_take: bool, waited_minutes: float) -> str | None:
    """Contracted patients reach their team first: "mine" for a team physician, "held" for
    any other physician while the team has someone in the visit's department and the visit
    has waited less than TEAM_FIRST_MINUTES; None (the ordinary queue) otherwise."""
    if on_team:
        return "mine"
    if team_can_take and waited_minutes < TEAM_FIRST_MINUTES:
        return "held"
    return None


class Classification(enum.StrEnum):
    CONTROLLED = "controlled"
    UNCONTROLLED = "uncontrolled"
    URGENT = "urgent"


class ContractStatus(enum.StrEnum):
    PENDING = "pending"  # signed by the patient, awaiting the lead physician
    ACTIVE = "active"
    ENDED = "ended"  # ended by either side with a reason
    EXPIRED = "expired"  # its year ran out without renewal
    DECLINED = "declined"  # the lead physician did not countersign


IN_FORCE = (ContractStatus.PENDING, ContractStatus.ACTIVE)


class ContractEvent(enum.StrEnum):
    COUNTERSIGN = "countersign"
    DECLINE = "decline"
    END = "end"
    EXPIRE = "expire"
    RENEW = "renew"


_MOVES: dict[tuple[ContractStatus, ContractEvent], ContractStatus] = {
    (ContractStatus.PENDING, ContractEvent.COUNTERSIGN): ContractStatus.ACTIVE,
    (ContractStatus.PENDING, ContractEvent.DECLINE): ContractStatus.DECLINED,
    (ContractStatus.PENDING, ContractEvent.END): ContractStatus.ENDED,
    (ContractStatus.ACTIVE, ContractEvent.END): ContractStatus.ENDED,
    (ContractStatus.ACTIVE, ContractEvent.EXPIRE): ContractStatus.EXPIRED,
    (ContractStatus.ACTIVE, ContractEvent.RENEW): ContractStatus.ACTIVE,
}


class IllegalContractMove(Exception):
    def __init__(self, status: ContractStatus, event: ContractEvent) -> None:
        self.status, self.event = status, event
        super().__init__(f"a {status.value} contract cannot {event.value}")


def transition(status: ContractStatus, event: ContractEvent) -> ContractStatus:
    try:
        return _MOVES[(status, event)]
    except KeyError:
        raise IllegalContractMove(status, event) from None


def offers_signing(level: str | None) -> bool:
    """Art. 2/15: family-doctor contracts are signed by a primary-care institution."""
    return level == PRIMARY_CARE_LEVEL


def add_months(d: date, months: int) -> date:
    """The same day `months` later; the month's last day when it has no such day."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def contract_term(start: date) -> tuple[date, date]:
    """One year: from `start` to the day before the same date a year later (inclusive)."""
    return start, add_months(start, CONTRACT_DAYS_MONTHS) - timedelta(days=1)


def in_force_on(status: ContractStatus, valid_until: date | None, today: date) -> bool:
    if status == ContractStatus.PENDING:
        return True
    return status == ContractStatus.ACTIVE and valid_until is not None and today <= valid_until


def renewal_term(valid_until: date, today: date) -> tuple[date, date] | None:
    """The next year of a contract ending on `valid_until`; None when renewal is not open yet."""
    if today < valid_until - timedelta(days=RENEW_WINDOW_DAYS):
        return None
    start = max(valid_until + timedelta(days=1), today)
    return contract_term(start)


def followed_conditions(icd10_codes: list[str]) -> list[str]:
    """Which confirmed diagnoses call for a follow-up plan (I10 hypertension, E11 type 2 diabetes)."""
    out = []
    for wanted in FOLLOWED_CONDITIONS:
        if any(code.upper().replace(".", "").startswith(wanted) for code in icd10_codes):
            out.append(wanted)
    return out


# --- home readings --------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    kind: str  # bp | glucose | weight
    systolic: int | None = None
    diastolic: int | None = None
    glucose_mmol: Decimal | None = None
    fasting: bool | None = None
    weight_kg: Decimal | None = None


def _within(value: Decimal | int, bounds: tuple[Decimal, Decimal] | tuple[int, int]) -> bool:
    return bounds[0] <= value <= bounds[1]


def reading_violations(r: Reading) -> list[Violation]:
    """Missing values and values outside what a person and a home device can give."""
    out: list[Violation] = []

    def bad(field: str, message: str) -> None:
        out.append(Violation("out_of_range", message, detail={"field": field}))

    if r.kind == "bp":
        if r.systolic is None or r.diastolic is None:
            out.append(Violation("invalid", "Blood pressure needs both systolic and diastolic values."))
            return out
        if not _within(r.systolic, SYSTOLIC_RANGE):
            bad("systolic", N_("Systolic pressure must be between 50 and 300 mmHg."))
        if not _within(r.diastolic, DIASTOLIC_RANGE):
            bad("diastolic", N_("Diastolic pressure must be between 20 and 200 mmHg."))
        if not out and r.diastolic >= r.systolic:
            bad("diastolic", N_("Diastolic pressure must be lower than systolic pressure."))
    elif r.kind == "glucose":
        if r.glucose_mmol is None:
            out.append(Violation("invalid", "A glucose reading needs its value in mmol/L."))
        elif not _within(r.glucose_mmol, GLUCOSE_RANGE):
            bad("glucose_mmol", N_("Blood glucose must be between 0.6 and 50.0 mmol/L."))
    elif r.kind == "weight":
        if r.weight_kg is None:
            out.append(Violation("invalid", "A weight reading needs its value in kg."))
        elif not _within(r.weight_kg, WEIGHT_RANGE):
            bad("weight_kg", N_("Weight must be between 1 and 350 kg."))
    else:
        out.append(Violation("invalid", "The kind of reading must be bp, glucose or weight."))
    return out


def classify(r: Reading, age: int) -> Classification:
    """controlled / uncontrolled / urgent, by the standard's thresholds (see the module).
    `age`: completed years on the reading's Beijing date, counted by the one age rule
    (identity.rules.age_years); from ELDERLY_AGE the blood-pressure target is 150/90."""
    if r.kind == "bp":
        assert r.systolic is not None and r.diastolic is not None
        if r.systolic >= BP_URGENT_SYSTOLIC or r.diastolic >= BP_URGENT_DIASTOLIC:
            return Classification.URGENT
        bp_target = BP_TARGET_SYSTOLIC_ELDERLY if age >= ELDERLY_AGE else BP_TARGET_SYSTOLIC
        if r.systolic < bp_target and r.diastolic < BP_TARGET_DIASTOLIC:
            return Classification.CONTROLLED
        return Classification.UNCONTROLLED
    if r.kind == "glucose":
        assert r.glucose_mmol is not None
        g = r.glucose_mmol
        if g >= GLUCOSE_URGENT_HIGH or g <= GLUCOSE_URGENT_LOW:
            return Classification.URGENT
        target = GLUCOSE_TARGET_FASTING if r.fasting else GLUCOSE_TARGET_RANDOM
        return Classification.CONTROLLED if g < target else Classification.UNCONTROLLED
    # Weight has no threshold of its own in the standard (BMI needs a height): recorded, never alarming.
    return Classification.CONTROLLED


ADVICE = {
    Classification.URGENT: N_(
        "This reading is dangerous. Go to a hospital in person now (call 120 if you feel unwell); "
        "online care cannot handle it. Your family doctor team has been alerted."
    ),
    Classification.UNCONTROLLED: N_(
        "This reading is above your target. Keep taking your medicines as prescribed and measure again; "
        "your family doctor team will follow up within two weeks."
    ),
    Classification.CONTROLLED: N_("This reading is within your target. Keep up your treatment and measure regularly."),
}


# --- follow-up schedule ---------------------------------------------------------------


def next_due_after_followup(day: date, classification: Classification) -> date:
    """3 months after a controlled follow-up; 2 weeks after an uncontrolled or urgent one."""
    if classification == Classification.CONTROLLED:
        return add_months(day, CONTROLLED_INTERVAL_MONTHS)
    return day + timedelta(days=UNCONTROLLED_INTERVAL_DAYS)


def due_after_reading(current_due: date | None, day: date, classification: Classification) -> date | None:
    """A home reading can only bring the next follow-up forward (an uncontrolled or urgent
    one: within two weeks), never push it later."""
    if classification == Classification.CONTROLLED:
        return current_due
    soon = day + timedelta(days=UNCONTROLLED_INTERVAL_DAYS)
    return soon if current_due is None or soon < current_due else current_due


def first_due(start: date) -> date:
    return start + timedelta(days=FIRST_FOLLOWUP_DAYS)


def is_overdue(next_due: date | None, today: date) -> bool:
    return next_due is not None and next_due < today


def reminder_kind(next_due: date, today: date) -> str | None:
    """Which SMS reminder is due today: "before" (3 days before) or "due_day" (on the day)."""
    if next_due - today == timedelta(days=REMIND_DAYS_BEFORE):
        return "before"
    if next_due == today:
        return "due_day"
    return None


# --- long-term prescriptions (长期处方管理规范（试行）, 2021) ----------------------------
# The prescription rules themselves (12 weeks at most, an assessment note over 4 weeks, no
# controlled drugs...) live in prescriptions/rules.py and are re-run on every renewal; these
# are only the family-doctor conditions for renewing from the last one.

STABLE_WINDOW_DAYS = 90  # the readings a renewal is judged on


def is_stable(latest: list[Classification], open_alerts: int) -> bool:
    """Stable: at least one recent reading, the latest of each kind controlled, no open alert."""
    return bool(latest) and all(c == Classification.CONTROLLED for c in latest) and open_alerts == 0


def renewal_violations(*, has_previous: bool, long_term: bool, stable: bool) -> list[Violation]:
    out: list[Violation] = []
    if not has_previous:
        out.append(Violation("no_previous_prescription", N_("There is no earlier prescription to renew from.")))
    elif not long_term:
        out.append(Violation("not_long_term", N_("Only a long-term prescription can be renewed.")))
    if not stable:
        out.append(
            Violation(
                "not_stable",
                N_(
                    "The patient is not stable: the latest readings (last 90 days) are missing or not "
                    "controlled, or an urgent reading is open. See the patient before prescribing."
                ),
            )
        )
    return out


# Words shown inside refusals and on pages (a contract's status, a reading's class).
WORDS = (
    N_("pending"),
    N_("active"),
    N_("ended"),
    N_("expired"),
    N_("declined"),
    N_("controlled"),
    N_("uncontrolled"),
    N_("urgent"),
)
