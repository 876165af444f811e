"""Adaptive self-consistency on the embedded model: samples and tokens the stopping rules save.

For the first N items of the built-in suite, one prompt family (``direct`` or ``cod``) is
sampled ``--cap`` times per item with the ``fixed`` rule. On that one recorded sequence the
adaptive rules are replayed offline — Adaptive-Consistency (``beta_stop``, confidence 0.95)
and Early-Stopping Self-Consistency (``esc_window_stop``, window 4), checked after every
round of samples as the live path does — to find where each would have stopped. From the
same run it reports, per policy: mean samples drawn against the cap, the share of items whose
majority equals the full-cap majority, accuracy (adaptive majority, full-cap majority, the
first sample alone), and output tokens (the per-choice tokens of the prefix) as a ratio to
the full cap. Then the live adaptive path (``rule="beta"``) runs once on the same items, on
fresh samples, for its mean samples drawn and output tokens.

The embedded model must not run beside another benchmark (2 cores: concurrent model runs
thrash), so run it under the embedded-model lock:

    flock /tmp/effreason-embedded.lock .venv/bin/python benchmarks/sc.py --limit 30 --cap 8 --prompt direct
    flock /tmp/effreason-embedded.lock .venv/bin/python benchmarks/sc.py --limit 30 --cap 8 --prompt cod

Run without the wrapper, the script takes the same lock itself (waiting for any holder).
``--json`` prints one JSON object instead of the table.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from effreason_agents.config import StrategyConfig, load_config
from effreason_agents.engine.sampling import (
    Rule,
    SampleResult,
    default_batch,
    majority,
    sample_until_settled,
    settled,
)
from effreason_agents.core.prompts import build_prompt
from effreason_agents.evaluation.tasks import TaskItem, check_answer, load_suite
from effreason_agents.adapters.tiers import TierClient, clients_for

LOCK_PATH = Path("/tmp/effreason-embedded.lock")
CONFIDENCE = 0.95
WINDOW = 4
DEFAULT_MAX_TOKENS = {"direct": 24, "cod": 160}


@contextlib.contextmanager
def embedded_lock(path: Path = LOCK_PATH) -> Iterator[None]:
    """Hold the embedded-model lock: already held when this process inherited a descriptor on
    ``path`` from ``flock(1)``, otherwise taken here (blocking until free)."""
    fds = Path("/proc/self/fd")
    if fds.is_dir():
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if Path(os.readlink(fd)) == path:
                    yield
                    return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {path} (another embedded-model run holds it)", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def stop_point(rule: Rule, answers: Sequence[str | None], every: int) -> int:
    """How many of ``answers`` ``rule`` would have drawn, checked after every ``every``
    samples (and at the end, the cap)."""
    cap = len(answers)
    for k in range(every, cap, every):
        if settled(rule, answers[:k], CONFIDENCE, WINDOW):
            return k
    return cap


@dataclass
class ItemRun:
    item: TaskItem
    fixed: SampleResult
    stops: dict[str, int]  # policy -> samples drawn
    live: SampleResult | None = None


def _progress(label: str, i: int, total: int) -> None:
    if i == total or i * 10 // total > (i - 1) * 10 // total:
        print(f"  {label}: {i}/{total}", file=sys.stderr, flush=True)


def run(client: TierClient, items: list[TaskItem], args: argparse.Namespace) -> dict[str, Any]:
    strategy = StrategyConfig(kind=args.prompt, max_tokens=args.max_tokens)
    caps = client.tier.capabilities
    every = args.every or default_batch(client)
    prompts = [build_prompt(strategy, it.question, caps, answer_type=it.type) for it in items]

    def draw(prompt: Any, rule: Rule) -> SampleResult:
        return sample_until_settled(
            client, prompt.messages, max_tokens=args.max_tokens, temperature=args.temperature, cap=args.cap,
            rule=rule, confidence=CONFIDENCE, window=WINDOW, stop=prompt.stop,
        )

    client.base_url()  # start the embedded server before timing anything
    runs: list[ItemRun] = []
    start = time.perf_counter()
    for i, (it, prompt) in enumerate(zip(items, prompts), 1):
        r = draw(prompt, "fixed")
        stops = {"beta": stop_point("beta", r.answers, every), "esc": stop_point("esc", r.answers, every)}
        runs.append(ItemRun(it, r, stops))
        _progress(f"fixed cap {args.cap}", i, len(items))
    fixed_wall = time.perf_counter() - start
    start = time.perf_counter()
    for i, (ir, prompt) in enumerate(zip(runs, prompts), 1):
        ir.live = draw(prompt, "beta")
        _progress("live beta", i, len(items))
    live_wall = time.perf_counter() - start
    return summarize(runs, args, every, fixed_wall, live_wall, client)


def summarize(
    runs: list[ItemRun], args: argparse.Namespace, every: int, fixed_wall: float, live_wall: float, client: TierClient
) -> dict[str, Any]:
    n = len(runs)
    cap_tokens = sum(r.fixed.output_tokens for r in runs)

    def row(policy: str, drawn: list[int], answers: list[str | None], tokens: int, early: int | None) -> dict[str, Any]:
        return {
            "policy": policy,
            "mean_samples": sum(drawn) / n,
            "samples_vs_cap": sum(drawn) / (n * args.cap),
            "stopped_early": None if early is None else early / n,
            "agrees_with_cap": sum(a == r.fixed.answer for a, r in zip(answers, runs)) / n,
            "accuracy": sum(check_answer(a, r.item) for a, r in zip(answers, runs)) / n,
            "output_tokens": tokens,
            "tokens_vs_cap": tokens / cap_tokens if cap_tokens else None,
        }

    rows = [row(f"full cap ({args.cap}, fixed)", [args.cap] * n, [r.fixed.answer for r in runs], cap_tokens, None)]
    for rule, label in (("beta", f"beta {CONFIDENCE} (replayed)"), ("esc", f"esc window {WINDOW} (replayed)")):
        ks = [r.stops[rule] for r in runs]
        rows.append(row(
            label, ks,
            [majority(r.fixed.answers[:k])[0] for r, k in zip(runs, ks)],
            sum(sum(r.fixed.per_choice_tokens[:k]) for r, k in zip(runs, ks)),
            sum(k < args.cap for k in ks),
        ))
    rows.append(row("first sample", [1] * n, [r.fixed.answers[0] for r in runs],
                    sum(r.fixed.per_choice_tokens[0] for r in runs), None))
    live = [r.live for r in runs if r.live is not None]
    rows.append(row(f"beta {CONFIDENCE} (live, fresh samples)", [x.samples_drawn for x in live], [x.answer for x in live],
                    sum(x.output_tokens for x in live), sum(x.samples_drawn < args.cap for x in live)))
    return {
        "suite": f"builtin[:{n}]",
        "tier": client.name,
        "model": client.tier.model,
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "cap": args.cap,
        "rules": {"beta": {"confidence": CONFIDENCE}, "esc": {"window": WINDOW}, "checked_every": every},
        "wall_s": {"fixed": round(fixed_wall, 1), "live_beta": round(live_wall, 1)},
        "truncated_share_fixed": sum(r.fixed.truncated_share for r in runs) / n,
        "live_beta": {
            "mean_samples": sum(x.samples_drawn for x in live) / n,
            "output_tokens": sum(x.output_tokens for x in live),
            "requests": sum(x.requests for x in live),
        },
        "rows": rows,
        "items": [
            {
                "id": r.item.id, "gold": r.item.answer, "answers": r.fixed.answers,
                "tokens": r.fixed.per_choice_tokens, "stops": r.stops,
                "live_answers": r.live.answers if r.live else None,
            }
            for r in runs
        ],
    }


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"{res['model']} ({res['tier']}), prompt `{res['prompt']}` (max_tokens {res['max_tokens']}), "
        f"temperature {res['temperature']}, cap {res['cap']}, {res['suite']}; rules checked every "
        f"{res['rules']['checked_every']} samples; {res['truncated_share_fixed']:.0%} of fixed-run samples hit max_tokens; "
        f"wall {res['wall_s']['fixed']} s (fixed) + {res['wall_s']['live_beta']} s (live beta)",
        "",
        "| policy | mean samples | samples / cap | stopped early | agrees with full-cap majority | accuracy "
        "| output tokens | tokens / cap |",
        "| --- | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['policy']} | {r['mean_samples']:.2f} | {r['samples_vs_cap']:.2f} | {_fmt(r['stopped_early'], '.2f')} "
            f"| {r['agrees_with_cap']:.2f} | {r['accuracy']:.2f} | {r['output_tokens']} | {_fmt(r['tokens_vs_cap'], '.2f')} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=30, help="items of the built-in suite (default 30)")
    ap.add_argument("--cap", type=int, default=8, help="samples per item in the fixed run; the live run's cap (default 8)")
    ap.add_argument("--prompt", choices=["direct", "cod"], default="direct", help="prompt family of every sample")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="output-token cap per sample (default: the configured strategy's, else direct 24 / cod 160)")
    ap.add_argument("--every", type=int, default=None,
                    help="replay the rules after every K samples (default: the live path's round size, 2 on the embedded tier)")
    ap.add_argument("--tier", default="small")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.limit < 1 or args.cap < 2 or not 0 < args.temperature <= 2 or (args.every is not None and args.every < 1):
        ap.error("need --limit >= 1, --cap >= 2, 0 < --temperature <= 2, --every >= 1")

    cfg = load_config()
    clients = clients_for(cfg)
    if args.tier not in clients:
        ap.error(f"tier {args.tier!r} is not enabled (enabled: {', '.join(clients)})")
    client = clients[args.tier]
    if args.max_tokens is None:
        configured = cfg.strategies.get(args.prompt)
        same_family = configured is not None and configured.kind == args.prompt
        args.max_tokens = configured.max_tokens if same_family else DEFAULT_MAX_TOKENS[args.prompt]
    items = load_suite("builtin", limit=args.limit)
    with embedded_lock():
        res = run(client, items, args)
    print(json.dumps(res, indent=2) if args.json else markdown(res))


if __name__ == "__main__":
    main()
