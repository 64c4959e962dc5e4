"""Dose, frequency, unit and quantity rules against the dosing reference (data/dosing.json).

The cases of issue 14 — amlodipine 5 tablets a day with 7 tablets for 7 days, valsartan 5 mg
from an 80 mg capsule, insulin glargine three times a day — are refused, each with its code;
children are dosed per kg.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from prescriptions import catalog, dosing
from prescriptions import rules as r

TODAY = date(2025, 3, 10)
ADULT = date(1960, 1, 1)
DATA = json.loads((catalog.DATA / "dosing.json").read_text(encoding="utf-8"))


def ref(name: str, strength: str) -> dosing.DosingReference:
    found = catalog.dosing_references().get((name, strength.lower()))
    assert found is not None, name
    return found


def drug(name: str, strength: str, icd: str = "I10") -> r.DrugFacts:
    return r.DrugFacts(name, name, (name,), indicated_conditions=(icd,), dosing=ref(name, strength))


AMLODIPINE = drug("苯磺酸氨氯地平片", "5mg")
VALSARTAN = drug("缬沙坦胶囊", "80mg")
GLARGINE = drug("甘精胰岛素注射液", "3ml:300单位", "E1")
METFORMIN = drug("盐酸二甲双胍片", "0.5g", "E11")
ASPIRIN = drug("阿司匹林肠溶片", "100mg")


def it(d: r.DrugFacts, dose: str, unit: str, freq: str, days: int, qty: str, **kw: str) -> r.ItemFacts:
    return r.ItemFacts(d, Decimal(dose), unit, freq, "口服", days, Decimal(qty), **kw)  # type: ignore[arg-type]


def evaluate(*items: r.ItemFacts, born: date = ADULT, weight: str | None = None, icd: str = "I10") -> list:  # type: ignore[type-arg]
    rx = r.PrescriptionFacts(
        patient=r.PatientFacts(born, (), Decimal(weight) if weight else None),
        visit=r.VisitFacts("in_progress", "doc", icd, True),
        prescriber=r.PrescriberFacts("doc"),
        items=list(items),
        on=TODAY,
        guardian=None,
    )
    return r.evaluate(rx)


def codes(v: list) -> list[tuple[str, int | None]]:  # type: ignore[type-arg]
    return [(x.code, x.item) for x in v]


def test_every_demo_catalog_product_has_a_reference_with_its_source() -> None:
    formulary = json.loads((catalog.DATA / "formulary.json").read_text(encoding="utf-8"))["items"]
    refs = catalog.dosing_references()
    missing = [p["name"] for p in formulary if (p["name"], p["strength"].lower()) not in refs]
    assert missing == []
    for e in DATA["items"]:
        assert e["source"].strip() and e["frequencies"], e["product"]
        assert e["split"] in ("whole", "half", "any") and int(e["pack"]) >= 1
        assert all(f in dosing.FREQUENCIES for f in e["frequencies"]), e["product"]
    assert len(DATA["items"]) > len(formulary)  # common chronic-disease products beyond the catalog


def test_a_usual_dose_passes() -> None:
    assert evaluate(it(AMLODIPINE, "5", "mg", "每日一次", 7, "7")) == []
    assert evaluate(it(AMLODIPINE, "1", "片", "qd", 7, "7")) == []
    assert evaluate(it(VALSARTAN, "80", "mg", "每日一次", 7, "7")) == []
    assert evaluate(it(GLARGINE, "12", "单位", "每日一次", 7, "1"), icd="E11") == []
    assert evaluate(it(METFORMIN, "0.5", "g", "每日两次", 7, "14"), icd="E11") == []


def test_amlodipine_five_tablets_a_day_with_seven_tablets_for_seven_days() -> None:
    got = evaluate(it(AMLODIPINE, "5", "片", "每日一次", 7, "7"))
    assert codes(got) == [("dose_exceeds_maximum", 0), ("quantity_mismatch", 0)]
    assert got[0].detail["single"] == "25" and got[0].detail["max_single"] == "10"
    assert got[1].detail["expected_min"] == 35 and got[1].detail["expected_max"] == 35
    # 5 mg five times a day: the daily maximum and the quantity
    got = evaluate(it(AMLODIPINE, "5", "mg", "每日五次", 7, "7"))
    assert ("dose_exceeds_maximum", 0) in codes(got)


def test_valsartan_5_mg_from_an_80_mg_capsule_is_a_unit_mismatch() -> None:
    got = evaluate(it(VALSARTAN, "5", "mg", "每日一次", 7, "7"))
    assert codes(got) == [("unit_mismatch", 0)]
    assert got[0].detail["units"] == "0.063" or got[0].detail["units"].startswith("0.06")
    # capsules are never halved; a scored tablet may be
    assert codes(evaluate(it(VALSARTAN, "40", "mg", "每日一次", 7, "4"))) == [("unit_mismatch", 0)]
    assert evaluate(it(AMLODIPINE, "2.5", "mg", "每日一次", 7, "4")) == []
    assert codes(evaluate(it(AMLODIPINE, "1.25", "mg", "每日一次", 7, "2"))) == [("unit_mismatch", 0)]
    # a unit the product cannot be given in
    got = evaluate(it(VALSARTAN, "1", "ml", "每日一次", 7, "7"))
    assert codes(got) == [("unit_mismatch", 0)] and got[0].detail["allowed_units"] == ["mg", "粒"]


def test_glargine_three_times_a_day_is_refused() -> None:
    got = evaluate(it(GLARGINE, "10", "单位", "每日三次", 7, "1"), icd="E11")
    assert codes(got) == [("dose_exceeds_maximum", 0)]
    assert got[0].detail["reason"] == "frequency_not_allowed" and got[0].detail["allowed"] == ["每日一次"]
    # and an insulin dose in tablets is not a dose
    assert ("unit_mismatch", 0) in codes(evaluate(it(GLARGINE, "1", "片", "每日一次", 7, "1"), icd="E11"))


def test_quantity_is_the_need_rounded_up_to_whole_packs() -> None:
    # metformin 1 g bid for 7 days = 28 tablets; packs of 20 → 28..40
    assert evaluate(it(METFORMIN, "1", "g", "bid", 7, "28"), icd="E11") == []
    assert evaluate(it(METFORMIN, "1", "g", "bid", 7, "40"), icd="E11") == []
    got = evaluate(it(METFORMIN, "1", "g", "bid", 7, "41"), icd="E11")
    assert codes(got) == [("quantity_mismatch", 0)] and got[0].detail["expected_max"] == 40
    assert codes(evaluate(it(METFORMIN, "1", "g", "bid", 7, "27"), icd="E11")) == [("quantity_mismatch", 0)]
    assert codes(evaluate(it(METFORMIN, "1", "g", "bid", 7, "28.5"), icd="E11")) == [("quantity_mismatch", 0)]
    # insulin: 20 units a day for 7 days = 140 units = 1 pen of 300
    assert evaluate(it(GLARGINE, "20", "单位", "qd", 7, "1"), icd="E11") == []
    assert codes(evaluate(it(GLARGINE, "20", "单位", "qd", 7, "3"), icd="E11")) == [("quantity_mismatch", 0)]
    # half tablets: 2.5 mg a day for 7 days needs 4 tablets (3.5 rounded up)
    assert codes(evaluate(it(AMLODIPINE, "2.5", "mg", "qd", 7, "3"))) == [("quantity_mismatch", 0)]
    # the quantity is counted in the product's dispensing unit
    got = evaluate(it(AMLODIPINE, "5", "mg", "qd", 7, "7", quantity_unit="盒"))
    assert codes(got) == [("unit_mismatch", 0)]


def test_children_are_dosed_per_kg() -> None:
    child = date(2017, 1, 1)  # 8 years old on TODAY (no guardian rule)
    # amlodipine: at most 0.34 mg/kg a day → 16.5 kg: 5.61 mg
    assert evaluate(it(AMLODIPINE, "5", "mg", "qd", 3, "3"), born=child, weight="16.5") == []
    got = evaluate(it(AMLODIPINE, "5", "mg", "qd", 3, "3"), born=child, weight="12")
    assert codes(got) == [("dose_exceeds_maximum", 0)]
    assert got[0].detail["per_kg"] is True and got[0].detail["max_daily"] == "4.08"
    # weight missing: weight_required (the per-kg limit cannot be applied without it)
    assert ("weight_required", None) in codes(evaluate(it(AMLODIPINE, "5", "mg", "qd", 3, "3"), born=child))
    # a product without a children's dose is refused for a child
    got = evaluate(it(ASPIRIN, "100", "mg", "qd", 3, "3"), born=child, weight="18")
    assert codes(got) == [("dose_exceeds_maximum", 0)] and got[0].detail["reason"] == "no_pediatric_dose"
    # insulin for a child: ≤ 1 unit/kg a day
    assert evaluate(it(GLARGINE, "10", "单位", "qd", 7, "1"), born=child, weight="16.5", icd="E10") == []
    got = evaluate(it(GLARGINE, "20", "单位", "qd", 7, "1"), born=child, weight="16.5", icd="E10")
    assert codes(got) == [("dose_exceeds_maximum", 0)]


def test_every_dose_violation_is_listed_together() -> None:
    got = evaluate(
        it(AMLODIPINE, "5", "片", "每日一次", 7, "7"),
        it(VALSARTAN, "5", "mg", "每日一次", 7, "7"),
        it(GLARGINE, "10", "单位", "每日三次", 7, "1"),
    )
    assert {("dose_exceeds_maximum", 0), ("quantity_mismatch", 0), ("unit_mismatch", 1)} <= set(codes(got))
    assert ("dose_exceeds_maximum", 2) in codes(got)


@pytest.mark.parametrize("text", ["每日两次", "BID", "bid", "一日2次", "b.i.d."])
def test_frequencies_are_read_as_written(text: str) -> None:
    f = dosing.parse_frequency(text)
    assert f is not None and f.code == "bid" and f.per_day == 2


def test_a_drug_without_a_reference_is_not_dose_checked() -> None:
    plain = replace(AMLODIPINE, dosing=None)
    assert evaluate(it(plain, "5", "片", "每日一次", 7, "7")) == []
