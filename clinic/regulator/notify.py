"""Telling the regulator: one small SMS function, chosen by configuration.

SMS_BACKEND=twilio sends through the real Twilio SDK (Messages API); otherwise the
message goes to the application log (development default). Called by the outbox job
`incident.notify_regulator` (clinic.regulator.services), after the incident's commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app
from twilio.base.exceptions import TwilioException

from clinic.core.twilio import make_client

log = logging.getLogger("clinic.regulator")


@dataclass(frozen=True)
class Sent:
    ok: bool
    channel: str
    reference: str | None = None
    error: str | None = None


def send_sms(to: str, body: str) -> Sent:
    """Send one SMS now; never raises for an outage (the caller records the failure)."""
    cfg = current_app.config
    if cfg.get("SMS_BACKEND") != "twilio":
        log.warning("SMS to %s: %s", to, body)
        return Sent(True, "log")
    client = make_client(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"], cfg.get("TWILIO_BASE_URL", ""))
    try:
        message = client.messages.create(to=to, from_=cfg.get("TWILIO_SMS_FROM") or None, body=body)
    except TwilioException as exc:
        log.error("SMS to the regulator failed: %s", exc)
        return Sent(False, "twilio", error=str(exc)[:500])
    return Sent(True, "twilio", reference=message.sid)


def mask_phone(phone: str) -> str:
    return phone[:4] + "*" * max(0, len(phone) - 8) + phone[-4:] if len(phone) > 8 else "*" * len(phone)
