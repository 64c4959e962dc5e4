"""The prescriptions domain's codes in words: statuses, control classes, rule codes, fields."""

from __future__ import annotations

import re

from clinic.core.pages import Words, register_labels, words

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


def register() -> None:
    """Called once by the application factory."""
    register_labels("rx", RX_STATUS)
    register_labels("control", CONTROL_CLASS)
    register_labels("rule", RULE)
    register_labels("rx_field", FIELD)
