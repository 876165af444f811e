"""What only the PostgreSQL backend has, on a real server started by the tests (``pg_server``,
``pg_url``): targets and URLs (the password is never shown), SQL translation, migrations
per component applied once by processes starting together, holds serialized per scope
across processes by advisory locks, an unreachable or vanishing server failing cleanly,
settlements retried on a fresh connection, and copying every row between backends.

The behaviour both backends share is tested on both in test_ledger, test_ledger_protocol,
test_keys and test_outcomes (``db_target``)."""

from __future__ import annotations

import logging
import multiprocessing
import random
import socket
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from budget_helpers import wait_until, with_password

from effreason_agents.adapters.database import (
    Database,
    MigrationStatus,
    is_postgres_url,
    postgres_ddl,
    redact_url,
    translate_placeholders,
)
from effreason_agents.adapters.keys import KeyStore
from effreason_agents.adapters.ledger import MIGRATIONS as LEDGER_MIGRATIONS
from effreason_agents.adapters.ledger import BudgetExhausted, BudgetLedger, LedgerError, Scope, Usage
from effreason_agents.adapters.store import MIGRATIONS as STORE_MIGRATIONS
from effreason_agents.adapters.store import (
    AttemptRecord,
    BenchResult,
    BenchRun,
    OutcomeStore,
    RequestRecord,
)
from effreason_agents.config import LimitConfig
from effreason_agents.errors import StoreError
from totals_helpers import fresh_totals, stored_totals

REQ = Scope("request", "r1")
THREAD = Scope("thread", "t1")
PASSWORD = "s3cr3t-Pa55word"
LEDGER_NAMES = [name for name, _ in LEDGER_MIGRATIONS]
STORE_NAMES = [name for name, _ in STORE_MIGRATIONS]






