"""The institution's key and the signed FHIR messages between institutions (no database).

- The institution signs with one EC P-256 key (ES256) from configuration
  (INSTITUTION_SIGNING_KEY; a dev key is generated into the instance folder). Its `kid` is
  "inst-" and a digest of the public key, so it never collides with a prescription key
  ("rx-..."), and prescription verifiers, which look keys up in their own table, never
  accept it.
- A message is a FHIR R4 message Bundle (type "message", first entry a MessageHeader),
  serialised as canonical JSON and sent as the payload of a compact JWS (header
  {alg: ES256, kid, typ: "fhir+jws"}), with Content-Type application/jose.
- The receiver verifies the JWS against the public key it pinned for the sender, then
  validates the Bundle with the fhir.resources R4B models (R4 for these resources).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fhir.resources.R4B.bundle import Bundle
from jose import jws
from jose.exceptions import JOSEError
from pydantic import ValidationError

ALGORITHM = "ES256"
TYP = "fhir+jws"
EVENT_SYSTEM = "urn:clinic:federation-event"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class BadSignature(Exception):
    """The JWS cannot be read or does not verify with the key it was checked against."""


class BadMessage(Exception):
    """The signed payload is not a FHIR R4 message Bundle with a MessageHeader first."""


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


@dataclass(frozen=True)
class InstitutionKey:
    pem: str
    kid: str
    public_jwk: dict[str, str]


@lru_cache(maxsize=8)
def institution_key(pem: str) -> InstitutionKey:
    """The institution key of a PEM (EC P-256 private key): its kid and public JWK."""
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
        raise ValueError("INSTITUTION_SIGNING_KEY must be an EC P-256 private key (PEM)")
    public = private.public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = "inst-" + hashlib.sha256(spki).hexdigest()[:24]
    numbers = public.public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x),
        "y": _b64(numbers.y),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }
    return InstitutionKey(pem=pem, kid=kid, public_jwk=jwk)


def canonical(content: dict[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def sign(key: InstitutionKey, bundle: dict[str, Any]) -> str:
    return str(jws.sign(canonical(bundle), key.pem, headers={"kid": key.kid, "typ": TYP}, algorithm=ALGORITHM))


def unverified_header(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > MAX_MESSAGE_BYTES:
        raise BadSignature("The message is not a compact JWS.")
    try:
        header = jws.get_unverified_header(token)
    except JOSEError:
        raise BadSignature("The message's JWS header cannot be read.") from None
    if header.get("alg") != ALGORITHM:
        raise BadSignature("The message must be signed with ES256.")
    return dict(header)


def unverified_source(token: str) -> str | None:
    """MessageHeader.source.endpoint as the (not yet verified) payload claims it, to find the
    sender's pinned key when the JWS names no key we know."""
    try:
        payload = json.loads(jws.get_unverified_claims(token))
        endpoint = payload["entry"][0]["resource"]["source"]["endpoint"]
    except (JOSEError, ValueError, KeyError, IndexError, TypeError):
        return None
    return endpoint if isinstance(endpoint, str) else None


def verify(token: str, public_jwk: dict[str, Any]) -> dict[str, Any]:
    """The signed Bundle (as JSON), or BadSignature."""
    unverified_header(token)
    try:
        payload = jws.verify(token, public_jwk, algorithms=[ALGORITHM])
    except JOSEError:
        raise BadSignature("The message's signature does not verify with the sender's pinned key.") from None
    try:
        content = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise BadMessage("The signed payload is not JSON.") from None
    if not isinstance(content, dict):
        raise BadMessage("The signed payload is not a FHIR Bundle.")
    return content


@dataclass(frozen=True)
class Header:
    id: str
    event_code: str
    source_endpoint: str
    destination_endpoints: tuple[str, ...]


def parse_message(content: dict[str, Any]) -> Header:
    """Validate a FHIR R4 message Bundle (MessageHeader first); its header, or BadMessage."""
    if content.get("resourceType") != "Bundle":
        raise BadMessage("The signed payload is not a FHIR Bundle.")
    try:
        bundle = Bundle.model_validate(content)
    except ValidationError as exc:
        raise BadMessage(f"The Bundle is not valid FHIR R4: {str(exc)[:300]}") from None
    if bundle.type != "message":
        raise BadMessage("The Bundle's type must be 'message'.")
    entries = bundle.entry or []
    first = entries[0].resource if entries else None
    if first is None or first.get_resource_type() != "MessageHeader":
        raise BadMessage("The Bundle's first entry must be a MessageHeader.")
    header: Any = first
    coding = header.eventCoding
    if not header.id or coding is None or not coding.code:
        raise BadMessage("The MessageHeader needs an id and an eventCoding code.")
    if len(str(header.id)) > 64 or len(str(coding.code)) > 64:
        raise BadMessage("The MessageHeader's id and event code are at most 64 characters.")
    return Header(
        id=str(header.id),
        event_code=str(coding.code),
        source_endpoint=str(header.source.endpoint),
        destination_endpoints=tuple(str(d.endpoint) for d in (header.destination or [])),
    )


def build_message(
    event_code: str,
    source_endpoint: str,
    source_name: str,
    destination_endpoint: str,
    resources: list[dict[str, Any]] | None = None,
    *,
    message_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A FHIR R4 message Bundle: MessageHeader first (focus: the other resources), then them."""
    mid = message_id or str(uuid.uuid4())
    at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    others = list(resources or [])
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": mid,
        "eventCoding": {"system": EVENT_SYSTEM, "code": event_code},
        "source": {"endpoint": source_endpoint, "name": source_name},
        "destination": [{"endpoint": destination_endpoint}],
    }
    focus = [{"reference": f"{r['resourceType']}/{r['id']}"} for r in others if r.get("id")]
    if focus:
        header["focus"] = focus
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "message",
        "timestamp": at,
        "entry": [{"fullUrl": f"urn:uuid:{mid}", "resource": header}]
        + [{"fullUrl": f"urn:uuid:{r.get('id') or uuid.uuid4()}", "resource": r} for r in others],
    }
    parse_message(bundle)  # what we send is what a partner accepts
    return bundle
