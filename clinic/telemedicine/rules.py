"""Rules between institutions, pure (no Flask, no session).

- A cooperation agreement (合作协议; 2014 opinions 三(二), Jilin measures Art. 15) names the
  partner, its level, its address, the public key its messages are signed with (pinned:
  replacing it is an explicit act), the services and departments agreed, the fee per
  consultation and how it is split between the inviting and the invited institution (Jilin
  Art. 44, e.g. 20 / 80: the shares sum to 100), and when it is in force.
- No message flows without an agreement in force on that day, either way.
- A consultation's task (FHIR Task status) moves only by `transition(status, event)`.
- Who may answer a consultation: a title at or above the agreement's (Jilin Art. 14).
- The monthly statement of consultation fees and its reconciliation with the partner's.
- A referral's direction (up or down) must fit the two institutions' levels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
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


# --- remote consultation: who may answer, and the monthly statements (Jilin Art. 14, 41–44) ---

# Professional titles of physicians (卫生专业技术职称), lowest to highest
TITLE_RANKS = {"医师": 1, "住院医师": 1, "主治医师": 2, "副主任医师": 3, "主任医师": 4}
TITLES = ("住院医师", "主治医师", "副主任医师", "主任医师")


def title_rank(title: str | None) -> int:
    return TITLE_RANKS.get((title or "").strip(), 0)


def meets_title(title: str | None, required: str | None) -> bool:
    """A title at or above the agreement's requirement (none required: any physician)."""
    return not required or title_rank(title) >= title_rank(required)


def valid_month(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m")
    except ValueError:
        return False
    return len(text) == 7


@dataclass(frozen=True)
class StatementLine:
    task_id: str
    we_invited: bool  # this side was the inviting institution
    fee_fen: int
    inviting_share_fen: int
    invited_share_fen: int


@dataclass(frozen=True)
class Statement:
    lines: tuple[StatementLine, ...]

    @property
    def count(self) -> int:
        return len(self.lines)

    @property
    def total_fen(self) -> int:
        return sum(line.fee_fen for line in self.lines)

    @property
    def inviting_share_fen(self) -> int:
        return sum(line.inviting_share_fen for line in self.lines)

    @property
    def invited_share_fen(self) -> int:
        return sum(line.invited_share_fen for line in self.lines)

    @property
    def owed_to_partner_fen(self) -> int:
        """What this institution owes the partner: the invited share where it invited."""
        return sum(line.invited_share_fen for line in self.lines if line.we_invited)

    @property
    def owed_by_partner_fen(self) -> int:
        return sum(line.invited_share_fen for line in self.lines if not line.we_invited)


@dataclass(frozen=True)
class Reconciliation:
    matches: bool
    count: int  # ours minus the partner's
    total_fen: int
    inviting_share_fen: int
    invited_share_fen: int
    only_here: list[str] = field(default_factory=list)
    only_partner: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)


def reconcile(ours: Statement, theirs: Statement) -> Reconciliation:
    """Compare our statement with the partner's (whose `we_invited` is from its side): the
    same consultations, each with the same fee and shares, and opposite roles."""
    mine = {line.task_id: line for line in ours.lines}
    other = {line.task_id: line for line in theirs.lines}
    differing = sorted(
        t
        for t in mine.keys() & other.keys()
        if (mine[t].fee_fen, mine[t].inviting_share_fen, mine[t].invited_share_fen, mine[t].we_invited)
        != (other[t].fee_fen, other[t].inviting_share_fen, other[t].invited_share_fen, not other[t].we_invited)
    )
    only_here = sorted(mine.keys() - other.keys())
    only_partner = sorted(other.keys() - mine.keys())
    return Reconciliation(
        matches=not (differing or only_here or only_partner),
        count=ours.count - theirs.count,
        total_fen=ours.total_fen - theirs.total_fen,
        inviting_share_fen=ours.inviting_share_fen - theirs.inviting_share_fen,
        invited_share_fen=ours.invited_share_fen - theirs.invited_share_fen,
        only_here=only_here,
        only_partner=only_partner,
        differing=differing,
    )


# --- refusals -------------------------------------------------------------------------------


# --- two-way referral: its direction between two levels (2018 measures Art. 21–23) ---

DIRECTIONS = ("up", "down")

# 基层 is primary care, the level of 一级 institutions and community health centres.
LEVEL_RANK = {"三级": 3, "二级": 2, "一级": 1, "基层": 1}


def direction_between(sender_level: str, receiver_level: str) -> str | None:
    """ "up" from a lower level to a higher one, "down" from a higher one to a lower one,
    None between institutions of the same level (or an unknown level)."""
    a, b = LEVEL_RANK.get(sender_level), LEVEL_RANK.get(receiver_level)
    if a is None or b is None or a == b:
        return None
    return "up" if a < b else "down"


def direction_violations(direction: str, sender_level: str, receiver_level: str) -> list[Violation]:
    """Why a referral in `direction` between these levels makes no sense (empty: it does)."""
    if direction not in DIRECTIONS:
        return [Violation("bad_direction", N_("A referral goes up or down."), detail={"loc": "direction"})]
    for level in (sender_level, receiver_level):
        if level not in LEVEL_RANK:
            return [
                Violation(
                    "bad_direction",
                    N_("The institution's level is not set; a referral's direction cannot be judged."),
                    detail={"loc": "direction"},
                )
            ]
    expected = direction_between(sender_level, receiver_level)
    if expected is None:
        return [
            Violation(
                "bad_direction",
                N_(
                    "Both institutions are of the same level (%(level)s): a referral between them is neither up nor down."
                ),
                detail={"loc": "direction", "params": {"level": sender_level}},
            )
        ]
    if expected != direction:
        message = (
            N_(
                "A referral down goes from a higher-level institution (%(from)s) to a lower-level one; this one is %(to)s."
            )
            if direction == "down"
            else N_(
                "A referral up goes from a lower-level institution (%(from)s) to a higher-level one; this one is %(to)s."
            )
        )
        return [
            Violation(
                "bad_direction",
                message,
                detail={"loc": "direction", "params": {"from": sender_level, "to": receiver_level}},
            )
        ]
    return []
