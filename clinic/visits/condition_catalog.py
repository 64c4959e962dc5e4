"""The condition catalog: the common and chronic conditions (ICD-10) followed up online,
and the department that treats each."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db
from clinic.core.errors import Conflict, Invalid, NotFound
from clinic.visits import rules
from clinic.visits.models import Condition
from identity.models import Department

DEFAULT_CONDITIONS = [
    ("I10", "原发性高血压", "cardiology", True),
    ("I25", "慢性缺血性心脏病", "cardiology", True),
    ("I48", "心房颤动和扑动", "cardiology", True),
    ("E78", "脂蛋白代谢紊乱和其他脂血症", "endocrinology", True),
    ("E11", "2型糖尿病", "endocrinology", True),
    ("E03", "其他甲状腺功能减退症", "endocrinology", True),
    ("E10", "1型糖尿病", "endocrinology", True),
    ("J44", "慢性阻塞性肺疾病", "respiratory", True),
    ("J45", "哮喘", "respiratory", True),
    ("M10", "痛风", "rheumatology", True),
    ("N18", "慢性肾脏病", "nephrology", True),
    ("B18.1", "慢性乙型病毒性肝炎", "infectious", True),
    ("K21", "胃食管反流病", "general", True),
    ("J30", "血管舒缩性和变应性鼻炎", "general", False),
    ("L20", "特应性皮炎", "pediatrics", True),
]


class NotEligibleCondition(Invalid):
    code = "not_eligible_condition"


def upsert_condition(code: str, name_zh: str, department: str, chronic: bool, active: bool = True) -> Condition:
    """Add or change a catalog entry; the code and its English name come from ICD-10."""
    session = db.session()
    normalized = rules.normalize_icd10(code)
    if normalized is None:
        raise Invalid(f"{code!r} is not a valid ICD-10 code.", code="invalid_icd10")
    if session.get(Department, department) is None:
        raise Invalid(f"Unknown department {department!r}.")
    cond = session.get(Condition, normalized)
    if cond is None:
        cond = Condition(code=normalized)
        session.add(cond)
    cond.name_zh, cond.name_en = name_zh, rules.icd10_name(normalized)
    cond.department, cond.chronic, cond.active = department, chronic, active
    session.flush()
    audit.record(
        session,
        "condition.saved",
        subject_type="condition",
        subject_id=normalized,
        detail={"department": department, "chronic": chronic, "active": active},
    )
    return cond


def add_condition(code: str, name_zh: str, department: str, chronic: bool) -> Condition:
    """A new catalog entry; a code already in the catalog is changed with `update_condition`."""
    normalized = rules.normalize_icd10(code)
    if normalized is not None and db.session.get(Condition, normalized) is not None:
        raise Conflict(
            "%(code)s is already in the catalog; change it from its row.",
            code="condition_exists",
            params={"code": normalized},
            fields=[{"loc": "code", "message": "already in the catalog"}],
        )
    return upsert_condition(code, name_zh, department, chronic)


@dataclass(frozen=True)
class ConditionChange:
    """What an administrator may change of a catalog entry (its ICD-10 code is its identity)."""

    name_zh: str
    name_en: str
    department: str
    chronic: bool
    active: bool


def get_condition(code: str) -> Condition:
    cond = db.session.get(Condition, code)
    if cond is None:
        raise NotFound("No such condition in the catalog.")
    return cond


def update_condition(code: str, change: ConditionChange) -> Condition:
    """Change a catalog entry's names, department, chronic flag and whether it is offered
    online; audited with what changed (old and new). Refusals name the field."""
    cond = get_condition(code)
    name_zh, name_en = change.name_zh.strip(), change.name_en.strip()
    if not name_zh or len(name_zh) > 100:
        raise Invalid(
            "The Chinese name is required, at most 100 characters.",
            fields=[{"loc": "name_zh", "message": "required, at most 100 characters"}],
        )
    if not name_en or len(name_en) > 200:
        raise Invalid(
            "The English name is required, at most 200 characters.",
            fields=[{"loc": "name_en", "message": "required, at most 200 characters"}],
        )
    dept = db.session.get(Department, change.department)
    if dept is None or not dept.approved:
        raise Invalid(
            "The department is not one of the institution's approved departments.",
            fields=[{"loc": "department", "message": "unknown department"}],
        )
    new = {
        "name_zh": name_zh,
        "name_en": name_en,
        "department": change.department,
        "chronic": change.chronic,
        "active": change.active,
    }
    changed = {k: [getattr(cond, k), v] for k, v in new.items() if getattr(cond, k) != v}
    if not changed:
        return cond
    for key, value in new.items():
        setattr(cond, key, value)
    db.session.flush()
    audit.record(
        db.session(), "condition.updated", subject_type="condition", subject_id=cond.code, detail={"changed": changed}
    )
    return cond


def all_conditions() -> list[Condition]:
    """The whole catalog for its administrators, those no longer offered online included."""
    return list(db.session.scalars(select(Condition).order_by(Condition.code)))


def seed_conditions() -> None:
    for code, zh, dept, chronic in DEFAULT_CONDITIONS:
        upsert_condition(code, zh, dept, chronic)


def list_conditions() -> list[Condition]:
    return list(db.session.scalars(select(Condition).where(Condition.active).order_by(Condition.code)))


def search_conditions(q: str, limit: int = 20) -> list[Condition]:
    """Conditions whose Chinese or English name or code contains the text (a patient types
    高血压, 糖尿病 …), or whose code a WHO / national edition code falls under."""
    text = q.strip()
    if not text:
        return list_conditions()[:limit]
    folded = text.casefold()
    found = [
        c
        for c in list_conditions()
        if folded in c.name_zh.casefold() or folded in c.name_en.casefold() or c.code.casefold().startswith(folded)
    ]
    parsed = rules.parse_icd10(text)
    if parsed is not None:
        cond = catalog_condition(parsed.who)
        if cond is not None and cond not in found:
            found.insert(0, cond)
    return found[:limit]


def condition_by_name(name: str) -> Condition | None:
    """The active catalog condition with exactly this Chinese (or English) name."""
    text = name.strip()
    return next((c for c in list_conditions() if text in (c.name_zh, c.name_en)), None)


def catalog_condition(icd10: str) -> Condition | None:
    codes = list(db.session.scalars(select(Condition.code).where(Condition.active)))
    match = rules.match_condition(icd10, codes)
    return db.session.get(Condition, match) if match else None
