"""Print the OpenAPI document the app serves at /api/v1/openapi.json, byte for byte.

Used to check that a refactor leaves the public contract alone:
    python scripts/openapi_dump.py > before.json   # on main
    python scripts/openapi_dump.py > after.json    # on the branch
    cmp before.json after.json
"""

from __future__ import annotations

import sys
import tempfile

from clinic.app import create_app
from clinic.core.config import Config


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(
            ENV="testing",
            TESTING=True,
            INSTANCE_PATH=tmp,
            DATABASE_URL=f"sqlite:///{tmp}/openapi.sqlite3",
            JWT_SECRET="openapi-dump-secret-that-is-long-enough",
            SECRET_KEY="openapi-dump",
            LOOKUP_KEY="openapi-dump",
        )
        cfg.finalize()
        answer = create_app(cfg).test_client().get("/api/v1/openapi.json")
        if answer.status_code != 200:
            print(f"/api/v1/openapi.json answered {answer.status_code}", file=sys.stderr)
            return 1
        sys.stdout.buffer.write(answer.get_data())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
