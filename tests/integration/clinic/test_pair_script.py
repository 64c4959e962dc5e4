"""`make pair` (scripts/pair.py) without a browser: two clinics come up on two ports, each
with its own database and demo world (三级 and 基层), linked both ways so that a signed
message from one is accepted by the other; the logins of both sides are printed; each
side has its own session cookie (one browser, two tabs); run again, nothing is loaded
or registered twice; Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]
READY = "Both clinics are ready"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    """scripts/pair.py as `make pair` runs it, its output read line by line."""

    def __init__(self, root: Path, ports: tuple[int, int], sigint_ignored: bool = False) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
        self.proc = subprocess.Popen(
            [sys.executable, "scripts/pair.py", "--root", str(root), "--ports", str(ports[0]), str(ports[1])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # as a shell without job control starts a background job: Ctrl-C must still stop it
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, seconds: float = 600) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in the output:\n" + "\n".join(self.lines[-80:]))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the script alone (its children run in sessions of their own)."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def rows(instance: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(instance / "clinic.sqlite3") as conn:
        return list(conn.execute(sql))


def flask_at(instance: Path, url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    env.update(
        CLINIC_INSTANCE_PATH=str(instance),
        CLINIC_DATABASE_URL=f"sqlite:///{instance / 'clinic.sqlite3'}",
        CLINIC_PUBLIC_BASE_URL=url,
    )
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def admin_token(url: str, world: dict[str, Any]) -> dict[str, str]:
    admin = world["accounts"]["admin"]
    r = requests.post(
        url + "/api/v1/auth/token", json={"username": admin["username"], "password": admin["password"]}, timeout=10
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_make_pair_starts_two_linked_clinics_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    ports = (_free_port(), _free_port())
    a_url, b_url = (f"http://127.0.0.1:{p}" for p in ports)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    run = Run(tmp_path, ports)
    try:
        run.wait_for(READY)
        worlds = [json.loads((d / "demo.json").read_text()) for d in (a_dir, b_dir)]
        # two institutions: a tertiary hospital and a primary-care centre, each its own database
        assert [w["institution"]["level"] for w in worlds] == ["三级", "基层"]
        assert worlds[0]["institution"]["name"] != worlds[1]["institution"]["name"]
        assert worlds[0]["accounts"]["admin"]["password"] != worlds[1]["accounts"]["admin"]["password"]
        # the logins of both sides are printed, beside each side's address
        for url, world in zip((a_url, b_url), worlds, strict=True):
            assert f"at {url}/" in run.output
            for account in (world["accounts"]["admin"], *world["accounts"]["physicians"]):
                assert f"{account['username']:<16} {account['password']}" in run.output

        # each pinned the other's institution key, as a partner of the other's level
        a_kid, b_kid = (
            next(
                k["kid"]
                for k in requests.get(u + "/.well-known/jwks.json", timeout=5).json()["keys"]
                if k["kid"].startswith("inst-")
            )
            for u in (a_url, b_url)
        )
        assert rows(a_dir, "SELECT kid, level, base_url, fee_fen FROM tm_partners") == [(b_kid, "基层", b_url, 20000)]
        assert rows(b_dir, "SELECT kid, level, base_url, fee_fen FROM tm_partners") == [(a_kid, "三级", a_url, 20000)]
        listed = requests.get(
            a_url + "/api/v1/admin/partner-institutions", headers=admin_token(a_url, worlds[0]), timeout=10
        ).json()["items"]
        assert [(p["name"], p["in_force"]) for p in listed] == [(worlds[1]["institution"]["name"], True)]

        # the agreements carry messages both ways: a signed ping from each reaches the other once
        b_at_a = listed[0]["id"]
        flask_at(a_dir, a_url, "partners", "ping", b_at_a)
        a_at_b = requests.get(
            b_url + "/api/v1/admin/partner-institutions", headers=admin_token(b_url, worlds[1]), timeout=10
        ).json()["items"][0]["id"]
        flask_at(b_dir, b_url, "partners", "ping", a_at_b)
        assert rows(b_dir, "SELECT direction, event_code FROM tm_messages ORDER BY created_at") == [
            ("in", "ping"),
            ("out", "ping"),
        ]
        assert rows(a_dir, "SELECT direction, event_code FROM tm_messages ORDER BY created_at") == [
            ("out", "ping"),
            ("in", "ping"),
        ]
        assert len(rows(a_dir, "SELECT 1 FROM tm_messages WHERE delivered_at IS NOT NULL")) == 1

        # one browser, two clinics on one host: each its own session cookie
        names = {requests.get(u + "/login", timeout=10).cookies.keys()[0] for u in (a_url, b_url)}
        assert len(names) == 2

        assert run.interrupt() == 0
        assert port_closed(ports[0]) and port_closed(ports[1])
    finally:
        run.kill()

    # again (as `make pair` is run every morning, here started as a background job): the same
    # worlds, no second agreement
    again = Run(tmp_path, ports, sigint_ignored=True)
    try:
        again.wait_for(READY)
        assert "Loading the demo world" not in again.output
        assert again.output.count("was already registered") == 2
        assert json.loads((a_dir / "demo.json").read_text()) == worlds[0]
        assert len(rows(a_dir, "SELECT 1 FROM tm_partners")) == 1
        assert len(rows(b_dir, "SELECT 1 FROM tm_partners")) == 1
        assert again.interrupt() == 0
        assert port_closed(ports[0]) and port_closed(ports[1])
    finally:
        again.kill()


def test_make_pair_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "scripts/pair.py", "--root", str(tmp_path), "--ports", str(port), str(_free_port())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"Port {port}" in done.stderr and "in use" in done.stderr
    assert not (tmp_path / "a").exists()  # nothing was set up
