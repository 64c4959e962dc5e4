"""The drug catalog: products and their control class, dosing references, the seed
formulary and interactions, the classification queue of held products, search and look-up.

Each function flushes and audits; the caller (request, CLI command) commits.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import and_, select

from clinic.core import audit
from clinic.core.db import db, get_or_404, utcnow
from clinic.core.errors import Conflict, Invalid
from clinic.core.principal import Principal
from identity.models import Account
from prescriptions import dosing, rules
from prescriptions import ingredients as ing
from prescriptions.models import Drug, DrugInteraction

DATA = ing.DATA
SEARCH_LIMIT = 30


@cache
def atc_groups() -> dict[str, tuple[str, ...]]:
    data = json.loads((DATA / "atc_conditions.json").read_text(encoding="utf-8"))
    return {k: tuple(v) for k, v in data["groups"].items()}


def _strength_key(strength: str) -> str:
    return strength.replace(" ", "").replace("µ", "μ").lower()


def _limits(raw: dict[str, str] | None) -> dosing.DoseLimits | None:
    if raw is None:
        return None
    return dosing.DoseLimits(**{k: Decimal(v) for k, v in raw.items()})


@cache
def dosing_references() -> dict[tuple[str, str], dosing.DosingReference]:
    """The dosing reference (data/dosing.json), keyed by (product name, strength) and by
    (generic name in English, strength) so that an imported product of the same
    ingredient and strength finds it too."""
    data = json.loads((DATA / "dosing.json").read_text(encoding="utf-8"))
    out: dict[tuple[str, str], dosing.DosingReference] = {}
    for e in data["items"]:
        adult = _limits(e["adult"])
        assert adult is not None
        ref = dosing.DosingReference(
            dose_unit=e["dose_unit"],
            per_unit=Decimal(e["per_unit"]),
            admin_unit=e["admin_unit"],
            split=e["split"],
            dispense_unit=e["dispense_unit"],
            admin_per_dispense=Decimal(e["admin_per_dispense"]),
            pack=int(e["pack"]),
            adult=adult,
            child=_limits(e["child"]),
            frequencies=tuple(e["frequencies"]),
            source=e["source"],
            adult_from_age=int(e.get("adult_from_age", rules.CHILD_AGE_DEFAULT)),
        )
        strength = _strength_key(e["strength"])
        out[(e["product"], strength)] = ref
        out.setdefault(("en:" + e["generic_name_en"].lower(), strength), ref)
    return out


def dosing_for(drug: Drug) -> dosing.DosingReference | None:
    refs = dosing_references()
    strength = _strength_key(drug.strength)
    return refs.get((drug.name, strength)) or (
        refs.get(("en:" + drug.generic_name_en.lower(), strength)) if drug.generic_name_en else None
    )


SPLIT_ZH = {"whole": "须整粒/整片给药", "half": "可掰半", "any": "按量取用"}


def _amount(x: Decimal | None, unit: str) -> str | None:
    return f"{x.normalize():f} {unit}" if x is not None else None


@dataclass(frozen=True)
class DosingSummary:
    """A product's dosing reference in words (Chinese), as the prescribing and review pages show it."""

    adult: str
    child: str
    frequencies: str
    unit: str
    pack: str
    dispense_unit: str
    source: str


