"""Router quality on logged outcomes, and router speed.

    # quality: 5-fold APGR / CPT(50%) / CPT(80%) with bootstrap 95% intervals, and the same
    # with whole groups (e.g. MMLU subjects) held out of training, for each model kind
    .venv/bin/python benchmarks/router.py quality --data ../shared/data/routing/mmlu_dev_subjects.csv \
        --split-by subject --kinds ensemble knn logistic
    # speed: training time on 15,000 logged rows and routing-decision latency per query
    .venv/bin/python benchmarks/router.py                 # logistic and mf, 15,000 prompts × 3 arms
    .venv/bin/python benchmarks/router.py --kinds logistic gbm mlp mf --rows 15000 --json

Quality uses :func:`router_training.protocols.evaluate_protocol` (what ``effreason router
eval`` runs): out-of-fold predictions, RouteLLM's metrics between the file's weak and strong
model, and a percentile bootstrap over the scored prompts (the interval covers test-set
sampling, not refitting).

Speed:
Prompts come from the built-in task generator (many seeds, de-duplicated); each prompt
gets a graded outcome per arm drawn from a fixed rule of its category and difficulty
plus noise (seeded). The labels only need to be learnable: this measures time, not
accuracy (`effreason router eval` measures accuracy on real logs).

Training: wall time of fitting the router (featurizer + model) on all rows. BLAS and
torch are limited to one thread for the whole script, so training gets one core (stricter
than the 2-core target). Latency: one core (BLAS and torch limited to one thread), the routing
decision only — featurize the query, predict P(correct) per arm, apply the policy — for
each of ``--queries`` held-out prompts after a warm-up; p50 and p99 per query. The
model call itself is not included. For knn and ensemble the MiniLM embeddings of the
training prompts and of each live query are computed beforehand and reported on their own
line (they are the same whichever model uses them).
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


def _time_kinds(args: argparse.Namespace, train, held: list[str]) -> list[dict]:  # noqa: ANN001
    """Fit each kind on ``train`` and time its decisions on ``held``. Sentence embeddings (knn,
    ensemble) come from the disk cache the caller filled, so neither figure includes them."""
    from effreason_agents.adapters.router import Router
    from router_training.models import fit_router

    results = []
    costs = {"small:direct": 0.0, "small:cot": 0.0, "large:cod": 0.00005}
    for kind in args.kinds:
        t0 = time.perf_counter()
        fitted = fit_router(train, kind, seed=0)
        fit_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            fitted.save(Path(d) / "router", {"policy": {"kind": "threshold", "tau": 0.6}})
            router = Router.load(Path(d) / "router")
        feats = router.featurizer
        embs = feats._embed(held) if feats.embeddings else None  # cached: the query's embedding is set aside

        def decide(i: int) -> None:
            row = feats._row(held[i], None if embs is None else embs[i])
            p = router.predict_rows([row])[0]
            router.choose({a: float(p[j]) for j, a in enumerate(router.arms)}, costs)

        for i in range(50):  # warm-up
            decide(i)
        lat = []
        for i in range(len(held)):
            t = time.perf_counter_ns()
            decide(i)
            lat.append((time.perf_counter_ns() - t) / 1e6)
        results.append({
            "kind": kind, "train_rows": len(train), "arms": len(ARMS), "fit_seconds": round(fit_s, 2),
            "fit_limit_seconds": 120, "fit_ratio_to_limit": round(fit_s / 120, 3),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 4),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 4),
            "latency_target_ms": 1.0, "p50_ratio_to_target": round(float(np.percentile(lat, 50)) / 1.0, 3),
        })
    return results


def quality(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="router.py quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="logged outcomes (RouteLLM wide CSV, long JSONL/CSV, or 'store')")
    ap.add_argument("--kinds", nargs="+", default=["ensemble", "knn", "logistic"], help="router models to evaluate")
    ap.add_argument("--split-by", default=None, help="also hold out whole groups of this column (e.g. subject)")
    ap.add_argument("--cv", type=int, default=5, help="folds")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the APGR interval")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    from router_training.data import load_table
    from router_training.protocols import evaluate_protocol

    table = load_table(args.data, None)
    rows = []
    for kind in args.kinds:
        for column in [None] + ([args.split_by] if args.split_by else []):
            r = evaluate_protocol(table, kind, k=args.cv, column=column, n_boot=args.bootstrap)
            b = r.get("bootstrap") or {}
            rows.append({"kind": kind, "protocol": f"{args.cv}-fold by prompt" if column is None
                         else f"{args.cv} folds of whole {column} groups",
                         "apgr": r["apgr"], "low": b.get("low"), "high": b.get("high"), "cpt50": r["cpt50"],
                         "cpt80": r["cpt80"], "auc": r["auc"], "seconds": r.get("seconds"), "n": r["n"]})
            print(f"# {kind}, {rows[-1]['protocol']}: APGR {r['apgr']:.3f} ({r.get('seconds')} s)",
                  file=sys.stderr, flush=True)
    out = {"data": args.data, "n": len(table), "weak": r["weak"], "strong": r["strong"],
           "random_apgr": 0.5, "oracle": {k: r["baselines"]["oracle"][k] for k in ("apgr", "cpt50", "cpt80")},
           "results": rows}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.1%}"

    print(f"{len(table)} prompts, weak {r['weak']}, strong {r['strong']}; random APGR 0.500, "
          f"oracle {out['oracle']['apgr']:.3f}")
    print()
    print("| router | protocol | APGR [95% interval] | CPT(50%) | CPT(80%) | AUC | CV time |")
    print("| --- | --- | --: | --: | --: | --: | --: |")
    for x in rows:
        ci = f" [{x['low']:.3f}, {x['high']:.3f}]" if x["low"] is not None else ""
        print(f"| {x['kind']} | {x['protocol']} | {x['apgr']:.3f}{ci} | {pct(x['cpt50'])} | {pct(x['cpt80'])} | "
              f"{x['auc']:.3f} | {x['seconds']} s |")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["quality"]:
        return quality(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=15000, help="training prompts (each with a label per arm)")
    ap.add_argument("--kinds", nargs="+", default=["logistic", "mf"], help="router models to time")
    ap.add_argument("--queries", type=int, default=2000, help="held-out queries for the latency measurement")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    table = synthetic_table(args.rows + args.queries)
    train, held = table.subset(np.arange(args.rows)), table.prompts[args.rows:]
    gen_s = time.perf_counter() - started
    results = []
    embed_s = None
    if any(k in ("knn", "ensemble") for k in args.kinds):
        from effreason_agents.adapters.embeddings import Embedder

        with tempfile.TemporaryDirectory() as d:  # a fresh cache: every prompt is embedded once, timed here
            os.environ["EFFREASON_EMBEDDINGS_CACHE"] = d
            t0 = time.perf_counter()
            Embedder().embed(train.prompts)
            embed_s = time.perf_counter() - t0
            results_embed = _time_kinds(args, train, held)
            live = Embedder(cache_dir=False)
            live.embed(held[:5])
            lat = []
            for q in held[:200]:
                t = time.perf_counter_ns()
                live.embed([q])
                lat.append((time.perf_counter_ns() - t) / 1e6)
            embed_query_ms = float(np.percentile(lat, 50))
    else:
        results_embed = _time_kinds(args, train, held)
        embed_query_ms = None
    results = results_embed
    out = {"cores_for_training": os.cpu_count(), "generate_seconds": round(gen_s, 2), "results": results,
           "embed_training_seconds": None if embed_s is None else round(embed_s, 1),
           "embed_query_ms_p50": None if embed_query_ms is None else round(embed_query_ms, 2)}
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
    if embed_s is not None:
        print()
        print(f"MiniLM sentence embeddings (knn, ensemble), set aside above: {embed_s:.1f} s for the "
              f"{args.rows} training prompts, {embed_query_ms:.1f} ms per live query (p50, one thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
