"""Best-of-N with early rejection (the ``bon`` strategy) against full Best-of-N on the embedded model.

For the first ``--limit`` items of the built-in suite (``--seed``), per item:

1. **full Best-of-N** — ``best_of_n`` with one round of ``max_tokens`` and no rejection: all N
   candidates run to the end; the best-scored complete one (mean token logprob) wins.
2. **early rejection, same candidates** — ``best_of_n`` with rounds of ``--round-tokens`` and
   ``--reject-fraction``, run on a *replay* of step 1's N recorded generations: each request is
   served the next ``round_tokens`` tokens (with their logprobs) of the candidate whose partial
   text it continues. This is the live algorithm's own code on the very same samples, so the
   comparison with step 1 isolates what pruning changes (a continuation through the assistant
   prefill samples from the same conditional distribution as the uninterrupted generation).
   Its input tokens are counted as the live path bills them: every round re-sends the prompt
   plus the partial text.
3. **early rejection, live** — the same settings on the embedded server, on fresh samples, for
   the billed tokens of the real path (continuations through assistant prefill).

Reported: mean output and total (input + output) tokens of each, their ratio to full Best-of-N,
how often early rejection picks the same answer as full Best-of-N (exact on the replay; on the
live run, fresh samples add the sampling noise of two independent Best-of-N runs, shown by
``full vs full`` when ``--repeat-full`` is set), and accuracy.

    EFFREASON__embedded__n_threads=1 flock /tmp/effreason-embedded.lock \\
        .venv/bin/python benchmarks/bon.py --limit 24 --samples 8 --max-tokens 128 --round-tokens 16

Run without the wrapper, the script takes the same lock itself. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sc import embedded_lock  # noqa: E402  (the shared embedded-model lock)

from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402

from effreason_agents.adapters.tiers import TierClient, clients_for  # noqa: E402
from effreason_agents.config import StrategyConfig, load_config  # noqa: E402
from effreason_agents.core.answers import answer_key  # noqa: E402
from effreason_agents.core.prompts import build_prompt, parse_answer  # noqa: E402
from effreason_agents.core.records import Completion, TokenLogprob  # noqa: E402
from effreason_agents.engine.runner import prompting  # noqa: E402
from effreason_agents.engine.sampling import BonResult, best_of_n  # noqa: E402
from effreason_agents.evaluation.tasks import TaskItem, check_answer, load_suite  # noqa: E402


@dataclass
class Recorded:
    """One candidate of a full Best-of-N run: its tokens (with logprobs) and how it ended."""

    tokens: list[TokenLogprob]
    finish_reason: str | None
    prompt_tokens: int


class ReplayTier:
    """Serves recorded generations round by round to :func:`best_of_n`: a first request gets
    the next unserved candidate; a continuation gets the next tokens of the candidate whose
    served text equals its prefill."""

    def __init__(self, live: TierClient, recorded: Sequence[Recorded], base_prefill: str) -> None:
        self.live, self.name, self.tier = live, live.name, live.tier
        self._config = getattr(live, "_config", None)
        self.recorded, self.base = list(recorded), base_prefill
        self.served = [0] * len(recorded)
        self.started = [False] * len(recorded)
        self.busy = [False] * len(recorded)
        self.lock = threading.Lock()

    def _text(self, i: int) -> str:
        return self.base + "".join(t.token for t in self.recorded[i].tokens[: self.served[i]])

    def prompt_bound(self, messages: Sequence[Any], tools: Sequence[Any] = ()) -> int:
        return self.live.prompt_bound(messages, tools)

    def complete(self, messages: Sequence[BaseMessage], *, max_tokens: int, **_: Any) -> Completion:
        msgs = list(messages)
        prefill = str(msgs[-1].content) if msgs and isinstance(msgs[-1], AIMessage) else ""
        with self.lock:
            if prefill == self.base and not all(self.started):
                i = self.started.index(False)
                self.started[i] = True
            else:
                i = next(j for j in range(len(self.recorded))
                         if self.started[j] and not self.busy[j] and self._text(j) == prefill)
            self.busy[i] = True
            rec, start = self.recorded[i], self.served[i]
            chunk = rec.tokens[start : start + max_tokens]
            self.served[i] = start + len(chunk)
            done = self.served[i] >= len(rec.tokens)
            self.busy[i] = False
        out = len(chunk)
        tin = rec.prompt_tokens + start  # the prompt plus the partial text re-sent
        text = "".join(t.token for t in chunk)
        return Completion(
            text=prefill + text, input_tokens=tin, output_tokens=out,
            finish_reason=rec.finish_reason if done else "length", latency_s=0.0, model=self.tier.model,
            cost_usd=Decimal(0), logprobs=list(chunk), prefill=prefill,
        )


def answer_of(r: BonResult) -> str | None:
    return answer_key(parse_answer(r.winner_text).answer) if r.winner is not None else None


def run_item(client: TierClient, item: TaskItem, args: argparse.Namespace, strategy: Any) -> dict[str, Any]:
    prompt = build_prompt(prompting(strategy), item.question, client.tier.capabilities)
    common = dict(question=item.question, max_tokens=args.max_tokens, samples=args.samples,
                  temperature=args.temperature, stop=prompt.stop)
    t0 = time.perf_counter()
    full = best_of_n(client, prompt.messages, round_tokens=args.max_tokens, reject_fraction=0.0, **common)
    t_full = time.perf_counter() - t0
    per_prompt = full.input_tokens // max(1, full.requests)
    recorded = [Recorded(list(c.logprobs), c.finish_reason, per_prompt) for c in full.candidates]
    replay = best_of_n(ReplayTier(client, recorded, full.prefill), prompt.messages,  # type: ignore[arg-type]
                       round_tokens=args.round_tokens, reject_fraction=args.reject_fraction, **common)
    t0 = time.perf_counter()
    live = best_of_n(client, prompt.messages, round_tokens=args.round_tokens,
                     reject_fraction=args.reject_fraction, **common)
    t_live = time.perf_counter() - t0
    row: dict[str, Any] = {"id": item.id}
    for name, r in (("full", full), ("replay", replay), ("live", live)):
        a = answer_of(r)
        row[name] = {"answer": a, "correct": check_answer(a, item), "out": r.output_tokens,
                     "total": r.input_tokens + r.output_tokens, "rounds": r.rounds,
                     "rejected": sum(len(x) for x in r.rejected_per_round)}
    row["full"]["seconds"], row["live"]["seconds"] = round(t_full, 2), round(t_live, 2)
    if args.repeat_full:
        again = best_of_n(client, prompt.messages, round_tokens=args.max_tokens, reject_fraction=0.0, **common)
        row["full2"] = {"answer": answer_of(again)}
    return row


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    n = len(rows)

    def mean(path: tuple[str, str]) -> float:
        return sum(float(r[path[0]][path[1]]) for r in rows) / n

    out: dict[str, Any] = {"items": n, "settings": {k: getattr(args, k) for k in (
        "suite", "seed", "limit", "samples", "max_tokens", "round_tokens", "reject_fraction", "temperature",
        "prompt")}}
    for name in ("full", "replay", "live"):
        out[name] = {"mean_out": mean((name, "out")), "mean_total": mean((name, "total")),
                     "accuracy": mean((name, "correct")), "mean_rejected": mean((name, "rejected"))}
    for name in ("full", "live"):
        out[name]["mean_seconds"] = mean((name, "seconds"))
    for name in ("replay", "live"):
        out[name]["out_ratio"] = out[name]["mean_out"] / out["full"]["mean_out"]
        out[name]["total_ratio"] = out[name]["mean_total"] / out["full"]["mean_total"]
        out[name]["same_answer"] = sum(r[name]["answer"] == r["full"]["answer"] for r in rows) / n
    if args.repeat_full:
        out["full_vs_full_same_answer"] = sum(r["full2"]["answer"] == r["full"]["answer"] for r in rows) / n
    return out


def table(s: dict[str, Any]) -> str:
    lines = [
        "| run | mean output tokens | ratio to full | mean total tokens (in + out) | ratio to full "
        "| same answer as full | accuracy | candidates dropped per item | mean seconds per item |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
        f"| full Best-of-N | {s['full']['mean_out']:.1f} | 1.00 | {s['full']['mean_total']:.1f} | 1.00 | — "
        f"| {s['full']['accuracy']:.3f} | 0 | {s['full']['mean_seconds']:.1f} |",
    ]
    for name, label in (("replay", "early rejection, same candidates"), ("live", "early rejection, live")):
        m = s[name]
        secs = f"{m['mean_seconds']:.1f}" if "mean_seconds" in m else "— (replayed)"
        lines.append(f"| {label} | {m['mean_out']:.1f} | {m['out_ratio']:.2f} | {m['mean_total']:.1f} | "
                     f"{m['total_ratio']:.2f} | {m['same_answer']:.3f} | {m['accuracy']:.3f} | "
                     f"{m['mean_rejected']:.2f} | {secs} |")
    if "full_vs_full_same_answer" in s:
        lines.append(f"\nTwo independent full Best-of-N runs chose the same answer on "
                     f"{s['full_vs_full_same_answer']:.3f} of the items (the sampling noise of the live row).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="builtin")
    p.add_argument("--seed", type=int, default=0, help="the suite's seed (its items)")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--samples", type=int, default=8, help="N candidates")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--round-tokens", type=int, default=16)
    p.add_argument("--reject-fraction", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--prompt", default="cot", choices=["direct", "cod", "cot", "concise-cot"])
    p.add_argument("--repeat-full", action="store_true", help="run full Best-of-N twice (its own noise)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--table-from", type=Path, help="print the table of a saved --json run instead of running")
    args = p.parse_args(argv)
    if args.table_from is not None:
        saved = json.loads(args.table_from.read_text(encoding="utf-8"))
        print(table(summarise(saved["rows"], argparse.Namespace(**saved["summary"]["settings"],
                                                               repeat_full="full2" in saved["rows"][0]))))
        return 0
    if not 0 < args.reject_fraction < 1:
        p.error("--reject-fraction must lie in (0, 1)")
    if args.samples < 2:
        p.error("--samples must be at least 2")
    cfg = load_config()
    strategy = StrategyConfig(kind="bon", samples=args.samples, sample_prompt=args.prompt,
                              max_tokens=args.max_tokens, round_tokens=args.round_tokens,
                              reject_fraction=args.reject_fraction, temperature=args.temperature)
    items = load_suite(args.suite, seed=args.seed, limit=args.limit)
    rows: list[dict[str, Any]] = []
    with embedded_lock():
        client = clients_for(cfg)["small"]
        start = time.perf_counter()
        for k, item in enumerate(items, 1):
            rows.append(run_item(client, item, args, strategy))
            print(f"[{k}/{len(items)}] {item.id} {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    s = summarise(rows, args)
    s["threads"] = cfg.embedded.n_threads
    if args.json:
        print(json.dumps({"summary": s, "rows": rows}, indent=2))
    else:
        print(table(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
