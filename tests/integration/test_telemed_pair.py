"""Two clinics side by side: two real app processes on two loopback ports, two databases,
linked both ways with `flask partners link` (each pins the other's institution key from
its published JWKS); a signed message from A is accepted by B once, even when delivered
twice, and arrives once after B was down for a while (the outbox tries again)."""

from __future__ import annotations

import os
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

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        engine = create_engine(f"sqlite:///{self.db_path}")
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql))]
        finally:
            engine.dispose()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Clinic, Clinic]]:
    a, b = Clinic("a", tmp_path), Clinic("b", tmp_path)
    try:
        for c in (a, b):
            c.flask("db", "upgrade")
            c.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_two_clinics_exchange_a_signed_message_once(pair: tuple[Clinic, Clinic]) -> None:
    a, b = pair
    # each publishes its institution key; each pins the other's
    a_key = [
        k
        for k in requests.get(a.url + "/.well-known/jwks.json", timeout=5).json()["keys"]
        if k["kid"].startswith("inst-")
    ]
    b_key = [
        k
        for k in requests.get(b.url + "/.well-known/jwks.json", timeout=5).json()["keys"]
        if k["kid"].startswith("inst-")
    ]
    assert len(a_key) == 1 and len(b_key) == 1 and a_key[0]["kid"] != b_key[0]["kid"]
    b_at_a = a.flask(
        "partners",
        "link",
        "--name",
        "乙医院",
        "--base-url",
        b.url,
        "--jwks-url",
        b.url + "/.well-known/jwks.json",
        "--level",
        "基层",
        "--fee-fen",
        "20000",
        "--split",
        "20:80",
    )
    a_at_b = b.flask(
        "partners", "link", "--name", "甲医院", "--base-url", a.url, "--jwks-url", a.url + "/.well-known/jwks.json"
    )
    assert a.rows("SELECT kid, level, fee_fen, split_inviting, split_invited FROM tm_partners") == [
        (b_key[0]["kid"], "基层", 20000, 20, 80)
    ]
    assert b.rows("SELECT kid FROM tm_partners") == [(a_key[0]["kid"],)]
    assert len(a_at_b) == 36 and len(b_at_a) == 36

    # B is down: A signs and records the message; the outbox cannot deliver it yet
    b.stop()
    sent = a.flask("partners", "ping", b_at_a)
    time.sleep(1.2)
    a.flask("jobs", "run-due")  # another try while B is still down
    ((delivered, attempts),) = a.rows(
        f"SELECT delivered_at, attempts FROM tm_messages WHERE id = '{sent.replace('-', '')}'"
    )
    assert delivered is None and int(str(attempts)) >= 2
    assert a.rows("SELECT status FROM outbox_jobs WHERE kind = 'federation.deliver'") == [("pending",)]

    # B is back: the next sweep delivers it, once
    b.start()
    time.sleep(1.2)
    assert "done=1" in a.flask("jobs", "run-due")
    received = b.rows("SELECT message_id, event_code, direction FROM tm_messages")
    assert len(received) == 1 and received[0][1:] == ("ping", "in")
    assert len(a.rows("SELECT 1 FROM tm_messages WHERE delivered_at IS NOT NULL")) == 1

    # delivered twice: B answers 202 again and changes nothing
    a.flask("partners", "resend", sent)
    assert b.rows("SELECT message_id, event_code, direction FROM tm_messages") == received
    assert a.rows("SELECT status FROM outbox_jobs WHERE kind = 'federation.deliver' ORDER BY created_at") == [
        ("done",),
        ("done",),
    ]
    assert len(b.rows("SELECT 1 FROM audit_entries WHERE action = 'federation.message_received'")) == 1
