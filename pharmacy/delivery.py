"""Deliveries: routing to a qualified partner, the signed dispatch, the partners' callbacks.

The partner registry itself is pharmacy.partners.

One function per use case: load, apply the rules (pharmacy/rules.py), change state,
audit, enqueue outside work in the outbox, flush. Never commit.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import requests
from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from clinic.core import audit, jobs
from clinic.core.config import settings
from clinic.core.db import as_uuid, db, utcnow
from clinic.core.errors import DomainError, NotFound, Unauthenticated
from pharmacy import notify, partner_security, partners, rules
from pharmacy.models import Delivery, DeliveryEvent, DeliveryPartner
from pharmacy.rules import DeliveryEventKind, DeliveryStatus

log = logging.getLogger("clinic.pharmacy")

DISPATCH_JOB = "pharmacy.dispatch"


class BadSignature(Unauthenticated):
    code = "bad_signature"
    default_message = "The partner signature is missing, wrong or too old."


class DispatchFailed(Exception):
    """The partner did not accept the order (no answer, or not 2xx): the job retries."""


def _refuse(err: DomainError, action: str, subject_type: str, subject_id: object, **detail: Any) -> DomainError:
    """Audit a refusal with its reason and keep that record (callers raise before any write)."""
    audit.record(db.session(), action, subject_type=subject_type, subject_id=subject_id, detail=detail)
    err.persist = True
    return err


# --- routing and dispatch ----------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    name: str
    phone: str
    address: str
    region_code: str


def _own_event(delivery: Delivery, kind: DeliveryEventKind, detail: dict[str, Any] | None = None) -> None:
    db.session.add(
        DeliveryEvent(
            delivery_id=delivery.id,
            partner_id=None,
            event_id=f"clinic-{uuid.uuid4()}",
            status=kind.value,
            at=utcnow(),
            raw=detail or {},
        )
    )


def _route(delivery: Delivery, today: date | None = None) -> bool:
    """Choose a partner (not one already tried); True when one was found and the order queued."""
    session = db.session()
    partners = [p.facts() for p in session.scalars(select(DeliveryPartner))]
    decision = rules.route(
        partners, delivery.region_code, delivery.needs_cold_chain, today or date.today(), delivery.tried_partner_ids
    )
    delivery.routing = {"refused": decision.refused, "chosen": decision.partner_id}
    if decision.partner_id is None:
        return False  # the last partner tried (if any) stays on record
    delivery.partner_id = uuid.UUID(decision.partner_id)
    delivery.tried_partner_ids = [*delivery.tried_partner_ids, decision.partner_id]
    session.flush()
    jobs.enqueue(session, DISPATCH_JOB, {"delivery_id": str(delivery.id), "partner_id": decision.partner_id})
    return True


def create_delivery(
    prescription_id: uuid.UUID, recipient: Recipient, items: list[dict[str, Any]], today: date | None = None
) -> Delivery:
    """Route a dispensed prescription: to a qualified partner (order in the outbox) or the counter."""
    session = db.session()
    delivery = Delivery(
        prescription_id=prescription_id,
        status=DeliveryStatus.ROUTED,
        recipient_name=recipient.name,
        recipient_phone=recipient.phone,
        address=recipient.address,
        region_code=recipient.region_code,
        items=items,
        tried_partner_ids=[],
    )
    session.add(delivery)
    session.flush()
    if not _route(delivery, today):
        delivery.status = DeliveryStatus.COLLECT_AT_PHARMACY
        notify.tell_patient(session, "collect", prescription_id, recipient.phone)
    audit.record(
        session,
        "delivery.routed",
        subject_type="prescription",
        subject_id=prescription_id,
        detail={"delivery": str(delivery.id), "status": delivery.status.value, **delivery.routing},
    )
    session.flush()
    return delivery


def order_document(delivery: Delivery, partner: DeliveryPartner) -> dict[str, Any]:
    base = str(settings().PUBLIC_BASE_URL or "").rstrip("/")
    return {
        "order_id": str(delivery.id),
        "prescription_id": str(delivery.prescription_id),
        "recipient": {
            "name": delivery.recipient_name,
            "phone": delivery.recipient_phone,
            "address": delivery.address,
            "region_code": delivery.region_code,
        },
        "items": delivery.items,
        "cold_chain": delivery.needs_cold_chain,
        "callback_url": f"{base}/api/v1/partners/{partner.id}/callbacks",
        "created_at": delivery.created_at.isoformat(),
    }


def dispatch_job(payload: dict[str, Any]) -> None:
    """The outbox handler: POST the signed order to the partner; 2xx → dispatched, else retry."""
    session = db.session()
    delivery = session.get(Delivery, uuid.UUID(payload["delivery_id"]))
    if delivery is None:
        raise jobs.PermanentJobError("the delivery does not exist")
    if delivery.status != DeliveryStatus.ROUTED or str(delivery.partner_id) != payload["partner_id"]:
        log.info("dispatch of %s to %s superseded (now %s)", delivery.id, payload["partner_id"], delivery.status)
        return
    partner = delivery.partner
    assert partner is not None
    body = json.dumps(order_document(delivery, partner), ensure_ascii=False, sort_keys=True).encode()
    headers = partner_security.signed_headers(partner.secret, body, int(time.time()))
    headers["Idempotency-Key"] = f"{delivery.id}:{partner.id}"
    timeout = float(settings().PARTNER_HTTP_TIMEOUT)
    try:
        # again at every send: the name may resolve elsewhere now than at registration
        partners.check_endpoint(partner.endpoint)
    except partner_security.UnsafeEndpoint as exc:
        raise DispatchFailed(f"{partner.name}: endpoint refused: {exc.message}") from exc
    try:
        resp = requests.post(partner.endpoint, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise DispatchFailed(f"{partner.name} unreachable: {exc.__class__.__name__}") from exc
    if not 200 <= resp.status_code < 300:
        raise DispatchFailed(f"{partner.name} answered {resp.status_code}")
    delivery.status = rules.transition(delivery.status, DeliveryEventKind.DISPATCHED)
    delivery.dispatched_at = delivery.updated_at = utcnow()
    _own_event(delivery, DeliveryEventKind.DISPATCHED, {"partner": str(partner.id), "http_status": resp.status_code})
    audit.record(
        session,
        "delivery.dispatched",
        subject_type="prescription",
        subject_id=delivery.prescription_id,
        detail={"delivery": str(delivery.id), "partner": str(partner.id), "http_status": resp.status_code},
    )


# --- partner callbacks -------------------------------------------------------------------

# Hooks of the layer above routing (the prescription's own lifecycle follows the delivery),
# registered per app by the factory: fn(session, delivery, new_status) after each status change.
StatusListener = Callable[[Session, Delivery, DeliveryStatus], None]
STATUS_LISTENERS = "pharmacy.delivery_status_listeners"


def on_status_change(app: Flask, fn: StatusListener) -> None:
    app.extensions.setdefault(STATUS_LISTENERS, []).append(fn)


@dataclass(frozen=True)
class CallbackResult:
    delivery: Delivery
    duplicate: bool


def verify_partner(partner_id: str, timestamp: str | None, signature: str | None, body: bytes) -> DeliveryPartner:
    """The callback's authentication: the partner's HMAC over "<timestamp>.<raw body>"."""
    pid = as_uuid(partner_id)
    partner = db.session.get(DeliveryPartner, pid) if pid else None
    if partner is None or not partner.active:
        problem = "unknown_partner"
    else:
        problem = partner_security.signature_problem(partner.secret, timestamp, signature, body, int(time.time())) or ""
    if problem:
        raise _refuse(
            BadSignature(reason=problem),
            "partner.callback_refused",
            "delivery_partner",
            partner_id[:64],
            reason=problem,
        )
    assert partner is not None
    return partner


def apply_callback(
    partner: DeliveryPartner,
    event_id: str,
    prescription_id: str,
    status: str,
    at: datetime,
    waybill_no: str | None = None,
) -> CallbackResult:
    """A partner's status event: idempotent by event_id; moves the delivery; refuses jumps.
    An event with a waybill number (运单号) gives the delivery its current one."""
    session = db.session()
    rx_id = as_uuid(prescription_id)
    stmt = select(Delivery).where(Delivery.prescription_id == rx_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=Delivery)
    delivery = session.scalars(stmt).unique().one_or_none() if rx_id else None
    if delivery is None or delivery.partner_id != partner.id:
        # another partner's delivery is as unknown as a missing one
        raise _refuse(
            NotFound("No delivery of this prescription is assigned to you."),
            "partner.callback_refused",
            "delivery_partner",
            partner.id,
            reason="unknown_prescription",
            prescription_id=prescription_id[:64],
            event_id=event_id,
        )
    seen = session.scalar(
        select(DeliveryEvent.id).where(DeliveryEvent.partner_id == partner.id, DeliveryEvent.event_id == event_id)
    )
    if seen is not None:
        return CallbackResult(delivery, duplicate=True)
    before = delivery.status
    try:
        after = rules.transition(before, status)
    except rules.IllegalDeliveryTransition as err:
        raise _refuse(
            err,
            "partner.callback_refused",
            "prescription",
            delivery.prescription_id,
            reason="illegal_status_transition",
            partner=str(partner.id),
            event_id=event_id,
            current=before.value,
            event=status,
        ) from None
    session.add(
        DeliveryEvent(
            delivery_id=delivery.id,
            partner_id=partner.id,
            event_id=event_id,
            status=status,
            at=at,
            raw={
                "event_id": event_id,
                "status": status,
                "at": at.isoformat(),
                **({"waybill_no": waybill_no} if waybill_no else {}),
            },
            waybill_no=waybill_no,
        )
    )
    delivery.status, delivery.updated_at = after, utcnow()
    if waybill_no:
        delivery.waybill_no = waybill_no
    audit.record(
        session,
        f"delivery.{status}",
        subject_type="prescription",
        subject_id=delivery.prescription_id,
        detail={
            "delivery": str(delivery.id),
            "partner": str(partner.id),
            "event_id": event_id,
            "from": before.value,
            **({"waybill_no": waybill_no} if waybill_no else {}),
        },
    )
    if after == DeliveryStatus.OUT_FOR_DELIVERY and before != DeliveryStatus.OUT_FOR_DELIVERY:
        notify.tell_patient(
            session, "shipped", delivery.prescription_id, delivery.recipient_phone, partner=partner.name
        )
    elif after == DeliveryStatus.DELIVERED:
        delivery.delivered_at = at
        notify.tell_patient(session, "delivered", delivery.prescription_id, delivery.recipient_phone)
    elif after == DeliveryStatus.FAILED:
        _after_failure(session, delivery)
    session.flush()
    listeners: list[StatusListener] = current_app.extensions.get(STATUS_LISTENERS, [])
    for fn in listeners:
        fn(session, delivery, delivery.status)
    return CallbackResult(delivery, duplicate=False)


def _after_failure(session: Session, delivery: Delivery) -> None:
    """A failed delivery goes to the next qualified partner, else back to the pharmacy."""
    failed_partner = delivery.partner_id
    delivery.waybill_no = None  # that partner's waybill; the next partner gives its own
    if _route(delivery):
        delivery.status = rules.transition(delivery.status, DeliveryEventKind.REROUTED)
        _own_event(delivery, DeliveryEventKind.REROUTED, {"from": str(failed_partner), "to": str(delivery.partner_id)})
        action = "delivery.rerouted"
    else:
        delivery.status = rules.transition(delivery.status, DeliveryEventKind.RETURNED)
        _own_event(delivery, DeliveryEventKind.RETURNED, {"from": str(failed_partner)})
        notify.tell_patient(session, "collect", delivery.prescription_id, delivery.recipient_phone)
        action = "delivery.returned"
    audit.record(
        session,
        action,
        subject_type="prescription",
        subject_id=delivery.prescription_id,
        detail={"delivery": str(delivery.id), "failed_partner": str(failed_partner), **delivery.routing},
    )


def delivery_of(prescription_id: uuid.UUID) -> Delivery | None:
    return (
        db.session.scalars(select(Delivery).where(Delivery.prescription_id == prescription_id)).unique().one_or_none()
    )


def register_jobs() -> None:
    jobs.register(DISPATCH_JOB, dispatch_job)
