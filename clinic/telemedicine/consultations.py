"""Remote consultation (远程会诊) between institutions, and the fees between them.

The inviting institution's physician asks, for their own patient (who has accepted the
remote-consultation consent), a partner institution's department for an opinion; the
request travels as a signed FHIR message (Task, ServiceRequest, Patient with the minimum
identity, Condition; attachments follow as DocumentReference). On the invited side a
physician qualified in that department, face-verified and of at least the agreement's
title (Jilin measures Art. 14) accepts it, may ask back, and writes the opinion, signed
with their own key; it returns as a DiagnosticReport and the inviting physician
acknowledges it. Both sides keep a record keyed by the shared Task/ServiceRequest
identifier and move it with the one `rules.transition` function.

Fees (Jilin Art. 41–44): each completed consultation is owed by the inviting institution
to the invited one (its share of the agreed fee), never to the physician; each side draws a
monthly statement per partner, sends it signed, and compares it with the partner's.

Use cases load, apply the rules, change state, audit and enqueue; none commits.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from flask import current_app
from jose import jws
from jose.exceptions import JOSEError
from sqlalchemy import exists, select

from clinic.core import audit, storage
from clinic.core.db import as_uuid, db, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, RuleRefusal, Violation
from clinic.core.principal import Principal
from clinic.core.versioned_text import TextShelf, VersionedText
from clinic.notifications.services import notify
from clinic.telemedicine import envelope, rules, services
from clinic.telemedicine.models import (
    Consultation,
    ConsultationAttachment,
    ConsultationConsent,
    ConsultationNote,
    ConsultationOpinion,
    FederationMessage,
    PartnerInstitution,
    SettlementStatement,
)
from clinic.telemedicine.rules import N_, TaskEvent, TaskStatus
from clinic.visits import rules as visit_rules
from clinic.visits.models import Diagnosis, DiagnosisStatus, Visit
from identity import face_services
from identity import services as identity
from identity.models import Account, Patient, Role

TASK_SYSTEM = "urn:clinic:consultation"
DEPARTMENT_SYSTEM = "urn:clinic:department"
SIGNER_JWK_URL = "urn:clinic:signer-jwk"
SETTLEMENT_SYSTEM = "urn:clinic:settlement-month"
INVITING_SYSTEM = "urn:clinic:consultation-inviting"

EV_REQUEST = "consult-request"
EV_ATTACHMENT = "consult-attachment"
EV_ACCEPTED = "consult-accepted"
EV_NOTE = "consult-note"
EV_OPINION = "consult-opinion"
EV_REJECTED = "consult-rejected"
EV_CANCELLED = "consult-cancelled"
EV_STATEMENT = "settlement-statement"

INVITING, INVITED = "inviting", "invited"
URGENCIES = ("routine", "urgent")
ATTACHMENT_TYPES = ("application/pdf", "image/jpeg", "image/png")
DEFAULT_MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024  # base64 in an 8 MB signed message
MAX_ATTACHMENTS = 10
OPINION_TYP = "opinion+jws"

# --- pure rules ---------------------------------------------------------------------------

# Professional titles of physicians (卫生专业技术职称), lowest to highest
TITLE_RANKS = {"医师": 1, "住院医师": 1, "主治医师": 2, "副主任医师": 3, "主任医师": 4}
TITLES = ("住院医师", "主治医师", "副主任医师", "主任医师")


def title_rank(title: str | None) -> int:
    return TITLE_RANKS.get((title or "").strip(), 0)


def meets_title(title: str | None, required: str | None) -> bool:
    """A title at or above the agreement's requirement (none required: any physician)."""
    return not required or title_rank(title) >= title_rank(required)


def month_of(at: datetime) -> str:
    """The Beijing month (YYYY-MM) a completed consultation is settled in."""
    return at.astimezone(services.CHINA).strftime("%Y-%m")


def valid_month(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m")
    except ValueError:
        return False
    return len(text) == 7


@dataclass(frozen=True)
class StatementLine:
    task_id: str
    we_invited: bool  # this side was the inviting institution
    fee_fen: int
    inviting_share_fen: int
    invited_share_fen: int


@dataclass(frozen=True)
class Statement:
    lines: tuple[StatementLine, ...]

    @property
    def count(self) -> int:
        return len(self.lines)

    @property
    def total_fen(self) -> int:
        return sum(line.fee_fen for line in self.lines)

    @property
    def inviting_share_fen(self) -> int:
        return sum(line.inviting_share_fen for line in self.lines)

    @property
    def invited_share_fen(self) -> int:
        return sum(line.invited_share_fen for line in self.lines)

    @property
    def owed_to_partner_fen(self) -> int:
        """What this institution owes the partner: the invited share where it invited."""
        return sum(line.invited_share_fen for line in self.lines if line.we_invited)

    @property
    def owed_by_partner_fen(self) -> int:
        return sum(line.invited_share_fen for line in self.lines if not line.we_invited)


@dataclass(frozen=True)
class Reconciliation:
    matches: bool
    count: int  # ours minus the partner's
    total_fen: int
    inviting_share_fen: int
    invited_share_fen: int
    only_here: list[str] = field(default_factory=list)
    only_partner: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)


def reconcile(ours: Statement, theirs: Statement) -> Reconciliation:
    """Compare our statement with the partner's (whose `we_invited` is from its side): the
    same consultations, each with the same fee and shares, and opposite roles."""
    mine = {line.task_id: line for line in ours.lines}
    other = {line.task_id: line for line in theirs.lines}
    differing = sorted(
        t
        for t in mine.keys() & other.keys()
        if (mine[t].fee_fen, mine[t].inviting_share_fen, mine[t].invited_share_fen, mine[t].we_invited)
        != (other[t].fee_fen, other[t].inviting_share_fen, other[t].invited_share_fen, not other[t].we_invited)
    )
    only_here = sorted(mine.keys() - other.keys())
    only_partner = sorted(other.keys() - mine.keys())
    return Reconciliation(
        matches=not (differing or only_here or only_partner),
        count=ours.count - theirs.count,
        total_fen=ours.total_fen - theirs.total_fen,
        inviting_share_fen=ours.inviting_share_fen - theirs.inviting_share_fen,
        invited_share_fen=ours.invited_share_fen - theirs.invited_share_fen,
        only_here=only_here,
        only_partner=only_partner,
        differing=differing,
    )