def dosing_summary(drug: Drug) -> DosingSummary | None:
    """The dosing reference of a product as the pages show it (Chinese), or None."""
    ref = dosing_for(drug)
    if ref is None:
        return None
    u = ref.dose_unit
    adult = [
        f"常用单次 {_amount(ref.adult.usual_single, u)}" if ref.adult.usual_single is not None else "",
        f"单次最大 {_amount(ref.adult.max_single, u)}" if ref.adult.max_single is not None else "",
        f"每日最大 {_amount(ref.adult.max_daily, u)}" if ref.adult.max_daily is not None else "",
    ]
    child = "儿童：未确立剂量，不得用于儿童"
    if ref.child is not None:
        c = ref.child
        parts = [
            f"单次 ≤ {_amount(c.per_kg_single_max, u)}/kg" if c.per_kg_single_max is not None else "",
            f"每日 ≤ {_amount(c.per_kg_daily_max, u)}/kg" if c.per_kg_daily_max is not None else "",
            f"单次最大 {_amount(c.max_single, u)}" if c.max_single is not None else "",
            f"每日最大 {_amount(c.max_daily, u)}" if c.max_daily is not None else "",
        ]
        child = "儿童：" + "，".join(p for p in parts if p)
    return DosingSummary(
        adult="成人：" + ("，".join(p for p in adult if p) or "剂量个体化"),
        child=f"{child}（{ref.adult_from_age}岁起按成人）",
        frequencies="、".join(dosing.FREQUENCIES[f].zh for f in ref.frequencies if f in dosing.FREQUENCIES),
        unit=f"每{ref.admin_unit} {_amount(ref.per_unit, u)}，{SPLIT_ZH.get(ref.split, '')}"
        if ref.admin_unit != u
        else f"按{u}给药",
        pack=f"数量单位：{ref.dispense_unit}；每包装 {ref.pack} {ref.dispense_unit}",
        dispense_unit=ref.dispense_unit,
        source=ref.source,
    )


def _search_text(*parts: str) -> str:
    return " | ".join(ing.normalise(p) for p in parts if p)


@dataclass(frozen=True)
class ProductSpec:
    name: str
    form: str
    strength: str
    route: str
    generic_name: str = ""
    generic_name_en: str = ""
    atc_code: str | None = None
    cold_chain: bool = False
    ingredients: tuple[str, ...] = ()
    source: str = "seed"


def _classified(spec: ProductSpec) -> tuple[ing.Classification, dict[str, Any]]:
    c = ing.classify(
        spec.name,
        form=spec.form,
        strength=spec.strength,
        route=spec.route,
        ingredients=spec.ingredients,
        generic_name=spec.generic_name,
    )
    values = {
        "generic_name": spec.generic_name,
        "generic_name_en": spec.generic_name_en or "/".join(c.ingredients),
        "route": spec.route,
        "atc_code": spec.atc_code,
        "control_class": c.control_class,
        "control_reason": c.reason,
        "cold_chain": spec.cold_chain,
        "ingredients": list(c.ingredients),
        "indicated_conditions": list(rules.conditions_for_atc(spec.atc_code, atc_groups())),
        "source": spec.source,
    }
    return c, values


def _keeps_its_class(drug: Drug, found: str | None) -> bool:
    """A person's decision stands against a still-unresolved import; a controlled class stands
    against anything less than controlled."""
    if drug.classified_by is not None and found in (None, ing.UNCLASSIFIED):
        return True
    return drug.control_class in ing.CONTROL_CLASSES and found not in ing.CONTROL_CLASSES


def upsert_product(spec: ProductSpec) -> tuple[Drug, ing.Classification, bool]:
    """Create or update a catalog product, classified against the control lists.

    A product once classified as controlled is never turned into an ordinary or held one
    by a later import (the stricter classification stays), and a person's classification of
    a held product is not undone by a later import that still cannot resolve it.
    """
    session = db.session()
    c, values = _classified(spec)
    drug = session.scalar(
        select(Drug).where(Drug.name == spec.name, Drug.form == spec.form, Drug.strength == spec.strength)
    )
    created = drug is None
    if drug is None:
        drug = Drug(name=spec.name, form=spec.form, strength=spec.strength)
        session.add(drug)
    elif _keeps_its_class(drug, values["control_class"]):
        values["control_class"], values["control_reason"] = drug.control_class, drug.control_reason
    elif drug.control_class in ing.CONTROL_CLASSES:
        values["control_class"] = ing.strictest([drug.control_class, values["control_class"]])
    if not values["atc_code"] and drug.atc_code:
        values["atc_code"] = drug.atc_code
        values["indicated_conditions"] = list(drug.indicated_conditions)
    for key, value in values.items():
        setattr(drug, key, value)
    drug.search_text = _search_text(drug.name, drug.generic_name, drug.generic_name_en, *c.ingredients)
    return drug, c, created


