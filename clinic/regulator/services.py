"""Use cases of the regulators' interface, retention, incidents and key operations.

One function each: load, apply the rules, change state, audit, flush — never commit
(the request or the CLI command's unit of work commits).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import LargeBinary, Table, delete, func, select, type_coerce, update

from clinic.core import audit, crypto, jobs, storage
from clinic.core.audit import AuditEntry
from clinic.core.db import Base, as_uuid, db, utcnow
from clinic.core.errors import Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.notifications.models import SmsMessage
from clinic.regulator import fhir, notify, retention, rules
from clinic.regulator.models import Incident, IncidentKind, RegulatorAccess, Severity
from clinic.visits.models import Visit, VisitMessage
from identity import face_services, tokens
from identity import services as identity
from identity.models import Account, FaceEnrollment, Institution, Patient, Role


class ScopeRequired(Forbidden):
    code = "scope_required"
    default_message = (
        "The regulators' data interface needs a scoped token: POST /api/v1/regulator/token with "
        '{"scope": ["read:deidentified"]} (or "read:identified" where allowed) using your login token.'
    )


class ScopeNotAllowed(Forbidden):
    code = "scope_not_allowed"


# --- scopes and tokens ---------------------------------------------------------------


def allowed_scopes(account_id: uuid.UUID) -> list[str]:
    row = db.session.get(RegulatorAccess, account_id)
    return list(row.scopes) if row is not None else list(rules.DEFAULT_SCOPES)


def set_regulator_scopes(account: Account, scopes: list[str]) -> RegulatorAccess:
    """An administrator (or the CLI) sets what a regulator account may ask for."""
    session = db.session()
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
    ttl = int(current_app.config.get("REGULATOR_TOKEN_SECONDS") or rules.SCOPED_TOKEN_SECONDS)
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


# --- FHIR reads ------------------------------------------------------------------------


def read_resources(
    resource_type: str,
    who: Principal,
    since: str | None,
    until: str | None,
    page: int,
    base_url: str,
    self_url: str,
) -> str:
    """One page of one resource type as a validated FHIR searchset Bundle (JSON); audited."""
    session = db.session()
    scopes = token_scopes(who)
    source = fhir.source_for(resource_type)
    if source is None:
        raise NotFound(f"Unknown resource type {resource_type!r}; one of: {', '.join(fhir.RESOURCE_TYPES)}.")
    max_days = int(current_app.config.get("REGULATOR_MAX_WINDOW_DAYS") or rules.MAX_WINDOW_DAYS)
    try:
        window = rules.parse_window(since, until, utcnow(), max_days)
    except rules.WindowError as exc:
        raise Invalid(str(exc), fields=[{"loc": "since/until", "message": str(exc)}]) from None
    ctx = fhir.FhirContext(session=session, window=window, scopes=scopes, base_url=base_url)
    total = source.count(ctx)
    try:
        info = rules.page_info(page, total)
    except rules.PageOutOfRange as exc:
        raise NotFound(str(exc)) from None
    resources = source.page(ctx, info.offset, info.size)
    bundle = fhir.bundle(ctx, resource_type, resources, info, self_url)
    audit.record(
        session,
        "regulator.read",
        subject_type="fhir",
        subject_id=resource_type,
        detail={
            "resource": resource_type,
            **window.as_dict(),
            "page": info.page,
            "scope": list(scopes),
            "count": len(resources),
            "total": total,
        },
    )
    return fhir.to_json(bundle)


# --- the audit trail for administrators ----------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    subject: str | None = None
    action: str | None = None
    since: str | None = None
    until: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


def _audit_query(f: AuditFilter) -> Any:
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


# --- incidents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentReport:
    kind: str
    severity: str
    what: str
    scope: str
    found_at: datetime
    suspend: bool = False


def record_incident(admin_id: str, report: IncidentReport) -> Incident:
    """Record an incident; the configured regulator contact is told by SMS right after the
    commit (2018 measures Art. 20), through the outbox: the SMS is never sent for an incident
    that was not recorded, and an outage is retried until it goes through. A clinical
    adverse event may stop all online services."""
    session = db.session()
    admin = identity.get_account(admin_id)
    if admin.role != Role.ADMIN:
        raise Forbidden("Only administrators record incidents.")
    kind, severity = IncidentKind(report.kind), Severity(report.severity)
    found_at = report.found_at
    if found_at.tzinfo is None:
        raise Invalid("'found_at' needs a time-zone offset (RFC 3339).")
    if found_at > utcnow():
        raise Invalid("'found_at' is in the future.")
    if report.suspend and kind != IncidentKind.ADVERSE_EVENT:
        raise Invalid(
            "Only a clinical adverse event stops the service from here; "
            "for anything else use POST /api/v1/admin/suspension.",
            code="suspension_not_applicable",
        )
    incident = Incident(
        kind=kind,
        severity=severity,
        what=report.what,
        scope=report.scope,
        found_at=found_at,
        reported_by=admin.id,
        reported_at=utcnow(),
        suspension_triggered=False,
        detail={},
    )
    session.add(incident)
    session.flush()
    audit.record(
        session,
        "incident.recorded",
        subject_type="incident",
        subject_id=incident.id,
        detail={"kind": kind.value, "severity": severity.value, "found_at": found_at, "scope": report.scope},
    )
    if report.suspend:
        from clinic.visits import services as visits

        visits.set_suspension(admin_id, True, f"Adverse event {incident.id}: {report.what[:200]}")
        incident.suspension_triggered = True
    _queue_regulator_notice(incident)
    session.flush()
    return incident


NOTICE_JOB = "incident.notify_regulator"
NOTICE_SMS_KIND = "regulator_incident"  # the SmsMessage kind of the SMS to the regulator


class NoticeNotSent(Exception):
    """The SMS to the regulator did not go out this time; the outbox tries again."""


def _regulator_contact() -> str:
    return str(current_app.config.get("REGULATOR_CONTACT_PHONE") or "").strip()


def _queue_regulator_notice(incident: Incident) -> None:
    """Write the SMS to the regulator (its text and number are the record of what the regulator
    was told) and put it in the outbox; without a configured contact, record the gap."""
    session = db.session()
    contact = _regulator_contact()
    if not contact:
        incident.notification_error = "no regulator contact configured (REGULATOR_CONTACT_PHONE)"
        audit.record(
            session,
            "incident.notification_skipped",
            subject_type="incident",
            subject_id=incident.id,
            detail={"reason": incident.notification_error},
        )
        return
    message = _notice_message(incident, contact)
    jobs.enqueue(session, NOTICE_JOB, {"incident_id": str(incident.id), "sms_id": str(message.id)})


def _notice_message(incident: Incident, contact: str) -> SmsMessage:
    session = db.session()
    message = SmsMessage(
        kind=NOTICE_SMS_KIND,
        subject_type="incident",
        subject_id=incident.id,
        to_phone=contact,
        body=_notice_body(incident),
        status="queued",
        created_at=utcnow(),
    )
    session.add(message)
    session.flush()
    return message


def _stored_notice(incident_id: uuid.UUID, sms_id: Any = None) -> SmsMessage | None:
    session = db.session()
    if sms_id:
        found = session.get(SmsMessage, uuid.UUID(str(sms_id)))
        if found is not None:
            return found
    return session.scalars(
        select(SmsMessage)
        .where(
            SmsMessage.subject_type == "incident",
            SmsMessage.subject_id == incident_id,
            SmsMessage.kind == NOTICE_SMS_KIND,
        )
        .order_by(SmsMessage.created_at.desc())
        .limit(1)
    ).first()


_SEVERITY_ZH = {Severity.LOW: "低", Severity.MEDIUM: "中", Severity.HIGH: "高", Severity.CRITICAL: "危急"}
_BEIJING = ZoneInfo("Asia/Shanghai")


def _notice_body(incident: Incident) -> str:
    """The SMS to the regulator contact: Chinese, the time in Beijing time, the incident's
    reference for the follow-up report (the regulator reads it on a phone, not in this app)."""
    kind = "数据安全事件" if incident.kind == IncidentKind.DATA_SECURITY else "医疗不良事件"
    found = incident.found_at
    if found.tzinfo is None:  # stored as UTC without a zone (SQLite)
        found = found.replace(tzinfo=UTC)
    inst = db.session.get(Institution, 1)
    name = inst.name if inst is not None and inst.name else "互联网医院"
    return (
        f"【{name}】{kind}（严重程度：{_SEVERITY_ZH[incident.severity]}），"
        f"发现时间 {found.astimezone(_BEIJING):%Y-%m-%d %H:%M}（北京时间）：{incident.what[:300]}"
        f" 影响范围：{incident.scope[:200]} 事件编号：{incident.id}"
    )


def notify_regulator_job(payload: dict[str, Any]) -> None:
    """The outbox handler: send the incident's stored SMS to the number stored with it, once."""
    session = db.session()
    incident = session.get(Incident, uuid.UUID(str(payload["incident_id"])))
    if incident is None:
        raise jobs.PermanentJobError("the incident does not exist")
    if incident.regulator_notified_at is not None:
        return  # a repeated delivery of the job: the regulator was told already
    message = _stored_notice(incident.id, payload.get("sms_id"))
    if message is None:  # queued before the text was kept with the incident: keep it now
        contact = _regulator_contact()
        if not contact:
            raise jobs.PermanentJobError("no regulator contact configured (REGULATOR_CONTACT_PHONE)")
        message = _notice_message(incident, contact)
    sent = notify.send_sms(message.to_phone, message.body)
    if not sent.ok:
        raise NoticeNotSent(sent.error or "the SMS was not accepted")
    now = utcnow()
    message.status = "sent" if sent.channel == "twilio" else "logged"
    message.provider_ref, message.sent_at = sent.reference, now
    detail = {"to": notify.mask_phone(message.to_phone), "channel": sent.channel, "reference": sent.reference}
    incident.regulator_notified_at, incident.notification_error = now, None
    audit.record(session, "incident.regulator_notified", subject_type="incident", subject_id=incident.id, detail=detail)


