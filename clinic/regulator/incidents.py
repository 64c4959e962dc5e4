"""Data-security incidents and clinical adverse events (2018 measures Art. 20): recording one
(which may stop all online services), and the SMS that tells the regulator contact right
after the commit, through the outbox, followed until it goes through.

One function each: load, apply the rules, change state, audit, flush — never commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from clinic.core import audit, jobs
from clinic.core.audit import AuditEntry
from clinic.core.config import settings
from clinic.core.db import db, utcnow
from clinic.core.errors import Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.notifications.models import SmsMessage
from clinic.regulator import notify
from clinic.regulator.models import Incident, IncidentKind, Severity
from identity import services as identity
from identity.models import Institution, Role


@dataclass(frozen=True)
class IncidentReport:
    kind: IncidentKind
    severity: Severity
    what: str
    scope: str
    found_at: datetime
    suspend: bool = False


def record_incident(who: Principal, report: IncidentReport) -> Incident:
    """Record an incident; the configured regulator contact is told by SMS right after the
    commit (2018 measures Art. 20), through the outbox: the SMS is never sent for an incident
    that was not recorded, and an outage is retried until it goes through. A clinical
    adverse event may stop all online services."""
    session = db.session()
    admin = identity.get_account(who.account_id)
    if admin.role != Role.ADMIN:
        raise Forbidden("Only administrators record incidents.")
    kind, severity = report.kind, report.severity
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
        from clinic.visits import service_switch

        service_switch.set_suspension(who, True, f"Adverse event {incident.id}: {report.what[:200]}")
        incident.suspension_triggered = True
    _queue_regulator_notice(incident)
    session.flush()
    return incident


NOTICE_JOB = "incident.notify_regulator"
NOTICE_SMS_KIND = "regulator_incident"  # the SmsMessage kind of the SMS to the regulator


class NoticeNotSent(Exception):
    """The SMS to the regulator did not go out this time; the outbox tries again."""


def _regulator_contact() -> str:
    return (settings().REGULATOR_CONTACT_PHONE or "").strip()


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


def _stored_notice(incident_id: uuid.UUID, sms_id: object = None) -> SmsMessage | None:
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


def get_incident(incident_id: uuid.UUID) -> Incident:
    incident = db.session.get(Incident, incident_id)
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
