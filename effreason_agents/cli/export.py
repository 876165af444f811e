"""``effreason export sft|dpo``: training data from the outcome log (graded benchmark attempts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from effreason_agents.cli.options import ConfigOpt, JsonOpt, load
from effreason_agents.cli.render import fail, out, print_json, table
from effreason_agents.errors import EffReasonError

__all__ = ["export"]


def export(
    kind: str = typer.Argument(..., help="sft (shortest correct trace per question) or dpo (preference pairs)."),
    data: str = typer.Option("store", "--data", help="The outcome store: 'store' (the configured one), a .sqlite path or a postgresql:// URL."),
    run: Optional[str] = typer.Option(None, "--run", help="Only this benchmark run (default: every run)."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Only the runs of this suite."),
    out_file: Path = typer.Option(..., "--out", help="The training split, JSONL; the evaluation split goes beside it with .eval before the suffix (sft.jsonl → sft.eval.jsonl)."),
    eval_share: float = typer.Option(0.2, "--eval-share", help="Share of questions held out for evaluation, in [0, 1); 0 writes no evaluation file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the question hash that decides the split."),
    system: str = typer.Option("strategy", "--system", help="sft: 'strategy' adds the system message the trace's strategy sent; 'none' leaves it out."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Export graded attempts from the outcome store as JSONL for TRL / OpenAI fine-tuning.

    sft: one line per question with "messages" (system when --system strategy, user = the question, assistant = the trace as the model wrote it). The trace is the SHORTEST CORRECT one (fewest output tokens; ties by arm name) among every logged attempt at that question: easy items teach a direct answer, hard ones a short chain.

    dpo: one line per question with "prompt" (the user turn), "chosen" and "rejected" (one assistant turn each): TRL's conversational preference format. Pairing rule: chosen = the shortest correct trace; rejected = the longest correct trace when it has more output tokens than chosen, otherwise the longest wrong trace. Questions with no correct trace, or nothing to reject, are skipped and counted.

    A hash of each question (and --seed) decides train vs evaluation, so no question is in both files. Both files are written atomically once every example is built; an error writes nothing.
    """
    from effreason_agents.training.export import KINDS, export_store

    try:
        if kind not in KINDS:
            raise EffReasonError(f"unknown export kind {kind!r}; use one of {', '.join(KINDS)}")
        if system not in ("strategy", "none"):
            raise EffReasonError(f"--system must be 'strategy' or 'none', got {system!r}")
        cfg = load(config)
        source = cfg.store.target() if data == "store" else data
        summary = export_store(kind, source, out_file, run_id=run, suite=suite, eval_share=eval_share, seed=seed,  # type: ignore[arg-type]
                               system=system, strategies=cfg.strategies)  # type: ignore[arg-type]
    except EffReasonError as exc:
        fail(exc)
    doc = summary.to_json()
    if json_out:
        print_json(doc)
        return
    _print_summary(doc)


def _print_summary(doc: dict[str, Any]) -> None:
    t = table(escape(f"effreason export {doc['kind']} · {doc['store']}"))
    t.add_column("")
    t.add_column("", justify="right")
    t.show_header = False
    t.add_row("runs", escape(", ".join(doc["runs"]) or "-"))
    t.add_row("questions", str(doc["questions"]))
    t.add_row("graded attempts used", str(doc["traces"]))
    for split, n in doc["written"].items():
        where = doc["files"].get(split)
        t.add_row(f"{split} examples", f"{n}" + (f"  → {escape(where)}" if where else ""))
    for reason, n in doc["skipped"].items():
        t.add_row(f"skipped: {escape(reason)}", str(n))
    for reason, n in doc["left_out_attempts"].items():
        t.add_row(f"attempts left out: {escape(reason)}", str(n))
    tokens = doc["mean_output_tokens"]
    t.add_row("mean output tokens, chosen", _num(tokens["chosen"]))
    t.add_row("mean output tokens, all correct", _num(tokens["all_correct"]))
    if "rejected" in tokens:
        t.add_row("mean output tokens, rejected", _num(tokens["rejected"]))
    out.print(t)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"
