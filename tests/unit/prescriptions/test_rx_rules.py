"""The prescribing rules (pure): every violation at once, with its code and item."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinic.demo import make_id_number
from prescriptions import rules as r

TODAY = date(2025, 3, 10)
AMLODIPINE = r.DrugFacts("d1", "苯磺酸氨氯地平片", ("amlodipine",), indicated_conditions=("I10", "I25"))
METFORMIN = r.DrugFacts("d2", "盐酸二甲双胍片", ("metformin",), indicated_conditions=("E11",))
OXYCODONE = r.DrugFacts("d3", "盐酸羟考酮缓释片", ("oxycodone",), control_class="narcotic", control_reason="麻醉药品")
INSULIN = r.DrugFacts(
    "d4", "甘精胰岛素注射液", ("insulin glargine",), cold_chain=True, indicated_conditions=("E11", "E10")
)
SIMVA = r.DrugFacts("d5", "辛伐他汀片", ("simvastatin",), indicated_conditions=("E78", "I25"))
CLARI = r.DrugFacts("d6", "克拉霉素片", ("clarithromycin",))
ATORVA = r.DrugFacts("d7", "阿托伐他汀钙片", ("atorvastatin",), indicated_conditions=("E78", "I25"))
INTERACTIONS = r.interaction_table([r.Interaction("clarithromycin", "simvastatin", "contraindicated", "label")])


def item(drug: r.DrugFacts, days: int = 7) -> r.ItemFacts:
    return r.ItemFacts(drug, Decimal("1"), "片", "qd", "口服", days, Decimal(days))


def facts(*items: r.ItemFacts, icd10: str = "I10", born: date = date(1960, 1, 1), **kw: object) -> r.PrescriptionFacts:
    base = r.PrescriptionFacts(
        patient=r.PatientFacts(born, (), None),
        visit=r.VisitFacts("in_progress", "doc", icd10, True),
        prescriber=r.PrescriberFacts("doc"),
        items=list(items),
        on=TODAY,
        interactions=INTERACTIONS,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def codes(v: list) -> list[tuple[str, int | None]]:  # type: ignore[type-arg]
    return [(x.code, x.item) for x in v]


def test_a_clean_prescription_passes() -> None:
    assert r.evaluate(facts(item(AMLODIPINE))) == []


def test_all_violations_are_reported_at_once() -> None:
    rx = facts(
        item(AMLODIPINE),
        item(METFORMIN),
        item(OXYCODONE),
        item(SIMVA),
        item(CLARI),
        item(AMLODIPINE, days=10),
        icd10="I10",
        visit=r.VisitFacts("completed", "doc", "I10", True),
    )
    got = codes(r.evaluate(rx))
    assert ("visit_not_active", None) in got
    assert ("too_many_items", None) in got
    assert ("controlled_substance", 2) in got
    assert ("diagnosis_mismatch", 1) in got and ("diagnosis_mismatch", 2) in got
    assert ("interaction_contraindicated", 4) in got
    assert ("duplicate_therapy", 5) in got
    assert ("supply_exceeds_limit", 5) in got


def test_only_the_visits_physician_prescribes() -> None:
    rx = facts(item(AMLODIPINE), prescriber=r.PrescriberFacts("someone-else"))
    assert codes(r.evaluate(rx)) == [("visit_not_active", None)]
    rx = facts(item(AMLODIPINE), visit=r.VisitFacts("waiting", None, "I10", True))
    assert codes(r.evaluate(rx)) == [("visit_not_active", None)]


def test_diagnosis_matches_by_prefix() -> None:
    assert (
        r.evaluate(facts(item(METFORMIN), icd10="E11.9", visit=r.VisitFacts("in_progress", "doc", "E11.9", True))) == []
    )
    got = codes(r.evaluate(facts(item(METFORMIN))))  # metformin in a hypertension visit
    assert got == [("diagnosis_mismatch", 0)]
    assert r.diagnosis_matches("B18.1", ["B18.1"]) and not r.diagnosis_matches("B18.2", ["B18.1"])
    assert not r.diagnosis_matches(None, ["I10"])


def test_conditions_from_atc_groups() -> None:
    groups = {"C08": ["I10", "I25"], "C09": ["I10"], "A10": ["E11"], "A10A": ["E10"]}
    assert r.conditions_for_atc("C08CA01", groups) == ("I10", "I25")
    assert r.conditions_for_atc("A10AE04", groups) == ("E11", "E10")
    assert r.conditions_for_atc("N02AA05", groups) == ()
    assert r.conditions_for_atc(None, groups) == ()


def test_supply_limits() -> None:
    assert codes(r.evaluate(facts(item(AMLODIPINE, days=8)))) == [("supply_exceeds_limit", 0)]
    acute = r.VisitFacts("in_progress", "doc", "I10", False)
    assert codes(r.evaluate(facts(item(AMLODIPINE, days=4), visit=acute))) == [("supply_exceeds_limit", 0)]
    assert r.evaluate(facts(item(AMLODIPINE, days=3), visit=acute)) == []


def test_long_term_prescriptions() -> None:
    assert r.evaluate(facts(item(AMLODIPINE, days=28), long_term=True)) == []
    # over 4 weeks needs an assessment note; 12 weeks at most
    assert codes(r.evaluate(facts(item(AMLODIPINE, days=56), long_term=True))) == [("supply_exceeds_limit", 0)]
    assert r.evaluate(facts(item(AMLODIPINE, days=84), long_term=True, assessment_note="稳定")) == []
    assert codes(r.evaluate(facts(item(AMLODIPINE, days=85), long_term=True, assessment_note="稳定"))) == [
        ("supply_exceeds_limit", 0)
    ]
    # not for a condition outside the catalog or not chronic
    for chronic in (None, False):
        visit = r.VisitFacts("in_progress", "doc", "I10", chronic)
        assert ("supply_exceeds_limit", 0) in codes(
            r.evaluate(facts(item(AMLODIPINE, days=28), long_term=True, visit=visit))
        )
    # excludes cold-chain drugs
    diabetes = r.VisitFacts("in_progress", "doc", "E11", True)
    got = codes(r.evaluate(facts(item(INSULIN, days=28), long_term=True, visit=diabetes)))
    assert got == [("supply_exceeds_limit", 0)]


def test_allergies_duplicates_interactions() -> None:
    rx = facts(item(SIMVA), item(ATORVA), icd10="E78", visit=r.VisitFacts("in_progress", "doc", "E78", True))
    rx = replace(rx, patient=r.PatientFacts(date(1960, 1, 1), ("atorvastatin",), None))
    assert codes(r.evaluate(rx)) == [("allergy_conflict", 1)]
    rx = facts(item(SIMVA), item(SIMVA), visit=r.VisitFacts("in_progress", "doc", "E78", True))
    assert codes(r.evaluate(rx)) == [("duplicate_therapy", 1)]
    rx = facts(item(CLARI), item(SIMVA), visit=r.VisitFacts("in_progress", "doc", "E78", True))
    got = codes(r.evaluate(rx))
    assert ("interaction_contraindicated", 1) in got


def _guardian(on: date = TODAY) -> r.Guardian:
    return r.Guardian("刘芳", make_id_number("310104", date(1990, 6, 8), 42), "mother")


PHYS = r.AccompanyingPhysician("陈医生", "110101000012345", "儿科")


def test_child_under_six_needs_guardian_and_physician() -> None:
    child = date(2021, 5, 1)
    visit = r.VisitFacts("in_progress", "doc", "E10", True)
    kids = r.PatientFacts(child, (), Decimal("16.5"))
    rx = facts(item(INSULIN, days=7), visit=visit, patient=kids)
    got = r.evaluate(rx)
    assert codes(got) == [("guardian_and_physician_required", None)]
    assert set(got[0].detail["missing"]) == {"guardian", "accompanying_physician"}
    assert r.evaluate(replace(rx, guardian=_guardian(), accompanying_physician=PHYS)) == []
    bad = r.Guardian("刘芳", "310104199006080000", "mother")
    got = r.evaluate(replace(rx, guardian=bad, accompanying_physician=PHYS))
    assert got[0].detail["missing"] == ["guardian.id_number"]
    minor = r.Guardian("小明", make_id_number("310104", date(2015, 1, 1), 11), "brother")
    got = r.evaluate(replace(rx, guardian=minor, accompanying_physician=PHYS))
    assert got[0].code == "guardian_and_physician_required"
    got = r.evaluate(
        replace(rx, guardian=_guardian(), accompanying_physician=r.AccompanyingPhysician("陈", "", "儿科"))
    )
    assert got[0].detail["missing"] == ["accompanying_physician.license_no"]


def test_weight_required_under_the_institutions_age() -> None:
    visit = r.VisitFacts("in_progress", "doc", "E10", True)
    rx = facts(item(INSULIN), visit=visit, patient=r.PatientFacts(date(2013, 1, 1), (), None))
    assert codes(r.evaluate(rx)) == [("weight_required", None)]
    assert r.evaluate(replace(rx, weight_age=12)) == []
    rx = replace(rx, patient=r.PatientFacts(date(2013, 1, 1), (), Decimal("40")))
    assert r.evaluate(rx) == []


def test_age_display() -> None:
    assert r.age_display(date(2025, 3, 1), TODAY) == r.Age(9, "days")
    assert r.age_display(TODAY - timedelta(days=27), TODAY) == r.Age(27, "days")
    assert r.age_display(TODAY - timedelta(days=28), TODAY).unit == "months"
    assert r.age_display(date(2024, 3, 11), TODAY) == r.Age(11, "months")
    assert r.age_display(date(2024, 3, 10), TODAY) == r.Age(1, "years")
    # a month after 31 January is the last day of February (month-end clamp)
    assert r.age_display(date(2024, 1, 31), date(2024, 2, 28)) == r.Age(0, "months")
    assert r.age_display(date(2024, 1, 31), date(2024, 2, 29)) == r.Age(1, "months")
    assert r.Age(3, "months").zh() == "3月" and r.Age(1, "years").en() == "1 year"


def test_sixth_birthday_and_29_february() -> None:
    born = date(2019, 2, 28)
    assert r.is_under(born, date(2025, 2, 27), 6)
    assert not r.is_under(born, date(2025, 2, 28), 6)
    leap = date(2016, 2, 29)
    assert r.age_years(leap, date(2022, 2, 28)) == 5  # common year: the birthday is 1 March
    assert r.age_years(leap, date(2022, 3, 1)) == 6
    assert r.age_years(leap, date(2024, 2, 28)) == 7
    assert r.age_years(leap, date(2024, 2, 29)) == 8


@settings(max_examples=300, deadline=None)
@given(born=st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)), delta=st.integers(0, 40000))
def test_age_years_agrees_with_birthdays(born: date, delta: int) -> None:
    on = born + timedelta(days=delta)
    years = r.age_years(born, on)

    # the age-th birthday has passed, the next one has not (29 Feb → 1 Mar in common years)
    def birthday(n: int) -> date:
        try:
            return born.replace(year=born.year + n)
        except ValueError:
            return date(born.year + n, 3, 1)

    assert birthday(years) <= on < birthday(years + 1)


@settings(max_examples=200, deadline=None)
@given(born=st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 1, 1)), delta=st.integers(-3, 3))
def test_under_six_exactly_until_the_sixth_birthday(born: date, delta: int) -> None:
    try:
        sixth = born.replace(year=born.year + 6)
    except ValueError:
        sixth = date(born.year + 6, 3, 1)
    on = sixth + timedelta(days=delta)
    assert r.is_under(born, on, 6) == (on < sixth)


@settings(max_examples=200, deadline=None)
@given(born=st.dates(min_value=date(1990, 1, 1), max_value=date(2030, 1, 1)), delta=st.integers(0, 800))
def test_age_display_units(born: date, delta: int) -> None:
    on = born + timedelta(days=delta)
    a = r.age_display(born, on)
    assert a.unit == ("days" if delta < 28 else "months" if r.age_years(born, on) < 1 else "years")
    if a.unit == "months":
        assert 0 <= a.value <= 12


# --- lifecycle ------------------------------------------------------------------------------

RxS, RxE = r.PrescriptionStatus, r.PrescriptionEvent


def test_the_lifecycle_paths() -> None:
    s = RxS.PENDING_REVIEW
    for ev in (RxE.APPROVE, RxE.DISPENSE, RxE.DISPATCH, RxE.DELIVER):
        s = r.transition(s, ev)
    assert s == RxS.DELIVERED
    assert r.transition(RxS.DISPENSED, RxE.DELIVER) == RxS.DELIVERED  # handed over at the pharmacy
    assert r.transition(RxS.PENDING_REVIEW, RxE.RETURN) == RxS.RETURNED
    assert r.transition(RxS.RETURNED, RxE.CANCEL) == RxS.CANCELLED
    assert r.transition(RxS.APPROVED, RxE.EXPIRE) == RxS.EXPIRED


@given(st.sampled_from(list(RxS)), st.sampled_from(list(RxE)))
def test_transition_is_total_and_refuses_by_name(current: r.PrescriptionStatus, event: r.PrescriptionEvent) -> None:
    try:
        nxt = r.transition(current, event)
    except r.IllegalPrescriptionTransition as exc:
        assert (current, event) not in r.TRANSITIONS
        assert exc.status == 409 and exc.code == "illegal_transition" and exc.extra == {"current": current.value}
        target = next(nxt for (_, ev), nxt in r.TRANSITIONS.items() if ev == event)
        assert exc.message == f"A prescription that is {current.value} cannot become {target.value}."
        return
    assert nxt == r.TRANSITIONS[(current, event)]
    assert current not in (RxS.REJECTED, RxS.DELIVERED, RxS.EXPIRED, RxS.CANCELLED)  # final
    assert nxt != RxS.APPROVED or current == RxS.PENDING_REVIEW  # nothing leads back to approved
    assert event != RxE.DISPENSE or current == RxS.APPROVED  # dispensed once, only when approved


@pytest.mark.parametrize(
    ("current", "event", "message"),
    [
        (RxS.APPROVED, RxE.APPROVE, "A prescription that is approved cannot become approved."),
        (RxS.DISPENSED, RxE.DISPENSE, "A prescription that is dispensed cannot become dispensed."),
        (RxS.REJECTED, RxE.CANCEL, "A prescription that is rejected cannot become cancelled."),
        (RxS.PENDING_REVIEW, RxE.DISPATCH, "A prescription that is pending_review cannot become out_for_delivery."),
    ],
)
def test_an_illegal_move_is_refused_in_the_words_of_the_status_it_would_reach(
    current: r.PrescriptionStatus, event: r.PrescriptionEvent, message: str
) -> None:
    with pytest.raises(r.IllegalPrescriptionTransition) as refused:
        r.transition(current, event)
    assert refused.value.message == message
    assert refused.value.envelope() == {
        "error": {"code": "illegal_transition", "message": message, "current": current.value}
    }
