"""Encryption at rest for sensitive fields, and keyed hashes for lookups.

Keys come from configuration (FIELD_KEYS: Fernet keys, newest first — rotation is
adding a new key in front and re-encrypting; LOOKUP_KEY: the HMAC key of lookup
hashes). Only the code paths that need clear text read these attributes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import LargeBinary
from sqlalchemy.types import TypeDecorator


class _Keys:
    fernet: MultiFernet | None = None
    lookup_key: bytes = b""


_keys = _Keys()


def configure(field_keys: str, lookup_key: str) -> None:
    keys = [Fernet(k.strip().encode()) for k in field_keys.split(",") if k.strip()]
    if not keys:
        raise RuntimeError("no field encryption key configured")
    _keys.fernet = MultiFernet(keys)
    _keys.lookup_key = lookup_key.encode()


def _fernet() -> MultiFernet:
    if _keys.fernet is None:
        raise RuntimeError("field encryption is not configured")
    return _keys.fernet


def encrypt(data: bytes) -> bytes:
    return _fernet().encrypt(data)


def decrypt(token: bytes) -> bytes:
    try:
        return _fernet().decrypt(token)
    except InvalidToken as exc:
        raise RuntimeError("encrypted field cannot be read with the configured keys") from exc


def rotate(token: bytes) -> bytes:
    """Re-encrypt with the newest key (used by the key-rotation command)."""
    return _fernet().rotate(token)


def lookup_hash(value: str) -> str:
    """A keyed hash for equality lookups (e.g. 'is this ID number registered?')."""
    return hmac.new(_keys.lookup_key, value.encode(), hashlib.sha256).hexdigest()


class EncryptedText(TypeDecorator[str]):
    """A text column stored encrypted (Fernet) and read back as text."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else encrypt(value.encode())

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else decrypt(bytes(value)).decode()


class EncryptedBytes(TypeDecorator[bytes]):
    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: bytes | None, dialect: Any) -> bytes | None:
        return None if value is None else encrypt(value)

    def process_result_value(self, value: bytes | None, dialect: Any) -> bytes | None:
        return None if value is None else decrypt(bytes(value))
