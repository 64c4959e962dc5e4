"""Family-doctor rules at every threshold and scheduling boundary (国家基本公共卫生服务规范 第三版)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from clinic.family_doctor import rules
from clinic.family_doctor.rules import Classification as C
from clinic.family_doctor.rules import ContractEvent, ContractStatus
from identity.rules import age_years


def bp(s: int, d: int, age: int = 50) -> C:
    return rules.classify(rules.Reading("bp", systolic=s, diastolic=d), age)


def glu(v: str, fasting: bool | None = True) -> C:
    return rules.classify(rules.Reading("glucose", glucose_mmol=Decimal(v), fasting=fasting), 50)


@pytest.mark.parametrize(
    ("s", "d", "expected"),
    [
        (179, 109, C.UNCONTROLLED),
        (180, 80, C.URGENT),  # systolic >= 180
        (120, 110, C.URGENT),  # diastolic >= 110
        (120, 109, C.UNCONTROLLED),
        (139, 89, C.CONTROLLED),  # below 140/90
        (140, 80, C.UNCONTROLLED),
        (130, 90, C.UNCONTROLLED),
        (90, 60, C.CONTROLLED),
    ],
)
def test_blood_pressure_thresholds(s: int, d: int, expected: C) -> None:
    assert bp(s, d) == expected


def test_elderly_target_is_150_over_90_from_65() -> None:
    assert bp(149, 89, age=65) == C.CONTROLLED
    assert bp(150, 80, age=65) == C.UNCONTROLLED
    assert bp(149, 89, age=64) == C.UNCONTROLLED
    assert bp(145, 90, age=70) == C.UNCONTROLLED
    assert bp(180, 70, age=80) == C.URGENT


def test_the_elderly_target_starts_on_the_65th_birthday_counted_by_the_one_age_rule() -> None:
    born = date(1961, 3, 2)
    assert bp(145, 85, age=age_years(born, date(2026, 3, 1))) == C.UNCONTROLLED  # still 64
    assert bp(145, 85, age=age_years(born, date(2026, 3, 2))) == C.CONTROLLED  # 65 that day


@pytest.mark.parametrize(
    ("value", "fasting", "expected"),
    [
        ("16.7", True, C.URGENT),
        ("16.6", True, C.UNCONTROLLED),
        ("3.9", True, C.URGENT),
        ("4.0", True, C.CONTROLLED),
        ("6.9", True, C.CONTROLLED),
        ("7.0", True, C.UNCONTROLLED),
        ("9.9", False, C.CONTROLLED),  # non-fasting target below 10.0
        ("10.0", False, C.UNCONTROLLED),
        ("16.7", False, C.URGENT),  # the urgent thresholds hold whatever the time of day
        ("3.9", None, C.URGENT),
    ],
)
def test_glucose_thresholds(value: str, fasting: bool | None, expected: C) -> None:
    assert glu(value, fasting) == expected


def test_weight_is_recorded_never_alarming() -> None:
    assert rules.classify(rules.Reading("weight", weight_kg=Decimal("120")), 50) == C.CONTROLLED


@pytest.mark.parametrize(
    ("reading", "field"),
    [
        (rules.Reading("bp", systolic=400, diastolic=80), "systolic"),
        (rules.Reading("bp", systolic=301, diastolic=80), "systolic"),
        (rules.Reading("bp", systolic=49, diastolic=30), "systolic"),
        (rules.Reading("bp", systolic=120, diastolic=201), "diastolic"),
        (rules.Reading("bp", systolic=120, diastolic=19), "diastolic"),
        (rules.Reading("bp", systolic=120, diastolic=120), "diastolic"),  # not below systolic
        (rules.Reading("glucose", glucose_mmol=Decimal("-1")), "glucose_mmol"),
        (rules.Reading("glucose", glucose_mmol=Decimal("0.5")), "glucose_mmol"),
        (rules.Reading("glucose", glucose_mmol=Decimal("50.1")), "glucose_mmol"),
        (rules.Reading("weight", weight_kg=Decimal("0")), "weight_kg"),
        (rules.Reading("weight", weight_kg=Decimal("350.1")), "weight_kg"),
    ],
)
def test_physically_impossible_values_are_out_of_range(reading: rules.Reading, field: str) -> None:
    v = rules.reading_violations(reading)
    assert [x.code for x in v] == ["out_of_range"] and v[0].detail["field"] == field


@pytest.mark.parametrize(
    "reading",
    [
        rules.Reading("bp", systolic=300, diastolic=200 - 1),
        rules.Reading("bp", systolic=50, diastolic=20),
        rules.Reading("glucose", glucose_mmol=Decimal("0.6")),
        rules.Reading("glucose", glucose_mmol=Decimal("50.0")),
        rules.Reading("weight", weight_kg=Decimal("1.0")),
        rules.Reading("weight", weight_kg=Decimal("350.0")),
    ],
)
def test_range_edges_are_accepted(reading: rules.Reading) -> None:
    assert rules.reading_violations(reading) == []


def test_missing_values_are_invalid() -> None:
    assert [v.code for v in rules.reading_violations(rules.Reading("bp", systolic=120))] == ["invalid"]
    assert [v.code for v in rules.reading_violations(rules.Reading("glucose"))] == ["invalid"]
    assert [v.code for v in rules.reading_violations(rules.Reading("weight"))] == ["invalid"]
    assert [v.code for v in rules.reading_violations(rules.Reading("pulse"))] == ["invalid"]


# --- scheduling -----------------------------------------------------------------------


def test_next_due_three_months_after_controlled_two_weeks_after_uncontrolled() -> None:
    assert rules.next_due_after_followup(date(2026, 1, 10), C.CONTROLLED) == date(2026, 4, 10)
    assert rules.next_due_after_followup(date(2026, 1, 10), C.UNCONTROLLED) == date(2026, 1, 24)
    assert rules.next_due_after_followup(date(2026, 1, 10), C.URGENT) == date(2026, 1, 24)


def test_three_months_from_a_month_end_lands_on_the_last_day() -> None:
    assert rules.next_due_after_followup(date(2026, 11, 30), C.CONTROLLED) == date(2027, 2, 28)
    assert rules.next_due_after_followup(date(2027, 11, 30), C.CONTROLLED) == date(2028, 2, 29)
    assert rules.next_due_after_followup(date(2026, 12, 31), C.CONTROLLED) == date(2027, 3, 31)


def test_controlled_all_year_still_gives_at_least_four_followups() -> None:
    day, count, start = date(2026, 1, 1), 0, date(2026, 1, 1)
    while day < date(2027, 1, 1):
        count += 1
        day = rules.next_due_after_followup(day, C.CONTROLLED)
    assert count >= 4 and (date(2027, 1, 1) - start).days <= 366


def test_a_home_reading_only_brings_the_next_followup_forward() -> None:
    due = date(2026, 3, 1)
    assert rules.due_after_reading(due, date(2026, 1, 1), C.CONTROLLED) == due
    assert rules.due_after_reading(due, date(2026, 1, 1), C.UNCONTROLLED) == date(2026, 1, 15)
    assert rules.due_after_reading(due, date(2026, 1, 1), C.URGENT) == date(2026, 1, 15)
    # already due sooner: unchanged
    assert rules.due_after_reading(date(2026, 1, 10), date(2026, 1, 1), C.UNCONTROLLED) == date(2026, 1, 10)
    assert rules.due_after_reading(date(2026, 1, 15), date(2026, 1, 1), C.UNCONTROLLED) == date(2026, 1, 15)
    assert rules.due_after_reading(None, date(2026, 1, 1), C.UNCONTROLLED) == date(2026, 1, 15)


def test_overdue_is_strictly_after_the_due_day() -> None:
    assert not rules.is_overdue(date(2026, 5, 1), date(2026, 5, 1))
    assert rules.is_overdue(date(2026, 5, 1), date(2026, 5, 2))
    assert not rules.is_overdue(None, date(2026, 5, 2))


def test_reminders_three_days_before_and_on_the_day() -> None:
    due = date(2026, 5, 10)
    assert rules.reminder_kind(due, date(2026, 5, 7)) == "before"
    assert rules.reminder_kind(due, date(2026, 5, 10)) == "due_day"
    for other in (date(2026, 5, 6), date(2026, 5, 8), date(2026, 5, 9), date(2026, 5, 11)):
        assert rules.reminder_kind(due, other) is None


def test_first_followup_two_weeks_after_the_contract_starts() -> None:
    assert rules.first_due(date(2026, 12, 25)) == date(2027, 1, 8)


# --- contracts ------------------------------------------------------------------------


def test_only_a_primary_care_institution_offers_signing() -> None:
    assert rules.offers_signing("基层")
    for level in ("三级", "二级", "一级", "", None):
        assert not rules.offers_signing(level)


def test_a_contract_runs_one_year() -> None:
    assert rules.contract_term(date(2026, 3, 1)) == (date(2026, 3, 1), date(2027, 2, 28))
    assert rules.contract_term(date(2028, 2, 29)) == (date(2028, 2, 29), date(2029, 2, 27))


def test_in_force_until_the_last_day_inclusive() -> None:
    assert rules.in_force_on(ContractStatus.ACTIVE, date(2026, 6, 30), date(2026, 6, 30))
    assert not rules.in_force_on(ContractStatus.ACTIVE, date(2026, 6, 30), date(2026, 7, 1))
    assert rules.in_force_on(ContractStatus.PENDING, None, date(2026, 7, 1))
    assert not rules.in_force_on(ContractStatus.ENDED, date(2027, 1, 1), date(2026, 7, 1))


def test_renewal_opens_60_days_before_the_end() -> None:
    end = date(2026, 6, 30)
    assert rules.renewal_term(end, date(2026, 4, 30)) is None  # 61 days before
    assert rules.renewal_term(end, date(2026, 5, 1)) == (date(2026, 7, 1), date(2027, 6, 30))  # 60 days
    # renewed after it ran out: a year from the renewal day
    assert rules.renewal_term(end, date(2026, 8, 1)) == (date(2026, 8, 1), date(2027, 7, 31))


def test_contract_lifecycle() -> None:
    assert rules.transition(ContractStatus.PENDING, ContractEvent.COUNTERSIGN) == ContractStatus.ACTIVE
    assert rules.transition(ContractStatus.ACTIVE, ContractEvent.END) == ContractStatus.ENDED
    assert rules.transition(ContractStatus.PENDING, ContractEvent.END) == ContractStatus.ENDED
    assert rules.transition(ContractStatus.ACTIVE, ContractEvent.RENEW) == ContractStatus.ACTIVE
    for status, event in [
        (ContractStatus.ACTIVE, ContractEvent.COUNTERSIGN),
        (ContractStatus.ENDED, ContractEvent.END),
        (ContractStatus.ENDED, ContractEvent.RENEW),
        (ContractStatus.PENDING, ContractEvent.RENEW),
        (ContractStatus.EXPIRED, ContractEvent.COUNTERSIGN),
    ]:
        with pytest.raises(rules.IllegalContractMove):
            rules.transition(status, event)


def test_followed_conditions_from_confirmed_codes() -> None:
    assert rules.followed_conditions(["I10", "E11"]) == ["I10", "E11"]
    assert rules.followed_conditions(["E11.9"]) == ["E11"]
    assert rules.followed_conditions(["E10", "J45"]) == []


def test_long_term_renewal_rules() -> None:
    assert rules.renewal_violations(has_previous=True, long_term=True, stable=True) == []
    codes = [v.code for v in rules.renewal_violations(has_previous=True, long_term=False, stable=False)]
    assert codes == ["not_long_term", "not_stable"]
    codes = [v.code for v in rules.renewal_violations(has_previous=False, long_term=False, stable=True)]
    assert codes == ["no_previous_prescription"]


def test_stable_means_recent_controlled_readings_and_no_open_alert() -> None:
    assert rules.is_stable([C.CONTROLLED, C.CONTROLLED], 0)
    assert not rules.is_stable([], 0)
    assert not rules.is_stable([C.CONTROLLED, C.UNCONTROLLED], 0)
    assert not rules.is_stable([C.URGENT], 0)
    assert not rules.is_stable([C.CONTROLLED], 1)


def test_contracted_patients_reach_their_team_first() -> None:
    assert rules.visit_first(on_team=True, team_can_take=True, waited_minutes=0) == "mine"
    assert rules.visit_first(on_team=True, team_can_take=True, waited_minutes=500) == "mine"
    assert rules.visit_first(on_team=False, team_can_take=True, waited_minutes=29.9) == "held"
    assert rules.visit_first(on_team=False, team_can_take=True, waited_minutes=30) is None
    # nobody on the team practises in the visit's department: the ordinary queue
    assert rules.visit_first(on_team=False, team_can_take=False, waited_minutes=0) is None
