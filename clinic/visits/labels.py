"""The visit domain's codes in words (one mapping; pages call `label("visit", code)`)."""

from __future__ import annotations

from clinic.core.pages import register_labels, words

VISIT_STATUS = words(
    {
        "awaiting_payment": ("待支付", "Awaiting payment"),
        "waiting": ("等待医师接诊", "Waiting for a physician"),
        "in_progress": ("进行中", "In progress"),
        "completed": ("已完成", "Completed"),
        "referred": ("已转线下就诊", "Referred to an in-person clinic"),
        "cancelled": ("已取消", "Cancelled"),
    }
)
DIAGNOSIS_STATUS = words(
    {
        "pending": ("等待医师审核", "Waiting for a physician's review"),
        "confirmed": ("已确认", "Confirmed"),
        "rejected": ("未通过", "Not accepted"),
    }
)
DOCUMENT_KIND = words(
    {
        "outpatient_record": ("门诊病历", "Outpatient record"),
        "inpatient_record": ("住院病历", "Inpatient record"),
        "discharge_summary": ("出院小结", "Discharge summary"),
        "diagnosis_certificate": ("诊断证明书", "Diagnosis certificate"),
    }
)
SEX = words({"male": ("男", "male"), "female": ("女", "female")})
NOTE_KIND = words({"completion": ("复诊记录", "Visit note"), "referral": ("转诊意见", "Referral")})


def register() -> None:
    """Called once by the application factory."""
    register_labels("visit", VISIT_STATUS)
    register_labels("diagnosis", DIAGNOSIS_STATUS)
    register_labels("document", DOCUMENT_KIND)
    register_labels("sex", SEX)
    register_labels("note", NOTE_KIND)
