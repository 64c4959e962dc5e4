"""Signed FHIR messages between institutions (clinic/telemedicine/envelope.py) and the
agreement rules (rules.py): pure, no database."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clinic.telemedicine import envelope, rules


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


A = envelope.institution_key(_pem())
B = envelope.institution_key(_pem())


def _message(**kw: Any) -> dict[str, Any]:
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"text": "张三"}]}
    return envelope.build_message("ping", "https://a.example", "甲医院", "https://b.example", [patient], **kw)


def test_institution_key_has_its_own_kid_and_public_part_only() -> None:
    assert A.kid.startswith("inst-") and A.kid != B.kid
    assert A.public_jwk["kid"] == A.kid and A.public_jwk["alg"] == "ES256" and A.public_jwk["crv"] == "P-256"
    assert "d" not in A.public_jwk
    assert envelope.institution_key(A.pem).kid == A.kid  # the same key, the same kid


def test_a_signed_message_verifies_with_the_senders_key_and_names_its_kid() -> None:
    bundle = _message()
    token = envelope.sign(A, bundle)
    header = envelope.unverified_header(token)
    assert header["kid"] == A.kid and header["alg"] == "ES256"
    content = envelope.verify(token, A.public_jwk)
    assert content == bundle
    parsed = envelope.parse_message(content)
    assert parsed.event_code == "ping" and parsed.source_endpoint == "https://a.example"
    assert parsed.id == bundle["entry"][0]["resource"]["id"]
    assert envelope.unverified_source(token) == "https://a.example"


def test_another_key_does_not_verify() -> None:
    token = envelope.sign(B, _message())
    with pytest.raises(envelope.BadSignature):
        envelope.verify(token, A.public_jwk)


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_changed_byte_anywhere_does_not_verify(part: int) -> None:
    token = envelope.sign(A, _message())
    pieces = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(pieces[part] + "=" * (-len(pieces[part]) % 4)))
    raw[len(raw) // 2] ^= 0x01
    pieces[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(envelope.BadSignature):
        envelope.verify(".".join(pieces), A.public_jwk)


def test_a_payload_changed_and_resigned_by_someone_else_does_not_verify() -> None:
    bundle = _message()
    bundle["entry"][1]["resource"]["name"][0]["text"] = "李四"
    with pytest.raises(envelope.BadSignature):
        envelope.verify(envelope.sign(B, bundle), A.public_jwk)


def test_not_a_jws_is_a_bad_signature() -> None:
    for token in ("", "abc", "a.b", "a.b.c.d", "!!!.???.***"):
        with pytest.raises(envelope.BadSignature):
            envelope.verify(token, A.public_jwk)


def test_hs256_or_none_algorithms_are_refused() -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": A.kid}).encode()).rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(b"{}").rstrip(b"=").decode()
    with pytest.raises(envelope.BadSignature):
        envelope.verify(f"{header}.{payload}.", A.public_jwk)


def test_the_bundle_must_be_a_fhir_message_with_a_message_header_first() -> None:
    good = _message()
    with pytest.raises(envelope.BadMessage):
        envelope.parse_message({**good, "type": "collection"})
    with pytest.raises(envelope.BadMessage):
        envelope.parse_message({**good, "entry": list(reversed(good["entry"]))})
    with pytest.raises(envelope.BadMessage):
        envelope.parse_message({"resourceType": "Patient"})
    with pytest.raises(envelope.BadMessage):  # not valid FHIR: an unknown element
        envelope.parse_message({**good, "colour": "red"})


def _terms(**kw: Any) -> rules.AgreementTerms:
    base: dict[str, Any] = {
        "name": "乙医院",
        "license_no": "PDY00001",
        "level": "三级",
        "base_url": "https://b.example",
        "public_jwk": dict(B.public_jwk),
        "services": ("consultation", "referral"),
        "departments": ("cardiology",),
        "fee_fen": 20000,
        "split_inviting": 20,
        "split_invited": 80,
        "valid_from": date(2026, 1, 1),
        "valid_until": date(2026, 12, 31),
    }
    base.update(kw)
    return rules.AgreementTerms(**base)


def test_agreement_terms_rules_name_their_field() -> None:
    assert rules.check_terms(_terms(), development=False) == []

    def locs(t: rules.AgreementTerms, dev: bool = False) -> list[str]:
        return [v.detail["loc"] for v in rules.check_terms(t, dev)]

    assert locs(_terms(split_inviting=30)) == ["fee_split"]
    assert locs(_terms(base_url="http://b.example")) == ["base_url"]
    assert locs(_terms(base_url="http://127.0.0.1:5001"), dev=True) == []
    assert locs(_terms(base_url="ftp://b.example"), dev=True) == ["base_url"]
    assert locs(_terms(level="四级")) == ["level"]
    assert locs(_terms(services=())) == ["services"]
    assert locs(_terms(services=("surgery",))) == ["services"]
    assert locs(_terms(fee_fen=-1)) == ["fee_fen"]
    assert locs(_terms(valid_until=date(2025, 12, 31))) == ["valid_until"]
    assert locs(_terms(public_jwk={**B.public_jwk, "d": "secret"})) == ["public_jwk"]
    assert locs(_terms(public_jwk={**B.public_jwk, "crv": "P-384"})) == ["public_jwk"]


def test_in_force_includes_both_end_days() -> None:
    assert rules.in_force(date(2026, 1, 1), date(2026, 12, 31), date(2026, 1, 1))
    assert rules.in_force(date(2026, 1, 1), date(2026, 12, 31), date(2026, 12, 31))
    assert not rules.in_force(date(2026, 1, 1), date(2026, 12, 31), date(2027, 1, 1))
    assert not rules.in_force(date(2026, 1, 1), date(2026, 12, 31), date(2025, 12, 31))


def test_split_and_shares() -> None:
    assert rules.parse_split("20:80") == (20, 80)
    for bad in ("20/80", "30:80", "-10:110", "a:b"):
        with pytest.raises(ValueError):
            rules.parse_split(bad)
    assert rules.shares(20001, 20) == (4000, 16001)
