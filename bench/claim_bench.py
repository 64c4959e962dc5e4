"""Claim-next on PostgreSQL: latency with 1,000 vs 100,000 pending prescriptions, and 4 claimers
at full speed for 30 s (zero double claims; throughput).

    .venv/bin/python bench/claim_bench.py [--small 1000] [--large 100000] [--samples 300]
                                          [--claimers 4] [--seconds 30]

What it does, in one run:
1. makes a fresh PostgreSQL database on 127.0.0.1:5432 (dropped at the end) and migrates it;
2. makes ONE real prescription through the app (patient, confirmed diagnosis, visit accepted by
   a face-verified physician, signed prescription: the test factories over the Flask test
   client), then clones it in SQL (generate_series) to the wanted number of pending
   prescriptions, each with its queue row;
3. latency: `claim_next` (the service the API calls: SELECT ... FOR UPDATE SKIP LOCKED, the
   compare-and-set of the claim, its audit entry) in a transaction that is rolled back, so
   the queue is the same for every sample; p50/p90 at the small and the large size, and the
   ratio large/small (target <= 1.5);
4. throughput: N threads, each with its own session, claim-and-decide in a loop for S seconds
   (each claim commits, with its audit entry; the "decision" marks the queue row decided so
   the queue head moves on); then every claimed id is checked for duplicates, in memory and
   in the database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_BASE = "postgresql://postgres@127.0.0.1:5432"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--claimers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()

    from sqlalchemy import create_engine, text

    name = f"clinic_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        PG_BASE.replace("postgresql://", "postgresql+psycopg://") + "/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        return run(args, f"{PG_BASE}/{name}")
    finally:
        from clinic.core.db import db

        db.session.remove()
        if db._engine is not None:
            db._engine.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run(args: Any, url: str) -> int:
    import logging

    from flask_migrate import upgrade
    from sqlalchemy import func, select, text

    from clinic.app import create_app
    from clinic.core.audit import Actor, acting_as
    from clinic.core.config import Config
    from clinic.core.db import db, unit_of_work
    from clinic.core.principal import Principal
    from identity.models import Role
    from pharmacy import services
    from pharmacy.models import Review
    from prescriptions.models import Prescription
    from tests.support import factories as f
    from tests.support.rx_factories import item, visit_in_progress

    tmp = tempfile.mkdtemp(prefix="claim-bench-")
    cfg = Config(
        ENV="testing",
        TESTING=True,
        INSTANCE_PATH=tmp,
        DATABASE_URL=url,
        JWT_SECRET="bench-jwt-secret-that-is-long-enough-0",
        SECRET_KEY="bench",
        LOOKUP_KEY="bench",
    )
    # As in production: claims only append their audit entry; the sequencer runs beside them
    # (`flask audit sequencer`; here a thread of this process, started with the claimers).
    cfg.AUDIT_SEQUENCER = "external"
    cfg.finalize()
    app = create_app(cfg)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with app.app_context():
        upgrade()
    with app.test_request_context():
        client = app.test_client()
        v = visit_in_progress(client)
        resp = client.post(
            f"/api/v1/visits/{v['visit_id']}/prescriptions",
            json={"items": [item(v["drugs"]["amlodipine"])]},
            headers=f.auth(v["face"]),
        )
        assert resp.status_code == 201, resp.get_json()
        template = resp.get_json()["id"]
        pharmacists = [str(f.staff(Role.PHARMACIST).id) for _ in range(args.claimers)]
        cols = [c.name for c in Prescription.__table__.columns]

        def fill_to(n: int) -> float:
            t0 = time.perf_counter()
            with unit_of_work() as s:
                have = s.scalar(select(func.count()).select_from(Review).where(Review.state == "pending")) or 0
                more = n - int(have)
                if more > 0:
                    exprs = {
                        "id": "gen_random_uuid()",
                        "signed_at": f"signed_at + (g + {int(have)}) * interval '1 millisecond'",
                        "expires_at": "expires_at + interval '30 days'",
                    }
                    select_list = ", ".join(exprs.get(c, c) for c in cols)
                    s.execute(
                        text(
                            f"INSERT INTO prescriptions ({', '.join(cols)}) SELECT {select_list} "
                            "FROM prescriptions, generate_series(1, :n) AS g WHERE id = :tpl"
                        ),
                        {"n": more, "tpl": template},
                    )
                    s.execute(
                        text(
                            "INSERT INTO pharmacy_reviews (prescription_id, state, queued_at, reasons, rule_codes, "
                            "fee_fen, fee_waived, collect) SELECT p.id, 'pending', p.signed_at, '[]', '[]', 0, "
                            "false, false FROM prescriptions p WHERE NOT EXISTS "
                            "(SELECT 1 FROM pharmacy_reviews r WHERE r.prescription_id = p.id)"
                        )
                    )
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE prescriptions"))
                c.execute(text("VACUUM ANALYZE pharmacy_reviews"))
            return time.perf_counter() - t0

        def latency(samples: int) -> tuple[float, float]:
            times = []
            session = db.session()
            with acting_as(Actor(pharmacists[0], "pharmacist")):
                for _ in range(20):  # warm up
                    services.claim_next(Principal(uuid.UUID(pharmacists[0]), "pharmacist"))
                    session.rollback()
                for _ in range(samples):
                    t0 = time.perf_counter()
                    got = services.claim_next(Principal(uuid.UUID(pharmacists[0]), "pharmacist"))
                    session.flush()
                    times.append(time.perf_counter() - t0)
                    session.rollback()
                    assert got is not None
            times.sort()
            return statistics.median(times) * 1000, times[int(len(times) * 0.9)] * 1000

        seeded = fill_to(args.small)
        small = latency(args.samples)
        print(
            f"pending={args.small:>7,}  seeded in {seeded:5.1f} s  claim p50={small[0]:.2f} ms  p90={small[1]:.2f} ms"
        )
        seeded = fill_to(args.large)
        large = latency(args.samples)
        print(
            f"pending={args.large:>7,}  seeded in {seeded:5.1f} s  claim p50={large[0]:.2f} ms  p90={large[1]:.2f} ms"
        )
        print(f"growth p50 {large[0] / small[0]:.2f}x  p90 {large[1] / small[1]:.2f}x   (target <= 1.5x)")

    # --- concurrent claimers ------------------------------------------------------------------
    claims: dict[str, list[uuid.UUID]] = {p: [] for p in pharmacists}
    errors: list[BaseException] = []
    stop_at = [0.0]
    barrier = threading.Barrier(len(pharmacists) + 1)

    def claimer(pid: str) -> None:
        from sqlalchemy import update

        with app.app_context(), acting_as(Actor(pid, "pharmacist")):
            try:
                barrier.wait()
                while time.perf_counter() < stop_at[0]:
                    with unit_of_work() as s:
                        got = services.claim_next(Principal(uuid.UUID(pid), "pharmacist"))
                        if got is None:
                            return
                        # the decision, in short: the row leaves the queue
                        s.execute(update(Review).where(Review.prescription_id == got).values(state="decided"))
                    claims[pid].append(got)
            except BaseException as exc:
                errors.append(exc)
            finally:
                db.session.remove()

    sequencing = [True]

    def sequencer() -> None:
        from clinic.core import audit_sequencer, auditlog

        with app.app_context():
            log_cfg = auditlog.config()
            while sequencing[0]:
                audit_sequencer.run_pass(log_cfg)
                time.sleep(log_cfg.merge_delay / 2)
            audit_sequencer.checkpoint_now(log_cfg)
            db.session.remove()

    seq_thread = threading.Thread(target=sequencer)
    seq_thread.start()
    threads = [threading.Thread(target=claimer, args=(p,)) for p in pharmacists]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + args.seconds
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    sequencing[0] = False
    seq_thread.join()
    every = [c for got in claims.values() for c in got]
    doubles = sum(n - 1 for n in Counter(every).values() if n > 1)
    with app.app_context():
        from clinic.core import audit_verify

        in_db = db.session.scalar(select(func.count()).select_from(Review).where(Review.state == "decided")) or 0
        db_doubles = int(in_db) - len(set(every))
        log_ok = audit_verify.verify_now()
        db.session.remove()
    print(f"audit log after the run: {log_ok.entries:,} entries, verifies: {log_ok.ok}")
    print(
        f"{len(pharmacists)} claimers for {elapsed:.1f} s: {len(every):,} claims, {len(every) / elapsed:,.0f} claims/s; "
        f"per claimer {[len(c) for c in claims.values()]}; double claims: {doubles} (in memory), "
        f"{db_doubles} (database); errors: {len(errors)}"
    )
    if errors:
        print("first error:", repr(errors[0]))
    ok = doubles == 0 and db_doubles == 0 and not errors and large[0] / small[0] <= 1.5
    print("OK" if ok else "NOT OK")
    os.environ.pop("CLINIC_DATABASE_URL", None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
