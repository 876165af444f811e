"""Router speed: training time on 15,000 logged rows and routing-decision latency per query.

    .venv/bin/python benchmarks/router.py                 # logistic and mf, 15,000 prompts × 3 arms
    .venv/bin/python benchmarks/router.py --kinds logistic gbm mlp mf --rows 15000 --json

Prompts come from the built-in task generator (many seeds, de-duplicated); each prompt
gets a graded outcome per arm drawn from a fixed rule of its category and difficulty
plus noise (seeded). The labels only need to be learnable: this measures time, not
accuracy (`effreason router eval` measures accuracy on real logs).

Training: wall time of fitting the router (featurizer + model) on all rows. BLAS and
torch are limited to one thread for the whole script, so training gets one core (stricter
than the 2-core target). Latency: one core (BLAS and torch limited to one thread), the routing
decision only — featurize the query, predict P(correct) per arm, apply the policy — for
each of ``--queries`` held-out prompts after a warm-up; p50 and p99 per query. The
model call itself is not included.
"""

from __future__ import annotations

import os

# one core for the latency measurement; set before numpy / torch load their thread pools
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ARMS = ["small:direct", "small:cot", "large:cod"]
# P(correct) per arm by category: the small direct arm is good at lookups and coin flips,
# chain of thought at arithmetic, the large arm at everything but costs more.
BASE = {
    "arith": (0.45, 0.6, 0.95), "decimal": (0.5, 0.55, 0.95), "coin": (0.6, 0.5, 0.9), "letters": (0.05, 0.2, 0.9),
    "dates": (0.05, 0.15, 0.85), "word": (0.05, 0.25, 0.9), "choice": (0.3, 0.4, 0.9),
}


def synthetic_table(rows: int, seed: int = 0):  # noqa: ANN201
    from effreason_agents.evaluation.tasks import load_suite
    from router_training.table import OutcomeTable

    rng = random.Random(seed)
    prompts: dict[str, str] = {}
    s = 0
    while len(prompts) < rows:
        for it in load_suite("builtin", seed=s):
            prompts.setdefault(it.question, it.id)
        s += 1
        if s > 2000:
            raise SystemExit(f"only {len(prompts)} distinct prompts could be generated")
    texts = list(prompts)[:rows]
    correct = np.empty((rows, len(ARMS)))
    for i, t in enumerate(texts):
        cat = prompts[t].split("-")[1]
        hard = 0.15 if "-hard-" in prompts[t] else 0.0
        for j, base in enumerate(BASE.get(cat, (0.3, 0.4, 0.9))):
            correct[i, j] = float(rng.random() < max(0.0, base - hard))
    tokens = np.tile(np.array([10.0, 150.0, 60.0]), (rows, 1))
    cost = np.tile(np.array([0.0, 0.0, 0.00005]), (rows, 1))
    return OutcomeTable(texts, list(ARMS), correct, cost=cost, tokens=tokens, source=f"synthetic (seed {seed})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=15000, help="training prompts (each with a label per arm)")
    ap.add_argument("--kinds", nargs="+", default=["logistic", "mf"], help="router models to time")
    ap.add_argument("--queries", type=int, default=2000, help="held-out queries for the latency measurement")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    from effreason_agents.adapters.router import Router
    from router_training.models import fit_router

    started = time.perf_counter()
    table = synthetic_table(args.rows + args.queries)
    train, held = table.subset(np.arange(args.rows)), table.prompts[args.rows:]
    gen_s = time.perf_counter() - started
    results = []
    for kind in args.kinds:
        t0 = time.perf_counter()
        fitted = fit_router(train, kind, seed=0)
        fit_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            fitted.save(Path(d) / "router", {"policy": {"kind": "threshold", "tau": 0.6}})
            router = Router.load(Path(d) / "router")
        costs = {"small:direct": 0.0, "small:cot": 0.0, "large:cod": 0.00005}
        for q in held[:50]:  # warm-up
            router.choose(router.predict_one(q), costs)
        lat = []
        for q in held:
            t = time.perf_counter_ns()
            router.choose(router.predict_one(q), costs)
            lat.append((time.perf_counter_ns() - t) / 1e6)
        results.append({
            "kind": kind, "train_rows": args.rows, "arms": len(ARMS), "fit_seconds": round(fit_s, 2),
            "fit_limit_seconds": 120, "fit_ratio_to_limit": round(fit_s / 120, 3),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 4),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 4),
            "latency_target_ms": 1.0, "p50_ratio_to_target": round(float(np.percentile(lat, 50)) / 1.0, 3),
        })
    out = {"cores_for_training": os.cpu_count(), "generate_seconds": round(gen_s, 2), "results": results}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.rows} training prompts × {len(ARMS)} arms (synthetic labels), latency over {len(held)} "
          f"held-out queries on one core; {os.cpu_count()} cores for training")
    print()
    print("| router | fit time | fit / 2 min | decision p50 | decision p99 | p50 / 1 ms |")
    print("| --- | --: | --: | --: | --: | --: |")
    for r in results:
        print(f"| {r['kind']} | {r['fit_seconds']:.1f} s | {r['fit_ratio_to_limit']:.2f} | {r['latency_ms_p50']:.3f} ms | "
              f"{r['latency_ms_p99']:.3f} ms | {r['p50_ratio_to_target']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
