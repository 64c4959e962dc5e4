"""Return-visit use cases. Each loads, applies the pure rules, changes state, audits, flushes."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

from flask import current_app
from sqlalchemy import BindParameter, Exists, Select, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clinic.core import audit, limits, storage
from clinic.core.config import settings
from clinic.core.db import as_uuid, db, get_or_404, new_id, utcnow
from clinic.core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    RuleRefusal,
    ServiceUnavailable,
)
from clinic.core.principal import Principal
from clinic.core.versioned_text import TextShelf, VersionedText
from clinic.notifications import notify
from clinic.visits import rules
from clinic.visits.models import (
    OPEN_VISIT_STATUSES,
    Condition,
    ConsentAcceptance,
    Diagnosis,
    DiagnosisStatus,
    ServiceSwitch,
    Visit,
    VisitMessage,
    VisitNote,
)
from clinic.visits.rules import VisitStatus
from identity import face_services
from identity import rules as identity_rules
from identity import services as identity
from identity.models import Account, Department, Patient, Role

# --- the condition catalog ------------------------------------------------------------

DEFAULT_CONDITIONS = [
    ("I10", "原发性高血压", "cardiology", True),
    ("I25", "慢性缺血性心脏病", "cardiology", True),
    ("I48", "心房颤动和扑动", "cardiology", True),
    ("E78", "脂蛋白代谢紊乱和其他脂血症", "endocrinology", True),
    ("E11", "2型糖尿病", "endocrinology", True),
    ("E03", "其他甲状腺功能减退症", "endocrinology", True),
    ("E10", "1型糖尿病", "endocrinology", True),
    ("J44", "慢性阻塞性肺疾病", "respiratory", True),
    ("J45", "哮喘", "respiratory", True),
    ("M10", "痛风", "rheumatology", True),
    ("N18", "慢性肾脏病", "nephrology", True),
    ("B18.1", "慢性乙型病毒性肝炎", "infectious", True),
    ("K21", "胃食管反流病", "general", True),
    ("J30", "血管舒缩性和变应性鼻炎", "general", False),
    ("L20", "特应性皮炎", "pediatrics", True),
]


class NotEligibleCondition(Invalid):
    code = "not_eligible_condition"


def upsert_condition(code: str, name_zh: str, department: str, chronic: bool, active: bool = True) -> Condition:
    """Add or change a catalog entry; the code and its English name come from ICD-10."""
    session = db.session()
    normalized = rules.normalize_icd10(code)
    if normalized is None:
        raise Invalid(f"{code!r} is not a valid ICD-10 code.", code="invalid_icd10")
    if session.get(Department, department) is None:
        raise Invalid(f"Unknown department {department!r}.")
    cond = session.get(Condition, normalized)
    if cond is None:
        cond = Condition(code=normalized)
        session.add(cond)
    cond.name_zh, cond.name_en = name_zh, rules.icd10_name(normalized)
    cond.department, cond.chronic, cond.active = department, chronic, active
    session.flush()
    audit.record(
        session,
        "condition.saved",
        subject_type="condition",
        subject_id=normalized,
        detail={"department": department, "chronic": chronic, "active": active},
    )
    return cond


def add_condition(code: str, name_zh: str, department: str, chronic: bool) -> Condition:
    """A new catalog entry; a code already in the catalog is changed with `update_condition`."""
    normalized = rules.normalize_icd10(code)
    if normalized is not None and db.session.get(Condition, normalized) is not None:
        raise Conflict(
            "%(code)s is already in the catalog; change it from its row.",
            code="condition_exists",
            params={"code": normalized},
            fields=[{"loc": "code", "message": "already in the catalog"}],
        )
    return upsert_condition(code, name_zh, department, chronic)


@dataclass(frozen=True)
class ConditionChange:
    """What an administrator may change of a catalog entry (its ICD-10 code is its identity)."""

    name_zh: str
    name_en: str
    department: str
    chronic: bool
    active: bool


def get_condition(code: str) -> Condition:
    cond = db.session.get(Condition, code)
    if cond is None:
        raise NotFound("No such condition in the catalog.")
    return cond


def update_condition(code: str, change: ConditionChange) -> Condition:
    """Change a catalog entry's names, department, chronic flag and whether it is offered
    online; audited with what changed (old and new). Refusals name the field."""
    cond = get_condition(code)
    name_zh, name_en = change.name_zh.strip(), change.name_en.strip()
    if not name_zh or len(name_zh) > 100:
        raise Invalid(
            "The Chinese name is required, at most 100 characters.",
            fields=[{"loc": "name_zh", "message": "required, at most 100 characters"}],
        )
    if not name_en or len(name_en) > 200:
        raise Invalid(
            "The English name is required, at most 200 characters.",
            fields=[{"loc": "name_en", "message": "required, at most 200 characters"}],
        )
    dept = db.session.get(Department, change.department)
    if dept is None or not dept.approved:
        raise Invalid(
            "The department is not one of the institution's approved departments.",
            fields=[{"loc": "department", "message": "unknown department"}],
        )
    new = {
        "name_zh": name_zh,
        "name_en": name_en,
        "department": change.department,
        "chronic": change.chronic,
        "active": change.active,
    }
    changed = {k: [getattr(cond, k), v] for k, v in new.items() if getattr(cond, k) != v}
    if not changed:
        return cond
    for key, value in new.items():
        setattr(cond, key, value)
    db.session.flush()
    audit.record(
        db.session(), "condition.updated", subject_type="condition", subject_id=cond.code, detail={"changed": changed}
    )
    return cond


def all_conditions() -> list[Condition]:
    """The whole catalog for its administrators, those no longer offered online included."""
    return list(db.session.scalars(select(Condition).order_by(Condition.code)))


def seed_conditions() -> None:
    for code, zh, dept, chronic in DEFAULT_CONDITIONS:
        upsert_condition(code, zh, dept, chronic)


def list_conditions() -> list[Condition]:
    return list(db.session.scalars(select(Condition).where(Condition.active).order_by(Condition.code)))


def search_conditions(q: str, limit: int = 20) -> list[Condition]:
    """Conditions whose Chinese or English name or code contains the text (a patient types
    高血压, 糖尿病 …), or whose code a WHO / national edition code falls under."""
    text = q.strip()
    if not text:
        return list_conditions()[:limit]
    folded = text.casefold()
    found = [
        c
        for c in list_conditions()
        if folded in c.name_zh.casefold() or folded in c.name_en.casefold() or c.code.casefold().startswith(folded)
    ]
    parsed = rules.parse_icd10(text)
    if parsed is not None:
        cond = catalog_condition(parsed.who)
        if cond is not None and cond not in found:
            found.insert(0, cond)
    return found[:limit]


def condition_by_name(name: str) -> Condition | None:
    """The active catalog condition with exactly this Chinese (or English) name."""
    text = name.strip()
    return next((c for c in list_conditions() if text in (c.name_zh, c.name_en)), None)


def catalog_condition(icd10: str) -> Condition | None:
    codes = list(db.session.scalars(select(Condition.code).where(Condition.active)))
    match = rules.match_condition(icd10, codes)
    return db.session.get(Condition, match) if match else None


# --- proof of in-person diagnosis -----------------------------------------------------


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    key = as_uuid(value)
    if key is None:
        raise NotFound()
    return key


def submit_diagnosis(
    account: Account,
    patient_id: str,
    icd10: str,
    institution: str,
    diagnosed_on: date,
    document: bytes,
    document_kind: str = "outpatient_record",
) -> Diagnosis:
    session = db.session()
    patient = identity.patient_of_account(account, patient_id)
    parsed = rules.parse_icd10(icd10)
    if parsed is None:
        raise Invalid(
            f"{icd10!r} is not a valid ICD-10 code (WHO or national clinical edition 2.0).",
            fields=[{"loc": "icd10", "message": "not ICD-10"}],
        )
    code = parsed.who
    if diagnosed_on > date.today():
        raise Invalid("The diagnosis date is in the future.", fields=[{"loc": "diagnosed_on", "message": "future"}])
    if diagnosed_on < patient.birth_date:
        raise Invalid("The diagnosis date is before the patient's birth.", fields=[{"loc": "diagnosed_on"}])
    if document_kind not in rules.DOCUMENT_KINDS:
        raise Invalid("Unknown document kind.", fields=[{"loc": "document_kind", "message": "unknown"}])
    spend_upload_quota(account, len(document))
    sniffed = rules.sniff_upload(
        document,
        max_bytes=settings().MAX_DOCUMENT_BYTES,
        allow_pdf=True,
        max_image_bytes=settings().MAX_IMAGE_BYTES,
    )
    path = storage.save("diagnoses", document, sniffed.ext)
    cond = catalog_condition(code)
    diag = Diagnosis(
        patient_id=patient.id,
        submitted_by=account.id,
        icd10=code,
        icd10_national=parsed.national,
        institution=institution,
        diagnosed_on=diagnosed_on,
        document_kind=document_kind,
        document_path=path,
        document_type=sniffed.mime,
        document_sha256=hashlib.sha256(document).hexdigest(),
        department=cond.department if cond else None,
    )
    session.add(diag)
    session.flush()
    audit.record(
        session,
        "diagnosis.submitted",
        subject_type="diagnosis",
        subject_id=diag.id,
        detail={"icd10": code, "icd10_national": parsed.national},
    )
    return diag


def spend_upload_quota(account: Account, size: int) -> None:
    """Uploads per account: at most UPLOAD_COUNT_LIMIT files and UPLOAD_BYTES_PER_DAY bytes
    (429 past either); refused uploads count too, since they were decoded all the same."""
    limits.check("UPLOAD_COUNT_LIMIT", "uploads", str(account.id))
    key = f"upload-bytes/{account.id}"
    budget = settings().UPLOAD_BYTES_PER_DAY
    spent = limits.guard().incr(key, 24 * 3600, amount=max(size, 1))
    if spent > budget:
        raise RateLimited("Uploads are limited to %(mb)s MB a day per account.", params={"mb": budget >> 20})


def _physician(principal_id: str) -> Account:
    account = identity.get_account(principal_id)
    if account.role != Role.PHYSICIAN:
        raise Forbidden("Only physicians may do this.")
    return account


def _pending_diagnosis(diagnosis_id: str) -> Diagnosis:
    diag = db.session.get(Diagnosis, _uuid(diagnosis_id))
    if diag is None:
        raise NotFound()
    if diag.status != DiagnosisStatus.PENDING:
        raise Conflict(
            "The diagnosis has already been reviewed (%(status)s).",
            code="already_reviewed",
            params={"status": diag.status.value},
        )
    return diag


def confirm_diagnosis(who: Principal, diagnosis_id: str) -> Diagnosis:
    physician = _physician(who.id)
    face_services.require_fresh_face(who)
    diag = _pending_diagnosis(diagnosis_id)
    cond = catalog_condition(diag.icd10)
    if cond is None:
        raise NotEligibleCondition(
            "%(icd10)s is not a common or chronic condition that may be followed up online; "
            "the patient needs an in-person visit.",
            params={"icd10": diag.icd10},
        )
    identity.require_qualified_physician(physician, department=cond.department)
    record_confirmation(diag, physician.id, cond)
    notify(
        db.session(),
        account_id=diag.submitted_by,
        kind="proof_confirmed",
        link="/diagnoses",
        subject_type="diagnosis",
        subject_id=diag.id,
        condition=cond.name_zh,
    )
    return diag


def record_confirmation(diag: Diagnosis, physician_id: uuid.UUID | str, cond: Condition) -> Diagnosis:
    """Mark a proof confirmed under a catalog condition (after the checks above; also the demo's seed)."""
    diag.status = DiagnosisStatus.CONFIRMED
    diag.condition_code, diag.department = cond.code, cond.department
    diag.reviewed_by, diag.reviewed_at = _uuid(physician_id), utcnow()
    audit.record(
        db.session(),
        "diagnosis.confirmed",
        subject_type="diagnosis",
        subject_id=diag.id,
        detail={"condition": cond.code},
    )
    return diag


def reject_diagnosis(physician_id: str, diagnosis_id: str, reason: str) -> Diagnosis:
    session = db.session()
    physician = _physician(physician_id)
    diag = _pending_diagnosis(diagnosis_id)
    cond = catalog_condition(diag.icd10)
    identity.require_qualified_physician(physician, department=cond.department if cond else None)
    diag.status = DiagnosisStatus.REJECTED
    diag.rejection_reason = reason
    diag.reviewed_by, diag.reviewed_at = physician.id, utcnow()
    audit.record(session, "diagnosis.rejected", subject_type="diagnosis", subject_id=diag.id, detail={"reason": reason})
    notify(
        session,
        account_id=diag.submitted_by,
        kind="proof_rejected",
        link="/diagnoses",
        subject_type="diagnosis",
        subject_id=diag.id,
        reason=reason,
    )
    return diag


def diagnoses_of_account(account: Account) -> list[Diagnosis]:
    ids = [p.id for p in account.patients]
    if not ids:
        return []
    return list(
        db.session.scalars(select(Diagnosis).where(Diagnosis.patient_id.in_(ids)).order_by(Diagnosis.created_at.desc()))
    )


def pending_diagnoses_for(physician_id: str) -> list[Diagnosis]:
    physician = _physician(physician_id)
    dept = physician.staff.department_code if physician.staff else None
    query = select(Diagnosis).where(Diagnosis.status == DiagnosisStatus.PENDING)
    # Codes outside the catalog have no department: every physician sees them, to decline.
    query = query.where((Diagnosis.department == dept) | Diagnosis.department.is_(None))
    return list(db.session.scalars(query.order_by(Diagnosis.created_at).limit(200)))


def diagnosis_for(account: Account, diagnosis_id: str) -> Diagnosis:
    """A diagnosis the caller may see; anyone else gets 404 (its existence is not revealed).

    Patients: their own people's. Physicians: a pending proof in their department's queue
    (the same rows `pending_diagnoses_for` lists), one they reviewed themselves, or one of
    a patient they treat or have treated (a visit of theirs for that patient).
    """
    diag = db.session.get(Diagnosis, _uuid(diagnosis_id))
    if diag is None:
        raise NotFound()
    if account.role == Role.PATIENT and any(p.id == diag.patient_id for p in account.patients):
        return diag
    if account.role == Role.PHYSICIAN and _physician_may_read(account, diag):
        return diag
    raise NotFound()


def _physician_may_read(physician: Account, diag: Diagnosis) -> bool:
    dept = physician.staff.department_code if physician.staff else None
    if diag.status == DiagnosisStatus.PENDING and (diag.department is None or diag.department == dept):
        return True
    if diag.reviewed_by == physician.id:
        return True
    treats = exists().where(Visit.patient_id == diag.patient_id, Visit.physician_id == physician.id)
    return bool(db.session.scalar(select(treats)))


# --- informed consent -----------------------------------------------------------------

CONSENT_DIR = Path(__file__).resolve().parent / "consent"
_consents = TextShelf(CONSENT_DIR)


def current_consent() -> VersionedText:
    """The newest version shipped with the code (a new version is a new file and a deploy)."""
    return _consents.current()


class StaleConsent(Conflict):
    code = "stale_version"


def accept_consent(account: Account, patient_id: str, version: str) -> ConsentAcceptance:
    session = db.session()
    patient = identity.patient_of_account(account, patient_id)
    current = current_consent()
    if version != current.version:
        raise StaleConsent(
            "The consent text has changed; the current version is %(version)s.", params={"version": current.version}
        )
    acc = ConsentAcceptance(
        account_id=account.id,
        patient_id=patient.id,
        version=current.version,
        version_hash=current.sha256,
        client_ip=audit.current_actor().client_ip,
    )
    session.add(acc)
    session.flush()
    audit.record(
        session,
        "consent.accepted",
        subject_type="patient",
        subject_id=patient.id,
        detail={"version": current.version, "sha256": current.sha256},
    )
    return acc


def _consent_accepted(patient_id: Any, version_hash: Any) -> Exists:
    """The patient accepted this consent version (shared by the pages and the visit gate)."""
    return exists().where(ConsentAcceptance.patient_id == patient_id, ConsentAcceptance.version_hash == version_hash)


def has_current_consent(patient_id: uuid.UUID) -> bool:
    return bool(db.session.scalar(select(_consent_accepted(patient_id, current_consent().sha256))))


# --- suspension -----------------------------------------------------------------------


class ServiceSuspended(ServiceUnavailable):
    code = "service_suspended"


def _newest_switch(*what: Any) -> Select[Any]:
    """The newest row of the switch is its current state."""
    return select(*what).order_by(ServiceSwitch.id.desc()).limit(1)


def suspension() -> ServiceSwitch | None:
    row = db.session.scalars(_newest_switch(ServiceSwitch)).first()
    return row if row is not None and row.suspended else None


def set_suspension(admin_id: str, suspended: bool, reason: str) -> ServiceSwitch:
    session = db.session()
    admin = identity.get_account(admin_id)
    if admin.role != Role.ADMIN:
        raise Forbidden()
    row = ServiceSwitch(suspended=suspended, reason=reason, changed_by=admin.id)
    session.add(row)
    session.flush()
    audit.record(
        session,
        "service.suspended" if suspended else "service.resumed",
        subject_type="service",
        subject_id="online",
        detail={"reason": reason},
    )
    return row


def _refuse_if_suspended() -> None:
    row = suspension()
    if row is not None:
        raise ServiceSuspended(
            "Online services are suspended: %(reason)s", params={"reason": row.reason}, reason=row.reason
        )


# --- payments port --------------------------------------------------------------------


class PaymentsPort(Protocol):
    """What visits need from payments (clinic/payments provides it when PAYMENTS is on)."""

    def start(self, purpose: str, subject_id: uuid.UUID, amount_fen: int, description: str) -> dict[str, Any]: ...

    def refund(self, purpose: str, subject_id: uuid.UUID, reason: str) -> None: ...


def _payments() -> PaymentsPort | None:
    port: PaymentsPort | None = current_app.extensions.get("payments")
    return port


# --- visits ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewVisit:
    id: uuid.UUID
    status: VisitStatus
    fee_fen: int
    payment: dict[str, Any] | None


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
    suspended = _newest_switch(ServiceSwitch.suspended).scalar_subquery()
    consent = _consent_accepted(p.c.id, bindparam("consent_hash"))
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
    account_id: str | uuid.UUID,
    patient_id: str,
    diagnosis_id: str,
    department: str,
    complaint: str = "",
    physician_id: str | uuid.UUID | None = None,
) -> NewVisit:
    session = db.session()
    account_key = as_uuid(account_id)
    conn = session.connection()
    params = {
        "account_id": account_key,
        "patient_id": as_uuid(patient_id),
        "diagnosis_id": as_uuid(diagnosis_id),  # not an id: judged as absent, a first visit
        "consent_hash": current_consent().sha256,
        "department": department,
    }
    gate = conn.execute(_GATE_QUERY, params).first()
    if gate is None or gate.suspended:
        _refuse_if_suspended()  # 503 with the switch's reason, before anything else is said
        if gate is None:
            raise NotFound()  # another account's people are never revealed
    if gate.phone_verified_at is None:
        raise identity.PhoneNotVerified()  # the account's phone is confirmed before any visit
    if gate.open_visit_id is not None:
        raise _already_open(gate.open_visit_id)
    chosen = as_uuid(physician_id) if physician_id is not None else None
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
        physician_available=physician_id is None or physician_available(chosen, department),
    )
    violations = rules.visit_request_violations(facts)
    if violations:
        raise RuleRefusal(violations[0].code, violations)
    fee = settings().CONSULTATION_FEE_FEN
    port = _payments()
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
                "requested_physician_id": chosen,
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
            "physician": str(chosen) if chosen else None,
        },
    )
    payment = None
    if status == VisitStatus.AWAITING_PAYMENT and port is not None:
        payment = port.start("consultation", visit_id, fee, f"复诊 {visit_id}")
    return NewVisit(visit_id, status, fee_fen, payment)


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


