"""Doses against a product's dosing reference — pure functions over plain values.

A reference (data/dosing.json, read by `prescriptions.catalog`) says how one product is
given and counted: the dose unit and how much of it one administration unit holds, whether
that unit may be halved, the frequencies it is given at, the adult's (and, per kg, the
child's) maximum single and daily dose, and the dispensing unit and pack. Here a written
dose is turned into administration units, a written frequency into administrations a day
and a week, and a quantity checked against what the dose, frequency and days need
(处方管理办法 Art. 6(7)/(8), 处方审核规范 Art. 15): `dose_violations` reports
`unit_mismatch`, `dose_exceeds_maximum` and `quantity_mismatch` for one item, and
`prescriptions.rules.evaluate` adds them to the prescription's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from clinic.core.errors import Violation


@dataclass(frozen=True)
class DoseLimits:
    """Amounts in the reference's `dose_unit` (per kg where the name says so); None = no limit stated."""

    usual_single: Decimal | None = None
    max_single: Decimal | None = None
    max_daily: Decimal | None = None
    per_kg_single_max: Decimal | None = None
    per_kg_daily_max: Decimal | None = None


@dataclass(frozen=True)
class DosingReference:
    """How one product is dosed and dispensed (data/dosing.json).

    `per_unit` of `dose_unit` is in one administration unit (`admin_unit`: a tablet, a
    capsule, an inhalation, one insulin unit); `split` says whether an administration unit
    may be halved (`half`, scored tablets), only given whole (`whole`) or measured freely
    (`any`, liquids). Quantities are counted in `dispense_unit` (片, 粒, 支, 瓶), each
    holding `admin_per_dispense` administration units; a pack holds `pack` of them.
    """

    dose_unit: str
    per_unit: Decimal
    admin_unit: str
    split: str
    dispense_unit: str
    admin_per_dispense: Decimal
    pack: int
    adult: DoseLimits
    child: DoseLimits | None
    frequencies: tuple[str, ...]
    source: str
    adult_from_age: int  # below it, the child's limits apply


class DosedItem(Protocol):
    """One prescribed item as written: what `dose_violations` reads of it."""

    @property
    def dose(self) -> Decimal: ...
    @property
    def unit(self) -> str: ...
    @property
    def frequency(self) -> str: ...
    @property
    def days(self) -> int: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def quantity_unit(self) -> str | None: ...


@dataclass(frozen=True)
class Frequency:
    code: str
    zh: str
    per_day: int  # administrations on a dosing day
    per_week: Decimal | None  # administrations a week; None = as needed (prn)


FREQUENCY_TABLE: tuple[tuple[Frequency, tuple[str, ...]], ...] = (
    (
        Frequency("qd", "每日一次", 1, Decimal(7)),
        ("每日一次", "一日一次", "每天一次", "每日1次", "一日1次", "qd", "q.d.", "q24h"),
    ),
    (Frequency("qn", "每晚一次", 1, Decimal(7)), ("每晚一次", "每晚1次", "睡前一次", "睡前", "qn", "q.n.", "hs")),
    (
        Frequency("bid", "每日两次", 2, Decimal(14)),
        ("每日两次", "每日二次", "一日两次", "一日二次", "每日2次", "一日2次", "bid", "b.i.d."),
    ),
    (Frequency("q12h", "每12小时一次", 2, Decimal(14)), ("每12小时一次", "每12小时1次", "q12h")),
    (Frequency("tid", "每日三次", 3, Decimal(21)), ("每日三次", "一日三次", "每日3次", "一日3次", "tid", "t.i.d.")),
    (Frequency("q8h", "每8小时一次", 3, Decimal(21)), ("每8小时一次", "每8小时1次", "q8h")),
    (Frequency("qid", "每日四次", 4, Decimal(28)), ("每日四次", "一日四次", "每日4次", "一日4次", "qid", "q.i.d.")),
    (Frequency("q6h", "每6小时一次", 4, Decimal(28)), ("每6小时一次", "每6小时1次", "q6h")),
    (Frequency("qw", "每周一次", 1, Decimal(1)), ("每周一次", "每周1次", "qw", "q.w.")),
    (Frequency("biw", "每周两次", 1, Decimal(2)), ("每周两次", "每周二次", "每周2次", "biw")),
    (Frequency("tiw", "每周三次", 1, Decimal(3)), ("每周三次", "每周3次", "tiw")),
    (Frequency("prn", "必要时", 1, None), ("必要时", "需要时", "prn", "p.r.n.")),
)
FREQUENCIES: dict[str, Frequency] = {f.code: f for f, _ in FREQUENCY_TABLE}
_FREQUENCY_WORDS = {w.replace(" ", "").lower(): f for f, words in FREQUENCY_TABLE for w in words}