# --- refusals -------------------------------------------------------------------------------


class ConsentRequired(Invalid):
    code = "consent_required"
    default_message = N_(
        "The patient (or guardian) has not accepted the current remote-consultation consent; ask them to first."
    )


class StaleConsent(Conflict):
    code = "stale_version"


class BadAttachment(Invalid):
    code = "invalid_upload"


def _refuse(err: DomainError, consultation: Consultation | None = None, **detail: Any) -> DomainError:
    """A refusal kept in the audit trail (and nothing else: it is raised before any write)."""
    audit.record(
        db.session(),
        "consultation.refused",
        subject_type="consultation" if consultation is not None else None,
        subject_id=consultation.id if consultation is not None else None,
        detail={"code": err.code, **detail},
    )
    err.persist = True
    return err


# --- the remote-consultation consent ---------------------------------------------------------

CONSENT_DIR = Path(__file__).resolve().parent / "consult_consent"
_consents = TextShelf(CONSENT_DIR)


def current_consent() -> VersionedText:
    return _consents.current()


def accept_consent(account: Account, patient_id: str, version: str) -> ConsultationConsent:
    """The patient (or the guardian holding the account) accepts the current text."""
    session = db.session()
    patient = identity.patient_of_account(account, patient_id)
    current = current_consent()
    if version != current.version:
        raise StaleConsent(
            N_("The remote-consultation consent has changed; the current version is %(version)s."),
            params={"version": current.version},
        )
    acc = ConsultationConsent(
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
        "consultation.consent_accepted",
        subject_type="patient",
        subject_id=patient.id,
        detail={"version": current.version, "sha256": current.sha256},
    )
    return acc


def current_consent_of(patient_id: uuid.UUID) -> ConsultationConsent | None:
    return db.session.scalar(
        select(ConsultationConsent)
        .where(
            ConsultationConsent.patient_id == patient_id,
            ConsultationConsent.version_hash == current_consent().sha256,
        )
        .order_by(ConsultationConsent.accepted_at.desc())
    )


# --- helpers ----------------------------------------------------------------------------------


def _physician(principal_id: str) -> Account:
    account = identity.get_account(principal_id)
    if account.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only physicians may do this."))
    return account


def _name(account: Account) -> str:
    return account.staff.name if account.staff else account.username


def _title(account: Account) -> str:
    return account.staff.title if account.staff else ""


def _department(account: Account) -> str | None:
    return account.staff.department_code if account.staff else None


def _treats(physician: Account, patient_id: uuid.UUID) -> bool:
    return bool(
        db.session.scalar(select(exists().where(Visit.patient_id == patient_id, Visit.physician_id == physician.id)))
    )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _consult_agreement(partner: PartnerInstitution, department: str) -> None:
    """The agreement must be in force, cover consultations and this department."""
    if not services.agreement_in_force(partner):
        raise services.NoAgreement(
            N_("There is no cooperation agreement in force with %(name)s (valid %(start)s to %(end)s)."),
            params={
                "name": partner.name,
                "start": partner.valid_from.isoformat(),
                "end": partner.valid_until.isoformat(),
            },
        )
    if "consultation" not in (partner.services or []):
        raise services.NoAgreement(
            N_("The agreement with %(name)s does not cover remote consultations."), params={"name": partner.name}
        )
    if partner.departments and department not in partner.departments:
        raise services.NoAgreement(
            N_("The agreement with %(name)s does not cover the department %(department)s."),
            params={"name": partner.name, "department": department},
        )


def _move(c: Consultation, event: TaskEvent, **detail: Any) -> None:
    before = c.status
    c.status = rules.transition(TaskStatus(c.status), event).value
    audit.record(
        db.session(),
        f"consultation.{c.status.replace('-', '_')}",
        subject_type="consultation",
        subject_id=c.id,
        detail={"task_id": c.task_id, "role": c.role, "from": before, "event": event.value, **detail},
    )


STATUS_ZH = {
    "requested": "待接受",
    "accepted": "已接受",
    "in-progress": "进行中",
    "completed": "已出具会诊意见",
    "rejected": "已拒绝",
    "cancelled": "已撤回",
    "failed": "未能送达",
}
URGENCY_ZH = {"routine": "普通", "urgent": "紧急"}


def _tell_requester(c: Consultation) -> None:
    """In-app note to the inviting physician that the consultation moved on (no SMS)."""
    if c.role != INVITING or c.requested_by is None:
        return
    notify(
        db.session(),
        account_id=c.requested_by,
        kind="consultation_answered",
        link=f"/physician/consultations/{c.id}",
        subject_type="consultation",
        subject_id=c.id,
        sms=False,
        patient=patient_of(c).get("name", ""),
        institution=c.partner.name,
        status=STATUS_ZH.get(c.status, c.status),
    )


def _tell_department(c: Consultation) -> None:
    """In-app note to the invited department's active physicians: a request is waiting."""
    doctors = db.session.scalars(select(Account).where(Account.role == Role.PHYSICIAN, Account.active.is_(True))).all()
    for doctor in doctors:
        if _department(doctor) == c.department:
            notify(
                db.session(),
                account_id=doctor.id,
                kind="consultation_received",
                link=f"/physician/consultations/{c.id}",
                subject_type="consultation",
                subject_id=c.id,
                sms=False,
                institution=c.partner.name,
                urgency=URGENCY_ZH.get(c.urgency, c.urgency),
            )


def _task(c: Consultation) -> dict[str, Any]:
    """The Task that names the consultation in every message after the request."""
    return {
        "resourceType": "Task",
        "id": str(uuid.uuid4()),
        "identifier": [{"system": TASK_SYSTEM, "value": c.task_id}],
        "basedOn": [{"reference": f"ServiceRequest/{c.task_id}"}],
        "status": c.status,
        "intent": "order",
        "priority": c.urgency,
        "code": {"text": "远程会诊"},
    }


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])[1:]
        if isinstance(e, dict) and isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == kind
    ]


