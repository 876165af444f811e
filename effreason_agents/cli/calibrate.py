"""``effreason calibrate``: fit calibrated confidence (P(correct)) for a tier's arms on graded
items, and choose the escalation threshold of the cascade."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effreason_agents.cli.options import (
    ConcurrencyOpt,
    ConfigOpt,
    ForceOpt,
    JsonOpt,
    LimitOpt,
    OnErrorOpt,
    load,
    load_items,
)
from effreason_agents.cli.render import err, fail, out, print_json, progress
from effreason_agents.errors import EffReasonError

__all__ = ["calibrate"]


def calibrate(
    suite: Optional[str] = typer.Option(None, "--suite", help="A built-in suite (e.g. builtin) to calibrate on."),
    data: Optional[Path] = typer.Option(None, "--data", help="Or your graded items: GSM8K-style JSONL, multiple-choice JSONL/CSV, generic JSONL."),
    tier: str = typer.Option("small", "--tier", help="The tier whose confidence is calibrated."),
    strategies: Optional[list[str]] = typer.Option(None, "--strategy", help="Strategies to calibrate (repeatable); default: the tier's strategies on the ladder."),
    strong: Optional[str] = typer.Option(None, "--strong", help="The arm the cascade escalates to; default: the top of the ladder on another tier (else the top arm)."),
    max_escalation_rate: Optional[float] = typer.Option(None, "--max-escalation-rate", help="Target: escalate at most this share of queries."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Target: the cheapest threshold reaching this accuracy."),
    holdout: float = typer.Option(0.3, "--holdout", help="Share of items held out for scoring (split by item)."),
    limit: Optional[int] = LimitOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the built-in generator and of the split."),
    concurrency: int = ConcurrencyOpt,
    out_dir: Path = typer.Option(Path("out/calibrate"), "--out", help="Directory for the artifacts and the report."),
    force: bool = ForceOpt,
    on_error: str = OnErrorOpt,
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Fit calibrated confidence for a tier and pick the threshold at which it escalates.

    Runs the tier's arms on graded items, fits P(correct) from the uncertainty signals, and prints AUROC/ECE per signal and combined on held-out items, with the threshold trade-off curve (escalation rate, accuracy, cost) of the cascade.

    The artifacts go to OUT/calibrators/; to use them, set the escalation.calibrators setting to that directory. Without a target the most accurate threshold is picked (the cheapest on ties). Runs resume like `effreason bench`.
    """
    from router_training.calibration_run import CalibrationPlan, render_markdown
    from router_training.calibration_run import calibrate as run_calibration

    try:
        cfg = load(config)
        if (suite is None) == (data is None):
            raise EffReasonError("give exactly one of --suite NAME or --data FILE")
        if max_escalation_rate is not None and min_accuracy is not None:
            raise EffReasonError("give at most one target: --max-escalation-rate or --min-accuracy")
        items, name = load_items(suite, data, seed, limit, on_error)
        plan = CalibrationPlan(cfg, items, tier, list(strategies or []), strong, out_dir, suite=name, holdout=holdout,
                               seed=seed, max_escalation_rate=max_escalation_rate, min_accuracy=min_accuracy,
                               concurrency=concurrency, force=force)
        with progress(json_out) as bar:
            task = bar.add_task("calibration runs", total=None)
            report_ = run_calibration(
                plan, lambda done, total, res: bar.update(task, completed=done, total=total, description=f"{res.arm:<14}"))
    except EffReasonError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: finished items are stored; run the same command again to resume")
        raise typer.Exit(130)
    if json_out:
        print_json(report_)
        return
    from rich.markdown import Markdown

    out.print(Markdown(render_markdown(report_)))
    out.print(f"report: {out_dir / 'calibration.md'}", highlight=False)
