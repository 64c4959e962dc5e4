"""Use cases between institutions: agreements, the federation inbox, the signed sender.

Each loads, applies the pure rules, changes state, audits, enqueues and flushes; none
commits (the request, CLI command or job is the commit point).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import requests
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clinic.core import audit, jobs
from clinic.core.audit import current_actor
from clinic.core.config import settings
from clinic.core.db import as_uuid, db, utcnow
from clinic.core.errors import DomainError, Forbidden, Invalid, NotFound, RuleRefusal
from clinic.telemedicine import envelope, rules
from clinic.telemedicine.models import FederationMessage, PartnerInstitution
from clinic.telemedicine.rules import N_
from identity.models import Institution

log = logging.getLogger("clinic.telemedicine")
CHINA = ZoneInfo("Asia/Shanghai")  # agreements run from and to Beijing dates
DELIVER_JOB = "federation.deliver"
PING_EVENT = "ping"  # a connectivity check: signed, verified, recorded, nothing else


def today() -> date:
    return utcnow().astimezone(CHINA).date()


# --- refusals -------------------------------------------------------------------------


class BadSignature(DomainError):
    status = 401
    code = "bad_signature"
    default_message = N_("The message's signature does not verify with the sending institution's pinned key.")


class NoAgreement(Forbidden):
    code = "no_agreement"
    default_message = N_("There is no cooperation agreement in force with this institution.")


class BadMessage(Invalid):
    code = "invalid_message"
    default_message = N_("The message is not a FHIR R4 message Bundle with a MessageHeader first.")


class UnknownEvent(Invalid):
    code = "unknown_event"
    default_message = N_("This institution does not handle messages of this event.")


class DuplicatePartner(DomainError):
    status = 409
    code = "partner_exists"
    default_message = N_("A partner institution with this key is already registered.")


# --- the institution's own key ----------------------------------------------------------


def own_key() -> envelope.InstitutionKey:
    return envelope.institution_key(settings().INSTITUTION_SIGNING_KEY)


def published_keys() -> list[dict[str, Any]]:
    """For /.well-known/jwks.json: the institution key beside the prescription keys."""
    return [dict(own_key().public_jwk)]


def own_endpoint() -> str:
    return rules.normalise_base_url(settings().PUBLIC_BASE_URL)


def own_name() -> str:
    inst = db.session.get(Institution, 1)
    return inst.name if inst is not None and inst.name else own_endpoint()


def own_level() -> str:
    """The institution's level (三级/二级/一级/基层), kept on the institution profile."""
    inst = db.session.get(Institution, 1)
    return inst.level if inst is not None else ""


def _development() -> bool:
    return settings().ENV != "production"


# --- agreements ---------------------------------------------------------------------------


def _invalid(violations: list[Any]) -> None:
    raise RuleRefusal("invalid", violations, lead=N_("The agreement is not valid:"))


def register_partner(terms: rules.AgreementTerms) -> PartnerInstitution:
    """Register a partner institution under a cooperation agreement (admin, CLI)."""
    violations = rules.check_terms(terms, _development())
    if violations:
        _invalid(violations)
    session = db.session()
    kid = str(terms.public_jwk["kid"])
    if session.scalar(select(PartnerInstitution.id).where(PartnerInstitution.kid == kid)) is not None:
        raise DuplicatePartner()
    if kid == own_key().kid:
        _invalid(
            [
                rules.Violation(
                    "invalid", N_("The partner's key is this institution's own key."), detail={"loc": "public_jwk"}
                )
            ]
        )
    actor = current_actor()
    partner = PartnerInstitution(
        name=terms.name.strip(),
        license_no=terms.license_no.strip(),
        level=terms.level,
        base_url=rules.normalise_base_url(terms.base_url),
        public_jwk=_public_only(terms.public_jwk),
        kid=kid,
        services=list(terms.services),
        departments=list(terms.departments),
        fee_fen=terms.fee_fen,
        split_inviting=terms.split_inviting,
        split_invited=terms.split_invited,
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        created_by=as_uuid(actor.id),
    )
    session.add(partner)
    session.flush()
    audit.record(
        session,
        "partner.registered",
        subject_type="partner_institution",
        subject_id=partner.id,
        detail={
            "name": partner.name,
            "license_no": partner.license_no,
            "level": partner.level,
            "base_url": partner.base_url,
            "kid": kid,
            "services": partner.services,
            "fee_fen": partner.fee_fen,
            "split": [partner.split_inviting, partner.split_invited],
            "valid_from": partner.valid_from.isoformat(),
            "valid_until": partner.valid_until.isoformat(),
        },
    )
    return partner