def _task_id_of(bundle: dict[str, Any]) -> str:
    for res in _resources(bundle, "Task") + _resources(bundle, "ServiceRequest"):
        for ident in res.get("identifier", []):
            if ident.get("system") == TASK_SYSTEM and isinstance(ident.get("value"), str):
                return str(ident["value"])
    raise services.BadMessage(N_("The message names no consultation (Task identifier)."))


def _ours(partner: PartnerInstitution, role: str, task_id: str) -> Consultation:
    c = db.session.scalar(
        select(Consultation).where(
            Consultation.partner_id == partner.id, Consultation.role == role, Consultation.task_id == task_id
        )
    )
    if c is None:
        raise NotFound(N_("No such consultation with this institution."))
    return c


# --- requesting (the inviting side) ------------------------------------------------------------


@dataclass(frozen=True)
class ConsultationRequest:
    patient_id: str
    institution_id: str
    department: str
    question: str
    summary: str
    urgency: str
    present_physician_ids: tuple[str, ...]
    visit_id: str | None = None


def request_consultation(who: Principal, req: ConsultationRequest) -> Consultation:
    """A physician asks a partner institution's department for a remote consultation for
    their own patient. Every check comes before any write: a refusal leaves only its audit
    entry."""
    session = db.session()
    physician = _physician(who.id)
    face_services.require_fresh_face(who)
    identity.require_qualified_physician(physician)
    pid = as_uuid(req.patient_id)
    patient = session.get(Patient, pid) if pid else None
    if patient is None or not _treats(physician, patient.id):
        raise NotFound(N_("No such patient among yours."))
    visit: Visit | None = None
    if req.visit_id:
        vid = as_uuid(req.visit_id)
        visit = session.get(Visit, vid) if vid else None
        if visit is None or visit.patient_id != patient.id or visit.physician_id != physician.id:
            raise NotFound(N_("No such visit of yours with this patient."))
    partner_key = as_uuid(req.institution_id)
    partner = session.get(PartnerInstitution, partner_key) if partner_key else None
    if partner is None:
        raise _refuse(services.NoAgreement(N_("There is no cooperation agreement with that institution.")))
    try:
        _consult_agreement(partner, req.department)
    except services.NoAgreement as err:
        raise _refuse(err, partner_id=str(partner.id)) from None
    consent = current_consent_of(patient.id)
    if consent is None:
        raise _refuse(ConsentRequired(), patient_id=str(patient.id))
    violations: list[Violation] = []
    if req.urgency not in URGENCIES:
        violations.append(Violation("invalid", N_("The urgency is routine or urgent."), detail={"loc": "urgency"}))
    present: list[Account] = []
    for raw in dict.fromkeys(req.present_physician_ids or (str(physician.id),)):
        key = as_uuid(raw)
        acc = session.get(Account, key) if key else None
        if acc is None or acc.role != Role.PHYSICIAN or not acc.active:
            violations.append(
                Violation(
                    "invalid",
                    N_("Each physician named as present must be an active physician of this institution."),
                    detail={"loc": "present_physician_ids"},
                )
            )
            break
        present.append(acc)
    if violations:
        raise RuleRefusal("invalid", violations, lead=N_("The consultation request is not valid:"))
    conditions = [
        {"icd10": d.icd10, "name": d.condition.name_zh if d.condition else d.icd10}
        for d in session.scalars(
            select(Diagnosis)
            .where(Diagnosis.patient_id == patient.id, Diagnosis.status == DiagnosisStatus.CONFIRMED)
            .order_by(Diagnosis.created_at)
        )
    ]
    task_id = str(uuid.uuid4())
    c = Consultation(
        task_id=task_id,
        role=INVITING,
        partner_id=partner.id,
        status=TaskStatus.REQUESTED.value,
        department=req.department,
        urgency=req.urgency,
        question=req.question,
        summary=req.summary,
        patient_id=patient.id,
        visit_id=visit.id if visit else None,
        requested_by=physician.id,
        consent_id=consent.id,
        patient_json=json.dumps(
            {"name": patient.name, "sex": patient.sex, "birth_date": patient.birth_date.isoformat()},
            ensure_ascii=False,
        ),
        conditions=conditions,
        requester_name=_name(physician),
        present_physicians=[{"id": str(a.id), "name": _name(a), "title": _title(a)} for a in present],
        fee_fen=partner.fee_fen,
        split_inviting=partner.split_inviting,
        split_invited=partner.split_invited,
    )
    session.add(c)
    session.flush()
    audit.record(
        session,
        "consultation.requested",
        subject_type="consultation",
        subject_id=c.id,
        detail={
            "task_id": task_id,
            "partner_id": str(partner.id),
            "patient_id": str(patient.id),
            "department": c.department,
            "urgency": c.urgency,
            "consent_version": consent.version,
            "present": [p["id"] for p in c.present_physicians],
        },
    )
    services.send(partner.id, EV_REQUEST, _request_resources(c, patient))
    return c


