"""Throughput and latency of POST /api/v1/visits against a bare endpoint of the same app.

    .venv/bin/python bench/visits_bench.py [--db sqlite|postgresql] [--requests N] [--clients C]

What it does, in one run:
1. makes a scratch database (a SQLite file in a temporary folder, or a fresh PostgreSQL
   database on 127.0.0.1:5432 that is dropped at the end) and migrates it with
   `flask db upgrade`;
2. seeds it through the services: the institution, the condition catalog, a physician and
   enough patients that every request of the run (warm-up included) is a new visit: a
   patient may have one open visit per diagnosis (409 visit_already_open), so each patient
   gets DIAGNOSES confirmed cardiology diagnoses (I10, I25, I48), the current consent and a
   confirmed phone, and each (patient, diagnosis) pair is requested exactly once; access
   tokens are issued directly (no login, so the login rate limit plays no part);
3. starts gunicorn (wsgi:app, configured from the environment; PAYMENTS off, the dev default)
   on a free 127.0.0.1 port;
4. drives both endpoints with C concurrent clients (threads + http.client), in alternating
   rounds so that both see the same machine load:
   (a) POST /api/v1/visits with every gate (token, patient ownership, suspension switch,
       phone confirmed, no visit already open for the diagnosis, diagnosis, consent,
       department approval; the visit row and its audit entry written),
   (b) GET /api/v1/health/db: one read of the institution by primary key;
5. prints requests/s, p50, p90, p99 and the server's CPU per request (gunicorn master and
   workers, from /proc, divided by every request answered in the rounds, refused ones too;
   the database server's is not included) of each, with the part of it spent outside the
   workers' main threads ("threads": the audit sequencer's thread, which integrates and signs
   the entries the requests appended), and the ratios the project targets:
   visits throughput >= 50 % of the bare endpoint's, and visits p99 <= 5 x its p50.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = Path(sys.executable)
BIN = PY.parent
PG_BASE = "postgresql://postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- scratch database ------------------------------------------------------------------


class Scratch:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix="clinic-bench-"))
        self.pg_name = ""
        if kind == "sqlite":
            self.url = f"sqlite:///{self.dir / 'bench.sqlite3'}"
        else:
            import psycopg

            self.pg_name = f"clinic_bench_{secrets.token_hex(5)}"
            with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')
            self.url = f"{PG_BASE}/{self.pg_name}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CLINIC_DATABASE_URL": self.url,
                "CLINIC_INSTANCE_PATH": str(self.dir / "instance"),
                "CLINIC_ENV": "development",
                "CLINIC_PAYMENTS": "off",
                "CLINIC_REDIS_URL": "",
                "CLINIC_JWT_EXPIRES_SECONDS": "3600",
                "PYTHONPATH": str(ROOT),
            }
        )
        return env

    def drop(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.pg_name:
            import psycopg

            with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


def migrate(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"migration failed:\n{proc.stderr[-3000:]}")


SEED = r"""
import json, sys
from datetime import date, timedelta
from clinic.app import create_app
from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.core.principal import Principal
from clinic.demo import make_id_number
from clinic.visits import condition_catalog, informed_consent, proofs
from identity import login, services as identity, tokens
from identity.models import Account, Department, Institution, Role

n = int(sys.argv[1])
codes = sys.argv[2].split(",")  # each patient's diagnoses, all of the physician's department
app = create_app()
out = {"visits": []}
with app.app_context(), acting_as(Actor(None, "bench")):
    today = date.today()
    with unit_of_work() as s:
        for code in sorted({c[2] for c in condition_catalog.DEFAULT_CONDITIONS}):
            s.add(Department(code=code, name_zh=code, name_en=code, approved=True))
        s.add(Institution(id=1, name="基准测试互联网医院", practice_license_no="PDY-BENCH",
                          internet_approval_no="BENCH", approval_valid_until=today + timedelta(days=365)))
    with unit_of_work():
        condition_catalog.seed_conditions()
        doc = identity.create_staff(identity.StaffSpec(
            username="bench_physician", password="Bench-passw0rd", role=Role.PHYSICIAN, name="基准 医生",
            department="cardiology", license_no="LICBENCH", practice_registration_no="REGBENCH",
            independent_practice_since=date(2010, 1, 1), license_valid_until=today + timedelta(days=365)))
        doc_id = doc.id
    version = informed_consent.current_consent().version
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    # The seeded passwords are never used (tokens are issued below): hash them cheaply so that
    # seeding takes seconds, not minutes. The server itself keeps the real argon2 parameters.
    from argon2 import PasswordHasher
    login._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    for start in range(0, n, 50):
      with unit_of_work():
        for i in range(start, min(n, start + 50)):
            reg = identity.register_patient(
                "患者" + str(i), make_id_number("110105", date(1940, 1, 1) + timedelta(days=23 * i), 10 + i % 890),
                "139" + format(i, "08d"), "Bench-passw0rd")
            reg.account.phone_verified_at = reg.account.created_at
            informed_consent.accept_consent(Principal(reg.account.id, "patient"), reg.patient.id, version)
            tok, _ = tokens.issue(reg.account)
            for k, code in enumerate(codes):
                diag = proofs.submit_diagnosis(Principal(reg.account.id, "patient"), reg.patient.id, code, "北京协和医院",
                                               date(2024, 3, 1), pdf)
                proofs.record_confirmation(diag, doc_id, condition_catalog.catalog_condition(code))
                out["visits"].append({"round": k, "token": tok, "body": {"patient_id": str(reg.patient.id),
                                      "diagnosis_id": str(diag.id), "department": "cardiology"}})
