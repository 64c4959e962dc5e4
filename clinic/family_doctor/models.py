"""Family-doctor teams and packages, contracts, follow-up plans, home readings, alerts."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.core.db import Base, Versioned, new_id, utcnow
from clinic.family_doctor.rules import Classification, ContractStatus
from identity.models import Account, Patient


def _values(e: type[enum.Enum]) -> list[str]:
    return [str(m.value) for m in e]


class MemberRole(enum.StrEnum):
    PHYSICIAN = "physician"
    NURSE = "nurse"
    PUBLIC_HEALTH = "public_health"


class Team(Base):
    """A family-doctor team (家庭医生团队): a lead physician and the others."""

    __tablename__ = "fd_teams"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    lead: Mapped[Account] = relationship(lazy="joined")
    members: Mapped[list[TeamMember]] = relationship(order_by="TeamMember.created_at", lazy="selectin")
    packages: Mapped[list[ServicePackage]] = relationship(order_by="ServicePackage.created_at", lazy="selectin")


class TeamMember(Base):
    """Someone on a team besides its lead: a physician (with an account) or a nurse or
    public-health worker (by name; they do not sign in to this clinic)."""

    __tablename__ = "fd_team_members"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_fd_team_members_team_name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_teams.id"), index=True)
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[MemberRole] = mapped_column(Enum(MemberRole, native_enum=False, length=16, values_callable=_values))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServicePackage(Base):
    """A service package (服务包) a team offers: basic, or for a chronic condition."""

    __tablename__ = "fd_packages"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list)  # ICD-10 codes; [] = basic
    includes: Mapped[str] = mapped_column(Text, default="")
    fee_fen: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Contract(Versioned, Base):
    """A signed family-doctor agreement (Art. 15). One in force per person: the partial
    unique index refuses a second pending or active contract even when two signings race."""

    __tablename__ = "fd_contracts"
    __table_args__ = (
        Index(
            "uq_fd_contracts_in_force",
            "patient_id",
            unique=True,
            postgresql_where=text("status IN ('pending', 'active')"),
            sqlite_where=text("status IN ('pending', 'active')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)  # who signed
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_teams.id"), index=True)
    package_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_packages.id"))
    status: Mapped[ContractStatus] = mapped_column(
        Enum(ContractStatus, native_enum=False, length=16, values_callable=_values)
    )
    agreement_version: Mapped[str] = mapped_column(String(32))
    agreement_sha256: Mapped[str] = mapped_column(String(64))
    fee_fen: Mapped[int] = mapped_column(Integer, default=0)
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    countersigned_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    countersigned_at: Mapped[datetime | None]
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)
    renewed_at: Mapped[datetime | None]
    renewals: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    ended_side: Mapped[str | None] = mapped_column(String(16))  # patient | team
    end_reason: Mapped[str | None] = mapped_column(Text)

    patient: Mapped[Patient] = relationship(lazy="joined")
    team: Mapped[Team] = relationship(lazy="joined")
    package: Mapped[ServicePackage] = relationship(lazy="joined")


class FollowUpPlan(Base):
    """The follow-up schedule of a contracted patient with hypertension and/or type 2 diabetes."""

    __tablename__ = "fd_plans"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    contract_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_contracts.id"), unique=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_teams.id"), index=True)
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list)
    next_due: Mapped[date | None] = mapped_column(Date, index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FollowUp(Base):
    """One follow-up done by the team (online, by phone or in person), and what it found."""

    __tablename__ = "fd_followups"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_plans.id"), index=True)
    due_on: Mapped[date | None] = mapped_column(Date)
    done_on: Mapped[date] = mapped_column(Date)
    method: Mapped[str] = mapped_column(String(16))  # online | phone | in_person
    classification: Mapped[Classification] = mapped_column(
        Enum(Classification, native_enum=False, length=16, values_callable=_values)
    )
    note: Mapped[str] = mapped_column(Text, default="")
    done_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    next_due: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Reminder(Base):
    """An SMS reminder sent for one due date: the unique key makes a re-run send nothing twice."""

    __tablename__ = "fd_reminders"
    __table_args__ = (UniqueConstraint("plan_id", "due_on", "kind", name="uq_fd_reminders_plan_due_kind"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_plans.id"))
    due_on: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(16))  # before | due_day
    notification_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HomeReading(Base):
    """A blood pressure, glucose or weight reading the patient took at home."""

    __tablename__ = "fd_readings"
    __table_args__ = (Index("ix_fd_readings_patient_at", "patient_id", "measured_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"))
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    contract_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("fd_contracts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    systolic: Mapped[int | None] = mapped_column(Integer)
    diastolic: Mapped[int | None] = mapped_column(Integer)
    glucose_mmol: Mapped[Decimal | None] = mapped_column(Numeric(5, 1))
    fasting: Mapped[bool | None] = mapped_column(Boolean)
    weight_kg: Mapped[Decimal | None] = mapped_column(Numeric(5, 1))
    classification: Mapped[Classification] = mapped_column(
        Enum(Classification, native_enum=False, length=16, values_callable=_values)
    )
    measured_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """An urgent reading put before the patient's team; open until someone on it acknowledges."""

    __tablename__ = "fd_alerts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_teams.id"), index=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    reading_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fd_readings.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