def lock_waiters(url: str) -> list[int]:
    """Backends of the test database waiting for a lock (advisory or row)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND pid <> pg_backend_pid()"
        ).fetchall()]


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- targets, URLs and SQL ----------------------------------------------------------


def test_postgres_urls_are_told_from_paths() -> None:
    assert is_postgres_url("postgresql://u:p@h/db") and is_postgres_url("postgres://h/db")
    assert is_postgres_url("  POSTGRESQL://h/db")
    assert not is_postgres_url("/var/lib/ledger.sqlite") and not is_postgres_url("ledger.sqlite")
    assert not is_postgres_url(Path("postgresql:/x")) and not is_postgres_url(None)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db.internal:5432/ledger", "postgresql://app:***@db.internal:5432/ledger"),
        ("postgres://app:p%40ss:w@db/x?sslmode=require", "postgres://app:***@db/x?sslmode=require"),
        ("postgresql://app@db/x?sslmode=require&password=hunter2", "postgresql://app@db/x?sslmode=require&password=***"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        ("postgresql://postgres:@/db?host=/tmp/s", "postgresql://postgres:@/db?host=/tmp/s"),  # no password
    ],
)
def test_redact_url_hides_the_password_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_placeholders_are_translated_outside_literals() -> None:
    assert translate_placeholders("SELECT * FROM t WHERE a = ? AND b = ?") == (
        "SELECT * FROM t WHERE a = %s AND b = %s", None, False)
    text, order, named = translate_placeholders("UPDATE t SET x = ?2 WHERE k = ?1 OR j = ?1")
    assert (text, order, named) == ("UPDATE t SET x = %s WHERE k = %s OR j = %s", (2, 1, 1), False)
    text, order, named = translate_placeholders(
        "SELECT ':not', 'it''s ? 50%' AS q, x::text FROM t WHERE a = :kind AND b LIKE 'p%' -- why? :c\n AND c = :c")
    assert named and order is None
    assert text == ("SELECT ':not', 'it''s ? 50%%' AS q, x::text FROM t WHERE a = %(kind)s AND b LIKE 'p%%' "
                    "-- why? :c\n AND c = %(c)s")
    with pytest.raises(ValueError, match="mixes placeholder styles"):
        translate_placeholders("SELECT ? , :name")


def test_migration_types_are_widened_for_postgres() -> None:
    assert postgres_ddl("CREATE TABLE t (n INTEGER NOT NULL, at REAL, s TEXT DEFAULT 'INTEGER REAL')") == (
        "CREATE TABLE t (n BIGINT NOT NULL, at DOUBLE PRECISION, s TEXT DEFAULT 'INTEGER REAL')")


def test_objects_name_their_database_without_the_password(pg_url: str) -> None:
    url = with_password(pg_url, PASSWORD)
    for cls in (BudgetLedger, KeyStore, OutcomeStore):
        obj = cls(url)
        try:
            assert (obj.dialect, obj.path, obj.location) == ("postgresql", None, redact_url(url))
            assert PASSWORD not in obj.location and PASSWORD not in repr(obj) and "***" in obj.location
        finally:
            obj.close()
        with pytest.raises((LedgerError, StoreError)) as info:
            obj.applied_migrations()
        assert "closed" in str(info.value) and PASSWORD not in str(info.value)


def test_sqlite_objects_keep_their_path(tmp_path: Path) -> None:
    with BudgetLedger(tmp_path / "l.sqlite") as led:
        assert (led.dialect, led.path, led.location) == ("sqlite", tmp_path / "l.sqlite", str(tmp_path / "l.sqlite"))
    with pytest.raises(LedgerError, match=r"mysql://u:\*\*\*@h/db is not a supported budget ledger location"):
        BudgetLedger(f"mysql://u:{PASSWORD}@h/db")


# -- an unreachable server -------------------------------------------------------------


@pytest.mark.parametrize("where", ["closed-port", "no-socket-dir", "password-parameter"])
@pytest.mark.parametrize("cls", [BudgetLedger, KeyStore, OutcomeStore])
def test_an_unreachable_server_is_a_clear_error_without_the_password(
    tmp_path: Path, where: str, cls: type[Database], caplog: pytest.LogCaptureFixture
) -> None:
    url = {
        "closed-port": f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/ledger",
        "no-socket-dir": f"postgresql://app:{PASSWORD}@/ledger?host={tmp_path / 'nothing-here'}",
        "password-parameter": f"postgresql://app@/ledger?host={tmp_path}&password={PASSWORD}",
    }[where]
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(cls.error) as info:
            cls(url)
        with pytest.raises(cls.error) as status_info:
            cls.migration_status(url)
    for message in (str(info.value), str(status_info.value)):
        assert message.startswith(f"cannot reach PostgreSQL at {redact_url(url)}: ")
        assert message.endswith("; check the URL and that the server is running")
        assert PASSWORD not in message
    assert PASSWORD not in caplog.text


# -- migrations -------------------------------------------------------------------------


def test_migrations_are_recorded_per_component_in_one_database(pg_url: str, db_rows) -> None:
    assert BudgetLedger.migration_status(pg_url) == MigrationStatus(
        location=pg_url, dialect="postgresql", applied=[], pending=LEDGER_NAMES, unknown=[])
    assert db_rows(pg_url, "SELECT to_regclass('effreason_migrations') IS NULL") == [(True,)]  # status wrote nothing

    assert BudgetLedger.migrate(pg_url) == LEDGER_NAMES
    assert BudgetLedger.migrate(pg_url) == []  # up to date: nothing applied twice
    assert KeyStore.migration_status(pg_url).up_to_date  # the keys are the ledger's component
    store_status = OutcomeStore.migration_status(pg_url)
    assert (store_status.applied, store_status.pending) == ([], STORE_NAMES)

    with OutcomeStore(pg_url) as store, BudgetLedger(pg_url) as led, KeyStore(pg_url) as keys:
        assert store.applied_migrations() == STORE_NAMES and store.pending_migrations() == []
        assert led.applied_migrations() == keys.applied_migrations() == LEDGER_NAMES
    recorded = db_rows(pg_url, "SELECT component, name FROM effreason_migrations ORDER BY seq")
    assert recorded == [("ledger", n) for n in LEDGER_NAMES] + [("store", n) for n in STORE_NAMES]
    types = dict(db_rows(pg_url, "SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'reservations'"))
    assert types["reserved_micro_usd"] == "bigint" and types["expires_at"] == "double precision"

    db_rows(pg_url, "INSERT INTO effreason_migrations (component, name, applied_at) VALUES ('ledger', '9999_new', 'x')")
    status = BudgetLedger.migration_status(pg_url)
    assert status.unknown == ["9999_new"] and status.pending == [] and status.up_to_date


def test_a_role_that_may_only_read_and_write_rows_runs_a_migrated_database(pg_url: str, db_rows) -> None:
    role = f"app_{int(time.time() * 1000) % 10**9}_{random.randrange(10**6)}"  # roles are shared by databases
    url = pg_url.replace("postgresql://postgres:@", f"postgresql://{role}:@", 1)
    db_rows(pg_url, f"CREATE ROLE {role} LOGIN")
    try:
        with pytest.raises(LedgerError, match=r"could not check or update the schema.*permission denied for schema public.*db migrate"):
            BudgetLedger(url)  # may not create tables: the migrations are the owner's job
        assert BudgetLedger.migrate(pg_url) == LEDGER_NAMES and OutcomeStore.migrate(pg_url) == STORE_NAMES
        db_rows(pg_url, f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        db_rows(pg_url, f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        with BudgetLedger(url) as led, OutcomeStore(url) as store:
            led.reserve("k", [REQ, THREAD], Usage(micro_usd=10))
            led.commit("k", Usage(micro_usd=9))
            store.record(_request("r1"), [_attempt("r1", 0)])
            assert led.spent(THREAD) == Usage(micro_usd=9) and store.count_requests() == 1
    finally:
        db_rows(pg_url, f"DROP OWNED BY {role}")
        db_rows(pg_url, f"DROP ROLE {role}")


def test_migration_status_and_migrate_on_sqlite_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.sqlite"
    status = BudgetLedger.migration_status(path)
    assert (status.dialect, status.applied, status.pending) == ("sqlite", [], LEDGER_NAMES)
    assert not path.exists()  # looking changed nothing
    assert BudgetLedger.migrate(path) == LEDGER_NAMES and BudgetLedger.migrate(path) == []
    assert BudgetLedger.migration_status(path).up_to_date


def test_a_pending_migration_with_literals_is_applied_on_open(
    pg_url: str, db_rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    OutcomeStore(pg_url).close()
    extra = ("9999_test_extra", "CREATE TABLE test_extra (x TEXT, n INTEGER); "
                                "INSERT INTO test_extra VALUES ('a;b:c ?1 50%', 3000000000);")
    monkeypatch.setattr(OutcomeStore, "migrations", [*STORE_MIGRATIONS, extra])
    with OutcomeStore(pg_url) as store:
        assert store.pending_migrations() == [] and store.applied_migrations()[-1] == "9999_test_extra"
    assert db_rows(pg_url, "SELECT x, n FROM test_extra") == [("a;b:c ?1 50%", 3_000_000_000)]


def test_a_failed_migration_rolls_back_and_is_not_recorded(
    pg_url: str, db_rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    OutcomeStore(pg_url).close()
    broken = ("9999_broken", "CREATE TABLE half_done (x TEXT); INSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(OutcomeStore, "migrations", [*STORE_MIGRATIONS, broken])
    with pytest.raises(StoreError, match=r"could not apply migration 9999_broken .*nothing was written"):
        OutcomeStore(pg_url)
    assert db_rows(pg_url, "SELECT to_regclass('half_done') IS NULL") == [(True,)]
    assert db_rows(pg_url, "SELECT COUNT(*) FROM effreason_migrations WHERE name = '9999_broken'") == [(0,)]
    assert OutcomeStore.migration_status(pg_url).pending == ["9999_broken"]


def _open_both(url: str, start: Any, results: Any) -> None:
    """One process starting up: opens the ledger and the store of a new database at once."""
    start.wait(timeout=120)
    try:
        with BudgetLedger(url) as led, OutcomeStore(url) as store:
            results.put(("ok", led.applied_migrations(), store.applied_migrations()))
    except BaseException as exc:  # reported to the test
        results.put(("error", repr(exc), None))


def test_processes_starting_together_apply_each_migration_once(pg_url: str, db_rows) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_both, args=(pg_url, start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outcomes == [("ok", LEDGER_NAMES, STORE_NAMES)] * 4
    assert db_rows(pg_url, "SELECT component, name, COUNT(*) FROM effreason_migrations GROUP BY component, name "
                           "HAVING COUNT(*) > 1") == []
    assert db_rows(pg_url, "SELECT COUNT(*) FROM effreason_migrations") == [(len(LEDGER_NAMES) + len(STORE_NAMES),)]


# -- holds: locks, money, many processes ---------------------------------------------


def test_a_hold_waits_for_its_scopes_lock_and_disjoint_scopes_do_not(pg_url: str) -> None:
    with BudgetLedger(pg_url) as led:
        blocker = psycopg.connect(pg_url)  # another replica in the middle of a hold on thread:busy
        try:
            blocker.execute("SELECT pg_advisory_xact_lock(hashtextextended('thread:busy', 0))")
            assert led.reserve("free", [Scope("request", "r0"), Scope("thread", "other")], Usage(micro_usd=1)) \
                == "reserved"
            outcome: dict[str, Any] = {}
            waiter = threading.Thread(target=lambda: outcome.update(
                status=led.reserve("busy", [Scope("request", "r1"), Scope("thread", "busy")], Usage(micro_usd=1))))
            waiter.start()
            wait_until(lambda: lock_waiters(pg_url), "the hold on thread:busy waiting for its lock")
            assert "status" not in outcome and led.status("busy") is None  # checked nothing yet
        finally:
            blocker.rollback()  # the other hold is done
            blocker.close()
        waiter.join(timeout=30)
        assert outcome == {"status": "reserved"}


def test_money_beyond_32_bits_is_kept_exactly(pg_url: str) -> None:
    with BudgetLedger(pg_url) as led:
        led.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("10000.000001")))
        led.reserve("big", [REQ, THREAD], Usage(output_tokens=3_000_000_000, total_tokens=5_000_000_000,
                                                micro_usd=6_000_000_000))
        led.commit("big", Usage(3_000_000_000, 5_000_000_000, 5_999_999_999))
        assert led.spent(THREAD) == Usage(3_000_000_000, 5_000_000_000, 5_999_999_999)
        assert led.limits(THREAD) == LimitConfig(max_cost_usd=Decimal("10000.000001"))
        assert led.show(THREAD)["remaining"]["cost_usd"] == "4000.000002"
        with pytest.raises(BudgetExhausted):
            led.reserve("more", [THREAD], Usage(micro_usd=4_000_000_003))


def _reserve_worker(url: str, proc: int, n: int, start: Any, results: Any) -> None:
    """One replica: ``n`` holds of random worst cases on one shared thread, each settled
    below its worst case unless refused."""
    rng = random.Random(proc)
    report = {"reserved": 0, "refused": 0, "committed_micro": 0}
    with BudgetLedger(url) as led:
        start.wait(timeout=120)
        for i in range(n):
            key = f"p{proc}-{i}"
            worst = rng.randint(300, 1500)
            try:
                led.reserve(key, [Scope("request", key), Scope("thread", "chat")], Usage(micro_usd=worst))
            except BudgetExhausted:
                report["refused"] += 1
                continue
            report["reserved"] += 1
            actual = rng.randint(worst // 2, worst)
            led.commit(key, Usage(micro_usd=actual), result={"text": key})
            report["committed_micro"] += actual
    results.put(report)


def test_four_processes_never_exceed_a_small_cap_together(pg_url: str, db_rows) -> None:
    cap_micro = 30_000  # about 35 of the 200 holds fit
    thread = Scope("thread", "chat")
    with BudgetLedger(pg_url) as setup:
        setup.set_limits(thread, LimitConfig(max_cost_usd=Decimal(cap_micro) / 1_000_000))

    peak: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # committed + held on the thread, in snapshots, while the processes run
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while not stop.is_set():
                peak.append(conn.execute(
                    "SELECT COALESCE(SUM(CASE r.status WHEN 'committed' THEN r.actual_micro_usd "
                    "WHEN 'reserved' THEN r.reserved_micro_usd ELSE 0 END), 0) FROM reservation_scopes s "
                    "JOIN reservations r ON r.key = s.reservation_key WHERE s.kind = 'thread' AND s.scope_key = 'chat'"
                ).fetchone()[0])
                time.sleep(0.005)

    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_reserve_worker, args=(pg_url, p, 50, start, results)) for p in range(4)]
    for p in procs:
        p.start()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        reports = [results.get(timeout=240) for _ in procs]
    finally:
        stop.set()
        watcher.join()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    reserved = sum(r["reserved"] for r in reports)
    assert reserved + sum(r["refused"] for r in reports) == 200
    assert reserved > 0 and sum(r["refused"] for r in reports) > 0, reports
    assert peak and max(peak) <= cap_micro
    with BudgetLedger(pg_url) as led:
        spent = led.spent(thread)
        assert spent.micro_usd == sum(r["committed_micro"] for r in reports) <= cap_micro
        assert led.reserved(thread) == Usage() and led.holds(thread) == []
    counts = dict(db_rows(pg_url, "SELECT status, COUNT(*) FROM reservations GROUP BY status"))
    assert counts == {"committed": reserved}  # every reported hold settled once; the refused left no row


# -- a server that goes away ----------------------------------------------------------


def test_a_connection_lost_mid_reserve_fails_cleanly_and_the_next_reserve_works(pg_url: str) -> None:
    with BudgetLedger(pg_url) as led:
        led.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
        blocker = psycopg.connect(pg_url)
        outcome: dict[str, Any] = {}

        def reserve() -> None:
            try:
                outcome["status"] = led.reserve("k", [REQ, THREAD], Usage(micro_usd=4000))
            except LedgerError as exc:
                outcome["error"] = exc

        try:
            blocker.execute("SELECT pg_advisory_xact_lock(hashtextextended('thread:t1', 0))")
            worker = threading.Thread(target=reserve)
            worker.start()
            [pid] = wait_until(lambda: lock_waiters(pg_url), "the reserve waiting for the thread's lock")
            terminate(pg_url, pid)  # its connection goes away in the middle of the transaction
            worker.join(timeout=30)
        finally:
            blocker.rollback()
            blocker.close()
        message = str(outcome["error"])
        assert message.startswith(f"could not reserve 'k' in {led.location}: the connection to PostgreSQL was lost")
        assert message.endswith("nothing was written (the transaction was rolled back)")
        assert led.status("k") is None and led.reserved(THREAD) == Usage()
        assert led.reserve("k", [REQ, THREAD], Usage(micro_usd=4000)) == "reserved"  # a fresh pooled connection
        assert led.reserved(THREAD) == Usage(micro_usd=4000)


def test_a_settlement_whose_connection_is_lost_is_retried(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with BudgetLedger(pg_url) as led:
        led.reserve("k", [REQ, THREAD], Usage(micro_usd=100))
        blocker = psycopg.connect(pg_url)
        errors: list[BaseException] = []

        def settle() -> None:
            try:
                led.commit("k", Usage(micro_usd=90), result={"text": "billed"})
            except BaseException as exc:  # reported below
                errors.append(exc)

        try:
            blocker.execute("SELECT key FROM reservations WHERE key = 'k' FOR UPDATE")  # the row is busy
            with caplog.at_level(logging.WARNING, logger="effreason_agents.adapters.database"):
                worker = threading.Thread(target=settle)
                worker.start()
                [first] = wait_until(lambda: lock_waiters(pg_url), "the settlement waiting for the row")
                terminate(pg_url, first)
                [second] = wait_until(lambda: [p for p in lock_waiters(pg_url) if p != first],
                                      "the settlement retried on a fresh connection")
                assert second != first
        finally:
            blocker.rollback()
            blocker.close()
        worker.join(timeout=30)
        assert errors == []
        assert "connection to PostgreSQL was lost" in caplog.text and "trying again on a fresh connection" in caplog.text
        assert led.status("k") == "committed" and led.spent(THREAD) == Usage(micro_usd=90)
        assert led.settled("k") == (Usage(micro_usd=90), {"text": "billed"})


def test_a_hold_that_cannot_get_its_scopes_lock_in_time_is_refused_cleanly(pg_url: str) -> None:
    with BudgetLedger(pg_url, timeout_s=1) as led:
        blocker = psycopg.connect(pg_url)  # a stuck transaction holding thread:t1
        try:
            blocker.execute("SELECT pg_advisory_xact_lock(hashtextextended('thread:t1', 0))")
            with pytest.raises(LedgerError, match=r"could not reserve 'k' in .*lock timeout.*nothing was written"):
                led.reserve("k", [REQ, THREAD], Usage(micro_usd=1))
        finally:
            blocker.rollback()
            blocker.close()
        assert led.status("k") is None
        assert led.reserve("k", [REQ, THREAD], Usage(micro_usd=1)) == "reserved"


def test_a_read_whose_connection_is_lost_is_read_again(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with BudgetLedger(pg_url) as led:
        backends: list[int] = []

        def body(conn: Any) -> int:
            backends.append(conn.raw.info.backend_pid)
            if len(backends) == 1:
                conn.execute("SELECT pg_sleep(60)")  # the connection is cut during this statement
            return int(conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])

        outcome: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: outcome.update(n=led._read("count holds", body)))
        with caplog.at_level(logging.WARNING, logger="effreason_agents.adapters.database"):
            reader.start()
            wait_until(lambda: len(backends) == 1, "the read starting")
            terminate(pg_url, backends[0])
            reader.join(timeout=30)
        assert outcome == {"n": 0} and len(backends) == 2 and backends[0] != backends[1]
        assert "lost the connection to PostgreSQL" in caplog.text and PASSWORD not in caplog.text


def test_a_stopped_server_fails_reserves_cleanly_and_is_used_again_once_back(pg_data_dir: Path) -> None:
    pgserver = pytest.importorskip("pgserver")
    data = pg_data_dir
    handle = pgserver.get_server(data, cleanup_mode="stop")
    url = with_password(handle.get_uri(), PASSWORD)
    led = BudgetLedger(url, timeout_s=3)
    try:
        led.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
        led.reserve("before", [REQ, THREAD], Usage(micro_usd=1000))
        led.commit("before", Usage(micro_usd=800))

        handle.cleanup()  # the server stops
        with pytest.raises(LedgerError) as info:
            led.reserve("during", [Scope("request", "r2"), THREAD], Usage(micro_usd=1000))
        message = str(info.value)
        assert message.startswith(f"cannot reach PostgreSQL at {led.location}: ") and PASSWORD not in message

        handle = pgserver.get_server(data, cleanup_mode="stop")  # back, at the same address
        assert with_password(handle.get_uri(), PASSWORD) == url
        assert led.status("during") is None  # nothing was written while it was down
        assert led.reserve("after", [Scope("request", "r3"), THREAD], Usage(micro_usd=1000)) == "reserved"
        assert led.spent(THREAD) == Usage(micro_usd=800) and led.reserved(THREAD) == Usage(micro_usd=1000)
    finally:
        led.close()
        handle.cleanup()


# -- the store on PostgreSQL ------------------------------------------------------------


def test_a_read_only_store_needs_a_migrated_database_and_refuses_writes(pg_url: str) -> None:
    with pytest.raises(StoreError, match="lacks migrations"):
        OutcomeStore(pg_url, read_only=True)
    assert OutcomeStore.migrate(pg_url) == STORE_NAMES
    with OutcomeStore(pg_url, read_only=True) as reader:
        assert reader.count_requests() == 0
        with pytest.raises(StoreError, match="read-only"):
            reader.record(_request("r1"), [])
        with pytest.raises(StoreError, match="read-only transaction"):  # its connections refuse writes too
            reader._read("write", lambda conn: conn.execute("DELETE FROM requests"))


# -- copying between backends ---------------------------------------------------------------


def _request(rid: str, **kw: Any) -> RequestRecord:
    return RequestRecord(request_id=rid, question=f"q {rid}?", status="answered", graph_version="g",
                         config_version="c", started_at="2025-01-01T00:00:00.000+00:00", **kw)


def _attempt(rid: str, index: int, **kw: Any) -> AttemptRecord:
    return AttemptRecord(attempt_id=f"{rid}-a{index}", request_id=rid, index=index, arm="small/direct", tier="small",
                         model="m", engine="embedded", strategy="direct", max_tokens=64, **kw)


def _fill(ledger_target: str | Path, store_target: str | Path) -> str:
    """A ledger, keys and a store with rows in every table; returns a key's secret."""
    with BudgetLedger(ledger_target, clock=lambda: 1_700_000_000.123456) as led:
        led.set_limits(THREAD, LimitConfig(max_output_tokens=10**10, max_cost_usd=Decimal("5000.000001")))
        led.reserve("paid", [REQ, THREAD], Usage(10, 100, 4_000_000_001), ttl_s=12.5)
        led.commit("paid", Usage(9, 99, 3_999_999_999), result={"text": "¿ünïcode?", "cost_usd": "0.1"})
        led.reserve("open", [Scope("request", "r2"), THREAD], Usage(1, 2, 3))
    with KeyStore(ledger_target, clock=lambda: 1_700_000_001.5) as keys:
        secret, key = keys.create("alice", budget_usd="12.345678", thread_budget_usd="0.5", rpm=7)
        keys.admit(key)
    with OutcomeStore(store_target) as store:
        for n in (3, 1, 2, 0):  # recorded out of id order: copying keeps the order recorded
            rid = f"r{n}"
            store.record(
                _request(rid, total_cost_usd="0.000123456789012345678901", escalated=n % 2 == 1,
                         extra={"n": n, "tags": ["a", "b"]}),
                [_attempt(rid, i, cost_usd="0.00000001", confidence=0.1 + n / 3, latency_s=1 / 3,
                          signals={"mean_logprob": -1.25, "x": None}, logprobs=[{"token": "4", "logprob": -0.5}])
                 for i in range(n % 3)],
            )
        store.open_bench_run(BenchRun(run_id="b1", out_dir="/tmp/b", suite="s", arms=["small/direct"],
                                      config_version="c", meta={"k": 1}))
        for item in ("i2", "i1"):
            store.record(_request(f"bench-{item}"), [], BenchResult(
                run_id="b1", item_id=item, arm="small/direct", request_id=f"bench-{item}", question="q", gold="4",
                answer_type="number", correct=item == "i1", cost_usd="0.5"))
    return secret


