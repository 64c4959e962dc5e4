"""Rules between institutions, pure (no Flask, no session).

- A cooperation agreement (合作协议; 2014 opinions 三(二), Jilin measures Art. 15) names the
  partner, its level, its address, the public key its messages are signed with (pinned:
  replacing it is an explicit act), the services and departments agreed, the fee per
  consultation and how it is split between the inviting and the invited institution (Jilin
  Art. 44, e.g. 20 / 80: the shares sum to 100), and when it is in force.
- No message flows without an agreement in force on that day, either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from clinic.core.errors import Conflict, Violation

LEVELS = ("三级", "二级", "一级", "基层")
SERVICES = ("consultation", "remote_diagnosis", "referral")
MAX_FEE_FEN = 100_000_000  # 1 000 000 yuan: more is a typing error


def N_(text: str) -> str:
    """Mark a message for extraction; it is translated where it is shown."""
    return text


@dataclass(frozen=True)
class AgreementTerms:
    name: str
    license_no: str
    level: str
    base_url: str
    public_jwk: dict[str, Any]
    services: tuple[str, ...]
    departments: tuple[str, ...]
    fee_fen: int
    split_inviting: int
    split_invited: int
    valid_from: date
    valid_until: date


def normalise_base_url(url: str) -> str:
    """The partner's address as compared with a message's source endpoint: no trailing slash."""
    return url.strip().rstrip("/")


def check_base_url(url: str, development: bool) -> list[Violation]:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return [
            Violation("invalid", N_("The base URL must be an absolute https:// address."), detail={"loc": "base_url"})
        ]
    if parts.scheme != "https" and not development:
        return [
            Violation(
                "invalid",
                N_("The base URL must use https: messages between institutions carry medical records."),
                detail={"loc": "base_url"},
            )
        ]
    if parts.query or parts.fragment or parts.username or parts.password:
        return [
            Violation(
                "invalid",
                N_("The base URL must not carry a query, a fragment or credentials."),
                detail={"loc": "base_url"},
            )
        ]
    return []


def check_public_jwk(jwk: dict[str, Any]) -> list[Violation]:
    """An EC P-256 public key for ES256, with a key id; never a private part."""
    if "d" in jwk:
        return [
            Violation(
                "invalid",
                N_("The partner's key must be its public key only: a private key was sent."),
                detail={"loc": "public_jwk"},
            )
        ]
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or not jwk.get("x") or not jwk.get("y"):
        return [
            Violation(
                "invalid", N_("The partner's key must be an EC P-256 public key (ES256)."), detail={"loc": "public_jwk"}
            )
        ]
    if not isinstance(jwk.get("kid"), str) or not jwk["kid"].strip():
        return [
            Violation("invalid", N_("The partner's key must carry its key id (kid)."), detail={"loc": "public_jwk"})
        ]
    if jwk.get("alg") not in (None, "ES256"):
        return [Violation("invalid", N_("The partner's key must be for ES256."), detail={"loc": "public_jwk"})]
    return []


def check_terms(t: AgreementTerms, development: bool) -> list[Violation]:
    """Every broken rule of an agreement's terms, each naming its field."""
    out: list[Violation] = []
    if t.level not in LEVELS:
        out.append(
            Violation("invalid", N_("The level must be one of 三级, 二级, 一级, 基层."), detail={"loc": "level"})
        )
    out += check_base_url(t.base_url, development)
    out += check_public_jwk(t.public_jwk)
    if not t.services:
        out.append(Violation("invalid", N_("At least one service must be agreed."), detail={"loc": "services"}))
    unknown = [s for s in t.services if s not in SERVICES]
    if unknown:
        out.append(
            Violation(
                "invalid",
                N_("The services agreed must be consultation, remote_diagnosis or referral."),
                detail={"loc": "services"},
            )
        )
    if not (0 <= t.fee_fen <= MAX_FEE_FEN):
        out.append(Violation("invalid", N_("The fee must be between 0 and 1 000 000 yuan."), detail={"loc": "fee_fen"}))
    if not (0 <= t.split_inviting <= 100 and 0 <= t.split_invited <= 100) or t.split_inviting + t.split_invited != 100:
        out.append(
            Violation(
                "invalid",
                N_("The fee split's inviting and invited shares must sum to 100."),
                detail={"loc": "fee_split"},
            )
        )
    if t.valid_until < t.valid_from:
        out.append(
            Violation(
                "invalid",
                N_("The agreement must end on or after the day it starts."),
                detail={"loc": "valid_until"},
            )
        )
    return out


