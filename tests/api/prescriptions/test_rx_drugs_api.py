"""GET /api/v1/drugs and the JWKS (API.md § Prescriptions)."""

from __future__ import annotations

from flask.testing import FlaskClient

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work
from identity.models import Role
from prescriptions import catalog, signing
from tests.support.answers import refusal
from tests.support.factories import auth, patient, staff, token


def _seed() -> None:
    with acting_as(Actor(None, "test")), unit_of_work():
        catalog.seed_catalog()


def test_staff_search_the_catalog(client: FlaskClient) -> None:
    _seed()
    for role in (Role.PHYSICIAN, Role.PHARMACIST, Role.ADMIN):
        account = staff(role)
        resp = client.get(
            "/api/v1/drugs", query_string={"q": "amlodipine"}, headers=auth(token(client, account.username))
        )
        assert resp.status_code == 200, resp.get_json()
        items = resp.get_json()["items"]
        assert items[0]["name"] == "苯磺酸氨氯地平片"
        assert set(items[0]) == {
            "id",
            "name",
            "generic_name",
            "generic_name_en",
            "form",
            "strength",
            "route",
            "control_class",
            "cold_chain",
        }
    doc = staff(Role.PHYSICIAN)
    resp = client.get("/api/v1/drugs", query_string={"q": "羟考酮"}, headers=auth(token(client, doc.username)))
    assert {i["control_class"] for i in resp.get_json()["items"]} >= {"narcotic"}


def test_search_refusals(client: FlaskClient) -> None:
    doc = staff(Role.PHYSICIAN)
    h = auth(token(client, doc.username))
    assert refusal(client.get("/api/v1/drugs")) == (401, "unauthenticated")
    for q in ("", "x" * 51):
        resp = client.get("/api/v1/drugs", query_string={"q": q}, headers=h)
        assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid"
    resp = client.get("/api/v1/drugs", query_string={"q": "a"}, headers=h)
    assert resp.status_code == 200
    reg = patient()
    resp = client.get("/api/v1/drugs", query_string={"q": "a"}, headers=auth(token(client, reg.account.username)))
    assert resp.status_code == 403


def test_jwks_is_public_at_both_paths(client: FlaskClient) -> None:
    doc = staff(Role.PHYSICIAN)
    with acting_as(Actor(None, "test")), unit_of_work():
        key = signing.ensure_key(doc.id)
    for path in ("/api/v1/.well-known/jwks.json", "/.well-known/jwks.json"):
        resp = client.get(path)
        assert resp.status_code == 200
        keys = resp.get_json()["keys"]
        # the prescription keys, then the institution's key (API.md: its own kid, for partners)
        assert [k["kid"] for k in keys][:-1] == [key.kid] and keys[-1]["kid"].startswith("inst-")
        assert all(k["kty"] == "EC" and k["crv"] == "P-256" and "d" not in k for k in keys)
