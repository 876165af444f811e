"""``effreason demo``: the cost-aware graph against the fixed arms it chooses between,
on a slice of the built-in suite, with the configuration it runs under."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from effreason_agents.cli.bench import run_bench
from effreason_agents.cli.options import ConfigOpt, JsonOpt, load
from effreason_agents.cli.render import err, fail, out, print_results
from effreason_agents.config import DEFAULT_CONFIDENCE_THRESHOLD, Config
from effreason_agents.errors import EffReasonError

__all__ = ["demo", "describe_tiers", "threshold_text"]


def threshold_text(cfg: Config) -> str:
    """The escalation threshold as configured: a number, or each calibrator's own (else the default)."""
    t = cfg.escalation.confidence_threshold
    if t is not None:
        return str(t)
    return f"each calibrated arm's fitted threshold ({DEFAULT_CONFIDENCE_THRESHOLD} for heuristic arms)"


def describe_tiers(cfg: Config) -> None:
    """One line per configured tier: its model, engine, address and whether it is enabled."""
    enabled = cfg.enabled_tiers()
    for name, tier in cfg.tiers.items():
        state = "enabled" if name in enabled else "disabled (set OPENAI_API_KEY to enable)" if tier.api_key_env else "disabled"
        where = "embedded llama.cpp server on 127.0.0.1" if tier.engine == "embedded" else tier.base_url
        out.print(f"  tier [cyan]{name}[/]: {escape(tier.model)} via {tier.engine} ({where}) — {state}", highlight=False)


def demo(
    limit: int = typer.Option(30, "--limit", min=1, help="Items of the built-in suite."),
    out_dir: Path = typer.Option(Path("out/demo"), "--out", help="Where the report goes."),
    concurrency: int = typer.Option(2, "--concurrency", "-j", min=1, help="Items in flight at once."),
    config: Optional[Path] = ConfigOpt,
    json_out: bool = JsonOpt,
) -> None:
    """See it work: the graph against each fixed arm it chooses between, on the built-in suite.

    Prints accuracy, output tokens, cost and latency side by side, and writes a report.
    """
    from effreason_agents.evaluation.bench import Bench
    from effreason_agents.evaluation.tasks import load_suite

    try:
        cfg = load(config)
        ladder = cfg.usable_ladder()
        if not json_out:
            out.print(f"[bold]effreason demo[/] · config: {escape(cfg.source)} · outcome store: {cfg.store.resolved_path()}", highlight=False)
            describe_tiers(cfg)
            out.print(f"  ladder: {' → '.join(a.name for a in ladder)}; the graph starts by difficulty and escalates "
                      f"while confidence < {threshold_text(cfg)}", highlight=False)
            out.print(f"  running the built-in suite ({limit} items) through each ladder arm and the graph…", highlight=False)
        b = Bench(cfg, load_suite("builtin", limit=limit), list(ladder), graph=True, suite=f"builtin[:{limit}]",
                  out_dir=out_dir, concurrency=concurrency, fresh=True)
        results = run_bench(b, json_out)
    except EffReasonError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: finished items are stored in the outcome store")
        raise typer.Exit(130)
    print_results(results, json_out)