def _public_only(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: jwk[k] for k in ("kty", "crv", "x", "y", "kid", "alg", "use") if k in jwk}


def list_partners() -> list[PartnerInstitution]:
    return list(db.session.scalars(select(PartnerInstitution).order_by(PartnerInstitution.created_at)))


def get_partner(partner_id: uuid.UUID) -> PartnerInstitution:
    partner = db.session.get(PartnerInstitution, partner_id)
    if partner is None:
        raise NotFound(N_("No such partner institution."))
    return partner


def rotate_partner_key(partner_id: uuid.UUID, public_jwk: dict[str, Any]) -> PartnerInstitution:
    """Pin a partner's new institution key: the explicit act by which its key changes."""
    partner = get_partner(partner_id)
    violations = rules.check_public_jwk(public_jwk)
    if violations:
        _invalid(violations)
    kid = str(public_jwk["kid"])
    other = db.session.scalar(
        select(PartnerInstitution.id).where(PartnerInstitution.kid == kid, PartnerInstitution.id != partner.id)
    )
    if other is not None or kid == own_key().kid:
        raise DuplicatePartner(N_("This key is already pinned for another institution, or is this institution's own."))
    before = partner.kid
    partner.public_jwk = _public_only(public_jwk)
    partner.kid = kid
    partner.key_rotated_at = utcnow()
    audit.record(
        db.session(),
        "partner.key_rotated",
        subject_type="partner_institution",
        subject_id=partner.id,
        detail={"from_kid": before, "to_kid": kid},
    )
    return partner


def agreement_in_force(partner: PartnerInstitution, on: date | None = None) -> bool:
    return rules.in_force(partner.valid_from, partner.valid_until, on or today())


def fetch_institution_key(jwks_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The institution key ("inst-..." kid) a partner publishes in its JWKS."""
    try:
        resp = requests.get(jwks_url, timeout=timeout, allow_redirects=False)
        resp.raise_for_status()
        keys = resp.json().get("keys", [])
    except (requests.RequestException, ValueError, AttributeError) as exc:
        log.warning("the JWKS at %s could not be read: %s", jwks_url, exc)
        raise Invalid(
            N_(
                "The partner's published keys could not be read at that address; check it and that the partner is reachable."
            ),
            fields=[{"loc": "jwks_url", "message": "unreachable"}],
        ) from None
    found = [k for k in keys if isinstance(k, dict) and str(k.get("kid", "")).startswith("inst-")]
    if len(found) != 1:
        raise Invalid(
            N_("The address must publish exactly one institution key of the partner."),
            fields=[{"loc": "jwks_url", "message": "no institution key"}],
        )
    return dict(found[0])


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


register_event(PING_EVENT, _ping)


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
    if not agreement_in_force(partner):
        raise NoAgreement(
            N_("There is no cooperation agreement in force with %(name)s (valid %(start)s to %(end)s)."),
            params={
                "name": partner.name,
                "start": partner.valid_from.isoformat(),
                "end": partner.valid_until.isoformat(),
            },
        )
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
    if not agreement_in_force(partner):
        raise NoAgreement(
            N_("There is no cooperation agreement in force with %(name)s (valid %(start)s to %(end)s)."),
            params={
                "name": partner.name,
                "start": partner.valid_from.isoformat(),
                "end": partner.valid_until.isoformat(),
            },
        )
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
