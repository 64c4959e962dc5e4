"""The Twilio client, built once from configuration.

With TWILIO_BASE_URL set (tests, or a relay), requests of the real SDK to
https://<product>.twilio.com/<path> go to <base>/<product>/<path> instead.
A network failure (refused, reset, timed out) surfaces as a `TwilioException`, like
an error answer from Twilio, so callers handle an outage in one place.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client


class TwilioUnreachable(TwilioException):
    """Twilio could not be reached at all (no HTTP answer)."""


class GuardedHttpClient(TwilioHttpClient):
    def request(self, method: str, url: str, *args: Any, **kw: Any) -> Any:
        try:
            return super().request(method, url, *args, **kw)
        except requests.RequestException as exc:
            raise TwilioUnreachable(f"Twilio is unreachable: {exc.__class__.__name__}") from exc


class RebasedHttpClient(GuardedHttpClient):
    def __init__(self, base_url: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kw: Any) -> Any:
        parts = urlsplit(url)
        product = parts.netloc.split(".")[0]
        rebased = f"{self.base_url}/{product}{parts.path}"
        if parts.query:
            rebased += "?" + parts.query
        return super().request(method, rebased, *args, **kw)


def make_client(sid: str, token: str, base_url: str = "", timeout: float = 10.0) -> Client:
    http = RebasedHttpClient(base_url, timeout=timeout) if base_url else GuardedHttpClient(timeout=timeout)
    return Client(sid, token, http_client=http)


def video_token(
    account_sid: str, api_key_sid: str, api_key_secret: str, identity: str, room: str, ttl: int = 3600
) -> str:
    """A Twilio Video access token for one identity and one room (made offline, signed)."""
    from twilio.jwt.access_token import AccessToken
    from twilio.jwt.access_token.grants import VideoGrant

    token = AccessToken(account_sid, api_key_sid, api_key_secret, identity=identity, ttl=ttl)
    token.add_grant(VideoGrant(room=room))
    jwt = token.to_jwt()
    return jwt.decode() if isinstance(jwt, bytes) else str(jwt)
