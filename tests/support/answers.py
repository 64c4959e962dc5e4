"""What a refused request tells its caller, read the same way for the API and for pages.

`assert refusal(resp) == (403, "forbidden")` says more than `resp.status_code == 403`: the
status AND the rule that refused (a 403 for "face_required" is not a 403 for "forbidden").
"""

from __future__ import annotations

import re

from werkzeug.test import TestResponse

_PAGE_CODE = re.compile(r'data-code="([^"]+)"')


def refusal(resp: TestResponse) -> tuple[int, str | None]:
    """(HTTP status, error code) of an answer: the API's envelope `{"error": {"code": ...}}`,
    or the error page's `data-code` (clinic/templates/error.html); None when it carries no code."""
    if resp.is_json:
        body = resp.get_json()
        error = body.get("error") if isinstance(body, dict) else None
        return resp.status_code, error.get("code") if isinstance(error, dict) else None
    found = _PAGE_CODE.search(resp.get_data(as_text=True))
    return resp.status_code, found.group(1) if found else None
