"""Proof of an in-person diagnosis: a patient uploads it, a face-verified physician of the
treating department confirms it under a catalog condition or rejects it saying why."""

from __future__ import annotations

import hashlib
import uuid
from datetime import date

from sqlalchemy import exists, select

from clinic.core import audit, storage
from clinic.core.config import settings
from clinic.core.db import db, get_or_404, utcnow
from clinic.core.errors import Conflict, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.notifications import notify
from clinic.visits import rules
from clinic.visits.condition_catalog import NotEligibleCondition, catalog_condition
from clinic.visits.lifecycle import physician_account
from clinic.visits.models import Condition, Diagnosis, DiagnosisStatus, Visit
from clinic.visits.sniffing import sniff_upload
from clinic.visits.uploads import spend_upload_quota
from identity import face_services
from identity import services as identity
from identity.models import Account, Patient, Role


def submit_diagnosis(
    who: Principal,
    patient_id: uuid.UUID,
    icd10: str,
    institution: str,
    diagnosed_on: date,
    document: bytes,
    document_kind: str = "outpatient_record",
) -> Diagnosis:
    session = db.session()
    patient = identity.patient_of_account(identity.get_account(who.account_id), patient_id)
    parsed = rules.parse_icd10(icd10)
    if parsed is None:
        raise Invalid(
            f"{icd10!r} is not a valid ICD-10 code (WHO or national clinical edition 2.0).",
            fields=[{"loc": "icd10", "message": "not ICD-10"}],
        )
    code = parsed.who
    if diagnosed_on > date.today():
        raise Invalid("The diagnosis date is in the future.", fields=[{"loc": "diagnosed_on", "message": "future"}])
    if diagnosed_on < patient.birth_date:
        raise Invalid("The diagnosis date is before the patient's birth.", fields=[{"loc": "diagnosed_on"}])
    if document_kind not in rules.DOCUMENT_KINDS:
        raise Invalid("Unknown document kind.", fields=[{"loc": "document_kind", "message": "unknown"}])
    spend_upload_quota(who.account_id, len(document))
    sniffed = sniff_upload(
        document,
        max_bytes=settings().MAX_DOCUMENT_BYTES,
        allow_pdf=True,
        max_image_bytes=settings().MAX_IMAGE_BYTES,
    )
    path = storage.save("diagnoses", document, sniffed.ext)
    cond = catalog_condition(code)
    diag = Diagnosis(
        patient_id=patient.id,
        submitted_by=who.account_id,
        icd10=code,
        icd10_national=parsed.national,
        institution=institution,
        diagnosed_on=diagnosed_on,
        document_kind=document_kind,
        document_path=path,
        document_type=sniffed.mime,
        document_sha256=hashlib.sha256(document).hexdigest(),
        department=cond.department if cond else None,
    )
    session.add(diag)
    session.flush()
    audit.record(
        session,
        "diagnosis.submitted",
        subject_type="diagnosis",
        subject_id=diag.id,
        detail={"icd10": code, "icd10_national": parsed.national},
    )
    return diag


def _pending_diagnosis(diagnosis_id: uuid.UUID) -> Diagnosis:
    diag = get_or_404(Diagnosis, diagnosis_id)
    if diag.status != DiagnosisStatus.PENDING:
        raise Conflict(
            "The diagnosis has already been reviewed (%(status)s).",
            code="already_reviewed",
            params={"status": diag.status.value},
        )
    return diag


def confirm_diagnosis(who: Principal, diagnosis_id: uuid.UUID) -> Diagnosis:
    physician = physician_account(who.account_id)
    face_services.require_fresh_face(who)
    diag = _pending_diagnosis(diagnosis_id)
    cond = catalog_condition(diag.icd10)
    if cond is None:
        raise NotEligibleCondition(
            "%(icd10)s is not a common or chronic condition that may be followed up online; "
            "the patient needs an in-person visit.",
            params={"icd10": diag.icd10},
        )
    identity.require_qualified_physician(physician, department=cond.department)
    record_confirmation(diag, physician.id, cond)
    notify(
        db.session(),
        account_id=diag.submitted_by,
        kind="proof_confirmed",
        link="/diagnoses",
        subject_type="diagnosis",
        subject_id=diag.id,
        condition=cond.name_zh,
    )
    return diag


