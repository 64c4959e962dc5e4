"""Telling the regulator: one small SMS function, chosen by configuration.

SMS_BACKEND=twilio sends through the real Twilio SDK (Messages API); otherwise the
message goes to the application log (development default). Called by the outbox job
`incident.notify_regulator` (clinic.regulator.incidents), after the incident's commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from twilio.base.exceptions import TwilioException

from clinic.core.config import settings
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
    cfg = settings()
    if cfg.SMS_BACKEND != "twilio":
        log.warning("SMS to %s: %s", to, body)
        return Sent(True, "log")
    client = make_client(cfg.TWILIO_ACCOUNT_SID, cfg.TWILIO_AUTH_TOKEN, cfg.TWILIO_BASE_URL)
    try:
        message = client.messages.create(to=to, from_=cfg.TWILIO_SMS_FROM or None, body=body)
    except TwilioException as exc:
        log.error("SMS to the regulator failed: %s", exc)
        return Sent(False, "twilio", error=str(exc)[:500])
    return Sent(True, "twilio", reference=message.sid)


def mask_phone(phone: str) -> str:
    """A number as it may be shown or logged: a mainland mobile as +86 139****9000 (the
    operator prefix and the last four digits, as Chinese apps show it), anything else with
    all but its first three and last four digits hidden; a short number entirely."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if phone.startswith("+86") and len(digits) == 13:
        return f"+86 {digits[2:5]}****{digits[-4:]}"
    if not phone.startswith("+") and len(digits) == 11 and digits.startswith("1"):
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) <= 8:
        return "*" * len(digits)
    lead = "+" if phone.startswith("+") else ""
    return f"{lead}{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"
