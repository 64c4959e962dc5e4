"""Who is acting: one typed value for an API token's bearer and a page session's user.

Services that act on someone's behalf take a `Principal`, never a raw JWT claims dict or a
`str` id: `principal.account_id` is a `uuid.UUID`, `principal.face_at` the Unix time of the
last successful face check (or None), `principal.scope` a regulator's granted scopes.
The API builds it from a verified Bearer token (identity/tokens.py), a page from its login
session (clinic/core/pages.py: `page_principal()`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    account_id: uuid.UUID
    role: str
    face_at: float | None = None
    scope: str | None = None  # a regulator's scoped token: its granted scopes, space-separated

    @property
    def is_scoped(self) -> bool:
        return bool(self.scope)
