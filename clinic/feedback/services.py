"""The physician directory, ratings of visits and complaints: one function per use case."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.feedback import rules
from clinic.feedback.models import Complaint, VisitRating
from clinic.visits.models import Visit, VisitStatus
from identity import rules as identity_rules
from identity import services as identity
from identity.models import Account, Department, Role, StaffProfile
from prescriptions.models import Prescription

# --- the public directory ---------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryEntry:
    id: uuid.UUID
    name: str
    title: str
    department: str
    department_name_zh: str
    department_name_en: str
    license_no: str
    practice_years: int | None
    on_duty: bool
    rating: float | None
    ratings: int


def physician_directory(department: str | None = None, today: date | None = None) -> list[DirectoryEntry]:
    """The physicians who may practise online now (qualified, licence valid), on-duty first."""
    today = today or date.today()
    query = (
        select(Account, StaffProfile, Department)
        .join(StaffProfile, StaffProfile.account_id == Account.id)
        .join(Department, Department.code == StaffProfile.department_code)
        .where(Account.role == Role.PHYSICIAN, Account.active.is_(True))
    )
    if department:
        query = query.where(StaffProfile.department_code == department)
    scores = {
        pid: (int(total), int(count))
        for pid, total, count in db.session.execute(
            select(VisitRating.physician_id, func.sum(VisitRating.score), func.count()).group_by(
                VisitRating.physician_id
            )
        )
    }
    inst = identity.institution_status()
    out: list[DirectoryEntry] = []
    for account, staff, dept in db.session.execute(query).tuples():
        if identity_rules.physician_violations(identity.physician_credentials(account), inst, today):
            continue  # not practising online: not listed
        total, count = scores.get(account.id, (0, 0))
        out.append(
            DirectoryEntry(
                id=account.id,
                name=staff.name,
                title=staff.title,
                department=dept.code,
                department_name_zh=dept.name_zh,
                department_name_en=dept.name_en,
                license_no=staff.license_no or "",
                practice_years=rules.practice_years(staff.independent_practice_since, today),
                on_duty=staff.on_duty,
                rating=rules.average_rating(total, count),
                ratings=count,
            )
        )
    out.sort(key=lambda e: (not e.on_duty, e.department, -(e.rating or 0), e.name))
    return out


# --- ratings ------------------------------------------------------------------------------


class AlreadyRated(Conflict):
    code = "already_rated"


class VisitNotCompleted(Invalid):
    code = "visit_not_completed"


def _patients_visit(account_id: uuid.UUID, visit_id: uuid.UUID) -> Visit:
    visit = db.session.get(Visit, visit_id)
    if visit is None or visit.account_id != account_id:
        raise NotFound()  # another account's visits are never revealed
    return visit


def rating_of(visit_id: uuid.UUID) -> VisitRating | None:
    return db.session.scalars(select(VisitRating).where(VisitRating.visit_id == visit_id)).first()


def rate_visit(who: Principal, visit_id: uuid.UUID, score: int, comment: str = "") -> VisitRating:
    visit = _patients_visit(who.account_id, visit_id)
    if visit.status != VisitStatus.COMPLETED or visit.physician_id is None:
        raise VisitNotCompleted("Only a completed visit can be rated.")
    if rating_of(visit.id) is not None:
        raise AlreadyRated("This visit has already been rated; a visit is rated once.")
    if not rules.MIN_SCORE <= score <= rules.MAX_SCORE:
        raise Invalid("The score is from 1 to 5.", fields=[{"loc": "score", "message": "1..5"}])
    session = db.session()
    rating = VisitRating(
        visit_id=visit.id,
        account_id=visit.account_id,
        physician_id=visit.physician_id,
        score=score,
        comment=comment.strip(),
    )
    session.add(rating)
    try:
        session.flush()
    except IntegrityError:  # the same visit rated twice at once: the unique index says no
        raise AlreadyRated("This visit has already been rated; a visit is rated once.") from None
    audit.record(session, "visit.rated", subject_type="visit", subject_id=visit.id, detail={"score": score})
    return rating


# --- complaints ---------------------------------------------------------------------------


def file_complaint(
    who: Principal,
    text: str,
    visit_id: uuid.UUID | None = None,
    prescription_id: uuid.UUID | None = None,
) -> Complaint:
    text = text.strip()
    if not text:
        raise Invalid("Say what the complaint is about.", fields=[{"loc": "text", "message": "required"}])
    if len(text) > rules.MAX_COMPLAINT:
        raise Invalid(
            "A complaint is at most %(max)d characters.",
            params={"max": rules.MAX_COMPLAINT},
            fields=[{"loc": "text", "message": "too long"}],
        )
    visit = _patients_visit(who.account_id, visit_id) if visit_id is not None else None
    rx = None
    if prescription_id is not None:
        rx = db.session.get(Prescription, prescription_id)
        if rx is None or rx.account_id != who.account_id:
            raise NotFound()
    session = db.session()
    complaint = Complaint(
        account_id=who.account_id,
        visit_id=visit.id if visit else None,
        prescription_id=rx.id if rx else None,
        text=text,
        status="open",
    )
    session.add(complaint)
    session.flush()
    audit.record(session, "complaint.filed", subject_type="complaint", subject_id=complaint.id)
    return complaint


def complaints_of(account_id: uuid.UUID) -> list[Complaint]:
    return list(
        db.session.scalars(
            select(Complaint).where(Complaint.account_id == account_id).order_by(Complaint.created_at.desc())
        )
    )


def _admin(who: Principal) -> Account:
    admin = identity.get_account(who.account_id)
    if admin.role != Role.ADMIN:
        raise Forbidden("Only the institution's administrators answer complaints.")
    return admin


def all_complaints(who: Principal, status: str | None = None) -> list[Complaint]:
    _admin(who)
    query = select(Complaint)
    if status:
        query = query.where(Complaint.status == status)
    return list(db.session.scalars(query.order_by(Complaint.status.desc(), Complaint.created_at).limit(500)))


def answer_complaint(who: Principal, complaint_id: uuid.UUID, response: str) -> Complaint:
    admin = _admin(who)
    complaint = db.session.get(Complaint, complaint_id)
    if complaint is None:
        raise NotFound()
    response = response.strip()
    if not response:
        raise Invalid("Write the answer.", fields=[{"loc": "response", "message": "required"}])
    if complaint.status == "answered":
        raise Conflict("This complaint has already been answered.", code="already_answered")
    complaint.status, complaint.response = "answered", response[: rules.MAX_RESPONSE]
    complaint.answered_by, complaint.answered_at = admin.id, utcnow()
    audit.record(db.session(), "complaint.answered", subject_type="complaint", subject_id=complaint.id)
    return complaint
