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
    # The lowest professional title that may answer this partner's consultations (Jilin
    # measures Art. 14: 副高 and above); checked on the invited side when a specialist accepts
    consult_min_title: Mapped[str] = mapped_column(String(16), default="副主任医师", server_default="副主任医师")
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


# --- remote consultation (远程会诊) and settlements between institutions ------------------


class ConsultationConsent(Base):
    """A patient's (or guardian's) acceptance of one version of the remote-consultation
    consent text (Jilin measures Art. 23, 28): what is shared with whom, the fee, and that
    the inviting institution stays responsible."""

    __tablename__ = "tm_consult_consents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    version: Mapped[str] = mapped_column(String(32))
    version_hash: Mapped[str] = mapped_column(String(64))
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    client_ip: Mapped[str | None] = mapped_column(String(64))


class Consultation(Base):
    """One remote consultation as one side keeps it: the inviting institution's record
    (role "inviting", with its own patient) or the invited institution's (role "invited",
    with the minimum identity the request carried). Both are keyed by the shared Task /
    ServiceRequest identifier `task_id`. A medical record: no delete path."""

    __tablename__ = "tm_consultations"
    __table_args__ = (UniqueConstraint("partner_id", "role", "task_id", name="uq_tm_consultations_task"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(8))  # inviting | invited
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tm_partners.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # rules.TaskStatus
    department: Mapped[str] = mapped_column(String(64), index=True)
    urgency: Mapped[str] = mapped_column(String(8))  # routine | urgent
    question: Mapped[str] = mapped_column(EncryptedText)
    summary: Mapped[str] = mapped_column(EncryptedText)
    # inviting side: our patient, the visit it came from, who asked and who is present
    patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"), index=True)
    visit_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("visits.id"))
    requested_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    consent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tm_consult_consents.id"))
    # both sides: the minimum identity shared, the names of the physicians, the conditions
    patient_json: Mapped[str] = mapped_column(EncryptedText)  # {name, sex, birth_date}
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    requester_name: Mapped[str] = mapped_column(String(100), default="")
    present_physicians: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # invited side: who took it; inviting side learns their name and title
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    specialist_name: Mapped[str] = mapped_column(String(100), default="")
    specialist_title: Mapped[str] = mapped_column(String(64), default="")
    # the fee as each side's own agreement said when the consultation was requested
    fee_fen: Mapped[int] = mapped_column(Integer)
    split_inviting: Mapped[int] = mapped_column(Integer)
    split_invited: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    accepted_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None] = mapped_column(index=True)  # the opinion's signing time
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    partner: Mapped[PartnerInstitution] = relationship(lazy="joined")


class ConsultationAttachment(Base):
    """A record, image or ECG/lab PDF sent with a consultation, stored like other uploads
    (private storage, type sniffed from the bytes); both sides keep a copy."""

    __tablename__ = "tm_consult_attachments"
    __table_args__ = (UniqueConstraint("consultation_id", "shared_id", name="uq_tm_consult_attachment"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    consultation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tm_consultations.id"), index=True)
    shared_id: Mapped[str] = mapped_column(String(64))  # the DocumentReference id, the same on both sides
    filename: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(300))
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsultationNote(Base):
    """A message between the two sides about a consultation (questions asked back, answers)."""

    __tablename__ = "tm_consult_notes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    consultation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tm_consultations.id"), index=True)
    shared_id: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(8))  # inviting | invited: who wrote it
    author_name: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(EncryptedText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsultationOpinion(Base):
    """The consultation opinion (会诊意见), signed by the invited specialist with their own
    key: the compact JWS as signed, and the public key that verifies it (vouched for by the
    invited institution's signature on the message that carried it)."""

    __tablename__ = "tm_consult_opinions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    consultation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tm_consultations.id"), unique=True)
    opinion: Mapped[str] = mapped_column(EncryptedText)
    recommendations: Mapped[str] = mapped_column(EncryptedText)
    jws: Mapped[str] = mapped_column(EncryptedText)
    signer_kid: Mapped[str] = mapped_column(String(128))
    signer_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    signer_name: Mapped[str] = mapped_column(String(100))
    signer_title: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SettlementStatement(Base):
    """A monthly settlement statement between this institution and a partner (Jilin Art.
    41–44), as sent to the partner or as received from it: the consultations completed in
    the month with each one's fee and split. Kept as exchanged; a newer one supersedes."""

    __tablename__ = "tm_settlement_statements"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tm_partners.id"), index=True)
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM (Beijing)
    direction: Mapped[str] = mapped_column(String(8))  # in | out
    message_id: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    total_fen: Mapped[int] = mapped_column(Integer)
    inviting_share_fen: Mapped[int] = mapped_column(Integer)
    invited_share_fen: Mapped[int] = mapped_column(Integer)
    # [{task_id, inviting: "sender"|"receiver", fee_fen, inviting_share_fen, invited_share_fen}]
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
