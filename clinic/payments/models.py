"""Payments (one row per PaymentIntent) and the provider events already applied."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Enum, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.db import Base, new_id, utcnow
from clinic.payments.rules import PaymentStatus


def _values(e: type[PaymentStatus]) -> list[str]:
    return [str(m.value) for m in e]


class Payment(Base):
    """A fee charged through the provider for one subject (a visit, a prescription's drugs)."""

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_purpose_subject", "purpose", "subject_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    purpose: Mapped[str] = mapped_column(String(32))  # consultation | drug_fee
    subject_id: Mapped[uuid.UUID]
    amount_fen: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="cny")
    provider: Mapped[str] = mapped_column(String(16), default="stripe")
    provider_ref: Mapped[str] = mapped_column(String(255), unique=True)  # the PaymentIntent id
    status: Mapped[PaymentStatus] = mapped_column(
        Enum(PaymentStatus, native_enum=False, length=24, values_callable=_values),
        default=PaymentStatus.REQUIRES_PAYMENT,
    )
    failure_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    paid_at: Mapped[datetime | None]
    refunded_at: Mapped[datetime | None]
    refund_ref: Mapped[str | None] = mapped_column(String(255))


class ProcessedEvent(Base):
    """A provider event that has taken effect: the primary key makes a second one impossible."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16), default="stripe")
    type: Mapped[str] = mapped_column(String(80))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
