"""The name the ledger, key store and outcome store had for their shared base when they
were SQLite-only. The base is now :class:`~effreason_agents.adapters.database.Database`,
which opens a SQLite file or a PostgreSQL URL; ``SQLiteFile`` is the same class."""

from __future__ import annotations

from effreason_agents.adapters.database import Database, Migration, split_statements

__all__ = [
    "Migration",
    "SQLiteFile",
    "split_statements",
]

SQLiteFile = Database
