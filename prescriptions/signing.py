"""Physicians' electronic signatures on prescriptions: EC P-256 keys, compact JWS (ES256).

- Each physician has one active key pair; the private key is stored encrypted
  (`EncryptedBytes`, Fernet keys from configuration) and decrypted only to sign.
- The signed payload is the prescription's canonical content: JSON with sorted keys,
  no insignificant whitespace, UTF-8. Verification recomputes nothing from the
  database: it checks the signature with the published key named by `kid` and, when
  the expected content is given, that the signed content is exactly it — any change
  after signing fails.
- Rotation retires the active key (it signs nothing more) and makes a new one; retired
  keys stay in the JWKS so that older prescriptions still verify.
- What is signed (`prescription_content`): built here at signing, stored beside the JWS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Response, current_app, has_app_context, jsonify
from jose import jws
from jose.exceptions import JOSEError
from sqlalchemy import select

from clinic.core import audit
from clinic.core.api import ApiRouter
from clinic.core.db import db, utcnow
from clinic.core.errors import Invalid
from clinic.visits.models import Visit
from identity.models import Account, Institution
from prescriptions import catalog
from prescriptions.models import Drug, SigningKey
from prescriptions.rules import Age

if TYPE_CHECKING:
    from prescriptions.services import PrescriptionSpec

ALGORITHM = "ES256"
router = ApiRouter("signing")


class InvalidSignature(Invalid):
    code = "invalid_signature"
    default_message = "The prescription's signature does not verify."


def canonical_json(content: dict[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def public_jwk(public: ec.EllipticCurvePublicKey, kid: str) -> dict[str, str]:
    numbers = public.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x),
        "y": _b64(numbers.y),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def new_key(account_id: uuid.UUID) -> SigningKey:
    """A fresh key pair for a physician (flushed; the caller commits)."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = "rx-" + hashlib.sha256(spki).hexdigest()[:24]
    key = SigningKey(kid=kid, account_id=account_id, public_jwk=public_jwk(private.public_key(), kid), private_key=pem)
    session = db.session()
    session.add(key)
    session.flush()
    audit.record(session, "signing_key.created", subject_type="account", subject_id=account_id, detail={"kid": kid})
    return key


def active_key(account_id: uuid.UUID) -> SigningKey | None:
    return db.session.scalar(
        select(SigningKey)
        .where(SigningKey.account_id == account_id, SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc())
    )


def ensure_key(account_id: uuid.UUID) -> SigningKey:
    return active_key(account_id) or new_key(account_id)


def rotate_key(account_id: uuid.UUID, now: datetime | None = None) -> SigningKey:
    """Retire the physician's active key (kept published) and make a new one."""
    old = active_key(account_id)
    if old is not None:
        old.retired_at = now or utcnow()
        audit.record(
            db.session(), "signing_key.retired", subject_type="account", subject_id=account_id, detail={"kid": old.kid}
        )
    return new_key(account_id)


def sign(account_id: uuid.UUID, content: dict[str, Any]) -> tuple[str, str]:
    """Sign the canonical content with the physician's active key: (compact JWS, kid)."""
    key = ensure_key(account_id)
    token = jws.sign(
        canonical_json(content).encode(),
        key.private_key.decode(),
        headers={"kid": key.kid, "typ": "rx+jws"},
        algorithm=ALGORITHM,
    )
    return str(token), key.kid


