"""Budget ledger: hold the worst case before a model call, settle what it really cost.

Money is kept in integer micro-dollars (``1 USD = 1_000_000``); amounts are rounded
UP when converted (:func:`to_micro`), so a hold never under-counts, and limits are
rounded DOWN, so a cap is never raised by rounding.

The budget protocol, as this ledger implements it:

* **Hold.** A request touches several scopes at once (the request itself, its
  conversation thread, the user / API key). :meth:`BudgetLedger.reserve` checks, in one
  transaction, that for every scope

      committed actual + outstanding holds + this worst case <= limit

  for each limited quantity (output tokens, total tokens, dollars), and writes the hold
  only when all fit. The check and the write never interleave with another hold's on a
  common scope, so concurrent requests can never together overspend a cap: on SQLite the
  transaction is ``BEGIN IMMEDIATE`` (the file's write lock serialises it across threads,
  ledger instances and processes); on PostgreSQL it first takes a transaction-scoped
  advisory lock per scope, in sorted order, so holds on a scope are serialised across
  every process and replica while holds on disjoint scopes run in parallel.
* **Settle exactly once.** Holds are keyed by (request, attempt). Re-running
  ``reserve`` / ``commit`` with the same key never charges twice; the settlement keeps
  the call's result (:meth:`BudgetLedger.settled`), so a re-executed step returns it
  instead of calling the provider again.
* **Nothing leaks.** Every hold expires (``ttl_s``). Each ``reserve`` first releases the
  holds whose time is up, so the holds of a killed process free their room the next
  time anyone uses the ledger. A call that outlives its hold is still recorded when it
  settles: the ledger's spend is what the providers billed.

Checking a hold and reading a budget take the same time however long a scope's history
is (an API key's user scope accumulates every request it ever made): each scope has a
row of running totals (``scope_totals``: spent, held, and how many holds are outstanding)
that every hold, settlement, release and expiry sweep updates in the same transaction as
the change, so the totals always equal the sums over the scope's holds:

* spent = the actual usage of its committed holds;
* held = the worst cases of its holds whose status is ``reserved``, past their expiry or
  not (a hold leaves "held" when it is settled, released, or swept after its expiry).

``reserve`` sweeps expired holds before it checks, so its check reads the totals as they
are. Reads (:meth:`BudgetLedger.spent`, ``reserved``, ``remaining``, ``show``) do not write,
so they subtract the scope's holds that are past their expiry but not swept yet (found
through the expiry index: only holds that expired since the last ``reserve``): a crashed
process's hold never understates what is left of a budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from effreason_agents.adapters.database import Database, Row
from effreason_agents.config import BudgetConfig, LimitConfig
from effreason_agents.core.money import format_usd, from_micro, to_micro, to_micro_floor
from effreason_agents.core.records import Scope, ScopeKind, Usage
from effreason_agents.errors import BudgetExhausted, LedgerError

__all__ = [
    "DEFAULT_TTL_S",
    "MIGRATIONS",
    "PRIMARY_KEYS",
    "TABLES",
    "BudgetExhausted",
    "BudgetLedger",
    "LedgerDatabase",
    "LedgerError",
    "Reservation",
    "ReservationStatus",
    "Scope",
    "ScopeKind",
    "Usage",
    "from_micro",
    "to_micro",
]

log = logging.getLogger(__name__)

ReservationStatus = Literal["reserved", "committed", "released"]
DEFAULT_TTL_S = 900.0
"""How long a hold lives when ``reserve`` is given no ``ttl_s``: above the longest model call."""

_LIMIT_NAMES = ("max_output_tokens", "max_total_tokens", "max_cost_usd")


# --------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------

# Every scope's running totals from the holds' history: the backfill of migration
# 0004_scope_totals (never edit it; a changed backfill is a new migration) and
# BudgetLedger.rebuild_totals.
_TOTALS_FROM_HISTORY_SQL = """
INSERT INTO scope_totals (kind, scope_key, spent_output_tokens, spent_total_tokens, spent_micro_usd,
    held_output_tokens, held_total_tokens, held_micro_usd, held_count)
SELECT s.kind, s.scope_key,
    COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_output_tokens END), 0),
    COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_total_tokens END), 0),
    COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_micro_usd END), 0),
    COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_output_tokens END), 0),
    COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_total_tokens END), 0),
    COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_micro_usd END), 0),
    COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN 1 END), 0)
