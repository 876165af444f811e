"""Training data from the outcome log: supervised (SFT) examples and preference (DPO) pairs.

Every benchmark run leaves, per graded question, one or more attempts: the reply text each
arm produced (``attempts.raw_text``, a prefilled ``"The answer is"`` included: it is the
whole assistant message), its output tokens and its grade. That is the data the model-side
efficient-reasoning methods need:

* **SFT** (variable-length chain of thought): per question the *shortest correct* trace
  (fewest output tokens; ties: arm name, then the order recorded), so easy items teach a
  direct answer and hard ones a short chain. One line per question in the chat format of
  TRL's ``SFTTrainer`` and OpenAI fine-tuning::

      {"messages": [{"role": "system", "content": ...},   # optional, see ``system``
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": trace}]}

* **DPO**: one pair per question in TRL's conversational preference format::

      {"prompt": [{"role": "user", "content": question}],
       "chosen": [{"role": "assistant", "content": shortest correct trace}],
       "rejected": [{"role": "assistant", "content": ...}]}

  The pairing rule: *chosen* is the shortest correct trace (as for SFT); *rejected* is the
  longest correct trace when it has more output tokens than the chosen one (same answer,
  more words: the pair teaches brevity), otherwise the longest wrong trace (the pair teaches
  correctness). Ties by output tokens go to the arm name. A question with no correct trace,
  or with nothing to reject (every trace correct and equally long), is skipped and counted.
  The prompt has no system turn: chosen and rejected may come from different strategies.

Which attempts count: every attempt of every graded benchmark request (an escalated request
contributes its cheap wrong attempt too), graded against the item's gold answer with the
benchmark's own grader (:func:`~effreason_agents.evaluation.tasks.check_answer`). Attempts
that failed (an error, no text) and self-consistency attempts (many samples, no single
trace) are left out; a reply cut by its token cap is never *chosen* (it may be rejected).

Split: a question goes to evaluation when a SHA-256 hash of ``seed`` and its text (stripped)
falls below ``eval_share``; so the split is deterministic, stable as the log grows, and no
question is in both files. Training examples go to ``out``, evaluation ones to ``out`` with
``.eval`` before the suffix (``sft.jsonl`` → ``sft.eval.jsonl``). Both files are written
atomically, and only after every example is built: an error leaves no partial output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any, Literal

from effreason_agents.engine.runner import prompting
from effreason_agents.adapters.atomic import atomic_open
from effreason_agents.adapters.store import AttemptRecord, BenchResult, OutcomeStore
from effreason_agents.config import Capabilities, StrategyConfig, default_config_data
from effreason_agents.core.prompts import DIRECT_PREFIX, build_prompt
from effreason_agents.errors import EffReasonError, OutcomeDataError
from effreason_agents.evaluation.tasks import TaskItem, check_answer

__all__ = [
    "KINDS",
    "ExportKind",
    "ExportSummary",
    "SystemMode",
    "Trace",
    "collect_traces",
    "dpo_choice",
    "dpo_pair",
    "eval_path",
    "export_traces",
    "export_store",
    "in_eval_split",
    "shortest_correct",
    "sft_example",
    "system_prompt",
]

ExportKind = Literal["sft", "dpo"]
SystemMode = Literal["strategy", "none"]
KINDS: tuple[str, ...] = ("sft", "dpo")

NO_CORRECT = "no correct trace"
NOTHING_TO_REJECT = "nothing to reject (every trace correct and equally long)"


@dataclass(frozen=True)
class Trace:
    """One logged attempt at a graded question: the reply as the model wrote it and its grade."""

    question: str
    gold: str
    answer_type: str
    arm: str
    strategy: str
    text: str
    output_tokens: int
    correct: bool
    truncated: bool = False
    budget_tokens: int | None = None
    run_id: str = ""
    item_id: str = ""
    order: int = 0  # position in the log, the last tie-breaker


@dataclass
class ExportSummary:
    """What an export read and wrote."""

    kind: str
    store: str
    runs: list[str]
    questions: int
    traces: int
    written: dict[str, int]
    files: dict[str, str]
    skipped: dict[str, int] = field(default_factory=dict)
    mean_tokens_chosen: float | None = None
    mean_tokens_correct: float | None = None
    mean_tokens_rejected: float | None = None
    left_out_attempts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "store": self.store,
            "runs": self.runs,
            "questions": self.questions,
            "traces": self.traces,
            "written": self.written,
            "files": self.files,
            "skipped": self.skipped,
            "mean_output_tokens": {
                "chosen": self.mean_tokens_chosen,
                "all_correct": self.mean_tokens_correct,
                **({"rejected": self.mean_tokens_rejected} if self.kind == "dpo" else {}),
            },
            "left_out_attempts": self.left_out_attempts,
        }


# -- reading the log ---------------------------------------------------------------------


def _grader(result: BenchResult) -> TaskItem | None:
    try:
        return TaskItem(
            id=result.item_id or "item", question=result.question, answer=result.gold,
            type=result.answer_type,  # type: ignore[arg-type]
            difficulty=result.difficulty if result.difficulty in ("easy", "medium", "hard") else "medium",  # type: ignore[arg-type]
            category="export",
        )
    except ValueError:
        return None


def collect_traces(
    store: OutcomeStore, results: Iterable[BenchResult], left_out: dict[str, int] | None = None
) -> list[Trace]:
    """Every usable attempt behind ``results`` as a graded :class:`Trace`, in log order.

    Attempts are graded against their result's gold answer with the benchmark's grader;
    ``left_out`` (if given) counts the attempts not used, by reason."""
    skipped: dict[str, int] = {} if left_out is None else left_out

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    traces: list[Trace] = []
    for result in results:
        if not result.request_id:
            skip("result without a logged request")
            continue
        item = _grader(result)
        if item is None:
            skip("gold answer unreadable for its answer type")
            continue
        attempts: Sequence[AttemptRecord] = store.attempts_for(result.request_id)
        if not attempts:
            skip("result without logged attempts")
        for a in attempts:
            if a.error or not a.raw_text.strip():
                skip("failed attempt (error or empty reply)")
                continue
            if a.samples is not None:
                skip("self-consistency attempt (many samples, no single trace)")
                continue
            traces.append(
                Trace(
                    question=result.question, gold=result.gold, answer_type=result.answer_type, arm=a.arm,
                    strategy=a.strategy, text=a.raw_text, output_tokens=a.output_tokens,
                    correct=check_answer(a.answer, item), truncated=a.truncated, budget_tokens=a.budget_tokens,
                    run_id=result.run_id, item_id=result.item_id, order=len(traces),
                )
            )
    return traces


# -- selection ---------------------------------------------------------------------------


def _short_key(t: Trace) -> tuple[int, str, int]:
    return (t.output_tokens, t.arm, t.order)


def _long_key(t: Trace) -> tuple[int, str, int]:
    # longest first; ties by arm name (ascending), then log order
    return (-t.output_tokens, t.arm, t.order)


def shortest_correct(traces: Sequence[Trace]) -> Trace | None:
    """The correct, complete (not cut by its token cap) trace with the fewest output tokens;
    ties by arm name, then log order. ``None`` when there is none."""
    ok = [t for t in traces if t.correct and not t.truncated]
    return min(ok, key=_short_key) if ok else None


def dpo_choice(traces: Sequence[Trace]) -> tuple[Trace | None, Trace | None, str | None]:
    """(chosen, rejected, reason skipped) for one question's traces, by the module's pairing rule."""
    chosen = shortest_correct(traces)
    if chosen is None:
        return None, None, NO_CORRECT
    correct = [t for t in traces if t.correct and t.output_tokens > chosen.output_tokens]
    if correct:
        return chosen, min(correct, key=_long_key), None
    wrong = [t for t in traces if not t.correct]
    if wrong:
        return chosen, min(wrong, key=_long_key), None
    return chosen, None, NOTHING_TO_REJECT


# -- formats -----------------------------------------------------------------------------


def _builtin_strategies() -> dict[str, StrategyConfig]:
    """The built-in configuration's strategies by name (one that does not validate is left out)."""
    table: dict[str, StrategyConfig] = {}
    for name, data in default_config_data({})["strategies"].items():
        try:
            table[name] = StrategyConfig.model_validate(data)
        except ValueError:
            continue
    return table


