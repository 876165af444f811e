"""What the budget ledger, the virtual keys and the outcome store share: one database
behind a small interface, either a SQLite file or a PostgreSQL server.

A *target* selects the backend. A filesystem path is a SQLite file: one connection
behind a lock, WAL, ``BEGIN IMMEDIATE`` write transactions, for one machine. A URL
starting with ``postgresql://`` or ``postgres://`` is a PostgreSQL database shared by
every process and replica: a psycopg connection pool per object, explicit
transactions, and transaction-scoped advisory locks where a check and a write must not
interleave with another process's (:meth:`Database._transaction`'s ``locks``).

SQL is written once, in SQLite's dialect, with ``?``, ``?NNN`` and ``:name``
placeholders. On PostgreSQL the placeholders are translated to psycopg's (``%s``,
``%(name)s``), and migrations' column types are widened where PostgreSQL's are
narrower than SQLite's: ``INTEGER`` becomes ``BIGINT`` (micro-dollars overflow 32
bits) and ``REAL`` becomes ``DOUBLE PRECISION`` (Unix seconds lose their fraction in
single precision). Rows read back support ``row["column"]``, ``row[0]`` and
``row.keys()`` on both backends.

Migrations are named and append-only: never edit or reorder a released entry, append a
new one. SQLite records them in the file's ``_migrations`` table; PostgreSQL in
``effreason_migrations``, per component (the ledger and the virtual keys are one
component, the outcome store another), so one database can hold all of them. Several
processes starting at once on a new database apply each migration exactly once.

A URL's password is never shown: every message, log line and ``repr`` uses
:func:`redact_url`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from effreason_agents.core.text import is_postgres_url, redact_url
from effreason_agents.errors import EffReasonError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = [
    "POSTGRES_POOL_MAX",
    "Database",
    "DatabaseRow",
    "Dialect",
    "Migration",
    "MigrationStatus",
    "PostgresConnection",
    "Row",
    "is_postgres_url",
    "postgres_ddl",
    "redact_url",
    "split_statements",
    "translate_placeholders",
]

log = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgresql"]
Migration = tuple[str, "str | Sequence[str]"]
"""``(name, SQL script or list of statements)``: one named, append-only schema step."""

POSTGRES_POOL_MAX = 8
"""Connections one object keeps open to PostgreSQL at most (one at least)."""

_CONNECT_TIMEOUT_S = 10
_POOL_WAIT_S = 5.0  # how long to wait for a pooled connection before probing the server
_MIGRATIONS_TABLE_PG = "effreason_migrations"
_MIGRATION_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('effreason:migrations', 0))"
_SCOPE_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

T = TypeVar("T")


# --------------------------------------------------------------------------
# Targets and URLs
# --------------------------------------------------------------------------


def _url_password(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return None
    if not password:
        match = re.search(r"(?i)(?:^|&)password=([^&]*)", parts.query)
        password = match.group(1) if match else None
    return password or None


# --------------------------------------------------------------------------
# SQL: one dialect in the modules, translated for PostgreSQL
# --------------------------------------------------------------------------


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


def _segments(sql: str) -> Iterator[tuple[bool, str]]:
    """``(is_code, text)`` pieces of ``sql``: string literals, quoted identifiers and
    ``--`` comments are not code (placeholders and type names in them stay as they are)."""
    i, start, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            if i > start:
                yield True, sql[start:i]
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # a doubled quote inside the literal
                        j += 2
                        continue
                    break
                j += 1
            yield False, sql[i : j + 1]
            i = start = j + 1
        elif c == "-" and sql.startswith("--", i):
            if i > start:
                yield True, sql[start:i]
            j = sql.find("\n", i)
            j = n if j < 0 else j
            yield False, sql[i:j]
            i = start = j
        else:
            i += 1
    if start < n:
        yield True, sql[start:]


_PLACEHOLDER = re.compile(r"\?(\d*)|(?<![:\w]):([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=1024)
def translate_placeholders(sql: str) -> tuple[str, tuple[int, ...] | None, bool]:
    """SQLite-style SQL for psycopg: ``(text, order, named)``.

    ``?`` becomes ``%s``; ``?NNN`` becomes ``%s`` and ``order`` lists the 1-based
    parameter each one takes (so ``?1`` may be used twice); ``:name`` becomes
    ``%(name)s`` and ``named`` is true; a literal ``%`` is doubled. One statement uses
    one style. Placeholders inside string literals and comments are left alone."""
    out: list[str] = []
    order: list[int] = []
    styles: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "%":
            return "%%"
        if match.group(2) is not None:
            styles.add("named")
            return f"%({match.group(2)})s"
        if match.group(1):
            styles.add("numbered")
            order.append(int(match.group(1)))
        else:
            styles.add("positional")
        return "%s"

    for is_code, text in _segments(sql):
        out.append(_PLACEHOLDER.sub(replace, text) if is_code else text.replace("%", "%%"))
    if len(styles) > 1:
        raise ValueError(f"SQL mixes placeholder styles {sorted(styles)}; use one of ?, ?NNN or :name: {sql[:120]!r}")
    return "".join(out), (tuple(order) if "numbered" in styles else None), "named" in styles


def _bind(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
    text, order, named = translate_placeholders(sql)
    if named:
        if not isinstance(params, Mapping):
            raise TypeError(f"SQL with :name placeholders needs a mapping of parameters: {sql[:120]!r}")
        return text, params
    if isinstance(params, Mapping):
        if params:
            raise TypeError(f"SQL with ? placeholders needs a sequence of parameters: {sql[:120]!r}")
        params = ()
    if order is not None:
        return text, [params[k - 1] for k in order]
    return text, tuple(params)


_PG_TYPES = (
    (re.compile(r"(?i)\bINTEGER\b"), "BIGINT"),
    (re.compile(r"(?i)\bREAL\b"), "DOUBLE PRECISION"),
)


def postgres_ddl(statement: str) -> str:
    """A SQLite migration statement with PostgreSQL's column types: ``INTEGER`` ->
    ``BIGINT``, ``REAL`` -> ``DOUBLE PRECISION`` (outside string literals)."""
    out: list[str] = []
    for is_code, text in _segments(statement):
        if is_code:
            for pattern, replacement in _PG_TYPES:
                text = pattern.sub(replacement, text)
        out.append(text)
    return "".join(out)


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------


class Row(Protocol):
    """A row as both backends return it: ``row["column"]``, ``row[0]``, ``row.keys()``."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class DatabaseRow(tuple):  # type: ignore[type-arg]
    """A PostgreSQL row that reads like :class:`sqlite3.Row`: by column name, by
    position, and ``keys()`` (so ``dict(row)`` works too)."""

    __slots__ = ()
    _names: ClassVar[tuple[str, ...]] = ()
    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            try:
                key = self._index[key]
            except KeyError:
                raise IndexError(f"no column named {key!r} (columns: {', '.join(self._names)})") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