def _request_resources(c: Consultation, patient: Patient) -> list[dict[str, Any]]:
    ident = [{"system": TASK_SYSTEM, "value": c.task_id}]
    pref = {"reference": f"Patient/{patient.id}"}
    authored = _iso(c.requested_at or utcnow())
    present = "、".join(f"{p['name']}（{p['title']}）" if p.get("title") else p["name"] for p in c.present_physicians)
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Task",
            "id": str(uuid.uuid4()),
            "identifier": ident,
            "basedOn": [{"reference": f"ServiceRequest/{c.task_id}"}],
            "status": "requested",
            "intent": "order",
            "priority": c.urgency,
            "code": {"text": "远程会诊"},
            "description": c.question,
            "for": pref,
            "authoredOn": authored,
            "requester": {"display": c.requester_name},
            "note": [{"text": f"在场医师：{present}"}],
        },
        {
            "resourceType": "ServiceRequest",
            "id": c.task_id,
            "identifier": ident,
            "status": "active",
            "intent": "order",
            "priority": c.urgency,
            "code": {"text": "远程会诊"},
            "subject": pref,
            "authoredOn": authored,
            "requester": {"display": c.requester_name},
            "performerType": {"coding": [{"system": DEPARTMENT_SYSTEM, "code": c.department}]},
            "reasonCode": [{"text": c.question}],
            "note": [{"text": c.summary}],
        },
        {
            "resourceType": "Patient",
            "id": str(patient.id),
            "name": [{"text": patient.name}],
            "gender": patient.sex if patient.sex in ("male", "female") else "unknown",
            "birthDate": patient.birth_date.isoformat(),
        },
    ]
    for cond in c.conditions:
        resources.append(
            {
                "resourceType": "Condition",
                "id": str(uuid.uuid4()),
                "clinicalStatus": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
                },
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "confirmed",
                        }
                    ]
                },
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": cond["icd10"]}],
                    "text": cond["name"],
                },
                "subject": pref,
            }
        )
    return resources


def add_attachment(account_id: str, consultation_id: str, filename: str, data: bytes) -> ConsultationAttachment:
    """A record, image or ECG/lab PDF for a requested consultation (the inviting physician):
    PDF, JPEG or PNG by its bytes, at most CONSULT_MAX_ATTACHMENT_BYTES; it follows the
    request to the partner as a DocumentReference."""
    session = db.session()
    physician = _physician(account_id)
    c = consultation_for(physician, consultation_id)
    if c.role != INVITING or c.requested_by != physician.id:
        raise Forbidden(N_("Only the requesting physician adds attachments."))
    if TaskStatus(c.status) in rules.TERMINAL:
        raise Conflict(N_("The consultation is closed; nothing more can be added."), code="consultation_closed")
    count = len(
        list(session.scalars(select(ConsultationAttachment.id).where(ConsultationAttachment.consultation_id == c.id)))
    )
    if count >= MAX_ATTACHMENTS:
        raise Invalid(N_("At most %(n)s attachments per consultation."), params={"n": MAX_ATTACHMENTS})
    limit = int(current_app.config.get("CONSULT_MAX_ATTACHMENT_BYTES", DEFAULT_MAX_ATTACHMENT_BYTES))
    try:
        sniffed = visit_rules.sniff_upload(data, max_bytes=limit, allow_pdf=True)
    except DomainError as err:
        raise _refuse(err, c, reason=err.code, size=len(data)) from None
    if sniffed.mime not in ATTACHMENT_TYPES:
        raise _refuse(
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
                    "creation": _iso(att.created_at or utcnow()),
                }
            }
        ],
    }
    services.send(c.partner_id, EV_ATTACHMENT, [_task(c), doc])
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
    account: Account, consultation_id: str, attachment_id: str
) -> tuple[ConsultationAttachment, bytes]:
    c = consultation_for(account, consultation_id)
    aid = as_uuid(attachment_id)
    att = db.session.get(ConsultationAttachment, aid) if aid else None
    if att is None or att.consultation_id != c.id:
        raise NotFound()
    return att, storage.load(att.path)


def _reason(reason: str) -> str:
    """Declining or withdrawing says why: the other institution's physician reads it."""
    reason = " ".join(reason.split())
    if not reason:
        raise Invalid(N_("Say why (the other institution's physician reads it)."), field="reason")
    return reason


def cancel(physician_id: str, consultation_id: str, reason: str) -> Consultation:
    physician = _physician(physician_id)
    c = consultation_for(physician, consultation_id)
    if c.role != INVITING or c.requested_by != physician.id:
        raise Forbidden(N_("Only the requesting physician may withdraw the request."))
    reason = _reason(reason)
    _move(c, TaskEvent.CANCEL, reason=reason)
    services.send(c.partner_id, EV_CANCELLED, [{**_task(c), "statusReason": {"text": reason}}])
    return c


def acknowledge(physician_id: str, consultation_id: str) -> Consultation:
    """The inviting physician has read the opinion (it is in the patient's record)."""
    physician = _physician(physician_id)
    c = consultation_for(physician, consultation_id)
    if c.role != INVITING:
        raise Forbidden(N_("The inviting institution's physician acknowledges the opinion."))
    if c.status != TaskStatus.COMPLETED.value:
        raise Conflict(N_("There is no opinion to acknowledge yet."), code="no_opinion")
    if c.acknowledged_at is None:
        c.acknowledged_at, c.acknowledged_by = utcnow(), physician.id
        audit.record(
            db.session(),
            "consultation.acknowledged",
            subject_type="consultation",
            subject_id=c.id,
            detail={"task_id": c.task_id},
        )
    return c


# --- answering (the invited side) -----------------------------------------------------------------


def accept(who: Principal, consultation_id: str) -> Consultation:
    """A physician of the invited department takes the consultation: face-fresh, qualified
    there, and of at least the title the agreement requires (Jilin Art. 14)."""
    physician = _physician(who.id)
    face_services.require_fresh_face(who)
    c = consultation_for(physician, consultation_id)
    if c.role != INVITED:
        raise Forbidden(N_("The invited institution's physicians accept consultations."))
    try:
        identity.require_qualified_physician(physician, department=c.department)
    except DomainError as err:
        raise _refuse(err, c, physician=str(physician.id)) from None
    required = c.partner.consult_min_title
    if not meets_title(_title(physician), required):
        raise _refuse(
            RuleRefusal(
                "not_qualified",
                [
                    Violation(
                        "title_below_requirement",
                        N_("The agreement requires a %(required)s or above to answer its consultations."),
                        detail={"required": required, "title": _title(physician)},
                    )
                ],
                lead=N_("The physician may not answer this consultation:"),
            ).with_status(403),
            c,
            physician=str(physician.id),
            title=_title(physician),
            required=required,
        ) from None
    _move(c, TaskEvent.ACCEPT, physician=str(physician.id))
    c.accepted_by, c.accepted_at = physician.id, utcnow()
    c.specialist_name, c.specialist_title = _name(physician), _title(physician)
    task = _task(c)
    task["owner"] = {"display": f"{c.specialist_name}（{c.specialist_title}）"}
    task["lastModified"] = _iso(c.accepted_at)
    services.send(c.partner_id, EV_ACCEPTED, [task])
    return c


