"""localstripe (a local imitation of Stripe's API) in a subprocess bound to 127.0.0.1.

    with LocalStripe() as ls:
        client = stripe.StripeClient(ls.secret_key, base_addresses={"api": ls.url})

`localstripe`'s own command listens on every interface ('::') and pickles its whole
store into /tmp/localstripe.pickle after every change (a file shared by everyone on the
machine). Run as `python -m tests.support.localstripe`, this module serves the same
aiohttp application on a loopback socket of a free port (printed on the first line of
stdout) and keeps the store in memory only.

These tests check our code and the real stripe SDK against localstripe's imitation of
Stripe's documented behaviour, not Stripe's real service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import stripe

PROJECT_ROOT = Path(__file__).resolve().parents[2]

VISA = "4242424242424242"
DECLINED = "4000000000000341"  # attaches, then the charge is declined
THREE_D_SECURE = "4000002500003155"  # requires_action


class LocalStripe:
    secret_key = "sk_test_clinic_localstripe"
    publishable_key = "pk_test_clinic_localstripe"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalStripe:
        if self._proc is not None:
            return self
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.localstripe"],
            cwd=str(PROJECT_ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"localstripe did not start: {line!r}")
        self.port = int(line)
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> LocalStripe:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- acting as the patient's browser and as Stripe's dashboard ------------------

    @property
    def client(self) -> stripe.StripeClient:
        return stripe.StripeClient(self.secret_key, base_addresses={"api": self.url})

    def pay(self, payment_intent_id: str, card: str = VISA) -> Any:
        """What Stripe.js does with the client secret: attach a card and confirm.

        A declined card raises `stripe.CardError` (HTTP 402), as with the real API.
        """
        c = self.client.v1
        pm = c.payment_methods.create(
            {"type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
        )
        c.payment_intents.update(payment_intent_id, {"payment_method": pm.id})
        return c.payment_intents.confirm(payment_intent_id)

    def intent(self, payment_intent_id: str) -> Any:
        return self.client.v1.payment_intents.retrieve(payment_intent_id)

    def events(self, type_: str | None = None) -> list[Any]:
        params: dict[str, Any] = {"limit": 100}
        if type_:
            params["type"] = type_
        return list(self.client.v1.events.list(params).data)

    def event_for(self, type_: str, payment_intent_id: str) -> Any:
        for ev in self.events(type_):
            if ev.data.object.id == payment_intent_id:
                return ev
        raise AssertionError(f"no {type_} event for {payment_intent_id}")

    def refunds(self, payment_intent_id: str) -> list[Any]:
        return list(self.client.v1.refunds.list({"payment_intent": payment_intent_id}).data)

    def configure_webhook(
        self, url: str, secret: str, events: list[str] | None = None, hook_id: str = "clinic"
    ) -> None:
        """Have localstripe deliver signed events to `url` (about a second after each)."""
        import requests

        data: dict[str, Any] = {"url": url, "secret": secret}
        if events:
            data["events[]"] = events
        resp = requests.post(f"{self.url}/_config/webhooks/{hook_id}", data=data, timeout=10)
        resp.raise_for_status()


WEBHOOK_SECRET = "whsec_test_clinic_localstripe"


def signed(event: Any, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """An event's body and its `Stripe-Signature` header, as Stripe would deliver it."""
    payload = event if isinstance(event, str) else json.dumps(event.to_dict())
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


def stripe_config(backend: dict[str, Any], ls: LocalStripe, **extra: Any) -> Any:
    """The harness's test configuration with PAYMENTS=stripe pointing at `ls`."""
    from tests.conftest import make_config

    return make_config(
        backend,
        PAYMENTS="stripe",
        STRIPE_SECRET_KEY=ls.secret_key,
        STRIPE_PUBLISHABLE_KEY=ls.publishable_key,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=ls.url,
        **extra,
    )


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy; answer its value (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def _serve() -> None:  # pragma: no cover - runs in the subprocess
    import asyncio
    import logging
    import socket

    from aiohttp import web
    from localstripe import server

    # Keep the store in memory: no shared /tmp/localstripe.pickle.
    server.store.dump_to_disk = lambda: None  # type: ignore[method-assign]
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    asyncio.set_event_loop(asyncio.new_event_loop())
    web.run_app(server.app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":  # pragma: no cover
    _serve()
