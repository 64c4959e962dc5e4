"""A consultation's attachments (records, images, ECG or lab PDFs): the inviting physician
adds them, they follow the request to the partner as DocumentReference, and both sides
read them back."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from clinic.core import audit, storage
from clinic.core.config import settings
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.telemedicine import federation, rules
from clinic.telemedicine.consultations import (
    ATTACHMENT_TYPES,
    EV_ATTACHMENT,
    INVITED,
    INVITING,
    MAX_ATTACHMENTS,
    BadAttachment,
    as_physician,
    bundle_resources,
    consultation_for,
    iso,
    our_consultation,
    refuse,
    task_id_of,
    task_resource,
)
from clinic.telemedicine.models import (
    Consultation,
    ConsultationAttachment,
    FederationMessage,
    PartnerInstitution,
)
from clinic.telemedicine.rules import N_, TaskStatus
from clinic.visits.sniffing import sniff_upload


def add_attachment(who: Principal, consultation_id: uuid.UUID, filename: str, data: bytes) -> ConsultationAttachment:
    """A record, image or ECG/lab PDF for a requested consultation (the inviting physician):
    PDF, JPEG or PNG by its bytes, at most CONSULT_MAX_ATTACHMENT_BYTES; it follows the
    request to the partner as a DocumentReference."""
    session = db.session()
    physician = as_physician(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITING or c.requested_by != physician.id:
        raise Forbidden(N_("Only the requesting physician adds attachments."))
    if TaskStatus(c.status) in rules.TERMINAL:
        raise Conflict(N_("The consultation is closed; nothing more can be added."), code="consultation_closed")
    count = len(
        list(session.scalars(select(ConsultationAttachment.id).where(ConsultationAttachment.consultation_id == c.id)))
    )
    if count >= MAX_ATTACHMENTS:
        raise Invalid(N_("At most %(n)s attachments per consultation."), params={"n": MAX_ATTACHMENTS})
    limit = settings().CONSULT_MAX_ATTACHMENT_BYTES
    try:
        sniffed = sniff_upload(data, max_bytes=limit, allow_pdf=True)
    except DomainError as err:
        raise refuse(err, c, reason=err.code, size=len(data)) from None
    if sniffed.mime not in ATTACHMENT_TYPES:
        raise refuse(
            BadAttachment(N_("Only PDF, JPEG or PNG files are accepted for a consultation.")), c, type=sniffed.mime
        )
    att = _store_attachment(c, str(uuid.uuid4()), filename, data, sniffed.mime, sniffed.ext, physician.id)
    doc = {
        "resourceType": "DocumentReference",
        "id": att.shared_id,
        "status": "current",
        "description": att.filename,
        "content": [
            {
                "attachment": {
                    "contentType": att.media_type,
                    "data": base64.b64encode(data).decode(),
                    "title": att.filename,
                    "size": att.size,
                    "creation": iso(att.created_at or utcnow()),
                }
            }
        ],
    }
    federation.send(c.partner_id, EV_ATTACHMENT, [task_resource(c), doc])
    return att


def _store_attachment(
    c: Consultation, shared_id: str, filename: str, data: bytes, mime: str, ext: str, by: uuid.UUID | None
) -> ConsultationAttachment:
    session = db.session()
    safe = Path(filename or "").name.strip()[:200] or f"attachment.{ext}"
    att = ConsultationAttachment(
        consultation_id=c.id,
        shared_id=shared_id,
        filename=safe,
        media_type=mime,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        path=storage.save(f"consultations/{c.id}", data, ext),
        uploaded_by=by,
        created_at=utcnow(),
    )
    session.add(att)
    session.flush()
    audit.record(
        session,
        "consultation.attachment_added",
        subject_type="consultation",
        subject_id=c.id,
        detail={"attachment": str(att.id), "type": mime, "size": len(data), "sha256": att.sha256},
    )
    return att


def attachment_bytes(
    who: Principal, consultation_id: uuid.UUID, attachment_id: uuid.UUID
) -> tuple[ConsultationAttachment, bytes]:
    """An attachment of a consultation the caller may read, and its bytes."""
    c = consultation_for(who, consultation_id)
    att = db.session.get(ConsultationAttachment, attachment_id)
    if att is None or att.consultation_id != c.id:
        raise NotFound()
    return att, storage.load(att.path)


def attachments_of(c: Consultation) -> list[ConsultationAttachment]:
    return list(
        db.session.scalars(
            select(ConsultationAttachment)
            .where(ConsultationAttachment.consultation_id == c.id)
            .order_by(ConsultationAttachment.created_at)
        )
    )


def _on_attachment(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    c = our_consultation(partner, INVITED, task_id_of(bundle))
    for doc in bundle_resources(bundle, "DocumentReference"):
        att = (doc.get("content") or [{}])[0].get("attachment") or {}
        try:
            data = base64.b64decode(att.get("data") or "", validate=True)
        except ValueError:
            raise federation.BadMessage(N_("The attachment's data is not base64.")) from None
        limit = settings().CONSULT_MAX_ATTACHMENT_BYTES
        sniffed = sniff_upload(data, max_bytes=limit, allow_pdf=True)
        if sniffed.mime not in ATTACHMENT_TYPES:
            raise BadAttachment(N_("Only PDF, JPEG or PNG files are accepted for a consultation."))
        _store_attachment(c, str(doc.get("id")), str(att.get("title") or ""), data, sniffed.mime, sniffed.ext, None)


def register_events() -> None:
    federation.register_event(EV_ATTACHMENT, _on_attachment)
