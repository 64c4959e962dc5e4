"""Who may read what through the regulators' interface: the scopes a regulator account may
ask for (set by an administrator or the CLI), and the short-lived scoped token a regulator
exchanges its login token for (2018 measures Art. 24). Each use case audits itself and
flushes, never commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from clinic.core import audit
from clinic.core.config import settings
from clinic.core.db import db, utcnow
from clinic.core.errors import Forbidden, Invalid
from clinic.core.principal import Principal
from clinic.regulator import rules
from clinic.regulator.models import RegulatorAccess
from identity import services as identity
from identity import tokens
from identity.models import Role


class ScopeRequired(Forbidden):
    code = "scope_required"
    default_message = (
        "The regulators' data interface needs a scoped token: POST /api/v1/regulator/token with "
        '{"scope": ["read:deidentified"]} (or "read:identified" where allowed) using your login token.'
    )


class ScopeNotAllowed(Forbidden):
    code = "scope_not_allowed"


def allowed_scopes(account_id: uuid.UUID) -> list[str]:
    row = db.session.get(RegulatorAccess, account_id)
    return list(row.scopes) if row is not None else list(rules.DEFAULT_SCOPES)


def set_regulator_scopes(account_id: uuid.UUID, scopes: list[str]) -> RegulatorAccess:
    """An administrator (or the CLI) sets what a regulator account may ask for."""
    session = db.session()
    account = identity.get_account(account_id)
    if account.role != Role.REGULATOR:
        raise Invalid("Scopes are set on regulator accounts only.", code="not_a_regulator")
    unknown = [s for s in scopes if s not in rules.KNOWN_SCOPES]
    if unknown:
        raise Invalid(f"Unknown scope(s): {', '.join(unknown)}; known: {', '.join(rules.KNOWN_SCOPES)}.")
    row = session.get(RegulatorAccess, account.id)
    if row is None:
        row = RegulatorAccess(account_id=account.id)
        session.add(row)
    before = list(row.scopes or [])
    row.scopes = list(dict.fromkeys(scopes))
    row.changed_by = audit.current_actor().id
    row.changed_at = utcnow()
    session.flush()
    audit.record(
        session,
        "regulator.scopes_set",
        subject_type="account",
        subject_id=account.id,
        detail={"before": before, "after": row.scopes},
    )
    return row


@dataclass(frozen=True)
class ScopedToken:
    token: str
    expires_in: int
    scopes: list[str]


def issue_scoped_token(who: Principal, requested: list[str]) -> ScopedToken:
    """Exchange a regulator's login token for a short-lived token carrying `scope`."""
    session = db.session()
    account = identity.get_account(who.account_id)
    if account.role != Role.REGULATOR:
        raise Forbidden("Only regulator accounts hold scoped tokens.")
    if who.is_scoped:
        raise Forbidden(
            "A scoped token cannot be exchanged for another; use your login token.", code="scope_exchange_refused"
        )
    granted, refused = rules.grantable_scopes(requested, allowed_scopes(account.id))
    if refused or not granted:
        audit.record(
            session,
            "regulator.token_refused",
            subject_type="account",
            subject_id=account.id,
            detail={"requested": requested, "refused": refused},
        )
        raise ScopeNotAllowed(
            f"This account may not be granted: {', '.join(refused) or 'nothing'}; "
            f"it may ask for: {', '.join(allowed_scopes(account.id))}.",
            persist=True,
        )
    ttl = int(settings().REGULATOR_TOKEN_SECONDS or rules.SCOPED_TOKEN_SECONDS)
    now = int(utcnow().timestamp())
    token, _ = tokens.issue(account, extra={"scope": " ".join(granted), "exp": now + ttl})
    audit.record(
        session, "regulator.token_issued", subject_type="account", subject_id=account.id, detail={"scope": granted}
    )
    return ScopedToken(token, ttl, granted)


def token_scopes(who: Principal) -> tuple[str, ...]:
    raw = who.scope
    if not raw or not raw.strip():
        raise ScopeRequired()
    scopes = tuple(s for s in raw.split() if s in rules.KNOWN_SCOPES)
    if not scopes:
        raise ScopeRequired()
    return scopes
