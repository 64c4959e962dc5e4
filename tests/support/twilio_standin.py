"""A local stand-in for the parts of Twilio the clinic uses, for the REAL twilio SDK (9.x).

No fake Twilio server exists, so this small stateful Flask app answers what the SDK
calls, shaped like Twilio's JSON (the SDK parses it into its instances):

- Verify v2:  POST /verify/v2/Services/{ServiceSid}/Verifications      (To, Channel) → 201
              POST /verify/v2/Services/{ServiceSid}/VerificationCheck  (To|VerificationSid, Code) → 200
- Messaging:  POST /api/2010-04-01/Accounts/{AccountSid}/Messages.json (To, From|MessagingServiceSid, Body) → 201

The app's adapter (`clinic.core.twilio.make_client(sid, token, base_url)`) rewrites
https://<product>.twilio.com/<path> to <base_url>/<product>/<path>, hence the prefixes.
HTTP basic auth (account SID : auth token) is checked on every call.

It imitates Twilio's documented behaviour, not Twilio itself: a verification lives 10
minutes; asking again while one is pending re-sends the same code; a wrong code answers
200 with status "pending"; after 5 wrong codes 429 (60202); an approved, expired or
unknown verification answers 404 (20404). Tests read the "sent" codes from `outbox`.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.support.live_server import LiveServer

MAX_CHECK_ATTEMPTS = 5
VERIFICATION_TTL = timedelta(minutes=10)


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Verification:
    sid: str
    service_sid: str
    to: str
    channel: str
    code: str
    created: datetime
    status: str = "pending"  # pending | approved | canceled | max_attempts_reached | expired
    attempts: int = 0
    sends: list[datetime] = field(default_factory=list)

    def expired(self, now: datetime) -> bool:
        return now - self.created > VERIFICATION_TTL


class TwilioStandin:
    """The stand-in's state and its WSGI app. `start()` serves it on 127.0.0.1:<free port>."""

    def __init__(
        self,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "standin-auth-token",
        verify_service_sid: str = "VA" + "1" * 32,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.verify_service_sid = verify_service_sid
        self.verifications: list[Verification] = []
        self.outbox: list[dict[str, Any]] = []  # every "sent" SMS: {to, body, code?, kind}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call
        self.failure: int | None = None  # answer every call with this HTTP status (outage)
        self.now = lambda: datetime.now(UTC)
        self._lock = threading.Lock()
        self.app = self._make_app()
        self.server = LiveServer(self.app)

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> TwilioStandin:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.url

    def app_settings(self) -> dict[str, str]:
        """The app's settings that send SMS and phone codes through this stand-in."""
        return {
            "SMS_BACKEND": "twilio",
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_VERIFY_SERVICE_SID": self.verify_service_sid,
            "TWILIO_BASE_URL": self.base_url,
        }

    def reset(self) -> None:
        """A fresh Twilio for the next test: no state, no failure, and up again if a test stopped it."""
        if not self.server.running:
            self.server.start()  # same port as before
        with self._lock:
            self.verifications.clear()
            self.outbox.clear()
            self.requests.clear()
            self.failure = None

    # --- what tests look at ----------------------------------------------------------
    def codes_sent_to(self, to: str) -> list[str]:
        return [m["code"] for m in self.outbox if m["to"] == to and m.get("code")]

    def last_code(self, to: str) -> str:
        codes = self.codes_sent_to(to)
        assert codes, f"no code was sent to {to}"
        return codes[-1]

    def expire_all(self) -> None:
        """Move every verification's creation time past its 10 minutes."""
        with self._lock:
            for v in self.verifications:
                v.created -= VERIFICATION_TTL + timedelta(seconds=1)

    # --- the app -----------------------------------------------------------------------
    def _make_app(self) -> Flask:
        app = Flask("twilio_standin")

        def error(status: int, code: int, message: str) -> Response:
            resp = jsonify(
                {
                    "code": code,
                    "message": message,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status,
                }
            )
            resp.status_code = status
            return resp

        @app.before_request
        def _gate() -> Response | None:
            self.requests.append((request.method, request.path))
            if self.failure is not None:
                return error(self.failure, 20500, "Service unavailable (stand-in outage)")
            auth = request.authorization
            if auth is None or auth.username != self.account_sid or auth.password != self.auth_token:
                resp = error(401, 20003, "Authenticate")
                resp.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
                return resp
            return None

        def service_or_404(service_sid: str) -> Response | None:
            if service_sid != self.verify_service_sid:
                return error(404, 20404, f"The requested resource /Services/{service_sid} was not found")
            return None

        def verification_json(v: Verification) -> dict[str, Any]:
            return {
                "sid": v.sid,
                "service_sid": v.service_sid,
                "account_sid": self.account_sid,
                "to": v.to,
                "channel": v.channel,
                "status": v.status,
                "valid": v.status == "approved",
                "lookup": {"carrier": None},
                "amount": None,
                "payee": None,
                "send_code_attempts": [
                    {"attempt_sid": _sid("VL"), "channel": v.channel, "time": _iso(t)} for t in v.sends
                ],
                "date_created": _iso(v.created),
                "date_updated": _iso(self.now()),
                "sna": None,
                "url": f"https://verify.twilio.com/v2/Services/{v.service_sid}/Verifications/{v.sid}",
            }

        def pending_for(service_sid: str, to: str | None, sid: str | None) -> Verification | None:
            now = self.now()
            for v in reversed(self.verifications):
                if v.service_sid != service_sid or (to and v.to != to) or (sid and v.sid != sid):
                    continue
                if v.status == "pending" and v.expired(now):
                    v.status = "expired"
                return v if v.status == "pending" else None
            return None

        @app.post("/verify/v2/Services/<service_sid>/Verifications")
        def create_verification(service_sid: str) -> Any:
            missing = service_or_404(service_sid)
            if missing:
                return missing
            to = request.form.get("To", "")
            channel = request.form.get("Channel", "")
            if not to:
                return error(400, 60200, "Invalid parameter `To`")
            if channel not in ("sms", "call", "email", "whatsapp"):
                return error(400, 60200, "Invalid parameter `Channel`")
            with self._lock:
                v = pending_for(service_sid, to, None)
                if v is None:
                    v = Verification(
                        sid=_sid("VE"),
                        service_sid=service_sid,
                        to=to,
                        channel=channel,
                        code=f"{secrets.randbelow(1_000_000):06d}",
                        created=self.now(),
                    )
                    self.verifications.append(v)
                v.sends.append(self.now())
                self.outbox.append(
                    {"to": to, "kind": "verify", "code": v.code, "body": f"Your verification code is: {v.code}"}
                )
            return jsonify(verification_json(v)), 201

        @app.post("/verify/v2/Services/<service_sid>/VerificationCheck")
        def check_verification(service_sid: str) -> Any:
            missing = service_or_404(service_sid)
            if missing:
                return missing
            to = request.form.get("To")
            sid = request.form.get("VerificationSid")
            code = request.form.get("Code", "")
            if not to and not sid:
                return error(400, 60200, "Either a 'To' number or 'VerificationSid' must be specified")
            with self._lock:
                v = pending_for(service_sid, to, sid)
                if v is None:
                    return error(
                        404, 20404, f"The requested resource /Services/{service_sid}/VerificationCheck was not found"
                    )
                if v.attempts >= MAX_CHECK_ATTEMPTS:
                    v.status = "max_attempts_reached"
                    return error(429, 60202, "Max check attempts reached")
                v.attempts += 1
                if secrets.compare_digest(v.code, code):
                    v.status = "approved"
                body = verification_json(v)
            body.pop("send_code_attempts")
            body.pop("lookup")
            body.pop("url")
            body["sna_attempts_error_codes"] = []
            return jsonify(body), 200

        @app.post("/api/2010-04-01/Accounts/<account_sid>/Messages.json")
        def create_message(account_sid: str) -> Any:
            if account_sid != self.account_sid:
                return error(
                    404, 20404, f"The requested resource /2010-04-01/Accounts/{account_sid}/Messages.json was not found"
                )
            to = request.form.get("To", "")
            body = request.form.get("Body", "")
            sender = request.form.get("From") or request.form.get("MessagingServiceSid")
            if not to:
                return error(400, 21604, "A 'To' phone number is required.")
            if not sender:
                return error(400, 21603, "A 'From' phone number is required.")
            if not body and not request.form.get("MediaUrl"):
                return error(400, 21602, "Message body is required.")
            now = format_datetime(self.now(), usegmt=True)
            sid = _sid("SM")
            with self._lock:
                self.outbox.append({"to": to, "kind": "message", "code": None, "body": body, "from": sender})
            return (
                jsonify(
                    {
                        "sid": sid,
                        "account_sid": account_sid,
                        "to": to,
                        "from": request.form.get("From"),
                        "messaging_service_sid": request.form.get("MessagingServiceSid"),
                        "body": body,
                        "status": "queued",
                        "num_segments": "1",
                        "num_media": "0",
                        "direction": "outbound-api",
                        "api_version": "2010-04-01",
                        "price": None,
                        "price_unit": "USD",
                        "error_code": None,
                        "error_message": None,
                        "date_created": now,
                        "date_updated": now,
                        "date_sent": None,
                        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
                        "subresource_uris": {"media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"},
                    }
                ),
                201,
            )

        return app
