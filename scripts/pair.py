"""`make pair`: two clinics side by side, linked by cooperation agreements (issue 19 item 8).

Two institutions, each a complete copy of this clinic with its own instance folder (keys,
secrets) and SQLite database, on two ports of one host:

  A  a tertiary hospital (三级), demo world `flask demo --level 三级`, port 8000
  B  a primary-care centre (基层), demo world `flask demo --level 基层`, port 8001

For each, in order: `flask db upgrade`; the demo world when the database is empty (saved
to <instance>/demo.json); gunicorn; the outbox sweeper (`flask jobs run-due --loop 5`: a
message to a partner that was down is sent again). Once both publish their JWKS, each
registers the other with `flask partners link ... --jwks-url` (pinning its institution
key), unless it already has; then the logins of both sides are printed. Ctrl-C stops both.

Each side has its own session cookie name: a browser shares cookies between the ports of
one host, so without it logging in on one clinic would log out of the other.

    scripts/pair.py [--host 127.0.0.1] [--ports 8000 8001] [--root instance/pair]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import devdemo  # beside this script (sys.path[0]): the same summary as `make run`
import requests

ROOT = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent
START_SECONDS = 240  # a cold start imports face_recognition: slow on a busy machine
FEE_FEN = 20000  # per consultation, owed by the inviting institution to the invited one
SPLIT = "20:80"  # inviting:invited (Jilin measures Art. 44)
# Environment that would point both clinics at one database or queue: each gets its own.
SHARED_ENV = ("DATABASE_URL", "REDIS_URL", "TEST_DATABASE_URL", "INSTANCE_PATH", "PUBLIC_BASE_URL")


@dataclass
class Side:
    key: str  # a | b
    level: str  # 三级 … 基层
    host: str
    port: int
    instance: Path
    workers: int = 1
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def demo_path(self) -> Path:
        return self.instance / "demo.json"

    @property
    def label(self) -> str:
        return f"{self.key.upper()} {self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.removeprefix("CLINIC_") not in SHARED_ENV}
        env.update(
            CLINIC_INSTANCE_PATH=str(self.instance),
            CLINIC_DATABASE_URL=f"sqlite:///{self.instance / 'clinic.sqlite3'}",
            CLINIC_PUBLIC_BASE_URL=self.url,
            CLINIC_SESSION_COOKIE_NAME=f"clinic_{self.key}_{self.port}",
            # a partner down for a while: the sweeper tries again within seconds, not half a minute
            CLINIC_JOBS_BACKOFF_SECONDS="5",
            CLINIC_JOBS_BACKOFF_MAX_SECONDS="60",
            PYTHONUNBUFFERED="1",
        )
        return env

    def flask(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "flask"), "--app", "wsgi", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and done.returncode != 0:
            raise SystemExit(f"[{self.label}] flask {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done

    def world(self) -> dict[str, Any]:
        return dict(json.loads(self.demo_path.read_text()))


def say(text: str) -> None:
    print(text, flush=True)


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def prepare(side: Side) -> None:
    """Migrate; load the demo world once (an empty database only)."""
    side.instance.mkdir(parents=True, exist_ok=True)
    say(f"== [{side.label}] Migrating {side.instance / 'clinic.sqlite3'}")
    side.flask("db", "upgrade")
    empty = subprocess.run([sys.executable, str(ROOT / "scripts" / "devdemo.py"), "is-empty"], env=side.env(), cwd=ROOT)
    if empty.returncode == 0:
        say(f"== [{side.label}] Loading the demo world ({side.level}) into the empty database")
        out = side.flask("demo", "--level", side.level).stdout
        tmp = side.demo_path.with_suffix(".json.tmp")
        tmp.write_text(out)
        tmp.replace(side.demo_path)
    elif not side.demo_path.exists():
        raise SystemExit(f"[{side.label}] {side.instance} has a database but no demo.json: delete the folder")


def _relay(side: Side, stream: IO[bytes], quiet: tuple[str, ...] = ()) -> None:
    """Each line of a child's output, prefixed with its side (both share one terminal)."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if line and not any(q in line for q in quiet):
            print(f"[{side.label}] {line}", flush=True)


def _spawn(side: Side, argv: list[str], quiet: tuple[str, ...] = ()) -> None:
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=side.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches this script only; it stops the children in order
    )
    side.procs.append(proc)
    assert proc.stdout is not None
    threading.Thread(target=_relay, args=(side, proc.stdout, quiet), daemon=True).start()


