"""The prescriptions domain's codes in words: statuses, control classes, rule codes, fields,
and the rule violations as the prescribing page shows them in the UI language."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from clinic.core.errors import Violation
from clinic.core.pages import Words, label_for, register_labels, words

RX_STATUS = words(
    {
        "pending_review": ("待药师审核", "Pending pharmacist review"),
        "approved": ("审核通过", "Approved"),
        "rejected": ("药师审核未通过", "Rejected by the pharmacist"),
        "returned": ("已退回医师修改", "Returned to the physician"),
        "dispensed": ("已发药", "Dispensed"),
        "out_for_delivery": ("配送中", "Out for delivery"),
        "delivered": ("已送达", "Delivered"),
        "expired": ("已失效", "Expired"),
        "cancelled": ("已取消", "Cancelled"),
    }
)
CONTROL_CLASS = words(
    {
        "narcotic": ("麻醉药品", "Narcotic drug"),
        "psychotropic_1": ("第一类精神药品", "Class I psychotropic"),
        "psychotropic_2": ("第二类精神药品", "Class II psychotropic"),
        "toxic": ("医疗用毒性药品", "Medical toxic drug"),
        "radioactive": ("放射性药品", "Radioactive drug"),
        "precursor": ("药品类易制毒化学品", "Precursor chemical"),
        "unclassified": ("未完成管制分类", "Not yet classified"),
    }
)
RULE = words(
    {
        "controlled_substance": ("特殊管理药品不得在线开具", "Specially controlled drug"),
        "guardian_and_physician_required": ("6岁以下须监护人和陪伴医师", "Guardian and physician required"),
        "diagnosis_mismatch": ("与确诊诊断不符", "Does not fit the diagnosis"),
        "too_many_items": ("药品超过5种", "More than 5 items"),
        "supply_exceeds_limit": ("用药天数超限", "Supply over the limit"),
        "weight_required": ("须填写体重", "Weight required"),
        "allergy_conflict": ("与过敏史冲突", "Allergy conflict"),
        "duplicate_therapy": ("重复用药", "Duplicate therapy"),
        "interaction_contraindicated": ("配伍禁忌", "Contraindicated combination"),
        "visit_not_active": ("复诊不在进行中", "Visit not in progress"),
        "dose_exceeds_maximum": ("剂量超过最大量", "Dose over the maximum"),
        "quantity_mismatch": ("数量与用法不符", "Quantity does not match"),
        "unit_mismatch": ("单位不适用", "Unit does not fit"),
        "drug_unclassified": ("药品尚未完成管制分类", "Drug not yet classified"),
        "invalid_signature": ("签名无法验证", "Signature does not verify"),
    }
)
FIELD = words(
    {
        "items": ("药品", "Drugs"),
        "drug_id": ("药品", "drug"),
        "dose": ("单次剂量", "dose"),
        "unit": ("单位", "unit"),
        "frequency": ("频次", "frequency"),
        "route": ("用法", "route"),
        "days": ("天数", "days"),
        "quantity": ("数量", "quantity"),
        "weight_kg": ("体重", "Weight"),
        "long_term": ("长期处方", "Long-term"),
        "assessment_note": ("评估说明", "Assessment note"),
        "guardian_name": ("监护人姓名", "Guardian's name"),
        "guardian_id_number": ("监护人身份证号", "Guardian's ID number"),
        "guardian_relation": ("监护人关系", "Guardian's relation"),
        "physician_name": ("陪伴医师姓名", "Accompanying physician's name"),
        "physician_license_no": ("陪伴医师执业证号", "Accompanying physician's license number"),
        "physician_specialty": ("陪伴医师专业", "Accompanying physician's specialty"),
        "form": ("表单", "Form"),
    }
)
ITEM_FIELD = re.compile(r"^items-(\d+)-(\w+)$")


def field_label(name: str) -> str:
    """A form field's name as a person reads it: `items-0-dose` → 第1项 单次剂量."""
    found = ITEM_FIELD.match(name)
    if found:
        n, key = int(found.group(1)) + 1, found.group(2)
        part = FIELD.get(key)
        item = Words(f"第{n}项", f"Item {n}")
        return f"{item} {part}" if part is not None else str(item)
    part = FIELD.get(name)
    return str(part) if part is not None else str(FIELD["form"])


