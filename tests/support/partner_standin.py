"""A local stand-in for a delivery partner's order endpoint, and a signer for its callbacks.

    partner = PartnerStandin(secret).start()     # POST {url}/orders
    partner.failure = 500                        # "down": answers 500 (or partner.stop(): refused)
    partner.failure = None; partner.start()      # "up" again, on the same port

It checks our signature on every order exactly as a partner would (X-Timestamp,
X-Signature: sha256=<HMAC of "<timestamp>.<raw body>">, at most 5 minutes old) and keeps
what it received in `orders` (accepted) and `refused`.

A partner's callbacks are signed the same way: `callback(...)` makes the body a partner
sends (with its optional waybill number, 运单号) and `sign(secret, body)` its headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.support.live_server import LiveServer


def sign(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Timestamp": str(ts), "X-Signature": f"sha256={mac}", "Content-Type": "application/json"}


def callback(
    event_id: str, prescription_id: str, status: str, at: str = "2026-11-23T08:00:00Z", waybill_no: str | None = None
) -> bytes:
    """A partner's status callback body; `waybill_no` is optional (partners that send none still work)."""
    body: dict[str, Any] = {"event_id": event_id, "prescription_id": prescription_id, "status": status, "at": at}
    if waybill_no is not None:
        body["waybill_no"] = waybill_no
    return json.dumps(body).encode()


class PartnerStandin:
    def __init__(self, secret: str = "") -> None:
        self.secret = secret
        self.orders: list[dict[str, Any]] = []
        self.refused: list[tuple[int, str]] = []
        self.calls = 0
        self.failure: int | None = None
        self._lock = threading.Lock()
        self.app = self._make_app()
        self.server = LiveServer(self.app)

    def start(self) -> PartnerStandin:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url + "/orders"

    def _make_app(self) -> Flask:
        app = Flask("partner_standin")

        @app.post("/orders")
        def orders() -> Any:
            raw = request.get_data()
            with self._lock:
                self.calls += 1
                if self.failure is not None:
                    self.refused.append((self.failure, "outage"))
                    return Response("down", status=self.failure)
                ts = request.headers.get("X-Timestamp", "")
                expected = sign(self.secret, raw, int(ts) if ts.isdigit() else 0)["X-Signature"]
                fresh = ts.isdigit() and abs(time.time() - int(ts)) <= 300
                if not fresh or not hmac.compare_digest(expected, request.headers.get("X-Signature", "")):
                    self.refused.append((401, "bad signature"))
                    return jsonify({"error": "bad signature"}), 401
                self.orders.append({"body": json.loads(raw), "idempotency_key": request.headers.get("Idempotency-Key")})
            return jsonify({"accepted": True}), 202

        return app
