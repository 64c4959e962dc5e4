"""Active ingredients from product names, and their place on the official control lists.

Pure: no Flask, no session. The lists are loaded from `prescriptions/data/*.json` once
(`lexicon()`), everything else is a function of its arguments.

How a product name becomes ingredients (e.g. 复方磷酸可待因口服溶液, 盐酸羟考酮缓释片):
1. normalise (NFKC, no spaces, lower-case Latin, parenthesised brand names set aside);
2. strip the dosage-form word (缓释片, 注射液, 口服溶液 …, or the prefix 注射用);
3. take 复方 off (it marks a compound);
4. segment what remains into known names (INN and Chinese generic names of the lists and
   the formulary, their aliases and the abbreviations of compound names such as 氨酚 =
   paracetamol), skipping salt, ester and hydrate words (盐酸, 马来酸, 钠, 一水合物 …);
5. whatever could not be segmented is still searched for every controlled name: a
   controlled product is never let through because its name was unusual.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"

CONTROL_CLASSES = ("narcotic", "psychotropic_1", "psychotropic_2", "toxic", "radioactive", "precursor")
# A product whose ingredients could not be resolved: held (not prescribable) until a person classifies it.
UNCLASSIFIED = "unclassified"
# strictest first: a product with several controlled ingredients takes the strictest class; a
# controlled ingredient beside an unknown one makes the product controlled, not merely held.
_RANK = {c: i for i, c in enumerate((*CONTROL_CLASSES, UNCLASSIFIED))}
CLASS_NAMES_ZH = {
    "narcotic": "麻醉药品",
    "psychotropic_1": "第一类精神药品",
    "psychotropic_2": "第二类精神药品",
    "toxic": "医疗用毒性药品",
    "radioactive": "放射性药品",
    "precursor": "药品类易制毒化学品",
    UNCLASSIFIED: "待分类（成分未识别）",
}

# Words of product names that are not ingredients (dosage forms, salts, hydrates, the words
# that join the names of a compound, the oral forms of the preparation rules): read once from
# data/name_words.json
_WORDS: dict[str, Any] = json.loads((DATA / "name_words.json").read_text(encoding="utf-8"))
FORM_WORDS = sorted(_WORDS["form_words"], key=len, reverse=True)
FORM_PREFIXES = tuple(_WORDS["form_prefixes"])
SALT_PREFIXES = sorted(_WORDS["salt_prefixes"], key=len, reverse=True)
SALT_SUFFIXES = sorted(_WORDS["salt_suffixes"], key=len, reverse=True)
EN_SALT_WORDS = frozenset(_WORDS["en_salt_words"])
EN_FORM_WORDS = frozenset(_WORDS["en_form_words"])
RADIONUCLIDE = re.compile(
    r"\[\s*\d{1,3}\s*m?\s*[a-z][a-z]?\s*\]|\b(?:\d{1,3}m?[a-z]{1,2}|[a-z]{1,2}-\d{1,3}m?)\b", re.I
)
RADIONUCLIDE_STRICT = re.compile(r"\[\s*\d{1,3}\s*m?\s*[A-Za-z]{1,2}\s*\]")
CONNECTOR_WORDS = frozenset(_WORDS["connector_words"])  # 复方, 和, 与, 、 … between the names of a compound
ORAL_SOLID = tuple(_WORDS["oral_solid_words"])
ORAL_LIQUID = tuple(_WORDS["oral_liquid_words"])


@dataclass(frozen=True)
class ListEntry:
    key: str  # canonical ingredient key: English name, lower case
    zh: str
    en: str
    aliases: tuple[str, ...]
    control_class: str
    list_title: str
    since: str
    compound_scope: str = "all"  # "all" | "single_only"
    note: str = ""
    preparation: bool = False  # the list names a product (丁丙诺啡透皮贴剂), not a substance


@dataclass(frozen=True)
class PreparationRule:
    ingredient: str
    control_class: str
    reason: str
    compound: bool | None = None
    with_: tuple[str, ...] = ()
    forms: tuple[str, ...] = ()
    oral_solid: bool = False
    oral_liquid: bool = False
    mg_over: float | None = None
    class_if_over: str | None = None


@dataclass(frozen=True)
class Finding:
    """Why a product is controlled: one ingredient, its class, and the listing that says so."""

    ingredient: str
    control_class: str
    reason: str


@dataclass(frozen=True)
class Classification:
    ingredients: tuple[str, ...]
    compound: bool
    control_class: str | None
    findings: tuple[Finding, ...] = ()
    unresolved: str = ""  # the part of the name that matched no known ingredient

    @property
    def reason(self) -> str:
        return "; ".join(f.reason for f in self.findings)


@dataclass
class Lexicon:
    """Every known name → canonical ingredient key(s), and the control listings per key."""

    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # normalised name → keys
    zh_of: dict[str, str] = field(default_factory=dict)
    controls: dict[str, list[ListEntry]] = field(default_factory=dict)
    rules: list[PreparationRule] = field(default_factory=list)
    allergy_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name → member keys
    not_controlled: frozenset[str] = frozenset()  # ordinary names that contain a controlled one (阿扑吗啡)
    _controlled_names: list[tuple[str, str]] | None = None
    _max_len: int = 0

    def add(self, name: str, keys: Iterable[str]) -> None:
        norm = normalise(name)
        if not norm:
            return
        current = self.names.get(norm, ())
        merged = tuple(dict.fromkeys(current + tuple(keys)))
        self.names[norm] = merged
        self._max_len = max(self._max_len, len(norm))
        self._controlled_names = None

    def controlled_names(self) -> list[tuple[str, str]]:
        """(normalised name, key) of every controlled substance, longest first (for the safety scan)."""
        if self._controlled_names is None:
            out = []
            for name, keys in self.names.items():
                for key in keys:
                    if key in self.controls and (len(name) >= 2 and not name.isascii() or len(name) >= 5):
                        out.append((name, key))
            self._controlled_names = sorted(out, key=lambda p: len(p[0]), reverse=True)
        return self._controlled_names

    def lookup(self, name: str) -> tuple[str, ...]:
        return self.names.get(normalise(name), ())


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").strip().lower()
    text = text.replace("䓬", "卓").replace("（", "(").replace("）", ")")
    return re.sub(r"\s+", " ", text) if text.isascii() else re.sub(r"\s+", "", text)


# --- loading the data files ------------------------------------------------------


def _read(name: str) -> dict[str, Any]:
    with (DATA / name).open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


LIST_FILES = ("narcotic.json", "psychotropic.json", "toxic.json", "radioactive.json", "precursor.json")


def list_entries() -> list[ListEntry]:
    out: list[ListEntry] = []
    for fname in LIST_FILES:
        data = _read(fname)
        for e in data["entries"]:
            cls = e.get("class") or data["list"]
            out.append(
                ListEntry(
                    key=normalise(e["en"]),
                    zh=e["zh"],
                    en=e["en"],
                    aliases=tuple(e.get("aliases", ())),
                    control_class=cls,
                    list_title=data["title_zh"],
                    since=str(e.get("since", "")),
                    compound_scope=e.get("compound_scope", "all"),
                    note=e.get("note", ""),
                    preparation=e.get("kind") == "preparation",
                )
            )
    return out


@cache
def lexicon() -> Lexicon:
    lex = Lexicon()
    for entry in list_entries():
        if entry.preparation:  # its rule is in special_preparations.json
            continue
        lex.controls.setdefault(entry.key, []).append(entry)
        for name in (entry.zh, entry.en, *entry.aliases):
            lex.add(name, [entry.key])
        lex.zh_of.setdefault(entry.key, entry.zh)
    ing = _read("ingredients.json")
    for item in ing["ingredients"]:
        key = normalise(item["key"])
        for name in (item["key"], item["zh"], *item.get("aliases", ())):
            lex.add(name, [key])
        lex.zh_of.setdefault(key, item["zh"])
    for abbr, keys in ing["abbreviations"].items():
        lex.add(abbr, [normalise(k) for k in keys])
    for group in ing["allergy_groups"].values():
        members = tuple(normalise(m) for m in group["members"])
        for name in group["names"]:
            lex.allergy_groups[normalise(name)] = members
    lex.not_controlled = frozenset(normalise(n) for n in ing["not_controlled"]["names"])
    for r in _read("special_preparations.json")["rules"]:
        over = r.get("class_if_mg_over") or {}
        lex.rules.append(
            PreparationRule(
                ingredient=r["ingredient"],
                control_class=r["class"],
                reason=r["reason_zh"],
                compound=r.get("compound"),
                with_=tuple(r.get("with", ())),
                forms=tuple(r.get("forms", ())),
                oral_solid=bool(r.get("oral_solid")),
                oral_liquid=bool(r.get("oral_liquid")),
                mg_over=over.get("mg"),
                class_if_over=over.get("class"),
            )
        )
    return lex


# --- product name → ingredients ----------------------------------------------------


@dataclass(frozen=True)
class ParsedName:
    ingredients: tuple[str, ...]
    compound: bool
    form_word: str
    unresolved: str


def _strip_form(name: str) -> tuple[str, str]:
    for prefix in FORM_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix) + 1:
            name = name[len(prefix) :]
            break
    changed = True
    form = ""
    while changed:
        changed = False
        for word in FORM_WORDS:
            if name.endswith(word) and len(name) > len(word):
                name, form = name[: -len(word)], word + form
                changed = True
                break
    return name, form


def _segment(text: str, lex: Lexicon) -> tuple[list[str], str]:
    """Split `text` into known names (longest first), skipping salt words; return keys and leftovers.

    Dynamic programming over positions minimising unknown characters, then the number of pieces.
    """
    n = len(text)
    inf = (10**9, 10**9)
    best: list[tuple[int, int]] = [inf] * (n + 1)
    back: list[tuple[int, tuple[str, ...] | None]] = [(0, None)] * (n + 1)
    best[0] = (0, 0)
    maxlen = max(lex._max_len, 6)
    skip = set(SALT_PREFIXES) | set(SALT_SUFFIXES) | CONNECTOR_WORDS
    for i in range(n):
        if best[i] == inf:
            continue
        cost, pieces = best[i]
        # one unknown character
        cand = (cost + 1, pieces)
        if cand < best[i + 1]:
            best[i + 1], back[i + 1] = cand, (i, None)
        for j in range(i + 1, min(n, i + maxlen) + 1):
            piece = text[i:j]
            keys = lex.names.get(piece)
            if keys:
                cand = (cost, pieces + 1)
                if cand < best[j]:
                    best[j], back[j] = cand, (i, keys)
            elif piece in skip:
                cand = (cost, pieces)
                if cand < best[j]:
                    best[j], back[j] = cand, (i, ())
    keys_out: list[str] = []
    leftovers: list[str] = []
    j = n
    while j > 0:
        i, keys = back[j]
        if keys is None:
            leftovers.append(text[i:j])
        else:
            keys_out[:0] = list(keys)
        j = i
    return list(dict.fromkeys(keys_out)), "".join(reversed(leftovers))


def _english_ingredients(text: str, lex: Lexicon) -> tuple[list[str], str]:
    words = [w for w in re.split(r"[^a-z0-9\-\[\]()]+", text) if w]
    words = [w for w in words if w not in EN_SALT_WORDS and w not in EN_FORM_WORDS]
    keys: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(words):
        for size in (4, 3, 2, 1):
            phrase = " ".join(words[i : i + size])
            if len(words[i : i + size]) == size and phrase in lex.names:
                keys += lex.names[phrase]
                i += size
                break
        else:
            rest.append(words[i])
            i += 1
    return list(dict.fromkeys(keys)), " ".join(rest)


def parse_product_name(name: str, lex: Lexicon | None = None) -> ParsedName:
    """Active ingredients named by a product name, e.g. 氨酚羟考酮片 → (paracetamol, oxycodone)."""
    lex = lex or lexicon()
    norm = normalise(name)
    direct = lex.names.get(norm)
    if direct:
        return ParsedName(direct, len(direct) > 1, "", "")
    brands = re.findall(r"\(([^)]*)\)", norm)
    core = re.sub(r"\([^)]*\)", "", norm)
    core = re.sub(r"[ⅰ-ⅻⅠ-Ⅻ]+$|\b[ivx]+$", "", core).strip()
    if core.isascii():
        keys, rest = _english_ingredients(core, lex)
        form = ""
    else:
        core, form = _strip_form(core)
        compound = core.startswith("复方")
        keys, rest = _segment(core, lex)
        if compound and len(keys) <= 1 and lex.names.get(core):
            keys = list(lex.names[core])
    for brand in brands:  # a brand in brackets may name the ingredient (…片(奥施康定))
        for k in lex.names.get(brand, ()):
            if k not in keys:
                keys.append(k)
    compound = norm.startswith("复方") or len(keys) > 1 or "compound" in norm
    return ParsedName(tuple(keys), compound, form, rest)


def _mg_figures(strength: str) -> list[float]:
    out = []
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(mg|g|μg|ug|毫克|克|微克)", (strength or "").lower()):
        value = float(num)
        out.append(value * 1000 if unit in ("g", "克") else value / 1000 if unit in ("μg", "ug", "微克") else value)
    return out


def _rule_applies(rule: PreparationRule, keys: tuple[str, ...], compound: bool, text: str) -> bool:
    if rule.ingredient not in keys:
        return False
    if rule.compound is not None and rule.compound != compound:
        return False
    if any(w not in keys for w in rule.with_):
        return False
    if rule.forms and not any(f in text for f in rule.forms):
        return False
    if rule.oral_solid and not (any(f in text for f in ORAL_SOLID) and "注射" not in text):
        return False
    return not (rule.oral_liquid and not any(f in text for f in ORAL_LIQUID))


def control_findings(
    ingredients: Iterable[str],
    *,
    compound: bool,
    form_text: str = "",
    strength: str = "",
    lex: Lexicon | None = None,
) -> list[Finding]:
    """Every controlled ingredient of a product with its class and the listing that puts it there."""
    lex = lex or lexicon()
    keys = tuple(dict.fromkeys(normalise(k) for k in ingredients))
    text = normalise(form_text)
    findings: list[Finding] = []
    for key in keys:
        entries = lex.controls.get(key)
        if not entries or key in lex.not_controlled:
            continue
        rule = next((r for r in lex.rules if r.ingredient == key and _rule_applies(r, keys, compound, text)), None)
        if rule is not None:
            cls = rule.control_class
            if rule.mg_over is not None and rule.class_if_over:
                figures = _mg_figures(strength)
                if not figures or min(figures) > rule.mg_over:
                    cls = rule.class_if_over
            findings.append(Finding(key, cls, f"{lex.zh_of.get(key, key)} {key}: {rule.reason}"))
            continue
        for entry in entries:
            if entry.compound_scope == "single_only" and compound:
                continue
            label = CLASS_NAMES_ZH[entry.control_class]
            extra = ""
            if entry.control_class == "precursor" and compound:
                extra = "（含麻黄碱类等复方制剂，按特殊管理药品处理）"
            findings.append(
                Finding(key, entry.control_class, f"{entry.zh} {entry.en}: {entry.list_title} — {label}{extra}")
            )
    return findings


def strictest(classes: Iterable[str]) -> str | None:
    ordered = sorted(set(classes), key=lambda c: _RANK[c])
    return ordered[0] if ordered else None


def _significant(leftover: str) -> bool:
    """Whether text left over after segmentation could name an ingredient (not digits or punctuation)."""
    return any(ch.isalpha() for ch in leftover)


def classify(
    name: str,
    *,
    form: str = "",
    strength: str = "",
    route: str = "",
    ingredients: Iterable[str] | None = None,
    generic_name: str = "",
    lex: Lexicon | None = None,
) -> Classification:
    """A product's active ingredients and control class, with the reason for it.

    `ingredients` given (e.g. an import's `ingredients` column) are resolved name by name
    and completed by what the product name says; the safety scan then looks for any
    controlled name anywhere in the product name, generic name and given ingredients.
    """
    lex = lex or lexicon()
    parsed = parse_product_name(name, lex)
    keys: list[str] = list(parsed.ingredients)
    unresolved = [parsed.unresolved] if _significant(parsed.unresolved) else []
    # the product's ingredients are known when one of its descriptions resolves completely
    resolved = bool(parsed.ingredients) and not unresolved
    compound = parsed.compound
    given = [g for g in (ingredients or ()) if g and g.strip()]
    given_ok = bool(given)
    for raw in given:
        sub = parse_product_name(raw, lex)
        if sub.ingredients:
            keys += [k for k in sub.ingredients if k not in keys]
        else:
            keys.append(normalise(raw))
        if not sub.ingredients or _significant(sub.unresolved):
            given_ok = False
            unresolved.append(raw.strip())
    if len(given) > 1:
        compound = True
    if generic_name:
        g = parse_product_name(generic_name, lex)
        keys += [k for k in g.ingredients if k not in keys]
        compound = compound or g.compound
        resolved = resolved or (bool(g.ingredients) and not _significant(g.unresolved))
    resolved = (resolved or given_ok) and all(k in lex.zh_of for k in keys)
    # safety scan: a controlled name anywhere in the texts is an ingredient, whatever else
    haystacks = [normalise(t) for t in (name, generic_name, *given) if t]
    for hay in haystacks:
        for ordinary in lex.not_controlled:
            hay = hay.replace(ordinary, " ")
        for cname, key in lex.controlled_names():  # longest first; a match is blanked out
            if cname in hay:
                if key not in keys:
                    keys.append(key)
                hay = hay.replace(cname, " ")
    compound = compound or len(keys) > 1
    form_text = " ".join([name, form, route])
    findings = control_findings(keys, compound=compound, form_text=form_text, strength=strength, lex=lex)
    if any(RADIONUCLIDE_STRICT.search(t) for t in (name, generic_name, *given)) and not any(
        f.control_class == "radioactive" for f in findings
    ):
        findings.append(Finding("radionuclide", "radioactive", "名称含放射性核素标记 — 放射性药品"))
    if not findings and not resolved:
        unknown = "、".join(dict.fromkeys([*unresolved, *(k for k in keys if k not in lex.zh_of)])) or name
        findings.append(
            Finding(
                "",
                UNCLASSIFIED,
                f"成分未能识别（{unknown}）：既不在管制目录中，也不在已知普通成分表中 — 待药师或管理员分类，分类前不得开具",
            )
        )
    return Classification(
        ingredients=tuple(keys),
        compound=compound,
        control_class=strictest(f.control_class for f in findings),
        findings=tuple(findings),
        unresolved="".join(unresolved),
    )


def resolve_ingredient(name: str, lex: Lexicon | None = None) -> tuple[str, ...]:
    """Canonical keys for an ingredient or allergy name (zh or en; a group name gives its members)."""
    lex = lex or lexicon()
    norm = normalise(name)
    if norm in lex.allergy_groups:
        return lex.allergy_groups[norm]
    keys = lex.names.get(norm)
    if keys:
        return keys
    parsed = parse_product_name(name, lex)
    return parsed.ingredients or (norm,)


def display_name(key: str, lex: Lexicon | None = None) -> str:
    lex = lex or lexicon()
    zh = lex.zh_of.get(key)
    return f"{zh} ({key})" if zh else key