def in_force(valid_from: date, valid_until: date, on: date) -> bool:
    """An agreement is in force from its first day to its last day, both included."""
    return valid_from <= on <= valid_until


def shares(fee_fen: int, split_inviting: int) -> tuple[int, int]:
    """The inviting and invited shares of a fee in fen; the invited side gets the odd fen."""
    inviting = fee_fen * split_inviting // 100
    return inviting, fee_fen - inviting


def parse_split(text: str) -> tuple[int, int]:
    """'20:80' → (20, 80); ValueError when it is not two whole numbers summing to 100."""
    left, sep, right = text.partition(":")
    if not sep:
        raise ValueError("the split is written inviting:invited, e.g. 20:80")
    a, b = int(left), int(right)
    if a < 0 or b < 0 or a + b != 100:
        raise ValueError("the two shares must sum to 100")
    return a, b


# --- the lifecycle of a consultation or referral: FHIR R4 Task.status ------------------


class TaskStatus(StrEnum):
    """The FHIR Task states a consultation or a referral moves through, on each side."""

    REQUESTED = "requested"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"


class TaskEvent(StrEnum):
    ACCEPT = "accept"  # the receiving side takes it (a qualified specialist, a department)
    START = "start"  # work has begun (questions asked back, the patient has arrived)
    COMPLETE = "complete"  # the opinion is written, the referral's outcome reported
    REJECT = "reject"  # the receiving side declines
    CANCEL = "cancel"  # the requesting side withdraws it
    FAIL = "fail"  # the message could not be delivered, after every retry


TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.REJECTED, TaskStatus.CANCELLED, TaskStatus.FAILED})

_TASK_MOVES: dict[tuple[TaskStatus, TaskEvent], TaskStatus] = {
    (TaskStatus.REQUESTED, TaskEvent.ACCEPT): TaskStatus.ACCEPTED,
    (TaskStatus.REQUESTED, TaskEvent.REJECT): TaskStatus.REJECTED,
    (TaskStatus.REQUESTED, TaskEvent.CANCEL): TaskStatus.CANCELLED,
    (TaskStatus.REQUESTED, TaskEvent.FAIL): TaskStatus.FAILED,
    (TaskStatus.ACCEPTED, TaskEvent.START): TaskStatus.IN_PROGRESS,
    (TaskStatus.ACCEPTED, TaskEvent.COMPLETE): TaskStatus.COMPLETED,
    (TaskStatus.ACCEPTED, TaskEvent.CANCEL): TaskStatus.CANCELLED,
    (TaskStatus.ACCEPTED, TaskEvent.FAIL): TaskStatus.FAILED,
    (TaskStatus.IN_PROGRESS, TaskEvent.COMPLETE): TaskStatus.COMPLETED,
    (TaskStatus.IN_PROGRESS, TaskEvent.CANCEL): TaskStatus.CANCELLED,
    (TaskStatus.IN_PROGRESS, TaskEvent.FAIL): TaskStatus.FAILED,
}


class IllegalTaskTransition(Conflict):
    code = "illegal_transition"


def transition(status: TaskStatus, event: TaskEvent) -> TaskStatus:
    """The one place a consultation or a referral changes status; illegal moves are refused
    by name (a completed consultation cannot be accepted again, a declined referral cannot
    be completed)."""
    nxt = _TASK_MOVES.get((status, event))
    if nxt is None:
        raise IllegalTaskTransition(
            N_("This request has moved on; it cannot be changed that way now."),
            status=status.value,
            event=event.value,
        )
    return nxt