def _load_visit(visit_id: str) -> Visit:
    return get_or_404(Visit, visit_id)


def visit_for(account: Account, visit_id: str) -> Visit:
    """A visit the caller takes part in; anyone else gets 404 (never revealed)."""
    visit = _load_visit(visit_id)
    if account.role == Role.PATIENT and visit.account_id == account.id:
        return visit
    if account.role == Role.PHYSICIAN:
        if visit.physician_id == account.id:
            return visit
        dept = account.staff.department_code if account.staff else None
        if (
            visit.status == VisitStatus.WAITING
            and dept == visit.department
            and visit.requested_physician_id in (None, account.id)
        ):
            return visit
    raise NotFound()


# What other domains add to a visit's history (prescriptions sit above this package and
# register a reader: visit ids -> {visit id: [what was prescribed]}).
_history_readers: list[Any] = []


def on_history(reader: Any) -> None:
    _history_readers.append(reader)


def patient_history(physician_id: str, visit: Visit, limit: int = 20) -> list[dict[str, Any]]:
    """The same patient's earlier visits that this physician may see (theirs, or their
    department's), newest first, with notes and whatever other domains add (prescriptions)."""
    physician = _physician(physician_id)
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
    extra: dict[Any, list[Any]] = {}
    for reader in _history_readers:
        for vid, found in reader([v.id for v in earlier] + [visit.id]).items():
            extra.setdefault(vid, []).extend(found)
    return [{"visit": v, "notes": list(v.notes), "prescriptions": extra.get(v.id, [])} for v in earlier] + [
        {"visit": visit, "notes": [], "prescriptions": extra.get(visit.id, []), "current": True}
    ]


