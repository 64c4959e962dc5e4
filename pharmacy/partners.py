"""The delivery partner registry: qualified third parties entrusted with delivery (Art. 18
of the 2018 measures), their endpoints (checked against private addresses) and callback
secrets. Use cases flush and audit; the caller's commit point commits.
"""

from __future__ import annotations

import logging
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select

from clinic.core import audit
from clinic.core.config import settings
from clinic.core.db import db
from clinic.core.errors import NotFound
from pharmacy import partner_security
from pharmacy.models import DeliveryPartner

log = logging.getLogger("clinic.pharmacy")


# --- partners --------------------------------------------------------------------------


@dataclass(frozen=True)
class PartnerSpec:
    name: str
    license_no: str
    license_valid_until: date
    regions: list[str]
    cold_chain: bool
    priority: int
    endpoint: str
    secret: str | None = None
    active: bool = True


def _resolve(host: str, port: int) -> list[str]:
    """Every address a host name resolves to (none when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def check_endpoint(url: str) -> list[str]:
    """The endpoint rule (pharmacy.partner_security.check_endpoint) with this deployment's setting."""
    return partner_security.check_endpoint(
        url, private_allowed=bool(settings().PARTNER_PRIVATE_ENDPOINTS), resolve=_resolve
    )


def create_partner(spec: PartnerSpec) -> tuple[DeliveryPartner, str]:
    """Register a delivery partner; answers it and its callback secret (shown this once)."""
    session = db.session()
    check_endpoint(spec.endpoint)
    if session.scalar(select(DeliveryPartner.id).where(DeliveryPartner.name == spec.name)) is not None:
        from clinic.core.errors import Conflict

        raise Conflict(f"A partner named {spec.name} exists.", code="partner_exists")
    secret = spec.secret or secrets.token_urlsafe(32)
    partner = DeliveryPartner(
        name=spec.name,
        license_no=spec.license_no,
        license_valid_until=spec.license_valid_until,
        regions=sorted(set(spec.regions)),
        cold_chain=spec.cold_chain,
        priority=spec.priority,
        endpoint=spec.endpoint,
        secret=secret,
        active=spec.active,
    )
    session.add(partner)
    session.flush()
    audit.record(
        session,
        "partner.created",
        subject_type="delivery_partner",
        subject_id=partner.id,
        detail={
            "name": spec.name,
            "license_no": spec.license_no,
            "license_valid_until": spec.license_valid_until.isoformat(),
            "regions": partner.regions,
            "cold_chain": spec.cold_chain,
            "priority": spec.priority,
        },
    )
    return partner, secret


def list_partners() -> list[DeliveryPartner]:
    return list(db.session.scalars(select(DeliveryPartner).order_by(DeliveryPartner.priority, DeliveryPartner.name)))


def update_partner(
    partner_id: uuid.UUID, changes: dict[str, Any], rotate_secret: bool = False
) -> tuple[DeliveryPartner, str | None]:
    session = db.session()
    partner = session.get(DeliveryPartner, partner_id)
    if partner is None:
        raise NotFound()
    allowed = {"license_no", "license_valid_until", "regions", "cold_chain", "priority", "endpoint", "active"}
    applied = {k: v for k, v in changes.items() if k in allowed and v is not None}
    if "endpoint" in applied:
        check_endpoint(applied["endpoint"])
    for key, value in applied.items():
        setattr(partner, key, sorted(set(value)) if key == "regions" else value)
    secret = None
    if rotate_secret:
        secret = partner.secret = secrets.token_urlsafe(32)
    audit.record(
        session,
        "partner.updated",
        subject_type="delivery_partner",
        subject_id=partner.id,
        detail={"changes": applied, "secret_rotated": rotate_secret},
    )
    session.flush()
    return partner, secret


DEMO_PARTNERS = [
    # name, license, regions, cold chain, priority, endpoint (nothing listens there in the demo)
    ("顺达医药配送", "YPJY-京-2024-0001", ["11", "12", "13"], False, 10, "http://127.0.0.1:9/partners/shunda/orders"),
    ("冷链康运", "YPJY-沪-2024-0002", ["11", "31", "32", "33"], True, 20, "http://127.0.0.1:9/partners/kangyun/orders"),
]


def seed_demo_partners(today: date | None = None) -> list[dict[str, Any]]:
    """Two demo partners (one with cold chain); their id and secret for callbacks."""
    from datetime import timedelta

    today = today or date.today()
    out = []
    for name, lic, regions, cold, prio, endpoint in DEMO_PARTNERS:
        partner, secret = create_partner(
            PartnerSpec(name, lic, today + timedelta(days=2 * 365), regions, cold, prio, endpoint)
        )
        out.append(
            {
                "id": str(partner.id),
                "name": name,
                "secret": secret,
                "cold_chain": cold,
                "regions": partner.regions,
                "endpoint": endpoint,
            }
        )
    log.warning(
        "demo delivery partners point at %s, where nothing listens: dispatches to them will fail and "
        "retry with backoff (see outbox_jobs); callbacks signed with their secrets still work",
        ", ".join(p[5] for p in DEMO_PARTNERS),
    )
    return out
