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
  what the dose, frequency and days need, rounded up to whole packs (`quantity_mismatch`);
  the arithmetic of doses, units and packs is `prescriptions.dosing`.
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
from prescriptions import dosing
from prescriptions.dosing import DosingReference
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
        if item.drug.dosing is not None:
            v += dosing.dose_violations(i, item.drug.name, item.drug.dosing, item, age, rx.patient.weight_kg)

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
