"""The notification centre page, the short links of SMS, and the header's unread count."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, abort, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_login import current_user

from clinic.core.db import record_id
from clinic.core.errors import NotFound
from clinic.core.pages import page_principal, role_page
from clinic.notifications import services

bp = Blueprint("notifications", __name__, template_folder="templates")
anyone = role_page("patient", "physician", "pharmacist", "admin", "regulator")


def _safe(link: str) -> str:
    return link if link.startswith("/") and not link.startswith("//") else url_for("identity.home")


@bp.get("/notifications")
@anyone
def centre() -> Any:
    locale = str(get_locale() or "zh_CN")
    items = [services.shown(n, locale) for n in services.inbox(page_principal().account_id)]
    return render_template("notifications/centre.html", items=items)


@bp.post("/notifications/<notification_id>/open")
@anyone
def open_one(notification_id: str) -> Any:
    """Marks it read and goes to the page it is about."""
    try:
        note = services.mark_read(page_principal(), record_id(notification_id))
    except NotFound:
        abort(404)
    return redirect(_safe(note.link))


@bp.post("/notifications/read-all")
@anyone
def read_all() -> Any:
    services.mark_all_read(page_principal())
    return redirect(url_for("notifications.centre"))


@bp.get("/n/<code>")
@anyone
def short_link(code: str) -> Any:
    """An SMS's short link: after login, the page the notification is about."""
    try:
        link = services.open_short_link(page_principal(), code)
    except NotFound:
        abort(404)
    return redirect(_safe(link))


@bp.app_context_processor
def _unread() -> dict[str, Any]:
    def unread() -> int:
        if not current_user.is_authenticated or request.blueprint == "api":
            return 0
        return services.unread_count(current_user.id)

    return {"unread_notifications": unread}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