def get_physician(physician_id: str) -> Account:
    return _physician(physician_id)


# Visits some physicians see first (a family-doctor team for its contracted patients): hooks
# registered by the app factory as app.extensions["visit_first"], each answering, for one
# physician and some waiting visits, {visit_id: "mine" (theirs first) | "held" (for others
# first, for now)}. The visit domain cannot import the packages above it.


def _first_for(physician: Account, visits: list[Visit]) -> dict[uuid.UUID, str]:
    out: dict[uuid.UUID, str] = {}
    for hook in current_app.extensions.get("visit_first", []):
        out.update(hook(physician, visits))
    return out


class HeldForTeam(Conflict):
    code = "held_for_team"
    default_message = "This visit is held for the patient's family doctor team for now; take another one."


def waiting_visits_for(physician_id: str) -> list[Visit]:
    """The physician's queue: visits that chose them, and (while on duty) their department's."""
    physician = _physician(physician_id)
    dept = physician.staff.department_code if physician.staff else None
    on_duty = bool(physician.staff and physician.staff.on_duty)
    mine = Visit.requested_physician_id == physician.id
    routed = or_(mine, Visit.requested_physician_id.is_(None)) if on_duty else mine
    rows = list(
        db.session.scalars(
            select(Visit)
            .where(Visit.status == VisitStatus.WAITING, Visit.department == dept, routed)
            .order_by(Visit.created_at)
            .limit(200)
        )
    )
    # contracted patients' visits: their family-doctor team's first, held from the others a while
    first = _first_for(physician, rows)
    theirs_first = [v for v in rows if first.get(v.id) == "mine"]
    return theirs_first + [v for v in rows if v.id not in first]


