"""The remote-consultation consent (远程会诊知情同意): the current text, the patient's (or
guardian's) acceptance of it, and the acceptance a consultation request must find."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select

from clinic.core.db import db
from clinic.core.errors import Invalid
from clinic.core.principal import Principal
from clinic.core.versioned_text import TextShelf, VersionedText, record_acceptance
from clinic.telemedicine.models import (
    ConsultationConsent,
)
from clinic.telemedicine.rules import N_
from identity import services as identity


class ConsentRequired(Invalid):
    code = "consent_required"
    default_message = N_(
        "The patient (or guardian) has not accepted the current remote-consultation consent; ask them to first."
    )


# --- the remote-consultation consent ---------------------------------------------------------

CONSENT_DIR = Path(__file__).resolve().parent / "consult_consent"
_consents = TextShelf(CONSENT_DIR)


def current_consent() -> VersionedText:
    return _consents.current()


def accept_consent(who: Principal, patient_id: uuid.UUID, version: str) -> ConsultationConsent:
    """The patient (or the guardian holding the account) accepts the current text."""
    patient = identity.patient_of_account(identity.get_account(who.account_id), patient_id)
    return record_acceptance(
        _consents,
        version,
        ConsultationConsent,
        account_id=who.account_id,
        patient_id=patient.id,
        action="consultation.consent_accepted",
        stale_message=N_("The remote-consultation consent has changed; the current version is %(version)s."),
    )


def current_consent_of(patient_id: uuid.UUID) -> ConsultationConsent | None:
    return db.session.scalar(
        select(ConsultationConsent)
        .where(
            ConsultationConsent.patient_id == patient_id,
            ConsultationConsent.version_hash == current_consent().sha256,
        )
        .order_by(ConsultationConsent.accepted_at.desc())
    )
