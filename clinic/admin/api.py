"""Administrators' endpoints: the audit chain check."""

from __future__ import annotations

from clinic.core import audit
from clinic.core.api import ApiRouter, Principal, ResponseModel
from clinic.core.db import db
from identity.models import Institution

router = ApiRouter("admin")


class ChainOut(ResponseModel):
    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None


@router.get("/audit/verify", summary="Recompute the audit trail's hash chain", response=ChainOut, roles=["admin"])
def audit_verify(principal: Principal) -> ChainOut:
    report = audit.verify_chain(db.session())
    audit.record(db.session(), "audit.verified", detail={"ok": report.ok, "entries": report.entries})
    return ChainOut(ok=report.ok, entries=report.entries, first_broken=report.first_broken, reason=report.reason)


class HealthOut(ResponseModel):
    ok: bool
    database: str
    institution: bool


@router.get(
    "/health/db",
    summary="Liveness with one indexed database read (the institution by primary key); public",
    response=HealthOut,
    auth="none",
)
def health_db() -> HealthOut:
    session = db.session()
    found = session.get(Institution, 1) is not None
    return HealthOut(ok=True, database=session.get_bind().dialect.name, institution=found)