# Diagnosis-major order: every patient's first diagnosis, then every patient's second …, so
# that concurrent requests are of different patients, as in a clinic.
out["visits"].sort(key=lambda v: v.pop("round"))
print(json.dumps(out))
"""


# A patient's diagnoses in the bench: all confirmed, all of cardiology (the physician's).
DIAGNOSES = ("I10", "I25", "I48")


def seed(env: dict[str, str], patients: int, codes: tuple[str, ...] = DIAGNOSES) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(PY), "-c", SEED, str(patients), ",".join(codes)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"seeding failed:\n{proc.stderr[-3000:]}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1])["visits"])


# --- the server ------------------------------------------------------------------------


class Gunicorn:
    def __init__(self, env: dict[str, str], workers: int) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--backlog",
                "256",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                status, _ = request(self.port, "GET", "/api/v1/health/db")
                if status == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not come up")
            time.sleep(0.3)
        # One worker answering is not all of them: each imports the app on its own (seconds of
        # CPU), and one still importing during the first rounds would have its start-up
        # counted as the requests' CPU and served no requests meanwhile. Wait until the
        # server's processes are idle.
        while time.monotonic() < deadline:
            before = group_cpu(self.proc.pid)
            time.sleep(1.0)
            if group_cpu(self.proc.pid) - before < 0.05:
                break

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --- the load ----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu: float = 0.0  # CPU seconds of the gunicorn processes (master and workers) while it ran
    # ... of which in the workers' other threads (the audit sequencer's, clinic.core.audit_sequencer)
    cpu_threads: float = 0.0

    def threads_ms_per_request(self) -> float:
        answered = self.count + sum(self.errors.values())
        return self.cpu_threads / answered * 1000 if answered else float("nan")

    def cpu_ms_per_request(self) -> float:
        # Over every request answered while the CPU was counted, refused ones too: dividing
        # by the successes alone charged the refusals' CPU to them (12 x too high once the
        # bench ran out of new visits).
        answered = self.count + sum(self.errors.values())
        return self.cpu / answered * 1000 if answered else float("nan")

    @property
    def count(self) -> int:
        return len(self.latencies)

    def rps(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        data = sorted(self.latencies)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(round(p / 100 * (len(data) - 1))))] * 1000


def _ticks(stat_path: str) -> tuple[int, int] | None:
    """(pgrp, utime + stime) of a process or thread, from its /proc stat file."""
    try:
        with open(stat_path) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[2]), int(fields[11]) + int(fields[12])  # pgrp; utime, stime


def group_cpu_split(pgid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of every live process in a process group, and the part of
    it spent in threads other than each process's main thread (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = others = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        found = _ticks(f"/proc/{entry}/stat")
        if found is None or found[0] != pgid:
            continue
        total += found[1]
        try:
            tids = [t for t in os.listdir(f"/proc/{entry}/task") if t != entry]
        except OSError:
            continue
        for tid in tids:
            thread = _ticks(f"/proc/{entry}/task/{tid}/stat")
            if thread is not None:
                others += thread[1]
    return total / tick, others / tick


def group_cpu(pgid: int) -> float:
    return group_cpu_split(pgid)[0]


def drive(
    port: int,
    result: Result,
    make_request: Any,
    total: int,
    clients: int,
    max_seconds: float,
    expect: int,
    pgid: int | None = None,
) -> None:
    """`total` requests from `clients` threads (one keep-alive connection each), bounded by time."""
    cpu0, threads0 = group_cpu_split(pgid) if pgid else (0.0, 0.0)
    lock = threading.Lock()
    issued = {"n": 0}
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local: list[float] = []
        errs: dict[int, int] = {}
        while time.monotonic() < deadline:
            with lock:
                if issued["n"] >= total:
                    break
                i = issued["n"]
                issued["n"] += 1
            method, path, body, headers = make_request(i)
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = -1
            elapsed = time.perf_counter() - t0
            if status == expect:
                local.append(elapsed)
            else:
                errs[status] = errs.get(status, 0) + 1
        conn.close()
        with lock:
            result.latencies.extend(local)
            for k, v in errs.items():
                result.errors[k] = result.errors.get(k, 0) + v

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds += time.perf_counter() - t0
    if pgid:
        cpu1, threads1 = group_cpu_split(pgid)
        result.cpu += cpu1 - cpu0
        result.cpu_threads += threads1 - threads0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    WARM_UP = 100
    ap.add_argument("--requests", type=int, default=1200, help="per endpoint, over all rounds")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per endpoint")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="per round and endpoint")
    args = ap.parse_args()

    scratch = Scratch(args.db)
    server: Gunicorn | None = None
    try:
        env = scratch.env()
        t0 = time.monotonic()
        migrate(env)
        per_round = max(1, args.requests // args.rounds)
        needed = WARM_UP + per_round * args.rounds  # each a new visit: one (patient, diagnosis) each
        visits = seed(env, -(-needed // len(DIAGNOSES)))
        print(
            f"[{args.db}] migrated and seeded {len(visits) // len(DIAGNOSES)} patients x {len(DIAGNOSES)} "
            f"diagnoses in {time.monotonic() - t0:.1f}s",
            flush=True,
        )
        server = Gunicorn(env, args.workers)
        prepared = [
            (
                "POST",
                "/api/v1/visits",
                json.dumps(v["body"]).encode(),
                {"Authorization": f"Bearer {v['token']}", "Content-Type": "application/json"},
            )
            for v in visits
        ]

        # One counter for the whole run (warm-up and every round): each prepared request, a
        # (patient, diagnosis) with no open visit, is sent once. `drive` numbers its requests
        # from 0 in each call, so the offset of the call is added.
        sent = {"visits": 0}

        def visit_req(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
            return prepared[sent["visits"] + i]

        def bare_req(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
            return "GET", "/api/v1/health/db", None, {}

        bare, visit = Result("GET /api/v1/health/db (bare)"), Result("POST /api/v1/visits")
        warm = Result("warm-up")
        drive(server.port, warm, bare_req, 100, args.clients, 30, 200)
        drive(server.port, warm, visit_req, WARM_UP, args.clients, 30, 201)
        sent["visits"] += WARM_UP
        for _ in range(args.rounds):
            drive(server.port, bare, bare_req, per_round, args.clients, args.max_seconds, 200, server.proc.pid)
            drive(server.port, visit, visit_req, per_round, args.clients, args.max_seconds, 201, server.proc.pid)
            sent["visits"] += per_round

        print(
            f"[{args.db}] gunicorn {args.workers} sync workers, {args.clients} clients, "
            f"{args.rounds} alternating rounds"
        )
        print(
            f"{'endpoint':34} {'ok':>6} {'errors':>8} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
            f" {'CPU ms/req':>10} {'(threads)':>9}"
        )
        for r in (bare, visit):
            print(
                f"{r.name:34} {r.count:6d} {sum(r.errors.values()):8d} {r.rps():8.1f} "
                f"{r.pct(50):8.2f} {r.pct(90):8.2f} {r.pct(99):8.2f} {r.cpu_ms_per_request():10.2f}"
                f" {r.threads_ms_per_request():9.2f}" + (f"  errors by status: {r.errors}" if r.errors else "")
            )
        throughput_ratio = visit.rps() / bare.rps() if bare.rps() else 0.0
        tail_ratio = visit.pct(99) / visit.pct(50) if visit.count else float("inf")
        ok = throughput_ratio >= 0.5 and tail_ratio <= 5.0 and not visit.errors and not bare.errors
        print(
            f"[{args.db}] visits/bare throughput = {throughput_ratio:.2f} (target >= 0.50); "
            f"visits p99/p50 = {tail_ratio:.2f} (target <= 5.0); bare p99/p50 = "
            f"{bare.pct(99) / bare.pct(50):.2f} -> {'PASS' if ok else 'FAIL'}"
        )
        print(
            json.dumps(
                {
                    "db": args.db,
                    "bare_rps": round(bare.rps(), 1),
                    "visits_rps": round(visit.rps(), 1),
                    "throughput_ratio": round(throughput_ratio, 3),
                    "visits_p50_ms": round(visit.pct(50), 2),
                    "visits_p99_ms": round(visit.pct(99), 2),
                    "visits_p99_over_p50": round(tail_ratio, 2),
                    "bare_p50_ms": round(bare.pct(50), 2),
                    "bare_p99_ms": round(bare.pct(99), 2),
                    "bare_cpu_ms_per_request": round(bare.cpu_ms_per_request(), 2),
                    "visits_cpu_ms_per_request": round(visit.cpu_ms_per_request(), 2),
                    "visits_sequencer_thread_cpu_ms_per_request": round(visit.threads_ms_per_request(), 2),
                    "errors": {"bare": bare.errors, "visits": visit.errors},
                    "pass": ok,
                }
            )
        )
        return 0 if ok else 1
    finally:
        if server is not None:
            server.stop()
        scratch.drop()


if __name__ == "__main__":
    sys.exit(main())
