"""Issue 21 item 9: the dispatcher never posts signed orders to the clinic's own network.

Outside development a partner endpoint is https with a public host name whose addresses
are all public, checked at registration and again at every send; no userinfo; redirects
are not followed (a 3xx is a failed send, tested in test_pharmacy_dispatch)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from clinic.core import jobs
from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work
from clinic.core.jobs import JobStatus
from identity.models import Role
from pharmacy import partner_security, partners
from pharmacy.rules import DeliveryStatus
from tests.integration.pharmacy.test_pharmacy_dispatch import SECRET, deliver, delivery, dispatch_jobs
from tests.support import factories as f
from tests.support.partner_standin import PartnerStandin

PUBLIC = {"partner.example": ["93.184.216.34"], "rebind.example": ["93.184.216.35"]}


def fake_resolve(host: str, port: int) -> list[str]:
    return PUBLIC.get(host, [])


HOSTILE = [
    "https://127.1:8443/orders",
    "https://2130706433:8443/orders",
    "https://0x7f.1/orders",
    "https://0.0.0.0:8443/orders",
    "https://localhost:8443/orders",
    "https://[::1]/orders",
    "https://metadata.internal/orders",
    "https://user:secret@partner.example/orders",
    "https://partner.example@127.0.0.1/orders",
    "http://partner.example/orders",  # not https
    "ftp://partner.example/orders",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_endpoints_are_refused(url: str) -> None:
    with pytest.raises(partner_security.UnsafeEndpoint):
        partner_security.check_endpoint(url, private_allowed=False, resolve=fake_resolve)


@pytest.mark.parametrize(
    "addresses", [["10.0.0.7"], ["169.254.169.254"], ["93.184.216.34", "127.0.0.1"], ["::1"], ["::ffff:127.0.0.1"]]
)
def test_a_public_name_resolving_inward_is_refused(addresses: list[str]) -> None:
    with pytest.raises(partner_security.UnsafeEndpoint) as exc:
        partner_security.check_endpoint(
            "https://evil.example/orders", private_allowed=False, resolve=lambda h, p: addresses
        )
    assert exc.value.code == "unsafe_endpoint"


def test_public_https_passes_and_development_allows_local_stand_ins() -> None:
    assert partner_security.check_endpoint(
        "https://partner.example/orders", private_allowed=False, resolve=fake_resolve
    ) == ["93.184.216.34"]
    assert (
        partner_security.check_endpoint("http://127.0.0.1:9/orders", private_allowed=True, resolve=fake_resolve) == []
    )
    with pytest.raises(partner_security.UnsafeEndpoint):  # userinfo is refused even in development
        partner_security.check_endpoint("http://u:p@127.0.0.1:9/orders", private_allowed=True, resolve=fake_resolve)


@pytest.fixture
def strict(ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setitem(ctx.config, "PARTNER_PRIVATE_ENDPOINTS", False)
    monkeypatch.setattr(partners, "_resolve", fake_resolve)
    yield ctx


def test_registration_refuses_them_over_the_api(strict: Flask, client: FlaskClient) -> None:
    f.staff(Role.ADMIN, username="admin9")
    h = f.auth(f.token(client, "admin9"))
    body = {
        "name": "顺达",
        "license_no": "YPJY-2024-0009",
        "license_valid_until": "2030-01-01",
        "regions": ["11"],
        "cold_chain": False,
        "priority": 5,
    }
    for n, url in enumerate(HOSTILE):
        if not url.startswith("http"):
            continue  # refused by the field's own pattern
        resp = client.post("/api/v1/admin/partners", json={**body, "name": f"p{n}", "endpoint": url}, headers=h)
        assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "unsafe_endpoint", url
    ok = client.post("/api/v1/admin/partners", json={**body, "endpoint": "https://partner.example/orders"}, headers=h)
    assert ok.status_code == 201, ok.get_json()
    moved = client.post(f"/api/v1/admin/partners/{ok.get_json()['id']}", json={"endpoint": "https://127.1/"}, headers=h)
    assert moved.status_code == 422 and moved.get_json()["error"]["code"] == "unsafe_endpoint"


def test_send_time_check_catches_a_name_that_now_points_inward(strict: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    server = PartnerStandin(SECRET).start()
    try:
        with acting_as(Actor(None, "test")), unit_of_work():
            partners.create_partner(
                partners.PartnerSpec(
                    "改址", "LIC-R", date.today() + timedelta(days=30), ["11"], False, 10, "https://rebind.example/o",
                    secret=SECRET,
                )
            )  # fmt: skip
        # the name now resolves to the loopback (DNS rebinding)
        monkeypatch.setitem(PUBLIC, "rebind.example", ["127.0.0.1"])
        rx = deliver()
        jobs.drain()
        (job,) = dispatch_jobs()
        assert job.status == JobStatus.PENDING and "endpoint refused" in (job.last_error or "")
        assert delivery(rx).status == DeliveryStatus.ROUTED and server.calls == 0
    finally:
        server.stop()
