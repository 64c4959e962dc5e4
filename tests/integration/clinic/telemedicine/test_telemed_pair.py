"""Two clinics side by side: two real app processes on two loopback ports, two databases,
linked both ways with `flask partners link` (each pins the other's institution key from
its published JWKS); a signed message from A is accepted by B once, even when delivered
twice, and arrives once after B was down for a while (the outbox tries again)."""

from __future__ import annotations

import time

import requests

from tests.support.clinic_pair import Clinic, link


def test_two_clinics_exchange_a_signed_message_once(pair: tuple[Clinic, Clinic]) -> None:
    a, b = pair
    # each publishes its institution key; each pins the other's
    a_key = [
        k
        for k in requests.get(a.url + "/.well-known/jwks.json", timeout=5).json()["keys"]
        if k["kid"].startswith("inst-")
    ]
    b_key = [
        k
        for k in requests.get(b.url + "/.well-known/jwks.json", timeout=5).json()["keys"]
        if k["kid"].startswith("inst-")
    ]
    assert len(a_key) == 1 and len(b_key) == 1 and a_key[0]["kid"] != b_key[0]["kid"]
    b_at_a, a_at_b = link(a, b, "--level", "基层", "--fee-fen", "20000", "--split", "20:80")
    assert a.rows("SELECT kid, level, fee_fen, split_inviting, split_invited FROM tm_partners") == [
        (b_key[0]["kid"], "基层", 20000, 20, 80)
    ]
    assert b.rows("SELECT kid FROM tm_partners") == [(a_key[0]["kid"],)]
    assert len(a_at_b) == 36 and len(b_at_a) == 36

    # B is down: A signs and records the message; the outbox cannot deliver it yet
    b.stop()
    sent = a.flask("partners", "ping", b_at_a)
    time.sleep(1.2)
    a.flask("jobs", "run-due")  # another try while B is still down
    ((delivered, attempts),) = a.rows(
        f"SELECT delivered_at, attempts FROM tm_messages WHERE id = '{sent.replace('-', '')}'"
    )
    assert delivered is None and int(str(attempts)) >= 2
    assert a.rows("SELECT status FROM outbox_jobs WHERE kind = 'federation.deliver'") == [("pending",)]

    # B is back: the next sweep delivers it, once
    b.start()
    time.sleep(1.2)
    assert "done=1" in a.flask("jobs", "run-due")
    received = b.rows("SELECT message_id, event_code, direction FROM tm_messages")
    assert len(received) == 1 and received[0][1:] == ("ping", "in")
    assert len(a.rows("SELECT 1 FROM tm_messages WHERE delivered_at IS NOT NULL")) == 1

    # delivered twice: B answers 202 again and changes nothing
    a.flask("partners", "resend", sent)
    assert b.rows("SELECT message_id, event_code, direction FROM tm_messages") == received
    assert a.rows("SELECT status FROM outbox_jobs WHERE kind = 'federation.deliver' ORDER BY created_at") == [
        ("done",),
        ("done",),
    ]
    assert b.logged("federation.message_received") == 1
