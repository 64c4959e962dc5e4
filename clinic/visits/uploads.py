"""The upload quota every file a patient or physician sends is counted against."""

from __future__ import annotations

import uuid

from clinic.core import limits
from clinic.core.config import settings
from clinic.core.errors import RateLimited


def spend_upload_quota(account_id: uuid.UUID, size: int) -> None:
    """Uploads per account: at most UPLOAD_COUNT_LIMIT files and UPLOAD_BYTES_PER_DAY bytes
    (429 past either); refused uploads count too, since they were decoded all the same."""
    limits.check("UPLOAD_COUNT_LIMIT", "uploads", str(account_id))
    key = f"upload-bytes/{account_id}"
    budget = settings().UPLOAD_BYTES_PER_DAY
    spent = limits.guard().incr(key, 24 * 3600, amount=max(size, 1))
    if spent > budget:
        raise RateLimited("Uploads are limited to %(mb)s MB a day per account.", params={"mb": budget >> 20})
