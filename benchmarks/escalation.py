"""Escalation by value against the fixed ladder and always-CoT, on the embedded model.

Three configurations over the same items of the built-in suite (by default its easy items,
as labelled by the generator, from seed 1: items neither the shipped calibrators nor the
built-in priors were fitted on), in one run:

- ``always small:cot``: one chain-of-thought call per item, no escalation;
- ``ladder``: the cost-aware graph on the default configuration (``escalation.next = "ladder"``:
  after a low-confidence answer, the next arm up the ladder);
- ``value``: the same graph with ``escalation.next = "value"`` and ``small:sc`` as an extra
  arm it may choose (``escalation.value_arms``): after a low-confidence answer, the untried
  arm with the best predicted gain in P(correct) per expected output token, or none.

It prints accuracy, mean output tokens, tokens per correct answer, escalation rate and mean
attempts per configuration, then the ratios the target is stated in: value's output tokens
against always-CoT's (target: at most 0.3 at no less accuracy) and value's tokens per correct
answer against the ladder's. Nothing is logged to the outcome store (throwaway ledger and store).

The embedded model must not run beside another embedded-model job (2 cores), so run it under
the lock (the script also takes it itself, waiting for any holder):

    flock /tmp/effreason-embedded.lock .venv/bin/python benchmarks/escalation.py --limit 40

``--threads 1`` runs llama.cpp on one thread, far faster when other processes load the
cores. ``--json`` prints one JSON object instead of the table.

``--fit-priors STORE`` instead prints value escalation's priors fitted on the graded results
of every ``effreason bench`` run in the outcome store ``STORE`` (how the embedded model's
built-in priors, ``policy.BUILTIN_ARM_PRIORS``, were made): per arm, P(correct) by the heuristic
classifier's difficulty label (the label the graph sees), shrunk toward the arm's overall
accuracy by ``SHRINK`` pseudo-items, and the mean output tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.config import ArmConfig, Config, load_config
from effreason_agents.core.features import classify_difficulty
from effreason_agents.evaluation.bench import single_arm_config
from effreason_agents.evaluation.tasks import TaskItem, builtin_suite, check_answer
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.graph.nodes import Services
from effreason_agents.graph.state import ReasoningContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sc import embedded_lock  # noqa: E402  (benchmarks/sc.py: the embedded-model lock)

COT = "always small:cot"
NAMES = (COT, "ladder", "value")
SHRINK = 10  # pseudo-items at the arm's overall accuracy in each difficulty's estimate


def fit_priors(store_path: Path) -> dict[str, dict[str, float]]:
    """``{arm: {"easy", "medium", "hard", "output_tokens", "n"}}`` from every graded fixed-arm
    result in the store (the graph's rows are left out)."""
    store = OutcomeStore(store_path)
    try:
        rows = [r for r in store.bench_results() if ":" in r.arm]
    finally:
        store.close()
    out: dict[str, dict[str, float]] = {}
    for arm in sorted({r.arm for r in rows}):
        mine = [r for r in rows if r.arm == arm]
        overall = sum(r.correct for r in mine) / len(mine)
        fit: dict[str, float] = {}
        for level in ("easy", "medium", "hard"):
            cell = [r for r in mine if classify_difficulty(r.question)[0] == level]
            fit[level] = round((sum(r.correct for r in cell) + SHRINK * overall) / (len(cell) + SHRINK), 3)
        fit["output_tokens"] = round(sum(r.output_tokens for r in mine) / len(mine), 1)
        fit["n"] = len(mine)
        out[arm] = fit
    return out


def configs(base: Config, value_arms: list[str]) -> dict[str, Config]:
    """The three configurations compared, all on ``base``'s tiers, strategies and budgets."""
    value = base.model_copy(update={"escalation": base.escalation.model_copy(update={
        "next": "value", "value_arms": [ArmConfig.model_validate(a) for a in value_arms]})})
    ladder = base.model_copy(update={"escalation": base.escalation.model_copy(update={"next": "ladder"})})
    return {COT: single_arm_config(base, ArmConfig.model_validate("small:cot")), "ladder": ladder, "value": value}


def run_config(name: str, cfg: Config, items: list[TaskItem], concurrency: int) -> list[dict[str, Any]]:
    services = Services(cfg)
    graph = build_reasoning_graph(cfg, services=services)
    ctx = ReasoningContext(log=False, confidence_threshold=0.0 if name == COT else None)

    def one(item: TaskItem) -> dict[str, Any]:
        result = graph.invoke({"question": item.question}, context=ctx)["result"]
        return {"item": item.id, "correct": check_answer(result["answer"], item),
                "output_tokens": result["total_output_tokens"], "arms": result["arms_tried"],
                "classified": result["difficulty"]}

    rows: list[dict[str, Any]] = []
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for i, row in enumerate(pool.map(one, items), 1):
                rows.append(row)
                if i == len(items) or i * 10 // len(items) > (i - 1) * 10 // len(items):
                    print(f"  {name}: {i}/{len(items)}", file=sys.stderr, flush=True)
    finally:
        services.close()
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    tokens = sum(r["output_tokens"] for r in rows)
    arms: dict[str, int] = {}
    for r in rows:
        for a in r["arms"][1:]:
            arms[a] = arms.get(a, 0) + 1
    return {
        "n": n,
        "accuracy": correct / n,
        "mean_output_tokens": tokens / n,
        "tokens_per_correct": tokens / correct if correct else None,
        "escalation_rate": sum(len(r["arms"]) > 1 for r in rows) / n,
        "mean_attempts": sum(len(r["arms"]) for r in rows) / n,
        "escalated_to": arms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40, help="items (after the difficulty filter)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the built-in generator")
    ap.add_argument("--difficulty", choices=("easy", "medium", "hard", "all"), default="easy",
                    help="the items' generator label")
    ap.add_argument("--value-arms", nargs="*", default=["small:sc"], help="extra arms value escalation may choose")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the config's)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fit-priors", type=Path, metavar="STORE", help="print priors fitted on a bench store and exit")
    args = ap.parse_args()
    if args.fit_priors:
        print(json.dumps(fit_priors(args.fit_priors), indent=2))
        return

    items = [it for it in builtin_suite(seed=args.seed) if args.difficulty in ("all", it.difficulty)][: args.limit]
    with tempfile.TemporaryDirectory(prefix="effreason-escalation-", ignore_cleanup_errors=True) as tmp_dir:
        out = run_all(args, items, Path(tmp_dir))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    report(out)


def run_all(args: argparse.Namespace, items: list[TaskItem], tmp: Path) -> dict[str, Any]:
    """The three configurations on ``items`` (throwaway store and ledger under ``tmp``)."""
    base = load_config()
    base = base.model_copy(update={
        "store": base.store.model_copy(update={"path": str(tmp / "outcomes.sqlite"), "url": None}),
        "budget": base.budget.model_copy(update={"ledger_path": str(tmp / "ledger.sqlite"), "ledger_url": None}),
        **({"embedded": base.embedded.model_copy(update={"n_threads": args.threads})} if args.threads else {}),
    })
    results: dict[str, Any] = {}
    walls: dict[str, float] = {}
    with embedded_lock():
        for name, cfg in configs(base, args.value_arms).items():
            start = time.perf_counter()
            results[name] = summarize(run_config(name, cfg, items, args.concurrency))
            walls[name] = round(time.perf_counter() - start, 1)
    cot, ladder, value = (results[n] for n in NAMES)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {
        "items": {"suite": "builtin", "seed": args.seed, "difficulty": args.difficulty, "n": len(items)},
        "value_arms": args.value_arms,
        "results": results,
        "wall_s": walls,
        "ratios": {
            "value_tokens_vs_cot": ratio(value["mean_output_tokens"], cot["mean_output_tokens"]),
            "ladder_tokens_vs_cot": ratio(ladder["mean_output_tokens"], cot["mean_output_tokens"]),
            "value_tokens_per_correct_vs_ladder": ratio(value["tokens_per_correct"], ladder["tokens_per_correct"]),
            "value_accuracy_minus_cot": round(value["accuracy"] - cot["accuracy"], 3),
            "value_accuracy_minus_ladder": round(value["accuracy"] - ladder["accuracy"], 3),
        },
    }


def report(out: dict[str, Any]) -> None:
    results, it = out["results"], out["items"]
    cot, ladder, value = (results[n] for n in NAMES)
    print(f"\n{it['n']} {it['difficulty']} items of the built-in suite (seed {it['seed']}); "
          f"value arms: {', '.join(out['value_arms']) or 'none'}\n")
    print("| configuration | accuracy | mean out tokens | tokens / correct | tokens vs always-CoT "
          "| escalation rate | mean attempts |")
    print("| --- | --: | --: | --: | --: | --: | --: |")
    for name in NAMES:
        m = results[name]
        tpc = f"{m['tokens_per_correct']:.0f}" if m["tokens_per_correct"] is not None else "-"
        print(f"| {name} | {m['accuracy']:.3f} | {m['mean_output_tokens']:.1f} | {tpc} | "
              f"{m['mean_output_tokens'] / cot['mean_output_tokens']:.2f} | {m['escalation_rate']:.2f} "
              f"| {m['mean_attempts']:.2f} |")
    r = out["ratios"]
    print(f"\nvalue / always-CoT output tokens: {r['value_tokens_vs_cot']} (target <= 0.3), accuracy "
          f"{value['accuracy']:.3f} vs {cot['accuracy']:.3f}")
    print(f"value / ladder tokens per correct answer: {r['value_tokens_per_correct_vs_ladder']}, accuracy "
          f"{value['accuracy']:.3f} vs {ladder['accuracy']:.3f}")
    print(f"escalated to: ladder {ladder['escalated_to']}, value {value['escalated_to']}")
    print(f"wall: {', '.join(f'{k} {v} s' for k, v in out['wall_s'].items())}")


if __name__ == "__main__":
    main()
