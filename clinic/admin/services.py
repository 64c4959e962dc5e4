"""The administrator's use cases: the audit trail (search, export, the log's check, its
checkpoint and proofs), the names and choices the console shows, telling the people concerned
of a decision on a reclaimed ID number, and the database probe.

Each change comes with its audit entry here (looking at or exporting the trail, a check of
the log, are themselves audited); the API (clinic/admin/api.py) and the pages (views.py,
audit_log.py) only translate HTTP and forms to these calls. Changes made from the console
that belong to another package (suspension, incidents, staff accounts, face enrollment, the
condition catalog) are that package's use cases. Never commits: the request does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from clinic.core import audit, audit_verify, auditlog, merkle
from clinic.core.audit import AuditEntry
from clinic.core.db import as_uuid, db
from clinic.core.errors import Invalid, NotFound
from clinic.notifications import notify
from clinic.regulator import rules
from clinic.visits.models import ServiceSwitch
from identity.models import Account, Department, IdentityReclaim, Institution, ReclaimStatus, Role

# --- the audit trail ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    subject: str | None = None
    action: str | None = None
    since: str | None = None
    until: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


def _audit_query(f: AuditFilter) -> Select[AuditEntry]:
    q = select(AuditEntry)
    if f.actor:
        q = q.where(AuditEntry.actor_id == f.actor.strip())
    if f.subject:
        q = q.where(AuditEntry.subject_id == f.subject.strip())
    if f.action:
        action = f.action.strip()
        # "visit." or "visit.*" means every action of that family; otherwise the exact action
        if action.endswith("*") or action.endswith("."):
            q = q.where(AuditEntry.action.startswith(action.rstrip("*"), autoescape=True))
        else:
            q = q.where(AuditEntry.action == action)
    try:
        if f.since:
            q = q.where(AuditEntry.at >= rules.parse_instant(f.since, "since"))
        if f.until:
            q = q.where(AuditEntry.at < rules.parse_instant(f.until, "until"))
    except rules.WindowError as exc:
        raise Invalid(str(exc)) from None
    return q


def search_audit(f: AuditFilter, page: int, size: int = rules.PAGE_SIZE) -> tuple[list[AuditEntry], rules.PageInfo]:
    session = db.session()
    q = _audit_query(f)
    total = int(session.scalar(select(func.count()).select_from(q.subquery())) or 0)
    try:
        info = rules.page_info(page, total, size)
    except rules.PageOutOfRange as exc:
        raise NotFound(str(exc)) from None
    rows = list(session.scalars(q.order_by(AuditEntry.seq.desc()).offset(info.offset).limit(size)))
    audit.record(session, "audit.viewed", detail={"filter": f.as_dict(), "page": page, "count": len(rows)})
    return rows, info


def export_audit(f: AuditFilter) -> Iterator[AuditEntry]:
    """Every matching entry, oldest first (for CSV export); the export itself is audited."""
    session = db.session()
    q = _audit_query(f)
    audit.record(session, "audit.exported", detail={"filter": f.as_dict()})
    yield from session.scalars(q.order_by(AuditEntry.seq).execution_options(yield_per=500))


# --- the audit log: its check, checkpoint and proofs ---------------------------------------------


def check_audit_log() -> audit_verify.Report:
    """The log checked from the last verified checkpoint on (the same cost at 10 k and 10 M entries)."""
    return audit_verify.verify_incremental(db.session().connection(), auditlog.config().verifier)


def verify_audit_log() -> audit_verify.Report:
    """The same check, asked for through the API: audited."""
    report = check_audit_log()
    audit.record(db.session(), "audit.verified", detail={"ok": report.ok, "entries": report.entries})
    return report


def latest_checkpoint() -> auditlog.AuditCheckpoint:
    cp = auditlog.latest_checkpoint(db.session().connection())
    if cp is None:
        raise NotFound("The audit log has no signed checkpoint yet.")
    return cp


def _within(size: int) -> None:
    if size > auditlog.tree_size(db.session().connection()):
        raise Invalid("The tree is not that large yet.", fields=[{"loc": "tree_size", "message": "beyond the log"}])


def inclusion_proof(seq: int, tree_size: int) -> list[bytes]:
    """The RFC 6962 audit path of entry `seq` (1-based) in the tree of `tree_size` entries."""
    if seq > tree_size:
        raise Invalid("The entry is not in a tree that small.", fields=[{"loc": "seq", "message": "beyond tree_size"}])
    _within(tree_size)
    nodes = auditlog.StoredNodes(db.session().connection())
    return merkle.inclusion_proof(nodes, seq - 1, tree_size)


def consistency_proof(first: int, second: int) -> list[bytes]:
    """The RFC 6962 consistency proof that the tree of `second` entries extends that of `first`."""
    if first > second:
        raise Invalid("first must not exceed second.", fields=[{"loc": "first", "message": "greater than second"}])
    _within(second)
    nodes = auditlog.StoredNodes(db.session().connection())
    return merkle.consistency_proof(nodes, first, second)


def audit_entry(seq: int) -> AuditEntry:
    entry = db.session.get(AuditEntry, seq)
    if entry is None:
        raise NotFound("No audit entry has that sequence number (yet).")
    return entry


# --- what the console shows ------------------------------------------------------------------------


def names(ids: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, str]:
    """Accounts' display names by id (those that acted, decided or reported)."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {a.id: a.display_name for a in db.session.scalars(select(Account).where(Account.id.in_(wanted)))}


