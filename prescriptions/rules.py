"""Prescribing rules — pure functions over plain facts; every violation is reported at once.

Sources (texts in /work/shared/seeds and the national rules beside them):
- 互联网诊疗管理办法（试行）(2018) Art. 16: online prescriptions only for a return visit of a
  diagnosed chronic or common condition → the drug must be indicated for the visit's
  confirmed diagnosis (`diagnosis_mismatch`).
- Art. 18/19: only the attending physician prescribes online (`visit_not_active`); no
  narcotic, psychotropic or other specially controlled drug online (`controlled_substance`);
  a child under 6 needs a guardian and an accompanying physician (`guardian_and_physician_required`).
  A drug whose ingredients could not be matched to the lists is held until a person
  classifies it (`drug_unclassified`): unknown is never taken for ordinary.
- 处方管理办法 (2007) Art. 6 and 19: at most 5 items per prescription (`too_many_items`), 7 days'
  supply, 3 days for an acute condition (`supply_exceeds_limit`); Art. 5/6: weight for children.
- 长期处方管理规范（试行）(2021): up to 12 weeks for a stable chronic condition, over 4 weeks
  with an assessment; never controlled or special-storage (cold-chain) drugs.
- 处方管理办法 Art. 6(7)/(8) and 处方审核规范 (2018) Art. 15: dose, frequency, route and
  quantity must be appropriate — checked against a structured dosing reference per product
  (`data/dosing.json`, its source on each entry): a dose in a unit the product cannot
  give (`unit_mismatch`), above the maximum single or daily dose, per kg for a child, or at
  a frequency the drug is not given at (`dose_exceeds_maximum`), a quantity that is not
  what the dose, frequency and days need, rounded up to whole packs (`quantity_mismatch`).
"""

from __future__ import annotations

import calendar
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from clinic.core.errors import Conflict, Violation
from identity.rules import IdNumberError, age_years, parse_id_number
from prescriptions.ingredients import UNCLASSIFIED

MAX_ITEMS = 5
MAX_DAYS = 7
MAX_DAYS_ACUTE = 3
LONG_TERM_MAX_DAYS = 84  # 12 weeks
LONG_TERM_ASSESSMENT_DAYS = 28  # over 4 weeks needs an assessment note
GUARDIAN_AGE = 6
DEFAULT_WEIGHT_AGE = 14
MIN_GUARDIAN_AGE = 18
CHILD_AGE_DEFAULT = 14  # 儿科: under 14 years; a reference may start adult dosing at another age

VIOLATION_CODES = (
    "controlled_substance",
    "guardian_and_physician_required",
    "diagnosis_mismatch",
    "too_many_items",
    "supply_exceeds_limit",
    "weight_required",
    "allergy_conflict",
    "duplicate_therapy",
    "interaction_contraindicated",
    "visit_not_active",
    "dose_exceeds_maximum",
    "quantity_mismatch",
    "unit_mismatch",
    "drug_unclassified",
)


# --- facts ---------------------------------------------------------------------------


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
    adult_from_age: int = CHILD_AGE_DEFAULT


@dataclass(frozen=True)
class DrugFacts:
    drug_id: str
    name: str
    ingredients: tuple[str, ...]
    control_class: str | None = None
    control_reason: str = ""
    cold_chain: bool = False
    indicated_conditions: tuple[str, ...] = ()
    dosing: DosingReference | None = None


@dataclass(frozen=True)
class ItemFacts:
    drug: DrugFacts
    dose: Decimal
    unit: str
    frequency: str
    route: str
    days: int
    quantity: Decimal
    quantity_unit: str | None = None


@dataclass(frozen=True)
class PatientFacts:
    birth_date: date
    allergies: tuple[str, ...] = ()  # canonical ingredient keys (groups already expanded)
    weight_kg: Decimal | None = None


@dataclass(frozen=True)
class VisitFacts:
    status: str
    physician_id: str | None
    diagnosis_icd10: str | None
    condition_chronic: bool | None  # None: the condition is not in the clinic's catalog


@dataclass(frozen=True)
class PrescriberFacts:
    physician_id: str


@dataclass(frozen=True)
class Guardian:
    """The guardian the physician names: a person on the child's account by `patient_id`,
    or typed (name, ID number, relation), which must match one recorded there."""

    name: str = ""
    id_number: str = ""
    relation: str = ""
    patient_id: str | None = None


