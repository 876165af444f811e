"""Tokens, accuracy and latency per arm vs the cost-aware graph, on the embedded default.

Runs seeded arithmetic items with exact answers through each fixed arm of the
small tier (the ladder reduced to that one arm, no escalation) and through the
full graph, then prints per-arm figures and the graph's output-token ratio
against always-`cot`, measured in this one run.

    .venv/bin/python benchmarks/arms.py --n 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from decimal import Decimal

from effreason_agents.config import load_config
from effreason_agents.graph import build_reasoning_graph
from effreason_agents.nodes import Services


def items(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            out.append((f"What is {a} + {b}?", str(a + b)))
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            out.append((f"What is {a} + {b}?", str(a + b)))
    return out


def run(graph, data, context) -> dict:  # noqa: ANN001
    correct, out_tok, latency, cost, attempts = 0, [], [], Decimal(0), 0
    for q, gold in data:
        t = time.perf_counter()
        res = graph.invoke({"question": q}, context=context)["result"]
        latency.append(time.perf_counter() - t)
        correct += res["answer"] == gold
        out_tok.append(res["total_output_tokens"])
        cost += Decimal(res["total_cost_usd"])
        attempts += len(res["attempts"])
    return {
        "accuracy": correct / len(data),
        "mean_output_tokens": statistics.mean(out_tok),
        "p50_latency_s": statistics.median(latency),
        "mean_cost_usd": cost / len(data),
        "attempts_per_item": attempts / len(data),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="items (half one-digit, half two-digit addition)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    base = load_config()
    data = items(args.n, args.seed)
    rows = {}
    for strategy in ("direct", "cod", "cot"):
        cfg = base.model_copy(update={"ladder": [base.ladder[0].model_copy(update={"strategy": strategy})]})
        graph = build_reasoning_graph(cfg, services=Services(cfg))
        rows[f"small:{strategy}"] = run(graph, data, {"log": False, "confidence_threshold": 0.0})
    rows["graph"] = run(build_reasoning_graph(base), data, {"log": False})
    print(f"{'arm':<14}{'accuracy':>10}{'out tok':>10}{'p50 s':>8}{'attempts':>10}{'cost $':>12}")
    for name, r in rows.items():
        print(f"{name:<14}{r['accuracy']:>10.2f}{r['mean_output_tokens']:>10.1f}{r['p50_latency_s']:>8.2f}"
              f"{r['attempts_per_item']:>10.2f}{r['mean_cost_usd']:>12.6f}")
    cot = rows["small:cot"]["mean_output_tokens"]
    print(f"\noutput tokens, graph / always-cot: {rows['graph']['mean_output_tokens'] / cot:.2f}")
    print(f"output tokens, direct / always-cot: {rows['small:direct']['mean_output_tokens'] / cot:.2f}")
    print(f"accuracy, graph - always-cot: {rows['graph']['accuracy'] - rows['small:cot']['accuracy']:+.2f}")


if __name__ == "__main__":
    main()
