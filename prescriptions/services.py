"""Catalog use cases: seeding, formulary import, search, interaction look-up.

Each function flushes and audits; the caller (request, CLI command) commits.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select

from clinic.core import audit
from clinic.core.db import db
from clinic.core.errors import Invalid
from prescriptions import ingredients as ing
from prescriptions import rules
from prescriptions.models import Drug, DrugInteraction

DATA = ing.DATA
SEARCH_LIMIT = 30
IMPORT_REQUIRED = ("name", "form", "strength", "route")
IMPORT_OPTIONAL = ("generic_name", "ingredients", "cold_chain", "generic_name_en", "atc_code")
TRUE = {"true", "1", "yes", "y", "是", "t"}
FALSE = {"false", "0", "no", "n", "否", "f", ""}


@cache
def atc_groups() -> dict[str, tuple[str, ...]]:
    data = json.loads((DATA / "atc_conditions.json").read_text(encoding="utf-8"))
    return {k: tuple(v) for k, v in data["groups"].items()}


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


def upsert_product(spec: ProductSpec) -> tuple[Drug, ing.Classification, bool]:
    """Create or update a catalog product, classified against the control lists.

    A product once classified as controlled is never turned into an ordinary one by a
    later import (the stricter classification stays).
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
    elif drug.control_class and not values["control_class"]:
        values["control_class"], values["control_reason"] = drug.control_class, drug.control_reason
    elif drug.control_class and values["control_class"]:
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


# --- import ------------------------------------------------------------------------


@dataclass
class ImportReport:
    path: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    controlled: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    unresolved: list[dict[str, Any]] = field(default_factory=list)
    fatal: str | None = None

    @property
    def imported(self) -> int:
        return self.created + self.updated

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows_read": self.rows_read,
            "imported": self.imported,
            "created": self.created,
            "updated": self.updated,
            "controlled": self.controlled,
            "refused": self.refused,
            "unresolved": self.unresolved,
            "fatal": self.fatal,
        }

    def summary(self) -> str:
        lines = [
            f"{self.path}: {self.rows_read} rows read, {self.imported} imported "
            f"({self.created} new, {self.updated} updated), {len(self.refused)} refused"
        ]
        if self.fatal:
            lines.append(f"NOTHING IMPORTED: {self.fatal}")
        if self.controlled:
            lines.append(f"Classified as controlled ({len(self.controlled)}):")
            lines += [f"  row {c['row']}: {c['name']} → {c['control_class']}: {c['reason']}" for c in self.controlled]
        if self.refused:
            lines.append("Refused:")
            lines += [f"  row {r['row']}: {r['reason']}" for r in self.refused]
        if self.unresolved:
            lines.append("Imported, but part of the name matched no known ingredient (check them):")
            lines += [f"  row {u['row']}: {u['name']}: '{u['text']}'" for u in self.unresolved]
        return "\n".join(lines)


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"cold_chain must be true or false, not {raw!r}")


LIMITS = {"name": 200, "form": 64, "strength": 100, "route": 64, "generic_name": 200, "generic_name_en": 200}


def _row_spec(row: dict[str, str | None]) -> ProductSpec:
    extra = [k for k in row if k is None]
    if extra or None in row.values():
        raise ValueError("wrong number of columns")
    values = {k: (v or "").strip() for k, v in row.items() if k}
    for col in IMPORT_REQUIRED:
        if col != "strength" and not values.get(col):
            raise ValueError(f"'{col}' is empty")
    for col, limit in LIMITS.items():
        if len(values.get(col, "")) > limit:
            raise ValueError(f"'{col}' is longer than {limit} characters")
    if any(ch in values["name"] for ch in "\x00\r\n\t"):
        raise ValueError("'name' contains control characters")
    parts = [p.strip() for p in values.get("ingredients", "").replace("；", ";").split(";")]
    if values.get("ingredients") and not all(parts):
        raise ValueError("'ingredients' has an empty entry (use ';' between names)")
    atc = values.get("atc_code") or None
    if atc and not (len(atc) <= 7 and atc[0].isalpha() and atc.isalnum()):
        raise ValueError(f"'atc_code' {atc!r} is not an ATC code")
    return ProductSpec(
        name=values["name"],
        form=values["form"],
        strength=values.get("strength", ""),
        route=values["route"],
        generic_name=values.get("generic_name", ""),
        generic_name_en=values.get("generic_name_en", ""),
        atc_code=atc.upper() if atc else None,
        cold_chain=_parse_bool(values.get("cold_chain", "")),
        ingredients=tuple(p for p in parts if p),
        source="import",
    )


