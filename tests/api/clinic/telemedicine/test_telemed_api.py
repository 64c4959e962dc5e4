"""Between institutions (API.md): the institution key in the JWKS, cooperation agreements,
and the signed federation inbox's answers and refusals."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from jose import jws as jose_jws
from sqlalchemy import func, select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.core.jobs import OutboxJob
from clinic.telemedicine import envelope, federation, partners
from clinic.telemedicine.models import FederationMessage, PartnerInstitution
from identity.models import Role
from prescriptions import signing
from tests.support import factories as f
from tests.support.answers import refusal

API = "/api/v1"
PARTNER_URL = "https://partner.example"


def _key() -> envelope.InstitutionKey:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return envelope.institution_key(pem.decode())


def count(model: Any) -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def audits(action: str) -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).where(AuditEntry.action == action)) or 0)


def admin_headers(client: FlaskClient) -> dict[str, str]:
    return f.auth(f.token(client, f.staff(Role.ADMIN).username))


def agreement(key: envelope.InstitutionKey, **kw: Any) -> dict[str, Any]:
    today = partners.today()
    body: dict[str, Any] = {
        "name": "乙市第一人民医院",
        "license_no": "PDY12345678",
        "level": "三级",
        "base_url": PARTNER_URL,
        "public_jwk": dict(key.public_jwk),
        "services": ["consultation", "referral"],
        "departments": ["cardiology"],
        "fee_fen": 20000,
        "fee_split": {"inviting": 20, "invited": 80},
        "valid_from": (today - timedelta(days=1)).isoformat(),
        "valid_until": (today + timedelta(days=364)).isoformat(),
    }
    body.update(kw)
    return body


def register(client: FlaskClient, key: envelope.InstitutionKey, **kw: Any) -> str:
    resp = client.post(f"{API}/admin/partner-institutions", json=agreement(key, **kw), headers=admin_headers(client))
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def signed(key: envelope.InstitutionKey, event: str = "ping", source: str = PARTNER_URL, **kw: Any) -> str:
    bundle = envelope.build_message(event, source, "乙市第一人民医院", "http://127.0.0.1:5000", **kw)
    return envelope.sign(key, bundle)


def post(client: FlaskClient, token: str, content_type: str = "application/jose") -> Any:
    return client.post(f"{API}/federation/messages", data=token, headers={"Content-Type": content_type})


# --- the institution's key ------------------------------------------------------------


def test_jwks_publishes_the_institution_key_which_no_prescription_verifier_accepts(
    client: FlaskClient, app: Flask
) -> None:
    own = partners.own_key()
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    inst = [k for k in keys if k["kid"] == own.kid]
    assert inst == [own.public_jwk] and own.kid.startswith("inst-") and "d" not in inst[0]
    assert client.get(f"{API}/.well-known/jwks.json").get_json()["keys"] == keys
    # a JWS made with the institution key is not a prescription signature
    token = envelope.sign(own, {"physician": {"id": "x"}, "signed_at": "2026-01-01T00:00:00+00:00"})
    with pytest.raises(signing.InvalidSignature):
        signing.verify(token)


def test_the_institution_key_comes_from_configuration(client: FlaskClient, app: Flask) -> None:
    key, before = _key(), app.config["INSTITUTION_SIGNING_KEY"]
    app.config["INSTITUTION_SIGNING_KEY"] = key.pem
    try:
        kids = {k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
        assert partners.own_key().kid == key.kid and key.kid in kids
    finally:
        app.config["INSTITUTION_SIGNING_KEY"] = before


# --- agreements ---------------------------------------------------------------------------


def test_admin_registers_and_lists_an_agreement_audited(client: FlaskClient) -> None:
    key = _key()
    pid = register(client, key)
    items = client.get(f"{API}/admin/partner-institutions", headers=admin_headers(client)).get_json()["items"]
    (p,) = items
    assert p["id"] == pid and p["kid"] == key.kid and p["public_jwk"] == key.public_jwk
    assert p["fee_split"] == {"inviting": 20, "invited": 80} and p["fee_fen"] == 20000
    assert p["level"] == "三级" and p["services"] == ["consultation", "referral"] and p["in_force"] is True
    assert audits("partner.registered") == 1


def test_agreements_are_for_administrators_only(client: FlaskClient) -> None:
    doc = f.staff(Role.PHYSICIAN)
    headers = f.auth(f.token(client, doc.username))
    assert refusal(client.get(f"{API}/admin/partner-institutions", headers=headers)) == (403, "forbidden")
    assert refusal(client.post(f"{API}/admin/partner-institutions", json=agreement(_key()))) == (401, "unauthenticated")
    assert count(PartnerInstitution) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fee_split": {"inviting": 30, "invited": 80}}, "fee_split"),
        ({"level": "四级"}, "level"),
        ({"services": ["surgery"]}, "services"),
        ({"fee_fen": -5}, "fee_fen"),
        ({"valid_until": "2020-01-01"}, "valid_until"),
        ({"base_url": "ftp://partner.example"}, "base_url"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_agreements_are_refused_naming_the_field(client: FlaskClient, change: dict[str, Any], field: str) -> None:
    headers = admin_headers(client)
    resp = client.post(f"{API}/admin/partner-institutions", json=agreement(_key(), **change), headers=headers)
    assert resp.status_code == 422, resp.get_json()
    err = resp.get_json()["error"]
    locs = [x.get("loc", "") for x in err.get("fields", [])] + [v.get("loc", "") for v in err.get("violations", [])]
    assert any(loc.split(".")[0] == field for loc in locs), err
    assert count(PartnerInstitution) == 0


def test_a_private_key_is_never_pinned(client: FlaskClient) -> None:
    key = _key()
    jwk = {**key.public_jwk, "d": "c2VjcmV0"}
    resp = client.post(
        f"{API}/admin/partner-institutions", json=agreement(key, public_jwk=jwk), headers=admin_headers(client)
    )
    assert refusal(resp) == (422, "invalid") and count(PartnerInstitution) == 0


def test_http_base_url_is_refused_outside_development(client: FlaskClient, app: Flask) -> None:
    app.config["ENV"] = "production"
    try:
        resp = client.post(
            f"{API}/admin/partner-institutions",
            json=agreement(_key(), base_url="http://partner.example"),
            headers=admin_headers(client),
        )
    finally:
        app.config["ENV"] = "development"
    assert resp.status_code == 422 and "base_url" in str(resp.get_json()["error"])


def test_key_rotation_is_an_explicit_audited_act(client: FlaskClient) -> None:
    old, new = _key(), _key()
    pid = register(client, old)
    headers = admin_headers(client)
    assert refusal(post(client, signed(new))) == (401, "bad_signature")  # not pinned yet
    resp = client.post(
        f"{API}/admin/partner-institutions/{pid}/key", json={"public_jwk": new.public_jwk}, headers=headers
    )
    assert resp.status_code == 200 and resp.get_json()["kid"] == new.kid
    assert audits("partner.key_rotated") == 1
    assert post(client, signed(new)).status_code == 202
    assert refusal(post(client, signed(old))) == (401, "bad_signature")  # the old key no longer verifies


# --- the inbox ---------------------------------------------------------------------------


def test_a_signed_message_is_accepted_once(client: FlaskClient) -> None:
    key = _key()
    register(client, key)
    token = signed(key)
    first = post(client, token)
    assert first.status_code == 202 and first.get_json()["duplicate"] is False
    assert count(FederationMessage) == 1 and audits("federation.message_received") == 1
    again = post(client, token)
    assert again.status_code == 202 and again.get_json() == {**first.get_json(), "duplicate": True}
    assert count(FederationMessage) == 1 and audits("federation.message_received") == 1
    db.session.remove()
    stored = db.session.scalars(select(FederationMessage)).one()
    assert stored.jws == token and stored.direction == "in" and stored.event_code == "ping"


def test_a_message_found_by_its_source_endpoint_when_the_kid_is_unknown(client: FlaskClient) -> None:
    key = _key()
    register(client, key)
    bundle = envelope.build_message("ping", PARTNER_URL + "/", "乙", "http://127.0.0.1:5000")
    token = str(jose_jws.sign(envelope.canonical(bundle), key.pem, headers={"kid": "other"}, algorithm="ES256"))
    assert post(client, token).status_code == 202


def _flip(token: str, part: int) -> str:
    pieces = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(pieces[part] + "=" * (-len(pieces[part]) % 4)))
    raw[-5] ^= 0x01
    pieces[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(pieces)


@pytest.mark.parametrize("how", ["signature_byte", "payload_byte", "other_key", "not_jws"])
def test_bad_signatures_are_401_and_nothing_is_stored(client: FlaskClient, how: str) -> None:
    key = _key()
    register(client, key)
    token = {
        "signature_byte": lambda: _flip(signed(key), 2),
        "payload_byte": lambda: _flip(signed(key), 1),
        "other_key": lambda: signed(_key()),  # source endpoint is the partner's, the key is not
        "not_jws": lambda: "hello",
    }[how]()
    resp = post(client, token)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "bad_signature", resp.get_json()
    assert count(FederationMessage) == 0 and audits("federation.message_received") == 0


def test_a_partner_we_do_not_know_is_401(client: FlaskClient) -> None:
    resp = post(client, signed(_key(), source="https://stranger.example"))
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "bad_signature"
    assert count(FederationMessage) == 0


@pytest.mark.parametrize(("start", "end"), [(-30, -1), (1, 30)], ids=["expired", "not_yet_valid"])
def test_no_agreement_in_force_is_403(client: FlaskClient, start: int, end: int) -> None:
    key = _key()
    today = partners.today()
    register(
        client,
        key,
        valid_from=(today + timedelta(days=start)).isoformat(),
        valid_until=(today + timedelta(days=end)).isoformat(),
    )
    resp = post(client, signed(key))
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "no_agreement"
    assert count(FederationMessage) == 0


def test_wrong_content_type_and_bad_bundles_are_refused(client: FlaskClient) -> None:
    key = _key()
    register(client, key)
    assert refusal(post(client, signed(key), content_type="application/json")) == (415, "unsupported_media_type")
    not_a_message = envelope.sign(key, {"resourceType": "Bundle", "type": "collection", "entry": []})
    resp = post(client, not_a_message)  # signed with the pinned key, but not a FHIR message
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_message"
    assert count(FederationMessage) == 0


def test_an_event_nobody_handles_is_refused(client: FlaskClient) -> None:
    key = _key()
    register(client, key)
    resp = post(client, signed(key, event="unheard-of"))
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "unknown_event"
    assert count(FederationMessage) == 0


def test_handlers_are_registered_by_event(client: FlaskClient) -> None:
    key = _key()
    register(client, key)
    seen: list[tuple[str, str]] = []
    federation.register_event("test-event", lambda m, bundle, p: seen.append((m.message_id, p.name)))
    token = signed(key, event="test-event")
    assert post(client, token).status_code == 202
    assert post(client, token).status_code == 202
    assert len(seen) == 1 and seen[0][1] == "乙市第一人民医院"


# --- the sender -------------------------------------------------------------------------


def test_send_signs_records_and_enqueues_only_with_an_agreement(client: FlaskClient, app: Flask) -> None:
    from clinic.core.audit import Actor, acting_as
    from clinic.core.db import unit_of_work

    key = _key()
    pid = register(client, key, base_url="http://127.0.0.1:9")  # nobody listens: delivery fails, retried
    with acting_as(Actor(None, "test")), unit_of_work():
        message = federation.send(uuid.UUID(pid), federation.PING_EVENT)
        token = message.jws
    content = envelope.verify(token, partners.own_key().public_jwk)
    header = envelope.parse_message(content)
    assert header.event_code == "ping" and header.destination_endpoints == ("http://127.0.0.1:9",)
    db.session.remove()
    (job,) = db.session.scalars(select(OutboxJob).where(OutboxJob.kind == federation.DELIVER_JOB)).all()
    assert job.payload == {"message": str(message.id)}
    expired = register(
        client,
        _key(),
        valid_from="2020-01-01",
        valid_until="2020-12-31",
    )
    with pytest.raises(partners.NoAgreement), acting_as(Actor(None, "test")), unit_of_work():
        federation.send(uuid.UUID(expired), federation.PING_EVENT)
