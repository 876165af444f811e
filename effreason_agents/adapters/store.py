"""Outcome store: one row per request and one per attempt, in a SQLite file or a
PostgreSQL database (pooled logs of every replica).

Records cross a boundary (the database, the CLI's JSON), so they are pydantic
models. Money is a decimal string (``"0.000123"``), never a summed float.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from effreason_agents.adapters.database import Database, Row
from effreason_agents.errors import StoreError

__all__ = [
    "MIGRATIONS",
    "BenchResult",
    "BenchRun",
    "AttemptRecord",
    "OutcomeStore",
    "POSTGRES_EXTRA",
    "PRIMARY_KEYS",
    "RequestRecord",
    "RequestStatus",
    "TABLES",
    "open_store",
    "utc_now",
]

RequestStatus = Literal["answered", "low_confidence", "failed", "budget_exhausted"]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AttemptRecord(BaseModel):
    """One arm run on one query."""

    model_config = ConfigDict(extra="forbid")

    attempt_id: str
    request_id: str
    index: int = Field(ge=0, description="position among the request's attempts")
    arm: str
    tier: str
    model: str
    engine: str
    strategy: str
    max_tokens: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: str = "0"
    latency_s: float = 0.0
    finish_reason: str | None = None
    confidence: float | None = None
    confidence_method: str | None = None
    signals: dict[str, float | None] = Field(default_factory=dict)
    answer: str | None = None
    answer_method: str | None = Field(default=None, description="how the answer was read from the reply")
    raw_text: str = ""
    error: str | None = None
    error_kind: str | None = Field(default=None, description="unreachable, timeout, rate_limited, server_error, ...")
    logprobs: list[dict[str, Any]] | None = Field(
        default=None, description="per generated token: token, logprob, top alternatives"
    )
    truncated: bool = Field(default=False, description="the reply was cut by its token cap (finish_reason 'length')")
    retry_of: int | None = Field(default=None, description="index of the truncated attempt this one retried")
    budget_tokens: int | None = Field(default=None, description="budget-cot: the N in 'use less than N tokens'")
    budget_method: str | None = Field(default=None, description="how that N was estimated")
    threshold: float | None = Field(default=None, description="the confidence threshold this attempt was judged by")
    samples: list[str | None] | None = Field(default=None, description="sc: the answer of each sample drawn")
    samples_cap: int | None = Field(default=None, description="sc: the most samples the arm could draw")
    usage_missing: bool = Field(
        default=False, description="the tier reported no readable usage: tokens and cost are the held worst case"
    )
    created_at: str = Field(default_factory=utc_now)


class BenchRun(BaseModel):
    """One benchmark run: which items and arms, under which configuration."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    out_dir: str
    suite: str
    arms: list[str]
    config_version: str
    created_at: str = Field(default_factory=utc_now)
    meta: dict[str, Any] = Field(default_factory=dict)


class BenchResult(BaseModel):
    """One item answered by one arm (or the graph) in a benchmark run, with its grade."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    item_id: str
    arm: str
    request_id: str | None = None
    question: str
    gold: str
    answer_type: str
    difficulty: str | None = None
    predicted: str | None = None
    correct: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: str = "0"
    latency_s: float = 0.0
    attempts: int = 1
    escalated: bool = False
    large_calls: int = 0
    created_at: str = Field(default_factory=utc_now)


class RequestRecord(BaseModel):
    """One question through the graph."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    question: str
    final_answer: str | None = None
    final_attempt_index: int | None = None
    status: RequestStatus
    difficulty: str | None = None
    arms_tried: list[str] = Field(default_factory=list)
    escalated: bool = False
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cost_usd: str = "0"
    graph_version: str
    config_version: str
    thread_id: str | None = None
    user_id: str | None = None
    started_at: str
    finished_at: str = Field(default_factory=utc_now)
    extra: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------

