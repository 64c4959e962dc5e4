"""Pure pharmacy rules: routing to a qualified partner, the delivery lifecycle, partner signatures."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinic.core.jobs import backoff_seconds
from pharmacy import partner_security, rules
from pharmacy.rules import DeliveryEventKind as E
from pharmacy.rules import DeliveryStatus as S
from pharmacy.rules import PartnerFacts

TODAY = date(2026, 11, 23)


def partner(pid: str, **kw: object) -> PartnerFacts:
    base: dict[str, object] = {
        "id": pid,
        "name": pid,
        "license_no": "LIC-" + pid,
        "license_valid_until": TODAY + timedelta(days=30),
        "regions": ("11",),
        "cold_chain": False,
        "priority": 10,
        "active": True,
    }
    base.update(kw)
    return PartnerFacts(**base)  # type: ignore[arg-type]


# --- routing ---------------------------------------------------------------------------


def test_picks_the_qualified_partner_serving_the_region() -> None:
    d = rules.route([partner("a", regions=("31",)), partner("b", regions=("11",))], "110105", False, TODAY)
    assert d.partner_id == "b"
    assert d.refused == {"a": ["region_not_served"]}


def test_expired_or_missing_license_or_inactive_is_never_chosen() -> None:
    partners = [
        partner("expired", license_valid_until=TODAY - timedelta(days=1)),
        partner("nolicense", license_no=" "),
        partner("inactive", active=False),
    ]
    d = rules.route(partners, "110105", False, TODAY)
    assert d.partner_id is None
    assert d.refused == {"expired": ["license_expired"], "nolicense": ["no_license"], "inactive": ["inactive"]}


def test_license_valid_through_its_last_day() -> None:
    assert rules.route([partner("a", license_valid_until=TODAY)], "110105", False, TODAY).partner_id == "a"


def test_cold_chain_items_only_with_cold_chain_partners() -> None:
    partners = [partner("plain", priority=1), partner("cold", cold_chain=True, priority=50)]
    assert rules.route(partners, "110105", True, TODAY).partner_id == "cold"
    assert rules.route(partners, "110105", False, TODAY).partner_id == "plain"
    only_plain = rules.route([partner("plain")], "110105", True, TODAY)
    assert only_plain.partner_id is None and only_plain.refused == {"plain": ["no_cold_chain"]}


def test_longest_region_prefix_then_priority_then_name() -> None:
    province = partner("province", regions=("11",), priority=1)
    city = partner("city", regions=("1101",), priority=99)
    assert rules.route([province, city], "110105", False, TODAY).partner_id == "city"
    assert rules.route([province, city], "110228", False, TODAY).partner_id == "province"
    tie = [partner("zeta", priority=5), partner("alpha", priority=5), partner("beta", priority=7)]
    assert rules.route(tie, "110105", False, TODAY).partner_id == "alpha"


def test_excluded_partners_are_passed_over() -> None:
    d = rules.route([partner("a"), partner("b", priority=20)], "110105", False, TODAY, exclude=["a"])
    assert d.partner_id == "b" and d.refused["a"] == ["already_tried"]


partners_st = st.lists(
    st.builds(
        PartnerFacts,
        id=st.uuids().map(str),
        name=st.text("abcxyz", min_size=1, max_size=4),
        license_no=st.sampled_from([None, "", "L1"]),
        license_valid_until=st.one_of(st.none(), st.dates(TODAY - timedelta(days=5), TODAY + timedelta(days=5))),
        regions=st.lists(st.sampled_from(["11", "1101", "110105", "31", "3101", "44"]), max_size=3).map(tuple),
        cold_chain=st.booleans(),
        priority=st.integers(0, 5),
        active=st.booleans(),
    ),
    max_size=6,
    unique_by=lambda p: p.id,
)


@given(partners_st, st.sampled_from(["110105", "110228", "310101", "440300"]), st.booleans())
def test_routing_never_picks_an_unqualified_partner(partners: list[PartnerFacts], region: str, cold: bool) -> None:
    d = rules.route(partners, region, cold, TODAY)
    qualified = [p for p in partners if not rules.partner_refusals(p, region, cold, TODAY)]
    if not qualified:
        assert d.partner_id is None
        return
    chosen = next(p for p in partners if p.id == d.partner_id)
    assert chosen.active and chosen.license_no and chosen.license_valid_until >= TODAY  # type: ignore[operator]
    assert rules.region_match(chosen.regions, region) > 0
    assert chosen.cold_chain or not cold
    best = max(rules.region_match(p.regions, region) for p in qualified)
    assert rules.region_match(chosen.regions, region) == best
    assert chosen.priority == min(p.priority for p in qualified if rules.region_match(p.regions, region) == best)
    assert set(d.refused) == {p.id for p in partners} - {p.id for p in qualified}


# --- lifecycle ------------------------------------------------------------------------------


def test_the_happy_path() -> None:
    s = S.ROUTED
    for ev in (E.DISPATCHED, E.PICKED_UP, E.IN_TRANSIT, E.DELIVERED):
        s = rules.transition(s, ev)
    assert s == S.DELIVERED


@pytest.mark.parametrize(
    ("current", "event"),
    [
        (S.DISPATCHED, E.DELIVERED),  # never picked up
        (S.ROUTED, E.DELIVERED),
        (S.DELIVERED, E.IN_TRANSIT),
        (S.DELIVERED, E.FAILED),
        (S.FAILED, E.DELIVERED),
        (S.RETURNED, E.PICKED_UP),
        (S.COLLECT_AT_PHARMACY, E.PICKED_UP),
    ],
)
def test_illegal_jumps_are_refused_by_name(current: S, event: E) -> None:
    with pytest.raises(rules.IllegalDeliveryTransition) as exc:
        rules.transition(current, event)
    assert exc.value.code == "illegal_status_transition" and exc.value.status == 409


@given(st.sampled_from(list(S)), st.sampled_from(list(E)))
def test_transition_is_total_and_named(current: S, event: E) -> None:
    try:
        nxt = rules.transition(current, event)
    except rules.IllegalDeliveryTransition:
        assert (current, event) not in rules.TRANSITIONS
        return
    assert nxt == rules.TRANSITIONS[(current, event)]
    assert current != S.DELIVERED  # delivered is final


def test_failed_delivery_is_rerouted_or_returned() -> None:
    assert rules.transition(S.FAILED, E.REROUTED) == S.ROUTED
    assert rules.transition(S.FAILED, E.RETURNED) == S.RETURNED


# --- signatures -------------------------------------------------------------------------------

SECRET = "s3cret-partner-key"
NOW = 1_800_000_000


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert partner_security.signature(SECRET, NOW, body) == "sha256=" + expected
    headers = partner_security.signed_headers(SECRET, body, NOW)
    assert headers["X-Timestamp"] == "1800000000" and headers["X-Signature"] == "sha256=" + expected


def test_good_signature_within_five_minutes() -> None:
    body = b"{}"
    sig = partner_security.signature(SECRET, NOW, body)
    assert partner_security.signature_problem(SECRET, str(NOW), sig, body, NOW + 300) is None
    assert partner_security.signature_problem(SECRET, str(NOW), sig, body, NOW - 300) is None


@pytest.mark.parametrize(
    ("ts", "sig", "now", "problem"),
    [
        (None, "sha256=00", NOW, "missing"),
        (str(NOW), None, NOW, "missing"),
        ("12abc", "sha256=00", NOW, "malformed_timestamp"),
        (str(NOW), "sha256=00", NOW + 301, "stale"),
        (str(NOW), "sha256=00", NOW - 301, "stale"),
        (str(NOW), "sha256=" + "0" * 64, NOW, "mismatch"),
    ],
)
def test_bad_signatures(ts: str | None, sig: str | None, now: int, problem: str) -> None:
    assert partner_security.signature_problem(SECRET, ts, sig, b"{}", now) == problem


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=200))
def test_any_change_to_the_body_breaks_the_signature(body: bytes, extra: bytes) -> None:
    sig = partner_security.signature(SECRET, NOW, body)
    assert partner_security.signature_problem(SECRET, str(NOW), sig, body, NOW) is None
    assert partner_security.signature_problem(SECRET, str(NOW), sig, body + extra, NOW) == "mismatch"
    assert partner_security.signature_problem("other-" + SECRET, str(NOW), sig, body, NOW) == "mismatch"
    assert partner_security.signature_problem(SECRET, str(NOW + 1), sig, body, NOW) == "mismatch"


# --- job backoff -------------------------------------------------------------------------------


def test_backoff_doubles_then_caps() -> None:
    assert [backoff_seconds(n, 30, 3600) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff_seconds(0, 30, 3600) == 0
    assert backoff_seconds(500, 30, 3600) == 3600


def test_default_retries_outlast_a_partner_down_for_an_hour() -> None:
    # JOBS_MAX_ATTEMPTS=12: the delays before the 12th try add up to well over an hour.
    assert sum(backoff_seconds(n, 30, 3600) for n in range(1, 12)) > 4 * 3600


def test_a_review_is_decided_or_closed_once() -> None:
    RS, RE = rules.ReviewState, rules.ReviewEvent
    assert rules.review_transition(RS.PENDING, RE.DECIDE) == RS.DECIDED
    assert rules.review_transition(RS.PENDING, RE.CLOSE) == RS.CLOSED
    for state in (RS.DECIDED, RS.CLOSED):
        for event in RE:
            with pytest.raises(rules.IllegalReviewTransition):
                rules.review_transition(state, event)
    assert [s.value for s in RS] == ["pending", "decided", "closed"]  # the strings stored as ever