def decline(physician_id: str, consultation_id: str, reason: str) -> Consultation:
    physician = _physician(physician_id)
    c = consultation_for(physician, consultation_id)
    if c.role != INVITED or _department(physician) != c.department:
        raise Forbidden(N_("A physician of the invited department declines consultations."))
    reason = _reason(reason)
    _move(c, TaskEvent.REJECT, reason=reason)
    services.send(c.partner_id, EV_REJECTED, [{**_task(c), "statusReason": {"text": reason}}])
    return c


def write_note(account_id: str, consultation_id: str, text: str) -> ConsultationNote:
    """A question asked back by the specialist, or the inviting physician's answer."""
    physician = _physician(account_id)
    c = consultation_for(physician, consultation_id)
    if c.role == INVITED and c.accepted_by != physician.id:
        raise Forbidden(N_("Accept the consultation before writing in it."))
    if TaskStatus(c.status) in rules.TERMINAL:
        raise Conflict(N_("The consultation is closed."), code="consultation_closed")
    if c.role == INVITED and c.status == TaskStatus.ACCEPTED.value:
        _move(c, TaskEvent.START)
    note = _store_note(c, str(uuid.uuid4()), c.role, _name(physician), text)
    communication = {
        "resourceType": "Communication",
        "id": note.shared_id,
        "status": "completed",
        "sent": _iso(note.created_at),
        "sender": {"display": note.author_name},
        "payload": [{"contentString": text}],
    }
    services.send(c.partner_id, EV_NOTE, [_task(c), communication])
    return note


def _store_note(c: Consultation, shared_id: str, side: str, author: str, text: str) -> ConsultationNote:
    note = ConsultationNote(
        consultation_id=c.id, shared_id=shared_id, side=side, author_name=author, text=text, created_at=utcnow()
    )
    db.session.add(note)
    db.session.flush()
    audit.record(
        db.session(),
        "consultation.note",
        subject_type="consultation",
        subject_id=c.id,
        detail={"note": str(note.id), "side": side},
    )
    return note


