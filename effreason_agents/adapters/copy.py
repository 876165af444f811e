"""Moving a single machine's budget ledger (with its virtual keys) and outcome store into
another database — typically from the SQLite files to the PostgreSQL server that several
replicas share — without losing a row.

Each table is copied in primary-key order in batches, each batch in one transaction on the
target; a row already there (same primary key) is left as it is, so a copy that was
interrupted is finished by running it again. Afterwards every source row is checked to be
in the target with every value equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.core.text import is_postgres_url, redact_url
from effreason_agents.errors import EffReasonError

__all__ = ["COMPONENTS", "TableCopy", "ComponentCopy", "copy_component", "describe_target", "open_component"]

COMPONENTS: dict[str, type] = {"ledger": BudgetLedger, "store": OutcomeStore}
"""The databases a deployment has: the budget ledger (holds, spend, limits, virtual keys)
and the outcome store (requests, attempts, benchmark results)."""

BATCH_ROWS = 1000


def describe_target(target: Path | str) -> str:
    """A database target for people: the SQLite path, or the URL without its password."""
    return redact_url(str(target)) if is_postgres_url(target) else str(target)


def open_component(component: str, target: Path | str) -> Any:
    """The ledger or store at ``target`` (created and migrated when it is new)."""
    try:
        cls = COMPONENTS[component]
    except KeyError:
        raise EffReasonError(f"unknown database component {component!r}; known: {', '.join(COMPONENTS)}") from None
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
    return cls(target)


@dataclass
class TableCopy:
    """One table's copy: rows in the source, rows inserted now, rows the target holds after."""

    table: str
    source_rows: int = 0
    inserted: int = 0
    target_rows: int = 0
    missing: int = 0
    """Source rows not found in the target, or found with another value (0 after a good copy)."""


@dataclass
class ComponentCopy:
    component: str
    source: str
    target: str
    tables: list[TableCopy] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(t.missing == 0 for t in self.tables)

    def as_json(self) -> dict[str, Any]:
        return {"component": self.component, "source": self.source, "target": self.target, "complete": self.complete,
                "tables": [t.__dict__ for t in self.tables]}


def _batches(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in row.items() if k != "rowid"))


def copy_component(
    component: str, source: Path | str, target: Path | str, *,
    on_table: Callable[[TableCopy], None] | None = None,
) -> ComponentCopy:
    """Copy every table of ``component`` from ``source`` to ``target`` and check that every
    source row arrived unchanged (``rowid`` columns, which PostgreSQL numbers itself, aside)."""
    report = ComponentCopy(component, describe_target(source), describe_target(target))
    with open_component(component, source) as src, open_component(component, target) as dst:
        for table in src.tables:
            t = TableCopy(table)
            for batch in _batches(src.export_rows(table), BATCH_ROWS):
                t.source_rows += len(batch)
                t.inserted += dst.import_rows(table, batch)
            arrived = {_key(r) for r in dst.export_rows(table)}
            t.target_rows = len(arrived)
            t.missing = sum(1 for r in src.export_rows(table) if _key(r) not in arrived)
            report.tables.append(t)
            if on_table is not None:
                on_table(t)
    return report