FROM reservation_scopes s JOIN reservations r ON r.key = s.reservation_key
WHERE r.status IN ('committed', 'reserved')
GROUP BY s.kind, s.scope_key
"""

# Named, append-only migrations: never edit or reorder an entry; add new ones at the end.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001_ledger",
        [
            """CREATE TABLE scope_limits (
                kind TEXT NOT NULL,
                scope_key TEXT NOT NULL,
                max_output_tokens INTEGER,
                max_total_tokens INTEGER,
                max_micro_usd INTEGER,
                updated_at REAL NOT NULL,
                PRIMARY KEY (kind, scope_key)
            )""",
            """CREATE TABLE reservations (
                key TEXT PRIMARY KEY,
                status TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),
                reserved_output_tokens INTEGER NOT NULL,
                reserved_total_tokens INTEGER NOT NULL,
                reserved_micro_usd INTEGER NOT NULL,
                actual_output_tokens INTEGER,
                actual_total_tokens INTEGER,
                actual_micro_usd INTEGER,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            "CREATE INDEX idx_reservations_status_updated ON reservations(status, updated_at)",
            """CREATE TABLE reservation_scopes (
                reservation_key TEXT NOT NULL REFERENCES reservations(key) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                scope_key TEXT NOT NULL,
                PRIMARY KEY (reservation_key, kind, scope_key)
            )""",
            "CREATE INDEX idx_reservation_scopes_scope ON reservation_scopes(kind, scope_key)",
        ],
    ),
    (
        # Holds expire (expires_at; NULL on holds written before this migration, which
        # expire default_ttl_s after updated_at) and settlements keep the call's result.
        # The scope index gains reservation_key so the per-scope totals read only the index.
        "0002_hold_expiry_and_result",
        [
            "ALTER TABLE reservations ADD COLUMN expires_at REAL",
            "ALTER TABLE reservations ADD COLUMN result TEXT",
            "CREATE INDEX idx_reservations_status_expires ON reservations(status, expires_at)",
            "CREATE INDEX idx_reservation_scopes_scope_key ON reservation_scopes(kind, scope_key, reservation_key)",
            "DROP INDEX idx_reservation_scopes_scope",
        ],
    ),
    (
        # Virtual API keys (adapters/keys.py): only the SHA-256 of each key is stored; each
        # key spends as the user scope "key:<id>". rate_windows counts a key's requests per
        # one-minute window, shared by every process on this file.
        "0003_virtual_keys",
        [
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                rpm INTEGER,
                thread_max_micro_usd INTEGER,
                created_at REAL NOT NULL,
                revoked_at REAL
            )""",
            """CREATE TABLE rate_windows (
                key_id TEXT NOT NULL,
                minute INTEGER NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (key_id, minute)
            )""",
        ],
    ),
    (
        # Running totals per scope, so a hold's check and a budget read are one primary-key
        # lookup per scope instead of a sum over the scope's whole history. Filled from the
        # existing holds: committed actual usage is spent; every hold whose status is
        # 'reserved' is held, past its expiry or not, exactly as the ledger keeps the totals
        # afterwards (reads subtract the expired ones). Stop writers of an older version
        # before applying it: their holds would not update the totals
        # (BudgetLedger.rebuild_totals recomputes them).
        "0004_scope_totals",
        [
            """CREATE TABLE scope_totals (
                kind TEXT NOT NULL,
                scope_key TEXT NOT NULL,
                spent_output_tokens INTEGER NOT NULL DEFAULT 0,
                spent_total_tokens INTEGER NOT NULL DEFAULT 0,
                spent_micro_usd INTEGER NOT NULL DEFAULT 0,
                held_output_tokens INTEGER NOT NULL DEFAULT 0,
                held_total_tokens INTEGER NOT NULL DEFAULT 0,
                held_micro_usd INTEGER NOT NULL DEFAULT 0,
                held_count INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (kind, scope_key)
            )""",
            _TOTALS_FROM_HISTORY_SQL,
        ],
    ),
]

TABLES: tuple[str, ...] = ("scope_limits", "reservations", "reservation_scopes", "api_keys", "rate_windows")
"""The ledger's tables (the virtual keys' included), in foreign-key order: copy them in this order.
``scope_totals`` is not among them: it is derived from the holds, and importing holds
(:meth:`BudgetLedger.import_rows`) updates the totals of their scopes."""

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "scope_limits": ("kind", "scope_key"),
    "reservations": ("key",),
    "reservation_scopes": ("reservation_key", "kind", "scope_key"),
    "api_keys": ("id",),
    "rate_windows": ("key_id", "minute"),
}

_TOTALS_COLUMNS = (
    "spent_output_tokens",
    "spent_total_tokens",
    "spent_micro_usd",
    "held_output_tokens",
    "held_total_tokens",
    "held_micro_usd",
    "held_count",
)

# Adds a change to a scope's running totals (creating its row on the first hold). Each call
# is atomic per row on both backends; callers pass every scope of a transaction at once, in
# sorted order, so two transactions never wait on each other's rows in opposite orders.
_ADD_TOTALS_SQL = (
    f"INSERT INTO scope_totals (kind, scope_key, {', '.join(_TOTALS_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, scope_key) DO UPDATE SET "
    + ", ".join(f"{c} = scope_totals.{c} + excluded.{c}" for c in _TOTALS_COLUMNS)
)

# A scope's totals recomputed from its history (to repair totals, and after importing holds).
_SCOPE_HISTORY_SQL = """
SELECT
  CAST(COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_output_tokens END), 0) AS BIGINT),
  CAST(COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_total_tokens END), 0) AS BIGINT),
  CAST(COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_micro_usd END), 0) AS BIGINT),
  CAST(COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_output_tokens END), 0) AS BIGINT),
  CAST(COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_total_tokens END), 0) AS BIGINT),
  CAST(COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_micro_usd END), 0) AS BIGINT),
  CAST(COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN 1 END), 0) AS BIGINT)
FROM reservation_scopes s JOIN reservations r ON r.key = s.reservation_key
WHERE s.kind = ? AND s.scope_key = ?
"""

# One scope's budget as reads report it: the running totals, less the holds of the scope that
# are past their expiry but not swept yet (reads never write, and a crashed process's hold
# must not understate what is left). Those are found from the expiry index (only holds that
# expired since the last reserve) and matched to the scope by primary key, so the read costs
# the same however long the scope's history is. (The match is a scalar subquery, not EXISTS:
# PostgreSQL turns EXISTS into a join it may drive from the scope's history when its
# statistics are missing, e.g. right after a copy.) ``expired_holds`` also counts holds from
# before expiries existed (no expires_at) that are older than the ledger's default ttl, as
# the sweep does; those still count as held until they are swept, as they always have.
_SCOPE_READ_SQL = """
WITH late AS (
  SELECT COUNT(*) AS n,
    CAST(COALESCE(SUM(CASE WHEN r.expires_at < :now THEN r.reserved_output_tokens ELSE 0 END), 0) AS BIGINT) AS l_out,
    CAST(COALESCE(SUM(CASE WHEN r.expires_at < :now THEN r.reserved_total_tokens ELSE 0 END), 0) AS BIGINT) AS l_tot,
    CAST(COALESCE(SUM(CASE WHEN r.expires_at < :now THEN r.reserved_micro_usd ELSE 0 END), 0) AS BIGINT) AS l_usd
  FROM reservations r
  WHERE r.status = 'reserved' AND (r.expires_at < :now OR (r.expires_at IS NULL AND r.updated_at < :stale))
    AND (SELECT COUNT(*) FROM reservation_scopes s
         WHERE s.reservation_key = r.key AND s.kind = :kind AND s.scope_key = :key) > 0
)
SELECT
  CAST(COALESCE(t.spent_output_tokens, 0) AS BIGINT) AS s_out,
  CAST(COALESCE(t.spent_total_tokens, 0) AS BIGINT) AS s_tot,
  CAST(COALESCE(t.spent_micro_usd, 0) AS BIGINT) AS s_usd,
  CAST(COALESCE(t.held_output_tokens, 0) - late.l_out AS BIGINT) AS r_out,
  CAST(COALESCE(t.held_total_tokens, 0) - late.l_tot AS BIGINT) AS r_tot,
  CAST(COALESCE(t.held_micro_usd, 0) - late.l_usd AS BIGINT) AS r_usd,
  CAST(COALESCE(t.held_count, 0) AS BIGINT) AS holds,
  CAST(late.n AS BIGINT) AS expired_holds