def _export(obj: Database) -> dict[str, list[dict[str, Any]]]:
    return {table: list(obj.export_rows(table, batch_size=2)) for table in obj.tables}


def _by_key(obj: Database, rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {t: sorted(r, key=lambda row: tuple(str(row[k]) for k in obj.primary_keys[t])) for t, r in rows.items()}


def test_every_row_and_value_is_copied_from_sqlite_to_postgres_once(tmp_path: Path, pg_url: str) -> None:
    secret = _fill(tmp_path / "ledger.sqlite", tmp_path / "outcomes.sqlite")
    pairs = [(BudgetLedger(tmp_path / "ledger.sqlite"), BudgetLedger(pg_url)),
             (OutcomeStore(tmp_path / "outcomes.sqlite"), OutcomeStore(pg_url))]
    try:
        for source, dest in pairs:
            before = _export(source)
            assert all(before.values()), {t: len(r) for t, r in before.items()}  # every table has rows
            copied = {t: dest.import_rows(t, source.export_rows(t, batch_size=3)) for t in source.tables}
            assert copied == {t: len(r) for t, r in before.items()}
            after = _export(dest)
            assert _by_key(dest, after) == _by_key(source, before)  # every value, exactly (types included)
            for table in dest.serial_tables:  # the order recorded is kept
                assert after[table] == before[table]
            assert {t: dest.import_rows(t, source.export_rows(t)) for t in source.tables} == dict.fromkeys(
                source.tables, 0)  # again: nothing twice
            assert _export(dest) == after

        sqlite_store, pg_store = pairs[1]
        assert list(pg_store.iter_attempts(batch_size=1)) == list(sqlite_store.iter_attempts())
        assert [r.request_id for r in pg_store.recent_requests(10)] == [
            r.request_id for r in sqlite_store.recent_requests(10)]
        assert pg_store.bench_results("b1") == sqlite_store.bench_results("b1")
        pg_store.record(_request("new"), [_attempt("new", 0)])  # the copy's row numbers leave room for new rows
        assert [r.request_id for r, _ in pg_store.iter_attempts()][-1] == "new"
        pg_ledger = pairs[0][1]
        assert pg_ledger.show(THREAD) == pairs[0][0].show(THREAD)
        assert pg_ledger.settled("paid") == (Usage(9, 99, 3_999_999_999), {"text": "¿ünïcode?", "cost_usd": "0.1"})
        with KeyStore(pg_url) as keys:
            found = keys.authenticate(secret)
            assert found is not None and found.name == "alice" and found.thread_budget_usd == Decimal("0.5")
    finally:
        for source, dest in pairs:
            source.close()
            dest.close()


def test_rows_copied_back_to_sqlite_are_the_same(tmp_path: Path, pg_url: str) -> None:
    _fill(pg_url, pg_url)
    for cls in (BudgetLedger, OutcomeStore):
        with cls(pg_url) as source, cls(tmp_path / f"{cls.__name__}.sqlite") as dest:
            before = _export(source)
            for table in source.tables:
                dest.import_rows(table, source.export_rows(table))
            assert _by_key(dest, _export(dest)) == _by_key(source, before)


def test_imported_row_numbers_move_the_sequence_past_them(tmp_path: Path, pg_url: str) -> None:
    with OutcomeStore(tmp_path / "old.sqlite") as old:
        old.record(_request("old"), [])
        [row] = old.export_rows("requests")
    with OutcomeStore(pg_url) as store:
        assert store.import_rows("requests", [{**row, "rowid": 1000}]) == 1
        store.record(_request("new"), [_attempt("new", 0)])
        store.record(_request("old-attempt-holder"), [_attempt("old-attempt-holder", 0)])
        assert [r.request_id for r, _ in store.iter_attempts()] == ["new", "old-attempt-holder"]
        rowids = dict(store._query("SELECT request_id, rowid FROM requests"))
        assert rowids["old"] == 1000 and rowids["new"] > 1000


def test_import_refuses_unknown_tables_and_ragged_rows(pg_url: str) -> None:
    with OutcomeStore(pg_url) as store:
        with pytest.raises(ValueError, match="not a table of the outcome store"):
            store.import_rows("scope_limits", [])
        with pytest.raises(ValueError, match="same columns"):
            store.import_rows("bench_runs", [
                {"run_id": "a", "out_dir": "o", "suite": "s", "arms": "[]", "config_version": "c", "created_at": "t",
                 "meta": "{}"},
                {"run_id": "b"},
            ])
        assert store.import_rows("requests", []) == 0


# -- running totals under concurrency ----------------------------------------------------


def test_settlements_and_sweeps_racing_on_expired_holds_move_the_totals_once(pg_url: str, db_rows) -> None:
    """120 holds on overlapping threads and users expire; then three replicas settle them
    while three others sweep them (release_stale, and reserves of their own, which sweep
    first), all at once. Each hold ends settled or released exactly once, nothing waits on
    anything in a cycle (no deadlock error), and the running totals equal the sums over the
    history: a hold is never taken out of "held" twice."""
    threads = [Scope("thread", f"t{i}") for i in range(4)]
    users = [Scope("user", f"u{i}") for i in range(3)]
    rng = random.Random(7)
    with BudgetLedger(pg_url) as led:
        for i in range(120):
            scopes = [Scope("request", f"r{i}"), *rng.sample(threads, 2), *rng.sample(users, rng.randint(1, 2))]
            rng.shuffle(scopes)
            led.reserve(f"h{i}", scopes, Usage(3, 30, 1000 + i), ttl_s=0.2)
    time.sleep(0.3)  # every hold is past its expiry, none swept yet

    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def settler(part: int) -> None:
        with BudgetLedger(pg_url) as mine:
            start.wait()
            try:
                for i in range(part, 120, 3):
                    mine.commit(f"h{i}", Usage(2, 20, 900), result={"i": i})
            except BaseException as exc:  # reported below
                errors.append(exc)

    def sweeper(part: int) -> None:
        with BudgetLedger(pg_url) as mine:
            start.wait()
            try:
                for j in range(15):
                    if j % 3 == 0:
                        mine.release_stale()
                    else:
                        key = f"s{part}-{j}"
                        mine.reserve(key, [Scope("request", key), threads[(part + j) % 4], users[j % 3]],
                                     Usage(1, 10, 100))
                        mine.commit(key, Usage(1, 10, 90))
            except BaseException as exc:  # reported below
                errors.append(exc)

    workers = [threading.Thread(target=settler, args=(p,)) for p in range(3)]
    workers += [threading.Thread(target=sweeper, args=(p,)) for p in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert errors == []
    statuses = dict(db_rows(
        pg_url, "SELECT status, COUNT(*) FROM reservations WHERE substr(key, 1, 1) = 'h' GROUP BY status"))
    assert statuses == {"committed": 120}  # a late settlement is still recorded
    assert stored_totals(db_rows, pg_url) == fresh_totals(db_rows, pg_url)
    with BudgetLedger(pg_url) as led:
        for s in threads + users:
            assert led.reserved(s) == Usage() and led.show(s)["holds"] == 0


def test_copied_holds_count_in_the_targets_running_totals(tmp_path: Path, pg_url: str, db_rows) -> None:
    """The running totals are not copied (they are derived): importing the holds computes
    them in the target, equal to the source's, and importing again changes nothing."""
    _fill(tmp_path / "ledger.sqlite", tmp_path / "outcomes.sqlite")
    source = str(tmp_path / "ledger.sqlite")
    with BudgetLedger(source) as src, BudgetLedger(pg_url) as dest:
        assert "scope_totals" not in src.tables
        for _ in range(2):
            for table in src.tables:
                dest.import_rows(table, src.export_rows(table, batch_size=2))
            assert stored_totals(db_rows, pg_url) == stored_totals(db_rows, source) == fresh_totals(db_rows, pg_url)
        assert stored_totals(db_rows, pg_url)[("thread", "t1")] == (9, 99, 3_999_999_999, 1, 2, 3, 1)
        assert dest.spent(THREAD) == src.spent(THREAD)
        dest.commit("open", Usage(1, 2, 3))  # the copied hold settles in the target like any other
        assert dest.spent(THREAD) == Usage(10, 101, 4_000_000_002) and dest.reserved(THREAD) == Usage()
        assert stored_totals(db_rows, pg_url) == fresh_totals(db_rows, pg_url)


@pytest.mark.parametrize("action", ["commit", "release"])
def test_a_settlement_waiting_on_a_sweep_of_its_hold_sees_the_sweep(
    pg_url: str, db_rows, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica sweeps an expired hold and is about to write its totals; another settles
    (or releases) the same hold at that moment. The settlement waits for the sweep and then
    sees the hold released, so the hold leaves "held" once (by the sweep), never twice."""
    with BudgetLedger(pg_url) as led, BudgetLedger(pg_url) as sweeper:
        led.reserve("k", [REQ, THREAD], Usage(3, 30, 1000), ttl_s=0.1)
        led.reserve("other", [Scope("request", "r2"), THREAD], Usage(1, 10, 100))
        time.sleep(0.2)
        entered, gate = threading.Event(), threading.Event()
        apply_totals = BudgetLedger._apply_totals

        def held_back(conn: Any, totals: Any) -> None:
            entered.set()
            assert gate.wait(30)
            apply_totals(conn, totals)

        monkeypatch.setattr(sweeper, "_apply_totals", held_back)
        swept: list[int] = []
        sweep = threading.Thread(target=lambda: swept.append(sweeper.release_stale()))
        sweep.start()
        assert entered.wait(30)  # the sweep has released "k" and holds its row, totals not yet written
        settle = threading.Thread(
            target=(lambda: led.commit("k", Usage(2, 20, 900))) if action == "commit" else (lambda: led.release("k"))
        )
        settle.start()
        try:
            wait_until(lambda: lock_waiters(pg_url), "the settlement waiting for the sweep")
        finally:
            gate.set()
            sweep.join(timeout=30)
            settle.join(timeout=30)
        assert swept == [1]
        assert led.status("k") == ("committed" if action == "commit" else "released")
        assert stored_totals(db_rows, pg_url) == fresh_totals(db_rows, pg_url)
        assert led.reserved(THREAD) == Usage(1, 10, 100) and led.show(THREAD)["holds"] == 1
        assert led.spent(THREAD) == (Usage(2, 20, 900) if action == "commit" else Usage())


def _rows_touched(plan: dict[str, Any]) -> int:
    """Rows every node of an EXPLAIN (ANALYZE, FORMAT JSON) plan produced, loops included."""
    own = int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))
    return own + sum(_rows_touched(child) for child in plan.get("Plans", []))


def test_a_check_and_a_read_touch_a_few_rows_whatever_the_history_even_without_statistics(pg_url: str) -> None:
    """3,000 settled holds on one API key's user scope, in tables PostgreSQL has no statistics
    on yet (as right after `effreason db copy`): the hold's check and the budget read are
    planned from the running totals and the few outstanding holds, never from the scope's
    history."""
    from effreason_agents.adapters import ledger as ledger_module

    user = Scope("user", "key:k1")
    with BudgetLedger(pg_url) as led:
        led.set_limits(user, LimitConfig(max_cost_usd=Decimal("1000")))
        now = time.time()
        with psycopg.connect(pg_url) as conn:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO reservations (key, status, reserved_output_tokens, reserved_total_tokens, "
                    "reserved_micro_usd, actual_output_tokens, actual_total_tokens, actual_micro_usd, created_at, "
                    "updated_at, expires_at) VALUES (%s, 'committed', 2, 20, 300, 1, 10, 200, %s, %s, %s)",
                    [(f"h{i}", now, now, now + 900) for i in range(3000)],
                )
                cur.executemany(
                    "INSERT INTO reservation_scopes VALUES (%s, %s, %s)",
                    [(f"h{i}", kind, key) for i in range(3000) for kind, key in (("request", f"r{i}"), ("user", "key:k1"))],
                )
        led.rebuild_totals()
        led.reserve("open", [Scope("request", "r-open"), user], Usage(1, 10, 100), ttl_s=60)
        assert led.spent(user) == Usage(3000, 30_000, 600_000) and led.reserved(user) == Usage(1, 10, 100)

        def explain(sql: str, params: Any) -> int:
            plan = led._read("explain", lambda conn: conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0])
            return _rows_touched(plan[0]["Plan"])

        read = explain(ledger_module._SCOPE_READ_SQL, led._read_params(user, time.time()))
        check = explain(ledger_module._check_sql(2), (0, "request", "r-new", 1, user.kind, user.key))
        assert read <= 20 and check <= 20, (read, check)