def system_prompt(trace: Trace, strategies: Mapping[str, StrategyConfig] | None = None) -> str | None:
    """The system message the trace's strategy sends (``None``: unknown strategy, or one
    without a system message). ``strategies`` maps names to configs (default: the built-in
    ones); a name that is a strategy kind (``cot``) is understood too. A ``direct`` trace that
    starts with the primed ``"The answer is"`` gets the primed variant's instruction."""
    table = _builtin_strategies() if strategies is None else strategies
    strategy = table.get(trace.strategy)
    if strategy is None:
        try:
            strategy = StrategyConfig(kind=trace.strategy, max_tokens=256)  # type: ignore[arg-type]
        except ValueError:
            return None
    strategy = prompting(strategy)  # sc and bon prompt each sample as their sample_prompt
    caps = Capabilities(assistant_prefill=trace.text.startswith(DIRECT_PREFIX))
    try:
        prompt = build_prompt(strategy.model_copy(update={"few_shot": False}), trace.question, caps,
                              answer_type=trace.answer_type, budget_tokens=trace.budget_tokens)
    except ValueError:
        return None
    first = prompt.messages[0] if prompt.messages else None
    if first is not None and first.type == "system":
        return str(first.content)
    return None


def sft_example(
    trace: Trace, *, system: SystemMode = "strategy", strategies: Mapping[str, StrategyConfig] | None = None
) -> dict[str, Any]:
    """One SFT line: ``{"messages": [system?, user, assistant]}``. ``system="strategy"`` adds
    the system message the trace's strategy sent (when it has one); ``"none"`` leaves it out."""
    messages: list[dict[str, str]] = []
    if system == "strategy":
        text = system_prompt(trace, strategies)
        if text:
            messages.append({"role": "system", "content": text})
    messages += [{"role": "user", "content": trace.question}, {"role": "assistant", "content": trace.text}]
    return {"messages": messages}


