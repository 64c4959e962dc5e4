"""Product names → active ingredients → control lists (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prescriptions import ingredients as ing

# (product name, form, strength, expected ingredients (subset, in order), expected class)
TRICKY = [
    ("盐酸羟考酮缓释片", "", "", ("oxycodone",), "narcotic"),
    ("Oxycodone Hydrochloride Prolonged-release Tablets", "", "", ("oxycodone",), "narcotic"),
    ("氨酚羟考酮片", "片剂", "5mg:325mg", ("paracetamol", "oxycodone"), "psychotropic_2"),
    ("氨酚羟考酮片", "片剂", "", ("paracetamol", "oxycodone"), "psychotropic_1"),  # strength unknown → stricter
    ("复方磷酸可待因口服溶液", "", "", ("codeine",), "psychotropic_2"),
    ("洛芬待因缓释片", "", "", ("ibuprofen", "codeine"), "narcotic"),
    ("氨酚曲马多片", "", "", ("paracetamol", "tramadol"), "psychotropic_2"),
    ("盐酸曲马多缓释片", "", "", ("tramadol",), "psychotropic_2"),
    ("酒石酸唑吡坦片", "", "", ("zolpidem",), "psychotropic_2"),
    ("地西泮片", "", "", ("diazepam",), "psychotropic_2"),
    ("艾司唑仑片", "", "", ("estazolam",), "psychotropic_2"),
    ("舒乐安定片", "", "", ("estazolam",), "psychotropic_2"),
    ("氢溴酸右美沙芬片", "", "", ("dextromethorphan",), "psychotropic_2"),
    ("盐酸伪麻黄碱片", "", "", ("pseudoephedrine",), "precursor"),
    ("硫酸阿托品", "", "", ("atropine",), "toxic"),
    ("硝酸毛果芸香碱滴眼液", "", "", ("pilocarpine",), "toxic"),
    ("注射用盐酸瑞芬太尼", "", "", ("remifentanil",), "narcotic"),
    ("芬太尼透皮贴剂", "", "", ("fentanyl",), "narcotic"),
    ("双氢可待因片", "", "", ("dihydrocodeine",), "narcotic"),
    ("丁丙诺啡透皮贴剂", "", "", ("buprenorphine",), "psychotropic_2"),
    ("丁丙诺啡纳洛酮舌下片", "", "", ("buprenorphine", "naloxone"), "psychotropic_2"),
    ("咪达唑仑注射液", "", "", ("midazolam",), "psychotropic_1"),
    ("咪达唑仑片", "", "", ("midazolam",), "psychotropic_2"),
    ("麦角胺咖啡因片", "", "", ("ergotamine", "caffeine"), "psychotropic_2"),
    ("复方地芬诺酯片", "", "", ("diphenoxylate", "atropine"), "psychotropic_2"),
    ("去痛片", "", "", ("phenobarbital",), "psychotropic_2"),
    ("碘[131I]化钠口服溶液", "", "", (), "radioactive"),
    ("锝[99mTc]奥曲肽注射液", "", "", (), "radioactive"),
    ("生川乌", "", "", (), "toxic"),
    ("咖啡因片", "", "", ("caffeine",), "psychotropic_2"),
]

ORDINARY = [
    ("苯磺酸氨氯地平片", ("amlodipine",)),
    ("硝苯地平控释片", ("nifedipine",)),
    ("盐酸二甲双胍缓释片", ("metformin",)),
    ("氯沙坦钾片", ("losartan",)),
    ("左甲状腺素钠片", ("levothyroxine",)),
    ("硫酸氢氯吡格雷片", ("clopidogrel",)),
    ("单硝酸异山梨酯缓释片", ("isosorbide mononitrate",)),
    ("硝酸甘油片", ("nitroglycerin",)),
    ("沙美特罗替卡松吸入粉雾剂", ("salmeterol", "fluticasone")),
    ("富马酸替诺福韦二吡呋酯片", ("tenofovir disoproxil",)),
    # contains caffeine, which is controlled only alone
    ("复方氨酚烷胺片", ("paracetamol", "amantadine", "caffeine", "chlorphenamine", "artificial bezoar")),
    ("盐酸阿扑吗啡注射液", ("apomorphine",)),  # not morphine
]


@pytest.mark.parametrize(("name", "form", "strength", "expected", "cls"), TRICKY)
def test_tricky_real_product_names(name: str, form: str, strength: str, expected: tuple[str, ...], cls: str) -> None:
    c = ing.classify(name, form=form, strength=strength)
    assert c.control_class == cls, c
    for key in expected:
        assert key in c.ingredients
    assert c.reason  # always says why


@pytest.mark.parametrize(("name", "expected"), ORDINARY)
def test_ordinary_products_stay_ordinary(name: str, expected: tuple[str, ...]) -> None:
    c = ing.classify(name)
    assert c.control_class is None, c.reason
    assert c.ingredients == expected


def test_declared_ingredients_cannot_hide_a_controlled_one() -> None:
    c = ing.classify("氨酚羟考酮片", ingredients=["对乙酰氨基酚"], strength="5mg:325mg")
    assert "oxycodone" in c.ingredients and c.control_class == "psychotropic_2"
    c = ing.classify("止痛一号", ingredients=["对乙酰氨基酚", "盐酸羟考酮"])
    assert c.control_class == "narcotic" or c.control_class == "psychotropic_1"


def test_oxycodone_compound_over_5mg_is_class_one() -> None:
    assert ing.classify("氨酚羟考酮片", strength="10mg:325mg").control_class == "psychotropic_1"


def test_the_official_lists_have_their_sizes_and_sources() -> None:
    narcotic = json.loads((ing.DATA / "narcotic.json").read_text(encoding="utf-8"))
    base = [e for e in narcotic["entries"] if e["since"] == "2014-01-01"]
    assert len(base) == 121
    assert sum(1 for e in base if e.get("marketed_in_china")) == 22
    toxic = json.loads((ing.DATA / "toxic.json").read_text(encoding="utf-8"))
    assert sum(1 for e in toxic["entries"] if e["group"] == "tcm") == 28  # names as printed (README)
    assert sum(1 for e in toxic["entries"] if e["group"] == "western" and e["since"] == "1988-12-27") == 11
    for fname in ing.LIST_FILES:
        data = json.loads((ing.DATA / fname).read_text(encoding="utf-8"))
        assert data["version"]
        assert all(source["document"] for source in data["sources"].values())


def test_every_listed_name_is_recognised_as_its_class() -> None:
    for entry in ing.list_entries():
        for name in (entry.zh, entry.en):
            c = ing.classify(name)
            assert c.control_class in ing.CONTROL_CLASSES, name
            if not entry.preparation:  # a listed product (丁丙诺啡透皮贴剂) resolves to its substances
                assert entry.key in c.ingredients, (name, c.ingredients)


SALTS = ["", "盐酸", "硫酸", "磷酸", "酒石酸", "马来酸", "枸橼酸", "氢溴酸", "甲磺酸"]
FORMS = ["片", "缓释片", "控释片", "胶囊", "注射液", "颗粒", "口服溶液", "贴剂", "注射用"]
CONTROLLED = [
    e
    for e in ing.list_entries()
    if e.compound_scope == "all" and len(e.zh) >= 2 and "-" not in e.zh and not e.preparation
]


@settings(max_examples=300, deadline=None)
@given(
    entry=st.sampled_from(CONTROLLED),
    salt=st.sampled_from(SALTS),
    form=st.sampled_from(FORMS),
    compound=st.booleans(),
)
def test_salt_and_form_never_hide_a_controlled_ingredient(
    entry: ing.ListEntry, salt: str, form: str, compound: bool
) -> None:
    core = salt + entry.zh
    name = ("注射用" + core) if form == "注射用" else core + form
    if compound:
        name = "复方" + name
    c = ing.classify(name)
    assert c.control_class is not None, name
    assert entry.key in c.ingredients, (name, c.ingredients)


ORDINARY_KEYS = ["amlodipine", "metformin", "valsartan", "atorvastatin", "aspirin", "levothyroxine", "allopurinol"]


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(ORDINARY_KEYS), salt=st.sampled_from(SALTS), form=st.sampled_from(FORMS[:7]))
def test_ordinary_ingredients_with_salts_and_forms(key: str, salt: str, form: str) -> None:
    zh = ing.lexicon().zh_of[key]
    c = ing.classify(salt + zh + form)
    assert c.ingredients == (key,)
    assert c.control_class is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_classified_without_error(text: str) -> None:
    c = ing.classify(text)
    assert c.control_class in (None, *ing.CONTROL_CLASSES, ing.UNCLASSIFIED)


def test_allergy_names_and_groups_resolve_to_ingredients() -> None:
    assert ing.resolve_ingredient("青霉素类") == ("amoxicillin", "ampicillin", "benzylpenicillin")
    assert ing.resolve_ingredient("阿司匹林") == ("aspirin",)
    assert ing.resolve_ingredient("Aspirin") == ("aspirin",)
