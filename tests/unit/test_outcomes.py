"""Outcome store on both backends: real SQLite files in tmp_path and fresh databases on a
real PostgreSQL server (``db_target``). What only a SQLite file has (its PRAGMAs, its
migrations table, a file that is not a database) is tested on SQLite; PostgreSQL's own
are in test_postgres_backend."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from effreason_agents.errors import StoreError
from effreason_agents.adapters.store import (
    MIGRATIONS,
    AttemptRecord,
    OutcomeStore,
    RequestRecord,
    open_store,
)


def make_request(request_id: str = "r1", **overrides: object) -> RequestRecord:
    fields: dict[str, object] = {
        "request_id": request_id,
        "question": "What is 2 + 2?",
        "status": "answered",
        "graph_version": "g1",
        "config_version": "c1",
        "started_at": "2025-01-01T00:00:00.000+00:00",
    }
    fields.update(overrides)
    return RequestRecord.model_validate(fields)


def make_attempt(request_id: str = "r1", index: int = 0, **overrides: object) -> AttemptRecord:
    fields: dict[str, object] = {
        "attempt_id": f"{request_id}-a{index}",
        "request_id": request_id,
        "index": index,
        "arm": "small/direct",
        "tier": "small",
        "model": "smollm2-135m",
        "engine": "embedded",
        "strategy": "direct",
        "max_tokens": 64,
    }
    fields.update(overrides)
    return AttemptRecord.model_validate(fields)


@pytest.fixture()
def raw_count(db_rows):
    """``raw_count(target, table)``: the table's rows, counted without the store."""

    def count(target: str | Path, table: str) -> int:
        return int(db_rows(target, f"SELECT COUNT(*) FROM {table}")[0][0])

    return count


# -- opening and migrations --------------------------------------------------


def test_migrations_applied_once_and_recorded_by_name(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "outcomes.sqlite"
    with open_store(path) as store:
        assert path.is_file()
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        store.record(make_request(), [make_attempt()])

    with sqlite3.connect(path) as conn:
        first = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"requests", "attempts", "_migrations"} <= tables
    assert {"idx_requests_started_at", "idx_attempts_request_id"} <= indexes

    with open_store(path) as store:  # reopening is a no-op and keeps the data
        assert store.count_requests() == 1
    with sqlite3.connect(path) as conn:
        again = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()
    assert again == first


def test_migration_names_are_unique_and_ordered() -> None:
    names = [name for name, _ in MIGRATIONS]
    assert len(names) == len(set(names))
    assert names == sorted(names)


def test_pending_migration_is_applied_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "outcomes.sqlite"
    open_store(path).close()
    extra = ("9999_test_extra_table", "CREATE TABLE test_extra (x TEXT); INSERT INTO test_extra VALUES ('a;b');")
    monkeypatch.setattr(OutcomeStore, "migrations", [*MIGRATIONS, extra])
    with open_store(path) as store:
        assert store.applied_migrations()[-1] == "9999_test_extra_table"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT x FROM test_extra").fetchall() == [("a;b",)]


