"""The visit room: presence, messages and their images, the video grant, and the patient's
earlier visits as a physician sees them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select, update

from clinic.core import audit, storage
from clinic.core.config import settings
from clinic.core.db import db, get_or_404, utcnow
from clinic.core.errors import Conflict, Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.visits import rules
from clinic.visits.lifecycle import physician_account, physician_name, tell_patient, visit_for
from clinic.visits.models import Visit, VisitMessage, VisitNote
from clinic.visits.rules import VisitStatus
from clinic.visits.sniffing import sniff_upload
from clinic.visits.uploads import spend_upload_quota
from identity.models import Role

# What other domains add to a visit's history (prescriptions sit above this package; the
# factory registers their reader on each app: visit ids -> {visit id: [what was prescribed]}).
HistoryReader = Callable[[list[uuid.UUID]], Mapping[uuid.UUID, Sequence[Any]]]
HISTORY_READERS = "visit_history_readers"


def on_history(app: Flask, reader: HistoryReader) -> None:
    app.extensions.setdefault(HISTORY_READERS, []).append(reader)


@dataclass(frozen=True)
class HistoryEntry:
    """One visit of the patient's history, with its notes and what other domains add to it."""

    visit: Visit
    notes: list[VisitNote]
    prescriptions: list[Any]  # whatever the registered readers return (prescriptions sit above)
    current: bool = False


def patient_history(physician_id: uuid.UUID, visit: Visit, limit: int = 20) -> list[HistoryEntry]:
    """The same patient's earlier visits that this physician may see (theirs, or their
    department's), newest first, with notes and whatever other domains add (prescriptions);
    the visit itself comes last, marked `current`."""
    physician = physician_account(physician_id)
    dept = physician.staff.department_code if physician.staff else None
    earlier = list(
        db.session.scalars(
            select(Visit)
            .where(
                Visit.patient_id == visit.patient_id,
                Visit.id != visit.id,
                (Visit.physician_id == physician.id) | (Visit.department == dept),
            )
            .order_by(Visit.created_at.desc())
            .limit(limit)
        )
    )
    extra: dict[uuid.UUID, list[Any]] = {}
    readers: list[HistoryReader] = current_app.extensions.get(HISTORY_READERS, [])
    for reader in readers:
        for vid, found in reader([v.id for v in earlier] + [visit.id]).items():
            extra.setdefault(vid, []).extend(found)
    return [HistoryEntry(v, list(v.notes), extra.get(v.id, [])) for v in earlier] + [
        HistoryEntry(visit, [], extra.get(visit.id, []), current=True)
    ]


PRESENCE_WINDOW = timedelta(seconds=60)
MESSAGE_SMS_QUIET = timedelta(minutes=10)


def patient_present(visit: Visit) -> None:
    """The patient has the visit room open (the room and its polling call this).

    A plain UPDATE of one column: it does not bump the visit's row version, so it never
    makes a physician's simultaneous change of the visit fail.
    """
    now = utcnow()
    seen = visit.patient_seen_at
    if seen is not None and now - seen < timedelta(seconds=15):
        return
    db.session.execute(
        update(Visit)
        .where(Visit.id == visit.id)
        .values(patient_seen_at=now)
        .execution_options(synchronize_session=False)
    )


def _patient_absent(visit: Visit) -> bool:
    seen = db.session.scalar(select(Visit.patient_seen_at).where(Visit.id == visit.id))
    return seen is None or utcnow() - seen > PRESENCE_WINDOW


def post_message(who: Principal, visit_id: uuid.UUID, text: str | None, image: bytes | None) -> VisitMessage:
    session = db.session()
    visit = visit_for(who, visit_id)
    if who.role == Role.PHYSICIAN and visit.physician_id != who.account_id:
        raise Forbidden("Accept the visit before writing in it.")
    if not rules.can_message(visit.status):
        raise rules.VisitClosed(
            "The visit is %(status)s; no more messages can be sent.", params={"status": visit.status.value}
        )
    if not text and image is None:
        raise Invalid("A message needs text or an image.")
    msg = VisitMessage(visit_id=visit.id, sender_id=who.account_id, sender_role=str(who.role), text=text or None)
    if image is not None:
        spend_upload_quota(who.account_id, len(image))
        sniffed = sniff_upload(image, max_bytes=settings().MAX_IMAGE_BYTES, allow_pdf=False)
        msg.image_path = storage.save(f"visits/{visit.id}", image, sniffed.ext)
        msg.image_type = sniffed.mime
    session.add(msg)
    session.flush()
    audit.record(
        session,
        "visit.message",
        subject_type="visit",
        subject_id=visit.id,
        detail={"message": str(msg.id), "image": image is not None},
    )
    if who.role == Role.PHYSICIAN and _patient_absent(visit):
        # At most one such SMS per visit per 10 minutes; the notification centre gets each.
        physician = physician_account(who.account_id)
        tell_patient(visit, "visit_message", quiet_for=MESSAGE_SMS_QUIET, physician=physician_name(physician))
    return msg


def message_image(who: Principal, visit_id: uuid.UUID, message_id: uuid.UUID) -> tuple[bytes, str]:
    visit = visit_for(who, visit_id)
    msg = get_or_404(VisitMessage, message_id)
    if msg.visit_id != visit.id or msg.image_path is None:
        raise NotFound()
    return storage.load(msg.image_path), msg.image_type or "application/octet-stream"


@dataclass(frozen=True)
class VideoGrant:
    """Who joins which Twilio Video room (the edge turns it into an access token)."""

    identity: str
    room: str


def video_grant(who: Principal, visit_id: uuid.UUID) -> VideoGrant:
    """A participant's grant to the visit's Twilio Video room; only while in progress."""
    visit = visit_for(who, visit_id)
    if who.role == Role.PHYSICIAN and visit.physician_id != who.account_id:
        raise Forbidden("Only the visit's physician joins its video room.")
    if visit.status != VisitStatus.IN_PROGRESS:
        raise Conflict("The video room is open only while the visit is in progress.", code="visit_not_in_progress")
    audit.record(db.session(), "visit.video_token", subject_type="visit", subject_id=visit.id)
    return VideoGrant(identity=str(who.account_id), room=f"visit-{visit.id}")
