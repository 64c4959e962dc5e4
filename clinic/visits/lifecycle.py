"""A visit from payment to its end: accept, complete, terminate and refer, cancel and refund.
Every change of status goes through `rules.transition`; each use case audits and flushes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from flask import Flask, current_app
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from clinic.core import audit
from clinic.core.db import db, get_or_404, utcnow
from clinic.core.errors import Conflict, Forbidden, NotFound
from clinic.core.principal import Principal
from clinic.notifications import notify
from clinic.visits import rules
from clinic.visits.models import Visit, VisitNote
from clinic.visits.rules import VisitStatus
from clinic.visits.service_switch import refuse_if_suspended
from identity import face_services
from identity import services as identity
from identity.models import Account, Role

if TYPE_CHECKING:  # payments sits below visits; only its answer's type is named here
    from clinic.payments.services import StartedPayment


class PaymentsPort(Protocol):
    """What visits need from payments (clinic/payments provides it when PAYMENTS is on)."""

    def start(self, purpose: str, subject_id: uuid.UUID, amount_fen: int, description: str) -> StartedPayment: ...

    def refund(self, purpose: str, subject_id: uuid.UUID, reason: str) -> None: ...


def payments_port() -> PaymentsPort | None:
    port: PaymentsPort | None = current_app.extensions.get("payments")
    return port


def physician_account(account_id: uuid.UUID) -> Account:
    """The physician's account; any other role is refused (403)."""
    account = identity.get_account(account_id)
    if account.role != Role.PHYSICIAN:
        raise Forbidden("Only physicians may do this.")
    return account


def _load_visit(visit_id: uuid.UUID) -> Visit:
    return get_or_404(Visit, visit_id)


def visit_for(who: Principal, visit_id: uuid.UUID) -> Visit:
    """A visit the caller takes part in; anyone else gets 404 (never revealed)."""
    visit = _load_visit(visit_id)
    if who.role == Role.PATIENT and visit.account_id == who.account_id:
        return visit
    if who.role == Role.PHYSICIAN:
        if visit.physician_id == who.account_id:
            return visit
        if visit.status == VisitStatus.WAITING and visit.requested_physician_id in (None, who.account_id):
            physician = identity.get_account(who.account_id)
            dept = physician.staff.department_code if physician.staff else None
            if dept == visit.department:
                return visit
    raise NotFound()


def _assigned(who: Principal, visit_id: uuid.UUID) -> tuple[Account, Visit]:
    physician = physician_account(who.account_id)
    visit = visit_for(who, visit_id)
    if visit.physician_id != physician.id:
        raise Forbidden("Only the visit's physician may do this.")
    return physician, visit


# Visits some physicians see first (a family-doctor team for its contracted patients): hooks
# registered by the app factory with `on_visit_first`, each answering, for one physician's
# account id and some waiting visits, {visit_id: "mine" (theirs first) | "held" (for others
# first, for now)}. The visit domain cannot import the packages above it.
VisitFirst = Callable[[uuid.UUID, list[Visit]], Mapping[uuid.UUID, str]]
VISIT_FIRST = "visit_first"


def on_visit_first(app: Flask, hook: VisitFirst) -> None:
    app.extensions.setdefault(VISIT_FIRST, []).append(hook)


def first_for(physician_id: uuid.UUID, visits: list[Visit]) -> dict[uuid.UUID, str]:
    out: dict[uuid.UUID, str] = {}
    hooks: list[VisitFirst] = current_app.extensions.get(VISIT_FIRST, [])
    for hook in hooks:
        out.update(hook(physician_id, visits))
    return out


class HeldForTeam(Conflict):
    code = "held_for_team"
    default_message = "This visit is held for the patient's family doctor team for now; take another one."


def physician_name(account: Account) -> str:
    return account.staff.name if account.staff else account.display_name


def tell_patient(visit: Visit, kind: str, **kw: Any) -> None:
    notify(
        db.session(),
        account_id=visit.account_id,
        kind=kind,
        link=f"/visits/{visit.id}",
        subject_type="visit",
        subject_id=visit.id,
        **kw,
    )


def _move(visit: Visit, event: rules.VisitEvent) -> None:
    visit.status = rules.transition(visit.status, event)