def _infer_atc(c: ing.Classification) -> str | None:
    """An imported product without an ATC code takes it from a seeded product of the same ingredients."""
    if not c.ingredients:
        return None
    for drug in db.session.scalars(select(Drug).where(Drug.atc_code.is_not(None), Drug.source == "seed")):
        if tuple(drug.ingredients) == c.ingredients:
            return drug.atc_code
    return None


def read_rows(text: str) -> Iterator[tuple[int, dict[str, str | None]]]:
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        yield reader.line_num, row


def import_formulary(path: str | Path, progress: Any = None) -> ImportReport:
    """Import a hospital formulary CSV (API.md): classify every row, refuse malformed ones."""
    report = ImportReport(path=str(path))
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        report.fatal = "file not found"
        return report
    except (OSError, UnicodeDecodeError) as exc:
        report.fatal = f"cannot read the file as UTF-8 ({exc.__class__.__name__})"
        return report
    header = next(csv.reader(io.StringIO(text)), None)
    if not header:
        report.fatal = "the file is empty"
        return report
    columns = [h.strip() for h in header]
    missing = [c for c in IMPORT_REQUIRED if c not in columns]
    if missing:
        report.fatal = f"the header lacks the column(s) {', '.join(missing)}"
        return report
    unknown = [c for c in columns if c not in IMPORT_REQUIRED + IMPORT_OPTIONAL]
    session = db.session()
    reader = csv.DictReader(io.StringIO(text))
    reader.fieldnames = columns
    next(reader, None)  # the header itself
    rows = list(reader)
    total = len(rows)
    for index, row in enumerate(rows, start=2):
        report.rows_read += 1
        if progress is not None:
            progress(report.rows_read, total)
        for col in unknown:
            row.pop(col, None)
        try:
            spec = _row_spec(row)
        except ValueError as exc:
            report.refused.append({"row": index, "reason": str(exc)})
            continue
        try:
            with session.begin_nested():
                if spec.atc_code is None:
                    probe = ing.classify(spec.name, ingredients=spec.ingredients, generic_name=spec.generic_name)
                    spec = ProductSpec(**{**spec.__dict__, "atc_code": _infer_atc(probe)})
                drug, c, created = upsert_product(spec)
                session.flush()
        except Exception as exc:  # a database refusal of this row only
            report.refused.append({"row": index, "reason": f"not stored: {exc.__class__.__name__}"})
            continue
        if created:
            report.created += 1
        else:
            report.updated += 1
        if drug.control_class:
            report.controlled.append(
                {"row": index, "name": spec.name, "control_class": drug.control_class, "reason": drug.control_reason}
            )
        if c.unresolved and not c.ingredients:
            report.unresolved.append({"row": index, "name": spec.name, "text": c.unresolved})
    if report.rows_read == 0:
        report.fatal = "no data rows"
    audit.record(
        session,
        "catalog.imported",
        subject_type="catalog",
        detail={
            "path": str(path),
            "rows": report.rows_read,
            "imported": report.imported,
            "controlled": len(report.controlled),
            "refused": [r["row"] for r in report.refused],
        },
    )
    return report


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


def get_drugs(ids: Iterable[str | uuid.UUID]) -> dict[uuid.UUID, Drug]:
    wanted: list[uuid.UUID] = []
    for raw in ids:
        try:
            wanted.append(raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw)))
        except ValueError:
            raise Invalid(f"Unknown drug id {raw!r}.", code="unknown_drug", drug_ids=[str(raw)]) from None
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
    )


def interactions_among(ingredients: Iterable[str]) -> dict[frozenset[str], rules.Interaction]:
    """The contraindicated pairs among these ingredients (an indexed query, not the whole table)."""
    keys = sorted(set(ingredients))
    if len(keys) < 2:
        return {}
    rows = db.session.scalars(
        select(DrugInteraction).where(
            and_(DrugInteraction.ingredient_a.in_(keys), DrugInteraction.ingredient_b.in_(keys))
        )
    )
    return rules.interaction_table(
        [rules.Interaction(r.ingredient_a, r.ingredient_b, r.severity, r.source) for r in rows]
    )


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


__all__ = [
    "ImportReport",
    "ProductSpec",
    "allergy_keys",
    "catalog_size",
    "drug_facts",
    "get_drugs",
    "import_formulary",
    "interactions_among",
    "search_drugs",
    "seed_catalog",
    "upsert_product",
]
