"""Budget ledger: reserve the worst case before a model call, commit what it really cost.

Money is kept in integer micro-dollars (``1 USD = 1_000_000``); amounts are rounded
UP when converted (:func:`to_micro`), so a reservation never under-counts, and
limits are rounded DOWN, so a cap is never raised by rounding.

A request touches several scopes at once (the request itself, its conversation
thread, the user / API key). :meth:`BudgetLedger.reserve` checks, in one
``BEGIN IMMEDIATE`` transaction, that for every scope

    committed actual + outstanding reservations + this worst case <= limit

for each limited quantity (output tokens, total tokens, dollars), and writes the
reservation only when all fit. SQLite's write lock serialises that check across
threads, ledger instances and processes, so concurrent requests can never
together overspend a cap. Reservations are keyed by an idempotency key: LangGraph
may re-run a node after a retry or an interrupt, and re-running ``reserve`` /
``commit`` with the same key never charges twice.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, get_args

from effreason_agents.config import BudgetConfig, LimitConfig
from effreason_agents.core.money import format_usd, from_micro, to_micro, to_micro_floor
from effreason_agents.core.records import Scope, ScopeKind, Usage
from effreason_agents.errors import EffReasonError
from effreason_agents.adapters.sqlite import SQLiteFile

__all__ = [
    "MIGRATIONS",
    "BudgetExhausted",
    "BudgetLedger",
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
_LIMIT_NAMES = ("max_output_tokens", "max_total_tokens", "max_cost_usd")


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class LedgerError(EffReasonError):
    """The budget ledger could not be opened or written, or a reservation was misused."""


class BudgetExhausted(EffReasonError):
    """A scope's budget cannot cover the worst case of the next model call.

    ``limit`` names the limit (``max_output_tokens``, ``max_total_tokens`` or
    ``max_cost_usd``); ``needed`` is the worst case asked for and ``remaining``
    what was left (ints for tokens, ``Decimal`` USD for money); ``limit_value`` and
    ``used`` (committed + reserved) complete the picture. The message can be shown
    to the end user as is.
    """

    def __init__(self, scope: Scope, limit: str, *, needed: int, remaining: int, limit_value: int, used: int) -> None:
        money = limit == "max_cost_usd"
        unit = {"max_output_tokens": "output tokens", "max_total_tokens": "tokens"}.get(limit, "")

        def fmt(v: int) -> str:
            return format_usd(from_micro(v), symbol=True) if money else f"{v} {unit}"

        if remaining <= 0:
            head = format_usd(from_micro(used), symbol=True) if money else str(used)
            msg = f"the {scope.kind} budget is spent: {head} of {fmt(limit_value)} used"
        else:
            msg = (
                f"the {scope.kind} budget is nearly spent: the next step may need up to {fmt(needed)}, "
                f"but only {fmt(remaining)} of {fmt(limit_value)} is left"
            )
        super().__init__(msg)
        self.scope = scope
        self.limit = limit
        self.needed: int | Decimal = from_micro(needed) if money else needed
        self.remaining: int | Decimal = from_micro(max(remaining, 0)) if money else max(remaining, 0)
        self.limit_value: int | Decimal = from_micro(limit_value) if money else limit_value
        self.used: int | Decimal = from_micro(used) if money else used


# --------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------

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
]

_SCOPE_TOTALS_SQL = """
SELECT
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_output_tokens END), 0) AS s_out,
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_total_tokens END), 0) AS s_tot,
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_micro_usd END), 0) AS s_usd,
  COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_output_tokens END), 0) AS r_out,
  COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_total_tokens END), 0) AS r_tot,
  COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_micro_usd END), 0) AS r_usd