def notice_failed(payload: dict[str, Any], error: str, final: bool) -> None:
    """A try failed: the incident says so (and whether the outbox gave up), audited."""
    session = db.session()
    incident = session.get(Incident, uuid.UUID(str(payload["incident_id"])))
    if incident is None:
        return
    incident.notification_error = ("gave up: " if final else "will retry: ") + error
    message = _stored_notice(incident.id, payload.get("sms_id"))
    if final and message is not None and message.status == "queued":
        message.status = "failed"
    audit.record(
        session,
        "incident.notification_failed",
        subject_type="incident",
        subject_id=incident.id,
        detail={"error": error, "final": final},
    )


def register_jobs() -> None:
    jobs.register(NOTICE_JOB, notify_regulator_job, on_failure=notice_failed)


def list_incidents(limit: int = 100) -> list[Incident]:
    return list(db.session.scalars(select(Incident).order_by(Incident.reported_at.desc()).limit(limit)))


def get_incident(incident_id: str | uuid.UUID) -> Incident:
    key = as_uuid(incident_id)
    incident = db.session.get(Incident, key) if key is not None else None
    if incident is None:
        raise NotFound("No such incident.")
    return incident


@dataclass(frozen=True)
class RegulatorNotice:
    """Following the SMS to the regulator: what it said, to which number (masked), when,
    and how far it got. `state` is one of NOTICE_STATES."""

    state: str
    text: str | None
    to: str | None
    queued_at: datetime | None
    sent_at: datetime | None
    reference: str | None
    failed_tries: int
    last_failure_at: datetime | None