def queue_position(visit: Visit) -> int | None:
    """1 for the next visit to be taken in its queue; None once it is no longer waiting."""
    if visit.status != VisitStatus.WAITING:
        return None
    same_queue = (
        or_(Visit.requested_physician_id == visit.requested_physician_id, Visit.requested_physician_id.is_(None))
        if visit.requested_physician_id is not None
        else Visit.requested_physician_id.is_(None)
    )
    ahead = db.session.scalar(
        select(func.count())
        .select_from(Visit)
        .where(
            Visit.department == visit.department,
            Visit.status == VisitStatus.WAITING,
            Visit.created_at < visit.created_at,
            same_queue,
        )
    )
    return int(ahead or 0) + 1


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


def _physician_name(account: Account) -> str:
    return account.staff.name if account.staff else account.display_name


def _tell_patient(visit: Visit, kind: str, **kw: Any) -> None:
    notify(
        db.session(),
        account_id=visit.account_id,
        kind=kind,
        link=f"/visits/{visit.id}",
        subject_type="visit",
        subject_id=visit.id,
        **kw,
    )


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


def visits_of(account: Account) -> list[Visit]:
    if account.role == Role.PATIENT:
        query = select(Visit).where(Visit.account_id == account.id)
    else:
        query = select(Visit).where(Visit.physician_id == account.id)
    return list(db.session.scalars(query.order_by(Visit.created_at.desc()).limit(200)))


