"""Requesting a return visit: every fact the request is judged on is read in one statement,
the pure rules decide, and the visit is inserted (awaiting payment when fees are charged)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import BindParameter, Select, and_, bindparam, exists, insert, select
from sqlalchemy.exc import IntegrityError

from clinic.core import audit
from clinic.core.config import settings
from clinic.core.db import db, new_id
from clinic.core.errors import Conflict, NotFound, RuleRefusal
from clinic.core.principal import Principal
from clinic.visits import rules
from clinic.visits.informed_consent import consent_accepted, current_consent
from clinic.visits.lifecycle import payments_port
from clinic.visits.models import OPEN_VISIT_STATUSES, Condition, Diagnosis, ServiceSwitch, Visit
from clinic.visits.rules import VisitStatus
from clinic.visits.service_switch import newest_switch, refuse_if_suspended
from identity import rules as identity_rules
from identity import services as identity
from identity.models import Account, Department, Patient, Role

if TYPE_CHECKING:  # payments sits below visits; only its answer's type is named here
    from clinic.payments.services import StartedPayment


@dataclass(frozen=True)
class NewVisit:
    id: uuid.UUID
    status: VisitStatus
    fee_fen: int
    payment: StartedPayment | None  # what the client needs to pay the fee (payments on, fee due)


def _build_gate_query() -> Select[Any]:
    """Every fact a visit request is judged on, in one statement (one round trip).

    The caller's patient (no row when it is not on the caller's account), that patient's
    diagnosis and its catalog condition (outer-joined: absent when the diagnosis is not
    this patient's), the newest suspension switch, the account's phone confirmation, the
    diagnosis's open visit (one at most), consent and department approval.
    Shaped so that PostgreSQL keeps one generic plan for the prepared statement: the open
    statuses are written into the SQL, not bound, so that even the generic plan can prove
    the partial unique index's predicate and look the open visit up in it (bound, they made
    a generic plan scan the whole visits table).
    """
    p = Patient.__table__
    d = Diagnosis.__table__
    c = Condition.__table__
    dep = Department.__table__
    suspended = newest_switch(ServiceSwitch.suspended).scalar_subquery()
    consent = consent_accepted(p.c.id, bindparam("consent_hash"))
    approved = exists().where(dep.c.code == bindparam("department"), dep.c.approved.is_(True))
    acc = Account.__table__
    phone_verified = select(acc.c.phone_verified_at).where(acc.c.id == bindparam("account_id")).scalar_subquery()
    v = Visit.__table__
    open_statuses: BindParameter[Any] = bindparam(
        "open_statuses", list(OPEN_VISIT_STATUSES), expanding=True, literal_execute=True
    )
    open_visit = (
        select(v.c.id).where(v.c.diagnosis_id == d.c.id, v.c.status.in_(open_statuses)).limit(1).scalar_subquery()
    )
    return (
        select(
            suspended.label("suspended"),
            phone_verified.label("phone_verified_at"),
            p.c.id.label("patient_id"),
            d.c.id.label("diagnosis_id"),
            d.c.status.label("diagnosis_status"),
            d.c.department.label("diagnosis_department"),
            open_visit.label("open_visit_id"),
            c.c.code.label("condition_code"),
            c.c.department.label("condition_department"),
            c.c.active.label("condition_active"),
            consent.label("consent_current"),
            approved.label("department_approved"),
        )
        .select_from(
            p.outerjoin(d, and_(d.c.id == bindparam("diagnosis_id"), d.c.patient_id == p.c.id)).outerjoin(
                c, c.c.code == d.c.condition_code
            )
        )
        .where(p.c.id == bindparam("patient_id"), p.c.account_id == bindparam("account_id"))
    )


_GATE_QUERY = _build_gate_query()


_INSERT_VISIT = insert(Visit)


class VisitAlreadyOpen(Conflict):
    code = "visit_already_open"


def _open_visit_of(diagnosis_id: uuid.UUID) -> uuid.UUID | None:
    return db.session.scalars(
        select(Visit.id).where(Visit.diagnosis_id == diagnosis_id, Visit.status.in_(OPEN_VISIT_STATUSES)).limit(1)
    ).first()


def _already_open(visit_id: uuid.UUID) -> VisitAlreadyOpen:
    return VisitAlreadyOpen(
        "A visit for this diagnosis is already open; continue in it instead of requesting another.",
        visit_id=str(visit_id),
    )


def physician_available(physician_id: uuid.UUID | None, department: str, today: date | None = None) -> bool:
    """A physician the patient may choose: qualified for online care in `department` and on duty."""
    account = db.session.get(Account, physician_id) if physician_id is not None else None
    if account is None or account.role != Role.PHYSICIAN or account.staff is None or not account.staff.on_duty:
        return False
    return not identity_rules.physician_violations(
        identity.physician_credentials(account), identity.institution_status(), today or date.today(), department
    )


def request_visit(
    who: Principal,
    patient_id: uuid.UUID,
    diagnosis_id: uuid.UUID,
    department: str,
    complaint: str = "",
    physician_id: uuid.UUID | None = None,
) -> NewVisit:
    session = db.session()
    account_key = who.account_id
    conn = session.connection()
    params = {
        "account_id": account_key,
        "patient_id": patient_id,
        "diagnosis_id": diagnosis_id,  # no such diagnosis of this patient: judged as absent, a first visit
        "consent_hash": current_consent().sha256,
        "department": department,
    }
    gate = conn.execute(_GATE_QUERY, params).first()
    if gate is None or gate.suspended:
        refuse_if_suspended()  # 503 with the switch's reason, before anything else is said
        if gate is None:
            raise NotFound()  # another account's people are never revealed
    if gate.phone_verified_at is None:
        raise identity.PhoneNotVerified()  # the account's phone is confirmed before any visit
    if gate.open_visit_id is not None:
        raise _already_open(gate.open_visit_id)
    has_condition = gate.condition_code is not None
    facts = rules.VisitRequestFacts(
        diagnosis=rules.DiagnosisFacts(
            exists_for_patient=gate.diagnosis_id is not None,
            status=gate.diagnosis_status.value if gate.diagnosis_status is not None else None,
            condition_department=gate.condition_department if has_condition else gate.diagnosis_department,
            condition_active=bool(gate.condition_active) if has_condition else False,
        ),
        department=department,
        department_approved=bool(gate.department_approved),
        consent_current=bool(gate.consent_current),
        physician_chosen=physician_id is not None,
        physician_available=physician_id is None or physician_available(physician_id, department),
    )
    violations = rules.visit_request_violations(facts)
    if violations:
        raise RuleRefusal(violations[0].code, violations)
    fee = settings().CONSULTATION_FEE_FEN
    port = payments_port()
    status = VisitStatus.AWAITING_PAYMENT if port and fee > 0 else VisitStatus.WAITING
    fee_fen = fee if port else 0  # with payments off, visits are free
    visit_id = new_id()
    # A plain INSERT, not the unit of work: nothing in this request reads the visit back
    # as an object, and this is the busiest write of the clinic.
    try:
        conn.execute(
            _INSERT_VISIT,
            {
                "id": visit_id,
                "patient_id": gate.patient_id,
                "account_id": account_key,
                "diagnosis_id": gate.diagnosis_id,
                "department": department,
                "requested_physician_id": physician_id,
                "status": status,
                "complaint": complaint,
                "fee_fen": fee_fen,
            },
        )
    except IntegrityError:
        # A second request of the same diagnosis committed between the check above and this
        # insert (the partial unique index said no). The request is refused anyway; its
        # transaction is rolled back here so that the open visit can be read and named.
        session.rollback()
        open_id = _open_visit_of(gate.diagnosis_id)
        if open_id is None:
            raise
        raise _already_open(open_id) from None
    audit.record(
        session,
        "visit.requested",
        subject_type="visit",
        subject_id=visit_id,
        detail={
            "patient": str(gate.patient_id),
            "diagnosis": str(gate.diagnosis_id),
            "department": department,
            "physician": str(physician_id) if physician_id else None,
        },
    )
    payment = None
    if status == VisitStatus.AWAITING_PAYMENT and port is not None:
        payment = port.start("consultation", visit_id, fee, f"复诊 {visit_id}")
    return NewVisit(visit_id, status, fee_fen, payment)
