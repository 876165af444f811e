"""Options shared by several ``effreason`` commands, and loading their inputs (the
configuration, graded items)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from effreason_agents.cli.render import err
from effreason_agents.config import Config, load_config
from effreason_agents.errors import EffReasonError

__all__ = [
    "ConcurrencyOpt",
    "ConfigOpt",
    "ForceOpt",
    "JsonOpt",
    "LimitOpt",
    "OnErrorOpt",
    "load",
    "load_items",
    "share_target",
]

ConfigOpt = typer.Option(
    None, "--config", "-c", help="TOML config file (default: $EFFREASON_CONFIG, then ./effreason.toml)."
)
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")
LimitOpt = typer.Option(None, "--limit", min=1, help="Only the first N items.")
ConcurrencyOpt = typer.Option(2, "--concurrency", "-j", min=1, help="Items in flight at once.")
ForceOpt = typer.Option(False, "--force", help="Continue a run in --out even though the config changed.")
OnErrorOpt = typer.Option("skip", "--on-error", help="Malformed dataset lines: skip (reported) or refuse.")


def load(config: Optional[Path]) -> Config:
    """The configuration from ``--config``, else ``$EFFREASON_CONFIG``, else ``./effreason.toml``,
    else the defaults."""
    return load_config(config)


def load_items(
    suite: Optional[str], data: Optional[Path], seed: int, limit: Optional[int], on_error: str
) -> tuple[list[Any], str]:
    """Graded items from a built-in suite or a dataset file, and the run's name for them.

    Malformed dataset lines are reported on stderr and skipped (``on_error="skip"``) or
    refused (``"refuse"``)."""
    from effreason_agents.evaluation.tasks import load_dataset, load_suite

    if on_error not in ("skip", "refuse"):
        raise EffReasonError("--on-error must be 'skip' or 'refuse'")
    if suite is not None:
        return load_suite(suite, seed=seed, limit=limit), suite
    if data is None:
        raise EffReasonError("give --suite NAME or --data FILE")
    items = load_dataset(data, on_error=on_error, warn=lambda m: err.print(f"[yellow]warning:[/] {escape(m)}"))  # type: ignore[arg-type]
    return (items[:limit] if limit else items), data.name


def share_target(max_share: Optional[str]) -> Optional[tuple[str, float]]:
    """``--max-share TIER=SHARE`` as ``(tier, share)``; ``None`` when not given."""
    if max_share is None:
        return None
    tier, sep, value = max_share.partition("=")
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not sep or not tier or not 0.0 <= share <= 1.0:
        raise EffReasonError(f"--max-share must look like TIER=SHARE with SHARE in [0, 1], e.g. large=0.2; got {max_share!r}")
    return tier, share
