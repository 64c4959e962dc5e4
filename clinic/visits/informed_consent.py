"""Informed consent to online care: the versioned text shipped in consent/ and who accepted which."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Exists, exists, select

from clinic.core.db import db
from clinic.core.principal import Principal
from clinic.core.versioned_text import TextShelf, VersionedText, record_acceptance
from clinic.visits.models import ConsentAcceptance
from identity import services as identity

CONSENT_DIR = Path(__file__).resolve().parent / "consent"


_consents = TextShelf(CONSENT_DIR)


def current_consent() -> VersionedText:
    """The newest version shipped with the code (a new version is a new file and a deploy)."""
    return _consents.current()


def accept_consent(who: Principal, patient_id: uuid.UUID, version: str) -> ConsentAcceptance:
    """The patient (or the guardian holding the account) accepts the current text."""
    patient = identity.patient_of_account(identity.get_account(who.account_id), patient_id)
    return record_acceptance(
        _consents,
        version,
        ConsentAcceptance,
        account_id=who.account_id,
        patient_id=patient.id,
        action="consent.accepted",
        stale_message="The consent text has changed; the current version is %(version)s.",
    )


def consent_accepted(patient_id: Any, version_hash: Any) -> Exists:
    """The patient accepted this consent version (shared by the pages and the visit gate)."""
    return exists().where(ConsentAcceptance.patient_id == patient_id, ConsentAcceptance.version_hash == version_hash)


def has_current_consent(patient_id: uuid.UUID) -> bool:
    return bool(db.session.scalar(select(consent_accepted(patient_id, current_consent().sha256))))