@functools.lru_cache(maxsize=512)
def _row_class(names: tuple[str, ...]) -> type[DatabaseRow]:
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)  # like sqlite3.Row: the first column of a name wins
    return type("DatabaseRow", (DatabaseRow,), {"__slots__": (), "_names": names, "_index": index})


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], DatabaseRow]:
    names = tuple(column.name for column in cursor.description or ())
    return _row_class(names)


class PostgresConnection:
    """A psycopg connection that takes the modules' SQLite-style SQL: what
    :meth:`Database._transaction` yields on PostgreSQL (``execute`` and ``executemany``
    return a cursor with ``fetchone``, ``fetchall`` and ``rowcount``)."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> psycopg.Cursor[Any]:
        text, args = _bind(sql, params)
        return self.raw.execute(text, args)  # type: ignore[arg-type]

    def executemany(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> psycopg.Cursor[Any]:
        batch = [_bind(sql, params)[1] for params in seq]
        cursor = self.raw.cursor()
        if batch:
            cursor.executemany(translate_placeholders(sql)[0], batch)  # type: ignore[arg-type]
        return cursor


def _psycopg() -> Any:
    import psycopg

    return psycopg


def _one_line(exc: BaseException, secret: str | None) -> str:
    """The error's message on one line, without the password (as written or decoded)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:  # the server's message, without the statement it quotes
        detail = getattr(diag, "message_detail", None)
        primary = f"{primary} ({detail})" if detail else primary
    text = " ".join(str(primary or exc).split()) or type(exc).__name__
    if secret:
        for form in {secret, unquote(secret)}:
            text = text.replace(form, "***")
    return text


