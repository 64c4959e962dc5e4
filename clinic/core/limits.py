"""Rate limits (Flask-Limiter; Redis storage when REDIS_URL is set, memory otherwise).

Views call `check()` with the limit and the key parts that matter (client address,
username, phone): a login storm against one account is stopped even from many
addresses, and one address can't sweep many accounts.
"""

from __future__ import annotations

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse

from clinic.core.errors import RateLimited

limiter = Limiter(key_func=get_remote_address, default_limits=[])


def check(limit: str, scope: str, *key_parts: str) -> None:
    item = parse(current_app.config.get(limit, limit))
    if not limiter.limiter.hit(item, scope, *key_parts):
        raise RateLimited("Too many attempts (%(limit)s); try again later.", params={"limit": str(item)})


def reset() -> None:
    limiter.reset()
