"""Accounts, the people on them (就诊人), staff credentials, the institution."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import JSON, Boolean, Date, Enum, ForeignKey, Index, Integer, String, UniqueConstraint, text, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.core.crypto import EncryptedBytes, EncryptedText
from clinic.core.db import Base, new_id, utcnow


def _values(e: type[enum.Enum]) -> list[str]:
    return [str(m.value) for m in e]


class Role(enum.StrEnum):
    PATIENT = "patient"
    PHYSICIAN = "physician"
    PHARMACIST = "pharmacist"
    ADMIN = "admin"
    REGULATOR = "regulator"


STAFF_ROLES = {Role.PHYSICIAN, Role.PHARMACIST}


class Relation(enum.StrEnum):
    SELF = "self"
    CHILD = "child"
    PARENT = "parent"
    SPOUSE = "spouse"
    OTHER = "other"


class Account(UserMixin, Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16, values_callable=_values))
    display_name: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Encrypted columns are deferred: decrypted only by the code paths that read them.
    phone: Mapped[str | None] = mapped_column(EncryptedText, deferred=True)
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_verified_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Page sessions and API tokens carry it; raising it (logout, password change,
    # deactivation) ends every session and token issued before.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    patients: Mapped[list[Patient]] = relationship(
        back_populates="account", order_by="Patient.created_at", lazy="select"
    )
    staff: Mapped[StaffProfile | None] = relationship(back_populates="account", lazy="joined")

    def get_id(self) -> str:
        """What the page session stores: the account and its session version."""
        return f"{self.id}:{self.session_version}"

    @property
    def is_active(self) -> bool:
        return self.active


class Patient(Base):
    """A person who receives care, held by an account (themself or a family member)."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("account_id", "id_number_hash", name="uq_patients_account_person"),
        # Real name: one person holds one account of their own (as family, on any number).
        Index(
            "uq_patients_self_id_number",
            "id_number_hash",
            unique=True,
            postgresql_where=text("relation = 'self'"),
            sqlite_where=text("relation = 'self'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    id_number: Mapped[str] = mapped_column(EncryptedText, deferred=True)
    id_number_hash: Mapped[str] = mapped_column(String(64), index=True)
    birth_date: Mapped[date] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(8))
    relation: Mapped[Relation] = mapped_column(Enum(Relation, native_enum=False, length=16, values_callable=_values))
    allergies: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    account: Mapped[Account] = relationship(back_populates="patients")

    @property
    def masked_id_number(self) -> str:
        return self.id_number[:3] + "*" * 11 + self.id_number[-4:]


class Department(Base):
    """A clinical department (诊疗科目); `approved` = on the institution's online approval."""

    __tablename__ = "departments"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(64))
    name_en: Mapped[str] = mapped_column(String(64))
    approved: Mapped[bool] = mapped_column(Boolean, default=False)


class Institution(Base):
    __tablename__ = "institution"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    practice_license_no: Mapped[str] = mapped_column(String(64))
    internet_approval_no: Mapped[str] = mapped_column(String(64))
    approval_valid_until: Mapped[date | None] = mapped_column(Date)
    address: Mapped[str] = mapped_column(String(300), default="")
    # 三级 | 二级 | 一级 | 基层: only a primary-care (基层) institution offers family-doctor contracts
    level: Mapped[str] = mapped_column(String(8), default="三级", server_default="三级")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StaffProfile(Base):
    """Credentials of a physician or pharmacist; an expired one stops them practising."""

    __tablename__ = "staff_profiles"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(64), default="")
    department_code: Mapped[str | None] = mapped_column(ForeignKey("departments.code"))
    # physicians
    license_no: Mapped[str | None] = mapped_column(String(64))
    practice_registration_no: Mapped[str | None] = mapped_column(String(64))
    registered_here: Mapped[bool] = mapped_column(Boolean, default=False)
    independent_practice_since: Mapped[date | None] = mapped_column(Date)
    license_valid_until: Mapped[date | None] = mapped_column(Date)
    # Whether the physician takes online visits now (the public directory, visit routing).
    on_duty: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    institution_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    # pharmacists
    qualification_no: Mapped[str | None] = mapped_column(String(64))
    qualification_valid_until: Mapped[date | None] = mapped_column(Date)

    account: Mapped[Account] = relationship(back_populates="staff")
    department: Mapped[Department | None] = relationship(lazy="joined")


class PhoneCode(Base):
    """One-time codes of the log (development) verifier; Twilio Verify keeps its own."""

    __tablename__ = "phone_codes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- face verification of physicians ----------------------------------------------


class FaceEnrollment(Base):
    """A physician's enrolled reference face and the state of their face checks.

    The 128-d encoding is computed once at enrollment and stored encrypted; the photo is
    kept encrypted in FACE_PHOTO_DIR (outside the web root), read only for administrators.
    `consecutive_mismatches` reaching FACE_MAX_MISMATCHES sets `locked_at`: no face check
    passes until an administrator lifts it.
    """

    __tablename__ = "face_enrollments"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    encoding: Mapped[bytes] = mapped_column(EncryptedBytes)
    photo_file: Mapped[str] = mapped_column(String(128))
    photo_media_type: Mapped[str] = mapped_column(String(32))
    photo_sha256: Mapped[str] = mapped_column(String(64))
    enrolled_by: Mapped[str | None] = mapped_column(String(64))
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    consecutive_mismatches: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[datetime | None]
    last_verified_at: Mapped[datetime | None]


class FaceImage(Base):
    """Fingerprints of every image already used for a physician (enrolled or checked):
    a later image with the same bytes or the same pixels is refused as a replay."""

    __tablename__ = "face_images"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    dhash: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(16))  # enrollment | check
    outcome: Mapped[str] = mapped_column(String(16))  # enrolled | match | mismatch
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- reclaiming an ID number registered by someone else -----------------------------


class ReclaimStatus(enum.StrEnum):
    AWAITING_CODE = "awaiting_code"  # asked; the new phone is not confirmed yet
    SUBMITTED = "submitted"  # phone confirmed: waiting for the staff check
    APPROVED = "approved"
    REJECTED = "rejected"


class IdentityReclaim(Base):
    """A person's request to take back their ID number from whoever registered it.

    The claimant is known by what they typed (name, ID number, a new phone they confirm
    by SMS code, optionally a photo of their ID card, kept encrypted) until a staff member
    checks it. Approval moves the real-name patient record (and with it the person's
    medical records) to a new account on the confirmed phone; rejection changes nothing.
    """

    __tablename__ = "identity_reclaims"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    status: Mapped[ReclaimStatus] = mapped_column(
        Enum(ReclaimStatus, native_enum=False, length=16, values_callable=_values), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    id_number: Mapped[str] = mapped_column(EncryptedText, deferred=True)
    id_number_hash: Mapped[str] = mapped_column(String(64), index=True)
    phone: Mapped[str] = mapped_column(EncryptedText, deferred=True)
    phone_hash: Mapped[str] = mapped_column(String(64))
    # The new account's password (argon2), chosen by the claimant; cleared once decided.
    password_hash: Mapped[str] = mapped_column(String(255), default="")
    photo_file: Mapped[str | None] = mapped_column(String(128))
    photo_media_type: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    code_confirmed_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    reason: Mapped[str] = mapped_column(String(500), default="")
    old_account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    new_account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"))

    @property
    def masked_id_number(self) -> str:
        return self.id_number[:3] + "*" * 11 + self.id_number[-4:]

    @property
    def masked_phone(self) -> str:
        digits = self.phone.removeprefix("+86")
        return digits[:3] + "****" + digits[-4:]