def accept_visit(who: Principal, visit_id: str) -> Visit:
    session = db.session()
    physician = _physician(who.id)
    face_services.require_fresh_face(who)
    visit = _load_visit(visit_id)
    identity.require_qualified_physician(physician, department=visit.department)
    if visit.requested_physician_id not in (None, physician.id):
        raise Forbidden("The patient chose another physician for this visit.")
    _refuse_if_suspended()
    if visit.status == VisitStatus.WAITING and _first_for(physician, [visit]).get(visit.id) == "held":
        raise HeldForTeam()
    _move(visit, rules.VisitEvent.ACCEPT)
    visit.physician_id, visit.accepted_at = physician.id, utcnow()
    audit.record(session, "visit.accepted", subject_type="visit", subject_id=visit.id)
    _tell_patient(visit, "visit_accepted", physician=_physician_name(physician))
    return visit


def _assigned(physician_id: str, visit_id: str) -> tuple[Account, Visit]:
    physician = _physician(physician_id)
    visit = visit_for(physician, visit_id)
    if visit.physician_id != physician.id:
        raise Forbidden("Only the visit's physician may do this.")
    return physician, visit


def post_message(account: Account, visit_id: str, text: str | None, image: bytes | None) -> VisitMessage:
    session = db.session()
    visit = visit_for(account, visit_id)
    if account.role == Role.PHYSICIAN and visit.physician_id != account.id:
        raise Forbidden("Accept the visit before writing in it.")
    if not rules.can_message(visit.status):
        raise rules.VisitClosed(
            "The visit is %(status)s; no more messages can be sent.", params={"status": visit.status.value}
        )
    if not text and image is None:
        raise Invalid("A message needs text or an image.")
    msg = VisitMessage(visit_id=visit.id, sender_id=account.id, sender_role=account.role.value, text=text or None)
    if image is not None:
        spend_upload_quota(account, len(image))
        sniffed = rules.sniff_upload(image, max_bytes=settings().MAX_IMAGE_BYTES, allow_pdf=False)
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
    if account.role == Role.PHYSICIAN and _patient_absent(visit):
        # At most one such SMS per visit per 10 minutes; the notification centre gets each.
        _tell_patient(visit, "visit_message", quiet_for=MESSAGE_SMS_QUIET, physician=_physician_name(account))
    return msg


