"""Two-way referral (双向转诊) between institutions, with the closed loop and the carry-over of
confirmed diagnoses.

- The 2018 measures (Art. 21–23) ask tertiary hospitals to refer patients down to primary
  care through their internet systems, and primary care to refer up. A referral goes up
  (from a lower level to a higher one: 基层 → 上级) or down (三级 → 基层/二级); the two
  institutions' levels (ours: the institution profile; the partner's: the agreement) must
  say the same, else the referral is refused by name (`bad_direction`).
- It travels as a signed FHIR message (event `referral-request`): Task + ServiceRequest
  (reason, summary, the receiving department) + Patient (the minimum identity: real name,
  ID number, sex, birth date, the account's phone) + a Condition per confirmed diagnosis.
- The receiving side keeps its own record under the same identifier (the Task identifier),
  matches the patient by real name + ID number (or adds them), and its physicians accept
  (appointment time and place) or decline (a reason); later they report the outcome. Each
  answer goes back as a signed message (event `referral-status`: the Task with its new
  status, an Appointment on acceptance); the sending side applies the same transition, and
  on acceptance tells the patient where and when (SMS and in-app, Beijing time).
- A patient referred with confirmed diagnoses: once a physician here confirms a carried
  diagnosis (face-fresh, qualified in its department, audited), it is a confirmed
  diagnosis here, and the patient's online return visits pass the gate on it (Art. 16).

Both sides move a referral through `rules.transition` only. Nothing here deletes anything.

This module holds what both sides share (message codes, refusals, the FHIR pieces, the
patient's notice) and the reading; sending is in `referral_sending`, receiving in
`referral_receiving`, the carried diagnoses in `referral_diagnoses`, and the direction rule
in `rules`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn

from sqlalchemy import exists, or_, select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import DomainError, Forbidden, Invalid, NotFound, Violation
from clinic.core.pages import to_beijing
from clinic.core.principal import Principal
from clinic.notifications.services import notify
from clinic.telemedicine import federation, partners
from clinic.telemedicine.models import PartnerInstitution, Referral
from clinic.telemedicine.rules import (
    N_,
    TaskEvent,
    TaskStatus,
    transition,
)
from clinic.visits.models import Diagnosis, DiagnosisStatus, Visit
from identity import services as identity
from identity.models import Account, Patient, Role

REQUEST_EVENT = "referral-request"
STATUS_EVENT = "referral-status"
SERVICE = "referral"
TASK_SYSTEM = "urn:clinic:referral"
ID_SYSTEM = "urn:clinic:cn-resident-id"  # 居民身份证号
DEPARTMENT_SYSTEM = "urn:clinic:department"
DIRECTION_SYSTEM = "urn:clinic:referral-direction"
RELATION_SYSTEM = "urn:clinic:relation"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SENDING, RECEIVING = "sending", "receiving"

# --- refusals -------------------------------------------------------------------------------


class BadDirection(Invalid):
    code = "bad_direction"
    default_message = N_("The referral's direction does not match the two institutions' levels.")


class UnknownReferral(Invalid):
    code = "unknown_referral"
    default_message = N_("The message is about a referral this institution does not know.")


def refuse(err: DomainError, action: str, **detail: Any) -> NoReturn:
    """Audit a refusal (kept although the request is refused) and raise it."""
    audit.record(db.session(), action, subject_type="referral", detail=detail)
    err.persist = True
    raise err


def no_service(partner: PartnerInstitution) -> partners.NoAgreement:
    return partners.NoAgreement(
        N_("The agreement with %(name)s does not include two-way referral."),
        params={"name": partner.name},
        service=SERVICE,
    )


def agreement_refusal(partner: PartnerInstitution) -> partners.NoAgreement | None:
    lapsed = partners.not_in_force(partner)
    if lapsed is not None:
        return lapsed
    if SERVICE not in (partner.services or []):
        return no_service(partner)
    return None


def bad_direction(violations: list[Violation]) -> BadDirection:
    v = violations[0]
    params = v.detail.get("params", {})
    return BadDirection(v.message, params=params, fields=[{"loc": "direction", "message": v.code}])


# --- who acts --------------------------------------------------------------------------------


def account_of(who: Principal) -> Account:
    return identity.get_account(who.account_id)


def as_physician(who: Principal) -> Account:
    account = account_of(who)
    if account.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only physicians may do this."))
    return account


def treats(physician: Account, patient_id: uuid.UUID) -> bool:
    """The physician has seen this patient: a visit of theirs, or a diagnosis they reviewed."""
    visit = exists().where(Visit.patient_id == patient_id, Visit.physician_id == physician.id)
    reviewed = exists().where(Diagnosis.patient_id == patient_id, Diagnosis.reviewed_by == physician.id)
    return bool(db.session.scalar(select(or_(visit, reviewed))))


def name_of(account: Account) -> str:
    return account.staff.name if account.staff is not None else account.display_name


def confirmed_diagnoses(patient_id: uuid.UUID) -> list[Diagnosis]:
    return list(
        db.session.scalars(
            select(Diagnosis)
            .where(Diagnosis.patient_id == patient_id, Diagnosis.status == DiagnosisStatus.CONFIRMED)
            .order_by(Diagnosis.diagnosed_on)
        )
    )


def identifier(shared_id: str) -> list[dict[str, str]]:
    return [{"system": TASK_SYSTEM, "value": shared_id}]


# --- reading a referral message ------------------------------------------------------------


def bundle_resources(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle.get("entry", [])[1:]:
        res = entry.get("resource") or {}
        out.setdefault(str(res.get("resourceType")), []).append(res)
    return out


def one(found: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    items = found.get(kind, [])
    if len(items) != 1:
        raise federation.BadMessage(N_("A referral message carries exactly one %(kind)s."), params={"kind": kind})
    return items[0]


def shared_id_of(task: dict[str, Any]) -> str:
    for ident in task.get("identifier") or []:
        if ident.get("system") == TASK_SYSTEM and isinstance(ident.get("value"), str) and ident["value"]:
            return str(ident["value"])[:64]
    raise federation.BadMessage(N_("The referral's Task carries no referral identifier."))


def coding(concept: dict[str, Any] | None, system: str) -> str | None:
    for c in (concept or {}).get("coding") or []:
        if c.get("system") == system and c.get("code"):
            return str(c["code"])
    return None


def text_of(items: list[dict[str, Any]] | None) -> str:
    return "\n".join(str(i.get("text", "")) for i in (items or []) if i.get("text")).strip()


# --- the record: loading it, moving it, telling the patient --------------------------------


def load(referral_id: uuid.UUID) -> Referral:
    referral = db.session.get(Referral, referral_id)
    if referral is None:
        raise NotFound(N_("No such referral."))
    return referral


def move(referral: Referral, event: TaskEvent) -> None:
    referral.status = transition(TaskStatus(referral.status), event).value


def as_utc(at: datetime) -> datetime:
    """A time without a zone is a Beijing time (as a physician here types it)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=to_beijing(utcnow()).tzinfo)
    return at.astimezone(UTC)