def _is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection to PostgreSQL was lost (terminated, server
    shut down or unreachable), as opposed to an error in a statement."""
    psycopg = _psycopg()
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


def _connection_lost(exc: BaseException) -> bool:
    cause = exc.__cause__
    return cause is not None and _is_disconnect(cause)


# --------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------

_OPEN_LOCKS: dict[str, threading.Lock] = {}
_OPEN_LOCKS_GUARD = threading.Lock()


def _open_lock(path: Path) -> threading.Lock:
    key = str(path.resolve())
    with _OPEN_LOCKS_GUARD:
        return _OPEN_LOCKS.setdefault(key, threading.Lock())


def _busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class MigrationStatus:
    """The schema of one database as a component sees it: ``applied`` (in the order
    applied), ``pending`` (this version's migrations not applied yet, in order) and
    ``unknown`` (applied by a newer version of effreason-agents)."""

    location: str
    dialect: Dialect
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return not self.pending


class Database:
    """Base of the ledger, the key store and the outcome store.

    Subclasses set ``kind`` (for messages), ``error`` (the exception raised),
    ``migrations`` (ordered ``(name, SQL script or statements)``), ``component`` (whose
    migrations they are on PostgreSQL), ``postgres_extra`` (PostgreSQL-only statements run
    after a migration's own), ``tables`` (in foreign-key order) with their
    ``primary_keys``, and ``serial_tables`` (tables that have a ``rowid BIGSERIAL``
    column on PostgreSQL, SQLite's implicit ``rowid``), then call :meth:`_open` from
    ``__init__``.

    Every object has ``dialect`` (``"sqlite"`` or ``"postgresql"``), ``location`` (the
    file's path, or the URL without its password) and ``path`` (the file, ``None`` on
    PostgreSQL).
    """

    kind: ClassVar[str] = "database"
    error: ClassVar[type[EffReasonError]] = EffReasonError
    migrations: ClassVar[Sequence[Migration]] = ()
    component: ClassVar[str] = "database"
    postgres_extra: ClassVar[Mapping[str, Sequence[str]]] = {}
    tables: ClassVar[tuple[str, ...]] = ()
    primary_keys: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    serial_tables: ClassVar[frozenset[str]] = frozenset()
    unusable_hint: ClassVar[str] = "move the file away"
    missing_hint: ClassVar[str] = "create it first"

    dialect: Dialect
    location: str
    path: Path | None
    read_only: bool = False
    _conn: sqlite3.Connection | None = None
    _pool: ConnectionPool[Any] | None = None
    _url: str | None = None
    _lock: threading.RLock
    _timeout_s: float = 30.0
    _newly_applied: list[str]

    # -- opening -----------------------------------------------------------

    def _open(self, target: str | Path, *, timeout_s: float, read_only: bool = False, pool: bool = True) -> None:
        """Open ``target`` (a SQLite path or a PostgreSQL URL) and bring its schema up to
        date (``read_only``: check it is up to date, change nothing). ``pool=False`` opens
        no PostgreSQL pool (for :meth:`migrate`)."""
        self._lock = threading.RLock()
        self._conn = None
        self._pool = None
        self._newly_applied = []
        self.read_only = read_only
        self._timeout_s = timeout_s
        if is_postgres_url(target):
            self.dialect = "postgresql"
            self.path = None
            self._url = str(target).strip()
            self.location = redact_url(self._url)
            self._open_postgres(timeout_s, pool=pool)
            return
        if isinstance(target, str) and "://" in target:
            raise self.error(
                f"{redact_url(target)} is not a supported {self.kind} location; pass a file path (SQLite) or a "
                "postgresql://user:password@host:port/database URL"
            )
        self.dialect = "sqlite"
        self._url = None
        self.path = Path(target).expanduser()
        self.location = str(self.path)
        self._open_sqlite(timeout_s)

    def _configure_sqlite(self, conn: sqlite3.Connection, timeout_s: float) -> None:
        """Set the connection's PRAGMAs (the subclass's durability and locking choices)."""

    def _open_sqlite(self, timeout_s: float) -> None:
        path = self.path
        assert path is not None
        if path.is_dir():
            raise self.error(f"{self.kind} path {path} is a directory; point it at a file inside it")
        if self.read_only and not path.is_file():
            raise self.error(f"no {self.kind} at {path}; check the path, or {self.missing_hint}")
        try:
            if self.read_only:
                target, uri = f"{path.resolve().as_uri()}?mode=ro", True
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                target, uri = str(path), False
            conn = sqlite3.connect(target, uri=uri, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self.error(f"cannot open {self.kind} {path}: {exc}; check the path and its permissions") from exc
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            self._configure_sqlite(conn, timeout_s)
            if self.read_only:
                self._require_schema()
            else:
                self._prepare(timeout_s)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise self.error(f"{path} is not a usable {self.kind} ({exc}); {self.unusable_hint}") from exc
        except BaseException:
            self.close()
            raise

    def _prepare(self, timeout_s: float) -> None:
        """Switch to WAL and apply the migrations. Opening the same file from several
        threads is serialized here, and a file another process is setting up is retried
        until ``timeout_s`` (SQLite's journal-mode switch does not wait on its busy timeout)."""
        deadline = time.monotonic() + timeout_s
        with _open_lock(self.path):  # type: ignore[arg-type]
            while True:
                try:
                    conn = self._db()
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                    self._migrate_sqlite()
                    return
                except (sqlite3.OperationalError, EffReasonError) as exc:
                    if not _busy(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def _migrate_sqlite(self) -> None:
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
                    tx.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, _utc_now()))
                    self._newly_applied.append(name)

    def _connect_postgres(self, timeout_s: float) -> psycopg.Connection[Any]:
        """One connection outside the pool (to migrate, or to say why the server cannot be
        reached); errors become ``self.error`` naming the URL without its password."""
        psycopg = _psycopg()
        try:
            return psycopg.connect(
                self._url,
                connect_timeout=max(1, min(round(timeout_s), _CONNECT_TIMEOUT_S)),
                autocommit=False,
                row_factory=_row_factory,
            )
        except psycopg.Error as exc:
            raise self.error(self._unreachable_message(exc)) from exc

    def _unreachable_message(self, exc: BaseException) -> str:
        return (
            f"cannot reach PostgreSQL at {self.location}: {_one_line(exc, self._secret())}; check the URL and that "
            "the server is running"
        )

    def _secret(self) -> str | None:
        return _url_password(self._url) if self._url else None

    def _open_postgres(self, timeout_s: float, *, pool: bool) -> None:
        psycopg = _psycopg()
        conn = self._connect_postgres(timeout_s)
        try:
            if self.read_only:
                applied = self._applied_postgres(PostgresConnection(conn))
                conn.rollback()
                self._require_schema(applied)
            else:
                self._migrate_postgres(conn)
        except psycopg.Error as exc:
            raise self.error(
                f"could not check or update the schema of {self.kind} {self.location}: "
                f"{_one_line(exc, self._secret())}; if this role may not create tables, run `effreason db migrate` "
                "with one that may (the service itself only reads and writes rows)"
            ) from exc
        finally:
            conn.close()
        if pool:
            from psycopg_pool import ConnectionPool

            self._pool = ConnectionPool(
                self._url,
                min_size=1,
                max_size=POSTGRES_POOL_MAX,
                open=True,
                check=ConnectionPool.check_connection,
                configure=self._configure_postgres,
                kwargs={"autocommit": False, "connect_timeout": max(1, min(round(timeout_s), _CONNECT_TIMEOUT_S))},
                timeout=timeout_s,
                name=f"effreason-{self.component}",
                num_workers=2,
            )

    def _configure_postgres(self, conn: psycopg.Connection[Any]) -> None:
        """Every pooled connection: rows like sqlite3.Row, a lock wait bounded like
        SQLite's busy timeout, and no writes at all for a read-only object."""
        conn.row_factory = _row_factory  # type: ignore[assignment]
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(self._timeout_s * 1000)}ms",))
        if self.read_only:
            conn.execute("SELECT set_config('default_transaction_read_only', 'on', false)")
        conn.commit()

    def _migrate_postgres(self, raw: psycopg.Connection[Any]) -> None:
        """Apply the pending migrations, each in its own transaction under one advisory
        lock shared by every component and process, re-checking under the lock (so
        processes starting together apply each migration once, and wait for each other)."""
        psycopg = _psycopg()
        tx = PostgresConnection(raw)
        try:
            # Up to date (every start but the first): no lock, no DDL, so a role that may only
            # read and write rows can run the service once `effreason db migrate` has run.
            applied = set(self._applied_postgres(tx))
            raw.rollback()
            if all(name in applied for name, _ in self.migrations):
                return
            tx.execute(_MIGRATION_LOCK_SQL)
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {_MIGRATIONS_TABLE_PG} (seq BIGSERIAL PRIMARY KEY, "
                "component TEXT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, UNIQUE (component, name))"
            )
            applied = set(self._applied_postgres(tx))
            raw.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                raw.rollback()
            raise
        for name, script in self.migrations:
            if name in applied:
                continue
            statements = split_statements(script) if isinstance(script, str) else list(script)
            statements = [postgres_ddl(s) for s in statements] + list(self.postgres_extra.get(name, ()))
            try:
                tx.execute(_MIGRATION_LOCK_SQL)
                done = tx.execute(
                    f"SELECT 1 FROM {_MIGRATIONS_TABLE_PG} WHERE component = ? AND name = ?", (self.component, name)
                ).fetchone()
                if done is None:
                    for statement in statements:
                        tx.execute(statement)
                    tx.execute(
                        f"INSERT INTO {_MIGRATIONS_TABLE_PG} (component, name, applied_at) VALUES (?, ?, ?)",
                        (self.component, name, _utc_now()),
                    )
                raw.commit()
                if done is None:
                    self._newly_applied.append(name)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    raw.rollback()
                if isinstance(exc, psycopg.Error):
                    raise self.error(
                        f"could not apply migration {name} in {self.location}: {_one_line(exc, self._secret())}; "
                        "nothing was written"
                    ) from exc
                raise

    def _applied_postgres(self, tx: PostgresConnection) -> list[str]:
        exists = tx.execute("SELECT to_regclass(?) IS NOT NULL", (_MIGRATIONS_TABLE_PG,)).fetchone()[0]
        if not exists:
            return []
        rows = tx.execute(
            f"SELECT name FROM {_MIGRATIONS_TABLE_PG} WHERE component = ? ORDER BY seq", (self.component,)
        ).fetchall()
        return [row[0] for row in rows]

    def _require_schema(self, applied: Sequence[str] | None = None) -> None:
        """For a read-only object: refuse a database whose schema is not up to date."""
        if applied is None:
            applied = self.applied_migrations()
        missing = [name for name, _ in self.migrations if name not in set(applied)]
        if missing:
            raise self.error(
                f"{self.kind} {self.location} lacks migrations {missing}; open it once for writing (or run "
                "`effreason db migrate`) to bring its schema up to date"
            )

    # -- schema --------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        """Names of this component's migrations applied to the database, in the order applied."""
        if self.dialect == "postgresql":
            return self._read("read the applied migrations", self._applied_postgres)
        has_table = self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'")
        if not has_table:
            return []
        return [row["name"] for row in self._query("SELECT name FROM _migrations ORDER BY rowid")]

    def pending_migrations(self) -> list[str]:
        """Names of this version's migrations not applied to the database yet, in order
        (empty once opened for writing: opening applies them)."""
        applied = set(self.applied_migrations())
        return [name for name, _ in self.migrations if name not in applied]

    @classmethod
    def migrate(cls, target: str | Path, *, timeout_s: float = 30.0) -> list[str]:
        """Bring the schema at ``target`` up to date and do nothing else (no pool, no
        other writes); returns the names of the migrations this call applied (empty when
        it was up to date, or another process applied them first). Creates a SQLite file
        that does not exist; a PostgreSQL database must exist."""
        obj = cls.__new__(cls)
        obj._open(target, timeout_s=timeout_s, pool=False)
        try:
            return list(obj._newly_applied)
        finally:
            obj.close()

    @classmethod
    def migration_status(cls, target: str | Path, *, timeout_s: float = 30.0) -> MigrationStatus:
        """Which migrations the database at ``target`` has and lacks, changing nothing
        (a SQLite file that does not exist is not created: everything is pending)."""
        names = [name for name, _ in cls.migrations]
        obj = cls.__new__(cls)
        obj._lock = threading.RLock()
        if is_postgres_url(target):
            obj.dialect, obj.path, obj._url = "postgresql", None, str(target).strip()
            obj.location = redact_url(obj._url)
            psycopg = _psycopg()
            conn = obj._connect_postgres(timeout_s)
            try:
                applied = obj._applied_postgres(PostgresConnection(conn))
            except psycopg.Error as exc:
                raise cls.error(
                    f"could not read the migrations of {cls.kind} {obj.location}: {_one_line(exc, obj._secret())}"
                ) from exc
            finally:
                conn.close()
        else:
            path = Path(target).expanduser()
            applied = []
            if path.is_file():
                try:
                    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s)
                    try:
                        if conn.execute(
                            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
                        ).fetchone():
                            applied = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
                    finally:
                        conn.close()
                except sqlite3.Error as exc:
                    raise cls.error(f"{path} is not a usable {cls.kind} ({exc}); {cls.unusable_hint}") from exc
            elif path.exists():
                raise cls.error(f"{cls.kind} path {path} is a directory; point it at a file inside it")
            obj.dialect, obj.location = "sqlite", str(path)
        known = set(names)
        return MigrationStatus(
            location=obj.location,
            dialect=obj.dialect,
            applied=list(applied),
            pending=[n for n in names if n not in set(applied)],
            unknown=[n for n in applied if n not in known],
        )

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Close the file or the connection pool; idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'location', '?')!r})"

    def _closed_error(self) -> EffReasonError:
        return self.error(f"{self.kind} {self.location} is closed; open it again")

    def _db(self) -> sqlite3.Connection:
        """The SQLite connection (SQLite only)."""
        if self._conn is None:
            raise self._closed_error()
        return self._conn

    @contextlib.contextmanager
    def _pg_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, returned to the pool afterwards (a broken one is replaced).

        When none comes within a few seconds, the server is probed: unreachable raises
        ``self.error`` saying why; reachable (the pool is still reconnecting after an
        outage, or every pooled connection is busy) serves this one operation on a
        connection of its own, closed afterwards."""
        pool = self._pool
        if pool is None:
            raise self._closed_error()
        from psycopg_pool import PoolClosed, PoolTimeout

        try:
            raw = pool.getconn(timeout=min(self._timeout_s, _POOL_WAIT_S))
        except PoolClosed:
            raise self._closed_error() from None
        except PoolTimeout:
            raw = None
        if raw is not None:
            try:
                yield raw
            finally:
                with contextlib.suppress(Exception):
                    pool.putconn(raw)
            return
        own = self._connect_postgres(self._timeout_s)
        log.info("no pooled connection to PostgreSQL at %s within %g s; using a new one", self.location,
                 min(self._timeout_s, _POOL_WAIT_S))
        try:
            try:
                self._configure_postgres(own)
            except _psycopg().Error as exc:
                raise self.error(self._unreachable_message(exc)) from exc
            yield own
        finally:
            with contextlib.suppress(Exception):
                own.close()

    # -- reading and writing -----------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, what: str, locks: Iterable[str] = ()) -> Iterator[Any]:
        """One write transaction, rolled back on any error (Ctrl-C included); database
        errors become ``self.error`` saying nothing was written.

        SQLite: ``BEGIN IMMEDIATE`` … ``COMMIT`` on the file's one connection (the write
        lock serializes every writer, so ``locks`` add nothing). PostgreSQL: a pooled
        connection, first taking ``pg_advisory_xact_lock`` on each of ``locks`` (strings,
        in sorted order, held until the transaction ends), so transactions naming a common
        lock run one at a time across every process and replica while the others run in
        parallel."""
        if self.read_only:
            raise self.error(f"{self.kind} {self.location} was opened read-only; open it without read_only to record")
        if self.dialect == "postgresql":
            with self._pg_transaction(what, locks) as tx:
                yield tx
            return
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self.error(f"could not {what} in {self.location}: {exc}; nothing was written") from exc
                raise

    @contextlib.contextmanager
    def _pg_transaction(self, what: str, locks: Iterable[str]) -> Iterator[PostgresConnection]:
        psycopg = _psycopg()
        with self._pg_connection() as raw:
            tx = PostgresConnection(raw)
            committing = False
            try:
                for key in sorted(set(locks)):
                    tx.execute(_SCOPE_LOCK_SQL, (key,))
                yield tx
                committing = True
                raw.commit()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    raw.rollback()
                if isinstance(exc, psycopg.Error):
                    raise self.error(self._write_failure(what, exc, committing=committing)) from exc
                raise

    def _write_failure(self, what: str, exc: BaseException, *, committing: bool) -> str:
        reason = _one_line(exc, self._secret())
        if _is_disconnect(exc):
            if committing:
                return (
                    f"could not {what} in {self.location}: the connection to PostgreSQL was lost while committing "
                    f"({reason}); the change may or may not have been written"
                )
            return (
                f"could not {what} in {self.location}: the connection to PostgreSQL was lost ({reason}); nothing "
                "was written (the transaction was rolled back)"
            )
        return f"could not {what} in {self.location}: {reason}; nothing was written"

    def _run(
        self, what: str, body: Callable[[Any], T], *, locks: Iterable[str] = (), retry: bool = False
    ) -> T:
        """``body(tx)`` in one :meth:`_transaction`. With ``retry`` (for idempotent writes:
        a second run of ``body`` must change nothing the first one wrote), a PostgreSQL
        connection lost on the way is replaced and ``body`` run once more."""
        locks = tuple(locks)
        attempts = 2 if retry and self.dialect == "postgresql" else 1
        for attempt in range(attempts):
            try:
                with self._transaction(what, locks) as tx:
                    return body(tx)
            except EffReasonError as exc:
                if attempt + 1 < attempts and isinstance(exc, self.error) and _connection_lost(exc):
                    log.warning("%s; trying again on a fresh connection", exc)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, what: str, body: Callable[[Any], T], *, snapshot: bool = False) -> T:
        """``body(conn)`` for reading (``what`` names it in logs), rolled back afterwards.
        ``snapshot``: every statement of ``body`` sees the same committed state. On
        PostgreSQL a lost connection is replaced and ``body`` run once more."""
        if self.dialect == "sqlite":
            with self._lock:
                conn = self._db()
                try:
                    if snapshot:
                        conn.execute("BEGIN")
                    result = body(conn)
                    if snapshot:
                        conn.execute("COMMIT")
                    return result
                except BaseException as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.Error):
                        raise self.error(f"could not read {self.kind} {self.location}: {exc}") from exc
                    raise
        psycopg = _psycopg()
        for attempt in range(2):
            with self._pg_connection() as raw:
                try:
                    tx = PostgresConnection(raw)
                    if snapshot:
                        tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    result = body(tx)
                    raw.rollback()
                    return result
                except BaseException as exc:
                    with contextlib.suppress(Exception):
                        raw.rollback()
                    if not isinstance(exc, psycopg.Error):
                        raise
                    if attempt == 0 and _is_disconnect(exc):
                        log.warning(
                            "lost the connection to PostgreSQL at %s while trying to %s (%s); trying again on a "
                            "fresh connection", self.location, what, _one_line(exc, self._secret()),
                        )
                        continue
                    raise self.error(
                        f"could not read {self.kind} {self.location}: {_one_line(exc, self._secret())}"
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Every row of one read (``sqlite3.Row`` or :class:`DatabaseRow`)."""
        return self._read("read", lambda conn: conn.execute(sql, params).fetchall())

    # -- copying -------------------------------------------------------------

    def _check_table(self, table: str) -> None:
        if table not in self.tables:
            raise ValueError(f"{table!r} is not a table of the {self.kind}; its tables are {', '.join(self.tables)}")

    def export_rows(self, table: str, *, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every row of ``table`` as a dict of its columns' values, exactly as stored, read
        in batches (no lock or connection is held while the caller works). Rows come in
        the order they were written where the schema keeps one (SQLite's rowid, the
        ``rowid`` column on PostgreSQL), else by primary key; that column itself is not
        exported."""
        self._check_table(table)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        by_rowid = self.dialect == "sqlite" or table in self.serial_tables
        keys = ("rowid",) if by_rowid else tuple(self.primary_keys[table])
        select = f"SELECT rowid AS _export_rowid, * FROM {table}" if self.dialect == "sqlite" else f"SELECT * FROM {table}"
        key_columns = ("_export_rowid",) if self.dialect == "sqlite" else keys
        order = ", ".join(keys)
        last: tuple[Any, ...] | None = None
        while True:
            if last is None:
                rows = self._query(f"{select} ORDER BY {order} LIMIT ?", (batch_size,))
            else:
                where = f"({', '.join(keys)}) > ({', '.join('?' * len(keys))})" if len(keys) > 1 else f"{keys[0]} > ?"
                rows = self._query(f"{select} WHERE {where} ORDER BY {order} LIMIT ?", (*last, batch_size))
            if not rows:
                return
            for row in rows:
                yield {k: row[k] for k in row.keys() if k not in ("_export_rowid", "rowid")}
            last = tuple(rows[-1][k] for k in key_columns)
            if len(rows) < batch_size:
                return

    def import_rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert ``rows`` (dicts as :meth:`export_rows` yields them) into ``table`` in one
        transaction; a row whose primary key is already there is skipped, so importing
        again copies nothing twice. Returns how many rows were inserted. Values are
        stored as given (money stays a decimal string or integer micro-dollars). Import
        the tables in :attr:`tables` order (foreign keys point backwards), and a big table
        in batches (``for rows in itertools.batched(src.export_rows(t), 1000): ...``): each
        call holds its rows in memory. Rows imported into a table with a ``rowid`` column
        keep their order; a ``rowid`` given in the rows is kept, and PostgreSQL's sequence
        is moved past it."""
        self._check_table(table)
        batch = [dict(row) for row in rows]
        if not batch:
            return 0
        columns = list(batch[0])
        for column in columns:
            if not _IDENTIFIER.fullmatch(column):
                raise ValueError(f"{column!r} is not a column name")
        for i, row in enumerate(batch):
            if set(row) != set(columns):
                raise ValueError(
                    f"row {i} of the {table} import has columns {sorted(row)}, the first row {sorted(columns)}; "
                    "pass rows with the same columns"
                )
        conflict = ", ".join(self.primary_keys[table])
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)}) "
            f"ON CONFLICT ({conflict}) DO NOTHING"
        )

        def insert(tx: Any) -> int:
            inserted = tx.executemany(sql, batch).rowcount
            if self.dialect == "postgresql" and "rowid" in columns and table in self.serial_tables:
                tx.execute(
                    f"SELECT setval(pg_get_serial_sequence(?, 'rowid'), "
                    f"(SELECT COALESCE(MAX(rowid), 0) + 1 FROM {table}), false)",
                    (table,),
                )
            self._imported(tx, table, batch)
            return max(int(inserted), 0)

        return self._run(f"import {len(batch)} rows into {table}", insert)

    def _imported(self, tx: Any, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Called by :meth:`import_rows` in its transaction after inserting ``rows`` into
        ``table`` (those already there were skipped): a subclass keeps what it derives from
        the rows up to date here. Does nothing by default."""
