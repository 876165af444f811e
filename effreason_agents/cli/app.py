"""The ``effreason`` typer application: the root command and every command group.

Each command lives in its own module (``cli/ask.py``, ``cli/chat.py``, ``cli/bench.py``
…) and only calls the library's public functions; output helpers live in
``cli/render.py``.
"""

from __future__ import annotations

import typer

from effreason_agents.cli.ask import ask
from effreason_agents.cli.bench import bench, report
from effreason_agents.cli.budget import budget_app
from effreason_agents.cli.calibrate import calibrate
from effreason_agents.cli.chat import chat
from effreason_agents.cli.db import db_app
from effreason_agents.cli.demo import demo
from effreason_agents.cli.export import export
from effreason_agents.cli.keys import keys_app
from effreason_agents.cli.log import log_app
from effreason_agents.cli.router import router_app
from effreason_agents.cli.serve import serve, serve_local
from effreason_agents.cli.tune import tune

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        from effreason_agents import __version__

        print(f"effreason-agents {__version__}")
        raise typer.Exit()


app = typer.Typer(
    help="Cost-aware reasoning: answer each question with the cheapest arm (model tier, "
    "prompting strategy, token budget) that is confident enough, escalating to stronger "
    "tiers only when needed, within token and dollar budgets that are never overspent. "
    "Every attempt is logged with its tokens, cost and confidence.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Cost-aware reasoning for LangGraph and LangChain."""


app.command("ask")(ask)
app.command("chat")(chat)
app.command("demo")(demo)
app.command("bench")(bench)
app.command("report")(report)
app.command("calibrate")(calibrate)
app.command("export")(export)
app.command("serve")(serve)
app.command("serve-local")(serve_local)
app.command("tune")(tune)
app.add_typer(budget_app, name="budget")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(log_app, name="log")
app.add_typer(router_app, name="router")


def main() -> None:
    """Run the ``effreason`` command (the console-script entry point)."""
    app()
