"""The notification centre's rows: what a person is told in the app, and every SMS sent."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.crypto import EncryptedText
from clinic.core.db import Base, new_id, utcnow


class SmsMessage(Base):
    """Every SMS the clinic sends to a patient (or logs, with SMS_BACKEND=log), and how it went."""

    __tablename__ = "notifications"  # the table's name from when only the pharmacy sent SMS

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    subject_type: Mapped[str] = mapped_column(String(32), default="prescription")
    subject_id: Mapped[uuid.UUID] = mapped_column(index=True)
    to_phone: Mapped[str] = mapped_column(EncryptedText)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | sent | logged
    provider_ref: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class InboxNotification(Base):
    """One thing a person was told, shown in their notification centre until read.

    The text is rendered when read (in the reader's language) from `kind` and `params`;
    `link` is the page it is about; `short_code` makes the SMS's short link.
    """

    __tablename__ = "inbox_notifications"
    __table_args__ = (Index("ix_inbox_notifications_account", "account_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    link: Mapped[str] = mapped_column(String(300))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    short_code: Mapped[str] = mapped_column(String(16), unique=True)
    sms_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("notifications.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]