def _formulary() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((DATA / "formulary.json").read_text(encoding="utf-8"))["items"]
    return items


def seed_interactions() -> int:
    session = db.session()
    data = json.loads((DATA / "interactions.json").read_text(encoding="utf-8"))
    existing = {(r.ingredient_a, r.ingredient_b) for r in session.scalars(select(DrugInteraction))}
    added = 0
    for p in data["pairs"]:
        a, b = sorted((ing.normalise(p["a"]), ing.normalise(p["b"])))
        if (a, b) in existing:
            continue
        session.add(DrugInteraction(ingredient_a=a, ingredient_b=b, severity=p["severity"], source=p["source"]))
        existing.add((a, b))
        added += 1
    return added


def seed_catalog() -> dict[str, str]:
    """Load the control lists and the seed formulary into the catalog (idempotent).

    Returns a few generic names → drug ids (API.md's `"drugs"` of `flask demo`).
    """
    session = db.session()
    ids: dict[str, str] = {}
    for item in _formulary():
        drug, _c, _ = upsert_product(
            ProductSpec(
                name=item["name"],
                form=item["form"],
                strength=item["strength"],
                route=item["route"],
                generic_name=item["generic_name"],
                generic_name_en=item["generic_name_en"],
                atc_code=item["atc_code"],
                cold_chain=bool(item["cold_chain"]),
            )
        )
        session.flush()
        ids.setdefault(item["generic_name_en"], str(drug.id))
    # the official lists themselves, as substances: searchable, and refused online
    for entry in ing.list_entries():
        upsert_product(
            ProductSpec(
                name=entry.zh,
                form="",
                strength="",
                route="",
                generic_name=entry.zh,
                generic_name_en=entry.en,
                source="control_list",
            )
        )
    seed_interactions()
    session.flush()
    ids.setdefault("insulin", ids.get("insulin glargine", ""))
    audit.record(session, "catalog.seeded", subject_type="catalog", detail={"products": len(_formulary())})
    return {k: v for k, v in ids.items() if v}


# --- the classification queue: held products waiting for a person's decision ------------

CLASSIFICATION_CHOICES = ("ordinary", *ing.CONTROL_CLASSES)
NOTE_MAX = 500


def unclassified_drugs(limit: int = 200) -> list[Drug]:
    """Products held as unclassified, oldest first (the queue of pharmacists and administrators)."""
    query = select(Drug).where(Drug.control_class == ing.UNCLASSIFIED).order_by(Drug.created_at, Drug.name)
    return list(db.session.scalars(query.limit(limit)))


def recently_classified(limit: int = 20) -> list[tuple[Drug, str]]:
    """The latest decisions of the queue, newest first, with the name of who made each."""
    query = (
        select(Drug, Account.display_name)
        .join(Account, Account.id == Drug.classified_by)
        .where(Drug.classified_at.is_not(None))
        .order_by(Drug.classified_at.desc())
        .limit(limit)
    )
    return [(drug, name) for drug, name in db.session.execute(query)]


def classify_drug(who: Principal, drug_id: uuid.UUID, choice: str, note: str) -> Drug:
    """A pharmacist's or administrator's decision on a held product: ordinary, or a control class.

    The reason is required and kept with the class; the decision is audited with what it
    replaced. Only a held product is classified here: the lists decide every other one.
    """
    drug = get_or_404(Drug, drug_id)
    note = (note or "").strip()
    if choice not in CLASSIFICATION_CHOICES:
        raise Invalid("Choose ordinary or one of the control classes.", code="invalid_classification")
    if not note or len(note) > NOTE_MAX:
        raise Invalid(
            "Give the reason for the classification (at most %(max)s characters).",
            code="classification_reason_required",
            params={"max": NOTE_MAX},
        )
    if drug.control_class != ing.UNCLASSIFIED:
        raise Conflict("This drug is no longer waiting for classification.", code="drug_already_classified")
    before = drug.control_class
    cls = None if choice == "ordinary" else choice
    label = "普通药品（非特殊管理）" if cls is None else ing.CLASS_NAMES_ZH[cls]
    drug.control_class = cls
    drug.control_reason = f"人工分类：{label}。理由：{note}"
    drug.classified_by = who.account_id
    drug.classified_at = utcnow()
    audit.record(
        db.session(),
        "drug.classified",
        subject_type="drug",
        subject_id=drug.id,
        detail={"name": drug.name, "from": before, "to": cls, "reason": note},
    )
    db.session.flush()
    return drug