def dpo_pair(chosen: Trace, rejected: Trace) -> dict[str, Any]:
    """One DPO line in TRL's conversational preference format (prompt / chosen / rejected)."""
    return {
        "prompt": [{"role": "user", "content": chosen.question}],
        "chosen": [{"role": "assistant", "content": chosen.text}],
        "rejected": [{"role": "assistant", "content": rejected.text}],
    }


def in_eval_split(question: str, eval_share: float, seed: int = 0) -> bool:
    """Whether ``question`` belongs to the evaluation split: SHA-256 of ``seed`` and the
    stripped text, read as a fraction in [0, 1), below ``eval_share``."""
    digest = hashlib.sha256(f"{seed}\x00{question.strip()}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_share


def eval_path(out: str | Path) -> Path:
    """Where the evaluation split of ``out`` goes: ``.eval`` before the suffix
    (``data/sft.jsonl`` → ``data/sft.eval.jsonl``; no suffix: ``data/sft.eval``)."""
    p = Path(out)
    return p.with_name(f"{p.stem}.eval{p.suffix}") if p.suffix else p.with_name(f"{p.name}.eval")


# -- the export --------------------------------------------------------------------------


def _group(traces: Iterable[Trace]) -> dict[str, list[Trace]]:
    by_question: dict[str, list[Trace]] = {}
    for t in traces:
        by_question.setdefault(t.question.strip(), []).append(t)
    return by_question


def export_traces(
    kind: ExportKind,
    traces: Sequence[Trace],
    out: str | Path,
    *,
    eval_share: float = 0.2,
    seed: int = 0,
    system: SystemMode = "strategy",
    strategies: Mapping[str, StrategyConfig] | None = None,
    store: str = "",
    runs: Sequence[str] = (),
    left_out: Mapping[str, int] | None = None,
) -> ExportSummary:
    """Write ``traces`` as ``kind`` (``"sft"`` or ``"dpo"``) JSONL to ``out`` (training split)
    and :func:`eval_path` (evaluation split, when ``eval_share > 0``), both atomically.

    Raises :class:`~effreason_agents.errors.OutcomeDataError` (nothing written) for an
    unknown kind, an ``eval_share`` outside [0, 1), no traces, or no example to write."""
    if kind not in KINDS:
        raise OutcomeDataError(f"unknown export kind {kind!r}; use one of {', '.join(KINDS)}")
    if not 0.0 <= eval_share < 1.0:
        raise OutcomeDataError(f"--eval-share must be in [0, 1), got {eval_share}")
    if system not in ("strategy", "none"):
        raise OutcomeDataError(f"unknown system mode {system!r}; use 'strategy' or 'none'")
    out_path = Path(out)
    if out_path.is_dir():
        raise OutcomeDataError(f"--out {out_path} is a directory; give a file name such as {out_path / (kind + '.jsonl')}")
    where = store or "the given traces"
    if not traces:
        raise OutcomeDataError(f"{where}: no graded attempts to export; run `effreason bench` first")
    groups = _group(traces)
    if strategies is None and kind == "sft" and system == "strategy":
        strategies = _builtin_strategies()
    lines: dict[str, list[str]] = {"train": [], "eval": []}
    skipped: dict[str, int] = {}
    chosen_tokens: list[int] = []
    rejected_tokens: list[int] = []
    for question, group in groups.items():
        if kind == "sft":
            best = shortest_correct(group)
            if best is None:
                skipped[NO_CORRECT] = skipped.get(NO_CORRECT, 0) + 1
                continue
            row = sft_example(best, system=system, strategies=strategies)
            chosen_tokens.append(best.output_tokens)
        else:
            chosen, rejected, reason = dpo_choice(group)
            if reason is not None or chosen is None or rejected is None:
                key = reason or NO_CORRECT
                skipped[key] = skipped.get(key, 0) + 1
                continue
            row = dpo_pair(chosen, rejected)
            chosen_tokens.append(chosen.output_tokens)
            rejected_tokens.append(rejected.output_tokens)
        split = "eval" if eval_share > 0 and in_eval_split(question, eval_share, seed) else "train"
        lines[split].append(json.dumps(row, ensure_ascii=False))
    written = {split: len(rows) for split, rows in lines.items()}
    if not sum(written.values()):
        reasons = ", ".join(f"{n} {r}" for r, n in skipped.items())
        raise OutcomeDataError(f"{where}: none of the {len(groups)} questions gives a {kind} example ({reasons}); nothing written")
    files = {"train": str(out_path)}
    if eval_share > 0:
        files["eval"] = str(eval_path(out_path))
    with ExitStack() as stack:
        handles = {split: stack.enter_context(atomic_open(path)) for split, path in files.items()}
        for split, fh in handles.items():
            for line in lines[split]:
                fh.write(line + "\n")
    correct_tokens = [t.output_tokens for t in traces if t.correct and not t.truncated]
    return ExportSummary(
        kind=kind, store=where, runs=list(runs), questions=len(groups), traces=len(traces), written=written,
        files=files, skipped=skipped,
        mean_tokens_chosen=round(fmean(chosen_tokens), 2) if chosen_tokens else None,
        mean_tokens_correct=round(fmean(correct_tokens), 2) if correct_tokens else None,
        mean_tokens_rejected=round(fmean(rejected_tokens), 2) if rejected_tokens else None,
        left_out_attempts=dict(left_out or {}),
    )


def _store_target(data: str | Path) -> Path | str:
    if str(data) == "store":
        from effreason_agents.config import load_config

        try:
            return load_config().store.target()
        except EffReasonError as exc:
            raise OutcomeDataError(f"cannot find the configured outcome store: {exc}") from None
    return data if str(data).startswith(("postgresql://", "postgres://")) else Path(data)


def export_store(
    kind: ExportKind,
    data: str | Path,
    out: str | Path,
    *,
    run_id: str | None = None,
    suite: str | None = None,
    eval_share: float = 0.2,
    seed: int = 0,
    system: SystemMode = "strategy",
    strategies: Mapping[str, StrategyConfig] | None = None,
) -> ExportSummary:
    """Export the graded benchmark attempts of the outcome store ``data`` (``"store"``: the
    configured one; a SQLite path; a ``postgresql://`` URL), optionally of one run
    (``run_id``) or of the runs of one suite (``suite``), as :func:`export_traces` does.

    An unknown run or suite, a missing store or one without graded results raises
    :class:`~effreason_agents.errors.OutcomeDataError` naming the store and listing the
    runs available; nothing is written."""
    if kind not in KINDS:
        raise OutcomeDataError(f"unknown export kind {kind!r}; use one of {', '.join(KINDS)}")
    target = _store_target(data)
    if isinstance(target, Path) and not target.exists():
        raise OutcomeDataError(f"no outcome store at {target}; run `effreason bench` first or pass --data PATH.sqlite")
    with OutcomeStore(target, read_only=True) as store:
        where = str(store.location)
        runs = store.bench_runs()
        listing = ", ".join(f"{r.run_id} (suite {r.suite})" for r in runs) or "none"
        chosen_runs = runs
        if run_id is not None:
            chosen_runs = [r for r in runs if r.run_id == run_id]
            if not chosen_runs:
                raise OutcomeDataError(f"{where}: no benchmark run {run_id!r}; runs available: {listing}")
        if suite is not None:
            chosen_runs = [r for r in chosen_runs if r.suite == suite]
            if not chosen_runs:
                raise OutcomeDataError(
                    f"{where}: no benchmark run of suite {suite!r}"
                    + (f" with id {run_id!r}" if run_id else "") + f"; runs available: {listing}"
                )
        results: list[BenchResult] = []
        if run_id is None and suite is None:
            results = store.bench_results()
        else:
            for r in chosen_runs:
                results += store.bench_results(r.run_id)
        scope = (f" run {run_id!r}" if run_id else "") + (f" suite {suite!r}" if suite else "")
        if not results:
            raise OutcomeDataError(
                f"{where}{(':' + scope) if scope else ''}: no graded outcomes; run `effreason bench` "
                f"first (runs available: {listing}); nothing written"
            )
        left_out: dict[str, int] = {}
        traces = collect_traces(store, results, left_out)
    if not traces:
        reasons = ", ".join(f"{n} {r}" for r, n in left_out.items()) or "none"
        raise OutcomeDataError(
            f"{where}{(':' + scope) if scope else ''}: {len(results)} graded results but no usable attempt "
            f"({reasons}); nothing written"
        )
    return export_traces(kind, traces, out, eval_share=eval_share, seed=seed, system=system, strategies=strategies,
                  store=where, runs=[r.run_id for r in chosen_runs] if (run_id or suite) else [r.run_id for r in runs],
                  left_out=left_out)
