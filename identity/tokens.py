"""Bearer tokens for /api/v1 (python-jose, HS256 only, short expiry, role in the claims)."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from flask import current_app
from jose import JWTError, jwt
from sqlalchemy import bindparam, select

from clinic.core.api import Principal
from clinic.core.db import db, utcnow
from clinic.core.errors import Unauthenticated
from identity.models import Account

ALLOWED_ALGORITHMS = ["HS256"]

_accounts = Account.__table__
_ACCOUNT_STATE = select(_accounts.c.role, _accounts.c.active).where(_accounts.c.id == bindparam("account_id"))


def issue(
    account: Account, *, face_verified_at: datetime | None = None, extra: dict[str, Any] | None = None
) -> tuple[str, int]:
    cfg = current_app.config
    now = int(utcnow().timestamp())
    ttl = int(cfg["JWT_EXPIRES_SECONDS"])
    claims: dict[str, Any] = {
        "sub": str(account.id),
        "role": account.role.value,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(12),
        "typ": "access",
    }
    if face_verified_at is not None:
        claims["face_at"] = int(face_verified_at.timestamp())
    if extra:
        claims.update(extra)
    token = jwt.encode(claims, cfg["JWT_SECRET"], algorithm=cfg["JWT_ALGORITHM"])
    return token, ttl


def decode(token: str) -> dict[str, Any]:
    cfg = current_app.config
    try:
        claims: dict[str, Any] = jwt.decode(
            token, cfg["JWT_SECRET"], algorithms=ALLOWED_ALGORITHMS, options={"require_exp": True, "require_sub": True}
        )
    except JWTError:
        raise Unauthenticated("The token is invalid or has expired.") from None
    if claims.get("typ") != "access":
        raise Unauthenticated("The token is not an access token.")
    return claims


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
    return Principal(id=str(account_id), role=row.role.value, claims=claims)