# --- search and lookup ------------------------------------------------------------------


def search_drugs(q: str, limit: int = SEARCH_LIMIT) -> list[Drug]:
    """Catalog search by Chinese or English, generic or product name; best matches first."""
    needle = ing.normalise(q)
    if not needle:
        raise Invalid("Give a search term.")
    like = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    found = list(
        db.session.scalars(
            select(Drug).where(Drug.search_text.like(like, escape="\\")).order_by(Drug.name).limit(limit * 4)
        )
    )

    def rank(d: Drug) -> tuple[int, int, str]:
        exact = needle in (ing.normalise(d.generic_name), ing.normalise(d.generic_name_en), ing.normalise(d.name))
        return (0 if exact else 1, 0 if d.source != "control_list" else 1, d.name)

    return sorted(found, key=rank)[:limit]


def get_drugs(ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Drug]:
    wanted = list(ids)
    drugs = {d.id: d for d in db.session.scalars(select(Drug).where(Drug.id.in_(wanted)))} if wanted else {}
    unknown = [str(i) for i in wanted if i not in drugs]
    if unknown:
        raise Invalid(f"Unknown drug id(s): {', '.join(unknown)}.", code="unknown_drug", drug_ids=unknown)
    return drugs


def drug_facts(drug: Drug) -> rules.DrugFacts:
    return rules.DrugFacts(
        drug_id=str(drug.id),
        name=drug.name,
        ingredients=tuple(drug.ingredients),
        control_class=drug.control_class,
        control_reason=drug.control_reason,
        cold_chain=drug.cold_chain,
        indicated_conditions=tuple(drug.indicated_conditions),
        dosing=dosing_for(drug),
    )


def interactions_among(ingredients: Iterable[str]) -> dict[frozenset[str], rules.Interaction]:
    """The contraindicated pairs among these ingredients (an indexed query, not the whole table)."""
    keys = sorted(set(ingredients))
    if len(keys) < 2:
        return {}
    t = DrugInteraction.__table__.c  # plain rows: no ORM objects for a read-only look-up
    rows = db.session.execute(
        select(t.ingredient_a, t.ingredient_b, t.severity, t.source).where(
            and_(t.ingredient_a.in_(keys), t.ingredient_b.in_(keys))
        )
    )
    return rules.interaction_table([rules.Interaction(a, b, severity, source) for a, b, severity, source in rows])


def allergy_keys(allergies: Iterable[str]) -> tuple[str, ...]:
    """A patient's recorded allergies (any language, groups such as 青霉素类) as ingredient keys."""
    out: list[str] = []
    for a in allergies:
        if a and a.strip():
            out += [k for k in ing.resolve_ingredient(a) if k not in out]
    return tuple(out)


def catalog_size() -> int:
    from sqlalchemy import func

    return int(db.session.scalar(select(func.count()).select_from(Drug)) or 0)


def quantity_unit(drug: Drug, given: str | None) -> str:
    """What the quantity counts: the product's dispensing unit (片, 粒, 支 …)."""
    ref = dosing_for(drug)
    if ref is not None:
        return ref.dispense_unit
    if given:
        return given
    form = drug.form
    return next(
        (u for key, u in (("胶囊", "粒"), ("片", "片"), ("注射", "支"), ("喷", "支"), ("吸入", "支")) if key in form),
        "盒",
    )