# --- rule violations on the prescribing page, in the UI language ------------------------------

# The rule violations on the prescribing page, in the UI language (the catalog has the Chinese);
# formatted with the violation's facts by `violation_message`.
MESSAGES: dict[str, LazyString] = {
    "controlled_substance": _l(
        "%(drug)s: specially controlled drugs (%(control)s) are never prescribed online (Art. 19)."
    ),
    "guardian_and_physician_required": _l(
        "A child under 6 needs a guardian recorded on the child's account and an accompanying "
        "physician (name, 15-digit licence number, specialty) (Art. 19). Check: %(missing)s."
    ),
    "diagnosis_mismatch": _l("%(drug)s is not indicated for the visit's confirmed diagnosis %(diagnosis)s (Art. 16)."),
    "too_many_items": _l("A prescription holds at most %(limit)s items; this one has %(count)s."),
    "supply_exceeds_limit": _l("%(drug)s: %(days)s days' supply exceeds the limit of %(limit)s days."),
    "weight_required": _l("The patient's weight is required under %(weight_age)s years."),
    "allergy_conflict": _l("%(drug)s contains %(ingredients)s, recorded as an allergy of the patient."),
    "duplicate_therapy": _l("%(ingredient)s is already prescribed in item %(other)s."),
    "duplicate_therapy_across": _l(
        "%(ingredient)s is already prescribed in another active prescription of this visit."
    ),
    "interaction_contraindicated": _l("%(pair)s: contraindicated together (%(source)s)."),
    "visit_not_active": _l("Only the attending physician of a visit in progress may prescribe (Art. 18)."),
    "dose_exceeds_maximum": _l("%(drug)s: %(dose_problem)s"),
    "quantity_mismatch": _l(
        "%(drug)s: the quantity %(quantity)s does not match dose × frequency × days: %(expected)s %(qunit)s "
        "(rounded up to whole packs of %(pack)s)."
    ),
    "unit_mismatch": _l("%(drug)s: %(unit_problem)s"),
    "drug_unclassified": _l(
        "%(drug)s: its ingredients are not yet classified against the control lists; it cannot be "
        "prescribed until a pharmacist or administrator classifies it."
    ),
}


def _dose_problem(d: Mapping[str, Any]) -> str:
    reason = d.get("reason")
    if reason == "frequency_not_allowed":
        return gettext("the frequency “%(f)s” is not allowed for this drug; allowed: %(allowed)s.") % {
            "f": d.get("frequency", ""),
            "allowed": "、".join(d.get("allowed", [])),
        }
    if reason == "no_pediatric_dose":
        return gettext("no dose for children is established for this product; it is not prescribed for a child.")
    unit = d.get("dose_unit", "")
    limits = "，".join(
        p
        for p in (
            gettext("at most %(x)s %(u)s a dose") % {"x": d["max_single"], "u": unit} if d.get("max_single") else "",
            gettext("at most %(x)s %(u)s a day") % {"x": d["max_daily"], "u": unit} if d.get("max_daily") else "",
        )
        if p
    )
    given = gettext("%(x)s %(u)s a dose") % {"x": d.get("single", ""), "u": unit}
    if d.get("daily"):
        given += "，" + gettext("%(x)s %(u)s a day") % {"x": d["daily"], "u": unit}
    by_weight = gettext(" (by the child's weight)") if d.get("per_kg") else ""
    return gettext("%(given)s exceeds the maximum: %(limits)s%(by_weight)s.") % {
        "given": given,
        "limits": limits,
        "by_weight": by_weight,
    }


