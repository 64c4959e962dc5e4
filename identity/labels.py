"""The identity domain's codes in words: roles, relations, who acted."""

from __future__ import annotations

from clinic.core.pages import register_labels, words

ROLE = words(
    {
        "patient": ("患者", "Patient"),
        "physician": ("医师", "Physician"),
        "pharmacist": ("药师", "Pharmacist"),
        "admin": ("管理员", "Administrator"),
        "regulator": ("监管部门", "Regulator"),
        # who else writes audit entries
        "system": ("系统", "System"),
        "cli": ("命令行", "Command line"),
        "anonymous": ("未登录访客", "Not signed in"),
        "partner": ("配送企业", "Delivery partner"),
        "test": ("测试", "Test"),
    }
)
RELATION = words(
    {
        "self": ("本人", "Self"),
        "child": ("子女", "Child"),
        "parent": ("父母", "Parent"),
        "spouse": ("配偶", "Spouse"),
        "other": ("其他", "Other"),
        "guardian": ("监护人", "Guardian"),
    }
)


def register() -> None:
    """Called once by the application factory."""
    register_labels("role", ROLE)
    register_labels("relation", RELATION)
