"""Administrators' endpoints: the audit log's checks, checkpoint and proofs (API.md "Audit
checkpoints and proofs"), and the database health probe."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from flask import Response
from pydantic import Field

from clinic.admin import services
from clinic.core import audit, auditlog
from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel

router = ApiRouter("admin")


class ChainOut(ResponseModel):
    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None
    checkpoint_size: int | None = Field(default=None, description="The newest signed checkpoint the check reached")


@router.get(
    "/audit/verify",
    summary="Check the audit log from the last verified checkpoint on (entries, signatures, checkpoints)",
    response=ChainOut,
    roles=["admin"],
)
def audit_verify(principal: Principal) -> ChainOut:
    report = services.verify_audit_log()
    return ChainOut(
        ok=report.ok,
        entries=report.entries,
        first_broken=report.first_broken,
        reason=report.reason,
        checkpoint_size=report.checkpoint_size,
    )


@router.get(
    "/audit/checkpoint",
    summary="The latest signed checkpoint of the audit log (transparency-dev checkpoint text)",
    raw_response="text/plain",
    roles=["admin", "regulator"],
    errors={404: ["not_found"]},
)
def audit_checkpoint(principal: Principal) -> Response:
    cp = services.latest_checkpoint()
    return Response(cp.note, mimetype="text/plain", headers={"Cache-Control": "no-store"})


class InclusionQuery(RequestModel):
    seq: int = Field(ge=1, description="The entry's sequence number (leaf index + 1)")
    tree_size: int = Field(ge=1, description="The size of the tree (a checkpoint's size)")


class InclusionOut(ResponseModel):
    leaf_index: int
    tree_size: int
    hashes: list[str] = Field(description="RFC 6962 audit path, base64, leaf side first")


class ConsistencyQuery(RequestModel):
    first: int = Field(ge=1)
    second: int = Field(ge=1)


class ConsistencyOut(ResponseModel):
    hashes: list[str] = Field(description="RFC 6962 consistency proof, base64")


@router.get(
    "/audit/proof/inclusion",
    summary="Inclusion proof of one entry in a tree of the given size",
    query=InclusionQuery,
    response=InclusionOut,
    roles=["admin", "regulator"],
    errors={422: ["invalid"]},
)
def audit_inclusion(query: InclusionQuery, principal: Principal) -> InclusionOut:
    proof = services.inclusion_proof(query.seq, query.tree_size)
    return InclusionOut(leaf_index=query.seq - 1, tree_size=query.tree_size, hashes=[auditlog.b64(h) for h in proof])


@router.get(
    "/audit/proof/consistency",
    summary="Consistency proof between two tree sizes (the second extends the first)",
    query=ConsistencyQuery,
    response=ConsistencyOut,
    roles=["admin", "regulator"],
    errors={422: ["invalid"]},
)
def audit_consistency(query: ConsistencyQuery, principal: Principal) -> ConsistencyOut:
    proof = services.consistency_proof(query.first, query.second)
    return ConsistencyOut(hashes=[auditlog.b64(h) for h in proof])


class AuditEntryProofOut(ResponseModel):
    seq: int
    leaf_index: int
    at: datetime
    actor_id: str | None
    actor_role: str
    action: str
    subject_type: str | None
    subject_id: str | None
    detail: dict[str, Any]
    client_ip: str | None
    canonical: str = Field(description="The canonical entry bytes (UTF-8) the leaf hash covers")
    leaf_hash: str = Field(description="base64 SHA-256(0x00 ‖ canonical)")
    sig: str | None = Field(description="The log's Ed25519 signature on (origin, seq, leaf hash), base64")


@router.get(
    "/audit/entries/<int:seq>",
    summary="One sequenced audit entry with its canonical bytes and leaf hash",
    response=AuditEntryProofOut,
    roles=["admin", "regulator"],
    errors={404: ["not_found"]},
)
def audit_entry(seq: int, principal: Principal) -> AuditEntryProofOut:
    entry = services.audit_entry(seq)
    content = entry.content()
    return AuditEntryProofOut(
        seq=entry.seq,
        leaf_index=entry.seq - 1,
        at=entry.at,
        actor_id=entry.actor_id,
        actor_role=entry.actor_role,
        action=entry.action,
        subject_type=entry.subject_type,
        subject_id=entry.subject_id,
        detail=entry.detail,
        client_ip=entry.client_ip,
        canonical=audit.canonical(content).decode(),
        leaf_hash=base64.b64encode(audit.leaf_of(content)).decode(),
        sig=entry.sig,
    )


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
    probe = services.health()
    return HealthOut(ok=True, database=probe.database, institution=probe.institution)