def _unit_problem(d: Mapping[str, Any]) -> str:
    if d.get("allowed_units"):
        return gettext("a dose in “%(unit)s” does not fit this product; write it in %(allowed)s.") % {
            "unit": d.get("unit", ""),
            "allowed": "、".join(d["allowed_units"]),
        }
    if d.get("dispense_unit"):
        return gettext("the quantity is counted in %(u)s, not %(q)s.") % {
            "u": d["dispense_unit"],
            "q": d.get("quantity_unit", ""),
        }
    how = gettext("only whole or half units") if d.get("split") == "half" else gettext("only whole units")
    return gettext("the dose is %(units)s %(admin)s of %(per)s %(du)s each; this product is given in %(how)s.") % {
        "units": d.get("units", ""),
        "admin": d.get("admin_unit", ""),
        "per": d.get("per_unit", ""),
        "du": d.get("dose_unit", ""),
        "how": how,
    }


# What a child's prescription still lacks (rules.guardian_problems, rules.physician_problems), in words
MISSING: dict[str, LazyString] = {
    "guardian": _l("a guardian"),
    "guardian.name": _l("the guardian's name"),
    "guardian.relation": _l("the guardian's relation to the child"),
    "guardian.id_number": _l("the guardian's ID number"),
    "guardian.id_number (not an adult)": _l("the guardian must be an adult"),
    "guardian.not_recorded": _l("the guardian must be recorded as the child's guardian on the account"),
    "accompanying_physician": _l("an accompanying physician"),
    "accompanying_physician.name": _l("the accompanying physician's name"),
    "accompanying_physician.license_no": _l("the accompanying physician's licence number"),
    "accompanying_physician.license_no (15 digits)": _l(
        "the accompanying physician's licence number must be 15 digits"
    ),
    "accompanying_physician.specialty": _l("the accompanying physician's specialty"),
}


def _english() -> bool:
    return str(get_locale()) == "en"


def violation_message(v: Violation, names: list[str]) -> str:
    """A violation in the UI language: English shows the rule's own message."""
    code = "duplicate_therapy_across" if "other_prescription" in v.detail else v.code
    if _english() or code not in MESSAGES:
        return v.message
    d = v.detail
    params = {
        "drug": names[v.item] if v.item is not None and v.item < len(names) else "",
        "control": label_for("control", d.get("control_class")),
        "missing": "、".join(str(MISSING.get(str(m), m)) for m in d.get("missing", [])),
        "diagnosis": d.get("diagnosis") or "—",
        "limit": d.get("limit", ""),
        "count": d.get("count", ""),
        "days": d.get("days", ""),
        "weight_age": d.get("weight_age", ""),
        "ingredients": "、".join(d.get("ingredients", [])),
        "ingredient": d.get("ingredient", ""),
        "other": (d["other_item"] + 1) if isinstance(d.get("other_item"), int) else "",
        "pair": " + ".join(d.get("ingredients", [])),
        "source": d.get("source", ""),
        "dose_problem": _dose_problem(d) if v.code == "dose_exceeds_maximum" else "",
        "unit_problem": _unit_problem(d) if v.code == "unit_mismatch" else "",
        "quantity": d.get("quantity", ""),
        "expected": d.get("expected_min", "")
        if d.get("expected_min") == d.get("expected_max")
        else f"{d.get('expected_min', '')}–{d.get('expected_max', '')}",
        "qunit": d.get("quantity_unit", ""),
        "pack": d.get("pack", ""),
    }
    try:
        return str(MESSAGES[code]) % params
    except (KeyError, ValueError, TypeError):
        return v.message


def violations_out(violations: list[Violation], draft: Mapping[str, Any]) -> list[dict[str, Any]]:
    names = [i.get("name") or "" for i in draft["items"]]
    return [
        {
            "code": v.code,
            "title": label_for("rule", v.code),
            "item": v.item,
            "message": violation_message(v, names),
            "detail": v.detail,
        }
        for v in violations
    ]


def register() -> None:
    """Called once by the application factory."""
    register_labels("rx", RX_STATUS)
    register_labels("control", CONTROL_CLASS)
    register_labels("rule", RULE)
    register_labels("rx_field", FIELD)