# Named, append-only migrations (the simonw/llm style): never edit or reorder
# an entry once released; add a new one at the end instead.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_requests_and_attempts",
        """
        CREATE TABLE requests (
            request_id TEXT PRIMARY KEY,
            question TEXT NOT NULL,
            final_answer TEXT,
            final_attempt_index INTEGER,
            status TEXT NOT NULL,
            difficulty TEXT,
            arms_tried TEXT NOT NULL DEFAULT '[]',
            escalated INTEGER NOT NULL DEFAULT 0,
            total_input_tokens INTEGER NOT NULL DEFAULT 0,
            total_output_tokens INTEGER NOT NULL DEFAULT 0,
            total_cost_usd TEXT NOT NULL DEFAULT '0',
            graph_version TEXT NOT NULL,
            config_version TEXT NOT NULL,
            thread_id TEXT,
            user_id TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            extra TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX idx_requests_started_at ON requests(started_at);
        CREATE TABLE attempts (
            attempt_id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL REFERENCES requests(request_id) ON DELETE CASCADE,
            attempt_index INTEGER NOT NULL,
            arm TEXT NOT NULL,
            tier TEXT NOT NULL,
            model TEXT NOT NULL,
            engine TEXT NOT NULL,
            strategy TEXT NOT NULL,
            max_tokens INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd TEXT NOT NULL DEFAULT '0',
            latency_s REAL NOT NULL DEFAULT 0,
            finish_reason TEXT,
            confidence REAL,
            confidence_method TEXT,
            signals TEXT NOT NULL DEFAULT '{}',
            answer TEXT,
            raw_text TEXT NOT NULL DEFAULT '',
            error TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (request_id, attempt_index)
        );
        CREATE INDEX idx_attempts_request_id ON attempts(request_id);
        """,
    ),
    (
        "0002_attempt_logprobs_answer_method_error_kind",
        """
        ALTER TABLE attempts ADD COLUMN answer_method TEXT;
        ALTER TABLE attempts ADD COLUMN error_kind TEXT;
        ALTER TABLE attempts ADD COLUMN logprobs TEXT;
        """,
    ),
    (
        "0003_bench_runs_and_results",
        """
        CREATE TABLE bench_runs (
            run_id TEXT PRIMARY KEY,
            out_dir TEXT NOT NULL,
            suite TEXT NOT NULL,
            arms TEXT NOT NULL DEFAULT '[]',
            config_version TEXT NOT NULL,
            created_at TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE bench_results (
            run_id TEXT NOT NULL REFERENCES bench_runs(run_id) ON DELETE CASCADE,
            item_id TEXT NOT NULL,
            arm TEXT NOT NULL,
            request_id TEXT REFERENCES requests(request_id),
            question TEXT NOT NULL,
            gold TEXT NOT NULL,
            answer_type TEXT NOT NULL,
            difficulty TEXT,
            predicted TEXT,
            correct INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd TEXT NOT NULL DEFAULT '0',
            latency_s REAL NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 1,
            escalated INTEGER NOT NULL DEFAULT 0,
            large_calls INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, item_id, arm)
        );
        """,
    ),
    (
        "0004_attempt_truncation_and_budget",
        """
        ALTER TABLE attempts ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE attempts ADD COLUMN retry_of INTEGER;
        ALTER TABLE attempts ADD COLUMN budget_tokens INTEGER;
        ALTER TABLE attempts ADD COLUMN budget_method TEXT;
        """,
    ),
    (
        "0005_attempt_threshold_and_samples",
        """
        ALTER TABLE attempts ADD COLUMN threshold REAL;
        ALTER TABLE attempts ADD COLUMN samples TEXT;
        ALTER TABLE attempts ADD COLUMN samples_cap INTEGER;
        """,
    ),
    (
        "0006_attempt_usage_missing",
        """
        ALTER TABLE attempts ADD COLUMN usage_missing INTEGER NOT NULL DEFAULT 0;
        """,
    ),
]

# PostgreSQL-only statements run after a migration's own. SQLite numbers every row (rowid)
# and the store orders requests and benchmark rows by it; PostgreSQL gets such a column.
POSTGRES_EXTRA: dict[str, list[str]] = {
    "0001_requests_and_attempts": [
        "ALTER TABLE requests ADD COLUMN rowid BIGSERIAL",
        "CREATE UNIQUE INDEX idx_requests_rowid ON requests(rowid)",
    ],
    "0003_bench_runs_and_results": [
        "ALTER TABLE bench_runs ADD COLUMN rowid BIGSERIAL",
        "ALTER TABLE bench_results ADD COLUMN rowid BIGSERIAL",
        "CREATE UNIQUE INDEX idx_bench_results_rowid ON bench_results(rowid)",
    ],
}

TABLES: tuple[str, ...] = ("requests", "attempts", "bench_runs", "bench_results")
"""The store's tables in foreign-key order: copy them in this order."""

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "requests": ("request_id",),
    "attempts": ("attempt_id",),
    "bench_runs": ("run_id",),
    "bench_results": ("run_id", "item_id", "arm"),
}