@dataclass(frozen=True)
class RecordedGuardian:
    """A person recorded on the child's account who is its guardian (the account holder, or
    the holder's spouse when the child is the holder's child)."""

    patient_id: str
    name: str
    id_number: str
    relation: str  # to the child, as the pages show it (父母 …)


@dataclass(frozen=True)
class AccompanyingPhysician:
    name: str
    license_no: str
    specialty: str


@dataclass(frozen=True)
class Interaction:
    a: str
    b: str
    severity: str
    source: str


InteractionTable = Mapping[frozenset[str], Interaction]


@dataclass(frozen=True)
class PrescriptionFacts:
    patient: PatientFacts
    visit: VisitFacts
    prescriber: PrescriberFacts
    items: Sequence[ItemFacts]
    on: date
    long_term: bool = False
    assessment_note: str | None = None
    guardian: Guardian | None = None
    accompanying_physician: AccompanyingPhysician | None = None
    # the child's guardians as recorded on its account; None where unknown (the guardian is
    # then checked for form only — services always pass the account's guardians)
    recorded_guardians: tuple[RecordedGuardian, ...] | None = None
    weight_age: int = DEFAULT_WEIGHT_AGE
    interactions: InteractionTable = field(default_factory=dict)


# --- age -------------------------------------------------------------------------------


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def age_months(born: date, on: date) -> int:
    months = (on.year - born.year) * 12 + on.month - born.month
    if months > 0 and _add_months(born, months) > on:
        months -= 1
    return max(months, 0)


@dataclass(frozen=True)
class Age:
    value: int
    unit: str  # "days" | "months" | "years"

    def zh(self) -> str:
        return f"{self.value}{ {'days': '天', 'months': '月', 'years': '岁'}[self.unit] }"

    def en(self) -> str:
        unit = self.unit if self.value != 1 else self.unit[:-1]
        return f"{self.value} {unit}"


def age_display(born: date, on: date) -> Age:
    """How a prescription shows age: days under 28 days, months under 1 year, else years."""
    days = (on - born).days
    if days < 28:
        return Age(max(days, 0), "days")
    years = age_years(born, on)
    if years < 1:
        return Age(age_months(born, on), "months")
    return Age(years, "years")


def is_under(born: date, on: date, years: int) -> bool:
    return age_years(born, on) < years


# --- condition matching ----------------------------------------------------------------


def diagnosis_matches(icd10: str | None, indicated: Sequence[str]) -> bool:
    """A diagnosis code matches an indication by prefix: E11.9 matches E11, B18.1 matches B18.1."""
    if not icd10:
        return False
    code = icd10.strip().upper()
    return any(code.startswith(ind.strip().upper()) for ind in indicated if ind.strip())


