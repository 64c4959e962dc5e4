"""Remote consultation (远程会诊) between institutions: the record and what every step shares.

The inviting institution's physician asks, for their own patient (who has accepted the
remote-consultation consent, `consultation_consent`), a partner institution's department
for an opinion (`consultation_requests`); the request travels as a signed FHIR message
(Task, ServiceRequest, Patient with the minimum identity, Condition; attachments follow as
DocumentReference, `consultation_attachments`). On the
invited side a physician qualified in that department, face-verified and of at least the
agreement's title (Jilin measures Art. 14) accepts it (`consultation_answers`), may ask
back (the notes here), and writes the opinion, signed with their own key
(`consultation_opinions`); it returns as a DiagnosticReport and the inviting physician
acknowledges it. Both sides keep a record keyed by the shared Task/ServiceRequest
identifier and move it with the one `rules.transition` function (`move` here). The fees
between the institutions are in `settlements`.

This module holds the message codes, the refusal audit, the record's reading rules (who may
read which consultation), the notes, the reason a side gives when it closes a consultation
and the partner's closing message, and the FHIR pieces every message shares.
Use cases load, apply the rules, change state, audit and enqueue; none commits.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.notifications.services import notify
from clinic.telemedicine import federation, partners, rules
from clinic.telemedicine.models import (
    Consultation,
    ConsultationNote,
    FederationMessage,
    PartnerInstitution,
)
from clinic.telemedicine.rules import (
    N_,
    TaskEvent,
    TaskStatus,
)
from clinic.visits.models import Visit
from identity import services as identity
from identity.models import Account, Role

TASK_SYSTEM = "urn:clinic:consultation"
DEPARTMENT_SYSTEM = "urn:clinic:department"

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
MAX_ATTACHMENTS = 10


class BadAttachment(Invalid):
    code = "invalid_upload"


def refuse(err: DomainError, consultation: Consultation | None = None, **detail: Any) -> DomainError:
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


# --- helpers ----------------------------------------------------------------------------------


def as_physician(who: Principal) -> Account:
    account = identity.get_account(who.account_id)
    if account.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only physicians may do this."))
    return account


def name_of(account: Account) -> str:
    return account.staff.name if account.staff else account.username


def title_of(account: Account) -> str:
    return account.staff.title if account.staff else ""


def department_of(account: Account) -> str | None:
    return account.staff.department_code if account.staff else None


def treats(physician: Account, patient_id: uuid.UUID) -> bool:
    return bool(
        db.session.scalar(select(exists().where(Visit.patient_id == patient_id, Visit.physician_id == physician.id)))
    )


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def require_agreement(partner: PartnerInstitution, department: str) -> None:
    """The agreement must be in force, cover consultations and this department."""
    partners.require_in_force(partner)
    if "consultation" not in (partner.services or []):
        raise partners.NoAgreement(
            N_("The agreement with %(name)s does not cover remote consultations."), params={"name": partner.name}
        )
    if partner.departments and department not in partner.departments:
        raise partners.NoAgreement(
            N_("The agreement with %(name)s does not cover the department %(department)s."),
            params={"name": partner.name, "department": department},
        )


def move(c: Consultation, event: TaskEvent, **detail: Any) -> None:
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


def tell_requester(c: Consultation) -> None:
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
        patient=patient_of(c).name or "",
        institution=c.partner.name,
        status=STATUS_ZH.get(c.status, c.status),
    )


def tell_department(c: Consultation) -> None:
    """In-app note to the invited department's active physicians: a request is waiting."""
    doctors = db.session.scalars(select(Account).where(Account.role == Role.PHYSICIAN, Account.active.is_(True))).all()
    for doctor in doctors:
        if department_of(doctor) == c.department:
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


def task_resource(c: Consultation) -> dict[str, Any]:
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


def bundle_resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])[1:]
        if isinstance(e, dict) and isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == kind
    ]


def task_id_of(bundle: dict[str, Any]) -> str:
    for res in bundle_resources(bundle, "Task") + bundle_resources(bundle, "ServiceRequest"):
        for ident in res.get("identifier", []):
            if ident.get("system") == TASK_SYSTEM and isinstance(ident.get("value"), str):
                return str(ident["value"])
    raise federation.BadMessage(N_("The message names no consultation (Task identifier)."))


def our_consultation(partner: PartnerInstitution, role: str, task_id: str) -> Consultation:
    c = db.session.scalar(
        select(Consultation).where(
            Consultation.partner_id == partner.id, Consultation.role == role, Consultation.task_id == task_id
        )
    )
    if c is None:
        raise NotFound(N_("No such consultation with this institution."))
    return c


