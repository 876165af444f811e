"""``effreason bench`` and ``effreason report``: measure arms and the cost-aware graph on
graded items, or a routing policy on logged outcomes, and render the reports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

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
from effreason_agents.cli.render import err, fail, out, print_results, progress
from effreason_agents.config import Config
from effreason_agents.errors import EffReasonError

__all__ = ["bench", "report", "run_bench"]


def run_bench(bench_obj: Any, json_out: bool) -> dict[str, Any]:
    """Run a prepared :class:`~effreason_agents.evaluation.bench.Bench` with a progress bar,
    write its run file and report, and return the results (``_paths``: the files written)."""
    from effreason_agents.evaluation.bench import write_run_file
    from effreason_agents.evaluation.report import write_report

    write_run_file(bench_obj)
    with progress(json_out) as bar:
        task = bar.add_task("benchmark", total=None)

        def on_progress(done: int, total: int, res: Any) -> None:
            bar.update(task, completed=done, total=total, description=f"{res.arm:<14}")

        results = bench_obj.run(on_progress)
    results["meta"]["command"] = " ".join(["effreason", *sys.argv[1:]])
    paths = write_report(results, bench_obj.out_dir)
    results["_paths"] = {k: str(v) for k, v in paths.items()}
    return results


def bench(
    arm_args: Optional[list[str]] = typer.Argument(None, metavar="[ARM]...", help="More arms after --arms (tier:strategy)."),
    suite: Optional[str] = typer.Option(None, "--suite", help="A built-in suite: builtin, arithmetic, decimal, coin, letters, dates, word, choice."),
    data: Optional[Path] = typer.Option(None, "--data", help="Your items: GSM8K-style JSONL, multiple-choice JSONL/CSV, or generic JSONL."),
    replay: Optional[str] = typer.Option(None, "--replay", help="Offline: a RouteLLM-style wide CSV, or 'store' for the newest benchmark run in the outcome store."),
    weak: Optional[str] = typer.Option(None, "--weak", help="Replay: the weak model / arm."),
    strong: Optional[str] = typer.Option(None, "--strong", help="Replay: the strong model / arm."),
    arms: Optional[list[str]] = typer.Option(None, "--arms", help="Fixed arms to run, e.g. --arms small:direct small:cot."),
    graph: bool = typer.Option(False, "--graph", help="Also run the full cost-aware graph."),
    limit: Optional[int] = LimitOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the built-in generator."),
    concurrency: int = ConcurrencyOpt,
    out_dir: Path = typer.Option(Path("out/bench"), "--out", help="Directory for results.json, report.md and the plots."),
    force: bool = ForceOpt,
    on_error: str = OnErrorOpt,
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Measure arms and the graph on graded items, or a routing policy on logs (--replay).

    Live runs are resumable: rerun the same command and only unfinished items run. Without --arms/--graph, the usable escalation ladder and the graph are run.
    """
    from effreason_agents.evaluation.bench import Bench, resolve_arms

    try:
        cfg = load(config)
        if replay is not None:
            _replay(cfg, replay, weak, strong, out_dir, json_out)
            return
        if (suite is None) == (data is None):
            raise EffReasonError("give exactly one of --suite NAME, --data FILE or --replay FILE")
        items, name = load_items(suite, data, seed, limit, on_error)
        arm_names = list(arms or []) + list(arm_args or [])
        run_graph = graph or not arm_names
        if not arm_names and not graph:
            arm_names = [a.name for a in cfg.usable_ladder()]
        b = Bench(cfg, items, resolve_arms(cfg, arm_names), graph=run_graph, suite=name, out_dir=out_dir,
                  concurrency=concurrency, force=force)
        results = run_bench(b, json_out)
    except EffReasonError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: finished items are stored; run the same command again to resume")
        raise typer.Exit(130)
    print_results(results, json_out)


def _replay(cfg: Config, source: str, weak: Optional[str], strong: Optional[str], out_dir: Path, json_out: bool) -> None:
    from effreason_agents.evaluation.replay import load_store_table, load_wide_csv, replay
    from effreason_agents.evaluation.report import write_report

    table = load_store_table(cfg.store.target()) if source == "store" else load_wide_csv(Path(source))
    if not weak or not strong:
        raise EffReasonError(f"--replay needs --weak and --strong; models in {table.source}: {', '.join(table.arms)}")
    results = replay(table, weak, strong, config=cfg)
    results["meta"]["command"] = " ".join(["effreason", *sys.argv[1:]])
    paths = write_report(results, out_dir)
    results["_paths"] = {k: str(v) for k, v in paths.items()}
    print_results(results, json_out)


def report(out_dir: Path = typer.Argument(..., help="A benchmark directory holding results.json.")) -> None:
    """Re-render report.md and the plots of a benchmark directory from its results.json."""
    from effreason_agents.evaluation.report import render_report

    try:
        paths = render_report(out_dir)
    except (EffReasonError, ValueError, OSError) as exc:
        fail(exc)
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", highlight=False)
