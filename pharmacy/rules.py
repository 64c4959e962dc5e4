"""The pharmacy's rules, pure: routing to a delivery partner, the delivery lifecycle, the
pharmacist's review and its lifecycle, the two pharmacists of dispensing, and delivery
addresses as people type them. No Flask, no session. How the pharmacy and its partners
trust each other (signatures, endpoints) is pharmacy.partner_security.

Art. 18 of the 2018 measures lets the institution entrust delivery to a qualified third
party; here "qualified" means: active, a license number on file, the license valid on the
delivery day, serving the delivery address's region, and able to carry every item
(cold-chain items only with a cold-chain partner).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

from clinic.core.errors import Conflict, Violation
from identity.rules import normalize_phone

# --- routing --------------------------------------------------------------------------


@dataclass(frozen=True)
class PartnerFacts:
    id: str
    name: str
    license_no: str | None
    license_valid_until: date | None
    regions: tuple[str, ...]  # GB/T 2260 code prefixes: "31" (a province), "1101" (a city), "110105"
    cold_chain: bool
    priority: int  # smaller is preferred
    active: bool = True


@dataclass(frozen=True)
class RouteDecision:
    partner_id: str | None
    match_length: int = 0
    # why each partner was passed over: partner id -> reason codes
    refused: dict[str, list[str]] = field(default_factory=dict)


def region_match(regions: Iterable[str], region_code: str) -> int:
    """Length of the longest of `regions` that prefixes `region_code` (0: not served)."""
    return max((len(r) for r in regions if r and region_code.startswith(r)), default=0)


def partner_refusals(p: PartnerFacts, region_code: str, needs_cold_chain: bool, today: date) -> list[str]:
    reasons: list[str] = []
    if not p.active:
        reasons.append("inactive")
    if not (p.license_no or "").strip():
        reasons.append("no_license")
    if p.license_valid_until is None or p.license_valid_until < today:
        reasons.append("license_expired")
    if region_match(p.regions, region_code) == 0:
        reasons.append("region_not_served")
    if needs_cold_chain and not p.cold_chain:
        reasons.append("no_cold_chain")
    return reasons


def route(
    partners: Sequence[PartnerFacts],
    region_code: str,
    needs_cold_chain: bool,
    today: date,
    exclude: Iterable[str] = (),
) -> RouteDecision:
    """Pick the partner for a delivery, or none (then the patient collects at the pharmacy).

    Among qualified partners that serve the region and can carry every item: the most
    specific region match first (longest prefix), then priority (smaller first), then name.
    """
    excluded = set(exclude)
    refused: dict[str, list[str]] = {}
    candidates: list[tuple[int, int, str, str]] = []
    for p in partners:
        reasons = partner_refusals(p, region_code, needs_cold_chain, today)
        if p.id in excluded:
            reasons.append("already_tried")
        if reasons:
            refused[p.id] = reasons
        else:
            candidates.append((-region_match(p.regions, region_code), p.priority, p.name, p.id))
    if not candidates:
        return RouteDecision(None, 0, refused)
    best = min(candidates)
    return RouteDecision(best[3], -best[0], refused)


# --- the delivery lifecycle --------------------------------------------------------------


# A partner's waybill number (运单号): printable ASCII, no leading or trailing space, at most
# 40 characters (SF1234567890123, JD0001234567-1-1, YT 7788 9900 1122).
WAYBILL_PATTERN = r"^[!-~](?:[ -~]{0,38}[!-~])?$"


class DeliveryStatus(enum.StrEnum):
    ROUTED = "routed"  # a partner is chosen; the order is in the outbox
    DISPATCHED = "dispatched"  # the partner accepted the order (2xx)
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    FAILED = "failed"
    COLLECT_AT_PHARMACY = "collect_at_pharmacy"  # no partner can carry it: the patient collects
    RETURNED = "returned"  # back at the pharmacy after a failed delivery


class DeliveryEventKind(enum.StrEnum):
    DISPATCHED = "dispatched"
    PICKED_UP = "picked_up"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    FAILED = "failed"
    REROUTED = "rerouted"
    RETURNED = "returned"
    COLLECTED = "collected"  # handed over at the pharmacy


CALLBACK_STATUSES = ("picked_up", "in_transit", "delivered", "failed")

_S, _E = DeliveryStatus, DeliveryEventKind
TRANSITIONS: dict[tuple[DeliveryStatus, DeliveryEventKind], DeliveryStatus] = {
    (_S.ROUTED, _E.DISPATCHED): _S.DISPATCHED,
    # the partner has the order even if its 2xx was lost (a worker killed mid-send)
    (_S.ROUTED, _E.PICKED_UP): _S.OUT_FOR_DELIVERY,
    (_S.ROUTED, _E.IN_TRANSIT): _S.OUT_FOR_DELIVERY,
    (_S.ROUTED, _E.FAILED): _S.FAILED,
    (_S.DISPATCHED, _E.DISPATCHED): _S.DISPATCHED,  # a resend after a lost answer
    (_S.DISPATCHED, _E.PICKED_UP): _S.OUT_FOR_DELIVERY,
    (_S.DISPATCHED, _E.IN_TRANSIT): _S.OUT_FOR_DELIVERY,
    (_S.DISPATCHED, _E.FAILED): _S.FAILED,
    (_S.OUT_FOR_DELIVERY, _E.DISPATCHED): _S.OUT_FOR_DELIVERY,
    (_S.OUT_FOR_DELIVERY, _E.PICKED_UP): _S.OUT_FOR_DELIVERY,
    (_S.OUT_FOR_DELIVERY, _E.IN_TRANSIT): _S.OUT_FOR_DELIVERY,
    (_S.OUT_FOR_DELIVERY, _E.DELIVERED): _S.DELIVERED,
    (_S.OUT_FOR_DELIVERY, _E.FAILED): _S.FAILED,
    (_S.FAILED, _E.REROUTED): _S.ROUTED,
    (_S.FAILED, _E.RETURNED): _S.RETURNED,
    (_S.COLLECT_AT_PHARMACY, _E.COLLECTED): _S.DELIVERED,
    (_S.RETURNED, _E.COLLECTED): _S.DELIVERED,
}


class IllegalDeliveryTransition(Conflict):
    code = "illegal_status_transition"
    default_message = "This status change is not allowed from the delivery's current status."


def transition(current: DeliveryStatus | str, event: DeliveryEventKind | str) -> DeliveryStatus:
    """The one place a delivery's status changes; an illegal jump is a named refusal."""
    cur, ev = DeliveryStatus(current), DeliveryEventKind(event)
    nxt = TRANSITIONS.get((cur, ev))
    if nxt is None:
        raise IllegalDeliveryTransition(
            f"A delivery that is {cur.value} cannot take the event {ev.value}.", current=cur.value, event=ev.value
        )
    return nxt


