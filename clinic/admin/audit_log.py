"""The audit viewer for administrators: filter by person, subject (e.g. a patient), action
and time; export as CSV; the audit log's check shown (incremental: clinic.core.audit_verify). A page (desktop) and its API twin
`GET /api/v1/audit`. Looking at or exporting the trail is itself audited."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, abort, render_template, request
from flask_babel import lazy_gettext as _l
from pydantic import Field

from clinic.admin import services
from clinic.admin.labels import FAMILY, action_words
from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.audit import AuditEntry
from clinic.core.errors import DomainError
from clinic.core.pages import BEIJING, admin_page, label_for
from clinic.core.text import csv_cell
from clinic.core.web import handle_refusal

router = ApiRouter("audit")
bp = Blueprint("admin_audit", __name__, template_folder="templates", url_prefix="/admin")


class AuditQuery(RequestModel):
    actor: str | None = Field(default=None, max_length=64, description="Who acted (account id)")
    subject: str | None = Field(default=None, max_length=64, description="What it was about (e.g. a patient id)")
    action: str | None = Field(
        default=None, max_length=80, description="Exact action, or a family ending in '.' or '*' (e.g. 'visit.')"
    )
    since: str | None = Field(default=None, max_length=40, description="RFC 3339, inclusive")
    until: str | None = Field(default=None, max_length=40, description="RFC 3339, exclusive")
    page: int = Field(default=1, ge=1, le=1_000_000)


class AuditEntryOut(ResponseModel):
    seq: int
    at: datetime
    actor_id: str | None
    actor_role: str
    action: str
    subject_type: str | None
    subject_id: str | None
    detail: dict[str, Any]
    client_ip: str | None
    hash: str


class AuditPage(ResponseModel):
    items: list[AuditEntryOut]
    page: int
    pages: int
    total: int


def _filter(q: AuditQuery | dict[str, str]) -> services.AuditFilter:
    data = q.model_dump() if isinstance(q, AuditQuery) else q
    return services.AuditFilter(
        actor=data.get("actor") or None,
        subject=data.get("subject") or None,
        action=data.get("action") or None,
        since=data.get("since") or None,
        until=data.get("until") or None,
    )


@router.get(
    "/audit",
    summary="The audit trail, newest first, filtered by actor, subject, action and time; 50 a page",
    query=AuditQuery,
    response=AuditPage,
    roles=["admin"],
)
def audit_list(query: AuditQuery, principal: Principal) -> AuditPage:
    rows, info = services.search_audit(_filter(query), query.page)
    return AuditPage(
        items=[AuditEntryOut.model_validate(r) for r in rows], page=info.page, pages=info.pages, total=info.total
    )


# --- pages -------------------------------------------------------------------------------------

CSV_FIELDS = [
    "seq",
    "at",
    "actor_id",
    "actor_role",
    "action",
    "subject_type",
    "subject_id",
    "detail",
    "client_ip",
    "hash",  # the entry's RFC 6962 leaf hash (hex)
    "sig",  # the log's signature on (seq, leaf hash), hex: base64 may start with + (a formula)
]


def _args() -> dict[str, str]:
    keys = ("actor", "subject", "action", "since", "until")
    return {k: request.args.get(k, "").strip()[:80] for k in keys}


DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _window(args: dict[str, str]) -> dict[str, str]:
    """The date pickers' days (Beijing) as instants: `until` includes its whole day."""
    out = dict(args)
    for key in ("since", "until"):
        value = out.get(key) or ""
        if DAY.match(value):
            try:
                day = date.fromisoformat(value)
            except ValueError:
                continue
            if key == "until":
                day += timedelta(days=1)
            out[key] = datetime.combine(day, time(0), BEIJING).isoformat()
    return out


def _people() -> list[tuple[str, str]]:
    """Staff and administrators, for the "who" picker (patients are found by record instead)."""
    return [(str(a.id), f"{a.display_name}（{label_for('role', a.role)}）") for a in services.people()]


# Why the check failed, in the reader's language (the API and CLI give the English reason).
CHECK_REASONS = {
    "missing": _l("an entry is missing (deleted, or the log was cut short)"),
    "signature": _l("its content or position is not what the log signed (changed, inserted or moved)"),
    "checkpoint": _l("the entries no longer make the tree the log signed"),
    "kept_checkpoint": _l("the kept checkpoint is not this log's or its signature is not valid"),
    "stored_checkpoint": _l("a stored checkpoint's signature is not valid"),
    "split_view": _l("the log signed two different trees of the same size"),
}


@bp.get("/audit")
@admin_page
def audit_page() -> Any:
    args = _args()
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    chain = services.check_audit_log()
    reason = CHECK_REASONS.get(chain.code or "", _l("the audit log does not match its signed checkpoints"))
    rows: list[AuditEntry] = []
    info = None
    error = None
    try:
        rows, info = services.search_audit(_filter(_window(args)), page)
    except DomainError as err:
        error = handle_refusal(err)
    return render_template(
        "admin/audit.html",
        rows=rows,
        info=info,
        args=args,
        chain=chain,
        reason=reason,
        error=error,
        names=services.readable(rows),
        people=_people(),
        families=FAMILY,
        action_words=action_words,
    )


@bp.get("/audit.csv")
@admin_page
def audit_csv() -> Response:
    args = _args()
    try:
        rows = [
            [
                e.seq,
                e.at.isoformat(),
                e.actor_id or "",
                e.actor_role,
                e.action,
                e.subject_type or "",
                e.subject_id or "",
                json.dumps(e.detail, ensure_ascii=False, sort_keys=True),
                e.client_ip or "",
                e.hash,
                base64.b64decode(e.sig).hex() if e.sig else "",
            ]
            for e in services.export_audit(_filter(_window(args)))
        ]
    except DomainError as err:
        abort(422, handle_refusal(err))

    def generate() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        buf.write("\ufeff")  # Excel reads UTF-8 (Chinese text) with a BOM
        writer.writerow(CSV_FIELDS)
        for row in rows:
            writer.writerow([csv_cell(cell) for cell in row])  # ids from URLs: never a formula
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Response(
        generate(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'},
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
