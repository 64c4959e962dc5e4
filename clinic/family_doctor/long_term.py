"""Long-term prescriptions renewed by the family-doctor team from the patient's last one,
when the home readings say the patient is stable (every prescription rule runs again)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db
from clinic.core.errors import NotFound, RuleRefusal
from clinic.core.principal import Principal
from clinic.family_doctor import rules
from clinic.family_doctor.contracts import (
    person_for,
)
from clinic.family_doctor.models import (
    Alert,
    HomeReading,
)
from clinic.family_doctor.rules import Classification, ContractStatus
from clinic.family_doctor.services import (
    CHINA,
    today,
)
from identity.models import Role

# --- long-term prescriptions: renewed from the last one --------------------------------

RENEWABLE_FROM = ("approved", "dispensed", "out_for_delivery", "delivered")

if TYPE_CHECKING:
    from prescriptions.models import Prescription


def _stability(patient_id: uuid.UUID, day: date) -> bool:
    since = datetime.combine(day - timedelta(days=rules.STABLE_WINDOW_DAYS), datetime.min.time(), tzinfo=CHINA)
    latest: dict[str, Classification] = {}
    for r in db.session.scalars(
        select(HomeReading)
        .where(HomeReading.patient_id == patient_id, HomeReading.kind != "weight", HomeReading.measured_at >= since)
        .order_by(HomeReading.measured_at.desc())
    ):
        latest.setdefault(r.kind, r.classification)
    open_alerts = db.session.scalars(
        select(Alert.id).where(Alert.patient_id == patient_id, Alert.acknowledged_at.is_(None))
    ).all()
    return rules.is_stable(list(latest.values()), len(open_alerts))


def renew_long_term(who: Principal, patient_id: uuid.UUID, visit_id: uuid.UUID) -> Prescription:
    """The team's physician renews the patient's last long-term prescription in a return visit
    they have accepted: same drugs, doses and days; every prescription rule is run again by
    the prescribing service (a new signature, a new pharmacist review)."""
    from prescriptions import services as rx_services
    from prescriptions.models import Prescription

    patient, contract = person_for(who, patient_id)
    if who.role != Role.PHYSICIAN or contract is None or contract.status != ContractStatus.ACTIVE:
        raise NotFound()
    last = db.session.scalars(
        select(Prescription)
        .where(Prescription.patient_id == patient.id, Prescription.status.in_(RENEWABLE_FROM))
        .order_by(Prescription.signed_at.desc())
        .limit(1)
    ).first()
    violations = rules.renewal_violations(
        has_previous=last is not None,
        long_term=bool(last and last.long_term),
        stable=_stability(patient.id, today()),
    )
    if violations:
        raise RuleRefusal(violations[0].code, violations)
    assert last is not None
    spec = rx_services.PrescriptionSpec(
        items=tuple(
            rx_services.ItemSpec(
                drug_id=i.drug_id,
                dose=i.dose,
                unit=i.unit,
                frequency=i.frequency,
                route=i.route,
                days=i.days,
                quantity=i.quantity,
            )
            for i in last.items
        ),
        weight_kg=last.weight_kg,
        long_term=True,
        assessment_note=last.assessment_note or "家庭医生团队续方：病情稳定，居家读数控制满意",
    )
    rx = rx_services.create_prescription(who, visit_id, spec)
    audit.record(
        db.session(),
        "fd.long_term_renewed",
        subject_type="prescription",
        subject_id=rx.id,
        detail={"from": str(last.id), "patient": str(patient.id), "contract": str(contract.id)},
    )
    return rx