def parse_frequency(text: str) -> Frequency | None:
    """A frequency as written (每日两次, bid, BID, q12h …), or None when it is not one we know."""
    return _FREQUENCY_WORDS.get(text.replace(" ", "").replace("　", "").lower())


MASS_MG = {"mg": Decimal(1), "g": Decimal(1000), "μg": Decimal("0.001")}
_UNIT_WORDS = {
    "mg": "mg",
    "毫克": "mg",
    "g": "g",
    "克": "g",
    "μg": "μg",
    "µg": "μg",
    "ug": "μg",
    "mcg": "μg",
    "微克": "μg",
    "u": "单位",
    "iu": "单位",
    "单位": "单位",
    "国际单位": "单位",
    "ml": "ml",
    "毫升": "ml",
    "揿": "揿",
    "喷": "揿",
}


def normalise_unit(text: str) -> str:
    t = text.strip()
    return _UNIT_WORDS.get(t.lower(), t)


def _fmt(x: Decimal) -> str:
    q = x.quantize(Decimal("0.001")).normalize()
    return f"{q:f}"


def _ceil(x: Decimal) -> int:
    n = int(x)
    return n + 1 if x > n else n


def admin_units(dose: Decimal, unit: str, ref: DosingReference) -> Decimal | None:
    """The dose counted in administration units (tablets, inhalations, insulin units), or None
    when the unit cannot express this product (ml of a tablet, mg of a compound tablet)."""
    u = normalise_unit(unit)
    if u == normalise_unit(ref.admin_unit):
        return dose
    base = normalise_unit(ref.dose_unit)
    if u == base:
        return dose / ref.per_unit
    if u in MASS_MG and base in MASS_MG:
        return dose * MASS_MG[u] / MASS_MG[base] / ref.per_unit
    return None


def splittable(units: Decimal, split: str) -> bool:
    if units <= 0:
        return False
    if split == "whole":
        return units == units.to_integral_value()
    if split == "half":
        return units * 2 == (units * 2).to_integral_value()
    return True


def dose_limits(ref: DosingReference, age: int, weight_kg: Decimal | None) -> tuple[Decimal | None, Decimal | None]:
    """(max single, max daily) in `dose_unit` for this patient: an adult's, or a child's by weight."""
    if age >= ref.adult_from_age or ref.child is None:
        return ref.adult.max_single, ref.adult.max_daily
    c = ref.child
    single = [x for x in (c.max_single, ref.adult.max_single) if x is not None]
    daily = [x for x in (c.max_daily, ref.adult.max_daily) if x is not None]
    if weight_kg is not None and weight_kg > 0:
        if c.per_kg_single_max is not None:
            single.append(c.per_kg_single_max * weight_kg)
        if c.per_kg_daily_max is not None:
            daily.append(c.per_kg_daily_max * weight_kg)
    return (min(single) if single else None), (min(daily) if daily else None)


