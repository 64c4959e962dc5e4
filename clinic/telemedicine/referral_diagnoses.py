"""Diagnoses carried by a referral: once a physician here confirms one (face-fresh, qualified
in its department, audited) it is a confirmed diagnosis here, and the patient's online
return visits pass the gate on it (2018 measures Art. 16)."""

from __future__ import annotations

import hashlib
import json
import uuid

from sqlalchemy import select

from clinic.core import audit, storage
from clinic.core.db import db, utcnow
from clinic.core.errors import Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.notifications.services import notify
from clinic.telemedicine.models import FederationMessage, ReferralDiagnosis
from clinic.telemedicine.referrals import (
    RECEIVING,
    as_physician,
    load,
)
from clinic.telemedicine.rules import N_, IllegalTaskTransition, TaskStatus
from clinic.visits.models import Diagnosis, DiagnosisStatus
from identity import face_services
from identity import services as identity
from identity.models import Patient

# --- diagnosis carry-over ------------------------------------------------------------------


def confirm_carried(who: Principal, referral_id: uuid.UUID, carried_id: uuid.UUID) -> ReferralDiagnosis:
    """A physician here confirms a diagnosis the referred patient arrived with: it becomes a
    confirmed diagnosis here (its document: the carried record and the hash of the signed
    referral), on which the patient's online return visits pass the gate (Art. 16)."""
    from clinic.visits import condition_catalog, proofs

    session = db.session()
    physician = as_physician(who)
    face_services.require_fresh_face(who)
    referral = load(referral_id)
    if referral.role != RECEIVING:
        raise Forbidden(N_("Only the receiving institution confirms carried diagnoses."), code="not_receiving")
    if referral.status not in (TaskStatus.ACCEPTED.value, TaskStatus.IN_PROGRESS.value, TaskStatus.COMPLETED.value):
        raise IllegalTaskTransition(
            N_("Carried diagnoses are confirmed once the referral is accepted."), status=referral.status
        )
    carried = next((d for d in referral.diagnoses if d.id == carried_id), None)
    if carried is None:
        raise NotFound(N_("No such carried diagnosis."))
    if carried.diagnosis_id is not None:
        raise IllegalTaskTransition(N_("This carried diagnosis is already confirmed."), code="already_reviewed")
    patient = session.get(Patient, referral.patient_id) if referral.patient_id else None
    if patient is None:
        raise Invalid(
            N_("The referred patient's identity does not match ours; check it before confirming diagnoses."),
            code="identity_mismatch",
        )
    cond = condition_catalog.catalog_condition(carried.icd10)
    if cond is None:
        raise condition_catalog.NotEligibleCondition(
            "%(icd10)s is not a common or chronic condition that may be followed up online; "
            "the patient needs an in-person visit.",
            params={"icd10": carried.icd10},
        )
    identity.require_qualified_physician(physician, department=cond.department)
    existing = session.scalars(
        select(Diagnosis).where(
            Diagnosis.patient_id == patient.id,
            Diagnosis.condition_code == cond.code,
            Diagnosis.status == DiagnosisStatus.CONFIRMED,
        )
    ).first()
    if existing is None:
        request = session.get(FederationMessage, referral.request_message_id) if referral.request_message_id else None
        record = {
            "kind": "referral-carried-diagnosis",
            "referral": referral.shared_id,
            "from": referral.partner.name,
            "icd10": carried.icd10,
            "name": carried.name,
            "diagnosed_at": carried.institution,
            "diagnosed_on": carried.diagnosed_on.isoformat(),
            "signed_message_id": request.message_id if request is not None else None,
            "signed_message_sha256": hashlib.sha256(request.jws.encode()).hexdigest() if request is not None else None,
        }
        document = json.dumps(record, ensure_ascii=False, sort_keys=True, indent=1).encode()
        existing = Diagnosis(
            patient_id=patient.id,
            submitted_by=patient.account_id,
            icd10=carried.icd10,
            institution=carried.institution,
            diagnosed_on=carried.diagnosed_on,
            document_kind="outpatient_record",
            document_path=storage.save("diagnoses", document, "json"),
            document_type="application/json",
            document_sha256=hashlib.sha256(document).hexdigest(),
        )
        session.add(existing)
        session.flush()
        proofs.record_confirmation(existing, physician.id, cond)
    carried.diagnosis_id, carried.confirmed_by, carried.confirmed_at = existing.id, physician.id, utcnow()
    audit.record(
        session,
        "referral.diagnosis_confirmed",
        subject_type="referral",
        subject_id=referral.id,
        detail={"carried": str(carried.id), "icd10": carried.icd10, "diagnosis": str(existing.id)},
    )
    notify(
        session,
        account_id=patient.account_id,
        kind="proof_confirmed",
        link="/diagnoses",
        subject_type="diagnosis",
        subject_id=existing.id,
        condition=cond.name_zh,
    )
    return carried
