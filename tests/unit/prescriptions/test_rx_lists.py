"""The official control lists against the numbers their sources state, and the matcher on real product names."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from prescriptions import ingredients as ing


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ing.DATA / name).read_text(encoding="utf-8"))
    return data


def test_narcotic_list_2013_has_121_entries_22_made_and_used_in_china() -> None:
    data = _load("narcotic.json")
    base = [e for e in data["entries"] if e["source"] == "2013"]
    assert len(base) == data["counts"]["2013"] == 121
    assert sum(1 for e in base if e.get("marketed_in_china")) == 22
    assert [e["item"] for e in base] == list(range(1, 122))
    later = {e["zh"]: e for e in data["entries"] if e["source"] != "2013"}
    assert set(later) == {"奥赛利定"} and later["奥赛利定"]["since"] == "2023-07-01"


def test_psychotropic_list_2013_has_68_class_one_and_81_class_two_items() -> None:
    data = _load("psychotropic.json")
    base = Counter(e["class"] for e in data["entries"] if e["source"] == "2013")
    assert base == {"psychotropic_1": 68, "psychotropic_2": 81}
    assert data["counts"]["2013"] == dict(base)
    items = [e["item"] for e in data["entries"] if e["source"] == "2013"]
    assert items == [f"I-{i}" for i in range(1, 69)] + [f"II-{i}" for i in range(1, 82)]
    by_zh = {e["zh"]: e for e in data["entries"]}
    # the entries the issue found missing or misspelled
    assert by_zh["哌醋甲酯"]["class"] == "psychotropic_1" and "哌甲酯" in by_zh["哌醋甲酯"]["aliases"]
    assert by_zh["莫达非尼"]["class"] == "psychotropic_1" and by_zh["莫达非尼"]["source"] == "2013"
    # later additions, each with its source and date
    later = {e["zh"]: (e["class"], e["source"], e["since"]) for e in data["entries"] if e["source"] != "2013"}
    assert later == {
        "瑞马唑仑": ("psychotropic_2", "2019-108", "2020-01-01"),
        "苏沃雷生": ("psychotropic_2", "2023", "2023-07-01"),
        "吡仑帕奈": ("psychotropic_2", "2023", "2023-07-01"),
        "依他佐辛": ("psychotropic_2", "2023", "2023-07-01"),
        "右美沙芬": ("psychotropic_2", "2024", "2024-07-01"),
        "纳呋拉啡": ("psychotropic_2", "2024", "2024-07-01"),
        "氯卡色林": ("psychotropic_2", "2024", "2024-07-01"),
        "依托咪酯": ("psychotropic_2", "2025", "2025-09-01"),
    }


def test_toxic_list_1988_has_28_tcm_names_and_11_western_plus_botulinum_toxin() -> None:
    data = _load("toxic.json")
    groups = Counter((e["group"], e["source"]) for e in data["entries"])
    assert groups == {("tcm", "1988"): 28, ("western", "1988"): 11, ("western", "2008"): 1}
    assert data["counts"] == {"1988_tcm": 28, "1988_western": 11, "2008_added": 1}


def test_precursor_list_has_4_items_naming_10_substances() -> None:
    data = _load("precursor.json")
    assert len({e["item"] for e in data["entries"]}) == data["counts"]["items"] == 4
    assert len(data["entries"]) == data["counts"]["substances"] == 10
    ephedrines = {e["zh"] for e in data["entries"] if e["item"] == "4"}
    assert ephedrines == {"麻黄碱", "伪麻黄碱", "消旋麻黄碱", "去甲麻黄碱", "甲基麻黄碱", "麻黄浸膏", "麻黄浸膏粉"}


def test_radioactive_list_states_no_count_and_the_pattern_covers_the_rest() -> None:
    data = _load("radioactive.json")
    assert data["counts"] is None  # there is no numbered national list (README)
    assert ing.classify("锝[99mTc]依沙美肟注射液").control_class == "radioactive"


@pytest.mark.parametrize("fname", ing.LIST_FILES)
def test_every_entry_names_its_source_document_and_date(fname: str) -> None:
    data = _load(fname)
    for entry in data["entries"]:
        assert entry["zh"] and entry["en"], entry
        source = data["sources"][entry["source"]]
        assert source["document"], entry
        if fname != "radioactive.json":
            assert entry["since"][:4].isdigit(), entry
        for cas in [entry.get("cas")] if entry.get("cas") else []:
            digits = cas.replace("-", "")
            check = sum(int(d) * (i + 1) for i, d in enumerate(reversed(digits[:-1]))) % 10
            assert check == int(digits[-1]), f"{entry['zh']}: CAS {cas} fails its check digit"


def test_no_ordinary_ingredient_name_contains_a_controlled_name() -> None:
    lex = ing.lexicon()
    ordinary = [i for i in _load("ingredients.json")["ingredients"] if ing.normalise(i["key"]) not in lex.controls]
    for item in ordinary:
        for name in (item["zh"], *item.get("aliases", ())):
            c = ing.classify(name)
            assert c.control_class is None, (name, c.reason)


# The 30 product names of issue 14 with their expected class. Where the sources differ from
# the issue's bracket, the source is followed (README "Differences from issue 14").
PRODUCTS = [
    ("盐酸哌甲酯缓释片", "", "psychotropic_1", "methylphenidate"),
    ("莫达非尼片", "", "psychotropic_1", "modafinil"),
    ("盐酸曲马多片", "", "psychotropic_2", "tramadol"),
    ("氨酚羟考酮片", "每片含盐酸羟考酮5mg、对乙酰氨基酚325mg", "psychotropic_2", "oxycodone"),
    ("复方甘草片", "", "narcotic", "opium"),  # [refused]: contains 阿片粉
    ("氢溴酸右美沙芬片", "", "psychotropic_2", "dextromethorphan"),
    ("依托咪酯注射液", "", "psychotropic_2", "etomidate"),
    ("佐匹克隆片", "", "psychotropic_2", "zopiclone"),
    ("地佐辛注射液", "", "psychotropic_2", "dezocine"),
    ("纳布啡注射液", "", "psychotropic_2", "nalbuphine"),
    ("注射用瑞马唑仑", "", "psychotropic_2", "remimazolam"),
    ("复方地芬诺酯片", "", "psychotropic_2", "diphenoxylate"),
    ("丁丙诺啡透皮贴剂", "", "psychotropic_2", "buprenorphine"),
    ("盐酸氯胺酮注射液", "", "psychotropic_1", "ketamine"),
    ("盐酸羟考酮缓释片", "", "narcotic", "oxycodone"),
    ("枸橼酸芬太尼注射液", "", "narcotic", "fentanyl"),
    ("磷酸可待因片", "", "narcotic", "codeine"),
    ("麻黄碱滴鼻液", "", "precursor", "ephedrine"),
    ("三唑仑片", "", "psychotropic_1", "triazolam"),
    ("咪达唑仑注射液", "", "psychotropic_1", "midazolam"),  # 2024: 原料药和注射剂 → class I
    ("艾司唑仑片", "", "psychotropic_2", "estazolam"),
    ("苯巴比妥片", "", "psychotropic_2", "phenobarbital"),
    ("米氮平片", "", None, "mirtazapine"),
    ("阿司匹林肠溶片", "", None, "aspirin"),
    ("普瑞巴林胶囊", "", None, "pregabalin"),
    ("复方氨酚烷胺片", "", None, "amantadine"),
    ("苯磺酸氨氯地平片", "", None, "amlodipine"),
    ("盐酸二甲双胍片", "", None, "metformin"),
    ("甘精胰岛素注射液", "", None, "insulin glargine"),
    ("碘[131I]化钠口服溶液", "", "radioactive", "sodium iodide (131i)"),
]


def test_the_issue_names_thirty_products() -> None:
    assert len(PRODUCTS) == 30 and len({p[0] for p in PRODUCTS}) == 30


@pytest.mark.parametrize(("name", "strength", "expected", "ingredient"), PRODUCTS)
def test_product_name_resolves_to_its_controlled_ingredient_and_class(
    name: str, strength: str, expected: str | None, ingredient: str
) -> None:
    c = ing.classify(name, strength=strength)
    assert c.control_class == expected, (name, c.control_class, c.reason)
    assert ingredient in c.ingredients, (name, c.ingredients)
    if expected is not None:
        assert c.reason  # says which listing
        assert ing.CLASS_NAMES_ZH[expected] in c.reason or "麻醉药品" in c.reason or "精神药品" in c.reason


def test_refused_products_cannot_be_ordinary() -> None:
    """复方甘草片: 阿片粉 is opium, a narcotic; it is classified so it cannot be prescribed online."""
    c = ing.classify("复方甘草片")
    assert c.control_class in ing.CONTROL_CLASSES
    assert "阿片" in c.reason
    # an ordinary glycyrrhizin product is not caught by the same abbreviation
    assert ing.classify("复方甘草酸苷片").control_class is None


def test_single_dextromethorphan_and_unknown_strength_oxycodone_compound() -> None:
    assert ing.classify("右美沙芬").control_class == "psychotropic_2"
    assert ing.classify("氨酚羟考酮片").control_class == "psychotropic_1"  # strength unknown → stricter
    assert ing.classify("洛芬待因缓释片", strength="布洛芬200mg/磷酸可待因13mg").control_class == "psychotropic_2"


@pytest.mark.parametrize(
    ("name", "ingredients", "generic"),
    [
        ("维生素C片", (), ""),  # not in the known-ordinary list
        ("制川乌", (), ""),  # a processed herb: not the raw toxic one, and not known either
        ("新药X片", (), ""),
        ("某某片", ("阿托伐他汀", "未知成分甲"), ""),  # one declared ingredient unknown
    ],
)
def test_unresolved_ingredients_make_a_product_unclassified(
    name: str, ingredients: tuple[str, ...], generic: str
) -> None:
    c = ing.classify(name, ingredients=ingredients, generic_name=generic)
    assert c.control_class == ing.UNCLASSIFIED, c
    assert "成分未能识别" in c.reason


def test_known_ingredients_declared_resolve_a_product_with_a_brand_name() -> None:
    c = ing.classify("立普妥", ingredients=("阿托伐他汀钙",))
    assert c.control_class is None and c.ingredients == ("atorvastatin",)
    # a controlled ingredient beside an unknown one: controlled, not merely held
    assert ing.classify("某复方片", ingredients=("可待因", "未知成分乙")).control_class == "narcotic"
