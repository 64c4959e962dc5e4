"""The switch that suspends online services (new visits are refused with its reason)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from clinic.core import audit
from clinic.core.db import db
from clinic.core.errors import Forbidden, ServiceUnavailable
from clinic.core.principal import Principal
from clinic.visits.models import ServiceSwitch
from identity import services as identity
from identity.models import Role


class ServiceSuspended(ServiceUnavailable):
    code = "service_suspended"


def newest_switch(*what: Any) -> Select[Any]:
    """The newest row of the switch is its current state."""
    return select(*what).order_by(ServiceSwitch.id.desc()).limit(1)


def suspension() -> ServiceSwitch | None:
    row = db.session.scalars(newest_switch(ServiceSwitch)).first()
    return row if row is not None and row.suspended else None


def set_suspension(who: Principal, suspended: bool, reason: str) -> ServiceSwitch:
    """An administrator stops or resumes new online visits; the row records who did."""
    session = db.session()
    admin = identity.get_account(who.account_id)
    if admin.role != Role.ADMIN:
        raise Forbidden()
    row = ServiceSwitch(suspended=suspended, reason=reason, changed_by=admin.id)
    session.add(row)
    session.flush()
    audit.record(
        session,
        "service.suspended" if suspended else "service.resumed",
        subject_type="service",
        subject_id="online",
        detail={"reason": reason},
    )
    return row


def refuse_if_suspended() -> None:
    row = suspension()
    if row is not None:
        raise ServiceSuspended(
            "Online services are suspended: %(reason)s", params={"reason": row.reason}, reason=row.reason
        )