def mark_visit_paid(visit_id: uuid.UUID) -> Visit | None:
    """Called by payments when the consultation fee has been paid (once per event)."""
    visit = db.session.get(Visit, visit_id)
    if visit is None or visit.status != VisitStatus.AWAITING_PAYMENT:
        return visit
    _move(visit, rules.VisitEvent.PAID)
    audit.record(db.session(), "visit.paid", subject_type="visit", subject_id=visit.id)
    return visit


def accept_visit(who: Principal, visit_id: uuid.UUID) -> Visit:
    session = db.session()
    physician = physician_account(who.account_id)
    face_services.require_fresh_face(who)
    visit = _load_visit(visit_id)
    identity.require_qualified_physician(physician, department=visit.department)
    if visit.requested_physician_id not in (None, physician.id):
        raise Forbidden("The patient chose another physician for this visit.")
    refuse_if_suspended()
    if visit.status == VisitStatus.WAITING and first_for(physician.id, [visit]).get(visit.id) == "held":
        raise HeldForTeam()
    _move(visit, rules.VisitEvent.ACCEPT)
    visit.physician_id, visit.accepted_at = physician.id, utcnow()
    audit.record(session, "visit.accepted", subject_type="visit", subject_id=visit.id)
    tell_patient(visit, "visit_accepted", physician=physician_name(physician))
    return visit


def complete_visit(who: Principal, visit_id: uuid.UUID, note: str) -> Visit:
    session = db.session()
    physician, visit = _assigned(who, visit_id)
    _move(visit, rules.VisitEvent.COMPLETE)
    visit.closed_at = utcnow()
    session.add(VisitNote(visit_id=visit.id, author_id=physician.id, kind="completion", text=note))
    audit.record(session, "visit.completed", subject_type="visit", subject_id=visit.id)
    tell_patient(visit, "visit_completed")
    return visit


def terminate_visit(who: Principal, visit_id: uuid.UUID, reason: str, referral_advice: str) -> Visit:
    """The condition changed or needs an examination: stop and send the patient in person."""
    session = db.session()
    physician, visit = _assigned(who, visit_id)
    _move(visit, rules.VisitEvent.TERMINATE)
    visit.closed_at = utcnow()
    visit.termination_reason, visit.referral_advice = reason, referral_advice
    session.add(
        VisitNote(
            visit_id=visit.id, author_id=physician.id, kind="referral", text=f"{reason}\n\n{referral_advice}".strip()
        )
    )
    audit.record(session, "visit.referred", subject_type="visit", subject_id=visit.id, detail={"reason": reason[:200]})
    tell_patient(visit, "visit_referred", advice=referral_advice)
    return visit


def cancel_visit(who: Principal, visit_id: uuid.UUID, reason: str) -> Visit:
    """The patient before acceptance, or the institution (admin): cancel and refund."""
    session = db.session()
    if who.role == Role.ADMIN:
        visit = _load_visit(visit_id)
    elif who.role == Role.PATIENT:
        visit = visit_for(who, visit_id)
    else:
        raise Forbidden("Only the patient or the institution may cancel a visit.")
    _move(visit, rules.VisitEvent.CANCEL)
    visit.closed_at, visit.cancel_reason = utcnow(), reason
    audit.record(session, "visit.cancelled", subject_type="visit", subject_id=visit.id, detail={"by": str(who.role)})
    port = payments_port()
    if port is not None and visit.fee_fen > 0:
        # Written first: if a physician accepted the visit meanwhile, this flush is refused
        # (409) before any money moves.
        session.flush()
        port.refund("consultation", visit.id, reason)  # refunds a paid fee, voids an unpaid one
    return visit


def visits_of(who: Principal) -> list[Visit]:
    """The patient's visits (as their account requested them), or the physician's own."""
    if who.role == Role.PATIENT:
        query = select(Visit).where(Visit.account_id == who.account_id)
    else:
        query = select(Visit).where(Visit.physician_id == who.account_id)
    return list(db.session.scalars(query.order_by(Visit.created_at.desc()).limit(200)))


def visits_follow_patient(session: Session, patient_id: uuid.UUID, old: uuid.UUID, new: uuid.UUID) -> int:
    """A patient's visits requested from the old account move with the patient (ID number
    reclaimed by its owner): the account that manages the person reads them, no one else."""
    moved = session.execute(
        update(Visit)
        .where(Visit.patient_id == patient_id, Visit.account_id == old)
        .values(account_id=new)
        .execution_options(synchronize_session="fetch")
    )
    return int(cast(CursorResult[Any], moved).rowcount or 0)  # an UPDATE answers a cursor
