"""How the pharmacy and its delivery partners trust each other, pure: the HMAC signature
that every message carries both ways (API.md § Delivery partners), and which endpoints an
order may be sent to (no user info, https and public addresses only outside development).
No Flask, no session.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from clinic.core.errors import Invalid

# --- partner signatures --------------------------------------------------------------------

SIGNATURE_WINDOW_SECONDS = 300


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`, as API.md says, both ways."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: int) -> dict[str, str]:
    return {"X-Timestamp": str(now), "X-Signature": signature(secret, now, body), "Content-Type": "application/json"}


def signature_problem(
    secret: str,
    timestamp: str | None,
    sig: str | None,
    body: bytes,
    now: int,
    window: int = SIGNATURE_WINDOW_SECONDS,
) -> str | None:
    """None when the signature is good and fresh; else why not (missing, malformed, stale, mismatch)."""
    if not timestamp or not sig:
        return "missing"
    ts = timestamp.strip()
    if not ts.isdigit() or len(ts) > 12:
        return "malformed_timestamp"
    if abs(now - int(ts)) > window:
        return "stale"
    expected = signature(secret, ts, body)
    if not hmac.compare_digest(expected.encode(), sig.strip().encode("utf-8", "replace")):
        return "mismatch"
    return None


# --- partner endpoints -----------------------------------------------------------------------


class UnsafeEndpoint(Invalid):
    code = "unsafe_endpoint"


Resolver = Callable[[str, int], list[str]]


def _non_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local


def check_endpoint(url: str, *, private_allowed: bool, resolve: Resolver | None) -> list[str]:
    """Where the dispatcher may post orders; answers the addresses it resolved to.

    Always: http(s) only, a host, no userinfo (`https://user:pw@host` hides the real host
    from a reader). Outside development (`private_allowed=False`): https only, a host NAME
    (not an address literal in any spelling, e.g. 127.1 or 2130706433), and every address
    the name resolves to public — no private, loopback, link-local, unspecified, reserved
    or multicast address. `resolve=None` skips the look-up (a name that does not resolve yet
    is checked again at every send).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeEndpoint("The partner endpoint must be an http(s) URL with a host.")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UnsafeEndpoint("The partner endpoint must not carry a user name or password in its URL.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UnsafeEndpoint("The partner endpoint's port is not a number from 1 to 65535.") from None
    if private_allowed:
        return []
    if scheme != "https":
        raise UnsafeEndpoint("The partner endpoint must use https.")
    host = parts.hostname.rstrip(".").lower()
    if _address_literal(host) or "." not in host or host == "localhost" or host.endswith(LOCAL_SUFFIXES):
        raise UnsafeEndpoint("The partner endpoint must be a public host name, not an address or a local name.")
    addresses = resolve(host, port) if resolve is not None else []
    bad = sorted(a for a in addresses if _non_public(a))
    if bad:
        raise UnsafeEndpoint(
            "The partner endpoint's host resolves to a non-public address (%(addresses)s).",
            params={"addresses": ", ".join(bad)},
        )
    return addresses


LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".intranet", ".corp")


def _address_literal(host: str) -> bool:
    """An IP address in any spelling inet_aton accepts (127.1, 0x7f.1, 2130706433) or IPv6."""
    if ":" in host:
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return all(label.isdigit() or label.startswith("0x") for label in host.split("."))
    return True
