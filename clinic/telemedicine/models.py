"""Partner institutions (cooperation agreements) and the signed messages exchanged with them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.core.crypto import EncryptedText
from clinic.core.db import Base, Versioned, new_id, utcnow


class PartnerInstitution(Base):
    """A partner institution under a cooperation agreement (合作协议), with its pinned key."""

    __tablename__ = "tm_partners"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    license_no: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(8))
    base_url: Mapped[str] = mapped_column(String(300), index=True)
    # The partner's institution key (public JWK), pinned: replaced only by an explicit rotation
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    kid: Mapped[str] = mapped_column(String(128), unique=True)
    services: Mapped[list[str]] = mapped_column(JSON, default=list)
    departments: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every department
    fee_fen: Mapped[int] = mapped_column(Integer, default=0)
    split_inviting: Mapped[int] = mapped_column(Integer)
    split_invited: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    key_rotated_at: Mapped[datetime | None]


class FederationMessage(Base):
    """A signed message received from or sent to a partner: a medical record (kept at least
    15 years; there is no delete path). The compact JWS is kept as received or sent
    (encrypted at rest: its payload names a patient); the MessageHeader id makes a
    delivery repeated by the sender's outbox a no-op."""

    __tablename__ = "tm_messages"
    __table_args__ = (UniqueConstraint("partner_id", "direction", "message_id", name="uq_tm_messages_header"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tm_partners.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # in | out
    message_id: Mapped[str] = mapped_column(String(64))  # MessageHeader.id
    event_code: Mapped[str] = mapped_column(String(64))
    kid: Mapped[str] = mapped_column(String(128))
    jws: Mapped[str] = mapped_column(EncryptedText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]  # out: when the partner answered 2xx
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    partner: Mapped[PartnerInstitution] = relationship(lazy="joined")


# --- two-way referral (双向转诊) ---------------------------------------------------------


class Referral(Versioned, Base):
    """A two-way referral (双向转诊; 2018 measures Art. 21–23), as one side keeps it: the
    sending side's record and the receiving side's record carry the same `shared_id` (the
    FHIR Task identifier in every message about it). A medical record: no delete path."""

    __tablename__ = "tm_referrals"
    __table_args__ = (UniqueConstraint("partner_id", "role", "shared_id", name="uq_tm_referrals_shared"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    shared_id: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))  # sending | receiving
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tm_partners.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # up | down
    status: Mapped[str] = mapped_column(String(16), index=True)  # rules.TaskStatus
    department: Mapped[str] = mapped_column(String(64))  # the receiving department asked for
    reason: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    # The patient here: on the receiving side matched or created by real name + ID number;
    # None when the ID number is known here under another name (a person checks it).
    patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"), index=True)
    patient_name: Mapped[str] = mapped_column(String(100))
    identity_match: Mapped[str] = mapped_column(String(16), default="")  # matched | added | created | mismatch
    visit_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("visits.id"))
    requested_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))  # sending side
    requester_name: Mapped[str] = mapped_column(String(100), default="")
    # receiving side: the signed request message it arrived in (the carried diagnoses' source)
    request_message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tm_messages.id"))
    appointment_at: Mapped[datetime | None]
    place: Mapped[str | None] = mapped_column(String(300))
    decline_reason: Mapped[str | None] = mapped_column(Text)
    outcome_summary: Mapped[str | None] = mapped_column(Text)
    responded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))  # receiving side
    responder_name: Mapped[str] = mapped_column(String(100), default="")
    outcome_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))  # receiving side
    outcome_by_name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    responded_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]

    partner: Mapped[PartnerInstitution] = relationship(lazy="joined")
    diagnoses: Mapped[list[ReferralDiagnosis]] = relationship(
        order_by="ReferralDiagnosis.diagnosed_on", lazy="selectin", back_populates="referral"
    )


class ReferralDiagnosis(Base):
    """A confirmed diagnosis the referred patient arrives with (carried in the referral as a
    FHIR Condition). On the receiving side a physician confirms it; that creates the
    confirmed diagnosis here on which the patient's online return visits pass (Art. 16)."""

    __tablename__ = "tm_referral_diagnoses"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    referral_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tm_referrals.id"), index=True)
    icd10: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    institution: Mapped[str] = mapped_column(String(200))  # where it was diagnosed in person
    diagnosed_on: Mapped[date] = mapped_column(Date)
    diagnosis_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("diagnoses.id"))  # the one here
    confirmed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    confirmed_at: Mapped[datetime | None]

    referral: Mapped[Referral] = relationship(back_populates="diagnoses")