# queued: in the outbox, not tried yet · retrying: tried, failed, tried again later ·
# sent: accepted by the SMS provider (its reference kept) · logged: written to the app log
# (SMS_BACKEND=log, development: nothing left the building) · failed: the outbox gave up ·
# not_configured: no regulator contact, nothing sent · not_kept: sent before texts were kept
NOTICE_STATES = ("queued", "retrying", "sent", "logged", "failed", "not_configured", "not_kept")


def regulator_notice(incident: Incident) -> RegulatorNotice:
    session = db.session()
    failures = session.scalars(
        select(AuditEntry.at)
        .where(
            AuditEntry.subject_type == "incident",
            AuditEntry.subject_id == str(incident.id),
            AuditEntry.action == "incident.notification_failed",
        )
        .order_by(AuditEntry.seq)
    ).all()
    message = _stored_notice(incident.id)
    if message is None:
        if incident.regulator_notified_at is not None:
            state = "not_kept"
        elif incident.notification_error and "REGULATOR_CONTACT_PHONE" in incident.notification_error:
            state = "not_configured"
        else:
            state = "failed" if (incident.notification_error or "").startswith("gave up") else "queued"
        return RegulatorNotice(
            state,
            None,
            None,
            None,
            incident.regulator_notified_at,
            None,
            len(failures),
            failures[-1] if failures else None,
        )
    settled = message.status in ("sent", "logged", "failed")
    state = message.status if settled else ("retrying" if failures else "queued")
    return RegulatorNotice(
        state=state,
        text=message.body,
        to=notify.mask_phone(message.to_phone),
        queued_at=message.created_at,
        sent_at=message.sent_at,
        reference=message.provider_ref,
        failed_tries=len(failures),
        last_failure_at=failures[-1] if failures else None,
    )


# --- retention -------------------------------------------------------------------------------


@dataclass
class PurgeBatch:
    messages: int
    images: int
    visits: list[str]
    files: list[str]
    last_id: uuid.UUID | None = None


def purgeable_message_count(now: datetime) -> int:
    cut = retention.cutoff(now)
    return int(
        db.session.scalar(
            select(func.count(VisitMessage.id))
            .join(Visit, Visit.id == VisitMessage.visit_id)
            .where(Visit.closed_at.is_not(None), Visit.closed_at <= cut)
        )
        or 0
    )