STATUS_ZH = {
    "requested": "待接收",
    "accepted": "已接收",
    "in-progress": "诊疗中",
    "completed": "已完成",
    "rejected": "已拒绝",
    "cancelled": "已撤销",
    "failed": "发送失败",
}


def status_zh(status: str) -> str:
    return STATUS_ZH.get(status, status)


def tell_patient(referral: Referral, sms: bool) -> None:
    """Where and when, in Beijing time, to the account holding the patient."""
    patient = db.session.get(Patient, referral.patient_id) if referral.patient_id else None
    if patient is None or referral.appointment_at is None:
        return
    notify(
        db.session(),
        account_id=patient.account_id,
        kind="referral_accepted",
        link=f"/referrals/{referral.id}",
        subject_type="referral",
        subject_id=referral.id,
        sms=sms,
        name=patient.name,
        institution=referral.partner.name if referral.role == SENDING else partners.own_name(),
        when=to_beijing(referral.appointment_at).strftime("%Y年%m月%d日 %H:%M"),
        place=referral.place or "",
    )


# --- reading -------------------------------------------------------------------------------


def list_referrals(who: Principal, role: str | None = None, status: str | None = None) -> list[Referral]:
    """The institution's referrals for its physicians and administrators: sent (role
    sending) or to answer (role receiving, the queue), newest first."""
    account = account_of(who)
    if account.role not in (Role.PHYSICIAN, Role.ADMIN):
        raise Forbidden(N_("Only physicians and administrators see the referrals."))
    query = select(Referral)
    if role:
        if role not in (SENDING, RECEIVING):
            raise Invalid(N_("The role is sending or receiving."), fields=[{"loc": "role", "message": "unknown"}])
        query = query.where(Referral.role == role)
    if status:
        if status not in {s.value for s in TaskStatus}:
            raise Invalid(N_("Unknown status."), fields=[{"loc": "status", "message": "unknown"}])
        query = query.where(Referral.status == status)
    return list(db.session.scalars(query.order_by(Referral.created_at.desc()).limit(500)))


def referral_for(who: Principal, referral_id: uuid.UUID) -> Referral:
    """A referral the caller may see: staff of this institution, or the patient's account
    holder; anyone else 404."""
    account = account_of(who)
    referral = load(referral_id)
    if account.role in (Role.PHYSICIAN, Role.ADMIN):
        return referral
    if account.role == Role.PATIENT and any(p.id == referral.patient_id for p in account.patients):
        return referral
    raise NotFound(N_("No such referral."))


def referrals_of_patient_account(who: Principal) -> list[Referral]:
    """The referrals of the people on the caller's (a patient's) account, newest first."""
    ids = [p.id for p in account_of(who).patients]
    if not ids:
        return []
    return list(
        db.session.scalars(
            select(Referral).where(Referral.patient_id.in_(ids)).order_by(Referral.created_at.desc()).limit(100)
        )
    )


def partners_for_referral() -> list[PartnerInstitution]:
    """Partners with an agreement in force that includes referral."""
    return [p for p in partners.list_partners() if agreement_refusal(p) is None]
