"""Phone one-time codes behind one small interface, chosen by configuration.

- `LogVerifier` (development default): the code is generated here, kept hashed with
  a 10-minute expiry and 5 attempts, and written to the application log.
- `TwilioVerifier`: Twilio Verify with the real SDK (tests point it at a local stand-in).
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Protocol

from flask import Flask, current_app
from sqlalchemy import select
from twilio.base.exceptions import TwilioException

from clinic.core.crypto import lookup_hash
from clinic.core.db import db, utcnow
from clinic.core.errors import ServiceUnavailable
from clinic.core.twilio import make_client
from identity.models import PhoneCode

log = logging.getLogger("clinic.sms")


class PhoneVerifier(Protocol):
    def start(self, phone: str) -> None: ...

    def check(self, phone: str, code: str) -> bool: ...


class LogVerifier:
    def __init__(self, ttl_seconds: int, max_attempts: int) -> None:
        self.ttl = timedelta(seconds=ttl_seconds)
        self.max_attempts = max_attempts

    def start(self, phone: str) -> None:
        session = db.session()
        code = f"{secrets.randbelow(1_000_000):06d}"
        key = lookup_hash(phone)
        for old in session.scalars(select(PhoneCode).where(PhoneCode.phone_hash == key, PhoneCode.used_at.is_(None))):
            old.used_at = utcnow()
        session.add(PhoneCode(phone_hash=key, code_hash=lookup_hash(f"{phone}:{code}"), expires_at=utcnow() + self.ttl))
        session.flush()
        log.warning("SMS to %s: verification code %s (valid %d min)", phone, code, self.ttl.seconds // 60)

    def check(self, phone: str, code: str) -> bool:
        session = db.session()
        row = session.scalars(
            select(PhoneCode)
            .where(PhoneCode.phone_hash == lookup_hash(phone), PhoneCode.used_at.is_(None))
            .order_by(PhoneCode.created_at.desc())
        ).first()
        if row is None or row.expires_at < utcnow() or row.attempts >= self.max_attempts:
            return False
        row.attempts += 1
        if secrets.compare_digest(row.code_hash, lookup_hash(f"{phone}:{code}")):
            row.used_at = utcnow()
            return True
        return False


class TwilioVerifier:
    def __init__(self, sid: str, token: str, service_sid: str, base_url: str = "") -> None:
        self.client = make_client(sid, token, base_url)
        self.service_sid = service_sid

    def start(self, phone: str) -> None:
        try:
            self.client.verify.v2.services(self.service_sid).verifications.create(to=phone, channel="sms")
        except TwilioException as exc:
            log.error("Twilio Verify start failed: %s", exc)
            raise ServiceUnavailable(
                "The SMS service is unavailable; try again shortly.", code="sms_unavailable"
            ) from exc

    def check(self, phone: str, code: str) -> bool:
        try:
            result = self.client.verify.v2.services(self.service_sid).verification_checks.create(to=phone, code=code)
        except TwilioException as exc:
            # Twilio answers 404 once a verification expired, was used up or never existed.
            if getattr(exc, "status", None) == 404:
                return False
            log.error("Twilio Verify check failed: %s", exc)
            raise ServiceUnavailable(
                "The SMS service is unavailable; try again shortly.", code="sms_unavailable"
            ) from exc
        return bool(result.status == "approved")


def init_app(app: Flask) -> None:
    cfg = app.config
    verifier: PhoneVerifier
    if cfg["SMS_BACKEND"] == "twilio":
        verifier = TwilioVerifier(
            cfg["TWILIO_ACCOUNT_SID"],
            cfg["TWILIO_AUTH_TOKEN"],
            cfg["TWILIO_VERIFY_SERVICE_SID"],
            cfg["TWILIO_BASE_URL"],
        )
    else:
        verifier = LogVerifier(cfg["OTP_TTL_SECONDS"], cfg["OTP_MAX_ATTEMPTS"])
    app.extensions["phone_verifier"] = verifier


def verifier() -> PhoneVerifier:
    v: PhoneVerifier = current_app.extensions["phone_verifier"]
    return v
