"""Signed messages between institutions (the federation): the inbox, which verifies a
partner's message against its pinned key and hands it to the handler of its event, and the
sender, which signs a FHIR message with the institution key, records it and delivers it
through the outbox. The agreements they run under are in `partners`.

Each use case loads, applies the pure rules, changes state, audits, enqueues and flushes;
none commits (the request, CLI command or job is the commit point).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clinic.core import audit, jobs
from clinic.core.config import settings
from clinic.core.db import as_uuid, db, utcnow
from clinic.core.errors import DomainError, Invalid, NotFound
from clinic.telemedicine import envelope, rules
from clinic.telemedicine.models import FederationMessage, PartnerInstitution
from clinic.telemedicine.partners import get_partner, own_endpoint, own_key, own_name, require_in_force
from clinic.telemedicine.rules import N_

DELIVER_JOB = "federation.deliver"
PING_EVENT = "ping"  # a connectivity check: signed, verified, recorded, nothing else


# --- refusals -------------------------------------------------------------------------


class BadSignature(DomainError):
    status = 401
    code = "bad_signature"
    default_message = N_("The message's signature does not verify with the sending institution's pinned key.")


class BadMessage(Invalid):
    code = "invalid_message"
    default_message = N_("The message is not a FHIR R4 message Bundle with a MessageHeader first.")


class UnknownEvent(Invalid):
    code = "unknown_event"
    default_message = N_("This institution does not handle messages of this event.")


# --- the inbox ------------------------------------------------------------------------------

EventHandler = Callable[[FederationMessage, dict[str, Any], PartnerInstitution], None]
_event_handlers: dict[str, EventHandler] = {}


def register_event(code: str, handler: EventHandler) -> None:
    """Register what a received message of this MessageHeader.eventCoding code does (the
    consultation and referral domains plug in here). The handler runs in the inbox's
    transaction, after the message is recorded; a refusal it raises refuses the message."""
    _event_handlers[code] = handler


def _ping(_message: FederationMessage, _bundle: dict[str, Any], _partner: PartnerInstitution) -> None:
    return None


def _sender(token: str) -> PartnerInstitution:
    """The partner whose pinned key is to verify this message: by the JWS kid, else by the
    MessageHeader's source endpoint. Unknown: a bad signature (no key of ours verifies it)."""
    try:
        header = envelope.unverified_header(token)
    except envelope.BadSignature as exc:
        raise BadSignature(str(exc)) from None
    session = db.session()
    kid = header.get("kid")
    partner = (
        session.scalar(select(PartnerInstitution).where(PartnerInstitution.kid == kid))
        if isinstance(kid, str)
        else None
    )
    if partner is None:
        source = envelope.unverified_source(token)
        if source:
            partner = session.scalar(
                select(PartnerInstitution)
                .where(PartnerInstitution.base_url == rules.normalise_base_url(source))
                .order_by(PartnerInstitution.created_at.desc())
            )
    if partner is None:
        raise BadSignature(N_("The message is signed by a key no partner institution of ours has."))
    return partner


@dataclass(frozen=True)
class Received:
    message: FederationMessage
    duplicate: bool


def receive(token: str) -> Received:
    """The federation inbox: verify a signed message against the sender's pinned key, check
    the agreement is in force, validate the FHIR message, record it once (by its
    MessageHeader id) and hand it to the handler of its event."""
    partner = _sender(token)
    try:
        content = envelope.verify(token, partner.public_jwk)
    except envelope.BadSignature as exc:
        raise BadSignature(str(exc), persist=False) from None
    except envelope.BadMessage as exc:
        raise BadMessage(str(exc)) from None
    require_in_force(partner)
    try:
        header = envelope.parse_message(content)
    except envelope.BadMessage as exc:
        raise BadMessage(str(exc)) from None
    session = db.session()
    existing = session.scalar(
        select(FederationMessage).where(
            FederationMessage.partner_id == partner.id,
            FederationMessage.direction == "in",
            FederationMessage.message_id == header.id,
        )
    )
    if existing is not None:
        return Received(existing, duplicate=True)
    handler = _event_handlers.get(header.event_code)
    if handler is None:
        raise UnknownEvent(
            N_("This institution does not handle messages of the event %(event)s."), params={"event": header.event_code}
        )
    message = FederationMessage(
        partner_id=partner.id,
        direction="in",
        message_id=header.id,
        event_code=header.event_code,
        kid=partner.kid,
        jws=token,
    )
    # No SAVEPOINT here: with SQLite's driver a savepoint opened before any other write
    # commits on release, which kept the message when its handler then refused it (and
    # the sender's retry was answered "duplicate" without ever being applied). Nothing
    # else has been written yet in this transaction, so a plain rollback is as narrow.
    partner_id = partner.id
    try:
        session.add(message)
        session.flush()
    except IntegrityError:  # the same message delivered twice at once: the other one has it
        session.rollback()
        again = session.scalar(
            select(FederationMessage).where(
                FederationMessage.partner_id == partner_id,
                FederationMessage.direction == "in",
                FederationMessage.message_id == header.id,
            )
        )
        if again is None:
            raise
        return Received(again, duplicate=True)
    audit.record(
        session,
        "federation.message_received",
        subject_type="federation_message",
        subject_id=message.id,
        detail={"partner_id": str(partner.id), "message_id": header.id, "event": header.event_code, "kid": partner.kid},
    )
    handler(message, content, partner)
    return Received(message, duplicate=False)


