"""/api/v1/notifications: the signed-in person's notification centre (API.md)."""

from __future__ import annotations

import uuid
from datetime import datetime

from flask_babel import get_locale

from clinic.core.api import ApiRouter, Principal, ResponseModel
from clinic.core.db import record_id
from clinic.notifications import services

router = ApiRouter("notifications")

EVERYONE = ["patient", "physician", "pharmacist", "admin", "regulator"]


class NotificationOut(ResponseModel):
    id: uuid.UUID
    kind: str
    text: str
    link: str
    at: datetime
    read: bool


class NotificationsOut(ResponseModel):
    unread: int
    items: list[NotificationOut]


@router.get(
    "/notifications",
    summary="The caller's notifications, newest first, and how many are unread",
    response=NotificationsOut,
    roles=EVERYONE,
)
def list_notifications(principal: Principal) -> NotificationsOut:
    locale = str(get_locale() or "zh_CN")
    items = [services.shown(n, locale) for n in services.inbox(principal.account_id)]
    return NotificationsOut(
        unread=services.unread_count(principal.account_id),
        items=[NotificationOut(id=s.id, kind=s.kind, text=s.text, link=s.link, at=s.at, read=s.read) for s in items],
    )


class ReadOut(ResponseModel):
    id: uuid.UUID
    read: bool


@router.post(
    "/notifications/<notification_id>/read",
    summary="Mark one of the caller's notifications read",
    response=ReadOut,
    roles=EVERYONE,
)
def read_notification(notification_id: str, principal: Principal) -> ReadOut:
    note = services.mark_read(principal, record_id(notification_id))  # a malformed id: 404, as another's
    return ReadOut(id=note.id, read=True)