_JSON_COLUMNS = frozenset({"arms_tried", "extra", "signals", "logprobs", "arms", "meta", "samples"})
_BOOL_COLUMNS = frozenset({"escalated", "correct", "truncated", "usage_missing"})
_MONEY_FIELDS = ("total_cost_usd", "cost_usd")
# Record field -> column name, where they differ (``index`` is an SQL keyword).
_ATTEMPT_RENAMES = {"index": "attempt_index"}


def _encode(model: BaseModel, renames: dict[str, str] | None = None) -> dict[str, Any]:
    renames = renames or {}
    row: dict[str, Any] = {}
    for field, value in model.model_dump(mode="json").items():
        if field in _JSON_COLUMNS:
            value = json.dumps(value, ensure_ascii=False)
        elif field in _BOOL_COLUMNS:
            value = int(value)
        elif field in _MONEY_FIELDS:
            value = _check_money(field, value)
        row[renames.get(field, field)] = value
    return row


def _decode(row: Row, renames: dict[str, str] | None = None) -> dict[str, Any]:
    back = {column: field for field, column in (renames or {}).items()}
    data: dict[str, Any] = {}
    for column in row.keys():
        if column == "rowid":  # PostgreSQL's row number: order, not part of a record
            continue
        value = row[column]
        if column in _JSON_COLUMNS:
            value = None if value is None else json.loads(value)
        elif column in _BOOL_COLUMNS:
            value = bool(value)
        data[back.get(column, column)] = value
    return data


def _check_money(field: str, value: str) -> str:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise StoreError(f"{field}={value!r} is not a decimal amount; pass money as a string like '0.000123'")
    return value


def _insert_sql(table: str, row: dict[str, Any]) -> str:
    columns = ", ".join(row)
    placeholders = ", ".join(f":{column}" for column in row)
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"