# --- the sender --------------------------------------------------------------------------


def send(partner_id: uuid.UUID, event_code: str, resources: list[dict[str, Any]] | None = None) -> FederationMessage:
    """Build a FHIR message for a partner, sign it with the institution key, record it and
    enqueue its delivery through the outbox (retried until the partner answers 2xx)."""
    partner = get_partner(partner_id)
    require_in_force(partner)
    key = own_key()
    bundle = envelope.build_message(
        event_code,
        own_endpoint(),
        own_name(),
        partner.base_url,
        resources,
    )
    token = envelope.sign(key, bundle)
    header = envelope.parse_message(bundle)
    session = db.session()
    message = FederationMessage(
        partner_id=partner.id,
        direction="out",
        message_id=header.id,
        event_code=event_code,
        kid=key.kid,
        jws=token,
    )
    session.add(message)
    session.flush()
    audit.record(
        session,
        "federation.message_sent",
        subject_type="federation_message",
        subject_id=message.id,
        detail={"partner_id": str(partner.id), "message_id": header.id, "event": event_code},
    )
    jobs.enqueue(session, DELIVER_JOB, {"message": str(message.id)})
    return message


def resend(message_id: uuid.UUID) -> FederationMessage:
    """Deliver a sent message again (the partner applies it once: same MessageHeader id)."""
    message = db.session.get(FederationMessage, message_id)
    if message is None or message.direction != "out":
        raise NotFound(N_("No such sent message."))
    audit.record(
        db.session(),
        "federation.message_resent",
        subject_type="federation_message",
        subject_id=message.id,
        detail={"message_id": message.message_id},
    )
    jobs.enqueue(db.session(), DELIVER_JOB, {"message": str(message.id)})
    return message


def deliver(payload: dict[str, Any]) -> None:
    """The outbox job: POST the signed message to the partner's inbox; anything but 2xx
    raises, and the outbox tries again later."""
    message = db.session.get(FederationMessage, as_uuid(payload.get("message")))
    if message is None:
        raise jobs.PermanentJobError("the message to deliver is gone")
    message.attempts += 1
    url = message.partner.base_url + "/api/v1/federation/messages"
    timeout = settings().FEDERATION_HTTP_TIMEOUT
    try:
        resp = requests.post(
            url,
            data=message.jws.encode(),
            headers={"Content-Type": "application/jose"},
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise RuntimeError(f"partner unreachable: {type(exc).__name__}") from None
    if not 200 <= resp.status_code < 300:
        raise RuntimeError(f"partner answered {resp.status_code}: {resp.text[:200]}")
    first = message.delivered_at is None
    message.delivered_at = message.delivered_at or utcnow()
    message.last_error = None
    if first:
        audit.record(
            db.session(),
            "federation.message_delivered",
            subject_type="federation_message",
            subject_id=message.id,
            detail={"message_id": message.message_id, "status": resp.status_code},
        )


DeliveryFailedHandler = Callable[[FederationMessage], None]
_undelivered_handlers: dict[str, DeliveryFailedHandler] = {}


def register_undelivered(code: str, handler: DeliveryFailedHandler) -> None:
    """Register what becomes of a sent message of this event that the outbox gives up on
    (every retry failed): e.g. a referral request moves to the FHIR Task state `failed`."""
    _undelivered_handlers[code] = handler


def _delivery_failed(payload: dict[str, Any], error: str, final: bool) -> None:
    message = db.session.get(FederationMessage, as_uuid(payload.get("message")))
    if message is not None:
        message.attempts += 1
        message.last_error = error[:2000]
        handler = _undelivered_handlers.get(message.event_code)
        if final and handler is not None:
            handler(message)


def register_jobs() -> None:
    jobs.register(DELIVER_JOB, deliver, on_failure=_delivery_failed)


def register_events() -> None:
    """The factory wires what a received message does; the connectivity check does nothing."""
    register_event(PING_EVENT, _ping)
