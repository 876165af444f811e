"""A concise-reasoning adapter for the embedded model: before and after ``effreason tune``.

One run, all through the ``effreason`` commands:

1. ``effreason bench`` logs the small tier's arms (direct, cod, cot, concise-cot) on the
   built-in suite for the training seeds;
2. ``effreason export sft`` turns those logs into SFT data (per question the shortest
   correct trace);
3. ``effreason tune`` LoRA-tunes SmolLM2-135M on it;
4. ``effreason bench`` runs ``cot`` and ``cod`` on the base tier and on the adapter tier
   over built-in items of an evaluation seed not used in training (questions that also
   appear in the training data are counted and reported).

It prints accuracy (Wilson 95% interval) and mean output tokens per arm, the token
reduction of the tuned tier per strategy, and the accuracy difference with its 95%
interval (the run's noise)::

    .venv/bin/python benchmarks/tune.py --train-seeds 1 2 3 --eval-seed 7 --limit 30 --epochs 2

Everything goes to ``--out`` (stores, SFT data, adapter, bench results, summary.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRAIN_ARMS = ["small:direct", "small:cod", "small:cot", "small:concise-cot"]
STRATEGIES = ["cot", "cod"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def diff_interval(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """Difference of two proportions (k2/n2 - k1/n1) and its Newcombe (Wilson-based) 95% interval."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p2 - p1
    return d, d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    print("$ effreason " + " ".join(cmd[3:]), flush=True)
    r = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}")
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--eval-seed", type=int, default=7)
    ap.add_argument("--limit", type=int, default=30, help="items per seed")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0, help="tuning seed")
    ap.add_argument("--system", choices=["strategy", "none"], default="strategy",
                    help="export sft --system: the trace's strategy system message, or none")
    ap.add_argument("--tag", default="", help="suffix of the adapter and evaluation folders (a new tune in the same --out)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("out/tune-bench"))
    args = ap.parse_args()
    if args.eval_seed in args.train_seeds:
        sys.exit("--eval-seed must not be one of --train-seeds")

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "effreason_agents.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EFFREASON"))}
    started = time.perf_counter()

    # 1. logs of the small tier on the training seeds (a rerun reuses them: --force)
    train_env = {**env, "EFFREASON_STORE": str(out / "train.sqlite")}
    for s in args.train_seeds:
        run([*cli, "bench", "--suite", "builtin", "--seed", str(s), "--limit", str(args.limit), "--arms", *TRAIN_ARMS,
             "-j", str(args.concurrency), "--out", str(out / f"train-{s}"), "--force", "--json"], train_env, out)
    # 2. SFT data: every training question (the evaluation questions come from another seed)
    export = json.loads(run([*cli, "export", "sft", "--data", str(out / "train.sqlite"), "--out", str(out / "sft.jsonl"),
                             "--eval-share", "0", "--system", args.system, "--json"], train_env, out))
    # 3. the adapter
    tag = f"-{args.tag}" if args.tag else ""
    card = json.loads(run([*cli, "tune", "--data", str(out / "sft.jsonl"), "--out", str(out / f"adapter{tag}"),
                           "--epochs", str(args.epochs), "--lr", str(args.lr), "--seed", str(args.seed), "--json"],
                          train_env, out))
    # 4. before and after, on the evaluation seed, in one bench run
    (out / f"effreason{tag}.toml").write_text(
        f'[tiers.tuned]\nengine = "embedded"\nmodel = "SmolLM2-135M-Instruct"\nadapter = "{out / f"adapter{tag}" / "adapter.gguf"}"\n',
        encoding="utf-8")
    arms = [f"{t}:{s}" for s in STRATEGIES for t in ("small", "tuned")]
    eval_env = {**env, "EFFREASON_STORE": str(out / "eval.sqlite"), "EFFREASON_CONFIG": str(out / f"effreason{tag}.toml")}
    run([*cli, "bench", "--suite", "builtin", "--seed", str(args.eval_seed), "--limit", str(args.limit), "--arms", *arms,
         "-j", str(args.concurrency), "--out", str(out / f"eval{tag}"), "--json"], eval_env, out)
    results = json.loads((out / f"eval{tag}" / "results.json").read_text())["arms"]

    from effreason_agents.evaluation.tasks import load_suite

    trained_q = set()
    for line in (out / "sft.jsonl").read_text(encoding="utf-8").splitlines():
        msgs = json.loads(line)["messages"]
        trained_q.update(m["content"].strip() for m in msgs if m["role"] == "user")
    eval_q = [it.question.strip() for it in load_suite("builtin", seed=args.eval_seed, limit=args.limit)]
    overlap = sum(1 for q in eval_q if q in trained_q)

    summary: dict[str, Any] = {"train_seeds": args.train_seeds, "eval_seed": args.eval_seed, "limit": args.limit,
                               "sft_examples": card["data"]["examples"], "export": export, "card": card,
                               "eval_questions_in_training": overlap, "arms": {}, "strategies": {},
                               "seconds": round(time.perf_counter() - started, 1)}
    print(f"\nSFT examples {card['data']['examples']}, tune {card['steps']} steps, loss {card['first_loss']:.3f} -> "
          f"{card['final_loss']:.3f}; evaluation questions also in training: {overlap}/{len(eval_q)}\n")
    print(f"{'arm':<12} {'accuracy':>8} {'95% interval':>14} {'mean out tokens':>16}")
    for name in arms:
        m = results[name]
        n, k = m["n"], round(m["accuracy"] * m["n"])
        lo, hi = wilson(k, n)
        summary["arms"][name] = {"n": n, "correct": k, "accuracy": m["accuracy"], "wilson95": [lo, hi],
                                 "mean_output_tokens": m["mean_output_tokens"]}
        print(f"{name:<12} {m['accuracy']:>8.2f} {f'[{lo:.2f}, {hi:.2f}]':>14} {m['mean_output_tokens']:>16.1f}")
    print()
    for s in STRATEGIES:
        b, t = summary["arms"][f"small:{s}"], summary["arms"][f"tuned:{s}"]
        cut = 1 - t["mean_output_tokens"] / b["mean_output_tokens"] if b["mean_output_tokens"] else float("nan")
        d, lo, hi = diff_interval(b["correct"], b["n"], t["correct"], t["n"])
        summary["strategies"][s] = {"token_reduction": cut, "accuracy_diff": d, "accuracy_diff_95": [lo, hi],
                                    "target_met": cut >= 0.4 and hi >= 0}
        print(f"{s}: {cut:.0%} fewer output tokens; accuracy {d:+.2f} (95% interval [{lo:+.2f}, {hi:+.2f}])")
    (out / f"summary{tag}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nsummary: {out / f'summary{tag}.json'} ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
