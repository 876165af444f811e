"""``effreason db``: the databases behind the budget ledger (with the virtual keys) and the
outcome store — their schema migrations, and moving a single machine's SQLite files to the
PostgreSQL server that several processes and replicas share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from effreason_agents.cli.options import ConfigOpt, JsonOpt, load
from effreason_agents.cli.render import fail, out, print_json, table
from effreason_agents.errors import EffReasonError

__all__ = ["db_app", "db_copy", "db_migrate", "db_status"]

db_app = typer.Typer(
    help="The ledger and outcome-store databases: migrate, show their schema, copy SQLite to PostgreSQL.",
    no_args_is_help=True,
)


def _targets(cfg: Any) -> dict[str, Any]:
    return {"ledger": cfg.ledger_target(), "store": cfg.store.target()}


def _status(component: str, target: Any, migrate: bool) -> dict[str, Any]:
    from effreason_agents.adapters.copy import COMPONENTS

    cls = COMPONENTS[component]
    applied_now = cls.migrate(target) if migrate else []
    status = cls.migration_status(target)
    return {"component": component, "dialect": status.dialect, "location": status.location,
            "applied": status.applied, "pending": status.pending, "unknown": status.unknown,
            "applied_now": applied_now}


@db_app.command("status")
def db_status(json_out: bool = JsonOpt, config: Optional[Path] = ConfigOpt) -> None:
    """Where the ledger and the outcome store live, and which schema migrations each has and lacks (changes nothing)."""
    _report(config, json_out, migrate=False)


@db_app.command("migrate")
def db_migrate(json_out: bool = JsonOpt, config: Optional[Path] = ConfigOpt) -> None:
    """Create or upgrade the ledger's and the outcome store's schemas (safe while other processes run)."""
    _report(config, json_out, migrate=True)


def _report(config: Optional[Path], json_out: bool, *, migrate: bool) -> None:
    try:
        cfg = load(config)
        rows = [_status(c, t, migrate) for c, t in _targets(cfg).items()]
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        print_json({"databases": rows})
        return
    t = table("databases")
    for col in ("part", "backend", "where", "migrations"):
        t.add_column(col, overflow="fold")
    for r in rows:
        state = f"{len(r['applied'])} applied" + (f", {len(r['applied_now'])} just now" if r["applied_now"] else "")
        if r["pending"]:
            state += f", [yellow]{len(r['pending'])} pending[/] (run `effreason db migrate`)"
        if r["unknown"]:
            state += f", [red]{len(r['unknown'])} from a newer version[/]"
        t.add_row(r["component"], r["dialect"], escape(r["location"]), state)
    out.print(t)


def _source(value: str) -> dict[str, Path]:
    """``sqlite:PATH``: a directory holding ``ledger.sqlite`` and ``outcomes.sqlite``, or one
    of those files (the other component is then left out)."""
    if not value.startswith("sqlite:"):
        raise typer.BadParameter("give the source as sqlite:PATH (a directory or a .sqlite file)", param_hint="'--from'")
    path = Path(value[len("sqlite:"):]).expanduser()
    if path.is_dir():
        found = {c: path / n for c, n in (("ledger", "ledger.sqlite"), ("store", "outcomes.sqlite")) if (path / n).is_file()}
        if not found:
            raise typer.BadParameter(f"{path} holds neither ledger.sqlite nor outcomes.sqlite", param_hint="'--from'")
        return found
    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist", param_hint="'--from'")
    return {_component_of(path): path}


def _component_of(path: Path) -> str:
    import sqlite3

    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise typer.BadParameter(f"{path} is not an effreason ledger or outcome store ({exc})", param_hint="'--from'")
    if "0001_ledger" in names:
        return "ledger"
    if "0001_requests_and_attempts" in names:
        return "store"
    raise typer.BadParameter(f"{path} is not an effreason ledger or outcome store", param_hint="'--from'")


@db_app.command("copy")
def db_copy(
    source: Optional[str] = typer.Option(None, "--from", help="sqlite:PATH — a directory with ledger.sqlite and "
                                         "outcomes.sqlite, or one of them (default: the configured SQLite files)."),
    target: Optional[str] = typer.Option(None, "--to", help="postgresql://USER:PASSWORD@HOST:PORT/DB (default: "
                                         "EFFREASON_DATABASE_URL / the configured URL)."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Copy the ledger (spend, holds, limits, virtual keys) and the outcome store into PostgreSQL.

    Rows already in the target are kept, so an interrupted copy is finished by running it again. Every source row is checked to have arrived unchanged; the command fails when one did not.
    """
    from effreason_agents.adapters.copy import copy_component
    from effreason_agents.core.text import is_postgres_url

    try:
        cfg = load(config)
        sources = _source(source) if source else {"ledger": cfg.ledger_path(), "store": cfg.store.resolved_path()}
        sources = {c: p for c, p in sources.items() if Path(p).is_file()}
        if not sources:
            raise EffReasonError("no SQLite ledger or outcome store to copy; pass --from sqlite:PATH")
        dest = target or cfg.database_url()
        if not dest or not is_postgres_url(dest):
            raise EffReasonError("give --to postgresql://… (or set EFFREASON_DATABASE_URL)")
        reports = []
        for component, path in sources.items():
            def shown(t: Any, c: str = component) -> None:
                if not json_out:
                    out.print(f"{c}.{t.table}: {t.source_rows:,} rows, {t.inserted:,} copied now, "
                              f"{t.target_rows:,} in the target" + (f", [red]{t.missing:,} missing[/]" if t.missing else ""))
            reports.append(copy_component(component, path, dest, on_table=shown))
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        print_json({"copies": [r.as_json() for r in reports]})
    if not all(r.complete for r in reports):
        fail(EffReasonError("some rows did not arrive unchanged (see above); nothing in the source was changed"))
    if not json_out:
        out.print(f"copied to {reports[0].target}: every row is there.")