def message_image(account: Account, visit_id: str, message_id: str) -> tuple[bytes, str]:
    visit = visit_for(account, visit_id)
    msg = db.session.get(VisitMessage, _uuid(message_id))
    if msg is None or msg.visit_id != visit.id or msg.image_path is None:
        raise NotFound()
    return storage.load(msg.image_path), msg.image_type or "application/octet-stream"


def complete_visit(physician_id: str, visit_id: str, note: str) -> Visit:
    session = db.session()
    physician, visit = _assigned(physician_id, visit_id)
    _move(visit, rules.VisitEvent.COMPLETE)
    visit.closed_at = utcnow()
    session.add(VisitNote(visit_id=visit.id, author_id=physician.id, kind="completion", text=note))
    audit.record(session, "visit.completed", subject_type="visit", subject_id=visit.id)
    _tell_patient(visit, "visit_completed")
    return visit


def terminate_visit(physician_id: str, visit_id: str, reason: str, referral_advice: str) -> Visit:
    """The condition changed or needs an examination: stop and send the patient in person."""
    session = db.session()
    physician, visit = _assigned(physician_id, visit_id)
    _move(visit, rules.VisitEvent.TERMINATE)
    visit.closed_at = utcnow()
    visit.termination_reason, visit.referral_advice = reason, referral_advice
    session.add(
        VisitNote(
            visit_id=visit.id, author_id=physician.id, kind="referral", text=f"{reason}\n\n{referral_advice}".strip()
        )
    )
    audit.record(session, "visit.referred", subject_type="visit", subject_id=visit.id, detail={"reason": reason[:200]})
    _tell_patient(visit, "visit_referred", advice=referral_advice)
    return visit


