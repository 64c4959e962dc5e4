"""The signed inbox in the OpenAPI document: `POST /api/v1/federation/messages` takes the
text of a compact JWS as `application/jose` (not JSON) and answers 202, or 401
bad_signature, 403 no_agreement, 415, 422 invalid_message / unknown_event, all documented.

schemathesis drives it from the document (strings shaped like a JWS, and anything else);
then messages that get further than the header: correctly signed by a registered
partner's pinned key but carrying hostile payloads, signed by a partner whose agreement
has lapsed, or with a header naming another algorithm. Every answer must be one the
document lists, never a 500, and nothing is stored from a refused message."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jose import jws as jose_jws
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select

from clinic.core.db import db
from clinic.telemedicine import envelope, partners
from clinic.telemedicine.models import FederationMessage
from identity.models import Role
from tests.support import factories as f

API = "/api/v1"
INBOX = "/federation/messages"
PARTNER_URL = "https://partner.example"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# The body is text on the wire, as text/plain is (schemathesis has no serializer of its own for it).
schemathesis.serializer.alias("application/jose", "text/plain")


def _key() -> envelope.InstitutionKey:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return envelope.institution_key(pem.decode())


def _register(client: FlaskClient, key: envelope.InstitutionKey, base_url: str, days: tuple[int, int]) -> None:
    today = partners.today()
    body = {
        "name": "乙市第一人民医院",
        "license_no": "PDY12345678",
        "level": "三级",
        "base_url": base_url,
        "public_jwk": dict(key.public_jwk),
        "services": ["consultation", "referral"],
        "departments": [],
        "fee_fen": 20000,
        "fee_split": {"inviting": 20, "invited": 80},
        "valid_from": (today + timedelta(days=days[0])).isoformat(),
        "valid_until": (today + timedelta(days=days[1])).isoformat(),
    }
    headers = f.auth(f.token(client, f.staff(Role.ADMIN).username))
    resp = client.post(f"{API}/admin/partner-institutions", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()


def _stored() -> int:
    db.session.remove()
    return int(db.session.scalar(select(func.count()).select_from(FederationMessage)) or 0)


def _operation(app: Flask) -> Any:
    schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", app)
    (op,) = [r.ok() for r in schema.get_all_operations() if r.ok().path == INBOX]
    return op


def test_the_inbox_is_documented_as_a_compact_jws_with_its_refusals(client: FlaskClient) -> None:
    doc = client.get(f"{API}/openapi.json").get_json()
    post = doc["paths"][INBOX]["post"]
    body = post["requestBody"]
    assert body["required"] is True and list(body["content"]) == ["application/jose"]
    schema = body["content"]["application/jose"]["schema"]
    assert schema["type"] == "string" and schema["maxLength"] == envelope.MAX_MESSAGE_BYTES
    assert "ES256" in schema["description"] and "MessageHeader" in schema["description"]
    responses = post["responses"]
    assert responses["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/FederationAccepted")
    for status, code in [("401", "bad_signature"), ("403", "no_agreement"), ("422", "invalid_message")]:
        assert code in responses[status]["description"], status
    assert "security" not in post  # no Bearer token: the signature is the authentication
    # a real compact JWS fits the documented shape
    assert re.fullmatch(schema["pattern"], envelope.sign(_key(), {"resourceType": "Bundle"}))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_the_inbox_from_its_document_meets_only_documented_refusals(
    app: Flask, client: FlaskClient, mode: GenerationMode
) -> None:
    _register(client, _key(), PARTNER_URL, (-1, 364))
    operation = _operation(app)
    statuses: set[int] = set()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        statuses.add(case.call_and_validate(checks=CHECKS).status_code)

    run()
    assert statuses <= {401, 415, 422}, statuses
    assert _stored() == 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# payloads that look more and more like a FHIR message Bundle, and aren't quite
_bundleish = st.fixed_dictionaries(
    {
        "resourceType": st.sampled_from(["Bundle", "MessageHeader", "bundle", ""]),
        "type": st.sampled_from(["message", "collection", 7]),
    },
    optional={
        "id": st.text(max_size=70) | st.integers(),
        "entry": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "fullUrl": st.text(max_size=30),
                    "resource": st.fixed_dictionaries(
                        {"resourceType": st.sampled_from(["MessageHeader", "Patient", "Task", 3])},
                        optional={
                            "id": st.text(max_size=80) | st.integers() | st.none(),
                            "eventCoding": _json
                            | st.fixed_dictionaries({"code": st.text(max_size=80) | st.integers()}),
                            "source": _json | st.fixed_dictionaries({"endpoint": st.text(max_size=40) | st.integers()}),
                        },
                    )
                    | _json,
                },
            ),
            max_size=3,
        )
        | _json,
    },
)
_payload = (
    _bundleish.map(lambda d: json.dumps(d).encode())
    | _json.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=200)
)


def test_messages_signed_by_a_partner_with_hostile_payloads_are_refused_as_documented(
    app: Flask, client: FlaskClient
) -> None:
    partner, lapsed = _key(), _key()
    _register(client, partner, PARTNER_URL, (-1, 364))
    _register(client, lapsed, "https://lapsed.example", (-30, -1))
    operation = _operation(app)
    answers: dict[int, set[str]] = {}

    @given(
        payload=_payload,
        signer=st.sampled_from(["partner", "lapsed", "stranger"]),
        alg=st.sampled_from(["ES256", "ES256", "ES256", "HS256", "none"]),
    )
    @settings(
        max_examples=120,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(payload: bytes, signer: str, alg: str) -> None:
        key = {"partner": partner, "lapsed": lapsed, "stranger": _key()}[signer]
        if alg == "ES256":
            token = str(jose_jws.sign(payload, key.pem, headers={"kid": key.kid, "typ": envelope.TYP}, algorithm=alg))
        elif alg == "HS256":
            token = str(jose_jws.sign(payload, "a shared secret", headers={"kid": key.kid}, algorithm=alg))
        else:  # an unsigned token naming the partner's key
            head = jose_jws.sign(payload, "x", headers={"kid": key.kid}, algorithm="HS256").split(".")[1]
            token = "eyJhbGciOiJub25lIn0." + head + "."
        case = operation.Case(body=token, media_type="application/jose")
        resp = case.call_and_validate(checks=CHECKS)
        answers.setdefault(resp.status_code, set()).add(resp.json()["error"]["code"] if resp.status_code >= 400 else "")

    run()
    assert set(answers) <= {202, 401, 403, 422}, answers
    assert answers.get(401) and "bad_signature" in answers[401]  # strangers, other algorithms, no signature
    assert answers.get(403) == {"no_agreement"}  # the lapsed partner's good signatures
    assert answers.get(422) and answers[422] <= {"invalid_message", "unknown_event"}
    # a fuzzer does not write a valid message: everything was refused, and left nothing behind
    assert 202 not in answers and _stored() == 0
