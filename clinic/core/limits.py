"""Rate limits (Flask-Limiter and its `limits` core; Redis storage when REDIS_URL is set).

Views and services call `check()` (count this attempt, refuse past the limit), or
`test()` then `hit()` when only some outcomes should count (a failed password, an SMS
actually sent). Keys name what matters: the client address, the account a username
resolves to, the phone in E.164. `counter_*` are the plain counters that the login
back-off (identity.services) keeps per account.

The storage failing never fails a request: the first error switches this process to
an in-memory storage (Flask-Limiter's in-memory fallback for its own limits; the same
for ours), logged and audited; the real storage is tried again every
RATELIMIT_STORAGE_RETRY_SECONDS and, once it answers, used again (logged and audited).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage
from limits.strategies import STRATEGIES, RateLimiter

from clinic.core.config import settings
from clinic.core.errors import RateLimited

log = logging.getLogger("clinic.limits")
T = TypeVar("T")
EXTENSION = "clinic.limits"


class Guard:
    """The app's limits: the configured storage, and memory when that storage fails."""

    def __init__(self, flask_limiter: Limiter, strategy: str, retry_seconds: float) -> None:
        self.flask_limiter = flask_limiter
        self.storage: Storage = flask_limiter.storage
        self.strategy: RateLimiter = STRATEGIES[strategy](self.storage)
        self.memory = MemoryStorage()
        self.memory_strategy: RateLimiter = STRATEGIES[strategy](self.memory)
        self.retry_seconds = retry_seconds
        self.failed_at: float | None = None  # when the real storage last failed (None: in use)
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        return self.failed_at is not None

    def _run(self, primary: Callable[[], T], fallback: Callable[[], T]) -> T:
        if self.failed_at is not None:
            if time.monotonic() - self.failed_at < self.retry_seconds:
                return fallback()
            try:
                healthy = bool(self.storage.check())
            except Exception:
                healthy = False
            if not healthy:
                self.failed_at = time.monotonic()
                return fallback()
            self._switch(failed=False, reason="")
        try:
            return primary()
        except Exception as exc:  # the storage's own errors (redis.ConnectionError, timeouts, ...)
            self._switch(failed=True, reason=f"{type(exc).__name__}: {exc}")
            return fallback()

    def _switch(self, *, failed: bool, reason: str) -> None:
        with self._lock:
            if failed == (self.failed_at is not None):
                if failed:
                    self.failed_at = time.monotonic()
                return
            self.failed_at = time.monotonic() if failed else None
        if failed:
            log.error("rate-limit storage unreachable (%s): limits fall back to this process's memory", reason)
            _audit("ratelimit.storage_fallback", {"reason": reason[:200]})
        else:
            log.warning("rate-limit storage answers again: limits use it again")
            _audit("ratelimit.storage_recovered", {})

    # --- limits -------------------------------------------------------------------
    def hit(self, items: list[RateLimitItem], *key: str) -> RateLimitItem | None:
        """Count one attempt against every item; the first one exceeded, or None."""
        for item in items:
            if not self._limit("hit", item, key):
                return item
        return None

    def test(self, items: list[RateLimitItem], *key: str) -> RateLimitItem | None:
        for item in items:
            if not self._limit("test", item, key):
                return item
        return None

    def _limit(self, op: str, item: RateLimitItem, key: tuple[str, ...]) -> bool:
        def primary() -> bool:
            return bool(getattr(self.strategy, op)(item, *key))

        def fallback() -> bool:
            return bool(getattr(self.memory_strategy, op)(item, *key))

        return self._run(primary, fallback)

    def reset_at(self, item: RateLimitItem, *key: str) -> float:
        stats = self._run(
            lambda: self.strategy.get_window_stats(item, *key),
            lambda: self.memory_strategy.get_window_stats(item, *key),
        )
        return float(stats.reset_time)

    # --- plain counters -------------------------------------------------------------
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._run(
            lambda: self.storage.incr(key, expiry, amount=amount), lambda: self.memory.incr(key, expiry, amount=amount)
        )

    def get(self, key: str) -> int:
        return self._run(lambda: self.storage.get(key), lambda: self.memory.get(key))

    def expiry(self, key: str) -> float:
        return self._run(lambda: self.storage.get_expiry(key), lambda: self.memory.get_expiry(key))

    def clear(self, key: str) -> None:
        self._run(lambda: self.storage.clear(key), lambda: self.memory.clear(key))

    def reset(self) -> None:
        self.memory.reset()
        try:
            self.storage.reset()
        except Exception as exc:
            log.warning("could not reset the rate-limit storage: %s", exc)


_GUARDS: weakref.WeakSet[Guard] = weakref.WeakSet()


def _audit(action: str, detail: dict[str, Any]) -> None:
    """Write the switch's audit entry in a transaction of its own (the request's may roll back)."""
    from sqlalchemy.orm import Session

    from clinic.core import audit
    from clinic.core.db import db

    try:
        with Session(db.engine) as session:
            audit.record(session, action, subject_type="service", subject_id="rate_limit_storage", detail=detail)
            session.commit()
    except Exception:
        log.exception("could not audit %s", action)


def init_app(app: Flask) -> None:
    cfg = app.config
    cfg.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    cfg.setdefault("RATELIMIT_STRATEGY", "moving-window")
    if str(cfg.get("RATELIMIT_STORAGE_URI", "")).startswith(("redis://", "rediss://")):
        # An unreachable Redis must fail fast, not hold the request.
        cfg.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 1, "socket_timeout": 1})
    flask_limiter = Limiter(key_func=get_remote_address, default_limits=[], app=app)
    app.extensions[EXTENSION] = g = Guard(
        flask_limiter, str(cfg["RATELIMIT_STRATEGY"]), float(cfg.get("RATELIMIT_STORAGE_RETRY_SECONDS", 30))
    )
    _GUARDS.add(g)


def guard() -> Guard:
    g: Guard = current_app.extensions[EXTENSION]
    return g


def _items(limit: str) -> list[RateLimitItem]:
    """`limit` is a config name (LOGIN_RATE_LIMIT) or a limit itself ("5 per minute; 20 per hour")."""
    configured = getattr(settings(), limit, None) if limit.isidentifier() else None
    return list(parse_many(str(configured or limit)))


def refusal(item: RateLimitItem, retry_after: float | None = None) -> RateLimited:
    extra: dict[str, Any] = {}
    if retry_after is not None:
        extra["retry_after"] = max(1, int(retry_after + 0.999))
    return RateLimited("Too many attempts (%(limit)s); try again later.", params={"limit": str(item)}, **extra)


def _refuse(item: RateLimitItem, key: tuple[str, ...]) -> RateLimited:
    return refusal(item, guard().reset_at(item, *key) - time.time())


def check(limit: str, scope: str, *key_parts: str) -> None:
    """Count this attempt; 429 once past any of the limit's windows."""
    key = (scope, *key_parts)
    exceeded = guard().hit(_items(limit), *key)
    if exceeded is not None:
        raise _refuse(exceeded, key)


def test(limit: str, scope: str, *key_parts: str) -> None:
    """429 if the next attempt would pass the limit; counts nothing (see `hit`)."""
    key = (scope, *key_parts)
    exceeded = guard().test(_items(limit), *key)
    if exceeded is not None:
        raise _refuse(exceeded, key)


def hit(limit: str, scope: str, *key_parts: str) -> None:
    """Count an attempt that happened (after `test` let it through)."""
    guard().hit(_items(limit), scope, *key_parts)


def reset() -> None:
    """Clear every limit of every app in this process (tests start each from nothing)."""
    for g in list(_GUARDS):
        g.reset()
