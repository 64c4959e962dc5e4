"""Conditions followed up online, proof of in-person diagnoses, consent, visits, suspension."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import Boolean, Date, Enum, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.core.db import Base, Versioned, new_id, utcnow
from clinic.visits.rules import VisitStatus
from identity.models import Account, Patient


def _values(e: type[enum.Enum]) -> list[str]:
    return [str(m.value) for m in e]


class Condition(Base):
    """A common or chronic condition that may be followed up online (ICD-10)."""

    __tablename__ = "conditions"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(200))
    department: Mapped[str] = mapped_column(ForeignKey("departments.code"))
    chronic: Mapped[bool] = mapped_column(Boolean, default=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class DiagnosisStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class Diagnosis(Versioned, Base):
    """A patient's proof of a diagnosis made in person at a physical institution."""

    __tablename__ = "diagnoses"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    submitted_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    icd10: Mapped[str] = mapped_column(String(16))  # WHO ICD-10 (the national code's WHO category)
    icd10_national: Mapped[str | None] = mapped_column(String(16))  # 国家临床版 2.0 as on the proof
    institution: Mapped[str] = mapped_column(String(200))
    diagnosed_on: Mapped[date] = mapped_column(Date)
    document_kind: Mapped[str] = mapped_column(String(32))
    document_path: Mapped[str] = mapped_column(String(200))
    document_type: Mapped[str] = mapped_column(String(64))
    document_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[DiagnosisStatus] = mapped_column(
        Enum(DiagnosisStatus, native_enum=False, length=16, values_callable=_values), default=DiagnosisStatus.PENDING
    )
    condition_code: Mapped[str | None] = mapped_column(ForeignKey("conditions.code"))
    department: Mapped[str | None] = mapped_column(String(32), index=True)
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    reviewed_at: Mapped[datetime | None]
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    patient: Mapped[Patient] = relationship(lazy="joined")
    condition: Mapped[Condition | None] = relationship(lazy="joined")


class ConsentAcceptance(Base):
    """A patient's acceptance of one version of the informed-consent text."""

    __tablename__ = "consent_acceptances"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    version: Mapped[str] = mapped_column(String(32))
    version_hash: Mapped[str] = mapped_column(String(64))
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    client_ip: Mapped[str | None] = mapped_column(String(64))


OPEN_VISIT_STATUSES = (VisitStatus.AWAITING_PAYMENT, VisitStatus.WAITING, VisitStatus.IN_PROGRESS)
OPEN_VISIT_SQL = "status IN ('awaiting_payment', 'waiting', 'in_progress')"


class Visit(Versioned, Base):
    """A return visit (复诊) for one confirmed diagnosis of one patient."""

    __tablename__ = "visits"
    # A department's waiting queue, oldest first (and any lookup by department alone).
    __table_args__ = (
        Index("ix_visits_queue", "department", "status", "created_at"),
        # One open visit per diagnosis: a second request while one is open is refused (409).
        Index(
            "uq_visits_open_diagnosis",
            "diagnosis_id",
            unique=True,
            sqlite_where=text(OPEN_VISIT_SQL),
            postgresql_where=text(OPEN_VISIT_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    diagnosis_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("diagnoses.id"))
    department: Mapped[str] = mapped_column(ForeignKey("departments.code"))
    status: Mapped[VisitStatus] = mapped_column(
        Enum(VisitStatus, native_enum=False, length=24, values_callable=_values)
    )
    physician_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    # The physician the patient chose (None: the department's queue); set when requested.
    requested_physician_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    # When the patient last had the visit room open (a physician's message is texted when absent).
    patient_seen_at: Mapped[datetime | None]
    complaint: Mapped[str] = mapped_column(Text, default="")
    fee_fen: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    accepted_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    termination_reason: Mapped[str | None] = mapped_column(Text)
    referral_advice: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(Text)

    patient: Mapped[Patient] = relationship(lazy="joined")
    diagnosis: Mapped[Diagnosis] = relationship(lazy="joined")
    physician: Mapped[Account | None] = relationship(foreign_keys=[physician_id], lazy="joined")
    requested_physician: Mapped[Account | None] = relationship(foreign_keys=[requested_physician_id], lazy="select")
    messages: Mapped[list[VisitMessage]] = relationship(order_by="VisitMessage.created_at", lazy="select")
    notes: Mapped[list[VisitNote]] = relationship(order_by="VisitNote.created_at", lazy="select")


class VisitMessage(Base):
    __tablename__ = "visit_messages"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"), index=True)
    sender_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    sender_role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    image_path: Mapped[str | None] = mapped_column(String(200))
    image_type: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VisitNote(Base):
    """The visit's medical record. Kept at least 15 years: there is no delete path."""

    __tablename__ = "visit_notes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"), index=True)
    author_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))  # completion | referral
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServiceSwitch(Base):
    """Every change of the suspension switch; the newest row is the current state."""

    __tablename__ = "service_switches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suspended: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