FROM late LEFT JOIN scope_totals t ON t.kind = :kind AND t.scope_key = :key
"""

# Limits and totals of several scopes in one statement: only scopes with a limits row are
# returned (the others are unlimited); each is two primary-key lookups (scope_limits and
# scope_totals), whatever the scope's history.
_CHECK_SQL = """
WITH want(pos, kind, scope_key) AS (VALUES {values})
SELECT w.pos AS pos, l.max_output_tokens, l.max_total_tokens, l.max_micro_usd,
  CAST(COALESCE(t.spent_output_tokens + t.held_output_tokens, 0) AS BIGINT) AS u_out,
  CAST(COALESCE(t.spent_total_tokens + t.held_total_tokens, 0) AS BIGINT) AS u_tot,
  CAST(COALESCE(t.spent_micro_usd + t.held_micro_usd, 0) AS BIGINT) AS u_usd
FROM want w
JOIN scope_limits l ON l.kind = w.kind AND l.scope_key = w.scope_key
LEFT JOIN scope_totals t ON t.kind = w.kind AND t.scope_key = w.scope_key
ORDER BY w.pos
"""

# Holds whose time is up (found through idx_reservations_status_expires and, for holds from
# before migration 0002 without an expiry, idx_reservations_status_updated), and holds taken
# before a given time (release_stale with a threshold).
_EXPIRED = "status = 'reserved' AND (expires_at < ? OR (expires_at IS NULL AND updated_at < ?))"
_TAKEN_BEFORE = "status = 'reserved' AND updated_at < ?"

_IN_CHUNK = 500  # keys per IN (...) list: far below SQLite's limit on parameters


def _check_sql(n: int) -> str:
    return _CHECK_SQL.format(values=", ".join(["(?, ?, ?)"] * n))


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_Totals = dict[tuple[str, str], list[int]]
"""Changes to running totals by (kind, scope_key), in :data:`_TOTALS_COLUMNS` order."""


def _add(
    totals: _Totals,
    scope: tuple[str, str],
    *,
    spent: tuple[int, int, int] = (0, 0, 0),
    held: tuple[int, int, int] = (0, 0, 0),
    holds: int = 0,
) -> None:
    row = totals.setdefault(scope, [0] * len(_TOTALS_COLUMNS))
    for i, value in enumerate((*spent, *held, holds)):
        row[i] += value


def _amounts(usage: Usage) -> tuple[int, int, int]:
    return (usage.output_tokens, usage.total_tokens, usage.micro_usd)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _usage_json(output_tokens: int, total_tokens: int, micro_usd: int) -> dict[str, Any]:
    return {"output_tokens": output_tokens, "total_tokens": total_tokens, "cost_usd": format_usd(from_micro(micro_usd))}


# --------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------


@dataclass
class Reservation:
    """Handle given by :meth:`BudgetLedger.reservation`. ``status`` is what ``reserve``
    returned: ``"committed"`` means this step already ran and was paid for (a re-run;
    :meth:`BudgetLedger.settled` has its result)."""

    ledger: BudgetLedger = field(repr=False)
    key: str
    status: ReservationStatus

    @property
    def already_committed(self) -> bool:
        return self.status == "committed"

    def commit(self, actual: Usage, *, result: Mapping[str, Any] | None = None) -> None:
        self.ledger.commit(self.key, actual, result=result)
        self.status = "committed"

    def release(self) -> None:
        self.ledger.release(self.key)
        if self.status == "reserved":
            self.status = "released"


class LedgerDatabase(Database):
    """The budget ledger's database, which the virtual keys share: its schema, tables and
    how it is named in messages."""

    kind = "budget ledger"
    error = LedgerError
    migrations = MIGRATIONS
    component = "ledger"
    tables = TABLES
    primary_keys = PRIMARY_KEYS
    unusable_hint = "move the file away or set budget.ledger_path"


class BudgetLedger(LedgerDatabase):
    """Per-scope limits, holds and spend, in a SQLite file or a PostgreSQL database.

    ``target`` is a file path (SQLite: WAL, ``synchronous=FULL``, so a committed
    settlement survives a power loss; one connection guarded by a lock, and separate
    instances and processes on the file coordinate through its write lock and the busy
    timeout ``timeout_s``) or a ``postgresql://`` URL (a pool of up to
    :data:`~effreason_agents.adapters.database.POSTGRES_POOL_MAX` connections; every
    process and replica on the database coordinates through per-scope advisory locks,
    and ``timeout_s`` bounds the wait for a connection or a lock). Either way an
    instance can be shared by threads.

    ``default_ttl_s`` is how long a hold lives when ``reserve`` is not given ``ttl_s``;
    ``clock`` (wall-clock seconds, shared by every process using the ledger) exists for
    tests. A PostgreSQL server that cannot be reached raises :class:`LedgerError` naming
    the URL without its password.
    """

    def __init__(
        self,
        target: str | Path,
        *,
        timeout_s: float = 30.0,
        default_ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_ttl_s = self._valid_ttl(default_ttl_s, "default_ttl_s")
        self._clock = clock
        self._open(target, timeout_s=timeout_s)

    def _configure_sqlite(self, conn: Any, timeout_s: float) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")  # money: every settlement is on disk when commit returns

    # -- running totals ------------------------------------------------------
    #
    # Every transaction that changes holds collects its changes to the running totals and
    # applies them last (_apply_totals), in sorted scope order. On PostgreSQL the totals rows
    # are the only rows a transaction waits on after it holds any of them, so transactions
    # updating several scopes' totals can never wait on each other in a cycle.

    def _lock_suffix(self, *, skip_locked: bool = False) -> str:
        """``FOR UPDATE`` on PostgreSQL, where settlements and sweeps run concurrently and the
        status a change is based on must not change under it (SQLite's write lock already
        serialises every writer). ``skip_locked``: rows another transaction is changing are
        left to it."""
        if self.dialect != "postgresql":
            return ""
        return " ORDER BY key FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    @staticmethod
    def _apply_totals(conn: Any, totals: _Totals) -> None:
        rows = [(kind, key, *change) for (kind, key), change in sorted(totals.items()) if any(change)]
        if rows:
            conn.executemany(_ADD_TOTALS_SQL, rows)

    @staticmethod
    def _scopes_of(conn: Any, keys: Sequence[str]) -> list[tuple[str, str, str]]:
        """``(reservation_key, kind, scope_key)`` of the holds ``keys`` (primary-key lookups)."""
        found: list[tuple[str, str, str]] = []
        for chunk in _chunks(keys):
            marks = ", ".join("?" * len(chunk))
            found.extend(
                (row[0], row[1], row[2])
                for row in conn.execute(
                    "SELECT reservation_key, kind, scope_key FROM reservation_scopes "
                    f"WHERE reservation_key IN ({marks})",
                    tuple(chunk),
                )
            )
        return found

    def _release_where(
        self, conn: Any, totals: _Totals, now: float, condition: str, params: Sequence[Any], *, skip_locked: bool
    ) -> int:
        """Release the holds matching ``condition`` (a WHERE clause on ``reservations``); their
        worst cases leave the held totals of their scopes (added to ``totals``). Returns how
        many were released. On PostgreSQL ``skip_locked`` leaves holds another transaction is
        settling or sweeping to it (never waiting on them in an order that could deadlock);
        a skipped hold still counts until it is released, which can only refuse a hold that
        would have fit, never overspend."""
        rows = conn.execute(
            "SELECT key, reserved_output_tokens, reserved_total_tokens, reserved_micro_usd FROM reservations "
            f"WHERE {condition}{self._lock_suffix(skip_locked=skip_locked)}",
            tuple(params),
        ).fetchall()
        if not rows:
            return 0
        held = {row[0]: (-row[1], -row[2], -row[3]) for row in rows}
        keys = list(held)
        for chunk in _chunks(keys):
            marks = ", ".join("?" * len(chunk))
            conn.execute(
                f"UPDATE reservations SET status = 'released', updated_at = ? WHERE key IN ({marks})", (now, *chunk)
            )
        for key, kind, scope_key in self._scopes_of(conn, keys):
            _add(totals, (kind, scope_key), held=held[key], holds=-1)
        return len(keys)

    def _recompute_totals(self, conn: Any, scopes: Sequence[tuple[str, str]]) -> None:
        """Set the totals of ``scopes`` from their holds' history. Each row is locked before
        its history is read, so a concurrent change either is in that read (it committed
        first) or adds itself to the recomputed row afterwards."""
        for kind, scope_key in sorted(set(scopes)):
            conn.execute(
                "INSERT INTO scope_totals (kind, scope_key) VALUES (?, ?) ON CONFLICT (kind, scope_key) DO NOTHING",
                (kind, scope_key),
            )
            if self.dialect == "postgresql":
                conn.execute(
                    "SELECT 1 FROM scope_totals WHERE kind = ? AND scope_key = ? FOR UPDATE", (kind, scope_key)
                )
            sums = conn.execute(_SCOPE_HISTORY_SQL, (kind, scope_key)).fetchone()
            conn.execute(
                f"UPDATE scope_totals SET {', '.join(f'{c} = ?' for c in _TOTALS_COLUMNS)} "
                "WHERE kind = ? AND scope_key = ?",
                (*(int(v) for v in sums), kind, scope_key),
            )

    def _imported(self, tx: Any, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Imported holds count in their scopes' running totals (``import_rows`` calls this
        in its transaction; rows already there were skipped and are recounted unchanged)."""
        if table == "reservation_scopes":
            self._recompute_totals(tx, [(row["kind"], row["scope_key"]) for row in rows])
        elif table == "reservations":  # a hold's scopes are imported after it; recount any already there
            scopes = self._scopes_of(tx, [row["key"] for row in rows])
            self._recompute_totals(tx, [(kind, scope_key) for _, kind, scope_key in scopes])

    def rebuild_totals(self) -> int:
        """Recompute every scope's running totals from the holds' history, in one transaction
        (on PostgreSQL other writers wait for it); returns how many scopes have totals.

        The ledger keeps the totals exact by itself; this repairs them after the tables were
        written by something else: rows edited by hand, or holds taken by an older version of
        effreason-agents still running after migration ``0004_scope_totals`` was applied."""
        with self._transaction("rebuild the running totals") as conn:
            if self.dialect == "postgresql":
                # Writers take ROW EXCLUSIVE on scope_totals when they update it: they wait,
                # and add their changes to the rebuilt rows once this commits.
                conn.execute("LOCK TABLE scope_totals IN SHARE ROW EXCLUSIVE MODE")
            conn.execute("DELETE FROM scope_totals")
            conn.execute(_TOTALS_FROM_HISTORY_SQL)
            return int(conn.execute("SELECT COUNT(*) FROM scope_totals").fetchone()[0])

    @staticmethod
    def _valid_ttl(ttl_s: float, name: str) -> float:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not math.isfinite(ttl_s) or ttl_s <= 0:
            raise ValueError(f"{name} must be a number of seconds > 0 (above the longest model call), got {ttl_s!r}")
        return float(ttl_s)

    # -- limits ------------------------------------------------------------

    @staticmethod
    def _limit_row(scope: Scope, limits: LimitConfig, now: float) -> tuple[Any, ...]:
        micro = None
        if limits.max_cost_usd is not None:
            micro = to_micro_floor(limits.max_cost_usd)
            if micro <= 0:
                raise ValueError(f"max_cost_usd={limits.max_cost_usd} for {scope} is below one micro-dollar ($0.000001)")
        return (scope.kind, scope.key, limits.max_output_tokens, limits.max_total_tokens, micro, now)

    def set_limits(self, scope: Scope, limits: LimitConfig) -> None:
        """Set (replace) a scope's limits; ``None`` fields are unlimited. Money limits are
        rounded down to whole micro-dollars."""
        row = self._limit_row(scope, limits, self._clock())
        with self._transaction(f"set limits of {scope}") as conn:
            conn.execute(
                "INSERT INTO scope_limits (kind, scope_key, max_output_tokens, max_total_tokens, max_micro_usd, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, scope_key) DO UPDATE SET "
                "max_output_tokens = excluded.max_output_tokens, max_total_tokens = excluded.max_total_tokens, "
                "max_micro_usd = excluded.max_micro_usd, updated_at = excluded.updated_at",
                row,
            )

    def limits(self, scope: Scope) -> LimitConfig | None:
        """The scope's limits, or ``None`` when none were set (unlimited)."""
        rows = self._query("SELECT * FROM scope_limits WHERE kind = ? AND scope_key = ?", (scope.kind, scope.key))
        if not rows:
            return None
        row = rows[0]
        usd = None if row["max_micro_usd"] is None else from_micro(row["max_micro_usd"])
        return LimitConfig(
            max_output_tokens=row["max_output_tokens"], max_total_tokens=row["max_total_tokens"], max_cost_usd=usd
        )

    def configure(
        self, budget: BudgetConfig, request_id: str, thread_id: str | None = None, user_id: str | None = None
    ) -> list[Scope]:
        """Set (replace) the limits of a request, and of its thread and user when given, from
        the configuration; returns the scopes to pass to :meth:`reserve`. To set limits only
        where a scope has none (keeping, say, a thread budget a chatbot chose), pass
        the scopes' limits to :meth:`ensure_limits` or ``reserve(..., limits=...)`` instead."""
        request = LimitConfig.model_validate(budget.model_dump(include=set(_LIMIT_NAMES)))
        scopes = {Scope("request", request_id): request}
        if thread_id:
            scopes[Scope("thread", thread_id)] = budget.thread
        if user_id:
            scopes[Scope("user", user_id)] = budget.user
        for scope, limits in scopes.items():
            self.set_limits(scope, limits)
        return list(scopes)

    def _missing_limit_rows(self, limits: Mapping[Scope, LimitConfig]) -> list[tuple[Any, ...]]:
        """Validated rows for the limits that limit something (an all-``None`` config is
        "unlimited", which a missing row already means)."""
        return [
            self._limit_row(scope, lim, 0.0)
            for scope, lim in limits.items()
            if any(getattr(lim, name) is not None for name in _LIMIT_NAMES)
        ]

    @staticmethod
    def _insert_missing_limits(conn: Any, rows: list[tuple[Any, ...]], now: float) -> list[Scope]:
        created: list[Scope] = []
        for row in rows:
            cur = conn.execute(
                "INSERT INTO scope_limits (kind, scope_key, max_output_tokens, max_total_tokens, max_micro_usd, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, scope_key) DO NOTHING",
                (*row[:-1], now),
            )
            if cur.rowcount:
                created.append(Scope(row[0], row[1]))
        return created

    def ensure_limits(self, limits: Mapping[Scope, LimitConfig]) -> list[Scope]:
        """Set limits, in one transaction, for the scopes that have none yet; a scope that has
        limits keeps them (:meth:`set_limits` replaces). Returns the scopes that were set.
        ``reserve(..., limits=...)`` does the same inside the reserving transaction."""
        rows = self._missing_limit_rows(limits)
        if not rows:
            return []
        with self._transaction("set missing limits") as conn:
            return self._insert_missing_limits(conn, rows, self._clock())

    # -- holds -------------------------------------------------------------

    def reserve(
        self,
        key: str,
        scopes: Sequence[Scope],
        worst: Usage,
        *,
        ttl_s: float | None = None,
        limits: Mapping[Scope, LimitConfig] | None = None,
    ) -> ReservationStatus:
        """Hold ``worst`` against every scope for ``ttl_s`` seconds (default: the ledger's
        ``default_ttl_s``), or raise :class:`BudgetExhausted` holding nothing.

        In one transaction (serialised with every other hold on any of ``scopes``, in
        this process or another): first every expired hold in the ledger is released (so the holds of a killed process free their room without any manual
        step), then ``limits`` are set for those of the scopes that have no limits yet (a
        scope that has limits keeps them; :meth:`set_limits` replaces), then every limited
        scope is checked and the hold written. A refusal writes no hold; the expired holds
        it released and the limits it set stay.

        Idempotent: when ``key`` is already held its status ``"reserved"`` is returned
        (and its expiry pushed to at least now + ``ttl_s``, as the step is running again);
        when it is settled, ``"committed"`` is returned and :meth:`settled` has its result.
        Nothing is charged again in either case. A released key is held afresh. Returns
        ``"reserved"`` for a new hold.
        """
        if not isinstance(key, str) or not key:
            raise ValueError(f"a reservation needs a non-empty string key, got {key!r}")
        if not isinstance(worst, Usage):
            raise TypeError(f"worst must be a Usage, got {type(worst).__name__}")
        unique = list(dict.fromkeys(scopes))
        if not unique:
            raise ValueError(f"reservation {key!r} names no scope; pass at least the request scope")
        ttl = self.default_ttl_s if ttl_s is None else self._valid_ttl(ttl_s, "ttl_s")
        new_limits: list[tuple[Any, ...]] = []
        if limits:
            stray = [str(s) for s in limits if s not in unique]
            if stray:
                raise ValueError(
                    f"limits name {', '.join(stray)}, which reservation {key!r} does not hold against; "
                    "pass those scopes in scopes too"
                )
            new_limits = self._missing_limit_rows(limits)

        refusal: BudgetExhausted | None = None
        locks = [f"{s.kind}:{s.key}" for s in unique]
        with self._transaction(f"reserve {key!r}", locks=locks) as conn:
            now = self._clock()
            totals: _Totals = {}
            swept = self._release_where(
                conn, totals, now, _EXPIRED, (now, now - self.default_ttl_s), skip_locked=True
            )
            row = conn.execute("SELECT status FROM reservations WHERE key = ?", (key,)).fetchone()
            status: ReservationStatus = "reserved" if row is None else row["status"]
            if status == "reserved" and row is not None:
                conn.execute(
                    "UPDATE reservations SET expires_at = ? WHERE key = ? AND (expires_at IS NULL OR expires_at < ?)",
                    (now + ttl, key, now + ttl),
                )
            elif status == "released" or row is None:
                if new_limits:
                    self._insert_missing_limits(conn, new_limits, now)
                refusal = self._check(conn, unique, worst, totals)
                if refusal is None:
                    status = "reserved"
                    self._hold(conn, key, unique, worst, now, now + ttl, fresh=row is None)
                    for s in unique:
                        _add(totals, (s.kind, s.key), held=_amounts(worst), holds=1)
            self._apply_totals(conn, totals)
        if swept:
            log.info("released %d expired budget hold(s) in %s (not settled before their expiry)", swept, self.location)
        if refusal is not None:
            raise refusal
        return status

    @staticmethod
    def _hold(
        conn: Any,
        key: str,
        scopes: list[Scope],
        worst: Usage,
        now: float,
        expires_at: float,
        *,
        fresh: bool,
    ) -> None:
        params = (key, worst.output_tokens, worst.total_tokens, worst.micro_usd, now, now, expires_at)
        if fresh:
            conn.execute(
                "INSERT INTO reservations (key, status, reserved_output_tokens, reserved_total_tokens, "
                "reserved_micro_usd, created_at, updated_at, expires_at) VALUES (?, 'reserved', ?, ?, ?, ?, ?, ?)",
                params,
            )
        else:  # a released key held afresh: a new hold on the same row
            conn.execute(
                "UPDATE reservations SET status = 'reserved', reserved_output_tokens = ?2, "
                "reserved_total_tokens = ?3, reserved_micro_usd = ?4, actual_output_tokens = NULL, "
                "actual_total_tokens = NULL, actual_micro_usd = NULL, result = NULL, created_at = ?5, "
                "updated_at = ?6, expires_at = ?7 WHERE key = ?1",
                params,
            )
            conn.execute("DELETE FROM reservation_scopes WHERE reservation_key = ?", (key,))
        conn.executemany(
            "INSERT INTO reservation_scopes (reservation_key, kind, scope_key) VALUES (?, ?, ?)",
            [(key, s.kind, s.key) for s in scopes],
        )

    @staticmethod
    def _check(conn: Any, scopes: list[Scope], worst: Usage, pending: _Totals) -> BudgetExhausted | None:
        """The refusal for the first scope (in the given order) that cannot cover ``worst``.
        ``pending``: changes to the totals this transaction has made but not written yet
        (the holds it swept), counted as written."""
        params = [v for i, s in enumerate(scopes) for v in (i, s.kind, s.key)]
        for t in conn.execute(_check_sql(len(scopes)), params).fetchall():
            scope = scopes[t["pos"]]
            d = pending.get((scope.kind, scope.key), [0] * len(_TOTALS_COLUMNS))  # spent (0-2) and held (3-5)
            for name, cap, used, need in (
                ("max_output_tokens", t["max_output_tokens"], t["u_out"] + d[0] + d[3], worst.output_tokens),
                ("max_total_tokens", t["max_total_tokens"], t["u_tot"] + d[1] + d[4], worst.total_tokens),
                ("max_cost_usd", t["max_micro_usd"], t["u_usd"] + d[2] + d[5], worst.micro_usd),
            ):
                if cap is not None and used + need > cap:
                    return BudgetExhausted(scope, name, needed=need, remaining=cap - used, limit_value=cap, used=used)
        return None

    def commit(self, key: str, actual: Usage, *, result: Mapping[str, Any] | None = None) -> None:
        """Settle the hold ``key``: record ``actual`` as spent and keep ``result`` (JSON-plain,
        e.g. the completion's text, usage and logprobs) for :meth:`settled`.

        Exactly once: committing a committed key again changes nothing (the first
        settlement and result stand). A hold that was released before it was settled
        (it expired, or :meth:`release_stale` freed it) is still recorded, with an
        ERROR log, since the provider billed the call: the spend may then take a scope
        past its cap, and ``ttl_s`` should be raised above the longest call. An
        ``actual`` above the hold is recorded too and logged as an ERROR (the hold was
        not a true bound: a defect to fix). An unknown key raises :class:`LedgerError`.
        On PostgreSQL a settlement whose connection is lost on the way is retried once on
        a fresh one (settling is idempotent), so billed spend is not lost to a dropped
        connection.
        """
        if not isinstance(actual, Usage):
            raise TypeError(f"actual must be a Usage, got {type(actual).__name__}")
        payload = None
        if result is not None:
            if not isinstance(result, Mapping):
                raise TypeError(f"result must be a mapping (JSON object), got {type(result).__name__}")
            try:
                payload = json.dumps(dict(result), ensure_ascii=False, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"result of {key!r} cannot be stored as JSON ({exc}); pass plain str/int/float/bool/None, "
                    "lists and dicts (money as decimal strings)"
                ) from exc

        def settle(conn: Any) -> Row | None:
            # Locked on PostgreSQL: a concurrent settlement or sweep of the key waits, so the
            # status read here is the one this settlement changes (and the totals move once).
            row = conn.execute(
                "SELECT status, reserved_output_tokens, reserved_total_tokens, reserved_micro_usd, expires_at, "
                f"updated_at FROM reservations WHERE key = ?{self._lock_suffix()}",
                (key,),
            ).fetchone()
            if row is None:
                raise LedgerError(f"no reservation {key!r} in {self.location}; reserve before committing")
            if row["status"] == "committed":
                return None
            updated = conn.execute(
                "UPDATE reservations SET status = 'committed', actual_output_tokens = ?, actual_total_tokens = ?, "
                "actual_micro_usd = ?, result = ?, updated_at = ? WHERE key = ? AND status <> 'committed'",
                (actual.output_tokens, actual.total_tokens, actual.micro_usd, payload, self._clock(), key),
            ).rowcount
            if not updated:
                return None
            # Spent on every scope of the hold; a hold still outstanding leaves "held" (one
            # released before it was settled no longer counted there).
            outstanding = row["status"] == "reserved"
            held = (-row["reserved_output_tokens"], -row["reserved_total_tokens"], -row["reserved_micro_usd"])
            totals: _Totals = {}
            for _, kind, scope_key in self._scopes_of(conn, [key]):
                _add(
                    totals,
                    (kind, scope_key),
                    spent=_amounts(actual),
                    held=held if outstanding else (0, 0, 0),
                    holds=-1 if outstanding else 0,
                )
            self._apply_totals(conn, totals)
            return row

        row = self._run(f"commit {key!r}", settle, retry=True)
        if row is None:
            return
        worst = Usage(row["reserved_output_tokens"], row["reserved_total_tokens"], row["reserved_micro_usd"])
        if row["status"] == "released":
            expired = row["expires_at"] is not None and row["updated_at"] >= row["expires_at"]
            why = (
                f"it expired at {_when(row['expires_at'])}"
                if expired
                else f"it was released at {_when(row['updated_at'])}"
            )
            log.error(
                "budget hold %r in %s was released before it was settled (%s); recorded its spend of %s anyway "
                "because the provider billed it, so its scopes may now be past their caps: raise ttl_s above the "
                "longest model call, and settle or release every hold exactly once",
                key, self.location, why, format_usd(actual.cost_usd, symbol=True),
            )
        if actual.exceeds(worst):
            log.error(
                "budget hold %r: actual usage (%d output tokens, %d tokens, %s) exceeds the held worst case "
                "(%d output tokens, %d tokens, %s); recorded what the provider billed. The hold was not a true "
                "upper bound, which is a defect: tighten the bound",
                key, actual.output_tokens, actual.total_tokens, format_usd(actual.cost_usd, symbol=True),
                worst.output_tokens, worst.total_tokens, format_usd(worst.cost_usd, symbol=True),
            )

    def settled(self, key: str) -> tuple[Usage, dict[str, Any] | None] | None:
        """The settled actual usage and stored result of a committed key (the result is
        ``None`` when ``commit`` was given none); ``None`` when the key is not committed."""
        rows = self._query(
            "SELECT actual_output_tokens, actual_total_tokens, actual_micro_usd, result FROM reservations "
            "WHERE key = ? AND status = 'committed'",
            (key,),
        )
        if not rows:
            return None
        row = rows[0]
        usage = Usage(row["actual_output_tokens"], row["actual_total_tokens"], row["actual_micro_usd"])
        if row["result"] is None:
            return usage, None
        try:
            return usage, json.loads(row["result"])
        except ValueError as exc:
            raise LedgerError(
                f"the stored result of {key!r} in {self.location} is not valid JSON ({exc}); the database was "
                "changed outside the ledger"
            ) from exc

    def release(self, key: str) -> None:
        """Free a hold. A no-op for a released, committed (the money was spent) or
        unknown key, so it is safe in cleanup code (and retried once on PostgreSQL when
        the connection is lost on the way)."""
        now = self._clock()

        def free(conn: Any) -> None:
            totals: _Totals = {}
            self._release_where(conn, totals, now, "key = ? AND status = 'reserved'", (key,), skip_locked=False)
            self._apply_totals(conn, totals)

        self._run(f"release {key!r}", free, retry=True)

    def status(self, key: str) -> ReservationStatus | None:
        """``"reserved"``, ``"committed"``, ``"released"``, or ``None`` for an unknown key."""
        rows = self._query("SELECT status FROM reservations WHERE key = ?", (key,))
        return rows[0]["status"] if rows else None

    @contextlib.contextmanager
    def reservation(
        self,
        key: str,
        scopes: Sequence[Scope],
        worst: Usage,
        *,
        ttl_s: float | None = None,
        limits: Mapping[Scope, LimitConfig] | None = None,
    ) -> Iterator[Reservation]:
        """Reserve on enter; the body calls ``.commit(actual, result=...)``. On an exception,
        or when the body neither commits nor raises, the hold is released, so none is left
        behind."""
        handle = Reservation(self, key, self.reserve(key, scopes, worst, ttl_s=ttl_s, limits=limits))
        try:
            yield handle
        except BaseException:
            try:
                self.release(key)
            except Exception:  # never mask the body's error
                log.exception("could not release reservation %r after a failure", key)
            raise
        self.release(key)

    def release_stale(self, older_than_s: float | None = None, *, now: float | None = None) -> int:
        """Release holds that outlived their time; returns how many.

        With ``older_than_s=None``: the holds whose expiry has passed (holds written
        before expiries existed count as expiring ``default_ttl_s`` after they were taken).
        ``reserve`` already does this on every call, so this is for a ledger nobody is
        reserving on. With a number: every hold taken more than ``older_than_s`` seconds
        ago, whatever its expiry (pick a threshold above the longest call). On PostgreSQL a
        hold that another transaction is settling or sweeping at that moment is left to it."""
        now = self._clock() if now is None else now
        if older_than_s is None:
            condition, params = _EXPIRED, (now, now - self.default_ttl_s)
        elif older_than_s < 0:
            raise ValueError(f"older_than_s must be >= 0, got {older_than_s}")
        else:
            condition, params = _TAKEN_BEFORE, (now - older_than_s,)
        with self._transaction("release stale reservations") as conn:
            totals: _Totals = {}
            released = self._release_where(conn, totals, now, condition, params, skip_locked=True)
            self._apply_totals(conn, totals)
            return released

    # -- reading -----------------------------------------------------------

    def _read_params(self, scope: Scope, now: float) -> dict[str, Any]:
        return {"kind": scope.kind, "key": scope.key, "now": now, "stale": now - self.default_ttl_s}

    def _totals(self, scope: Scope) -> Row:
        """Spent (``s_*``) and held (``r_*``, holds past their expiry left out), ``holds`` and
        ``expired_holds`` of one scope, from its running totals."""
        return self._query(_SCOPE_READ_SQL, self._read_params(scope, self._clock()))[0]

    def spent(self, scope: Scope) -> Usage:
        """Committed actual usage of the scope."""
        t = self._totals(scope)
        return Usage(t["s_out"], t["s_tot"], t["s_usd"])

    def reserved(self, scope: Scope) -> Usage:
        """Worst cases held by outstanding holds of the scope."""
        t = self._totals(scope)
        return Usage(t["r_out"], t["r_tot"], t["r_usd"])

    def holds(self, scope: Scope) -> list[dict[str, Any]]:
        """The scope's outstanding holds, oldest first, for diagnostics: ``key``, ``held``
        (``output_tokens``, ``total_tokens``, ``cost_usd`` as a decimal string),
        ``created_at`` and ``expires_at`` (Unix seconds; ``None`` for a hold from before
        expiries existed)."""
        rows = self._query(
            "SELECT r.key, r.reserved_output_tokens, r.reserved_total_tokens, r.reserved_micro_usd, "
            "r.created_at, r.expires_at FROM reservations r JOIN reservation_scopes s "
            "ON s.reservation_key = r.key AND s.kind = ? AND s.scope_key = ? "
            "WHERE r.status = 'reserved' ORDER BY r.created_at, r.key",
            (scope.kind, scope.key),
        )
        return [
            {
                "key": row["key"],
                "held": _usage_json(
                    row["reserved_output_tokens"], row["reserved_total_tokens"], row["reserved_micro_usd"]
                ),
                "created_at": row["created_at"],
                "expires_at": row["expires_at"],
            }
            for row in rows
        ]

    def show(self, scope: Scope) -> dict[str, Any]:
        """One scope's budget as JSON-plain values, read in one snapshot::

            {"scope": "thread:t1",
             "limits":    {"output_tokens": 1000 | None, "total_tokens": ..., "cost_usd": "0.05" | None},
             "spent":     {"output_tokens": 120, "total_tokens": 900, "cost_usd": "0.0012"},
             "held":      {...},                     # outstanding holds' worst cases
             "remaining": {... | None},             # limit - spent - held, never below 0; None = unlimited
             "holds": 2,                             # outstanding holds
             "expired_holds": 0}                     # of those, past their expiry (released on the next reserve)

        Money is a plain decimal string (:func:`format_usd`)."""
        now = self._clock()

        def read(conn: Any) -> tuple[Row, Row | None]:
            t = conn.execute(_SCOPE_READ_SQL, self._read_params(scope, now)).fetchone()
            lim = conn.execute(
                "SELECT max_output_tokens, max_total_tokens, max_micro_usd FROM scope_limits "
                "WHERE kind = ? AND scope_key = ?",
                (scope.kind, scope.key),
            ).fetchone()
            return t, lim

        t, lim = self._read(f"show {scope}", read, snapshot=True)
        spent = (t["s_out"], t["s_tot"], t["s_usd"])
        held = (t["r_out"], t["r_tot"], t["r_usd"])
        caps = (None, None, None) if lim is None else (lim[0], lim[1], lim[2])
        left = [None if cap is None else max(cap - s - h, 0) for cap, s, h in zip(caps, spent, held)]

        def quantities(values: Sequence[int | None]) -> dict[str, Any]:
            out, tot, usd = values
            return {
                "output_tokens": out,
                "total_tokens": tot,
                "cost_usd": None if usd is None else format_usd(from_micro(usd)),
            }

        return {
            "scope": str(scope),
            "limits": quantities(caps),
            "spent": quantities(spent),
            "held": quantities(held),
            "remaining": quantities(left),
            "holds": t["holds"],
            "expired_holds": t["expired_holds"],
        }

    def remaining(self, scope: Scope) -> dict[str, dict[str, Any]]:
        """Per limit: ``limit``, ``used`` (committed), ``reserved`` and ``remaining`` (never
        below 0); ``None`` limit and remaining when unlimited. Money as USD decimal strings."""
        with self._lock:
            t = self._totals(scope)
            lim = self.limits(scope)
        out: dict[str, dict[str, Any]] = {}
        for name, used, held in (
            ("max_output_tokens", t["s_out"], t["r_out"]),
            ("max_total_tokens", t["s_tot"], t["r_tot"]),
            ("max_cost_usd", t["s_usd"], t["r_usd"]),
        ):
            raw = getattr(lim, name) if lim is not None else None
            money = name == "max_cost_usd"
            cap = None if raw is None else (to_micro(raw) if money else raw)
            left = None if cap is None else max(cap - used - held, 0)
            conv = (lambda v: None if v is None else str(from_micro(v))) if money else (lambda v: v)
            out[name] = {"limit": conv(cap), "used": conv(used), "reserved": conv(held), "remaining": conv(left)}
        return out