def verify(token: str, expected: dict[str, Any] | None = None) -> dict[str, Any]:
    """The signed content of a JWS, or InvalidSignature (bad format, unknown kid, bad
    signature, or content different from `expected`)."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 20000:
        raise InvalidSignature("The signature is not a compact JWS.")
    try:
        header = jws.get_unverified_header(token)
    except JOSEError:
        raise InvalidSignature("The signature's header cannot be read.") from None
    if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
        raise InvalidSignature("The signature must be ES256 with a key id.")
    key = db.session.get(SigningKey, header["kid"])
    if key is None:
        raise InvalidSignature("The signature's key is not one of ours.")
    try:
        payload = jws.verify(token, key.public_jwk, algorithms=[ALGORITHM])
        content = json.loads(payload)
    except (JOSEError, ValueError):
        raise InvalidSignature() from None
    if not isinstance(content, dict):
        raise InvalidSignature("The signed content is not a prescription.")
    check_signer(key, content)
    if expected is not None and canonical_json(content) != canonical_json(expected):
        raise InvalidSignature("The prescription was changed after it was signed.")
    return content


def detached(token: str) -> str:
    """The JWS with its payload left out (RFC 7515 Appendix F: `header..signature`): it
    verifies once the payload is put back, and carries no personal data itself."""
    header, _payload, signature = token.split(".")
    return f"{header}..{signature}"


def attach(detached_token: str, payload_b64: str) -> str:
    header, _empty, signature = detached_token.split(".")
    return f"{header}.{payload_b64}.{signature}"


KEY_CLOCK_SLACK = timedelta(seconds=60)  # a key made for the first signature is stored just after `iat`


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def signed_time(content: dict[str, Any]) -> datetime | None:
    """When the content says it was signed: `iat`, else its signed_at / reviewed_at."""
    iat = content.get("iat")
    if isinstance(iat, int) and not isinstance(iat, bool):
        return datetime.fromtimestamp(iat, UTC)
    raw = content.get("reviewed_at") if content.get("type") == "pharmacist_review" else content.get("signed_at")
    try:
        return _aware(datetime.fromisoformat(str(raw)))
    except ValueError:
        return None


def check_signer(key: SigningKey, content: dict[str, Any]) -> None:
    """The key must be one issued to the person the content names as its signer (the
    physician of a prescription, the pharmacist of an approval), valid when it was signed:
    made before and not retired by then. Otherwise InvalidSignature."""
    who = content.get("pharmacist") if content.get("type") == "pharmacist_review" else content.get("physician")
    signer = who.get("id") if isinstance(who, dict) else None
    if not signer or str(signer) != str(key.account_id):
        raise InvalidSignature("The signature's key was not issued to the person named as its signer.")
    at = signed_time(content)
    if at is None:
        raise InvalidSignature("The signed content does not say when it was signed.")
    if _aware(key.created_at) > at + KEY_CLOCK_SLACK or (key.retired_at is not None and _aware(key.retired_at) <= at):
        raise InvalidSignature("The signature's key was not valid when the content says it was signed.")


def jwks() -> dict[str, Any]:
    """The prescription keys, then any other published key the factory added (each with its
    own `kid`, e.g. the institution's key for partner institutions; `verify` above accepts
    only prescription keys, looked up in their own table)."""
    keys = [dict(k.public_jwk) for k in db.session.scalars(select(SigningKey).order_by(SigningKey.created_at))]
    if has_app_context():
        for extra in current_app.extensions.get("jwks_extra", []):
            keys.extend(extra())
    return {"keys": keys}


@router.get("/.well-known/jwks.json", summary="Public keys that verify prescription signatures (JWKS)")
def jwks_api() -> dict[str, Any]:
    return jwks()


well_known = Blueprint("rx_well_known", __name__)


@well_known.get("/.well-known/jwks.json")
def jwks_root() -> Response:
    resp = jsonify(jwks())
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


# --- what a physician signs -------------------------------------------------------------------


def issuer(inst: Institution | None) -> str:
    """The JWS `iss`: the institution, by its practice licence (医疗机构执业许可证) number."""
    return f"urn:clinic:institution:{inst.practice_license_no}" if inst is not None else "urn:clinic:institution"


def prescription_content(
    *,
    rx_id: uuid.UUID,
    visit: Visit,
    physician: Account,
    spec: PrescriptionSpec,
    drugs: Mapping[uuid.UUID, Drug],
    guardian: dict[str, Any] | None,
    accompanying: dict[str, str] | None,
    age: Age,
    now: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    """The content a prescription's JWS signs, frozen at signing (`Prescription.content`):
    registered JWT claims, the institution, patient, diagnosis, items, physician, and the
    guardian and accompanying physician of a young child."""
    inst = db.session.get(Institution, 1)
    return {
        # registered JWT claims (RFC 7519): who issued it, when, and until when it may be dispensed
        "iss": issuer(inst),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "institution": inst.name if inst is not None else "",
        "prescription_id": str(rx_id),
        "visit_id": str(visit.id),
        "patient": {
            "id": str(visit.patient.id),
            "name": visit.patient.name,
            "sex": visit.patient.sex,
            "birth_date": visit.patient.birth_date.isoformat(),
            "age": age.zh(),
        },
        "diagnosis": {"icd10": visit.diagnosis.icd10, "icd10_national": visit.diagnosis.icd10_national},
        "weight_kg": str(spec.weight_kg) if spec.weight_kg is not None else None,
        "long_term": spec.long_term,
        "items": [
            {
                "drug_id": str(i.drug_id),
                "name": drugs[i.drug_id].name,
                "strength": drugs[i.drug_id].strength,
                "form": drugs[i.drug_id].form,
                "dose": str(i.dose),
                "unit": i.unit,
                "frequency": i.frequency,
                "route": i.route,
                "days": i.days,
                "quantity": str(i.quantity),
                "quantity_unit": catalog.quantity_unit(drugs[i.drug_id], i.quantity_unit),
            }
            for i in spec.items
        ],
        "physician": {
            "id": str(physician.id),
            "name": physician.staff.name if physician.staff else physician.display_name,
            "license_no": physician.staff.license_no if physician.staff else None,
        },
        "guardian": guardian,
        "accompanying_physician": accompanying,
        "signed_at": now.isoformat(),
    }
