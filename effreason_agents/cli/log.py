"""``effreason log``: read the outcome store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effreason_agents.cli.options import ConfigOpt, JsonOpt, load
from effreason_agents.cli.render import fail, out, print_json, requests_table
from effreason_agents.errors import EffReasonError

__all__ = ["log_app", "log_tail"]

log_app = typer.Typer(
    help="Read the outcome store: every request with its answer, status, tokens and cost.",
    no_args_is_help=True,
)


@log_app.command("tail")
def log_tail(
    n: int = typer.Option(10, "-n", "--limit", min=1, help="How many requests."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Show the most recent requests in the outcome store."""
    from effreason_agents.adapters.store import OutcomeStore

    try:
        cfg = load(config)
        path = cfg.store.target()
        if isinstance(path, Path) and not path.exists():
            fail(EffReasonError(f"no outcome store at {path} yet: run `effreason ask` first"), 1)
        with OutcomeStore(path, read_only=True) as store:
            rows = store.recent_requests(n)
            where = store.location
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    out.print(requests_table(rows, f"last {len(rows)} requests · {where}"))