def dose_violations(
    i: int, name: str, ref: DosingReference, item: DosedItem, age: int, weight_kg: Decimal | None
) -> list[Violation]:
    """unit_mismatch, dose_exceeds_maximum and quantity_mismatch for item `i` (the product
    `name`, dosed by `ref`)."""
    out: list[Violation] = []
    units = admin_units(item.dose, item.unit, ref)
    if units is None:
        out.append(
            Violation(
                "unit_mismatch",
                f"{name}: a dose in {item.unit} does not fit the product ({ref.per_unit} {ref.dose_unit} per "
                f"{ref.admin_unit}); write it in {ref.dose_unit} or {ref.admin_unit}.",
                item=i,
                detail={"unit": item.unit, "allowed_units": sorted({ref.dose_unit, ref.admin_unit})},
            )
        )
    elif not splittable(units, ref.split):
        out.append(
            Violation(
                "unit_mismatch",
                f"{name}: {item.dose} {item.unit} is {_fmt(units)} {ref.admin_unit}; this product is given only in "
                + ("whole or half units" if ref.split == "half" else "whole units")
                + f" of {_fmt(ref.per_unit)} {ref.dose_unit}.",
                item=i,
                detail={
                    "unit": item.unit,
                    "units": _fmt(units),
                    "admin_unit": ref.admin_unit,
                    "split": ref.split,
                    "per_unit": _fmt(ref.per_unit),
                    "dose_unit": ref.dose_unit,
                },
            )
        )
    if item.quantity_unit and normalise_unit(item.quantity_unit) != normalise_unit(ref.dispense_unit):
        out.append(
            Violation(
                "unit_mismatch",
                f"{name}: the quantity is counted in {ref.dispense_unit}, not {item.quantity_unit}.",
                item=i,
                detail={"quantity_unit": item.quantity_unit, "dispense_unit": ref.dispense_unit},
            )
        )

    freq = parse_frequency(item.frequency)
    if freq is None or freq.code not in ref.frequencies:
        allowed = [FREQUENCIES[c].zh for c in ref.frequencies if c in FREQUENCIES]
        out.append(
            Violation(
                "dose_exceeds_maximum",
                f"{name} is given {' / '.join(allowed)}; '{item.frequency}' is not an allowed frequency "
                f"({ref.source}).",
                item=i,
                detail={"reason": "frequency_not_allowed", "frequency": item.frequency, "allowed": allowed},
            )
        )
    child = age < ref.adult_from_age
    if child and ref.child is None:
        out.append(
            Violation(
                "dose_exceeds_maximum",
                f"{name}: no dose for children is established for this product ({ref.source}).",
                item=i,
                detail={"reason": "no_pediatric_dose", "age_years": age},
            )
        )
    if units is None:
        return out

    single = units * ref.per_unit
    max_single, max_daily = dose_limits(ref, age, weight_kg)
    daily = single * freq.per_day if freq is not None and freq.per_week is not None else None
    if freq is not None and freq.per_week is None and max_daily is not None:
        daily = None  # as needed: the daily maximum bounds the quantity below
    over_single = max_single is not None and single > max_single
    over_daily = daily is not None and max_daily is not None and daily > max_daily
    if over_single or over_daily:
        per_kg = child and weight_kg is not None and ref.child is not None
        u = ref.dose_unit
        given = [f"{single.normalize():f} {u} a dose"] + ([f"{daily.normalize():f} {u} a day"] if daily else [])
        limits = ([f"{max_single.normalize():f} {u} a dose"] if max_single is not None else []) + (
            [f"{max_daily.normalize():f} {u} a day"] if max_daily is not None else []
        )
        weight = f" for {weight_kg} kg" if per_kg else ""
        out.append(
            Violation(
                "dose_exceeds_maximum",
                f"{name}: {', '.join(given)} exceeds the maximum of {' / '.join(limits)}{weight} ({ref.source}).",
                item=i,
                detail={
                    "reason": "over_single" if over_single else "over_daily",
                    "single": _fmt(single),
                    "daily": _fmt(daily) if daily is not None else None,
                    "max_single": _fmt(max_single) if max_single is not None else None,
                    "max_daily": _fmt(max_daily) if max_daily is not None else None,
                    "dose_unit": ref.dose_unit,
                    "per_kg": per_kg,
                },
            )
        )

    if freq is None or not splittable(units, ref.split):
        return out
    if freq.per_week is not None:
        doses = _ceil(freq.per_week * item.days / 7)
        need = _ceil(units * doses / ref.admin_per_dispense)
        low = need
    elif max_daily is not None:  # as needed: at most the daily maximum every day, nothing below
        need = _ceil(max_daily / ref.per_unit * item.days / ref.admin_per_dispense)
        low = 1
    else:
        return out
    high = _ceil(Decimal(need) / ref.pack) * ref.pack
    q = item.quantity
    if q != q.to_integral_value() or q < low or q > high:
        expected = f"{low}" if low == high else f"{low}–{high}"
        out.append(
            Violation(
                "quantity_mismatch",
                f"{name}: {_fmt(q)} {ref.dispense_unit} does not match {item.dose} {item.unit} {item.frequency} for "
                f"{item.days} days: {expected} {ref.dispense_unit} (the need rounded up to whole packs of "
                f"{ref.pack}).",
                item=i,
                detail={
                    "quantity": _fmt(q),
                    "expected_min": low,
                    "expected_max": high,
                    "quantity_unit": ref.dispense_unit,
                    "pack": ref.pack,
                },
            )
        )
    return out
