"""Texts a person accepts by version (the visit consent, the family-doctor agreement, the
remote-consultation consent): Markdown files shipped with the code, `<version>.zh.md` and
`<version>.en.md` in one directory. A new version is a new file and a deploy; what a person
accepted is recorded by the text's SHA-256, so a changed file is a new text.

`record_acceptance` is the one rule of accepting a consent (the visit consent, the
remote-consultation consent): only the current version, recorded with its hash and audited."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TypeVar

from clinic.core import audit
from clinic.core.db import Base, db
from clinic.core.errors import Conflict


@dataclass(frozen=True)
class VersionedText:
    version: str
    text_zh: str
    text_en: str

    @cached_property  # read by every request that checks an acceptance
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.version}\n{self.text_zh}\n---\n{self.text_en}".encode()).hexdigest()


class TextShelf:
    """The versions of one text kept in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.get = lru_cache(maxsize=8)(self._load)
        self.current = lru_cache(maxsize=1)(self._current)  # read by every request that checks

    def _load(self, version: str) -> VersionedText:
        return VersionedText(
            version,
            (self.directory / f"{version}.zh.md").read_text(encoding="utf-8"),
            (self.directory / f"{version}.en.md").read_text(encoding="utf-8"),
        )

    def versions(self) -> list[str]:
        return sorted(p.name.split(".")[0] for p in self.directory.glob("*.zh.md"))

    def _current(self) -> VersionedText:
        """The newest version shipped with the code."""
        return self.get(self.versions()[-1])


class StaleConsent(Conflict):
    """The version a person accepted is not the current one: the text changed since they read it."""

    code = "stale_version"


Acceptance = TypeVar("Acceptance", bound=Base)


def record_acceptance(
    shelf: TextShelf,
    version: str,
    row: type[Acceptance],
    *,
    account_id: uuid.UUID,
    patient_id: uuid.UUID,
    action: str,
    stale_message: str,
) -> Acceptance:
    """A patient (or the account holding them, which the caller has checked) accepts the
    current version of the shelf's text: any other version is refused (`StaleConsent`, with
    `stale_message` naming the current version). Records one `row` (who, for whom, the
    version and its SHA-256, the client's address) and the audit entry `action`; flushes."""
    current = shelf.current()
    if version != current.version:
        raise StaleConsent(stale_message, params={"version": current.version})
    session = db.session()
    acceptance = row(
        account_id=account_id,
        patient_id=patient_id,
        version=current.version,
        version_hash=current.sha256,
        client_ip=audit.current_actor().client_ip,
    )
    session.add(acceptance)
    session.flush()
    audit.record(
        session,
        action,
        subject_type="patient",
        subject_id=patient_id,
        detail={"version": current.version, "sha256": current.sha256},
    )
    return acceptance
