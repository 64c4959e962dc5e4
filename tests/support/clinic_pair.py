"""Two clinics side by side for tests: two real app processes (the Flask server) on two
loopback ports, each with its own SQLite database and instance folder. `pair` starts both
migrated; `link(a, b)` makes each a partner of the other from its published JWKS with
`flask partners link`, as an administrator would (issue 19)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clinic:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = tmp / name / "clinic.sqlite3"
        self.env = {
            **os.environ,
            "CLINIC_INSTANCE_PATH": str(tmp / name),
            "CLINIC_DATABASE_URL": f"sqlite:///{self.db_path}",
            "CLINIC_PUBLIC_BASE_URL": self.url,
            "CLINIC_JOBS_BACKOFF_SECONDS": "1",
            "CLINIC_JOBS_BACKOFF_MAX_SECONDS": "1",
            "CLINIC_FEDERATION_HTTP_TIMEOUT": "3",
        }
        for var in ("TEST_DATABASE_URL", "CLINIC_REDIS_URL", "REDIS_URL", "DATABASE_URL"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen[bytes] | None = None

    def flask(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        return done.stdout.decode().strip()

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the server process without waiting for it (see `wait_ready`)."""
        with open(self.db_path.parent / "server.log", "ab") as log:  # the server's output, read on failure
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flask",
                    "--app",
                    "wsgi",
                    "run",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + 240  # a cold start imports face_recognition: slow on a busy machine
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(self.url + "/.well-known/jwks.json", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        output = (self.db_path.parent / "server.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"clinic {self.name} did not start:\n{output}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def logged(self, action: str, seconds: float = 30) -> int:
        """How many audit entries of `action` the log holds, waiting until there is one: an
        entry reaches audit_entries when the sequencer integrates it (within the merge delay),
        not when its request answers."""
        deadline = time.monotonic() + seconds
        while True:
            count = len(self.rows(f"SELECT 1 FROM audit_entries WHERE action = '{action}'"))
            if count or time.monotonic() > deadline:
                return count
            time.sleep(0.3)

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        engine = create_engine(f"sqlite:///{self.db_path}")
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql))]
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database made by `flask db upgrade` once per session. The migrations hold no
    instance's own data (keys live in the instance folder), so each clinic of a pair starts
    from a copy of it: the same schema and rows an upgrade of its own would make, without two
    cold app imports per test."""
    template = Clinic("migrated", tmp_path_factory.mktemp("pair-template"))
    template.db_path.parent.mkdir(parents=True, exist_ok=True)
    template.flask("db", "upgrade")
    return template.db_path


@pytest.fixture
def pair(tmp_path: Path, migrated_database: Path) -> Iterator[tuple[Clinic, Clinic]]:
    a, b = Clinic("a", tmp_path), Clinic("b", tmp_path)
    try:
        for c in (a, b):
            c.db_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(migrated_database, c.db_path)
            c.launch()  # both start at once: two processes, two cores
        for c in (a, b):
            c.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def link(a: Clinic, b: Clinic, *a_terms: str) -> tuple[str, str]:
    """Each pins the other's institution key; `a_terms` are extra `partners link` options for
    B as A's partner (e.g. --level 基层 --fee-fen 20000 --split 20:80). Returns (B's id at A,
    A's id at B)."""
    b_at_a = a.flask(
        "partners",
        "link",
        "--name",
        "乙医院",
        "--base-url",
        b.url,
        "--jwks-url",
        b.url + "/.well-known/jwks.json",
        *a_terms,
    )
    a_at_b = b.flask(
        "partners", "link", "--name", "甲医院", "--base-url", a.url, "--jwks-url", a.url + "/.well-known/jwks.json"
    )
    return b_at_a, a_at_b
