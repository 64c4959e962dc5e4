from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity import rules
from identity.rules import IdNumberError, parse_id_number


def make(region: str, born: date, seq: int) -> str:
    body = f"{region}{born:%Y%m%d}{seq:03d}"
    return body + rules.check_digit(body)


def test_published_example_number_parses_with_birth_date_and_sex() -> None:
    # The example of GB 11643-1999's annex: 11010519491231002X, a woman born 1949-12-31.
    info = parse_id_number("11010519491231002x")
    assert info.number == "11010519491231002X"
    assert info.birth_date == date(1949, 12, 31)
    assert info.sex == "female"
    assert info.region_code == "110105"


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("110105194912310021", "check digit"),
        ("11010519490231002X", "not a real date"),
        ("99010519491231002X", "region code"),
        ("1101051949123100", "17 digits"),
        ("11010519491231002Y", "17 digits"),
        ("", "17 digits"),
    ],
)
def test_invalid_numbers_say_why(number: str, reason: str) -> None:
    with pytest.raises(IdNumberError) as exc:
        parse_id_number(number)
    assert reason in exc.value.reason


def test_future_birth_date_is_refused() -> None:
    with pytest.raises(IdNumberError, match="not possible"):
        parse_id_number(make("110105", date(2030, 1, 1), 11), today=date(2026, 11, 23))


def test_29_february_only_in_leap_years() -> None:
    assert parse_id_number(make("110105", date(2020, 2, 29), 11)).birth_date == date(2020, 2, 29)
    body = "11010520210229011"
    with pytest.raises(IdNumberError, match="not a real date"):
        parse_id_number(body + rules.check_digit(body))


def test_odd_sequence_is_male() -> None:
    assert parse_id_number(make("310104", date(1990, 6, 8), 13)).sex == "male"
    assert parse_id_number(make("310104", date(1990, 6, 8), 14)).sex == "female"


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2026, 1, 1)), st.integers(1, 999))
def test_any_generated_number_round_trips(born: date, seq: int) -> None:
    info = parse_id_number(make("440305", born, seq))
    assert info.birth_date == born


@given(
    st.dates(min_value=date(1950, 1, 1), max_value=date(2020, 1, 1)), st.integers(0, 16), st.sampled_from("0123456789")
)
def test_any_single_digit_change_is_caught(born: date, pos: int, digit: str) -> None:
    good = make("440305", born, 21)
    if good[pos] == digit:
        return
    bad = good[:pos] + digit + good[pos + 1 :]
    with pytest.raises(IdNumberError):
        parse_id_number(bad)


def test_phone_normalization() -> None:
    assert rules.normalize_phone("138 0013 8000") == "+8613800138000"
    assert rules.normalize_phone("+86 13800138000") == "+8613800138000"
    with pytest.raises(ValueError):
        rules.normalize_phone("12345")


def test_password_policy() -> None:
    assert rules.password_problems("short1") == ["at least 8 characters"]
    assert rules.password_problems("onlyletters") == ["letters and digits"]
    assert rules.password_problems("letters4and5digits") == []


TODAY = date(2026, 11, 23)
GOOD = rules.PhysicianCredentials(
    license_no="110",
    registered_here=True,
    independent_practice_since=date(2020, 1, 1),
    license_valid_until=date(2027, 1, 1),
    department="cardiology",
    institution_consent=True,
)
INST = rules.InstitutionStatus(date(2027, 1, 1), frozenset({"cardiology", "endocrinology"}))


def codes(cred: rules.PhysicianCredentials, inst: rules.InstitutionStatus = INST, dept: str | None = None) -> set[str]:
    return {v.code for v in rules.physician_violations(cred, inst, TODAY, dept)}


def test_qualified_physician_has_no_violations() -> None:
    assert codes(GOOD) == set()


def test_three_years_of_independent_practice_counted_to_the_day() -> None:
    from dataclasses import replace

    assert codes(replace(GOOD, independent_practice_since=date(2023, 11, 23))) == set()
    assert codes(replace(GOOD, independent_practice_since=date(2023, 11, 24))) == {"insufficient_practice_years"}


def test_every_missing_credential_is_reported_at_once() -> None:
    bad = rules.PhysicianCredentials(None, False, None, date(2026, 11, 22), "psychiatry", False, active=False)
    assert codes(bad, rules.InstitutionStatus(None, frozenset())) == {
        "account_inactive",
        "no_license",
        "license_expired",
        "not_registered_here",
        "insufficient_practice_years",
        "no_institution_consent",
        "institution_not_approved",
        "department_not_approved",
    }


def test_physician_must_belong_to_the_department_of_the_act() -> None:
    assert codes(GOOD, dept="endocrinology") == {"wrong_department"}


def test_pharmacist_qualification_expiry() -> None:
    ok = rules.PharmacistCredentials("Q1", date(2026, 11, 23))
    assert rules.pharmacist_violations(ok, TODAY) == []
    late = rules.PharmacistCredentials("Q1", date(2026, 11, 22))
    assert [v.code for v in rules.pharmacist_violations(late, TODAY)] == ["qualification_expired"]


# --- age in completed years (the one definition; prescriptions and the pages use it) ---------


def test_a_year_is_completed_on_the_birthday_not_the_day_before() -> None:
    born = date(1980, 6, 15)
    assert rules.age_years(born, date(2026, 6, 14)) == 45  # the birthday is tomorrow
    assert rules.age_years(born, date(2026, 6, 15)) == 46  # the birthday is today
    assert rules.age_years(born, date(2026, 6, 16)) == 46


def test_under_six_until_the_sixth_birthday() -> None:
    born = date(2020, 3, 1)
    assert rules.age_years(born, date(2026, 2, 28)) == 5
    assert rules.age_years(born, date(2026, 3, 1)) == 6
    assert rules.age_years(born, born) == 0


def test_29_february_completes_its_year_on_1_march_in_common_years() -> None:
    leap = date(2016, 2, 29)
    assert rules.age_years(leap, date(2022, 2, 28)) == 5
    assert rules.age_years(leap, date(2022, 3, 1)) == 6
    assert rules.age_years(leap, date(2024, 2, 29)) == 8


def test_a_birth_date_after_the_day_counts_as_zero_never_negative() -> None:
    assert rules.age_years(date(2026, 12, 3), date(2026, 12, 2)) == 0
    assert rules.age_years(date(2030, 1, 1), date(2026, 12, 2)) == 0
