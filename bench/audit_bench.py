"""The audit trail's cost under concurrency, on PostgreSQL, in one run:

    .venv/bin/python bench/audit_bench.py [--writers 8] [--seconds 15] [--rounds 2] [--old-ref REF]

W writer processes do the clinic's smallest audited write — a physician's visit message
(`clinic.visits.visit_room.post_message`: one message row and its audit entry, one commit) —
in a loop for S seconds, in three ways, alternating round by round so that all see the same
machine load:

- `log`: this code (the entry is one INSERT into audit_pending; the `flask audit sequencer`
  loop, started beside the writers as production runs it, integrates and signs);
- `skip`: this code with the audit append skipped (`audit.bench_skip_append`, benchmarks only);
- `chain`: the old hash chain, from a git worktree of REF (default: the commit before the
  transparency log), on a database migrated by that tree.

It also measures the time from an entry's record to its inclusion in a signed checkpoint
(p50/p99, against AUDIT_MERGE_DELAY_SECONDS + AUDIT_CHECKPOINT_SECONDS), and checks that the
log verifies and that every checkpoint is consistent with the last.
Targets: log ≥ 0.8 × skip; checkpoint p99 ≤ merge delay + checkpoint period.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_BASE = "postgresql://postgres@127.0.0.1:5432"
MERGE_DELAY, CHECKPOINT_SECONDS = 2.0, 5.0


def _env(tree: Path, url: str, instance: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(tree),
            "CLINIC_DATABASE_URL": url,
            "CLINIC_INSTANCE_PATH": instance,
            "CLINIC_ENV": "development",
            "CLINIC_REDIS_URL": "",
            "CLINIC_AUDIT_MERGE_DELAY_SECONDS": str(MERGE_DELAY),
            "CLINIC_AUDIT_CHECKPOINT_SECONDS": str(CHECKPOINT_SECONDS),
        }
    )
    return env


def _self(tree: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "audit_bench.py"), *args],
        cwd=tree,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


# --- inside a tree (this one or the old one) ----------------------------------------------


def setup() -> None:
    """Migrate the database and make one visit in progress; print its ids."""
    import logging

    from flask_migrate import upgrade

    from clinic.app import create_app

    logging.disable(logging.WARNING)
    app = create_app()
    app.config["TESTING"] = True
    app.config["WTF_CSRF_ENABLED"] = False
    with app.app_context():
        upgrade()
    from tests.support.rx_factories import visit_in_progress

    with app.test_request_context():
        v = visit_in_progress(app.test_client())
        print(json.dumps({"visit_id": str(v["visit_id"]), "physician_id": str(v["doc"].id)}))


def _poster(physician_id: str, visit_id: str) -> Callable[[], object]:
    """One message into the visit, as the tree at hand spells it: this tree's use case takes the
    typed Principal and a UUID; the old tree's (`--old-ref`, before the visit use cases were
    split and typed) took the Account and a str id, in clinic.visits.services."""
    try:
        from clinic.core.principal import Principal
        from clinic.visits import visit_room
    except ImportError:
        from clinic.core.db import db
        from identity.models import Account

        old_services = importlib.import_module("clinic.visits.services")
        account = db.session.get(Account, uuid.UUID(physician_id))
        assert account is not None
        return lambda: old_services.post_message(account, visit_id, "bench", None)
    who = Principal(uuid.UUID(physician_id), "physician")
    return lambda: visit_room.post_message(who, uuid.UUID(visit_id), "bench", None)


def worker(visit_id: str, physician_id: str, seconds: float, mode: str) -> None:
    import logging

    logging.disable(logging.WARNING)
    from clinic.app import create_app
    from clinic.core import audit
    from clinic.core.audit import Actor, acting_as
    from clinic.core.db import unit_of_work

    if mode == "skip":
        audit.bench_skip_append = True
    app = create_app()
    done = 0
    with app.app_context(), acting_as(Actor(physician_id, "physician")):
        post = _poster(physician_id, visit_id)
        print("ready", flush=True)  # then wait for the common start time on stdin
        start_at = float(sys.stdin.readline())
        late = time.time() > start_at
        while time.time() < start_at:
            time.sleep(0.005)
        stop = start_at + seconds
        while time.time() < stop:
            with unit_of_work():
                post()
            done += 1
    print(json.dumps({"writes": done, "late": late}), flush=True)


def sequencer_loop(seconds: float) -> None:
    """The production sequencer loop (`flask audit sequencer`) for a while."""
    import logging

    logging.disable(logging.WARNING)
    from clinic.app import create_app
    from clinic.core import audit_sequencer, auditlog

    app = create_app()
    print("ready", flush=True)
    stop = time.time() + seconds
    with app.app_context():
        cfg = auditlog.config()
        while time.time() < stop:
            audit_sequencer.run_pass(cfg)
            time.sleep(cfg.merge_delay / 2)
    print("{}")


# --- the run ------------------------------------------------------------------------------


def _database() -> tuple[str, Any]:
    from sqlalchemy import create_engine, text

    name = f"clinic_auditbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        PG_BASE.replace("postgresql://", "postgresql+psycopg://") + "/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return f"{PG_BASE}/{name}", drop


def _old_ref() -> str:
    out = subprocess.run(
        [
            "git",
            "log",
            "--format=%H",
            "--diff-filter=A",
            "-1",
            "--",
            "migrations/versions/audit_0004_transparency_log.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{out}^"


def _wait_ready(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None
    for line in p.stdout:
        if line.strip() == "ready":
            return
    raise RuntimeError(f"a bench process ended before it was ready (exit {p.wait()})")


def _round(tree: Path, env: dict[str, str], ids: dict[str, str], writers: int, seconds: float, mode: str) -> int:
    seq = None
    if mode == "log":  # the sequencer loop beside the writers, as in production; writers only append
        env = {**env, "CLINIC_AUDIT_SEQUENCER": "external"}
        seq = _self(tree, env, "sequencer", str(seconds + 30 + CHECKPOINT_SECONDS))
        _wait_ready(seq)
    procs = [
        _self(tree, env, "worker", ids["visit_id"], ids["physician_id"], str(seconds), mode) for _ in range(writers)
    ]
    for p in procs:  # every writer has imported the app and loaded its rows
        _wait_ready(p)
    start_at = time.time() + 0.5
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start_at}\n")
        p.stdin.flush()
    total, late = 0, 0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        line = json.loads(out.strip().splitlines()[-1])
        total += int(line["writes"])
        late += bool(line["late"])
    if seq is not None:
        seq.communicate(timeout=seconds + 600)
    if late:
        print(f"  ({late} {mode} writers started late: their count is short)")
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--old-ref", default="")
    args = ap.parse_args()

    old_ref = args.old_ref or _old_ref()
    old_tree = Path(tempfile.mkdtemp(prefix="audit-bench-old-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(old_tree), old_ref], cwd=ROOT, check=True, capture_output=True
    )
    new_url, drop_new = _database()
    old_url, drop_old = _database()
    inst_new, inst_old = tempfile.mkdtemp(prefix="audit-bench-"), tempfile.mkdtemp(prefix="audit-bench-")
    try:
        env_new, env_old = _env(ROOT, new_url, inst_new), _env(old_tree, old_url, inst_old)
        ids = {}
        for name, tree, env in (("new", ROOT, env_new), ("old", old_tree, env_old)):
            p = _self(tree, env, "setup")
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"setup of the {name} tree failed")
            ids[name] = json.loads(out.strip().splitlines()[-1])
        counts: dict[str, int] = {"log": 0, "skip": 0, "chain": 0}
        for r in range(args.rounds):
            for mode in ("log", "skip", "chain"):
                tree, env, which = (old_tree, env_old, "old") if mode == "chain" else (ROOT, env_new, "new")
                n = _round(tree, env, ids[which], args.writers, args.seconds, mode)
                counts[mode] += n
                print(f"round {r + 1} {mode:5}: {n:6d} writes, {n / args.seconds:7.1f}/s", flush=True)
        secs = args.seconds * args.rounds
        rate = {k: v / secs for k, v in counts.items()}
        print(
            f"{args.writers} writers x {args.rounds} rounds x {args.seconds:.0f} s: "
            f"log {rate['log']:.1f}/s, skip {rate['skip']:.1f}/s, old chain {rate['chain']:.1f}/s; "
            f"log/skip = {rate['log'] / rate['skip']:.2f} (target >= 0.80), log/chain = {rate['log'] / rate['chain']:.2f}"
        )
        lat = _checkpoint_latency(env_new)
        print(
            f"record -> signed checkpoint: {lat['entries']} entries, p50 {lat['p50']:.2f} s, p99 {lat['p99']:.2f} s, "
            f"max {lat['max']:.2f} s (target p99 <= {MERGE_DELAY + CHECKPOINT_SECONDS:.1f} s); "
            f"{lat['checkpoints']} checkpoints, log verifies: {lat['ok']}, consistent: {lat['consistent']}"
        )
        ok = rate["log"] / rate["skip"] >= 0.8 and lat["p99"] <= MERGE_DELAY + CHECKPOINT_SECONDS and lat["ok"]
        print(json.dumps({"rates": rate, "latency": lat, "pass": ok}))
        return 0 if ok else 1
    finally:
        drop_new()
        drop_old()
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, capture_output=True)


def _checkpoint_latency(env: dict[str, str]) -> dict[str, Any]:
    code = r"""