TERMINAL = frozenset({DeliveryStatus.DELIVERED})

# --- pharmacist review (医疗机构处方审核规范, 2018) ------------------------------------------------

# The structured reasons a pharmacist gives: what the review standard says is checked.
REVIEW_REASONS: dict[str, tuple[str, str]] = {
    "legality": ("处方合法性（开方资质、签名、处方格式）", "Legality (prescriber, signature, form)"),
    "indication": ("适应症与诊断不符", "Indication does not fit the diagnosis"),
    "dose": ("剂量、用法不适宜", "Dose or frequency not appropriate"),
    "route": ("剂型、给药途径不适宜", "Dosage form or route not appropriate"),
    "duplication": ("重复给药", "Duplicate therapy"),
    "interaction": ("有相互作用", "Interaction"),
    "contraindication": ("有配伍禁忌或禁忌症", "Incompatibility or contraindication"),
    "allergy": ("过敏史", "Allergy"),
    "special_population": ("特殊人群（儿童、老年、孕产妇、肝肾功能不全）", "Special population"),
    "quantity": ("用量、疗程超限", "Quantity or duration over the limit"),
    "other": ("其他", "Other"),
}
DECISIONS = ("approve", "reject", "return")
# Rules of prescribing time that do not apply again at review: the visit has since ended, and
# the guardian's ID number is kept only masked (both were checked when the physician signed).
PRESCRIBING_ONLY_RULES = frozenset({"visit_not_active", "guardian_and_physician_required"})


class ReviewState(enum.StrEnum):
    """A prescription's place in the pharmacists' review queue (stored as these strings)."""

    PENDING = "pending"  # signed, waiting for a pharmacist (claimed or not)
    DECIDED = "decided"  # approved, rejected or returned
    CLOSED = "closed"  # the prescription expired or was cancelled while waiting


class ReviewEvent(enum.StrEnum):
    DECIDE = "decide"  # a pharmacist approved, rejected or returned it
    CLOSE = "close"  # the prescription left review without a decision (expired, voided)


_REVIEW_MOVES: dict[tuple[ReviewState, ReviewEvent], ReviewState] = {
    (ReviewState.PENDING, ReviewEvent.DECIDE): ReviewState.DECIDED,
    (ReviewState.PENDING, ReviewEvent.CLOSE): ReviewState.CLOSED,
}


