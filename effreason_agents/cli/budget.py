"""``effreason budget``: what a request, conversation thread or user may spend and has
spent in the budget ledger, releasing holds a crashed process left behind, and fitting
the budget-cot token estimator on logged outcomes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from effreason_agents.cli.options import ConfigOpt, JsonOpt, load
from effreason_agents.cli.render import fail, money, out, print_json, table
from effreason_agents.core.records import Scope
from effreason_agents.errors import EffReasonError

__all__ = [
    "budget_app",
    "budget_fit",
    "budget_release_stale",
    "budget_show",
    "holds_line",
    "nothing_recorded",
    "scope_table",
]

budget_app = typer.Typer(
    help="Token and dollar budgets per request, thread and user: show what is left, "
    "release stale holds, fit the budget-cot token estimator.",
    no_args_is_help=True,
)

# The quantities of BudgetLedger.show, in the order shown, with their labels.
_QUANTITIES = (("output_tokens", "output tokens"), ("total_tokens", "total tokens"), ("cost_usd", "dollars"))


def _scope(thread: Optional[str], user: Optional[str], request: Optional[str]) -> Scope:
    given = [(kind, key) for kind, key in (("thread", thread), ("user", user), ("request", request)) if key is not None]
    if len(given) != 1:
        raise typer.BadParameter(
            "give exactly one of --thread ID, --user ID or --request ID",
            param_hint="'--thread' / '--user' / '--request'",
        )
    kind, key = given[0]
    try:
        return Scope(kind, key)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'--{kind}'") from None


def _cell(key: str, value: Any, unlimited: bool) -> str:
    if value is None:
        return "unlimited" if unlimited else "-"
    return money(value) if key == "cost_usd" else f"{value:,}"


def nothing_recorded(report: dict[str, Any]) -> bool:
    """Whether a :meth:`BudgetLedger.show` report is of a scope with no limits, no spend and
    no holds (a scope the ledger has never seen reads like that)."""
    if any(v is not None for v in report["limits"].values()):
        return False
    if any(Decimal(str(v)) != 0 for part in ("spent", "held") for v in report[part].values()):
        return False
    return not report["holds"]


def scope_table(report: dict[str, Any]) -> Table:
    """A :meth:`BudgetLedger.show` report as a table: one row per quantity (output tokens,
    total tokens, dollars) with its limit, spent, held and remaining."""
    t = table()
    t.add_column("", justify="left", no_wrap=True)
    for col in ("limit", "spent", "held", "remaining"):
        t.add_column(col, justify="right", no_wrap=True)
    for key, label in _QUANTITIES:
        t.add_row(label, *(_cell(key, report[part][key], unlimited=part in ("limits", "remaining"))
                           for part in ("limits", "spent", "held", "remaining")))
    return t


def holds_line(report: dict[str, Any]) -> str:
    """How many holds are open, and how many of them are past their deadline."""
    holds, expired = int(report["holds"]), int(report.get("expired_holds") or 0)
    line = f"{holds} open hold{'' if holds == 1 else 's'}"
    if expired:
        line += (f", {expired} past the deadline (released by the next model call, "
                 "or now by `effreason budget release-stale`)")
    return line


@budget_app.command("show")
def budget_show(
    thread: Optional[str] = typer.Option(None, "--thread", "-t", help="A conversation thread's id."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="A user's or API key's id."),
    request: Optional[str] = typer.Option(None, "--request", "-r", help="A request's id."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Show a scope's limits, what it has spent and holds, and what is left.

    Give exactly one of --thread, --user or --request. Tokens and dollars are shown for each; holds are the worst cases of model calls still in flight.
    """
    from effreason_agents.adapters.ledger import BudgetLedger

    scope = _scope(thread, user, request)
    try:
        path = load(config).ledger_target()
        with BudgetLedger(path) as ledger:
            report = ledger.show(scope)
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        print_json({**report, "ledger": str(path)})
        return
    if nothing_recorded(report):
        out.print(f"{scope.kind} {escape(scope.key)} has no limits and nothing spent or held.", highlight=False)
    else:
        out.print(f"[bold]{scope.kind} {escape(scope.key)}[/]", highlight=False)
        out.print(scope_table(report))
        out.print(holds_line(report), highlight=False, markup=False)
    out.print(f"[dim]ledger: {escape(str(path))}[/]", highlight=False)


@budget_app.command("release-stale")
def budget_release_stale(
    older_than: Optional[float] = typer.Option(
        None, "--older-than", min=0, metavar="SECONDS",
        help="Release holds open longer than this (default: holds past their deadline).",
    ),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Release holds left open by a crashed process, freeing the budget they reserved.

    By default only holds whose deadline has passed are released; with --older-than, every hold open longer than that many seconds.
    """
    from effreason_agents.adapters.ledger import BudgetLedger

    try:
        path = load(config).ledger_target()
        with BudgetLedger(path) as ledger:
            released = ledger.release_stale(older_than)
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        print_json({"released": released, "older_than_s": older_than, "ledger": str(path)})
        return
    if older_than is not None:
        what = f"open longer than {older_than:g} s"
    else:
        what = "past its deadline" if released == 1 else "past their deadline"
    out.print(f"released {released} hold{'' if released == 1 else 's'} {what}", highlight=False)
    out.print(f"[dim]ledger: {escape(str(path))}[/]", highlight=False)


@budget_app.command("fit")
def budget_fit(
    out_file: Path = typer.Option(..., "--out", help="Where to write the fitted regressor (JSON)."),
    run: Optional[str] = typer.Option(None, "--run", help="Only this benchmark run (default: every run)."),
    arm: Optional[str] = typer.Option(None, "--arm", help="Only this arm's answers, e.g. small:cot."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Fit the budget-cot token estimator on graded results in the outcome store.

    It learns the output tokens of correct answers from question features; use it with budget.estimator = "regressor".
    """
    from effreason_agents.engine.estimator import BudgetRegressor, rows_from_store

    try:
        cfg = load(config)
        rows = rows_from_store(cfg.store.target(), run_id=run, arm=arm)
        model = BudgetRegressor().fit(rows)
        path = model.save(out_file)
    except EffReasonError as exc:
        fail(exc)
    summary = {"path": str(path), "rows": len(rows), "correct_rows_used": model.n_rows}
    if json_out:
        print_json(summary)
        return
    out.print(f"fitted on {model.n_rows} correct answers (of {len(rows)} graded rows) → {path}", highlight=False)
    out.print(escape(f'use it: [budget] estimator = "regressor", regressor_path = "{path}"'), highlight=False)