def reason_given(reason: str) -> str:
    """Declining or withdrawing says why: the other institution's physician reads it."""
    reason = " ".join(reason.split())
    if not reason:
        raise Invalid(N_("Say why (the other institution's physician reads it)."), field="reason")
    return reason


def closed_by_partner(event: TaskEvent, role: str) -> federation.EventHandler:
    """The handler of the partner's message that closes a consultation of ours in `role`
    (declined by the invited side, withdrawn by the inviting one): moved by `event` with the
    partner's reason, unless it is closed already."""

    def handler(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
        c = our_consultation(partner, role, task_id_of(bundle))
        reason = str((bundle_resources(bundle, "Task")[0].get("statusReason") or {}).get("text") or "")
        if TaskStatus(c.status) not in rules.TERMINAL:
            move(c, event, reason=reason, by="partner")
            tell_requester(c)

    return handler


# --- notes: the specialist asks back, the inviting physician answers --------------------------


def write_note(who: Principal, consultation_id: uuid.UUID, text: str) -> ConsultationNote:
    """A question asked back by the specialist, or the inviting physician's answer."""
    physician = as_physician(who)
    c = consultation_for(who, consultation_id)
    if c.role == INVITED and c.accepted_by != physician.id:
        raise Forbidden(N_("Accept the consultation before writing in it."))
    if TaskStatus(c.status) in rules.TERMINAL:
        raise Conflict(N_("The consultation is closed."), code="consultation_closed")
    if c.role == INVITED and c.status == TaskStatus.ACCEPTED.value:
        move(c, TaskEvent.START)
    note = _store_note(c, str(uuid.uuid4()), c.role, name_of(physician), text)
    communication = {
        "resourceType": "Communication",
        "id": note.shared_id,
        "status": "completed",
        "sent": iso(note.created_at),
        "sender": {"display": note.author_name},
        "payload": [{"contentString": text}],
    }
    federation.send(c.partner_id, EV_NOTE, [task_resource(c), communication])
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


def may_read(account: Account, c: Consultation) -> bool:
    if account.role == Role.ADMIN:
        return True
    if account.role != Role.PHYSICIAN:
        return False
    if c.role == INVITING:
        return c.requested_by == account.id or any(p.get("id") == str(account.id) for p in c.present_physicians)
    return c.accepted_by == account.id or (c.accepted_by is None and department_of(account) == c.department)


def consultation_for(who: Principal, consultation_id: uuid.UUID) -> Consultation:
    """A consultation the caller may read (its physicians, the invited department's, an
    administrator); anyone else 404, as for an unknown id."""
    c = db.session.get(Consultation, consultation_id)
    if c is None or not may_read(identity.get_account(who.account_id), c):
        raise NotFound()
    return c


def consultations_of(who: Principal, role: str | None, status: str | None) -> list[Consultation]:
    account = identity.get_account(who.account_id)
    query = select(Consultation)
    if role:
        query = query.where(Consultation.role == role)
    if status:
        query = query.where(Consultation.status == status)
    rows = db.session.scalars(query.order_by(Consultation.created_at.desc()).limit(500))
    return [c for c in rows if may_read(account, c)][:200]


def notes_of(c: Consultation) -> list[ConsultationNote]:
    return list(
        db.session.scalars(
            select(ConsultationNote)
            .where(ConsultationNote.consultation_id == c.id)
            .order_by(ConsultationNote.created_at)
        )
    )


@dataclass(frozen=True)
class SharedPatient:
    """The minimum identity a consultation shares with the partner (`Consultation.patient_json`):
    real name, sex, birth date (ISO). A fact the record does not hold is None."""

    name: str | None = None
    sex: str | None = None
    birth_date: str | None = None


def patient_of(c: Consultation) -> SharedPatient:
    try:
        data = json.loads(c.patient_json or "{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        return SharedPatient()
    facts = {k: None if data.get(k) is None else str(data[k]) for k in ("name", "sex", "birth_date")}
    return SharedPatient(**facts)


# --- received messages ------------------------------------------------------------------------------


def _on_note(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    task_id = task_id_of(bundle)
    c = db.session.scalar(
        select(Consultation).where(Consultation.partner_id == partner.id, Consultation.task_id == task_id)
    )
    if c is None:
        raise NotFound(N_("No such consultation with this institution."))
    side = INVITED if c.role == INVITING else INVITING
    if side == INVITED and c.status == TaskStatus.ACCEPTED.value:
        move(c, TaskEvent.START)
    for comm in bundle_resources(bundle, "Communication"):
        text = next((p.get("contentString") for p in comm.get("payload") or [] if p.get("contentString")), "")
        author = str((comm.get("sender") or {}).get("display") or "")[:100]
        _store_note(c, str(comm.get("id")), side, author, str(text))


def register_events() -> None:
    federation.register_event(EV_NOTE, _on_note)
