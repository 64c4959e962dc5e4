"""Telling a patient about their prescription: through the kernel's `notify(...)`.

The pharmacy decides what to say (the kind and its params) and where it leads (the
prescription's page); the notification centre writes the in-app notification and the
SMS with its short link (clinic/notifications).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from clinic.notifications import notify
from clinic.notifications.models import InboxNotification
from prescriptions.models import Prescription


def prescription_link(prescription_id: uuid.UUID) -> str:
    return f"/prescriptions/{prescription_id}/track"


def tell_patient(
    session: Session, kind: str, prescription_id: uuid.UUID, phone: str | None = None, **params: Any
) -> InboxNotification | None:
    """One notification (and SMS) to the account holder of the prescription."""
    rx = session.get(Prescription, prescription_id)
    return notify(
        session,
        account_id=rx.account_id if rx is not None else None,
        kind=kind,
        link=prescription_link(prescription_id),
        subject_type="prescription",
        subject_id=prescription_id,
        phone=phone,
        **params,
    )
