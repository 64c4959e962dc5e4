"""The notification kernel: `notify(...)` tells a person about a change, in the app and by SMS.

Domains call `notify` beside the state change it is about (same transaction, never
committing): it writes an `InboxNotification` for the account (the notification centre,
with the unread count in the header) and, unless told not to, an `SmsMessage` put in the
outbox (job kind "sms"), whose text ends with a short link to the page it is about
(`/n/<code>`, which opens that page after login and marks the notification read).
Nothing is sent if the transaction rolls back; a committed one cannot lose its SMS.

A `quiet_for` window keeps SMS storms away: no second SMS of the same kind about the
same subject to the same account within it (the in-app notification is still written).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from clinic.core import jobs
from clinic.core.config import settings
from clinic.core.db import db, utcnow
from clinic.core.errors import NotFound
from clinic.core.principal import Principal
from clinic.notifications import texts
from clinic.notifications.models import InboxNotification, SmsMessage
from identity.models import Account

log = logging.getLogger("clinic.sms")

SMS_JOB = "sms"
SHORT_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"


def _short_code() -> str:
    return "".join(secrets.choice(SHORT_ALPHABET) for _ in range(10))


def short_link(code: str) -> str:
    return f"{_public_base()}/n/{code}"


def _sms_locale() -> str:
    return settings().BABEL_DEFAULT_LOCALE or "zh_CN"


def _recently_texted(session: Session, account_id: uuid.UUID, kind: str, subject_id: str, window: timedelta) -> bool:
    since = utcnow() - window
    row = session.scalars(
        select(InboxNotification.id)
        .where(
            InboxNotification.account_id == account_id,
            InboxNotification.kind == kind,
            InboxNotification.subject_id == subject_id,
            InboxNotification.sms_id.is_not(None),
            InboxNotification.created_at >= since,
        )
        .limit(1)
    ).first()
    return row is not None


def notify(
    session: Session,
    *,
    account_id: uuid.UUID | None,
    kind: str,
    link: str,
    subject_type: str,
    subject_id: uuid.UUID,
    phone: str | None = None,
    sms: bool = True,
    quiet_for: timedelta | None = None,
    **params: object,
) -> InboxNotification | None:
    """Tell the account holder: one in-app notification and (usually) one SMS with a short link.

    `link` is the app path of the page the notification is about (e.g. /visits/<id>).
    `phone` overrides the account's own number (e.g. a delivery's recipient). Without an
    account (a recipient known only by phone) there is only the SMS, linking to the page.
    """
    if kind not in texts.TEXTS:
        raise ValueError(f"unknown notification kind {kind!r}")
    if account_id is None:
        if phone:
            _queue_sms(session, kind, subject_type, subject_id, phone, params, short_link_to(link))
        return None
    subject = str(subject_id)
    params = {k: (v if isinstance(v, int | float) else str(v)) for k, v in params.items()}
    params.setdefault("rx", subject[:8])
    note = InboxNotification(
        account_id=account_id,
        kind=kind,
        params=params,
        link=link,
        subject_type=subject_type,
        subject_id=subject,
        short_code=_short_code(),
    )
    quiet = quiet_for is not None and _recently_texted(session, account_id, kind, subject, quiet_for)
    if sms and not quiet:
        to = phone or _account_phone(session, account_id)
        if to:
            message = _queue_sms(session, kind, subject_type, subject_id, to, params, short_link(note.short_code))
            note.sms_id = message.id
        else:
            log.info("no phone for %s about %s %s: SMS not sent", kind, subject_type, subject)
    session.add(note)
    session.flush()
    return note


def _queue_sms(
    session: Session,
    kind: str,
    subject_type: str,
    subject_id: uuid.UUID,
    to: str,
    params: dict[str, object],
    link: str,
) -> SmsMessage:
    params = {k: (v if isinstance(v, int | float) else str(v)) for k, v in params.items()}
    params.setdefault("rx", str(subject_id)[:8])
    message = SmsMessage(
        kind=kind,
        subject_type=subject_type,
        subject_id=subject_id,
        to_phone=to,
        body=texts.sms_body(kind, _sms_locale(), params, link),
    )
    session.add(message)
    session.flush()
    jobs.enqueue(session, SMS_JOB, {"notification_id": str(message.id)})
    return message


def short_link_to(path: str) -> str:
    return f"{_public_base()}{path}"


def _public_base() -> str:
    return (settings().PUBLIC_BASE_URL or "").rstrip("/")


def _account_phone(session: Session, account_id: uuid.UUID) -> str | None:
    account = session.get(Account, account_id)
    return account.phone if account is not None else None


# --- the notification centre ----------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    id: uuid.UUID
    kind: str
    text: str
    link: str
    at: datetime
    read: bool


def shown(note: InboxNotification, locale: str) -> Shown:
    return Shown(
        note.id,
        note.kind,
        texts.render(note.kind, locale, note.params),
        note.link,
        note.created_at,
        note.read_at is not None,
    )


def inbox(account_id: uuid.UUID, limit: int = 100) -> list[InboxNotification]:
    """The account's notifications, newest first."""
    return list(
        db.session.scalars(
            select(InboxNotification)
            .where(InboxNotification.account_id == account_id)
            .order_by(InboxNotification.created_at.desc(), InboxNotification.id)
            .limit(limit)
        )
    )


