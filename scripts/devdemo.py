"""Helpers for `make run` and `make test` (run with the project's .venv Python).

devdemo.py is-empty            exit 0 when the database has no accounts (the demo may be loaded)
devdemo.py summary --url URL   print where to open the app and the demo logins (instance/demo.json,
                               or --demo PATH)
devdemo.py pg-ready URL        exit 0 when PostgreSQL accepts a connection at URL
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def is_empty() -> int:
    from sqlalchemy import func, select

    from clinic.app import create_app
    from clinic.core.db import db
    from identity.models import Account

    app = create_app()
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(Account)) or 0
    return 0 if count == 0 else 1


def _line(role: str, account: dict[str, Any], extra: str = "") -> str:
    name = account.get("name", "")
    return f"  {role:<11} {account['username']:<16} {account['password']:<16} {name} {extra}".rstrip()


def summary(url: str, path: Path | None = None) -> int:
    path = path or ROOT / "instance" / "demo.json"
    print()
    print(f"The clinic is starting at {url}  (language: 中文 by default; 'English' at the top right)")
    if not path.exists():
        print("No instance/demo.json: this database was not filled by `flask --app wsgi demo`.")
        return 0
    world = json.loads(path.read_text())
    acc = world["accounts"]
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"Demo world of {world['institution']['name']} (saved in {shown}):")
    print(f"  {'role':<11} {'username':<16} {'password':<16} name")
    print(_line("admin", acc["admin"]))
    for p in acc.get("physicians", []):
        print(_line("physician", p, f"({p.get('department', '')})"))
    for p in acc.get("pharmacists", []):
        print(_line("pharmacist", p))
    for p in acc.get("patients", []):
        people = ", ".join(
            f"{x.get('name', '')} {x.get('relation', '')} {x['birth_date']}" for x in p.get("patients", [])
        )
        print(_line("patient", p, f"[{people}]"))
    print(_line("regulator", acc["regulator"]))
    print("Patients log in on the web pages; staff and regulators also get API tokens at POST /api/v1/auth/token.")
    print("SMS codes (registration) are written to this log: look for 'verification code'.")
    probes = [(d["username"], d.get("face_probe_image")) for d in acc["physicians"] if d.get("face_probe_image")]
    if probes:
        print("Physicians log in with the password, then by face: on the face page upload (or show the camera)")
        for username, path in probes:
            print(f"  {username}: {path}")
        print("  (the enrolled reference photo itself is refused as a replay, by design)")
    print()
    return 0


def pg_ready(url: str) -> int:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception:
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("is-empty")
    s = sub.add_parser("summary")
    s.add_argument("--url", default="http://127.0.0.1:8000/")
    s.add_argument("--demo", type=Path, default=None, help="the demo world's JSON (default: instance/demo.json)")
    p = sub.add_parser("pg-ready")
    p.add_argument("url")
    args = parser.parse_args(argv)
    if args.cmd == "is-empty":
        return is_empty()
    if args.cmd == "summary":
        return summary(args.url, args.demo)
    return pg_ready(args.url)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
