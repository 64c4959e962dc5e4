"""Catalog use cases: seeding, formulary import, search, interaction look-up.

Each function flushes and audits; the caller (request, CLI command) commits.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from clinic.core import audit
from clinic.core.crypto import lookup_hash
from clinic.core.db import as_uuid, db, get_or_404, new_id, utcnow
from clinic.core.errors import Conflict, Invalid, NotFound, RuleRefusal, Violation
from clinic.core.principal import Principal
from clinic.visits import rules as visit_rules
from clinic.visits.models import Condition, Visit
from identity.face_services import require_fresh_face
from identity.models import Account, Department, Institution
from prescriptions import ingredients as ing
from prescriptions import rules, signing
from prescriptions.models import (
    Drug,
    DrugInteraction,
    FormularyImport,
    ImportState,
    Prescription,
    PrescriptionItem,
)
from prescriptions.rules import PrescriptionEvent, PrescriptionStatus

DATA = ing.DATA
SEARCH_LIMIT = 30
CHINA = ZoneInfo("Asia/Shanghai")  # prescription dates and ages are Beijing dates
IMPORT_REQUIRED = ("name", "form", "strength", "route")
IMPORT_OPTIONAL = ("generic_name", "ingredients", "cold_chain", "generic_name_en", "atc_code")
TRUE = {"true", "1", "yes", "y", "是", "t"}
FALSE = {"false", "0", "no", "n", "否", "f", ""}


@cache
def atc_groups() -> dict[str, tuple[str, ...]]:
    data = json.loads((DATA / "atc_conditions.json").read_text(encoding="utf-8"))
    return {k: tuple(v) for k, v in data["groups"].items()}


def _strength_key(strength: str) -> str:
    return strength.replace(" ", "").replace("µ", "μ").lower()


def _limits(raw: dict[str, str] | None) -> rules.DoseLimits | None:
    if raw is None:
        return None
    return rules.DoseLimits(**{k: Decimal(v) for k, v in raw.items()})


@cache
def dosing_references() -> dict[tuple[str, str], rules.DosingReference]:
    """The dosing reference (data/dosing.json), keyed by (product name, strength) and by
    (generic name in English, strength) so that an imported product of the same
    ingredient and strength finds it too."""
    data = json.loads((DATA / "dosing.json").read_text(encoding="utf-8"))
    out: dict[tuple[str, str], rules.DosingReference] = {}
    for e in data["items"]:
        adult = _limits(e["adult"])
        assert adult is not None
        ref = rules.DosingReference(
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


def dosing_for(drug: Drug) -> rules.DosingReference | None:
    refs = dosing_references()
    strength = _strength_key(drug.strength)
    return refs.get((drug.name, strength)) or (
        refs.get(("en:" + drug.generic_name_en.lower(), strength)) if drug.generic_name_en else None
    )


SPLIT_ZH = {"whole": "须整粒/整片给药", "half": "可掰半", "any": "按量取用"}


def _amount(x: Decimal | None, unit: str) -> str | None:
    return f"{x.normalize():f} {unit}" if x is not None else None


def dosing_summary(drug: Drug) -> dict[str, Any] | None:
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
    return {
        "adult": "成人：" + ("，".join(p for p in adult if p) or "剂量个体化"),
        "child": f"{child}（{ref.adult_from_age}岁起按成人）",
        "frequencies": "、".join(rules.FREQUENCIES[f].zh for f in ref.frequencies if f in rules.FREQUENCIES),
        "unit": f"每{ref.admin_unit} {_amount(ref.per_unit, u)}，{SPLIT_ZH.get(ref.split, '')}"
        if ref.admin_unit != u
        else f"按{u}给药",
        "pack": f"数量单位：{ref.dispense_unit}；每包装 {ref.pack} {ref.dispense_unit}",
        "dispense_unit": ref.dispense_unit,
        "source": ref.source,
    }


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
    unclassified: list[dict[str, Any]] = field(default_factory=list)  # held: not prescribable until classified
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
            "unclassified": self.unclassified,
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
        if self.unclassified:
            lines.append(
                f"Held as unclassified ({len(self.unclassified)}): not prescribable until a pharmacist "
                "or administrator classifies them (classification queue):"
            )
            lines += [f"  row {u['row']}: {u['name']}: {u['reason']}" for u in self.unclassified]
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
        # No savepoint per row: a row is refused above, by validation, or the import stops.
        # (pysqlite does not begin a transaction before SAVEPOINT, so on SQLite a per-row
        # savepoint committed each row on its own, whatever the caller's transaction.)
        if spec.atc_code is None:
            probe = ing.classify(spec.name, ingredients=spec.ingredients, generic_name=spec.generic_name)
            spec = ProductSpec(**{**spec.__dict__, "atc_code": _infer_atc(probe)})
        drug, c, created = upsert_product(spec)
        session.flush()
        if created:
            report.created += 1
        else:
            report.updated += 1
        if drug.control_class == ing.UNCLASSIFIED:
            report.unclassified.append(
                {"row": index, "name": spec.name, "drug_id": str(drug.id), "reason": drug.control_reason}
            )
        elif drug.control_class:
            report.controlled.append(
                {"row": index, "name": spec.name, "control_class": drug.control_class, "reason": drug.control_reason}
            )
        if c.unresolved and not c.ingredients and drug.control_class != ing.UNCLASSIFIED:
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
            "unclassified": [u["row"] for u in report.unclassified],
            "refused": [r["row"] for r in report.refused],
        },
    )
    return report


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


def classify_drug(drug_id: str | uuid.UUID, choice: str, note: str, by: str | uuid.UUID) -> Drug:
    """A pharmacist's or administrator's decision on a held product: ordinary, or a control class.

    The reason is required and kept with the class; the decision is audited with what it
    replaced. Only a held product is classified here: the lists decide every other one.
    """
    drug = get_or_404(Drug, as_uuid(drug_id))
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
    drug.classified_by = as_uuid(by)
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


# --- formulary imports started from the pages ------------------------------------------

IMPORT_BATCH_ROWS = 200  # rows committed together with the run's progress
IMPORT_STALE_AFTER = timedelta(minutes=2)  # a running import that has not moved for this long stopped


def start_import(admin_id: str, filename: str) -> FormularyImport:
    """Record that an administrator started importing a file (the runner does the rows)."""
    session = db.session()
    run = FormularyImport(filename=filename[:200] or "formulary.csv", started_by=uuid.UUID(str(admin_id)))
    session.add(run)
    session.flush()
    audit.record(
        session,
        "catalog.import_started",
        subject_type="formulary_import",
        subject_id=run.id,
        detail={"file": run.filename},
    )
    return run


def formulary_import(run_id: str | uuid.UUID) -> FormularyImport | None:
    key = as_uuid(run_id)
    return db.session.get(FormularyImport, key) if key is not None else None


def recent_imports(limit: int = 20) -> list[FormularyImport]:
    return list(db.session.scalars(select(FormularyImport).order_by(FormularyImport.started_at.desc()).limit(limit)))


def import_status(run: FormularyImport, now: datetime | None = None) -> str:
    """running | done | failed, or interrupted: still marked running but not moving any more."""
    if run.state == ImportState.RUNNING and run.updated_at < (now or utcnow()) - IMPORT_STALE_AFTER:
        return "interrupted"
    return run.state.value


def record_import_progress(run_id: uuid.UUID, done: int, total: int) -> None:
    run = get_or_404(FormularyImport, run_id)
    run.done, run.total, run.updated_at = done, total, utcnow()


def finish_import(run_id: uuid.UUID, report: ImportReport) -> FormularyImport:
    run = get_or_404(FormularyImport, run_id)
    out = report.as_dict()
    out["path"] = run.filename  # not the temporary copy's path
    run.report, run.state = out, ImportState.DONE
    run.done = run.total = report.rows_read
    run.updated_at = run.finished_at = utcnow()
    return run


def fail_import(run_id: uuid.UUID, error: str, saved: int) -> FormularyImport:
    """The import stopped on `error` (an exception's name); its first `saved` rows were committed."""
    run = get_or_404(FormularyImport, run_id)
    run.state, run.error, run.done = ImportState.FAILED, error[:2000], saved
    run.updated_at = run.finished_at = utcnow()
    audit.record(
        db.session(),
        "catalog.import_failed",
        subject_type="formulary_import",
        subject_id=run.id,
        detail={"error": error, "rows_saved": saved},
    )
    return run


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


# --- prescribing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemSpec:
    drug_id: uuid.UUID
    dose: Decimal
    unit: str
    frequency: str
    route: str
    days: int
    quantity: Decimal
    quantity_unit: str | None = None


@dataclass(frozen=True)
class PrescriptionSpec:
    items: tuple[ItemSpec, ...]
    weight_kg: Decimal | None = None
    long_term: bool = False
    assessment_note: str | None = None
    guardian: rules.Guardian | None = None
    accompanying_physician: rules.AccompanyingPhysician | None = None


def _visit(visit_id: str | uuid.UUID) -> Visit:
    return get_or_404(Visit, visit_id, "No such visit.")


def _mask(id_number: str) -> str:
    return id_number[:3] + "*" * max(len(id_number) - 7, 0) + id_number[-4:]


def recorded_guardians(patient: Any, on: date) -> tuple[rules.RecordedGuardian, ...]:
    """The guardians of a person as recorded on its account: the adult account holder, and
    the holder's adult spouse when the person is the holder's child."""
    from identity.models import Relation

    out = []
    for p in patient.account.patients:
        if p.id == patient.id or rules.age_years(p.birth_date, on) < rules.MIN_GUARDIAN_AGE:
            continue
        if p.relation == Relation.SELF or (p.relation == Relation.SPOUSE and patient.relation == Relation.CHILD):
            relation = "父母" if patient.relation == Relation.CHILD else "监护人"
            out.append(rules.RecordedGuardian(str(p.id), p.name, p.id_number, relation))
    return tuple(out)


def weight_required_age() -> int:
    inst = db.session.get(Institution, 1)
    raw = (inst.settings or {}).get("weight_required_under_age") if inst is not None else None
    return int(raw) if isinstance(raw, int) and 0 < raw < 19 else rules.DEFAULT_WEIGHT_AGE


def _valid_days() -> int:
    from flask import current_app, has_app_context

    return rules.valid_days(current_app.config.get("RX_VALID_DAYS", 1) if has_app_context() else 1)


def evaluate_prescription(
    physician_id: str | uuid.UUID,
    visit: Visit,
    spec: PrescriptionSpec,
    on: date | None = None,
    *,
    excluding: uuid.UUID | None = None,
) -> tuple[list[Violation], dict[uuid.UUID, Drug]]:
    """Every rule's verdict on a draft prescription (the prescribing page shows it live).

    `excluding`: the prescription itself, when a signed one is judged again (the review)."""
    facts, drugs = prescription_facts(physician_id, visit, spec, on)
    active = active_ingredients(visit.id, excluding=excluding)
    return rules.evaluate(facts) + rules.duplicates_across(facts.items, active), drugs


# A prescription still being reviewed, dispensed or taken: a second one in the same visit may
# not repeat its ingredients (`duplicate_therapy`).
ACTIVE = (
    PrescriptionStatus.PENDING_REVIEW,
    PrescriptionStatus.APPROVED,
    PrescriptionStatus.DISPENSED,
    PrescriptionStatus.OUT_FOR_DELIVERY,
    PrescriptionStatus.DELIVERED,
)


def active_ingredients(visit_id: uuid.UUID, *, excluding: uuid.UUID | None = None) -> dict[str, str]:
    """Ingredient → id of the visit's active prescription that already gives it."""
    query = (
        select(Prescription.id, PrescriptionItem.drug_id)
        .join(PrescriptionItem, PrescriptionItem.prescription_id == Prescription.id)
        .where(Prescription.visit_id == visit_id, Prescription.status.in_(ACTIVE))
        .order_by(Prescription.signed_at)
    )
    if excluding is not None:
        query = query.where(Prescription.id != excluding)
    rows = db.session.execute(query).all()
    if not rows:
        return {}
    drugs = get_drugs({drug_id for _, drug_id in rows})
    out: dict[str, str] = {}
    for rx_id, drug_id in rows:
        if drug_id in drugs:
            for ing in drug_facts(drugs[drug_id]).ingredients:
                out.setdefault(ing, str(rx_id))
    return out


REPEAT_WINDOW = timedelta(seconds=60)


def _same_lines(rx: Prescription, spec: PrescriptionSpec) -> bool:
    mine = [(i.drug_id, i.dose, i.unit, i.frequency, i.route, i.days, i.quantity) for i in spec.items]
    theirs = [(i.drug_id, i.dose, i.unit, i.frequency, i.route, i.days, i.quantity) for i in rx.items]
    return mine == theirs and rx.weight_kg == spec.weight_kg and rx.long_term == spec.long_term


def refuse_repeat(visit: Visit, physician_id: str | uuid.UUID, spec: PrescriptionSpec, now: datetime) -> None:
    """The same prescription for the same visit signed again within a minute is a double
    submission (a double tap, a client's retry without an Idempotency-Key): refused."""
    recent = db.session.scalars(
        select(Prescription).where(
            Prescription.visit_id == visit.id,
            Prescription.physician_id == uuid.UUID(str(physician_id)),
            Prescription.signed_at > now - REPEAT_WINDOW,
        )
    )
    for rx in recent:
        if _same_lines(rx, spec):
            raise Conflict(
                "The same prescription was signed for this visit %(seconds)s seconds ago; it is not signed twice.",
                code="duplicate_submission",
                params={"seconds": max(int((now - rx.signed_at).total_seconds()), 0)},
                prescription_id=str(rx.id),
            )


def prescription_facts(
    physician_id: str | uuid.UUID, visit: Visit, spec: PrescriptionSpec, on: date | None = None
) -> tuple[rules.PrescriptionFacts, dict[uuid.UUID, Drug]]:
    """The plain facts the rules need: drugs, patient, visit, and only the relevant interaction pairs."""
    drugs = get_drugs([i.drug_id for i in spec.items])
    patient = visit.patient
    diagnosis = visit.diagnosis
    confirmed = diagnosis.status.value == "confirmed"
    condition = diagnosis.condition if confirmed else None
    items = [
        rules.ItemFacts(
            drug_facts(drugs[i.drug_id]), i.dose, i.unit, i.frequency, i.route, i.days, i.quantity, i.quantity_unit
        )
        for i in spec.items
    ]
    all_ingredients = [k for it in items for k in it.drug.ingredients]
    on_day = on or utcnow().astimezone(CHINA).date()
    facts = rules.PrescriptionFacts(
        patient=rules.PatientFacts(patient.birth_date, allergy_keys(patient.allergies or []), spec.weight_kg),
        visit=rules.VisitFacts(
            status=visit.status.value,
            physician_id=str(visit.physician_id) if visit.physician_id else None,
            diagnosis_icd10=diagnosis.icd10 if confirmed else None,
            condition_chronic=condition.chronic if condition is not None else None,
        ),
        prescriber=rules.PrescriberFacts(str(physician_id)),
        items=items,
        on=on_day,
        long_term=spec.long_term,
        assessment_note=spec.assessment_note,
        guardian=spec.guardian,
        accompanying_physician=spec.accompanying_physician,
        recorded_guardians=recorded_guardians(patient, on_day)
        if rules.is_under(patient.birth_date, on_day, rules.GUARDIAN_AGE)
        else None,
        # the institution's weight age is at most 18: an adult's prescription needs no look-up
        weight_age=weight_required_age()
        if rules.is_under(patient.birth_date, on_day, 18)
        else rules.DEFAULT_WEIGHT_AGE,
        interactions=interactions_among(all_ingredients),
    )
    return facts, drugs


def create_prescription(
    who: Principal,
    visit_id: str | uuid.UUID,
    spec: PrescriptionSpec,
    *,
    refuse_repeats: bool = True,
    replaces: str | uuid.UUID | None = None,
) -> Prescription:
    """The visit's face-fresh physician signs ONE prescription: rules, signature, record, audit.

    `refuse_repeats=False` when the caller named the request with an Idempotency-Key (its
    repeats are answered from clinic.core.idempotency); otherwise an identical prescription
    signed for the visit within a minute is refused as `duplicate_submission`.
    `replaces`: the returned (or rejected, or voided) prescription of the same patient that
    this one revises; it is recorded with the new one.
    """
    require_fresh_face(who)
    visit = _visit(visit_id)
    replaced = _replaceable(who.id, visit, replaces) if replaces else None
    now = utcnow()
    # A revision is not a repeat: signing it twice is refused as already_replaced instead.
    if refuse_repeats and replaced is None:  # before the rules: a repeat would also be its own duplicate_therapy
        refuse_repeat(visit, who.id, spec, now)
    violations, drugs = evaluate_prescription(who.id, visit, spec, now.astimezone(CHINA).date())
    if violations:
        raise RuleRefusal("prescription_rejected", violations)
    # Written against the visit as it was judged (in progress): the visit's row version is
    # counted up with this prescription, so if it was completed or referred meanwhile (in
    # another window) the prescription is refused with 409 instead of following it.
    flag_modified(visit, "status")
    physician = db.session.get(Account, uuid.UUID(str(who.id)))
    assert physician is not None  # the token loader checked it
    patient = visit.patient
    rx_id = new_id()
    guardian = None
    if spec.guardian is not None:
        # the person as recorded on the child's account (the rules made sure there is one)
        on_day = now.astimezone(CHINA).date()
        found = rules.recorded_guardian(spec.guardian, recorded_guardians(patient, on_day))
        if found is not None:
            guardian = {
                "patient_id": found.patient_id,
                "name": found.name,
                "relation": spec.guardian.relation.strip() or found.relation,
                "id_number_masked": _mask(found.id_number),
                "id_number_hash": lookup_hash(found.id_number.strip().upper()),
                "recorded_on_account": True,
            }
    accompanying = (
        {
            "name": spec.accompanying_physician.name,
            "license_no": spec.accompanying_physician.license_no,
            "specialty": spec.accompanying_physician.specialty,
        }
        if spec.accompanying_physician
        else None
    )
    age = rules.age_display(patient.birth_date, now.astimezone(CHINA).date())
    expires_at = now + timedelta(days=_valid_days())
    inst = db.session.get(Institution, 1)
    content: dict[str, Any] = {
        # registered JWT claims (RFC 7519): who issued it, when, and until when it may be dispensed
        "iss": issuer(inst),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "institution": inst.name if inst is not None else "",
        "prescription_id": str(rx_id),
        "visit_id": str(visit.id),
        "patient": {
            "id": str(patient.id),
            "name": patient.name,
            "sex": patient.sex,
            "birth_date": patient.birth_date.isoformat(),
            "age": age.zh(),
        },
        "diagnosis": {"icd10": visit.diagnosis.icd10, "icd10_national": visit.diagnosis.icd10_national},
        "weight_kg": str(spec.weight_kg) if spec.weight_kg is not None else None,
        "long_term": spec.long_term,
        "items": [
            {
                "drug_id": str(i.drug_id),
                "name": drugs[i.drug_id].name,
                "strength": drugs[i.drug_id].strength,
                "form": drugs[i.drug_id].form,
                "dose": str(i.dose),
                "unit": i.unit,
                "frequency": i.frequency,
                "route": i.route,
                "days": i.days,
                "quantity": str(i.quantity),
                "quantity_unit": quantity_unit(drugs[i.drug_id], i.quantity_unit),
            }
            for i in spec.items
        ],
        "physician": {
            "id": str(physician.id),
            "name": physician.staff.name if physician.staff else physician.display_name,
            "license_no": physician.staff.license_no if physician.staff else None,
        },
        "guardian": guardian,
        "accompanying_physician": accompanying,
        "signed_at": now.isoformat(),
    }
    token, kid = signing.sign(physician.id, content)
    rx = Prescription(
        id=rx_id,
        visit_id=visit.id,
        patient_id=patient.id,
        account_id=visit.account_id,
        physician_id=physician.id,
        status=PrescriptionStatus.PENDING_REVIEW,
        diagnosis_icd10=visit.diagnosis.icd10,
        weight_kg=spec.weight_kg,
        long_term=spec.long_term,
        assessment_note=spec.assessment_note,
        guardian=guardian,
        accompanying_physician=accompanying,
        content=content,
        jws=token,
        kid=kid,
        signed_at=now,
        expires_at=expires_at,
        status_changed_at=now,
        replaces_id=replaced.id if replaced else None,
    )
    for n, i in enumerate(spec.items):
        d = drugs[i.drug_id]
        rx.items.append(
            PrescriptionItem(
                position=n,
                drug_id=d.id,
                drug_name=d.name,
                strength=d.strength,
                dose=i.dose,
                unit=i.unit,
                frequency=i.frequency,
                route=i.route,
                days=i.days,
                quantity=i.quantity,
                cold_chain=d.cold_chain,
            )
        )
    session = db.session()
    session.add(rx)
    session.flush()
    audit.record(
        session,
        "prescription.signed",
        subject_type="prescription",
        subject_id=rx.id,
        detail={
            "visit_id": str(visit.id),
            "kid": kid,
            "items": len(spec.items),
            "long_term": spec.long_term,
            "replaces": str(replaced.id) if replaced else None,
        },
    )
    return rx


def issuer(inst: Institution | None) -> str:
    """The JWS `iss`: the institution, by its practice licence (医疗机构执业许可证) number."""
    return f"urn:clinic:institution:{inst.practice_license_no}" if inst is not None else "urn:clinic:institution"


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


# The pharmacist's approval JWS of a prescription lives with the pharmacy's review; the
# pharmacy registers where to read it (nothing here imports the pharmacy package).
_approval_sources: list[Callable[[uuid.UUID], str | None]] = []


def on_approval_lookup(source: Callable[[uuid.UUID], str | None]) -> None:
    if source not in _approval_sources:
        _approval_sources.append(source)


def approval_jws(rx_id: uuid.UUID) -> str | None:
    """The pharmacist's approval JWS of a prescription (every time it is asked), or None."""
    for source in _approval_sources:
        token = source(rx_id)
        if token:
            return token
    return None


REPLACEABLE = (PrescriptionStatus.RETURNED, PrescriptionStatus.REJECTED, PrescriptionStatus.CANCELLED)


def _replaceable(physician_id: str, visit: Visit, replaces: str | uuid.UUID) -> Prescription:
    """The prescription a revision replaces: this physician's, this patient's, ended, not yet replaced."""
    old = db.session.get(Prescription, as_uuid(replaces)) if as_uuid(replaces) else None
    if old is None or str(old.physician_id) != str(physician_id) or old.patient_id != visit.patient_id:
        raise NotFound("No such prescription to revise.")
    if old.status not in REPLACEABLE:
        raise Conflict("Only a returned, rejected or voided prescription can be revised.", code="not_replaceable")
    if db.session.scalar(select(Prescription.id).where(Prescription.replaces_id == old.id)) is not None:
        raise Conflict("This prescription has already been revised.", code="already_replaced")
    return old


def void_prescription(physician_id: str, prescription_id: str | uuid.UUID, reason: str) -> Prescription:
    """The physician voids their own prescription before a pharmacist has decided on it."""
    rx = prescription_for(physician_id, "physician", prescription_id)
    reason = reason.strip()
    if not 2 <= len(reason) <= 500:
        raise Invalid("Say why the prescription is voided (2 to 500 characters).", field="reason")
    if rx.status != PrescriptionStatus.PENDING_REVIEW:
        raise Conflict("Only a prescription still waiting for review can be voided.", code="not_voidable")
    rx.void_reason = reason
    return transition(rx, PrescriptionEvent.CANCEL, reason=reason)


# The pharmacist's decision on a prescription (reasons and note) lives in the pharmacy, which
# sits above this package: it registers its reader here, as it does for delivery status.
_review_readers: list[Callable[[uuid.UUID], dict[str, Any] | None]] = []


def on_review_read(reader: Callable[[uuid.UUID], dict[str, Any] | None]) -> None:
    _review_readers.append(reader)


def review_outcome(rx_id: uuid.UUID) -> dict[str, Any] | None:
    """{decision, reasons: [code], note, decided_at, pharmacist} once a pharmacist decided; else None."""
    for reader in _review_readers:
        found = reader(rx_id)
        if found is not None:
            return found
    return None


def ended_unrevised(physician_id: str | uuid.UUID) -> list[Prescription]:
    """This physician's returned or rejected prescriptions that no revision replaces yet, newest first."""
    revised = select(Prescription.replaces_id).where(Prescription.replaces_id.is_not(None))
    return list(
        db.session.scalars(
            select(Prescription)
            .where(
                Prescription.physician_id == as_uuid(physician_id),
                Prescription.status.in_((PrescriptionStatus.RETURNED, PrescriptionStatus.REJECTED)),
                Prescription.id.not_in(revised),
            )
            .order_by(Prescription.status_changed_at.desc())
            .limit(50)
        )
    )


def replaced_by(rx_id: uuid.UUID) -> Prescription | None:
    return db.session.scalars(select(Prescription).where(Prescription.replaces_id == rx_id)).first()


def verify_prescription(rx: Prescription) -> dict[str, Any]:
    """The JWS verifies with its published key AND signs exactly the stored content."""
    return signing.verify(rx.jws, rx.content)


def transition(
    rx: Prescription, event: PrescriptionEvent, *, reason: str | None = None, now: datetime | None = None
) -> Prescription:
    """Move a prescription through its lifecycle (pharmacy review, dispensing, delivery,
    expiry, voiding) by `rules.transition`, audited as `prescription.<new status>`."""
    now = now or utcnow()
    before = rx.status
    rx.status = rules.transition(before, event)
    rx.status_changed_at = now
    if rx.status == PrescriptionStatus.DISPENSED:
        rx.dispensed_at = now
    audit.record(
        db.session(),
        f"prescription.{rx.status.value}",
        subject_type="prescription",
        subject_id=rx.id,
        detail={"from": before.value, "reason": reason},
    )
    db.session.flush()
    return rx


_EXPIRING = (PrescriptionStatus.PENDING_REVIEW, PrescriptionStatus.APPROVED)


def overdue_prescriptions(now: datetime) -> list[uuid.UUID]:
    """Prescriptions not approved and dispensed within their validity, oldest first."""
    return list(
        db.session.scalars(
            select(Prescription.id)
            .where(Prescription.status.in_(_EXPIRING), Prescription.expires_at <= now)
            .order_by(Prescription.expires_at)
        )
    )


def expire_if_overdue(rx_id: uuid.UUID, now: datetime) -> bool:
    """Expire one prescription if it is (still) overdue; False if it moved on meanwhile."""
    rx = db.session.get(Prescription, rx_id)
    if rx is None or rx.status not in _EXPIRING or rx.expires_at > now:
        return False
    transition(rx, PrescriptionEvent.EXPIRE, reason="validity ended", now=now)
    return True


def expire_overdue(now: datetime | None = None) -> int:
    """Expire every overdue prescription in this transaction (`flask drugs expire` commits each)."""
    now = now or utcnow()
    return sum(expire_if_overdue(rx_id, now) for rx_id in overdue_prescriptions(now))


def prescriptions_follow_patient(session: Session, patient_id: uuid.UUID, old: uuid.UUID, new: uuid.UUID) -> int:
    """A patient's prescriptions move with the patient to the account that reclaimed their ID
    number: its PDF, fee, address and tracking are the owner's, no longer the old account's."""
    moved = session.execute(
        update(Prescription)
        .where(Prescription.patient_id == patient_id, Prescription.account_id == old)
        .values(account_id=new)
        .execution_options(synchronize_session="fetch")
    )
    return int(cast(CursorResult[Any], moved).rowcount or 0)  # an UPDATE answers a cursor


def prescription_for(principal_id: str, role: str, prescription_id: str | uuid.UUID) -> Prescription:
    """A prescription for its patient's account, its physician, or a pharmacist; 404 for anyone else."""
    pid = as_uuid(prescription_id)
    rx = db.session.get(Prescription, pid) if pid is not None else None
    allowed = rx is not None and (
        role == "pharmacist"
        or (role == "patient" and str(rx.account_id) == principal_id)
        or (role == "physician" and str(rx.physician_id) == principal_id)
    )
    if rx is None or not allowed:
        raise NotFound("No such prescription.")
    return rx


_review_fact_sources: list[Callable[[uuid.UUID], dict[str, Any] | None]] = []


def on_review_facts(source: Callable[[uuid.UUID], dict[str, Any] | None]) -> None:
    """The pharmacy tells the document who reviewed a prescription and what it costs."""
    if source not in _review_fact_sources:
        _review_fact_sources.append(source)


def review_facts(rx_id: uuid.UUID) -> dict[str, Any]:
    for source in _review_fact_sources:
        facts = source(rx_id)
        if facts:
            return facts
    return {}


def _frequency_zh(text: str) -> str:
    f = rules.parse_frequency(text)
    return f.zh if f is not None else text


def document_for(rx: Prescription) -> bytes:
    """The prescription document (处方笺) per 处方管理办法 and its 处方标准 (prescriptions/document.py)."""
    from prescriptions import document

    inst = db.session.get(Institution, 1)
    c = rx.content
    dept = visit_department(rx)
    g = rx.guardian
    a = rx.accompanying_physician
    born = date.fromisoformat(c["patient"]["birth_date"])
    signed_day = rx.signed_at.astimezone(CHINA).date() if rx.signed_at.tzinfo else rx.signed_at.date()
    facts = review_facts(rx.id)
    settings = (inst.settings or {}) if inst else {}
    doc = document.PrescriptionDocument(
        prescription_id=str(rx.id),
        institution=inst.name if inst else "",
        fee_category=str(settings.get("fee_category") or "自费"),
        record_no=str(rx.patient_id).replace("-", "")[:10].upper(),
        patient_name=c["patient"]["name"],
        sex={"male": "男", "female": "女"}.get(c["patient"]["sex"], c["patient"]["sex"]),
        age=c["patient"]["age"],
        weight_kg=c.get("weight_kg"),
        diagnosis=diagnosis_in_words(rx),
        department=dept,
        items=[
            document.DocumentLine(
                i["name"],
                i["strength"],
                i.get("form", ""),
                i["dose"],
                i["unit"],
                _frequency_zh(i["frequency"]),
                i["route"],
                i["days"],
                i["quantity"],
                i.get("quantity_unit", ""),
            )
            for i in c["items"]
        ],
        physician_name=c["physician"]["name"],
        physician_license_no=c["physician"].get("license_no"),
        signed_at=rx.signed_at if rx.signed_at.tzinfo else rx.signed_at.replace(tzinfo=UTC),
        expires_at=rx.expires_at if rx.expires_at.tzinfo else rx.expires_at.replace(tzinfo=UTC),
        kid=rx.kid,
        review_status=rx.status.value,
        jws=rx.jws,
        approval_jws=approval_jws(rx.id),
        reviewer=facts.get("reviewer"),
        dispenser=facts.get("dispenser"),
        checker=facts.get("checker"),
        amount_fen=facts.get("amount_fen"),
        pediatric=rules.is_under(born, signed_day, rules.CHILD_AGE_DEFAULT),
        long_term=rx.long_term,
        guardian=f"{g['name']}（{g['relation']}，{g['id_number_masked']}）" if g else None,
        accompanying_physician=f"{a['name']}（{a['specialty']}，执业证书编码 {a['license_no']}）" if a else None,
    )
    return document.render_pdf(doc)


def national_code_of(rx: Prescription) -> str | None:
    """The 国家临床版 2.0 code of the prescription's diagnosis, when its proof carried one."""
    signed = rx.content.get("diagnosis", {}).get("icd10_national")
    if signed:
        return str(signed)
    visit = db.session.get(Visit, rx.visit_id)
    diag = visit.diagnosis if visit is not None else None
    return diag.icd10_national if diag is not None and diag.icd10 == rx.diagnosis_icd10 else None


def diagnosis_in_words(rx: Prescription) -> str:
    """临床诊断 in words: the national code's name where known, else the catalog condition's."""
    national = national_code_of(rx)
    condition = db.session.get(Condition, rx.diagnosis_icd10)
    if condition is None:
        codes = list(db.session.scalars(select(Condition.code)))
        match = visit_rules.match_condition(rx.diagnosis_icd10, codes)
        condition = db.session.get(Condition, match) if match else None
    words = visit_rules.national_name(national) or (condition.name_zh if condition else "")
    code = national or rx.diagnosis_icd10
    return f"{words}（{code}）" if words else code


def visit_department(rx: Prescription) -> str:
    visit = db.session.get(Visit, rx.visit_id)
    if visit is None:
        return ""
    dept = db.session.get(Department, visit.department)
    return dept.name_zh if dept else visit.department


# --- reads for the prescribing pages ----------------------------------------------------------


def prescribing_visit(physician_id: str | uuid.UUID, visit_id: str | uuid.UUID) -> Visit:
    """The visit a physician prescribes in: theirs, else 404 (whether it is in progress is a rule)."""
    visit = _visit(visit_id)
    if visit.physician_id is None or str(visit.physician_id) != str(physician_id):
        raise NotFound("No such visit.")
    return visit


def visit_prescriptions(visit_id: uuid.UUID) -> list[Prescription]:
    """The prescriptions already signed in a visit, newest first."""
    return list(
        db.session.scalars(
            select(Prescription).where(Prescription.visit_id == visit_id).order_by(Prescription.signed_at.desc())
        )
    )


def prescriptions_of_visits(visit_ids: Iterable[uuid.UUID]) -> list[Prescription]:
    """The prescriptions signed in these visits, newest first (the visit room's history)."""
    ids = list(visit_ids)
    if not ids:
        return []
    return list(
        db.session.scalars(
            select(Prescription).where(Prescription.visit_id.in_(ids)).order_by(Prescription.signed_at.desc())
        )
    )