def conditions_for_atc(atc_code: str | None, groups: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Conditions a drug is indicated for, from every ATC group its code falls in."""
    if not atc_code:
        return ()
    code = atc_code.strip().upper()
    out: list[str] = []
    for group, conditions in sorted(groups.items()):
        if code.startswith(group.upper()):
            out += [c for c in conditions if c not in out]
    return tuple(out)


# --- dose, frequency, unit and quantity ---------------------------------------------------


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


def dose_violations(i: int, item: ItemFacts, age: int, weight_kg: Decimal | None) -> list[Violation]:
    """unit_mismatch, dose_exceeds_maximum and quantity_mismatch for one item with a reference."""
    ref = item.drug.dosing
    if ref is None:
        return []
    name = item.drug.name
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


# --- the rules -----------------------------------------------------------------------


LICENSE_NO_DIGITS = 15  # 医师执业证书编码: 15 digits


def recorded_guardian(g: Guardian, recorded: Sequence[RecordedGuardian]) -> RecordedGuardian | None:
    """The recorded guardian the physician's guardian names, or None."""
    if g.patient_id:
        return next((r for r in recorded if r.patient_id == g.patient_id), None)
    number = g.id_number.strip().upper()
    return next(
        (r for r in recorded if r.id_number.strip().upper() == number and r.name.strip() == g.name.strip()),
        None,
    )


def guardian_problems(g: Guardian | None, on: date, recorded: Sequence[RecordedGuardian] | None = None) -> list[str]:
    if g is None:
        return ["guardian"]
    if g.patient_id:
        if recorded is not None and recorded_guardian(g, recorded) is None:
            return ["guardian.not_recorded"]
        return []
    problems = []
    if not g.name.strip():
        problems.append("guardian.name")
    if not g.relation.strip():
        problems.append("guardian.relation")
    try:
        parsed = parse_id_number(g.id_number, today=on)
        if age_years(parsed.birth_date, on) < MIN_GUARDIAN_AGE:
            problems.append("guardian.id_number (not an adult)")
    except IdNumberError:
        problems.append("guardian.id_number")
    if not problems and recorded is not None and recorded_guardian(g, recorded) is None:
        problems.append("guardian.not_recorded")
    return problems


def license_no_valid(value: str) -> bool:
    """The format of a 医师执业证书编码: exactly 15 digits."""
    v = value.strip()
    return len(v) == LICENSE_NO_DIGITS and v.isascii() and v.isdigit()


def physician_problems(p: AccompanyingPhysician | None) -> list[str]:
    if p is None:
        return ["accompanying_physician"]
    problems = [
        f"accompanying_physician.{name}"
        for name, value in (("name", p.name), ("license_no", p.license_no), ("specialty", p.specialty))
        if not value.strip()
    ]
    if p.license_no.strip() and not license_no_valid(p.license_no):
        problems.append("accompanying_physician.license_no (15 digits)")
    return problems


def evaluate(rx: PrescriptionFacts) -> list[Violation]:
    """Every rule the prescription breaks (empty = it may be signed)."""
    v: list[Violation] = []
    visit, items = rx.visit, list(rx.items)

    if visit.status != "in_progress" or not visit.physician_id or visit.physician_id != rx.prescriber.physician_id:
        v.append(
            Violation(
                "visit_not_active",
                "Only the attending physician of a visit in progress may prescribe (Art. 18).",
                detail={"visit_status": visit.status},
            )
        )

    if len(items) > MAX_ITEMS:
        v.append(
            Violation(
                "too_many_items",
                f"A prescription holds at most {MAX_ITEMS} items (处方管理办法 Art. 6); this one has {len(items)}.",
                detail={"limit": MAX_ITEMS, "count": len(items)},
            )
        )

    # children
    age = age_years(rx.patient.birth_date, rx.on)
    if age < GUARDIAN_AGE:
        missing = guardian_problems(rx.guardian, rx.on, rx.recorded_guardians) + physician_problems(
            rx.accompanying_physician
        )
        if missing:
            v.append(
                Violation(
                    "guardian_and_physician_required",
                    "A child under 6 is prescribed for online only with a guardian recorded on the child's "
                    "account (by patient_id, or name, valid ID number and relation matching one) and an "
                    "accompanying physician (name, 15-digit licence number, specialty) (Art. 19).",
                    detail={"missing": missing, "age_years": age},
                )
            )
    if age < rx.weight_age and (rx.patient.weight_kg is None or rx.patient.weight_kg <= 0):
        v.append(
            Violation(
                "weight_required",
                f"The child's weight is required for patients under {rx.weight_age} years.",
                detail={"age_years": age, "weight_age": rx.weight_age},
            )
        )

    # supply limits
    chronic = visit.condition_chronic is True
    acute = visit.condition_chronic is False
    ordinary_limit = MAX_DAYS_ACUTE if acute else MAX_DAYS
    long_term_ok = rx.long_term and chronic
    for i, item in enumerate(items):
        drug = item.drug
        if drug.control_class == UNCLASSIFIED:
            v.append(
                Violation(
                    "drug_unclassified",
                    f"{drug.name}: its ingredients are not yet classified against the control lists; "
                    "it cannot be prescribed until a pharmacist or administrator classifies it.",
                    item=i,
                    detail={"control_class": drug.control_class},
                )
            )
        elif drug.control_class:
            v.append(
                Violation(
                    "controlled_substance",
                    f"{drug.name}: specially controlled drugs are never prescribed online (Art. 19): "
                    f"{drug.control_reason or drug.control_class}.",
                    item=i,
                    detail={"control_class": drug.control_class},
                )
            )
        if not any(diagnosis_matches(visit.diagnosis_icd10, [c]) for c in drug.indicated_conditions):
            v.append(
                Violation(
                    "diagnosis_mismatch",
                    f"{drug.name} is not indicated for the visit's confirmed diagnosis "
                    f"{visit.diagnosis_icd10 or '(none)'} (Art. 16).",
                    item=i,
                    detail={"diagnosis": visit.diagnosis_icd10, "indicated": list(drug.indicated_conditions)},
                )
            )
        eligible_long = long_term_ok and not drug.control_class and not drug.cold_chain
        limit = LONG_TERM_MAX_DAYS if eligible_long else ordinary_limit
        if eligible_long and item.days > LONG_TERM_ASSESSMENT_DAYS and not (rx.assessment_note or "").strip():
            limit = LONG_TERM_ASSESSMENT_DAYS
        if item.days > limit:
            v.append(
                Violation(
                    "supply_exceeds_limit",
                    _supply_message(drug, item.days, limit, rx, acute, chronic),
                    item=i,
                    detail={"days": item.days, "limit": limit},
                )
            )

    # dose, frequency, unit and quantity, against each product's dosing reference
    for i, item in enumerate(items):
        v += dose_violations(i, item, age, rx.patient.weight_kg)

    # allergies, duplicates, interactions
    allergies = set(rx.patient.allergies)
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        hits = sorted(allergies & set(item.drug.ingredients))
        if hits:
            v.append(
                Violation(
                    "allergy_conflict",
                    f"{item.drug.name} contains {', '.join(hits)}, recorded as an allergy of the patient.",
                    item=i,
                    detail={"ingredients": hits},
                )
            )
        for ing in dict.fromkeys(item.drug.ingredients):
            if ing in seen and seen[ing] != i:
                v.append(
                    Violation(
                        "duplicate_therapy",
                        f"{ing} is already prescribed in item {seen[ing]}.",
                        item=i,
                        detail={"ingredient": ing, "other_item": seen[ing]},
                    )
                )
            else:
                seen.setdefault(ing, i)
    if rx.interactions:
        for i, later in enumerate(items):
            for j in range(i):
                for a in later.drug.ingredients:
                    for b in items[j].drug.ingredients:
                        hit = rx.interactions.get(frozenset((a, b)))
                        if hit is not None and hit.severity == "contraindicated":
                            v.append(
                                Violation(
                                    "interaction_contraindicated",
                                    f"{a} with {b} is contraindicated ({hit.source}).",
                                    item=i,
                                    detail={"other_item": j, "ingredients": sorted((a, b)), "source": hit.source},
                                )
                            )
    return v


def _supply_message(drug: DrugFacts, days: int, limit: int, rx: PrescriptionFacts, acute: bool, chronic: bool) -> str:
    if rx.long_term and not chronic:
        why = "a long-term prescription is only for a chronic condition in the catalog; the ordinary limit applies"
    elif rx.long_term and (drug.cold_chain or drug.control_class):
        why = "long-term prescriptions exclude controlled and cold-chain drugs (长期处方管理规范)"
    elif rx.long_term and limit == LONG_TERM_ASSESSMENT_DAYS:
        why = "over 4 weeks needs an assessment note (长期处方管理规范)"
    elif rx.long_term:
        why = "a long-term prescription covers at most 12 weeks"
    elif acute:
        why = "at most 3 days for an acute condition (处方管理办法 Art. 19)"
    else:
        why = "at most 7 days (处方管理办法 Art. 19); a long-term prescription needs the long_term flag"
    return f"{drug.name}: {days} days' supply exceeds the limit of {limit}: {why}."


def interaction_table(pairs: Sequence[Interaction]) -> dict[frozenset[str], Interaction]:
    return {frozenset((p.a, p.b)): p for p in pairs}


# --- lifecycle ----------------------------------------------------------------------------


class PrescriptionStatus(enum.StrEnum):
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETURNED = "returned"
    DISPENSED = "dispensed"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class PrescriptionEvent(enum.StrEnum):
    APPROVE = "approve"  # the pharmacist approves it (the words are the review's decisions)
    REJECT = "reject"  # the pharmacist rejects it
    RETURN = "return"  # the pharmacist returns it to the physician for a revision
    DISPENSE = "dispense"  # two pharmacists dispense and check it
    DISPATCH = "dispatch"  # its delivery leaves the pharmacy
    DELIVER = "deliver"  # its delivery reaches the door
    EXPIRE = "expire"  # its validity ended before it was dispensed
    CANCEL = "cancel"  # the physician voids it before review, or a returned one is withdrawn


TRANSITIONS: dict[tuple[PrescriptionStatus, PrescriptionEvent], PrescriptionStatus] = {
    (PrescriptionStatus.PENDING_REVIEW, PrescriptionEvent.APPROVE): PrescriptionStatus.APPROVED,
    (PrescriptionStatus.PENDING_REVIEW, PrescriptionEvent.REJECT): PrescriptionStatus.REJECTED,
    (PrescriptionStatus.PENDING_REVIEW, PrescriptionEvent.RETURN): PrescriptionStatus.RETURNED,
    (PrescriptionStatus.PENDING_REVIEW, PrescriptionEvent.EXPIRE): PrescriptionStatus.EXPIRED,
    (PrescriptionStatus.PENDING_REVIEW, PrescriptionEvent.CANCEL): PrescriptionStatus.CANCELLED,
    (PrescriptionStatus.APPROVED, PrescriptionEvent.DISPENSE): PrescriptionStatus.DISPENSED,
    (PrescriptionStatus.APPROVED, PrescriptionEvent.EXPIRE): PrescriptionStatus.EXPIRED,
    (PrescriptionStatus.APPROVED, PrescriptionEvent.CANCEL): PrescriptionStatus.CANCELLED,
    (PrescriptionStatus.DISPENSED, PrescriptionEvent.DISPATCH): PrescriptionStatus.OUT_FOR_DELIVERY,
    (PrescriptionStatus.DISPENSED, PrescriptionEvent.DELIVER): PrescriptionStatus.DELIVERED,
    (PrescriptionStatus.OUT_FOR_DELIVERY, PrescriptionEvent.DELIVER): PrescriptionStatus.DELIVERED,
    (PrescriptionStatus.RETURNED, PrescriptionEvent.CANCEL): PrescriptionStatus.CANCELLED,
}

# The status each event leads to (one per event): the refusal of an illegal move names it.
EVENT_TARGETS: dict[PrescriptionEvent, PrescriptionStatus] = {event: nxt for (_, event), nxt in TRANSITIONS.items()}


class IllegalPrescriptionTransition(Conflict):
    code = "illegal_transition"
    default_message = "The prescription cannot move to that status from its current one."


def transition(state: PrescriptionStatus, event: PrescriptionEvent) -> PrescriptionStatus:
    """The one transition function of the prescription lifecycle: the next status, or
    IllegalPrescriptionTransition (409 illegal_transition).

    Dispensing happens once: only an approved prescription is dispensed, and nothing
    leads back to approved. Rejected, delivered, expired and cancelled are final.
    """
    nxt = TRANSITIONS.get((state, event))
    if nxt is None:
        target = EVENT_TARGETS[event].value
        raise IllegalPrescriptionTransition(
            f"A prescription that is {state.value} cannot become {target}.", current=state.value
        )
    return nxt


MIN_VALID_DAYS, MAX_VALID_DAYS = 1, 3


def valid_days(configured: object) -> int:
    """The validity in days (处方管理办法 Art. 18: one day; up to three when the physician notes it)."""
    try:
        days = int(str(configured))
    except ValueError:
        return MIN_VALID_DAYS
    return min(max(days, MIN_VALID_DAYS), MAX_VALID_DAYS)


def duplicates_across(items: Sequence[ItemFacts], active: Mapping[str, str]) -> list[Violation]:
    """`duplicate_therapy` across prescriptions: an ingredient already in one of the visit's
    active prescriptions (`active` maps ingredient → that prescription's id) is refused too,
    so a second prescription cannot repeat what the first one gives."""
    v: list[Violation] = []
    for i, item in enumerate(items):
        for ing in dict.fromkeys(item.drug.ingredients):
            if ing in active:
                v.append(
                    Violation(
                        "duplicate_therapy",
                        f"{ing} is already prescribed in another active prescription of this visit.",
                        item=i,
                        detail={"ingredient": ing, "other_prescription": active[ing]},
                    )
                )
    return v