def _sign_opinion(physician: Account, content: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Sign with the physician's own key (the one their prescriptions are signed with)."""
    from prescriptions import signing

    key = signing.ensure_key(physician.id)
    token = jws.sign(
        signing.canonical_json(content).encode(),
        key.private_key.decode(),
        headers={"kid": key.kid, "typ": OPINION_TYP},
        algorithm="ES256",
    )
    return str(token), key.kid, dict(key.public_jwk)


def write_opinion(who: Principal, consultation_id: str, opinion: str, recommendations: str) -> Consultation:
    """The accepting specialist's opinion (会诊意见), signed with their own key, sent back
    as a DiagnosticReport; the consultation is completed on both sides."""
    physician = _physician(who.id)
    face_services.require_fresh_face(who)
    c = consultation_for(physician, consultation_id)
    if c.role != INVITED or c.accepted_by != physician.id:
        raise Forbidden(N_("Only the specialist who accepted the consultation writes its opinion."))
    signed_at = utcnow().replace(microsecond=0)
    content: dict[str, Any] = {
        "type": "consultation_opinion",
        "task_id": c.task_id,
        "opinion": opinion,
        "recommendations": recommendations,
        "signer": {
            "name": _name(physician),
            "title": _title(physician),
            "department": c.department,
            "license_no": physician.staff.license_no if physician.staff else None,
        },
        "institution": services.own_name(),
        "signed_at": _iso(signed_at),
    }
    token, kid, jwk = _sign_opinion(physician, content)
    _move(c, TaskEvent.COMPLETE, physician=str(physician.id), signer_kid=kid)
    c.completed_at = signed_at
    _store_opinion(c, content, token, kid, jwk, signed_at)
    report = {
        "resourceType": "DiagnosticReport",
        "id": str(uuid.uuid4()),
        "extension": [{"url": SIGNER_JWK_URL, "valueString": json.dumps(jwk, sort_keys=True)}],
        "identifier": [{"system": TASK_SYSTEM, "value": c.task_id}],
        "basedOn": [{"reference": f"ServiceRequest/{c.task_id}"}],
        "status": "final",
        "code": {"text": "远程会诊意见"},
        "issued": _iso(signed_at),
        "performer": [{"display": f"{_name(physician)}（{_title(physician)}）"}],
        "conclusion": opinion,
        "presentedForm": [
            {"contentType": "application/jose", "data": base64.b64encode(token.encode()).decode(), "title": "会诊意见"}
        ],
    }
    services.send(c.partner_id, EV_OPINION, [_task(c), report])
    return c


def _store_opinion(
    c: Consultation, content: dict[str, Any], token: str, kid: str, jwk: dict[str, Any], signed_at: datetime
) -> ConsultationOpinion:
    signer = content.get("signer") or {}
    op = ConsultationOpinion(
        consultation_id=c.id,
        opinion=str(content["opinion"]),
        recommendations=str(content.get("recommendations") or ""),
        jws=token,
        signer_kid=kid,
        signer_jwk=jwk,
        signer_name=str(signer.get("name") or "")[:100],
        signer_title=str(signer.get("title") or "")[:64],
        signed_at=signed_at,
    )
    db.session.add(op)
    db.session.flush()
    audit.record(
        db.session(),
        "consultation.opinion_signed" if c.role == INVITED else "consultation.opinion_received",
        subject_type="consultation",
        subject_id=c.id,
        detail={"task_id": c.task_id, "signer_kid": kid, "sha256": hashlib.sha256(token.encode()).hexdigest()},
    )
    return op


def verify_opinion(token: str, jwk: dict[str, Any]) -> dict[str, Any]:
    """The signed opinion's content, or BadSignature."""
    try:
        header = jws.get_unverified_header(token)
        if header.get("alg") != "ES256" or header.get("kid") != jwk.get("kid"):
            raise services.BadSignature(N_("The opinion is not signed with the key the message names."))
        content = json.loads(jws.verify(token, jwk, algorithms=["ES256"]))
    except (JOSEError, ValueError) as exc:
        raise services.BadSignature(N_("The opinion's signature does not verify.")) from exc
    if not isinstance(content, dict) or content.get("type") != "consultation_opinion":
        raise services.BadSignature(N_("The signed content is not a consultation opinion."))
    return content


# --- reading ----------------------------------------------------------------------------------------


def may_read(account: Account, c: Consultation) -> bool:
    if account.role == Role.ADMIN:
        return True
    if account.role != Role.PHYSICIAN:
        return False
    if c.role == INVITING:
        return c.requested_by == account.id or any(p.get("id") == str(account.id) for p in c.present_physicians)
    return c.accepted_by == account.id or (c.accepted_by is None and _department(account) == c.department)


def consultation_for(account: Account, consultation_id: str | uuid.UUID) -> Consultation:
    cid = as_uuid(consultation_id)
    c = db.session.get(Consultation, cid) if cid else None
    if c is None or not may_read(account, c):
        raise NotFound()
    return c


def consultations_of(account: Account, role: str | None, status: str | None) -> list[Consultation]:
    query = select(Consultation)
    if role:
        query = query.where(Consultation.role == role)
    if status:
        query = query.where(Consultation.status == status)
    rows = db.session.scalars(query.order_by(Consultation.created_at.desc()).limit(500))
    return [c for c in rows if may_read(account, c)][:200]


def consultations_of_patient(patient_id: uuid.UUID) -> list[Consultation]:
    return list(
        db.session.scalars(
            select(Consultation)
            .where(Consultation.patient_id == patient_id, Consultation.role == INVITING)
            .order_by(Consultation.created_at.desc())
        )
    )


def attachments_of(c: Consultation) -> list[ConsultationAttachment]:
    return list(
        db.session.scalars(
            select(ConsultationAttachment)
            .where(ConsultationAttachment.consultation_id == c.id)
            .order_by(ConsultationAttachment.created_at)
        )
    )


def notes_of(c: Consultation) -> list[ConsultationNote]:
    return list(
        db.session.scalars(
            select(ConsultationNote)
            .where(ConsultationNote.consultation_id == c.id)
            .order_by(ConsultationNote.created_at)
        )
    )


def opinion_of(c: Consultation) -> ConsultationOpinion | None:
    return db.session.scalar(select(ConsultationOpinion).where(ConsultationOpinion.consultation_id == c.id))


def patient_of(c: Consultation) -> dict[str, Any]:
    try:
        data = json.loads(c.patient_json or "{}")
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


# --- received messages ------------------------------------------------------------------------------


def _on_request(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    requests_ = _resources(bundle, "ServiceRequest")
    sr = requests_[0] if requests_ else None
    tasks = _resources(bundle, "Task")
    patients = _resources(bundle, "Patient")
    if sr is None or not tasks or not patients:
        raise services.BadMessage(N_("A consultation request carries a Task, a ServiceRequest and a Patient."))
    task_id = _task_id_of(bundle)
    codings = (sr.get("performerType") or {}).get("coding") or []
    department = next((str(c.get("code")) for c in codings if c.get("system") == DEPARTMENT_SYSTEM), "")
    if not department:
        raise services.BadMessage(N_("The consultation request names no department."))
    _consult_agreement(partner, department)
    task, pat = tasks[0], patients[0]
    priority = str(sr.get("priority") or "routine")
    notes = sr.get("note") or [{}]
    present = next((n.get("text", "") for n in task.get("note") or []), "")
    c = Consultation(
        task_id=task_id,
        role=INVITED,
        partner_id=partner.id,
        status=TaskStatus.REQUESTED.value,
        department=department[:64],
        urgency=priority if priority in URGENCIES else "routine",
        question=str(task.get("description") or next((r.get("text") for r in sr.get("reasonCode") or []), "")),
        summary=str(notes[0].get("text") or ""),
        patient_json=json.dumps(
            {
                "name": next((n.get("text") for n in pat.get("name") or []), ""),
                "sex": pat.get("gender", ""),
                "birth_date": pat.get("birthDate", ""),
            },
            ensure_ascii=False,
        ),
        conditions=[
            {
                "icd10": next((cd.get("code") for cd in (cond.get("code") or {}).get("coding") or []), ""),
                "name": (cond.get("code") or {}).get("text", ""),
            }
            for cond in _resources(bundle, "Condition")
        ],
        requester_name=str((sr.get("requester") or {}).get("display") or "")[:100],
        present_physicians=[{"name": present.removeprefix("在场医师：")}] if present else [],
        fee_fen=partner.fee_fen,
        split_inviting=partner.split_inviting,
        split_invited=partner.split_invited,
        requested_at=_parse_time(sr.get("authoredOn")) or utcnow(),
    )
    db.session.add(c)
    db.session.flush()
    audit.record(
        db.session(),
        "consultation.received",
        subject_type="consultation",
        subject_id=c.id,
        detail={"task_id": task_id, "partner_id": str(partner.id), "department": department},
    )
    _tell_department(c)


def _on_attachment(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    c = _ours(partner, INVITED, _task_id_of(bundle))
    for doc in _resources(bundle, "DocumentReference"):
        att = (doc.get("content") or [{}])[0].get("attachment") or {}
        try:
            data = base64.b64decode(att.get("data") or "", validate=True)
        except ValueError:
            raise services.BadMessage(N_("The attachment's data is not base64.")) from None
        limit = int(current_app.config.get("CONSULT_MAX_ATTACHMENT_BYTES", DEFAULT_MAX_ATTACHMENT_BYTES))
        sniffed = visit_rules.sniff_upload(data, max_bytes=limit, allow_pdf=True)
        if sniffed.mime not in ATTACHMENT_TYPES:
            raise BadAttachment(N_("Only PDF, JPEG or PNG files are accepted for a consultation."))
        _store_attachment(c, str(doc.get("id")), str(att.get("title") or ""), data, sniffed.mime, sniffed.ext, None)


def _on_accepted(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    c = _ours(partner, INVITING, _task_id_of(bundle))
    task = _resources(bundle, "Task")[0]
    owner = str((task.get("owner") or {}).get("display") or "")
    name, _, title = owner.partition("（")
    c.specialist_name, c.specialist_title = name[:100], title.rstrip("）")[:64]
    c.accepted_at = _parse_time(task.get("lastModified")) or utcnow()
    if c.status == TaskStatus.REQUESTED.value:
        _move(c, TaskEvent.ACCEPT, specialist=c.specialist_name)
        _tell_requester(c)


def _on_note(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    task_id = _task_id_of(bundle)
    c = db.session.scalar(
        select(Consultation).where(Consultation.partner_id == partner.id, Consultation.task_id == task_id)
    )
    if c is None:
        raise NotFound(N_("No such consultation with this institution."))
    side = INVITED if c.role == INVITING else INVITING
    if side == INVITED and c.status == TaskStatus.ACCEPTED.value:
        _move(c, TaskEvent.START)
    for comm in _resources(bundle, "Communication"):
        text = next((p.get("contentString") for p in comm.get("payload") or [] if p.get("contentString")), "")
        author = str((comm.get("sender") or {}).get("display") or "")[:100]
        _store_note(c, str(comm.get("id")), side, author, str(text))


def _on_opinion(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    c = _ours(partner, INVITING, _task_id_of(bundle))
    reports = _resources(bundle, "DiagnosticReport")
    if not reports:
        raise services.BadMessage(N_("An opinion message carries a DiagnosticReport."))
    report = reports[0]
    try:
        jwk = json.loads(
            next(e["valueString"] for e in report.get("extension") or [] if e.get("url") == SIGNER_JWK_URL)
        )
        token = base64.b64decode((report.get("presentedForm") or [{}])[0].get("data") or "").decode("ascii")
    except (StopIteration, KeyError, ValueError, TypeError):
        raise services.BadMessage(N_("The opinion carries no signature or no signer key.")) from None
    content = verify_opinion(token, jwk)
    if content.get("task_id") != c.task_id or content.get("opinion") != report.get("conclusion"):
        raise services.BadSignature(N_("The signed opinion is not the one the report carries."))
    signed_at = _parse_time(content.get("signed_at")) or utcnow()
    if c.status in (TaskStatus.REQUESTED.value, TaskStatus.ACCEPTED.value, TaskStatus.IN_PROGRESS.value):
        if c.status == TaskStatus.REQUESTED.value:
            _move(c, TaskEvent.ACCEPT)
        _move(c, TaskEvent.COMPLETE, signer_kid=str(jwk.get("kid")))
    c.completed_at = signed_at
    _store_opinion(c, content, token, str(jwk.get("kid")), jwk, signed_at)
    _tell_requester(c)


def _on_closed(event: TaskEvent, role: str) -> services.EventHandler:
    def handler(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
        c = _ours(partner, role, _task_id_of(bundle))
        reason = str((_resources(bundle, "Task")[0].get("statusReason") or {}).get("text") or "")
        if TaskStatus(c.status) not in rules.TERMINAL:
            _move(c, event, reason=reason, by="partner")
            _tell_requester(c)

    return handler


# --- settlements ----------------------------------------------------------------------------------------


def _month_bounds(month: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=services.CHINA)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.astimezone(UTC), end.astimezone(UTC)


def our_statement(partner: PartnerInstitution, month: str) -> Statement:
    start, end = _month_bounds(month)
    rows = db.session.scalars(
        select(Consultation)
        .where(
            Consultation.partner_id == partner.id,
            Consultation.status == TaskStatus.COMPLETED.value,
            Consultation.completed_at >= start,
            Consultation.completed_at < end,
        )
        .order_by(Consultation.completed_at)
    )
    lines = []
    for c in rows:
        inviting, invited = rules.shares(c.fee_fen, c.split_inviting)
        lines.append(StatementLine(c.task_id, c.role == INVITING, c.fee_fen, inviting, invited))
    return Statement(tuple(lines))


def _stored_statement(row: SettlementStatement) -> Statement:
    return Statement(
        tuple(
            StatementLine(
                str(line["task_id"]),
                bool(line["we_invited"]),
                int(line["fee_fen"]),
                int(line["inviting_share_fen"]),
                int(line["invited_share_fen"]),
            )
            for line in row.lines
        )
    )


def _latest(partner: PartnerInstitution, month: str, direction: str) -> SettlementStatement | None:
    return db.session.scalar(
        select(SettlementStatement)
        .where(
            SettlementStatement.partner_id == partner.id,
            SettlementStatement.month == month,
            SettlementStatement.direction == direction,
        )
        .order_by(SettlementStatement.created_at.desc())
    )


@dataclass(frozen=True)
class Settlement:
    partner: PartnerInstitution
    month: str
    ours: Statement
    theirs: SettlementStatement | None
    sent: SettlementStatement | None
    reconciliation: Reconciliation | None

    @property
    def matches_partner(self) -> bool | None:
        return None if self.reconciliation is None else self.reconciliation.matches


def settlement(partner_id: str | uuid.UUID, month: str) -> Settlement:
    if not valid_month(month):
        raise Invalid(N_("The month is written YYYY-MM."), fields=[{"loc": "month", "message": "YYYY-MM"}])
    partner = services.get_partner(partner_id)
    ours = our_statement(partner, month)
    theirs = _latest(partner, month, "in")
    return Settlement(
        partner=partner,
        month=month,
        ours=ours,
        theirs=theirs,
        sent=_latest(partner, month, "out"),
        reconciliation=reconcile(ours, _stored_statement(theirs)) if theirs is not None else None,
    )


def current_month() -> str:
    return services.today().strftime("%Y-%m")


def _invoice(month: str, statement: Statement) -> dict[str, Any]:
    def money(fen: int) -> dict[str, Any]:
        return {"value": fen / 100, "currency": "CNY"}

    return {
        "resourceType": "Invoice",
        "id": str(uuid.uuid4()),
        "identifier": [{"system": SETTLEMENT_SYSTEM, "value": month}],
        "status": "issued",
        "type": {"text": "远程会诊费月度结算单"},
        "date": _iso(utcnow()),
        "lineItem": [
            {
                "sequence": i + 1,
                "chargeItemCodeableConcept": {
                    "coding": [
                        {"system": TASK_SYSTEM, "code": line.task_id},
                        {"system": INVITING_SYSTEM, "code": "sender" if line.we_invited else "receiver"},
                    ]
                },
                "priceComponent": [
                    {"type": "base", "amount": money(line.fee_fen)},
                    {"type": "informational", "code": {"text": "inviting"}, "amount": money(line.inviting_share_fen)},
                    {"type": "informational", "code": {"text": "invited"}, "amount": money(line.invited_share_fen)},
                ],
            }
            for i, line in enumerate(statement.lines)
        ],
        "totalGross": money(statement.total_fen),
    }


def _record_statement(
    partner: PartnerInstitution, month: str, direction: str, message_id: str, statement: Statement
) -> SettlementStatement:
    row = SettlementStatement(
        partner_id=partner.id,
        month=month,
        direction=direction,
        message_id=message_id,
        count=statement.count,
        total_fen=statement.total_fen,
        inviting_share_fen=statement.inviting_share_fen,
        invited_share_fen=statement.invited_share_fen,
        lines=[
            {
                "task_id": line.task_id,
                "we_invited": line.we_invited,
                "fee_fen": line.fee_fen,
                "inviting_share_fen": line.inviting_share_fen,
                "invited_share_fen": line.invited_share_fen,
            }
            for line in statement.lines
        ],
        created_at=utcnow(),
    )
    db.session.add(row)
    db.session.flush()
    audit.record(
        db.session(),
        "settlement.statement_sent" if direction == "out" else "settlement.statement_received",
        subject_type="partner_institution",
        subject_id=partner.id,
        detail={"month": month, "count": statement.count, "total_fen": statement.total_fen, "message_id": message_id},
    )
    return row


def send_statement(partner_id: str | uuid.UUID, month: str) -> SettlementStatement:
    """Send our statement of the month to the partner, signed; it answers with its own."""
    if not valid_month(month):
        raise Invalid(N_("The month is written YYYY-MM."), fields=[{"loc": "month", "message": "YYYY-MM"}])
    partner = services.get_partner(partner_id)
    statement = our_statement(partner, month)
    message = services.send(partner.id, EV_STATEMENT, [_invoice(month, statement)])
    return _record_statement(partner, month, "out", message.message_id, statement)


def _fen(money: Any) -> int:
    value = (money or {}).get("value") if isinstance(money, dict) else None
    if not isinstance(value, int | float):
        raise services.BadMessage(N_("A settlement amount is missing."))
    return round(value * 100)


def _on_statement(message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    invoices = _resources(bundle, "Invoice")
    if not invoices:
        raise services.BadMessage(N_("A settlement statement carries an Invoice."))
    inv = invoices[0]
    month = next((i.get("value") for i in inv.get("identifier") or [] if i.get("system") == SETTLEMENT_SYSTEM), "")
    if not isinstance(month, str) or not valid_month(month):
        raise services.BadMessage(N_("The settlement statement names no month."))
    lines = []
    for item in inv.get("lineItem") or []:
        codes = {
            c.get("system"): c.get("code") for c in (item.get("chargeItemCodeableConcept") or {}).get("coding") or []
        }
        parts = {
            (p.get("code") or {}).get("text") if p.get("type") == "informational" else p.get("type"): _fen(
                p.get("amount")
            )
            for p in item.get("priceComponent") or []
        }
        lines.append(
            StatementLine(
                str(codes.get(TASK_SYSTEM)),
                codes.get(INVITING_SYSTEM) == "sender",  # from the sender's side
                parts.get("base", 0),
                parts.get("inviting", 0),
                parts.get("invited", 0),
            )
        )
    theirs = Statement(tuple(lines))
    _record_statement(partner, month, "in", message.message_id, theirs)
    # answer with ours unless the partner already has it as it stands
    ours = our_statement(partner, month)
    sent = _latest(partner, month, "out")
    if sent is None or _stored_statement(sent) != ours:
        reply = services.send(partner.id, EV_STATEMENT, [_invoice(month, ours)])
        _record_statement(partner, month, "out", reply.message_id, ours)


def _request_undelivered(message: FederationMessage) -> None:
    """The outbox gave up on a consultation request (the partner never answered through
    every retry): the consultation fails (FHIR Task `failed`), audited; its page says so."""
    try:
        bundle = envelope.verify(message.jws, services.own_key().public_jwk)
        task_id = _task_id_of(bundle)
    except (envelope.BadSignature, envelope.BadMessage, DomainError):
        return
    c = db.session.scalar(
        select(Consultation).where(
            Consultation.partner_id == message.partner_id,
            Consultation.role == INVITING,
            Consultation.task_id == task_id,
        )
    )
    if c is not None and c.status == TaskStatus.REQUESTED.value:
        _move(c, TaskEvent.FAIL, message_id=message.message_id, attempts=message.attempts)
        _tell_requester(c)


def register_events() -> None:
    services.register_undelivered(EV_REQUEST, _request_undelivered)
    services.register_event(EV_REQUEST, _on_request)
    services.register_event(EV_ATTACHMENT, _on_attachment)
    services.register_event(EV_ACCEPTED, _on_accepted)
    services.register_event(EV_NOTE, _on_note)
    services.register_event(EV_OPINION, _on_opinion)
    services.register_event(EV_REJECTED, _on_closed(TaskEvent.REJECT, INVITING))
    services.register_event(EV_CANCELLED, _on_closed(TaskEvent.CANCEL, INVITED))
    services.register_event(EV_STATEMENT, _on_statement)


register_events()


def today() -> date:
    return services.today()
