"""Strategies compared on the embedded model: accuracy, output tokens, latency, and token ratios to CoT.

Runs each small-tier strategy as a fixed arm (one call per item: no escalation, no
truncation retry; a reply cut by its cap counts as it is) over a slice of the
built-in suite through the benchmark harness, in one run, and prints a table:

    .venv/bin/python benchmarks/strategies.py --limit 30

The outcome rows go to a throwaway store under --out unless --store is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effreason_agents.evaluation.bench import Bench, resolve_arms
from effreason_agents.config import load_config
from effreason_agents.evaluation.report import write_report
from effreason_agents.evaluation.tasks import load_suite

STRATEGIES = ["direct", "cod", "cod-fewshot", "cot", "concise-cot", "budget-cot"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=30, help="items of the built-in suite")
    ap.add_argument("--tier", default="small")
    ap.add_argument("--out", type=Path, default=Path("out/strategies"))
    ap.add_argument("--store", type=Path, default=None, help="outcome store (default: OUT/outcomes.sqlite)")
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()

    cfg = load_config()
    store = args.store or args.out / "outcomes.sqlite"
    # one call per item and strategy: a truncated reply is marked, not retried with a larger cap
    # (a single-arm ladder has nothing to escalate to)
    cfg = cfg.model_copy(update={
        "store": cfg.store.model_copy(update={"path": str(store)}),
        "budget": cfg.budget.model_copy(update={"on_truncation": "escalate"}),
    })
    arms = resolve_arms(cfg, [f"{args.tier}:{s}" for s in STRATEGIES])
    bench = Bench(cfg, load_suite("builtin", limit=args.limit), arms, graph=False, suite=f"builtin[:{args.limit}]",
                  out_dir=args.out, concurrency=args.concurrency, fresh=True)
    done = 0

    def progress(n: int, total: int, _res: object) -> None:
        nonlocal done
        if n * 10 // total > done * 10 // total:
            print(f"  {n}/{total}", flush=True)
        done = n

    results = bench.run(progress)
    write_report(results, args.out)
    cot = results["arms"][f"{args.tier}:cot"]["mean_output_tokens"]
    print(f"\n{'strategy':<14}{'accuracy':>9}{'out tok':>9}{'p50 s':>8}{'tok / cot':>11}")
    for s in STRATEGIES:
        m = results["arms"][f"{args.tier}:{s}"]
        print(f"{s:<14}{m['accuracy']:>9.2f}{m['mean_output_tokens']:>9.1f}{m['p50_latency_s']:>8.2f}"
              f"{m['mean_output_tokens'] / cot:>11.2f}")
    print(f"\nreport: {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
