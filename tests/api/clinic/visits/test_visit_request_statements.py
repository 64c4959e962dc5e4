"""What POST /api/v1/visits asks the database (issue 18, performance): the busiest write of
the clinic reads every fact it is judged on in one statement, the open visit of the
diagnosis included, and writes the visit and its audit entry; a request refused because
a visit is open writes only the refusal's audit entry. A later rule once added a query of its own for the open visit (an extra round
trip, and a generic plan that scanned the whole visits table); this keeps it in the gate."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from clinic.core.db import db
from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    """The statements the request sends (the audit sequencer, which has its own connection
    and runs after the commit, is held off meanwhile)."""
    seen: list[str] = []
    cfg = app.extensions["auditlog"]
    mode, cfg.mode = cfg.mode, "external"

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
        cfg.mode = mode


def body(p: dict) -> dict:
    return {"patient_id": str(p["reg"].patient.id), "diagnosis_id": str(p["diag"].id), "department": "cardiology"}


def test_a_visit_request_reads_its_gates_in_one_statement_and_writes_two_rows(ctx: Flask, client: FlaskClient) -> None:
    cf.catalog()
    doc = f.staff(Role.PHYSICIAN, department="cardiology")
    p = cf.ready_patient(client, doc)

    with statements(ctx) as first:
        resp = client.post("/api/v1/visits", json=body(p), headers=f.auth(p["token"]))
    assert resp.status_code == 201, resp.get_json()
    reads = [s for s in first if s.startswith("SELECT")]
    writes = [s.split(" (")[0] for s in first if not s.startswith("SELECT")]
    # The token's account, then the gate: one statement with the open visit in it.
    assert len(reads) == 2, reads
    assert "FROM accounts" in reads[0] and "open_visit_id" in reads[1]
    # The open statuses are in the SQL itself, so that a generic plan can use the partial
    # unique index of open visits (bound, they let PostgreSQL's generic plan scan the table).
    assert "visits.status IN ('awaiting_payment', 'waiting', 'in_progress')" in reads[1]
    assert writes == ["INSERT INTO visits", "INSERT INTO audit_pending"]

    with statements(ctx) as again:
        refused = client.post("/api/v1/visits", json=body(p), headers=f.auth(p["token"]))
    assert refused.status_code == 409
    err = refused.get_json()["error"]
    assert err["code"] == "visit_already_open" and err["visit_id"] == resp.get_json()["id"]
    # Refused by the gate alone: no visit written, only the refusal's own audit entry.
    assert len(again) == 3 and "open_visit_id" in again[1], again
    assert again[2].startswith("INSERT INTO audit_pending")
