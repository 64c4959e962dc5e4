"""The family-doctor domain's codes in words (contract statuses, classes, kinds, roles...)."""

from __future__ import annotations

from clinic.core.pages import register_labels, words

CONTRACT = words(
    {
        "pending": ("待医生确认", "Awaiting the doctor"),
        "active": ("生效中", "Active"),
        "ended": ("已解约", "Ended"),
        "expired": ("已到期", "Expired"),
        "declined": ("未获确认", "Declined"),
    }
)
CLASS = words(
    {
        "controlled": ("控制满意", "Controlled"),
        "uncontrolled": ("控制不满意", "Not controlled"),
        "urgent": ("危急", "Urgent"),
    }
)
KIND = words({"bp": ("血压", "Blood pressure"), "glucose": ("血糖", "Glucose"), "weight": ("体重", "Weight")})
MEMBER = words(
    {
        "lead_physician": ("团队负责医生", "Lead physician"),
        "physician": ("医生", "Physician"),
        "nurse": ("护士", "Nurse"),
        "public_health": ("公卫人员", "Public-health staff"),
    }
)
METHOD = words({"online": ("在线", "Online"), "phone": ("电话", "Phone"), "in_person": ("面对面", "In person")})
SIDE = words({"patient": ("签约居民", "The resident"), "team": ("家庭医生团队", "The team")})
CONDITION = words({"I10": ("高血压", "Hypertension"), "E11": ("2型糖尿病", "Type 2 diabetes")})
LEVEL = words(
    {
        "三级": ("三级医院", "Tertiary hospital"),
        "二级": ("二级医院", "Secondary hospital"),
        "一级": ("一级医院", "Primary hospital"),
        "基层": ("基层医疗卫生机构", "Primary-care institution"),
    }
)


def register() -> None:
    """Called once by the application factory."""
    register_labels("fd_contract", CONTRACT)
    register_labels("fd_class", CLASS)
    register_labels("fd_kind", KIND)
    register_labels("fd_member", MEMBER)
    register_labels("fd_method", METHOD)
    register_labels("fd_side", SIDE)
    register_labels("fd_condition", CONDITION)
    register_labels("fd_level", LEVEL)
