"""``effreason keys``: the virtual API keys of ``effreason serve``: create one (shown
once), list them with what each has spent and has left, revoke one.

Keys live in the budget ledger file (``budget.ledger_path``); each spends as the ledger's
user scope ``key:<id>``, so ``effreason budget show --user key:<id>`` details one."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.text import Text

from effreason_agents.cli.options import ConfigOpt, JsonOpt, load
from effreason_agents.cli.render import fail, money, out, print_json, table
from effreason_agents.core.money import format_usd, from_micro, to_micro_floor
from effreason_agents.errors import EffReasonError

__all__ = [
    "keys_app",
    "keys_create",
    "keys_list",
    "keys_revoke",
]

keys_app = typer.Typer(
    help="Virtual API keys of `effreason serve`: create (shown once), list with spend, revoke.",
    no_args_is_help=True,
)

_SHOWN_ONCE = "This key is shown only once and cannot be shown again: store it now."


def _limit_text(amount: Optional[Decimal], default: Optional[Decimal], section: str) -> str:
    if amount is not None:
        return money(amount)
    if default is not None:
        return f"{money(default)} (config [{section}])"
    return f"unlimited (config [{section}])"


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", "-n", help="Who or what the key is for (unique, at most 64 characters)."),
    budget_usd: Optional[str] = typer.Option(
        None, "--budget-usd", metavar="USD", help="Most the key may ever spend (default: config [budget.user])."
    ),
    thread_budget_usd: Optional[str] = typer.Option(
        None, "--thread-budget-usd", metavar="USD",
        help="Most one of its conversation threads may spend (default: config [budget.thread]).",
    ),
    rpm: Optional[int] = typer.Option(None, "--rpm", metavar="N", help="Requests per minute (default: unlimited)."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Create a virtual API key for `effreason serve` and print it once.

    Only a hash of the key is stored: copy it when it is printed, it cannot be shown again.
    """
    from effreason_agents.adapters.keys import KeyStore

    try:
        cfg = load(config)
        path = cfg.ledger_target()
        with KeyStore(path) as store:
            secret, key = store.create(name, budget_usd=budget_usd, thread_budget_usd=thread_budget_usd, rpm=rpm)
    except EffReasonError as exc:
        fail(exc)
    budget = None if budget_usd is None else from_micro(to_micro_floor(budget_usd))  # as the ledger stores it
    if json_out:
        print_json({
            "key": secret,
            **key.as_json(),
            "budget_usd": None if budget is None else format_usd(budget),
            "ledger": str(path),
            "note": _SHOWN_ONCE,
        })
        return
    out.print(f"created key [bold]{escape(key.name)}[/] (id {key.id})", highlight=False, emoji=False)
    out.print()
    out.print(f"  {secret}", markup=False, highlight=False, emoji=False, soft_wrap=True)
    out.print()
    out.print(f"[bold yellow]{_SHOWN_ONCE}[/]", highlight=False, emoji=False)
    user, thread = cfg.budget.user.max_cost_usd, cfg.budget.thread.max_cost_usd
    out.print(f"budget:     {_limit_text(budget, user, 'budget.user')}", highlight=False, markup=False, emoji=False)
    out.print(
        f"per thread: {_limit_text(key.thread_budget_usd, thread, 'budget.thread')}", highlight=False, markup=False
    )
    out.print(f"rpm:        {key.rpm if key.rpm is not None else 'unlimited'}", highlight=False, emoji=False)
    out.print(f"[dim]spends as: {key.scope} · ledger: {escape(str(path))}[/]", highlight=False, emoji=False)


def _effective(report: dict[str, Any], default: Optional[Decimal]) -> tuple[Optional[str], Optional[str], str]:
    """The key's dollar limit and what is left of it, and where the limit comes from: the
    ledger's limits row (``"key"``), else the config's ``[budget.user]`` (``"config"``, set
    in the ledger by the key's first model call), else none (``"none"``)."""
    limit = report["limits"]["cost_usd"]
    if limit is not None:
        return limit, report["remaining"]["cost_usd"], "key"
    if default is None:
        return None, None, "none"
    used = Decimal(report["spent"]["cost_usd"]) + Decimal(report["held"]["cost_usd"])
    return str(default), str(max(default - used, Decimal(0))), "config"


