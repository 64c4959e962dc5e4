"""The drug catalog, contraindicated interactions, physicians' signing keys, prescriptions."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.core.crypto import EncryptedBytes
from clinic.core.db import Base, Versioned, new_id, utcnow
from prescriptions.rules import PrescriptionStatus


class Drug(Base):
    """A catalog product. `control_class` is set from the official lists; a product whose
    ingredients the lists and the known-ordinary table cannot resolve is `unclassified` (held)
    until a pharmacist or administrator classifies it (`classified_by`, `classified_at`, audited)."""

    __tablename__ = "drugs"
    __table_args__ = (UniqueConstraint("name", "form", "strength", name="uq_drugs_product"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), index=True)  # product name as printed
    generic_name: Mapped[str] = mapped_column(String(200), default="", index=True)
    generic_name_en: Mapped[str] = mapped_column(String(200), default="", index=True)
    form: Mapped[str] = mapped_column(String(64), default="")
    strength: Mapped[str] = mapped_column(String(100), default="")
    route: Mapped[str] = mapped_column(String(64), default="")
    atc_code: Mapped[str | None] = mapped_column(String(16))
    control_class: Mapped[str | None] = mapped_column(String(24), index=True)
    control_reason: Mapped[str] = mapped_column(Text, default="")
    cold_chain: Mapped[bool] = mapped_column(Boolean, default=False)
    ingredients: Mapped[list[str]] = mapped_column(JSON, default=list)
    indicated_conditions: Mapped[list[str]] = mapped_column(JSON, default=list)
    search_text: Mapped[str] = mapped_column(Text, default="")  # lower-cased names for search
    source: Mapped[str] = mapped_column(String(64), default="seed")  # seed | import
    classified_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    classified_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def as_facts(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "control_class": self.control_class}


class DrugInteraction(Base):
    """A contraindicated ingredient pair (a < b, canonical keys), with its source."""

    __tablename__ = "drug_interactions"
    __table_args__ = (UniqueConstraint("ingredient_a", "ingredient_b", name="uq_drug_interactions_pair"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    ingredient_a: Mapped[str] = mapped_column(String(120))
    ingredient_b: Mapped[str] = mapped_column(String(120))
    severity: Mapped[str] = mapped_column(String(24), default="contraindicated")
    source: Mapped[str] = mapped_column(Text, default="")


Index("ix_drug_interactions_b", DrugInteraction.ingredient_b)


def _values(e: type[enum.Enum]) -> list[str]:
    return [str(m.value) for m in e]


class ImportState(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class FormularyImport(Base):
    """An administrator's formulary import started from the pages: who, which file, how far.

    Kept in the database, not in the process that runs it, so that every gunicorn worker
    (and every host) shows the same progress and report. `updated_at` moves with every
    batch committed: a run still `running` long after it stopped moving was interrupted.
    """

    __tablename__ = "formulary_imports"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    filename: Mapped[str] = mapped_column(String(200))
    started_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    state: Mapped[ImportState] = mapped_column(
        Enum(ImportState, native_enum=False, length=16, values_callable=_values),
        default=ImportState.RUNNING,
    )
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class SigningKey(Base):
    """A physician's EC P-256 key pair; the private key is encrypted at rest (Fernet).

    A retired key signs nothing more but stays published in the JWKS so that what it
    signed can still be verified.
    """

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_key: Mapped[bytes] = mapped_column(EncryptedBytes)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]


class Prescription(Versioned, Base):
    """A signed prescription. Its content is frozen at signing: `content` is what the JWS signs."""

    __tablename__ = "prescriptions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visits.id"), index=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    physician_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    status: Mapped[PrescriptionStatus] = mapped_column(
        Enum(PrescriptionStatus, native_enum=False, length=24, values_callable=_values),
        default=PrescriptionStatus.PENDING_REVIEW,
        index=True,
    )
    diagnosis_icd10: Mapped[str] = mapped_column(String(16))
    weight_kg: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    long_term: Mapped[bool] = mapped_column(Boolean, default=False)
    assessment_note: Mapped[str | None] = mapped_column(Text)
    guardian: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    accompanying_physician: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    jws: Mapped[str] = mapped_column(Text)
    kid: Mapped[str] = mapped_column(ForeignKey("signing_keys.kid"))
    signed_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    dispensed_at: Mapped[datetime | None]
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # a revision of a returned (or rejected, or voided) prescription names the one it replaces
    replaces_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("prescriptions.id"), index=True)
    void_reason: Mapped[str | None] = mapped_column(Text)  # the physician's, when voided before review

    items: Mapped[list[PrescriptionItem]] = relationship(
        order_by="PrescriptionItem.position", lazy="selectin", cascade="all, delete-orphan"
    )


class PrescriptionItem(Base):
    __tablename__ = "prescription_items"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    prescription_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("prescriptions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    drug_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("drugs.id"))
    drug_name: Mapped[str] = mapped_column(String(200))
    strength: Mapped[str] = mapped_column(String(100), default="")
    dose: Mapped[Decimal] = mapped_column(Numeric(10, 3))
    unit: Mapped[str] = mapped_column(String(16))
    frequency: Mapped[str] = mapped_column(String(32))
    route: Mapped[str] = mapped_column(String(32))
    days: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    cold_chain: Mapped[bool] = mapped_column(Boolean, default=False)
