"""Partner institutions (cooperation agreements) and the signed messages exchanged with them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.core.crypto import EncryptedText
from clinic.core.db import Base, new_id, utcnow


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