@keys_app.command("list")
def keys_list(
    all_keys: bool = typer.Option(False, "--all", "-a", help="Also list revoked keys."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """List the virtual keys with their limits and spend (never the keys themselves).

    budget is the key's dollar limit (* = from config [budget.user]); spent is settled, held is in flight, left is what remains. Revoked keys (with --all) show "revoked" as left.
    """
    from effreason_agents.adapters.keys import KeyStore
    from effreason_agents.adapters.ledger import BudgetLedger

    try:
        cfg = load(config)
        path = cfg.ledger_target()
        with KeyStore(path) as store, BudgetLedger(path) as ledger:
            keys = store.list(include_revoked=all_keys)
            reports = [ledger.show(key.scope) for key in keys]
    except EffReasonError as exc:
        fail(exc)
    default = cfg.budget.user.max_cost_usd
    rows = []
    for key, report in zip(keys, reports):
        limit, left, source = _effective(report, default)
        rows.append({
            **key.as_json(),
            "budget_usd": limit,
            "budget_source": source,
            "spent_usd": report["spent"]["cost_usd"],
            "held_usd": report["held"]["cost_usd"],
            "remaining_usd": left,
            "budget": report,
        })
    if json_out:
        print_json({"keys": rows, "ledger": str(path)})
        return
    if not rows:
        what = "keys" if all_keys else "active keys (--all also lists revoked ones)"
        out.print(f"no {what}; create one with `effreason keys create --name NAME`",
                  highlight=False, markup=False, emoji=False)
        out.print(f"[dim]ledger: {escape(str(path))}[/]", highlight=False, emoji=False)
        return
    t = table()
    t.add_column("name", overflow="fold", min_width=8)  # long names wrap; ids and amounts never do
    for col in ("id", "key", "rpm", "budget", "spent", "held", "left"):
        t.add_column(col, no_wrap=True, justify="left" if col in ("id", "key") else "right")
    for row in rows:
        budget = "-" if row["budget_usd"] is None else money(row["budget_usd"])
        if row["budget_source"] == "config":
            budget += "*"
        if row["status"] == "revoked":
            left = "revoked"
        else:
            left = "-" if row["remaining_usd"] is None else money(row["remaining_usd"])
        t.add_row(
            Text(row["name"]), row["id"], row["prefix"], "-" if row["rpm"] is None else str(row["rpm"]),
            budget, money(row["spent_usd"]), money(row["held_usd"]), left,
        )
    out.print(t)
    if any(row["budget_source"] == "config" for row in rows):
        out.print("* from config [budget.user]: set in the ledger by the key's first model call",
                  highlight=False, markup=False, emoji=False)
    out.print(f"[dim]ledger: {escape(str(path))}[/]", highlight=False, emoji=False)


@keys_app.command("revoke")
def keys_revoke(
    name_or_id: str = typer.Argument(..., metavar="NAME_OR_ID", help="The key's name or id (see `effreason keys list`)."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Revoke a virtual key: every later request with it is refused. What it spent stays in the ledger."""
    from effreason_agents.adapters.keys import KeyStore

    try:
        path = load(config).ledger_target()
        with KeyStore(path) as store:
            before = store.get(name_or_id)
            key = store.revoke(name_or_id)
    except EffReasonError as exc:
        fail(exc)
    already = before is not None and before.revoked
    if json_out:
        print_json({**key.as_json(), "already_revoked": already, "ledger": str(path)})
        return
    if already:
        out.print(f"key {escape(key.name)} (id {key.id}) was already revoked", highlight=False, emoji=False)
    else:
        out.print(f"revoked key {escape(key.name)} (id {key.id}); requests with it are now refused",
                  highlight=False, emoji=False, soft_wrap=True)
