"""Bearer tokens for /api/v1 (python-jose, HS256 only, short expiry, role in the claims)."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

from jose import JWTError, jwt
from sqlalchemy import bindparam, select

from clinic.core.config import settings
from clinic.core.db import db, utcnow
from clinic.core.errors import Unauthenticated
from clinic.core.principal import Principal
from identity.models import Account

ALLOWED_ALGORITHMS = ["HS256"]

_accounts = Account.__table__
_ACCOUNT_STATE = select(_accounts.c.role, _accounts.c.active, _accounts.c.session_version).where(
    _accounts.c.id == bindparam("account_id")
)


def issue(
    account: Account, *, face_verified_at: datetime | None = None, extra: dict[str, Any] | None = None
) -> tuple[str, int]:
    cfg = settings()
    now = int(utcnow().timestamp())
    ttl = cfg.JWT_EXPIRES_SECONDS
    claims: dict[str, Any] = {
        "sub": str(account.id),
        "role": account.role.value,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(12),
        "typ": "access",
        "sv": account.session_version,
    }
    if face_verified_at is not None:
        claims["face_at"] = int(face_verified_at.timestamp())
    if extra:
        claims.update(extra)
    token = jwt.encode(claims, cfg.JWT_SECRET, algorithm=cfg.JWT_ALGORITHM)
    return token, ttl


@lru_cache(maxsize=2048)
def _verified_claims(token: str, secret: str) -> dict[str, Any]:
    """The claims of a token whose signature and form are right; its times are not checked here.

    Cached: an HMAC over the same bytes with the same key gives the same answer, and a
    client sends the same token with every call until it expires. Only tokens that pass
    are kept, keyed by the secret too. `decode` checks the times on every call.
    """
    claims: dict[str, Any] = jwt.decode(
        token,
        secret,
        algorithms=ALLOWED_ALGORITHMS,
        options={"verify_exp": False, "verify_nbf": False, "require_exp": True, "require_sub": True},
    )
    if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("nbf", 0), int):
        raise JWTError("exp and nbf must be integers")
    return claims


def decode(token: str) -> dict[str, Any]:
    try:
        claims = _verified_claims(token, settings().JWT_SECRET)
    except JWTError:
        raise Unauthenticated("The token is invalid or has expired.") from None
    now = int(utcnow().timestamp())
    if now > claims["exp"] or now < claims.get("nbf", 0):
        raise Unauthenticated("The token is invalid or has expired.")
    if claims.get("typ") != "access":
        raise Unauthenticated("The token is not an access token.")
    return dict(claims)  # the caller's own copy; the cached claims stay as signed


def load_principal(token: str) -> Principal:
    """The API's token loader: a valid token of an existing, active account."""
    claims = decode(token)
    try:
        account_id = uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise Unauthenticated("The token is invalid.") from None
    # Three columns, not the account object: this runs on every API call, and handlers
    # that need the whole account load it themselves.
    row = db.session.connection().execute(_ACCOUNT_STATE, {"account_id": account_id}).first()
    if row is None or not row.active or row.role.value != claims.get("role"):
        raise Unauthenticated("The token's account is unknown or disabled.")
    if claims.get("sv", 0) != row.session_version:
        raise Unauthenticated("The token was issued before the account's sessions were ended; log in again.")
    face_at = claims.get("face_at")
    scope = claims.get("scope")
    return Principal(
        account_id=account_id,
        role=row.role.value,
        face_at=float(face_at) if isinstance(face_at, int | float) else None,
        scope=scope if isinstance(scope, str) else None,
    )