class IllegalReviewTransition(Conflict):
    code = "illegal_transition"


def review_transition(state: ReviewState, event: ReviewEvent) -> ReviewState:
    """The one place a review's state changes: a decided or closed review takes no event."""
    nxt = _REVIEW_MOVES.get((state, event))
    if nxt is None:
        raise IllegalReviewTransition(
            f"A review that is {state.value} cannot take the event {event.value}.",
            current=state.value,
            event=event.value,
        )
    return nxt


def decision_problems(decision: str, reasons: list[str], signature_valid: bool, rule_codes: list[str]) -> list[str]:
    """Why this decision cannot be taken (empty: it can)."""
    problems: list[str] = []
    if decision not in DECISIONS:
        problems.append("unknown_decision")
    unknown = [r for r in reasons if r not in REVIEW_REASONS]
    if unknown:
        problems.append("unknown_reason")
    if decision in ("reject", "return") and not reasons:
        problems.append("reasons_required")
    if decision == "approve":
        if not signature_valid:
            problems.append("invalid_signature")
        if rule_codes:
            problems.append("rules_failed")
    return problems


# --- dispensing: 调配 and 核对、发药 ---------------------------------------------------------------
#
# 处方管理办法 第三十七条 asks the pharmacist who dispenses to do 四查十对 (check the prescription,
# the drugs, incompatibilities and appropriateness against department, name, age, drug name,
# form, strength, quantity, appearance, dosage and diagnosis), and the 处方标准's 后记 has one
# signature field for 调配 and another for 核对、发药. This clinic reads them as two people: the
# check is a second pharmacist's independent look at what the first made up; one person
# checking their own work is no 核对. Neither text says so in words, so this is a choice: a
# pharmacy with one pharmacist on duty cannot issue online prescriptions until a second one is
# there to check.
# The reviewer (审核) may be either of the two: nothing asks for a third person.


@dataclass(frozen=True)
class DispensingPair:
    dispenser: str  # 调配: made up the prescription
    checker: str  # 核对、发药: checked it against the prescription and issued it


DISPENSING_PROBLEMS = ("checker_required", "already_prepared", "not_involved", "same_pharmacist")


def dispensing_pair(
    caller: str, prepared_by: str | None, dispensed_by: str | None, checked_by: str | None
) -> DispensingPair | str:
    """Who dispensed and who checked, or the problem code.

    `prepared_by`: who recorded making it up earlier (the first step), if anyone;
    `dispensed_by` / `checked_by`: what the caller says now (either may be left out).
    The caller is one of the two: a checker who checks what another made up, or a dispenser
    who names the colleague at the counter who checked it.
    """
    if prepared_by and dispensed_by and dispensed_by != prepared_by:
        return "already_prepared"
    dispenser = prepared_by or dispensed_by
    if dispenser is None and checked_by is None:
        return "checker_required"
    dispenser = dispenser or caller
    checker = checked_by or caller
    if dispenser == checker:
        return "same_pharmacist"
    if caller not in (dispenser, checker):
        return "not_involved"
    return DispensingPair(dispenser, checker)


# --- delivery addresses as people give them -------------------------------------------------


def mainland_mobile(typed: str | None) -> str | None:
    """A mainland China mobile number in E.164 (+86…), however typed, or None if it is not one
    (the same rule as registration: identity.rules.normalize_phone)."""
    try:
        return normalize_phone(typed or "")
    except ValueError:
        return None


def address_violations(
    recipient_name: str | None, phone: str | None, region_known: bool, address: str | None
) -> list[Violation]:
    """Everything wrong with a delivery address, each naming its field in words."""
    v: list[Violation] = []
    if not (recipient_name or "").strip():
        v.append(Violation("recipient_required", "Give the recipient's name.", detail={"field": "recipient_name"}))
    if mainland_mobile(phone) is None:
        v.append(
            Violation(
                "phone_invalid",
                "The recipient's mobile number must be a mainland China mobile number of 11 digits starting with 1.",
                detail={"field": "phone"},
            )
        )
    if not region_known:
        v.append(
            Violation(
                "region_unknown",
                "Choose the province, city and district from the lists.",
                detail={"field": "region_code"},
            )
        )
    if len((address or "").strip()) < 4:
        v.append(
            Violation(
                "address_required",
                "Give the street address: street, building, door number.",
                detail={"field": "address"},
            )
        )
    return v
