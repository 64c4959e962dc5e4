"""Texts a person accepts by version (the visit consent, the family-doctor agreement, the
remote-consultation consent): Markdown files shipped with the code, `<version>.zh.md` and
`<version>.en.md` in one directory. A new version is a new file and a deploy; what a person
accepted is recorded by the text's SHA-256, so a changed file is a new text."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path


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