FROM reservation_scopes s JOIN reservations r ON r.key = s.reservation_key
WHERE s.kind = ? AND s.scope_key = ?
"""


@dataclass
class Reservation:
    """Handle given by :meth:`BudgetLedger.reservation`. ``status`` is what ``reserve``
    returned: ``"committed"`` means this step already ran and was paid for (a re-run)."""

    ledger: BudgetLedger = field(repr=False)
    key: str
    status: ReservationStatus

    @property
    def already_committed(self) -> bool:
        return self.status == "committed"

    def commit(self, actual: Usage) -> None:
        self.ledger.commit(self.key, actual)
        self.status = "committed"

    def release(self) -> None:
        self.ledger.release(self.key)
        if self.status == "reserved":
            self.status = "released"


class BudgetLedger(SQLiteFile):
    """Per-scope limits, reservations and spend in one SQLite file (WAL).

    One connection guarded by a lock, so an instance can be shared by threads;
    separate instances and processes on the same file coordinate through SQLite's
    write lock (every check-and-write is one ``BEGIN IMMEDIATE`` transaction) and
    the busy timeout.
    """

    kind = "budget ledger"
    error = LedgerError
    migrations = MIGRATIONS

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise LedgerError(f"budget ledger path {self.path} is a directory; point it at a file inside it")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open budget ledger {self.path}: {exc}; check the path and its permissions") from exc
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._prepare(timeout_s)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise LedgerError(
                f"{self.path} is not a usable budget ledger ({exc}); move the file away or set budget.ledger_path"
            ) from exc
        except BaseException:
            self.close()
            raise

    # -- limits ------------------------------------------------------------

    def set_limits(self, scope: Scope, limits: LimitConfig) -> None:
        """Set (replace) a scope's limits; ``None`` fields are unlimited. Money limits are
        rounded down to whole micro-dollars."""
        micro = None
        if limits.max_cost_usd is not None:
            micro = to_micro_floor(limits.max_cost_usd)
            if micro <= 0:
                raise ValueError(f"max_cost_usd={limits.max_cost_usd} for {scope} is below one micro-dollar ($0.000001)")
        with self._transaction(f"set limits of {scope}") as conn:
            conn.execute(
                "INSERT INTO scope_limits (kind, scope_key, max_output_tokens, max_total_tokens, max_micro_usd, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, scope_key) DO UPDATE SET "
                "max_output_tokens = excluded.max_output_tokens, max_total_tokens = excluded.max_total_tokens, "
                "max_micro_usd = excluded.max_micro_usd, updated_at = excluded.updated_at",
                (scope.kind, scope.key, limits.max_output_tokens, limits.max_total_tokens, micro, time.time()),
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
        """Set the limits of a request (and its thread and user, when given) from the
        configuration; returns the scopes to pass to :meth:`reserve`."""
        scopes = [(Scope("request", request_id), LimitConfig.model_validate(budget.model_dump(include=set(_LIMIT_NAMES))))]
        if thread_id:
            scopes.append((Scope("thread", thread_id), budget.thread))
        if user_id:
            scopes.append((Scope("user", user_id), budget.user))
        for scope, limits in scopes:
            self.set_limits(scope, limits)
        return [scope for scope, _ in scopes]

    # -- reservations ------------------------------------------------------

    def reserve(self, key: str, scopes: Sequence[Scope], worst: Usage) -> ReservationStatus:
        """Hold ``worst`` against every scope, or raise :class:`BudgetExhausted` writing nothing.

        Idempotent: when ``key`` is already reserved or committed its status is returned
        and nothing is charged again. A released key is reserved afresh (its earlier hold
        was freed). Returns ``"reserved"`` for a new hold.
        """
        if not isinstance(key, str) or not key:
            raise ValueError(f"a reservation needs a non-empty string key, got {key!r}")
        if not isinstance(worst, Usage):
            raise TypeError(f"worst must be a Usage, got {type(worst).__name__}")
        unique = list(dict.fromkeys(scopes))
        if not unique:
            raise ValueError(f"reservation {key!r} names no scope; pass at least the request scope")
        with self._transaction(f"reserve {key!r}") as conn:
            row = conn.execute("SELECT status FROM reservations WHERE key = ?", (key,)).fetchone()
            if row is not None and row["status"] != "released":
                return row["status"]
            for scope in unique:
                self._check(conn, scope, worst)
            now = time.time()
            conn.execute(
                "INSERT INTO reservations (key, status, reserved_output_tokens, reserved_total_tokens, "
                "reserved_micro_usd, created_at, updated_at) VALUES (?, 'reserved', ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET status = 'reserved', "
                "reserved_output_tokens = excluded.reserved_output_tokens, "
                "reserved_total_tokens = excluded.reserved_total_tokens, "
                "reserved_micro_usd = excluded.reserved_micro_usd, actual_output_tokens = NULL, "
                "actual_total_tokens = NULL, actual_micro_usd = NULL, updated_at = excluded.updated_at",
                (key, worst.output_tokens, worst.total_tokens, worst.micro_usd, now, now),
            )
            conn.execute("DELETE FROM reservation_scopes WHERE reservation_key = ?", (key,))
            conn.executemany(
                "INSERT INTO reservation_scopes (reservation_key, kind, scope_key) VALUES (?, ?, ?)",
                [(key, s.kind, s.key) for s in unique],
            )
        return "reserved"

    def _check(self, conn: sqlite3.Connection, scope: Scope, worst: Usage) -> None:
        lim = conn.execute(
            "SELECT * FROM scope_limits WHERE kind = ? AND scope_key = ?", (scope.kind, scope.key)
        ).fetchone()
        if lim is None:
            return
        t = conn.execute(_SCOPE_TOTALS_SQL, (scope.kind, scope.key)).fetchone()
        for name, column, held, need in (
            ("max_output_tokens", "max_output_tokens", t["s_out"] + t["r_out"], worst.output_tokens),
            ("max_total_tokens", "max_total_tokens", t["s_tot"] + t["r_tot"], worst.total_tokens),
            ("max_cost_usd", "max_micro_usd", t["s_usd"] + t["r_usd"], worst.micro_usd),
        ):
            cap = lim[column]
            if cap is not None and held + need > cap:
                raise BudgetExhausted(scope, name, needed=need, remaining=cap - held, limit_value=cap, used=held)

    def commit(self, key: str, actual: Usage) -> None:
        """Turn a reservation into spend of ``actual`` (which may differ from the worst case).

        Committing a committed key again is a no-op; a released or unknown key raises
        :class:`LedgerError`.
        """
        if not isinstance(actual, Usage):
            raise TypeError(f"actual must be a Usage, got {type(actual).__name__}")
        with self._transaction(f"commit {key!r}") as conn:
            row = conn.execute("SELECT * FROM reservations WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise LedgerError(f"no reservation {key!r} in {self.path}; reserve before committing")
            if row["status"] == "committed":
                return
            if row["status"] == "released":
                raise LedgerError(
                    f"reservation {key!r} was released (failed step or stale), so its spend cannot be committed; "
                    "reserve again before running the step"
                )
            worst = Usage(row["reserved_output_tokens"], row["reserved_total_tokens"], row["reserved_micro_usd"])
            if actual.exceeds(worst):
                log.warning("reservation %r: actual usage %s exceeds the reserved worst case %s", key, actual, worst)
            conn.execute(
                "UPDATE reservations SET status = 'committed', actual_output_tokens = ?, actual_total_tokens = ?, "
                "actual_micro_usd = ?, updated_at = ? WHERE key = ?",
                (actual.output_tokens, actual.total_tokens, actual.micro_usd, time.time(), key),
            )

    def release(self, key: str) -> None:
        """Free a reservation. A no-op for a released, committed (the money was spent) or
        unknown key, so it is safe in cleanup code."""
        with self._transaction(f"release {key!r}") as conn:
            conn.execute(
                "UPDATE reservations SET status = 'released', updated_at = ? WHERE key = ? AND status = 'reserved'",
                (time.time(), key),
            )

    def status(self, key: str) -> ReservationStatus | None:
        rows = self._query("SELECT status FROM reservations WHERE key = ?", (key,))
        return rows[0]["status"] if rows else None

    @contextlib.contextmanager
    def reservation(self, key: str, scopes: Sequence[Scope], worst: Usage) -> Iterator[Reservation]:
        """Reserve on enter; the body calls ``.commit(actual)``. On an exception, or when the
        body neither commits nor raises, the hold is released, so none is left behind."""
        handle = Reservation(self, key, self.reserve(key, scopes, worst))
        try:
            yield handle
        except BaseException:
            try:
                self.release(key)
            except Exception:  # never mask the body's error
                log.exception("could not release reservation %r after a failure", key)
            raise
        self.release(key)

    def release_stale(self, older_than_s: float, *, now: float | None = None) -> int:
        """Release reservations left ``reserved`` for more than ``older_than_s`` seconds
        (by a crashed process); returns how many. Pick a threshold above the longest call."""
        if older_than_s < 0:
            raise ValueError(f"older_than_s must be >= 0, got {older_than_s}")
        now = time.time() if now is None else now
        with self._transaction("release stale reservations") as conn:
            cur = conn.execute(
                "UPDATE reservations SET status = 'released', updated_at = ? "
                "WHERE status = 'reserved' AND updated_at < ?",
                (now, now - older_than_s),
            )
            return cur.rowcount

    # -- reading -----------------------------------------------------------

    def _totals(self, scope: Scope) -> sqlite3.Row:
        return self._query(_SCOPE_TOTALS_SQL, (scope.kind, scope.key))[0]

    def spent(self, scope: Scope) -> Usage:
        """Committed actual usage of the scope."""
        t = self._totals(scope)
        return Usage(t["s_out"], t["s_tot"], t["s_usd"])

    def reserved(self, scope: Scope) -> Usage:
        """Worst cases held by outstanding reservations of the scope."""
        t = self._totals(scope)
        return Usage(t["r_out"], t["r_tot"], t["r_usd"])

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
