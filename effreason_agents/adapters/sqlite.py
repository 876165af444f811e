"""What the outcome store and the budget ledger share: one SQLite connection behind a
lock, named append-only migrations, and all-or-nothing write transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from effreason_agents.errors import EffReasonError

__all__ = [
    "Migration",
    "SQLiteFile",
    "split_statements",
]

Migration = tuple[str, "str | Sequence[str]"]


def split_statements(sql: str) -> list[str]:
    """Split a migration script into complete statements (semicolons in strings are safe)."""
    statements: list[str] = []
    buffer = ""
    for part in sql.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")
    return statements


_OPEN_LOCKS: dict[str, threading.Lock] = {}
_OPEN_LOCKS_GUARD = threading.Lock()


def _open_lock(path: Path) -> threading.Lock:
    key = str(path.resolve())
    with _OPEN_LOCKS_GUARD:
        return _OPEN_LOCKS.setdefault(key, threading.Lock())


def _busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteFile:
    """Base of the project's SQLite files. Subclasses set ``kind`` (for messages), ``error``
    (the exception raised) and ``migrations`` (ordered ``(name, SQL script or statements)``;
    never edit or reorder a released entry, append a new one)."""

    kind: ClassVar[str] = "database"
    error: ClassVar[type[EffReasonError]] = EffReasonError
    migrations: ClassVar[Sequence[Migration]] = ()

    path: Path
    read_only: bool = False
    _conn: sqlite3.Connection | None
    _lock: threading.RLock

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise self.error(f"{self.kind} {self.path} is closed; open it again")
        return self._conn

    # -- schema ------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        """Names of the migrations applied to this file, in the order applied."""
        return [row["name"] for row in self._query("SELECT name FROM _migrations ORDER BY rowid")]

    def _prepare(self, timeout_s: float) -> None:
        """Switch to WAL and apply the migrations. Opening the same file from several
        threads is serialized here, and a file another process is setting up is retried
        until ``timeout_s`` (SQLite's journal-mode switch does not wait on its busy timeout)."""
        deadline = time.monotonic() + timeout_s
        with _open_lock(self.path):
            while True:
                try:
                    conn = self._db()
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                    self._migrate()
                    return
                except (sqlite3.OperationalError, EffReasonError) as exc:
                    if not _busy(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def _migrate(self) -> None:
        conn = self._db()
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        applied = {row["name"] for row in conn.execute("SELECT name FROM _migrations")}
        for name, script in self.migrations:
            if name in applied:
                continue
            statements = split_statements(script) if isinstance(script, str) else list(script)
            with self._transaction(f"apply migration {name}") as tx:
                # Another process may have applied it while we waited for the lock.
                if tx.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone() is None:
                    for statement in statements:
                        tx.execute(statement)
                    tx.execute(
                        "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                        (name, datetime.now(timezone.utc).isoformat(timespec="milliseconds")),
                    )

    # -- reading and writing -----------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), rolled back on any error,
        Ctrl-C included; SQLite errors become ``self.error`` saying nothing was written."""
        with self._lock:
            conn = self._db()
            if self.read_only:
                raise self.error(f"{self.kind} {self.path} was opened read-only; open it without read_only to record")
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self.error(f"could not {what} in {self.path}: {exc}; nothing was written") from exc
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self.error(f"could not read {self.kind} {self.path}: {exc}") from exc