def purge_message_batch(now: datetime, batch_size: int, dry_run: bool, after: uuid.UUID | None = None) -> PurgeBatch:
    """Delete (or, dry, only list) one batch of messages whose visit closed more than
    3 years before `now`. Only VisitMessage rows are ever deleted here; the files of
    their images are returned so the caller removes them after the commit."""
    session = db.session()
    cut = retention.cutoff(now)
    q = (
        select(VisitMessage.id, VisitMessage.visit_id, VisitMessage.image_path, Visit.closed_at)
        .join(Visit, Visit.id == VisitMessage.visit_id)
        .where(Visit.closed_at.is_not(None), Visit.closed_at <= cut)
        .order_by(VisitMessage.id)
        .limit(batch_size)
    )
    if after is not None:
        q = q.where(VisitMessage.id > after)
    rows = [
        r
        for r in session.execute(q)
        if retention.purgeable("message", r.closed_at, now)  # the pure rule has the last word
    ]
    ids = [r.id for r in rows]
    files = [r.image_path for r in rows if r.image_path]
    visits = sorted({str(r.visit_id) for r in rows})
    if ids and not dry_run:
        session.execute(delete(VisitMessage).where(VisitMessage.id.in_(ids)))
        audit.record(
            session,
            "retention.purged",
            subject_type="visit_messages",
            detail={
                "messages": len(ids),
                "images": len(files),
                "visits": visits,
                "cutoff": rules.rfc3339(cut),
                "rule": f"communication kept {retention.COMMUNICATION_YEARS} years after the visit closed",
            },
        )
        session.flush()
    return PurgeBatch(len(ids), len(files), visits, files, ids[-1] if ids else None)


def remove_stored_files(paths: list[str]) -> int:
    """Remove message images from private storage (after the deleting commit)."""
    removed = 0
    base = storage.root().resolve()
    for rel in paths:
        path = (base / rel).resolve()
        if base not in path.parents:
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


# --- encryption keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedColumns:
    table: Table
    columns: list[str]

    @property
    def name(self) -> str:
        return self.table.name


def encrypted_columns() -> list[EncryptedColumns]:
    """Every column of every model whose type is EncryptedText/EncryptedBytes."""
    out = []
    for table in Base.metadata.sorted_tables:
        cols = [c.name for c in table.columns if isinstance(c.type, crypto.EncryptedText | crypto.EncryptedBytes)]
        if cols:
            out.append(EncryptedColumns(table, cols))
    return out


def count_rows(target: EncryptedColumns) -> int:
    return int(db.session.scalar(select(func.count()).select_from(target.table)) or 0)


def rotate_rows(target: EncryptedColumns, offset: int, limit: int) -> int:
    """Re-encrypt one batch of a table's encrypted columns with the newest key.

    The raw ciphertext is read and written as plain bytes (no decrypt-encrypt round
    trip through the column type); MultiFernet.rotate decrypts with whichever key
    fits and encrypts with the first one."""
    session = db.session()
    table = target.table
    pk = list(table.primary_key.columns)
    raw_cols = [type_coerce(table.c[name], LargeBinary).label(name) for name in target.columns]
    rows = session.execute(select(*pk, *raw_cols).order_by(*pk).offset(offset).limit(limit)).all()
    for row in rows:
        values = {}
        for name in target.columns:
            raw = getattr(row, name)
            if raw is not None:
                values[name] = type_coerce(crypto.rotate(bytes(raw)), LargeBinary)
        if values:
            cond = [c == getattr(row, c.name) for c in pk]
            session.execute(update(table).where(*cond).values(values))
    return len(rows)


def encrypted_files() -> list[Path]:
    """Files encrypted with the field keys: physicians' reference face photos."""
    folder = face_services.face_photo_dir()
    names = db.session.scalars(select(FaceEnrollment.photo_file))
    return [folder / n for n in names if (folder / n).exists()]


def rotate_file(path: Path) -> None:
    data = crypto.rotate(path.read_bytes())
    tmp = path.with_suffix(path.suffix + ".rotating")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def rehash_batch(offset: int, limit: int) -> int:
    """Recompute the lookup hashes (ID numbers, phones) with the current LOOKUP_KEY.

    Needed after LOOKUP_KEY changes: the clear text is decrypted from the encrypted
    columns and hashed again. Phone codes in flight (10 minutes) simply expire."""
    session = db.session()
    patients = session.scalars(select(Patient).order_by(Patient.id).offset(offset).limit(limit)).all()
    for p in patients:
        p.id_number_hash = crypto.lookup_hash(p.id_number)
    accounts = session.scalars(select(Account).order_by(Account.id).offset(offset).limit(limit)).all()
    for a in accounts:
        a.phone_hash = crypto.lookup_hash(a.phone) if a.phone else None
    session.flush()
    return max(len(patients), len(accounts))


def rehash_total() -> int:
    s = db.session
    return max(
        int(s.scalar(select(func.count()).select_from(Patient)) or 0),
        int(s.scalar(select(func.count()).select_from(Account)) or 0),
    )
