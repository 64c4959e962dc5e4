"""Domain errors and rule violations.

Services raise these (or return violations as values); they become the API's error
envelope in ONE place (`clinic.core.web`), and localized messages on pages. Every
refusal carries a machine code naming the rule and a human message saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Violation:
    """One broken rule: its code, a human reason, and where (e.g. the item index)."""

    code: str
    message: str
    item: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.item is not None:
            out["item"] = self.item
        out.update(self.detail)
        return out


class DomainError(Exception):
    """A refusal by the domain. `status` is the HTTP status the API maps it to.

    `persist=True` means the request's writes (audit entries, lockout counters) are the
    intended record of this refusal and are committed although the request is refused.
    """

    status = 400
    code = "bad_request"
    default_message = "The request was refused."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        persist: bool = False,
        params: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        # `message` is an English template; `params` fill its %(name)s placeholders. The
        # template (not the filled text) is what the translation catalog knows.
        self.template = message or self.default_message
        self.params = params or {}
        self.message = self.template % self.params if self.params else self.template
        if code:
            self.code = code
        self.persist = persist
        self.extra = extra
        super().__init__(self.message)

    def with_status(self, status: int) -> DomainError:
        """The same refusal answered with another HTTP status (e.g. 403 for a rule about who)."""
        self.status = status
        return self

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.extra)
        return {"error": body}


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"
    default_message = "Authentication is required."


class Forbidden(DomainError):
    status = 403
    code = "forbidden"
    default_message = "You are not allowed to do this."


class NotFound(DomainError):
    status = 404
    code = "not_found"
    default_message = "Not found."


class Conflict(DomainError):
    status = 409
    code = "conflict"
    default_message = "The request conflicts with the current state."


class Invalid(DomainError):
    status = 422
    code = "invalid"
    default_message = "The request is not valid."


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"
    default_message = "Too many requests; try again later."


class ServiceUnavailable(DomainError):
    status = 503
    code = "service_unavailable"
    default_message = "The service is unavailable."


class RuleRefusal(Invalid):
    """Several rules broken at once: all violations are listed, each with its code."""

    def __init__(
        self, code: str, violations: list[Violation], message: str | None = None, *, lead: str | None = None
    ) -> None:
        """`lead` (optional) introduces the violations: 'lead: first; second'."""
        self.violations = violations
        self.lead = lead
        self.from_violations = message is None
        joined = "; ".join(v.message for v in violations) or "Refused by rule."
        super().__init__(message or (f"{lead} {joined}" if lead else joined), code=code)

    def envelope(self) -> dict[str, Any]:
        body = super().envelope()
        body["error"]["violations"] = [v.as_dict() for v in self.violations]
        return body
