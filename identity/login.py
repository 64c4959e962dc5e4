"""Logging in: passwords (argon2, the policy), login names, the login limits, and the page
and API sessions an account has (ended together by logout, a password change or a
deactivation). One function per use case; they flush, audit and never commit. Registration,
phones, family members and staff are `identity.services`."""

from __future__ import annotations

import hashlib
import time
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from clinic.core import audit, limits
from clinic.core.config import settings
from clinic.core.db import db
from clinic.core.errors import DomainError, Invalid, RateLimited
from identity import rules
from identity.models import Account

_hasher = PasswordHasher()
# A hash to verify against when the username is unknown, so timing does not tell.
_DUMMY_HASH = _hasher.hash("not-a-real-password-0")


class BadCredentials(DomainError):
    status = 401
    code = "bad_credentials"
    default_message = "The username or password is wrong."


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_policy(password: str) -> None:
    problems = rules.password_problems(password)
    if problems:
        raise Invalid("A password needs 8 to 128 characters, with both letters and digits.", code="weak_password")


def login_name(typed: str) -> str:
    """The username as stored: a patient's is their phone in E.164 (+86…), typed as they
    know it (spaces, dashes, +86, 0086, full-width digits); any other name is taken in
    Unicode NFKC form without surrounding whitespace."""
    typed = unicodedata.normalize("NFKC", typed).strip()
    if not any(ch.isalpha() for ch in typed):
        try:
            return rules.normalize_phone(typed)
        except ValueError:
            pass
    return typed


def _account_named(username: str) -> Account | None:
    return db.session.scalars(select(Account).where(Account.username == login_name(username))).first()


def login_identity(username: str) -> str:
    """The key that every spelling of one login shares: the account it resolves to, or
    (no such account) the name folded (case, every whitespace removed)."""
    account = _account_named(username)
    if account is not None:
        return f"account:{account.id}"
    return "name:" + "".join(login_name(username).casefold().split())


# --- login limits (OWASP ASVS 2.2.1) --------------------------------------------------
# 1. per address and identity (LOGIN_RATE_LIMIT): every attempt counts;
# 2. per address (LOGIN_ADDRESS_RATE_LIMIT): failed attempts, whatever the username;
# 3. per identity, from any address the account has not logged in from before: after
#    LOGIN_BACKOFF_FREE_FAILURES failures, each further attempt waits twice as long as the
#    last (LOGIN_BACKOFF_BASE_SECONDS, capped at LOGIN_BACKOFF_MAX_SECONDS). The owner at an
#    address they logged in from (within LOGIN_KNOWN_ADDRESS_DAYS) is not held back by
#    someone else's guesses, and a successful login or phone code ends the back-off.


def _address_key(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:32]


def _known_address(account: Account, address: str) -> bool:
    return limits.guard().get(f"login-known/{account.id}/{_address_key(address)}") > 0


def backoff_seconds(failures: int, free: int, base: int, cap: int) -> int:
    """Pure: how long an identity with `failures` recent failures waits before the next try."""
    if failures < free:
        return 0
    return int(min(cap, base * 2 ** min(failures - free, 32)))


def _check_backoff(identity: str) -> None:
    guard = limits.guard()
    failures = guard.get(f"login-fail/{identity}")
    lock = f"login-lock/{identity}/{failures}"
    if failures >= settings().LOGIN_BACKOFF_FREE_FAILURES and guard.get(lock) > 0:
        wait = max(1, int(guard.expiry(lock) - time.time() + 0.999))
        raise RateLimited(
            "Too many failed logins for this account; try again in %(seconds)s seconds.",
            params={"seconds": wait},
            retry_after=wait,
        )


def _count_failure(identity: str) -> None:
    guard = limits.guard()
    cfg = settings()
    failures = guard.incr(f"login-fail/{identity}", cfg.LOGIN_BACKOFF_WINDOW_SECONDS)
    wait = backoff_seconds(
        failures, cfg.LOGIN_BACKOFF_FREE_FAILURES, cfg.LOGIN_BACKOFF_BASE_SECONDS, cfg.LOGIN_BACKOFF_MAX_SECONDS
    )
    if wait:
        guard.incr(f"login-lock/{identity}/{failures}", wait)


def end_backoff(account: Account) -> None:
    """The owner proved who they are (password or phone code): the account's back-off ends."""
    limits.guard().clear(f"login-fail/account:{account.id}")


def log_in(username: str, password: str, address: str | None) -> Account:
    """Pages' and the API's login, with every limit above; the account, or a refusal."""
    address = address or "-"
    account = _account_named(username)
    identity = f"account:{account.id}" if account is not None else login_identity(username)
    limits.check("LOGIN_RATE_LIMIT", "login", address, identity)
    limits.test("LOGIN_ADDRESS_RATE_LIMIT", "login-address", address)
    if account is None or not _known_address(account, address):
        _check_backoff(identity)
    try:
        account = authenticate(username, password)
    except BadCredentials:
        limits.hit("LOGIN_ADDRESS_RATE_LIMIT", "login-address", address)
        _count_failure(identity)
        raise
    end_backoff(account)
    limits.guard().incr(
        f"login-known/{account.id}/{_address_key(address)}", settings().LOGIN_KNOWN_ADDRESS_DAYS * 24 * 3600
    )
    return account


def authenticate(username: str, password: str) -> Account:
    session = db.session()
    account = _account_named(username)
    ok = False
    try:
        ok = _hasher.verify(account.password_hash if account else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if account is None or not ok or not account.active:
        audit.record(
            session,
            "auth.login_failed",
            subject_type="account",
            subject_id=account.id if account else None,
            detail={"username": username[:64], "reason": "inactive" if account and ok else "bad_credentials"},
        )
        raise BadCredentials(persist=True)
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    audit.record(
        session,
        "auth.login",
        subject_type="account",
        subject_id=account.id,
        actor=audit.Actor(str(account.id), account.role.value, audit.current_actor().client_ip),
    )
    return account


def end_sessions(account: Account, reason: str) -> None:
    """End every page session and API token of the account (logout, password change,
    deactivation): they carry its session version, which moves on."""
    account.session_version = (account.session_version or 0) + 1
    db.session.flush()
    audit.record(
        db.session(), "auth.sessions_ended", subject_type="account", subject_id=account.id, detail={"reason": reason}
    )


def change_password(account: Account, current: str, new: str) -> None:
    """The owner changes their password; every other session ends with the old one."""
    ok: bool
    try:
        ok = _hasher.verify(account.password_hash, current)
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        raise BadCredentials("The current password is wrong.")
    check_password_policy(new)
    account.password_hash = hash_password(new)
    audit.record(db.session(), "auth.password_changed", subject_type="account", subject_id=account.id)
    end_sessions(account, "password_changed")
