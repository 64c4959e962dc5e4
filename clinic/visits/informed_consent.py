"""Informed consent to online care: the versioned text shipped in consent/ and who accepted which."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Exists, exists, select

from clinic.core import audit
from clinic.core.db import db
from clinic.core.errors import Conflict
from clinic.core.versioned_text import TextShelf, VersionedText
from clinic.visits.models import ConsentAcceptance
from identity import services as identity
from identity.models import Account

CONSENT_DIR = Path(__file__).resolve().parent / "consent"


_consents = TextShelf(CONSENT_DIR)


def current_consent() -> VersionedText:
    """The newest version shipped with the code (a new version is a new file and a deploy)."""
    return _consents.current()


class StaleConsent(Conflict):
    code = "stale_version"


def accept_consent(account: Account, patient_id: str, version: str) -> ConsentAcceptance:
    session = db.session()
    patient = identity.patient_of_account(account, patient_id)
    current = current_consent()
    if version != current.version:
        raise StaleConsent(
            "The consent text has changed; the current version is %(version)s.", params={"version": current.version}
        )
    acc = ConsentAcceptance(
        account_id=account.id,
        patient_id=patient.id,
        version=current.version,
        version_hash=current.sha256,
        client_ip=audit.current_actor().client_ip,
    )
    session.add(acc)
    session.flush()
    audit.record(
        session,
        "consent.accepted",
        subject_type="patient",
        subject_id=patient.id,
        detail={"version": current.version, "sha256": current.sha256},
    )
    return acc


def consent_accepted(patient_id: Any, version_hash: Any) -> Exists:
    """The patient accepted this consent version (shared by the pages and the visit gate)."""
    return exists().where(ConsentAcceptance.patient_id == patient_id, ConsentAcceptance.version_hash == version_hash)


def has_current_consent(patient_id: uuid.UUID) -> bool:
    return bool(db.session.scalar(select(consent_accepted(patient_id, current_consent().sha256))))