def start(side: Side) -> None:
    say(f"== [{side.label}] Serving on {side.url}/")
    _spawn(
        side,
        [
            str(BIN / "gunicorn"),
            "--bind",
            f"{side.host}:{side.port}",
            "--workers",
            str(side.workers),
            # threads: a message to the partner is sent in line while the partner may be
            # calling back; one blocked worker must not stall the clinic
            "--threads",
            "8",
            "--no-control-socket",  # two masters would share its one default path
            "--access-logfile",
            "-",
            "wsgi:app",
        ],
    )
    _spawn(side, [str(BIN / "flask"), "--app", "wsgi", "jobs", "run-due", "--loop", "5"], quiet=("nothing due",))


def wait_ready(side: Side) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in side.procs):
            raise SystemExit(f"[{side.label}] stopped while starting (its output is above)")
        try:
            if requests.get(side.url + "/.well-known/jwks.json", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"[{side.label}] did not answer on {side.url} within {START_SECONDS} s")


def link(at: Side, partner: Side) -> str:
    """Register `partner` at `at` from its JWKS; a partner already registered stays as it is."""
    name = partner.world()["institution"]["name"]
    done = at.flask(
        "partners",
        "link",
        "--name",
        name,
        "--base-url",
        partner.url,
        "--jwks-url",
        partner.url + "/.well-known/jwks.json",
        "--level",
        partner.level,
        "--fee-fen",
        str(FEE_FEN),
        "--split",
        SPLIT,
        check=False,
    )
    if done.returncode == 0:
        return f"registered {name} (partner id {done.stdout.strip()})"
    if "partner_exists" in done.stderr:
        return f"{name} was already registered (its pinned key is unchanged)"
    raise SystemExit(f"[{at.label}] flask partners link failed:\n{done.stderr[-3000:]}")


def stop(sides: list[Side]) -> None:
    procs = [p for s in sides for p in s.procs if p.poll() is None]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def summary(sides: list[Side]) -> None:
    for side in sides:
        inst = side.world()["institution"]
        say(f"==== {side.key.upper()}: {inst['name']} ({inst['level']}) at {side.url}/ ====")
        devdemo.summary(side.url + "/", side.demo_path)
    a, b = sides
    names = {s.key: s.world()["institution"]["name"] for s in sides}
    say("Between them: a cooperation agreement each way (consultation, remote diagnosis and referral, every")
    say(f"department, {FEE_FEN} fen a consultation split {SPLIT} inviting:invited, valid a year), each side")
    say("pinning the other's institution key from its /.well-known/jwks.json.")
    say(f"Try it in one browser: a physician of {names['b']} ({b.url}/) asks {names['a']} for a remote")
    say(f"consultation or refers a patient up; a physician of {names['a']} ({a.url}/) takes it, or refers down.")
    say("  - a consultation is asked for a patient the physician has seen: first a visit on that side (the")
    say("    patient asks for one, the physician takes it), then the consultation from it;")
    say("  - the receiving side needs a physician of the department asked for: both demo worlds have")
    say("    心血管内科 (dr_wang, 主任医师) and 内分泌科 (dr_li, 副主任医师).")
    say("Each tab keeps its own login (separate session cookies). Ctrl-C stops both clinics.")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", nargs=2, type=int, default=[8000, 8001], metavar=("A", "B"))
    parser.add_argument("--root", type=Path, default=ROOT / "instance" / "pair", help="instance folders a/ and b/")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per clinic (8 threads each)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    sides = [
        Side("a", "三级", args.host, args.ports[0], root / "a", args.workers),
        Side("b", "基层", args.host, args.ports[1], root / "b", args.workers),
    ]
    if args.ports[0] == args.ports[1]:
        parser.error("the two clinics need two different ports")
    for side in sides:
        if not port_free(side.host, side.port):
            raise SystemExit(f"Port {side.port} on {side.host} is in use (is `make run` running?): choose others")

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    # Ctrl-C, even when started from a shell that ignores SIGINT for background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for side in sides:
            prepare(side)
        for side in sides:
            start(side)
        for side in sides:
            wait_ready(side)
        a, b = sides
        say(f"== [{a.label}] {link(a, b)}")
        say(f"== [{b.label}] {link(b, a)}")
        summary(sides)
        say(f"Both clinics are ready: {a.url}/ and {b.url}/")
        while all(p.poll() is None for s in sides for p in s.procs):
            time.sleep(0.5)
        say("A clinic stopped (its output is above): stopping the other")
        return 1
    except KeyboardInterrupt:
        say("\nStopping both clinics")
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping the children is not to be interrupted
        stop(sides)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