def unread_count(account_id: uuid.UUID) -> int:
    return int(
        db.session.scalar(
            select(func.count())
            .select_from(InboxNotification)
            .where(InboxNotification.account_id == account_id, InboxNotification.read_at.is_(None))
        )
        or 0
    )


def _own(who: Principal, note: InboxNotification | None) -> InboxNotification:
    if note is None or note.account_id != who.account_id:
        raise NotFound()  # another person's notifications are never revealed
    return note


def mark_read(who: Principal, notification_id: uuid.UUID) -> InboxNotification:
    note = _own(who, db.session.get(InboxNotification, notification_id))
    if note.read_at is None:
        note.read_at = utcnow()
    return note


def mark_all_read(who: Principal) -> None:
    db.session.execute(
        update(InboxNotification)
        .where(InboxNotification.account_id == who.account_id, InboxNotification.read_at.is_(None))
        .values(read_at=utcnow())
    )


def by_short_code(code: str) -> InboxNotification | None:
    return db.session.scalars(select(InboxNotification).where(InboxNotification.short_code == code)).first()


def open_short_link(who: Principal, code: str) -> str:
    """Where a short link leads (its notification marked read); 404 for another person's."""
    note = _own(who, by_short_code(code))
    if note.read_at is None:
        note.read_at = utcnow()
    return note.link


# --- the SMS job -------------------------------------------------------------------------


def send_sms_job(payload: dict[str, Any]) -> None:
    """The outbox handler: send (or log) one SmsMessage, once it is committed."""
    from twilio.base.exceptions import TwilioRestException

    from clinic.core.twilio import make_client

    note = db.session.get(SmsMessage, uuid.UUID(payload["notification_id"]))
    if note is None:
        raise jobs.PermanentJobError("the SMS does not exist")
    if note.status != "queued":
        return
    cfg = settings()
    if cfg.SMS_BACKEND == "twilio":
        client = make_client(cfg.TWILIO_ACCOUNT_SID, cfg.TWILIO_AUTH_TOKEN, cfg.TWILIO_BASE_URL)
        try:
            msg = client.messages.create(to=note.to_phone, from_=cfg.TWILIO_SMS_FROM or None, body=note.body)
        except TwilioRestException as exc:
            if 400 <= int(exc.status or 0) < 500 and exc.status != 429:
                raise jobs.PermanentJobError(f"Twilio refused the message: {exc.code} {exc.msg}") from exc
            raise
        note.status, note.provider_ref = "sent", str(msg.sid)
    else:
        masked = "*" * max(len(note.to_phone) - 4, 0) + note.to_phone[-4:]
        log.info("SMS (log backend) to %s: %s", masked, note.body)
        note.status = "logged"
    note.sent_at = utcnow()


def register_jobs() -> None:
    jobs.register(SMS_JOB, send_sms_job)
