"""Catalog seeding, formulary import, signing keys (real database, both backends)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from identity.models import Role
from prescriptions import catalog, imports, signing
from prescriptions.models import Drug, DrugInteraction, SigningKey
from tests.support.factories import staff

CLI = Actor(None, "test")


def seed() -> dict[str, str]:
    with acting_as(CLI), unit_of_work():
        return catalog.seed_catalog()


def test_seed_is_idempotent_and_returns_demo_drugs(ctx: Flask) -> None:
    ids = seed()
    count = db.session.scalar(select(func.count()).select_from(Drug))
    pairs = db.session.scalar(select(func.count()).select_from(DrugInteraction))
    assert {"amlodipine", "metformin", "insulin", "oxycodone"} <= ids.keys()
    assert seed() == ids
    assert db.session.scalar(select(func.count()).select_from(Drug)) == count
    assert db.session.scalar(select(func.count()).select_from(DrugInteraction)) == pairs
    oxy = db.session.get(Drug, __import__("uuid").UUID(ids["oxycodone"]))
    assert oxy is not None and oxy.control_class == "narcotic"
    insulin = db.session.get(Drug, __import__("uuid").UUID(ids["insulin"]))
    assert insulin is not None and insulin.cold_chain and "E11" in insulin.indicated_conditions
    amlo = db.session.get(Drug, __import__("uuid").UUID(ids["amlodipine"]))
    assert amlo is not None and amlo.control_class is None and amlo.indicated_conditions == ["I10", "I25"]


def test_search_by_chinese_and_english(ctx: Flask) -> None:
    seed()
    assert catalog.search_drugs("氨氯地平")[0].generic_name_en == "amlodipine"
    assert catalog.search_drugs("Amlodipine")[0].name == "苯磺酸氨氯地平片"
    assert any(d.control_class == "narcotic" for d in catalog.search_drugs("羟考酮"))
    assert catalog.search_drugs("%") == []


CSV = """name,form,strength,route,generic_name,ingredients,cold_chain
盐酸羟考酮缓释片,缓释片,10mg,口服,,,false
氨酚羟考酮片,片剂,5mg:325mg,口服,,对乙酰氨基酚,false
苯磺酸氨氯地平片,片剂,10mg,口服,氨氯地平,,false
,片剂,1mg,口服,,,false
复方磷酸可待因口服溶液,口服溶液,100ml,口服,,,maybe
地西泮片,片剂,2.5mg,口服,,,
门冬胰岛素注射液,注射液,3ml:300单位,皮下注射,,,true
only,three,columns
"""


def test_import_classifies_and_refuses_with_row_numbers(ctx: Flask, tmp_path: Path) -> None:
    seed()
    path = tmp_path / "formulary.csv"
    path.write_text(CSV, encoding="utf-8")
    with acting_as(CLI), unit_of_work():
        report = imports.import_formulary(path)
    assert report.fatal is None
    assert report.rows_read == 8
    refused = {r["row"]: r["reason"] for r in report.refused}
    assert set(refused) == {5, 6, 9}
    assert "name" in refused[5] and "cold_chain" in refused[6] and "columns" in refused[9]
    controlled = {c["name"]: c for c in report.controlled}
    assert controlled["盐酸羟考酮缓释片"]["control_class"] == "narcotic"
    assert controlled["氨酚羟考酮片"]["control_class"] == "psychotropic_2"
    assert "羟考酮" in controlled["氨酚羟考酮片"]["reason"]
    assert controlled["地西泮片"]["control_class"] == "psychotropic_2"
    assert "苯磺酸氨氯地平片" not in controlled
    amlo10 = db.session.scalar(select(Drug).where(Drug.name == "苯磺酸氨氯地平片", Drug.strength == "10mg"))
    assert amlo10 is not None and amlo10.atc_code == "C08CA01"  # taken from the seeded product
    insulin = db.session.scalar(select(Drug).where(Drug.name == "门冬胰岛素注射液"))
    assert insulin is not None and insulin.cold_chain
    summary = report.summary()
    assert "row 5" in summary and "盐酸羟考酮缓释片 → narcotic" in summary


def test_import_unreadable_file_is_fatal(ctx: Flask, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with acting_as(CLI), unit_of_work():
        assert imports.import_formulary(bad).fatal
        assert imports.import_formulary(tmp_path / "missing.csv").fatal == "file not found"
    no_cols = tmp_path / "cols.csv"
    no_cols.write_text("name,form\nx,y\n", encoding="utf-8")
    with acting_as(CLI), unit_of_work():
        assert "route" in (imports.import_formulary(no_cols).fatal or "")


def test_a_controlled_product_is_never_downgraded(ctx: Flask) -> None:
    with acting_as(CLI), unit_of_work():
        drug, _, _ = catalog.upsert_product(
            catalog.ProductSpec("止痛一号", "片剂", "5mg", "口服", ingredients=("羟考酮",))
        )
        assert drug.control_class == "narcotic"
    with acting_as(CLI), unit_of_work():
        drug, _, created = catalog.upsert_product(
            catalog.ProductSpec("止痛一号", "片剂", "5mg", "口服", ingredients=("对乙酰氨基酚",))
        )
        assert not created and drug.control_class == "narcotic"


def test_interactions_among_only_returns_relevant_pairs(ctx: Flask) -> None:
    seed()
    table = catalog.interactions_among(["simvastatin", "clarithromycin", "amlodipine"])
    assert list(table) == [frozenset({"simvastatin", "clarithromycin"})]
    assert catalog.interactions_among(["clopidogrel", "omeprazole"]) == {}


def test_allergy_keys(ctx: Flask) -> None:
    assert catalog.allergy_keys(["青霉素类", "阿司匹林", " "]) == (
        "amoxicillin",
        "ampicillin",
        "benzylpenicillin",
        "aspirin",
    )


def test_sign_verify_tamper_and_rotate(ctx: Flask) -> None:
    doc = staff(Role.PHYSICIAN)
    content = {
        "patient": {"id": "p1", "name": "张伟"},
        "items": [{"drug_id": "d1", "days": 7}],
        "physician": {"id": str(doc.id), "name": "王建国"},  # the signer, whose key must sign
        "iat": int(time.time()),  # when: the key must have been valid then
    }
    with acting_as(CLI), unit_of_work():
        token, kid = signing.sign(doc.id, content)
    assert signing.verify(token, content) == content
    changed = {**content, "items": [{"drug_id": "d1", "days": 8}]}
    with pytest.raises(signing.InvalidSignature):
        signing.verify(token, changed)
    head, payload, sig = token.split(".")
    for broken in (token[:-10], f"{head}.{payload}", f"{head}.{payload[:-4]}AAAA.{sig}", "x.y.z", ""):
        with pytest.raises(signing.InvalidSignature):
            signing.verify(broken)
    with acting_as(CLI), unit_of_work():
        new = signing.rotate_key(doc.id)
        token2, kid2 = signing.sign(doc.id, content)
    assert kid2 == new.kid != kid
    # the retired key still verifies what it signed, and is still published
    assert signing.verify(token, content) == content
    kids = [k["kid"] for k in signing.jwks()["keys"]]
    assert kid in kids and kid2 in kids
    stored = db.session.get(SigningKey, kid)
    assert stored is not None and stored.retired_at is not None
    # the private key is not stored in clear
    with db.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT private_key FROM signing_keys").scalars().all()
    assert all(b"PRIVATE KEY" not in bytes(r) for r in raw)
