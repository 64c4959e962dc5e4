"""Delivery partners, deliveries with their partner events (the SMS log is clinic/notifications)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.core.crypto import EncryptedText
from clinic.core.db import Base, Versioned, new_id, utcnow
from pharmacy.rules import DeliveryStatus, PartnerFacts, ReviewState
from prescriptions.models import Prescription


def _values(e: Any) -> list[str]:
    return [str(m.value) for m in e]


class DeliveryPartner(Base):
    """A qualified third party entrusted with delivery (Art. 18 of the 2018 measures)."""

    __tablename__ = "delivery_partners"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    license_no: Mapped[str] = mapped_column(String(64))
    license_valid_until: Mapped[date] = mapped_column(Date)
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    cold_chain: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    endpoint: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(EncryptedText)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def facts(self) -> PartnerFacts:
        return PartnerFacts(
            id=str(self.id),
            name=self.name,
            license_no=self.license_no,
            license_valid_until=self.license_valid_until,
            regions=tuple(self.regions or ()),
            cold_chain=self.cold_chain,
            priority=self.priority,
            active=self.active,
        )


class Delivery(Versioned, Base):
    """Getting one dispensed prescription to the patient's door (or to the pharmacy counter)."""

    __tablename__ = "deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    prescription_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("delivery_partners.id"), index=True)
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, native_enum=False, length=24, values_callable=_values), index=True
    )
    recipient_name: Mapped[str] = mapped_column(EncryptedText)
    recipient_phone: Mapped[str] = mapped_column(EncryptedText)
    address: Mapped[str] = mapped_column(EncryptedText)
    region_code: Mapped[str] = mapped_column(String(12))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # {drug_id, name, quantity, cold_chain}
    tried_partner_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    routing: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # why partners were passed over
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    # the current partner's waybill number (运单号), from its callbacks; cleared when rerouted
    waybill_no: Mapped[str | None] = mapped_column(String(40))

    partner: Mapped[DeliveryPartner | None] = relationship(lazy="joined")
    events: Mapped[list[DeliveryEvent]] = relationship(
        back_populates="delivery", order_by="DeliveryEvent.received_at", lazy="selectin"
    )

    @property
    def needs_cold_chain(self) -> bool:
        return any(bool(i.get("cold_chain")) for i in self.items or [])


class DeliveryEvent(Base):
    """A status event: from a partner's callback (event_id unique per partner) or our own."""

    __tablename__ = "delivery_events"
    __table_args__ = (UniqueConstraint("partner_id", "event_id", name="uq_delivery_events_partner_event"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deliveries.id"), index=True)
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("delivery_partners.id"))
    event_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(24))  # the event: picked_up, in_transit, delivered, failed, ...
    at: Mapped[datetime]  # when it happened (the partner's time for callbacks)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    raw: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    waybill_no: Mapped[str | None] = mapped_column(String(40))  # as the partner's callback gave it

    delivery: Mapped[Delivery] = relationship(back_populates="events")


class Review(Base):
    """A prescription's place in the pharmacists' review queue, the decision, and the drug fee.

    Written in the same transaction as the prescription (see pharmacy.services): the queue row
    is what claimers lock (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so a claim committed by
    one pharmacist is seen by every later claimer even under concurrency.
    """

    __tablename__ = "pharmacy_reviews"
    __table_args__ = (Index("ix_pharmacy_reviews_state_queued_at", "state", "queued_at"),)

    prescription_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("prescriptions.id"), primary_key=True)
    # the same VARCHAR(16) as ever, read and written as the lifecycle's enum (pharmacy.rules)
    state: Mapped[ReviewState] = mapped_column(
        Enum(ReviewState, native_enum=False, length=16, values_callable=_values), default=ReviewState.PENDING
    )
    queued_at: Mapped[datetime]
    claimed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    claimed_at: Mapped[datetime | None]
    claim_expires_at: Mapped[datetime | None]
    decision: Mapped[str | None] = mapped_column(String(16))  # approve | reject | return
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    decided_at: Mapped[datetime | None]
    signature_valid: Mapped[bool | None] = mapped_column(Boolean)
    rule_codes: Mapped[list[str]] = mapped_column(JSON, default=list)  # violations when decided
    pharmacist_jws: Mapped[str | None] = mapped_column(Text)
    pharmacist_kid: Mapped[str | None] = mapped_column(String(64))
    # the drug fee: owed after approval; waived (paid_at set at approval) when payments are off
    fee_fen: Mapped[int] = mapped_column(Integer, default=0)
    fee_waived: Mapped[bool] = mapped_column(Boolean, default=False)
    paid_at: Mapped[datetime | None]
    # where it goes (the patient says so at checkout); collect: at the pharmacy counter
    recipient_name: Mapped[str | None] = mapped_column(EncryptedText)
    recipient_phone: Mapped[str | None] = mapped_column(EncryptedText)
    address: Mapped[str | None] = mapped_column(EncryptedText)
    region_code: Mapped[str | None] = mapped_column(String(12))
    collect: Mapped[bool] = mapped_column(Boolean, default=False)
    # 调配 and 核对、发药 (处方管理办法 第三十七条, 处方标准 后记): the pharmacist who made up the
    # prescription and the other pharmacist who checked it against it and issued it. The API
    # calls them `dispensed_by` and `checked_by`; a prescription is `dispensed` once checked.
    prepared_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    prepared_at: Mapped[datetime | None]
    checked_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    checked_at: Mapped[datetime | None]

    prescription: Mapped[Prescription] = relationship(lazy="joined")
