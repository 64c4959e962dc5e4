"""Records between institutions are medical records (issue 19 item 6): every telemedicine
table has a retention kind, kept at least 15 years and never purgeable; and no code
deletes a row of a kept record (there is no delete path)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import clinic.telemedicine
from clinic.core.db import Base
from clinic.regulator import retention

ROOT = Path(__file__).resolve().parents[4]
PACKAGES = ("clinic", "identity", "prescriptions", "pharmacy")
TELEMEDICINE_KINDS = sorted({k for t, k in retention.TABLES.items() if t.startswith("tm_")})
CLOSED = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def _import_everything() -> None:
    for mod in pkgutil.walk_packages(clinic.telemedicine.__path__, "clinic.telemedicine."):
        importlib.import_module(mod.name)
    for name in ("clinic.visits.models", "prescriptions.models", "pharmacy.models", "clinic.core.audit"):
        importlib.import_module(name)


def test_every_telemedicine_table_has_a_kind_kept_fifteen_years_at_least() -> None:
    _import_everything()
    tables = [t for t in Base.metadata.tables if t.startswith("tm_")]
    assert "tm_messages" in tables and "tm_partners" in tables
    missing = [t for t in tables if retention.kind_of_table(t) is None]
    assert not missing, f"telemedicine tables without a retention kind: {missing}"
    for table in tables:
        rule = retention.RULES[retention.TABLES[table]]
        assert rule.min_years >= 15 and rule.purgeable is False, table


@pytest.mark.parametrize("kind", TELEMEDICINE_KINDS)
def test_telemedicine_records_are_never_purgeable(kind: str) -> None:
    assert not retention.purgeable(kind, CLOSED, CLOSED + timedelta(days=365 * 40))
    assert retention.keep_until(kind, CLOSED) >= datetime(2041, 1, 5, 8, 0, tzinfo=UTC)


def test_the_rules_name_their_tables() -> None:
    by_kind = {r["kind"]: r for r in retention.describe()}
    assert by_kind["federation_message"]["tables"] == ["tm_messages"]
    assert by_kind["consultation_opinion"]["tables"] == ["tm_consult_opinions"]
    assert by_kind["referral"]["tables"] == ["tm_referrals"]
    assert by_kind["message"]["tables"] == ["visit_messages"]  # the one purgeable kind


def _kept_models() -> dict[str, str]:
    """Mapped class name -> table, for every table whose kind is never purged."""
    _import_everything()
    out = {}
    for mapper in Base.registry.mappers:
        table = getattr(mapper.local_table, "name", "")
        kind = retention.kind_of_table(table)
        if kind is not None and not retention.RULES[kind].purgeable:
            out[mapper.class_.__name__] = table
    return out


def _deletes(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, what is deleted, how) for `delete(X)`, `X.__table__.delete()` and `session.delete(x)`."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "delete" and node.args:
            target = node.args[0]
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
            found.append((node.lineno, name, "delete()"))
        elif isinstance(func, ast.Attribute) and func.attr == "delete":
            owner = func.value
            if isinstance(owner, ast.Attribute) and owner.attr == "__table__":
                name = owner.value.id if isinstance(owner.value, ast.Name) else ""
                found.append((node.lineno, name, "__table__.delete()"))
            elif (isinstance(owner, ast.Name) and owner.id in ("session", "s")) or (
                isinstance(owner, ast.Attribute) and owner.attr == "session"
            ):
                found.append((node.lineno, "", "session.delete()"))
    return found


def test_no_code_deletes_a_kept_record() -> None:
    kept = _kept_models()
    assert {"FederationMessage", "PartnerInstitution", "Visit", "Diagnosis"} <= set(kept)
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for line, name, how in _deletes(tree):
                rel = path.relative_to(ROOT)
                if name in kept:
                    offenders.append(f"{rel}:{line} {how} of {name} ({kept[name]})")
                elif how == "session.delete()" and rel.parts[:2] in (
                    ("clinic", "telemedicine"),
                    ("clinic", "regulator"),
                ):
                    offenders.append(f"{rel}:{line} {how} in a records package")
    assert not offenders, "\n".join(offenders)


def test_the_scan_finds_a_delete_when_there_is_one() -> None:
    tree = ast.parse(
        "session.execute(delete(FederationMessage).where(x))\nReferral.__table__.delete()\ndb.session.delete(c)\n"
    )
    assert sorted(_deletes(tree)) == [
        (1, "FederationMessage", "delete()"),
        (2, "Referral", "__table__.delete()"),
        (3, "", "session.delete()"),
    ]