import json, base64
from sqlalchemy import select
from clinic.app import create_app
from clinic.core import audit_sequencer, audit_verify, auditlog, merkle
from clinic.core.audit import AuditEntry
from clinic.core.auditlog import AuditCheckpoint
from clinic.core.db import db
app = create_app()
with app.app_context():
    audit_sequencer.checkpoint_now()
    with db.engine.connect() as conn:
        cps = conn.execute(select(AuditCheckpoint.size, AuditCheckpoint.signed_at, AuditCheckpoint.note).order_by(AuditCheckpoint.size)).all()
        rows = conn.execute(select(AuditEntry.seq, AuditEntry.at).where(AuditEntry.action == "visit.message").order_by(AuditEntry.seq)).all()
        v = auditlog.config().verifier
        opened = [v.open(c.note) for c in cps]
        nodes = auditlog.StoredNodes(conn)
        last = opened[-1]
        consistent = all(merkle.verify_consistency(c.size, last.size, c.root, last.root, merkle.consistency_proof(nodes, c.size, last.size)) for c in opened)
    lat, i = [], 0
    for seq, at in rows:
        while cps[i].size < seq:
            i += 1
        lat.append((cps[i].signed_at - at).total_seconds())
    lat.sort()
    print(json.dumps({"entries": len(lat), "p50": lat[len(lat) // 2], "p99": lat[int(0.99 * (len(lat) - 1))], "max": lat[-1],
                      "checkpoints": len(cps), "ok": audit_verify.verify_now().ok, "consistent": consistent}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("setup", "worker", "sequencer"):
        sys.path.insert(0, os.getcwd())
        if sys.argv[1] == "setup":
            setup()
        elif sys.argv[1] == "worker":
            worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
        else:
            sequencer_loop(float(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
