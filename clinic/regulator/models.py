"""Regulator accounts' allowed scopes, and recorded incidents."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.db import Base, new_id, utcnow


def _values(e: type[enum.Enum]) -> list[str]:
    return [str(m.value) for m in e]


class RegulatorAccess(Base):
    """What one regulator account may ask for in a scoped token. Without a row an account
    may read de-identified data only (`read:deidentified`)."""

    __tablename__ = "regulator_access"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    changed_by: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentKind(enum.StrEnum):
    DATA_SECURITY = "data_security"
    ADVERSE_EVENT = "adverse_event"


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Incident(Base):
    """A data-security incident (Art. 20: reported at once) or a clinical adverse event."""

    __tablename__ = "incidents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[IncidentKind] = mapped_column(
        Enum(IncidentKind, native_enum=False, length=24, values_callable=_values), index=True
    )
    severity: Mapped[Severity] = mapped_column(Enum(Severity, native_enum=False, length=16, values_callable=_values))
    what: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime]
    reported_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    reported_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    regulator_notified_at: Mapped[datetime | None]
    notification_error: Mapped[str | None] = mapped_column(Text)
    suspension_triggered: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