def test_failed_migration_rolls_back_and_is_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "outcomes.sqlite"
    open_store(path).close()
    broken = ("9999_broken", "CREATE TABLE half_done (x TEXT); INSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(OutcomeStore, "migrations", [*MIGRATIONS, broken])
    with pytest.raises(StoreError, match="9999_broken"):
        open_store(path)
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        names = [row[0] for row in conn.execute("SELECT name FROM _migrations")]
    assert "half_done" not in tables
    assert "9999_broken" not in names


def test_wal_mode_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    with open_store(tmp_path / "outcomes.sqlite") as store:
        conn = store._db()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_non_sqlite_file_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("this is not a database, just some text that is long enough " * 20)
    with pytest.raises(StoreError, match="notes.sqlite") as info:
        open_store(path)
    assert "move the file away" in str(info.value)


def test_directory_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_store(tmp_path)


def test_closed_store_raises_store_error(db_target: str) -> None:
    store = open_store(db_target)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.count_requests()


# -- writing and reading -----------------------------------------------------


def test_round_trip_preserves_every_field(db_target: str, db_rows) -> None:
    request = make_request(
        final_answer="4",
        final_attempt_index=1,
        difficulty="easy",
        arms_tried=["small/direct", "large/cot"],
        escalated=True,
        total_input_tokens=30,
        total_output_tokens=12,
        total_cost_usd="0.000123456789012345678901",
        thread_id="t-1",
        user_id=None,
        extra={"tags": ["a", "b"], "nested": {"k": 1}},
    )
    attempts = [
        make_attempt(
            index=0,
            cost_usd="0.00000001",
            confidence=0.25,
            confidence_method="logprob",
            signals={"mean_logprob": -1.5, "agreement": None},
            answer="5",
            raw_text="It is 5.",
            finish_reason="stop",
            latency_s=0.125,
        ),
        make_attempt(
            index=1,
            arm="large/cot",
            tier="large",
            cost_usd="0.000123456789012345678901",
            answer="4",
            error=None,
            confidence=None,
        ),
    ]
    with open_store(db_target) as store:
        store.record(request, attempts)
        assert store.get_request("r1") == request
        assert store.attempts_for("r1") == attempts
        assert store.get_request("missing") is None
        assert store.attempts_for("missing") == []

    assert db_rows(db_target, "SELECT total_cost_usd, escalated FROM requests") == [("0.000123456789012345678901", 1)]
    assert {type(c) for (c,) in db_rows(db_target, "SELECT cost_usd FROM attempts")} == {str}  # money stays text


def test_attempts_for_returns_index_order(db_target: str) -> None:
    with open_store(db_target) as store:
        store.record(make_request(), [make_attempt(index=2), make_attempt(index=0), make_attempt(index=1)])
        assert [a.index for a in store.attempts_for("r1")] == [0, 1, 2]


def test_request_without_attempts(db_target: str) -> None:
    with open_store(db_target) as store:
        store.record(make_request(status="budget_exhausted"), [])
        assert store.count_requests() == 1
        assert store.attempts_for("r1") == []
        assert list(store.iter_attempts()) == []


def test_failure_mid_write_leaves_no_rows(db_target: str, raw_count) -> None:
    path = db_target
    with open_store(path) as store:
        # The second attempt collides on UNIQUE(request_id, attempt_index) after
        # the request and the first attempt rows were already inserted.
        duplicate = make_attempt(index=0, attempt_id="other-id")
        with pytest.raises(StoreError, match="nothing was written"):
            store.record(make_request(), [make_attempt(index=0), duplicate])
        assert store.count_requests() == 0
        assert store.get_request("r1") is None
        # The store is still usable and the same request can be recorded correctly.
        store.record(make_request(), [make_attempt(index=0)])
        assert store.count_requests() == 1
    assert raw_count(path, "attempts") == 1


def test_exception_other_than_a_database_error_rolls_back(
    db_target: str, raw_count, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = db_target
    store = open_store(path)
    calls = {"n": 0}
    real_insert_sql = __import__("effreason_agents.adapters.store", fromlist=["_insert_sql"])._insert_sql

    def crashing_insert_sql(table: str, row: dict[str, object]) -> str:
        calls["n"] += 1
        if calls["n"] == 3:  # request, first attempt, then crash
            raise KeyboardInterrupt
        return real_insert_sql(table, row)

    monkeypatch.setattr("effreason_agents.adapters.store._insert_sql", crashing_insert_sql)
    with pytest.raises(KeyboardInterrupt):
        store.record(make_request(), [make_attempt(index=0), make_attempt(index=1)])
    store.close()
    assert raw_count(path, "requests") == 0
    assert raw_count(path, "attempts") == 0


def test_attempt_of_another_request_rejected_before_writing(db_target: str, raw_count) -> None:
    path = db_target
    with open_store(path) as store:
        with pytest.raises(StoreError, match="other request_ids"):
            store.record(make_request(), [make_attempt("r1", 0), make_attempt("r2", 1)])
    assert raw_count(path, "requests") == 0
    assert raw_count(path, "attempts") == 0


def test_bad_money_string_rejected(db_target: str) -> None:
    with open_store(db_target) as store:
        with pytest.raises(StoreError, match="cost_usd"):
            store.record(make_request(), [make_attempt(cost_usd="1e-3 dollars")])
        with pytest.raises(StoreError, match="total_cost_usd"):
            store.record(make_request(total_cost_usd="NaN"), [])
        assert store.count_requests() == 0


def test_duplicate_request_rejected(db_target: str, raw_count) -> None:
    path = db_target
    with open_store(path) as store:
        store.record(make_request(question="first"), [make_attempt()])
        with pytest.raises(StoreError, match="already recorded"):
            store.record(make_request(question="second"), [make_attempt(attempt_id="new", index=0)])
        kept = store.get_request("r1")
        assert kept is not None and kept.question == "first"
        assert store.attempts_for("r1")[0].attempt_id == "r1-a0"
    assert raw_count(path, "attempts") == 1


def test_recent_requests_newest_first_with_limit(db_target: str) -> None:
    with open_store(db_target) as store:
        # recorded out of chronological order on purpose
        for minute in (3, 1, 4, 0, 2):
            store.record(make_request(f"r{minute}", started_at=f"2025-01-01T00:0{minute}:00.000+00:00"), [])
        assert [r.request_id for r in store.recent_requests()] == ["r4", "r3", "r2", "r1", "r0"]
        assert [r.request_id for r in store.recent_requests(limit=2)] == ["r4", "r3"]
        assert store.recent_requests(limit=0) == []
        with pytest.raises(ValueError):
            store.recent_requests(limit=-1)
        assert store.count_requests() == 5


def test_iter_attempts_pairs_requests_and_attempts(db_target: str) -> None:
    with open_store(db_target) as store:
        for n in range(5):
            rid = f"r{n}"
            store.record(make_request(rid), [make_attempt(rid, i) for i in range(n % 3)])
        pairs = list(store.iter_attempts(batch_size=2))  # several batches
    assert [(r.request_id, a.index) for r, a in pairs] == [
        ("r1", 0),
        ("r2", 0),
        ("r2", 1),
        ("r4", 0),
    ]
    assert all(r.request_id == a.request_id for r, a in pairs)


def test_concurrent_writes_from_threads_all_land(db_target: str) -> None:
    path = db_target
    shared = open_store(path)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            own = open_store(path) if t % 2 else None  # half share one instance, half open their own
            store = own or shared
            for i in range(10):
                rid = f"t{t}-r{i}"
                store.record(make_request(rid), [make_attempt(rid, 0), make_attempt(rid, 1)])
                assert store.get_request(rid) is not None
            if own is not None:
                own.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert shared.count_requests() == 80
    assert sum(1 for _ in shared.iter_attempts()) == 160
    shared.close()


# -- read-only ---------------------------------------------------------------


def test_read_only_never_creates_a_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "outcomes.sqlite"
    with pytest.raises(StoreError, match="no outcome store"):
        OutcomeStore(path, read_only=True)
    assert not path.exists()
    assert not path.parent.exists()


def test_read_only_reads_but_refuses_writes(db_target: str) -> None:
    path = db_target
    with open_store(path) as store:
        store.record(make_request(), [make_attempt()])
    with open_store(path, read_only=True) as reader:
        assert reader.count_requests() == 1
        with pytest.raises(StoreError, match="read-only"):
            reader.record(make_request("r2"), [])


def test_read_only_on_unmigrated_database(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE something (x)")
    with pytest.raises(StoreError, match="lacks migrations"):
        open_store(path, read_only=True)
