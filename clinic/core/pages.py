"""Page plumbing in ONE place: who may open a page, who acts for the audit trail, and how
codes and times are shown to people.

- Role decorators: `role_page("pharmacist")`, `patient_page`, `pharmacist_page`,
  `admin_page`, `physician_page` (a physician's pages also need a face check since this
  login), `participant_page` (the visit room: patients, and physicians as above).
- The page actor hook: every page request names who acted, for the audit entries its
  services write (the JSON API sets its own from the token).
- Labels: each domain registers ONE mapping from its codes (statuses, rule codes, control
  classes, field names...) to lazily translated words (`register_labels`); templates call
  `label(domain, code)`, Python calls `label_for(...)`. A code nobody labelled is shown as
  "—" in a page, never raw, and logged so that it gets a label.
- Times: `bj` formats an aware UTC datetime in Beijing time (the store keeps UTC).
- The favicon.

The kernel imports no domain: roles are compared by their string values.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar, cast

from flask import Flask, abort, current_app, redirect, request, session, url_for
from flask_babel import get_locale
from flask_login import current_user
from markupsafe import escape
from werkzeug.wrappers import Response

from clinic.core.audit import Actor, set_actor
from clinic.core.principal import Principal

log = logging.getLogger("clinic.pages")

F = TypeVar("F", bound=Callable[..., Any])
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


# --- who may open a page ----------------------------------------------------------------------


def _role() -> str | None:
    if not current_user.is_authenticated:
        return None
    role = getattr(current_user, "role", None)
    return str(getattr(role, "value", role)) if role is not None else None


def face_checked() -> bool:
    """Has this login session passed a face check (a physician's pages need one)?"""
    return isinstance(session.get("face_at"), int)


def page_principal() -> Principal:
    """The signed-in user of a page, as the services take them (with the login session's face
    check, if any). Only for pages behind `role_page`/`physician_page`: someone is signed in."""
    face_at = session.get("face_at")
    return Principal(
        account_id=current_user.id,
        role=_role() or "",
        face_at=float(face_at) if isinstance(face_at, int | float) else None,
    )


def _unauthorized() -> Any:
    app: Any = current_app  # flask-login keeps its manager on the app
    return app.login_manager.unauthorized()


def role_page(*roles: str) -> Callable[[F], F]:
    """A page for signed-in people of these roles: the login page for nobody, 403 for others."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            role = _role()
            if role is None:
                return _unauthorized()
            if role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorate


patient_page = role_page("patient")
pharmacist_page = role_page("pharmacist")
admin_page = role_page("admin")


def physician_page(view: F) -> F:
    """A physician's page: logged in, a physician, and a face check done since this login
    (else to the face page, coming back here afterwards)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        role = _role()
        if role is None:
            return _unauthorized()
        if role != "physician":
            abort(403)
        if not face_checked():
            return redirect(url_for("identity.face", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return cast(F, wrapped)


def participant_page(view: F) -> F:
    """A page both sides of a visit use: patients as they are, physicians as `physician_page`."""
    as_physician = physician_page(view)

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        role = _role()
        if role is None:
            return _unauthorized()
        if role == "physician":
            return as_physician(*args, **kwargs)
        if role != "patient":
            abort(403)
        return view(*args, **kwargs)

    return cast(F, wrapped)


def page_actor() -> None:
    """Audit entries written by any page name who acted (the API sets its own from the token)."""
    from clinic.core.api import API_PREFIX

    if request.path.startswith(API_PREFIX):
        return
    role = _role()
    if role is not None:
        set_actor(Actor(id=str(current_user.id), role=role, client_ip=request.remote_addr))
    else:
        set_actor(Actor(id=None, role="anonymous", client_ip=request.remote_addr))


# --- labels: one mapping per domain -----------------------------------------------------------


class Words:
    """A label in both languages, chosen when shown: English under the switch, else Chinese."""

    __slots__ = ("en", "zh")

    def __init__(self, zh: str, en: str) -> None:
        self.zh, self.en = zh, en

    def __str__(self) -> str:
        try:
            english = str(get_locale()) == "en"
        except Exception:  # outside a request (CLI, jobs): Chinese, the institution's language
            english = False
        return self.en if english else self.zh

    def __html__(self) -> str:
        return str(escape(str(self)))

    def __repr__(self) -> str:
        return f"Words({self.zh!r}, {self.en!r})"


def words(pairs: Mapping[str, tuple[str, str]]) -> dict[str, Words]:
    """A domain's mapping written as {code: (中文, English)}."""
    return {code: Words(zh, en) for code, (zh, en) in pairs.items()}


_LABELS: dict[str, Mapping[str, Any]] = {}


def register_labels(domain: str, mapping: Mapping[str, Any]) -> None:
    """A domain's codes and their (lazily translated) words; registered once at import."""
    _LABELS[domain] = mapping


def label_for(domain: str, code: Any, default: str | None = None) -> str:
    """The words for a code, in the page's language; "—" (or `default`) if it has none."""
    if code is None or code == "":
        return "—"
    key = str(getattr(code, "value", code))
    found = _LABELS.get(domain, {}).get(key)
    if found is None:
        if default is not None:
            return default
        log.warning("no %s label for %r", domain, key)
        return "—"
    return str(found)


def labels_of(domain: str) -> Mapping[str, Any]:
    return _LABELS.get(domain, {})


# --- home-page panels: each domain adds its own to a role's home ------------------------------


@dataclass(frozen=True)
class Panel:
    """A count and a short list on a role's home page (e.g. the physician's proofs to confirm).

    `read(account_id)` answers the rows for the signed-in account (a UUID); `template`
    renders them (it gets `rows`); `alert` panels are shown in red while they hold anything."""

    key: str
    title: Any
    template: str
    read: Callable[[uuid.UUID], list[Any]]
    order: int = 0
    alert: bool = False


@dataclass(frozen=True)
class FilledPanel:
    panel: Panel
    rows: list[Any]

    @property
    def count(self) -> int:
        return len(self.rows)


_PANELS: dict[str, dict[str, Panel]] = {}


def register_panel(role: str, panel: Panel) -> None:
    _PANELS.setdefault(role, {})[panel.key] = panel


def panels_for(who: Principal) -> list[FilledPanel]:
    """The panels of `who`'s role, in order, each read for their account."""
    chosen = sorted(_PANELS.get(who.role, {}).values(), key=lambda p: p.order)
    return [FilledPanel(p, p.read(who.account_id)) for p in chosen]


# --- times in Beijing -------------------------------------------------------------------------


def to_beijing(value: datetime) -> datetime:
    if value.tzinfo is None:  # stored naive means UTC here
        value = value.replace(tzinfo=UTC)
    return value.astimezone(BEIJING)


def bj(value: datetime | date | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored time shown in Beijing time (a date is shown as it is)."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return to_beijing(value).strftime(fmt)
    return value.strftime("%Y-%m-%d")


def minutes_since(value: datetime | None, now: datetime | None = None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0, int((now - value).total_seconds() // 60))


# --- the favicon ------------------------------------------------------------------------------


def _favicon() -> Response:
    return redirect(url_for("static", filename="favicon.svg"), code=301)


def init_app(app: Flask) -> None:
    app.before_request(page_actor)
    app.add_url_rule("/favicon.ico", "favicon", _favicon)
    app.jinja_env.globals.update(label=label_for, labels_of=labels_of, minutes_since=minutes_since)
    app.jinja_env.filters["bj"] = bj