def record_confirmation(diag: Diagnosis, physician_id: uuid.UUID, cond: Condition) -> Diagnosis:
    """Mark a proof confirmed under a catalog condition (after the checks above; also the demo's seed)."""
    diag.status = DiagnosisStatus.CONFIRMED
    diag.condition_code, diag.department = cond.code, cond.department
    diag.reviewed_by, diag.reviewed_at = physician_id, utcnow()
    audit.record(
        db.session(),
        "diagnosis.confirmed",
        subject_type="diagnosis",
        subject_id=diag.id,
        detail={"condition": cond.code},
    )
    return diag


def reject_diagnosis(who: Principal, diagnosis_id: uuid.UUID, reason: str) -> Diagnosis:
    session = db.session()
    physician = physician_account(who.account_id)
    diag = _pending_diagnosis(diagnosis_id)
    cond = catalog_condition(diag.icd10)
    identity.require_qualified_physician(physician, department=cond.department if cond else None)
    diag.status = DiagnosisStatus.REJECTED
    diag.rejection_reason = reason
    diag.reviewed_by, diag.reviewed_at = physician.id, utcnow()
    audit.record(session, "diagnosis.rejected", subject_type="diagnosis", subject_id=diag.id, detail={"reason": reason})
    notify(
        session,
        account_id=diag.submitted_by,
        kind="proof_rejected",
        link="/diagnoses",
        subject_type="diagnosis",
        subject_id=diag.id,
        reason=reason,
    )
    return diag


def diagnoses_of_account(account_id: uuid.UUID) -> list[Diagnosis]:
    """The proofs of every person on the account, newest first."""
    people = select(Patient.id).where(Patient.account_id == account_id)
    return list(
        db.session.scalars(
            select(Diagnosis).where(Diagnosis.patient_id.in_(people)).order_by(Diagnosis.created_at.desc())
        )
    )


def pending_diagnoses_for(physician_id: uuid.UUID) -> list[Diagnosis]:
    """The proofs waiting for a physician of this one's department (and those no department treats)."""
    physician = physician_account(physician_id)
    dept = physician.staff.department_code if physician.staff else None
    query = select(Diagnosis).where(Diagnosis.status == DiagnosisStatus.PENDING)
    # Codes outside the catalog have no department: every physician sees them, to decline.
    query = query.where((Diagnosis.department == dept) | Diagnosis.department.is_(None))
    return list(db.session.scalars(query.order_by(Diagnosis.created_at).limit(200)))


def diagnosis_for(who: Principal, diagnosis_id: uuid.UUID) -> Diagnosis:
    """A diagnosis the caller may see; anyone else gets 404 (its existence is not revealed).

    Patients: their own people's. Physicians: a pending proof in their department's queue
    (the same rows `pending_diagnoses_for` lists), one they reviewed themselves, or one of
    a patient they treat or have treated (a visit of theirs for that patient).
    """
    diag = get_or_404(Diagnosis, diagnosis_id)
    if who.role == Role.PATIENT and diag.patient.account_id == who.account_id:
        return diag
    if who.role == Role.PHYSICIAN and _physician_may_read(identity.get_account(who.account_id), diag):
        return diag
    raise NotFound()


def _physician_may_read(physician: Account, diag: Diagnosis) -> bool:
    dept = physician.staff.department_code if physician.staff else None
    if diag.status == DiagnosisStatus.PENDING and (diag.department is None or diag.department == dept):
        return True
    if diag.reviewed_by == physician.id:
        return True
    treats = exists().where(Visit.patient_id == diag.patient_id, Visit.physician_id == physician.id)
    return bool(db.session.scalar(select(treats)))