def readable(rows: list[AuditEntry]) -> dict[str, str]:
    """What a person reads instead of ids in the trail: the names of who acted (and of
    accounts acted on), by the id as the entries carry it."""
    ids = {as_uuid(r.actor_id) for r in rows if r.actor_id}
    ids |= {as_uuid(r.subject_id) for r in rows if r.subject_type == "account"}
    return {str(key): name for key, name in names(ids).items()}


def people() -> list[Account]:
    """Staff and administrators, by role and name (patients are found by record instead)."""
    return list(
        db.session.scalars(
            select(Account).where(Account.role != Role.PATIENT).order_by(Account.role, Account.display_name)
        )
    )


def departments() -> list[tuple[str, str]]:
    """The approved departments as (code, Chinese name), by code."""
    rows = db.session.scalars(select(Department).where(Department.approved.is_(True)).order_by(Department.code))
    return [(d.code, d.name_zh) for d in rows]


def suspension_history(limit: int = 50) -> list[ServiceSwitch]:
    """The suspension switch's changes, newest first."""
    return list(db.session.scalars(select(ServiceSwitch).order_by(ServiceSwitch.changed_at.desc()).limit(limit)))


@dataclass(frozen=True)
class Health:
    database: str
    institution: bool


def health() -> Health:
    """One indexed database read (the institution by primary key) and the dialect answering it."""
    session = db.session()
    found = session.get(Institution, 1) is not None
    return Health(database=session.get_bind().dialect.name, institution=found)


# --- reclaims of an ID number: the decision, told ---------------------------------------------


def tell_reclaim_decision(session: Session, reclaim: IdentityReclaim) -> None:
    """The decision, told: the claimant by SMS (and in the app once they have an account);
    on approval the account that loses the identity too."""
    subject = reclaim.id
    id_number, phone = reclaim.masked_id_number, reclaim.masked_phone
    if reclaim.status == ReclaimStatus.APPROVED:
        notify(
            session,
            account_id=reclaim.new_account_id,
            kind="reclaim_approved",
            link="/",
            subject_type="identity_reclaim",
            subject_id=subject,
            id_number=id_number,
            phone=None,
            mobile=phone,
        )
        if reclaim.old_account_id is not None:
            notify(
                session,
                account_id=reclaim.old_account_id,
                kind="reclaim_lost",
                link="/",
                subject_type="identity_reclaim",
                subject_id=subject,
                id_number=id_number,
            )
    elif reclaim.status == ReclaimStatus.REJECTED:
        notify(
            session,
            account_id=None,
            phone=reclaim.phone,
            kind="reclaim_rejected",
            link="/reclaim",
            subject_type="identity_reclaim",
            subject_id=subject,
            id_number=id_number,
            reason=reclaim.reason,
        )