class OutcomeStore(Database):
    """Requests and their attempts in a SQLite file (WAL, foreign keys on) or a
    PostgreSQL database (``target`` is a path or a ``postgresql://`` URL).

    Safe to share between the worker threads LangGraph runs nodes in: on SQLite one
    connection guarded by a lock, and separate instances (or processes) on the same file
    coordinate through SQLite's locks and the busy timeout; on PostgreSQL a connection
    pool. ``read_only=True`` never creates or migrates anything (on PostgreSQL its
    connections refuse writes too).
    """

    kind = "outcome store"
    error = StoreError
    migrations = MIGRATIONS
    component = "store"
    postgres_extra = POSTGRES_EXTRA
    tables = TABLES
    primary_keys = PRIMARY_KEYS
    serial_tables = frozenset({"requests", "bench_runs", "bench_results"})
    unusable_hint = "move the file away or configure another store path"
    missing_hint = "record some requests first"

    def __init__(self, target: str | Path, *, read_only: bool = False, timeout_s: float = 30.0) -> None:
        self._open(target, timeout_s=timeout_s, read_only=read_only)

    def _configure_sqlite(self, conn: Any, timeout_s: float) -> None:
        conn.execute("PRAGMA foreign_keys = ON")
        # A log, not money: in WAL mode a power loss may roll back the last rows, never corrupt the file.
        conn.execute("PRAGMA synchronous = NORMAL")

    # -- writing -----------------------------------------------------------

    def record(
        self, request: RequestRecord, attempts: Sequence[AttemptRecord], bench: BenchResult | None = None
    ) -> None:
        """Write a request, all its attempts and (for a benchmark) its graded result in one
        transaction: all rows or none."""
        rid = request.request_id
        strays = sorted({a.request_id for a in attempts if a.request_id != rid})
        if strays:
            raise StoreError(f"attempts for request {rid!r} carry other request_ids {strays}; nothing was written")
        if bench is not None and bench.request_id != rid:
            raise StoreError(f"bench result for {bench.request_id!r} passed with request {rid!r}; nothing was written")
        request_row = _encode(request)
        attempt_rows = [_encode(a, _ATTEMPT_RENAMES) for a in attempts]
        bench_row = _encode(bench) if bench is not None else None
        with self._transaction(f"record request {rid!r}") as conn:
            if conn.execute("SELECT 1 FROM requests WHERE request_id = ?", (rid,)).fetchone():
                raise StoreError(f"request {rid!r} is already recorded in {self.location}; request ids must be unique")
            conn.execute(_insert_sql("requests", request_row), request_row)
            for row in attempt_rows:
                conn.execute(_insert_sql("attempts", row), row)
            if bench_row is not None:
                conn.execute(_insert_sql("bench_results", bench_row), bench_row)

    def open_bench_run(self, run: BenchRun) -> BenchRun:
        """Register ``run``, or return the run already registered under its id (also when
        another process registers it at the same moment)."""
        row = _encode(run)
        with self._transaction(f"register bench run {run.run_id!r}") as conn:
            inserted = conn.execute(_insert_sql("bench_runs", row) + " ON CONFLICT (run_id) DO NOTHING", row).rowcount
            existing = None
            if not inserted:
                existing = conn.execute("SELECT * FROM bench_runs WHERE run_id = ?", (run.run_id,)).fetchone()
        return BenchRun.model_validate(_decode(existing)) if existing is not None else run

    def update_bench_run(self, run: BenchRun) -> None:
        """Replace a registered run's description (used when a changed config is forced)."""
        row = _encode(run)
        sets = ", ".join(f"{k} = :{k}" for k in row if k != "run_id")
        with self._transaction(f"update bench run {run.run_id!r}") as conn:
            conn.execute(f"UPDATE bench_runs SET {sets} WHERE run_id = :run_id", row)

    # -- reading -----------------------------------------------------------

    def get_bench_run(self, run_id: str) -> BenchRun | None:
        rows = self._query("SELECT * FROM bench_runs WHERE run_id = ?", (run_id,))
        return BenchRun.model_validate(_decode(rows[0])) if rows else None

    def bench_results(self, run_id: str | None = None, *, arm: str | None = None) -> list[BenchResult]:
        """Every graded result of a run (``None``: of every run), optionally of one arm, in
        the order recorded."""
        where = [(c, v) for c, v in (("run_id", run_id), ("arm", arm)) if v is not None]
        sql = "SELECT * FROM bench_results" + (" WHERE " + " AND ".join(f"{c} = ?" for c, _ in where) if where else "")
        rows = self._query(sql + " ORDER BY rowid", tuple(v for _, v in where))
        return [BenchResult.model_validate(_decode(row)) for row in rows]

    def bench_runs(self) -> list[BenchRun]:
        """Every registered benchmark run, oldest first."""
        rows = self._query("SELECT * FROM bench_runs ORDER BY created_at, rowid")
        return [BenchRun.model_validate(_decode(row)) for row in rows]

    def count_requests(self) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM requests")[0]["n"])

    def get_request(self, request_id: str) -> RequestRecord | None:
        rows = self._query("SELECT * FROM requests WHERE request_id = ?", (request_id,))
        return RequestRecord.model_validate(_decode(rows[0])) if rows else None

    def recent_requests(self, limit: int = 20) -> list[RequestRecord]:
        """The ``limit`` newest requests (by ``started_at``), newest first."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = self._query("SELECT * FROM requests ORDER BY started_at DESC, rowid DESC LIMIT ?", (limit,))
        return [RequestRecord.model_validate(_decode(row)) for row in rows]

    def attempts_for(self, request_id: str) -> list[AttemptRecord]:
        rows = self._query("SELECT * FROM attempts WHERE request_id = ? ORDER BY attempt_index", (request_id,))
        return [AttemptRecord.model_validate(_decode(row, _ATTEMPT_RENAMES)) for row in rows]

    def iter_attempts(self, batch_size: int = 500) -> Iterator[tuple[RequestRecord, AttemptRecord]]:
        """Every attempt with its request: requests in the order recorded, attempts in index order.

        Reads in batches of requests, so the lock is never held while the caller works.
        """
        last_rowid = 0
        while True:
            requests = self._query(
                "SELECT rowid AS _rowid, * FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (last_rowid, batch_size),
            )
            if not requests:
                return
            first, last_rowid = requests[0]["_rowid"], requests[-1]["_rowid"]
            by_request: dict[str, list[AttemptRecord]] = {}
            for row in self._query(
                "SELECT a.* FROM attempts a JOIN requests r ON r.request_id = a.request_id "
                "WHERE r.rowid BETWEEN ? AND ? ORDER BY a.request_id, a.attempt_index",
                (first, last_rowid),
            ):
                attempt = AttemptRecord.model_validate(_decode(row, _ATTEMPT_RENAMES))
                by_request.setdefault(attempt.request_id, []).append(attempt)
            for row in requests:
                data = _decode(row)
                del data["_rowid"]
                request = RequestRecord.model_validate(data)
                for attempt in by_request.get(request.request_id, []):
                    yield request, attempt


def open_store(target: str | Path, *, read_only: bool = False) -> OutcomeStore:
    """Open (creating and migrating unless ``read_only``) the outcome store at ``target``:
    a SQLite file's path or a ``postgresql://`` URL."""
    return OutcomeStore(target, read_only=read_only)