def cancel_visit(account: Account, visit_id: str, reason: str) -> Visit:
    """The patient before acceptance, or the institution (admin): cancel and refund."""
    session = db.session()
    if account.role == Role.ADMIN:
        visit = _load_visit(visit_id)
    elif account.role == Role.PATIENT:
        visit = visit_for(account, visit_id)
    else:
        raise Forbidden("Only the patient or the institution may cancel a visit.")
    _move(visit, rules.VisitEvent.CANCEL)
    visit.closed_at, visit.cancel_reason = utcnow(), reason
    audit.record(
        session, "visit.cancelled", subject_type="visit", subject_id=visit.id, detail={"by": account.role.value}
    )
    port = _payments()
    if port is not None and visit.fee_fen > 0:
        # Written first: if a physician accepted the visit meanwhile, this flush is refused
        # (409) before any money moves.
        session.flush()
        port.refund("consultation", visit.id, reason)  # refunds a paid fee, voids an unpaid one
    return visit


def video_grant(account: Account, visit_id: str) -> tuple[str, str]:
    """(identity, room) for a participant's Twilio Video token; only while in progress."""
    visit = visit_for(account, visit_id)
    if account.role == Role.PHYSICIAN and visit.physician_id != account.id:
        raise Forbidden("Only the visit's physician joins its video room.")
    if visit.status != VisitStatus.IN_PROGRESS:
        raise Conflict("The video room is open only while the visit is in progress.", code="visit_not_in_progress")
    audit.record(db.session(), "visit.video_token", subject_type="visit", subject_id=visit.id)
    return str(account.id), f"visit-{visit.id}"
