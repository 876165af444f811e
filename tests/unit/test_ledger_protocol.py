"""The budget protocol on a real ledger, on both backends (a SQLite file and a fresh
PostgreSQL database: ``db_target``): holds expire and free their room without a manual step
(even when their process was killed), settlements are exactly once and keep the call's
result, a late settlement is recorded, limits are set where missing in the reserving
transaction. SQLite only: old files migrate, what a reserve executes, durability settings,
and many processes never overspend a cap (PostgreSQL's own are in test_postgres_backend)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from effreason_agents import errors
from effreason_agents.adapters import ledger as ledger_module
from effreason_agents.adapters.ledger import (
    MIGRATIONS,
    BudgetExhausted,
    BudgetLedger,
    LedgerError,
    Scope,
    Usage,
)
from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.config import BudgetConfig, LimitConfig
from totals_helpers import fresh_totals, stored_totals

REQ = Scope("request", "r1")
THREAD = Scope("thread", "t1")
USER = Scope("user", "u1")
LOGGER = "effreason_agents.adapters.ledger"
T0 = 1_700_000_000.0


class Clock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(db_target: str, clock: Clock):
    with BudgetLedger(db_target, clock=clock) as led:
        yield led


def _rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- errors ---------------------------------------------------------------


def test_errors_live_in_errors_module_and_name_the_scope(ledger: BudgetLedger) -> None:
    assert BudgetExhausted is errors.BudgetExhausted and LedgerError is errors.LedgerError
    assert issubclass(BudgetExhausted, errors.EffReasonError) and issubclass(LedgerError, errors.EffReasonError)
    assert {"BudgetExhausted", "LedgerError"} <= set(ledger_module.__all__)

    ledger.set_limits(USER, LimitConfig(max_cost_usd=Decimal("0.002")))
    ledger.reserve("a", [REQ, USER], Usage(micro_usd=1500))
    with pytest.raises(BudgetExhausted) as info:
        ledger.reserve("b", [Scope("request", "r2"), USER], Usage(micro_usd=900))
    exc = info.value
    assert exc.scope == USER and exc.scope_kind == "user" and type(exc.scope_kind) is str
    assert str(exc) == (
        "the user budget is nearly spent: the next step may need up to $0.0009, but only $0.0005 of $0.0020 is left"
    )
    assert (exc.needed, exc.remaining, exc.limit_value, exc.used) == (
        Decimal("0.0009"), Decimal("0.0005"), Decimal("0.002"), Decimal("0.0015"),
    )
    copy = pickle.loads(pickle.dumps(exc))  # survives process pools
    assert (type(copy), str(copy), copy.scope, copy.scope_kind, copy.remaining) == (
        BudgetExhausted, str(exc), USER, "user", Decimal("0.0005"),
    )


# -- holds expire ---------------------------------------------------------


def test_expired_hold_is_released_by_the_next_reserve_freeing_its_room(
    ledger: BudgetLedger, clock: Clock, caplog
) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
    assert ledger.reserve("stuck", [THREAD], Usage(micro_usd=8000), ttl_s=60) == "reserved"
    [hold] = ledger.holds(THREAD)
    assert (hold["key"], hold["created_at"], hold["expires_at"]) == ("stuck", T0, T0 + 60)

    clock.now = T0 + 59  # not yet expired: the hold still counts
    with pytest.raises(BudgetExhausted):
        ledger.reserve("next", [THREAD], Usage(micro_usd=5000))
    assert ledger.status("stuck") == "reserved"

    clock.now = T0 + 61
    with caplog.at_level("INFO", logger=LOGGER):
        assert ledger.reserve("next", [THREAD], Usage(micro_usd=5000)) == "reserved"
    assert ledger.status("stuck") == "released"
    assert ledger.reserved(THREAD) == Usage(micro_usd=5000)
    assert "released 1 expired budget hold" in caplog.text


def test_default_ttl_and_refusal_still_releases_expired_holds(db_target: str, clock: Clock) -> None:
    with BudgetLedger(db_target, default_ttl_s=30, clock=clock) as led:
        led.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
        led.reserve("a", [THREAD], Usage(micro_usd=4000))
        assert led.holds(THREAD)[0]["expires_at"] == T0 + 30
        clock.now = T0 + 31
        with pytest.raises(BudgetExhausted):  # can never fit, but the sweep is kept
            led.reserve("huge", [THREAD], Usage(micro_usd=20_000))
        assert led.status("a") == "released" and led.status("huge") is None
        assert led.reserved(THREAD) == Usage()
    with pytest.raises(ValueError, match="ttl_s must be"):
        BudgetLedger(db_target, default_ttl_s=0)


def test_rereserving_a_held_key_extends_its_expiry_without_charging(ledger: BudgetLedger, clock: Clock) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.0015")))
    ledger.reserve("k", [THREAD], Usage(micro_usd=1000), ttl_s=10)
    clock.now = T0 + 8
    assert ledger.reserve("k", [THREAD], Usage(micro_usd=1000), ttl_s=10) == "reserved"  # the step runs again
    assert ledger.holds(THREAD)[0]["expires_at"] == T0 + 18
    assert ledger.reserved(THREAD) == Usage(micro_usd=1000)
    clock.now = T0 + 15
    ledger.reserve("other", [Scope("thread", "t2")], Usage(micro_usd=1))  # sweeps: "k" is not expired
    assert ledger.status("k") == "reserved"
    with pytest.raises(ValueError, match="ttl_s must be"):
        ledger.reserve("x", [THREAD], Usage(), ttl_s=-1)


def test_hold_of_a_killed_process_is_released_automatically(db_target: str) -> None:
    path = db_target
    with BudgetLedger(path) as setup:
        setup.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
    code = textwrap.dedent(
        f"""
        import sys, time
        from effreason_agents.adapters.ledger import BudgetLedger, Scope, Usage
        led = BudgetLedger({str(path)!r})
        led.reserve("victim", [Scope("request", "rv"), Scope("thread", "t1")], Usage(micro_usd=9000), ttl_s=2.0)
        print("held", flush=True)
        time.sleep(120)  # the model call, during which the process is killed
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    with BudgetLedger(path) as led:  # right after the kill the hold still counts
        assert led.status("victim") == "reserved"
        with pytest.raises(BudgetExhausted) as exc:
            led.reserve("after", [Scope("request", "r2"), THREAD], Usage(micro_usd=2000))
        assert exc.value.scope_kind == "thread"
    # Another instance, once the ttl has passed (its clock runs 5 s ahead), reserves with no manual step.
    with BudgetLedger(path, clock=lambda: time.time() + 5) as later:
        assert later.reserve("after", [Scope("request", "r2"), THREAD], Usage(micro_usd=2000)) == "reserved"
        assert later.status("victim") == "released"
        assert later.reserved(THREAD) == Usage(micro_usd=2000) and later.spent(THREAD) == Usage()


def test_release_stale_without_threshold_uses_expiry(ledger: BudgetLedger, clock: Clock) -> None:
    ledger.reserve("short", [THREAD], Usage(micro_usd=1), ttl_s=5)
    ledger.reserve("long", [THREAD], Usage(micro_usd=1), ttl_s=500)
    ledger.reserve("paid", [THREAD], Usage(micro_usd=1), ttl_s=5)
    ledger.commit("paid", Usage(micro_usd=1))
    assert ledger.release_stale() == 0
    clock.now = T0 + 6
    assert ledger.release_stale() == 1
    assert [ledger.status(k) for k in ("short", "long", "paid")] == ["released", "reserved", "committed"]
    assert ledger.release_stale(now=T0 + 501) == 1  # an explicit time
    # a threshold releases by age, whatever the expiry
    ledger.reserve("young", [THREAD], Usage(micro_usd=1), ttl_s=1000)
    assert ledger.release_stale(10, now=T0 + 20) == 1 and ledger.status("young") == "released"


# -- settlement -----------------------------------------------------------


def test_commit_after_expiry_records_the_spend(ledger: BudgetLedger, clock: Clock, caplog) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
    ledger.reserve("slow", [REQ, THREAD], Usage(5, 20, 6000), ttl_s=30)
    clock.now = T0 + 31
    ledger.reserve("other", [Scope("request", "r2"), THREAD], Usage(micro_usd=7000))  # sweeps "slow"
    assert ledger.status("slow") == "released"
    with caplog.at_level("ERROR", logger=LOGGER):
        ledger.commit("slow", Usage(output_tokens=3, total_tokens=9, micro_usd=5000), result={"text": "late"})
    assert ledger.status("slow") == "committed"
    assert ledger.spent(REQ) == Usage(3, 9, 5000)
    assert ledger.spent(THREAD) == Usage(3, 9, 5000)  # the thread is now past its cap: billed money is kept
    assert ledger.settled("slow") == (Usage(3, 9, 5000), {"text": "late"})
    [record] = caplog.records
    assert record.levelname == "ERROR" and "expired at" in record.getMessage()
    ledger.commit("slow", Usage(micro_usd=1))  # still exactly once
    assert ledger.spent(REQ) == Usage(3, 9, 5000)


def test_commit_of_an_expired_hold_not_yet_swept_is_silent(ledger: BudgetLedger, clock: Clock, caplog) -> None:
    ledger.reserve("k", [THREAD], Usage(micro_usd=100), ttl_s=1)
    clock.now = T0 + 5  # nobody reserved since: the hold was still counted, nothing to report
    with caplog.at_level("WARNING", logger=LOGGER):
        ledger.commit("k", Usage(micro_usd=90))
    assert caplog.records == [] and ledger.spent(THREAD) == Usage(micro_usd=90)


def test_settled_returns_the_stored_result_exactly_once(ledger: BudgetLedger) -> None:
    result = {
        "text": "The answer is 42.",
        "usage": {"input_tokens": 12, "output_tokens": 6, "cost_usd": "0.000018"},
        "logprobs": [{"token": "42", "logprob": -0.25, "top": [["42", -0.25], ["41", -2.5]]}],
        "finish_reason": "stop",
    }
    assert ledger.settled("k") is None  # unknown
    ledger.reserve("k", [REQ], Usage(6, 20, 30))
    assert ledger.settled("k") is None  # held, not settled
    ledger.commit("k", Usage(6, 18, 18), result=result)
    assert ledger.settled("k") == (Usage(6, 18, 18), result)
    ledger.commit("k", Usage(1, 1, 1), result={"text": "a re-run"})  # the first settlement stands
    assert ledger.settled("k") == (Usage(6, 18, 18), result)
    # a re-executed step finds its settlement and returns the stored attempt
    assert ledger.reserve("k", [REQ], Usage(6, 20, 30)) == "committed"
    assert ledger.settled("k")[1]["text"] == "The answer is 42."  # type: ignore[index]

    ledger.reserve("bare", [REQ], Usage(1, 1, 1))
    ledger.commit("bare", Usage(1, 1, 1))
    assert ledger.settled("bare") == (Usage(1, 1, 1), None)
    ledger.reserve("gone", [REQ], Usage(1, 1, 1))
    ledger.release("gone")
    assert ledger.settled("gone") is None


def test_a_result_that_is_not_json_is_refused_before_writing(ledger: BudgetLedger) -> None:
    ledger.reserve("k", [REQ], Usage(1, 1, 1))
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        ledger.commit("k", Usage(1, 1, 1), result={"cost": Decimal("0.1")})
    with pytest.raises(TypeError, match="mapping"):
        ledger.commit("k", Usage(1, 1, 1), result=["text"])  # type: ignore[arg-type]
    assert ledger.status("k") == "reserved" and ledger.spent(REQ) == Usage()
    with pytest.raises(LedgerError, match="no reservation 'nope'"):
        ledger.commit("nope", Usage(), result={"text": "x"})


def test_reservation_handle_passes_ttl_limits_and_result(ledger: BudgetLedger) -> None:
    limits = {REQ: LimitConfig(max_cost_usd=Decimal("0.0001"))}
    with ledger.reservation("h", [REQ], Usage(micro_usd=50), ttl_s=7, limits=limits) as res:
        assert ledger.holds(REQ)[0]["expires_at"] == T0 + 7
        res.commit(Usage(micro_usd=40), result={"text": "ok"})
    assert ledger.limits(REQ) == LimitConfig(max_cost_usd=Decimal("0.0001"))
    assert ledger.settled("h") == (Usage(micro_usd=40), {"text": "ok"})


# -- limits set in the reserving transaction --------------------------------


def test_limits_are_set_only_where_none_exist_in_one_transaction(ledger: BudgetLedger) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.05")))  # a chatbot chose this thread budget
    budget = BudgetConfig(
        max_output_tokens=100,
        thread=LimitConfig(max_cost_usd=Decimal("0.01")),
        user=LimitConfig(),  # nothing configured: no row, the user stays unlimited
    )
    limits = {
        REQ: LimitConfig(max_output_tokens=budget.max_output_tokens),
        THREAD: budget.thread,
        USER: budget.user,
    }

    statements: list[str] = []
    if ledger.dialect == "sqlite":  # one BEGIN IMMEDIATE transaction
        ledger._db().set_trace_callback(statements.append)
    try:
        assert ledger.reserve("a", list(limits), Usage(50, 60, 1000), limits=limits) == "reserved"
    finally:
        if ledger.dialect == "sqlite":
            ledger._db().set_trace_callback(None)
            assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN IMMEDIATE", "COMMIT"]

    assert ledger.limits(REQ) == LimitConfig(max_output_tokens=100)
    assert ledger.limits(THREAD) == LimitConfig(max_cost_usd=Decimal("0.05"))  # kept, not replaced
    assert ledger.limits(USER) is None
    # the new request limit is enforced by the same reserve: 50 + 51 > 100
    with pytest.raises(BudgetExhausted) as exc:
        ledger.reserve("b", list(limits), Usage(51, 60, 1000), limits=limits)
    assert exc.value.scope == REQ and exc.value.limit == "max_output_tokens"
    with pytest.raises(ValueError, match="thread:t9"):
        ledger.reserve("c", [REQ], Usage(), limits={Scope("thread", "t9"): LimitConfig(max_total_tokens=5)})
    with pytest.raises(ValueError, match="micro-dollar"):
        ledger.reserve("c", [REQ], Usage(), limits={REQ: LimitConfig(max_cost_usd=Decimal("0.0000001"))})
    assert ledger.status("c") is None


def test_ensure_limits_sets_only_missing_ones(ledger: BudgetLedger) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.05")))
    wanted = {
        REQ: LimitConfig(max_output_tokens=10),
        THREAD: LimitConfig(max_cost_usd=Decimal("0.01")),
        USER: LimitConfig(),
    }
    assert ledger.ensure_limits(wanted) == [REQ]
    assert ledger.limits(REQ) == LimitConfig(max_output_tokens=10)
    assert ledger.limits(THREAD) == LimitConfig(max_cost_usd=Decimal("0.05"))
    assert ledger.limits(USER) is None
    assert ledger.ensure_limits(wanted) == []  # nothing missing any more
    assert ledger.ensure_limits({USER: LimitConfig()}) == []


def test_limits_of_a_refused_request_stay_set(ledger: BudgetLedger) -> None:
    with pytest.raises(BudgetExhausted):
        ledger.reserve("a", [REQ], Usage(micro_usd=2000), limits={REQ: LimitConfig(max_cost_usd=Decimal("0.001"))})
    assert ledger.status("a") is None
    assert ledger.limits(REQ) == LimitConfig(max_cost_usd=Decimal("0.001"))


# -- reading --------------------------------------------------------------


def test_show_and_holds(ledger: BudgetLedger, clock: Clock) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_total_tokens=1000, max_cost_usd=Decimal("0.01")))
    ledger.reserve("paid", [REQ, THREAD], Usage(10, 100, 2500))
    ledger.commit("paid", Usage(8, 90, 2000))
    ledger.reserve("h1", [REQ, THREAD], Usage(20, 200, 3000), ttl_s=10)
    clock.now = T0 + 1
    ledger.reserve("h2", [THREAD], Usage(5, 50, 500), ttl_s=100)
    clock.now = T0 + 20  # h1 is past its expiry, not yet swept: it no longer counts as held
    assert ledger.show(THREAD) == {
        "scope": "thread:t1",
        "limits": {"output_tokens": None, "total_tokens": 1000, "cost_usd": "0.01"},
        "spent": {"output_tokens": 8, "total_tokens": 90, "cost_usd": "0.002"},
        "held": {"output_tokens": 5, "total_tokens": 50, "cost_usd": "0.0005"},
        "remaining": {"output_tokens": None, "total_tokens": 860, "cost_usd": "0.0075"},
        "holds": 2,
        "expired_holds": 1,
    }
    assert ledger.holds(THREAD) == [
        {"key": "h1", "held": {"output_tokens": 20, "total_tokens": 200, "cost_usd": "0.003"},
         "created_at": T0, "expires_at": T0 + 10},
        {"key": "h2", "held": {"output_tokens": 5, "total_tokens": 50, "cost_usd": "0.0005"},
         "created_at": T0 + 1, "expires_at": T0 + 101},
    ]
    unlimited = {"output_tokens": None, "total_tokens": None, "cost_usd": None}
    assert ledger.show(Scope("user", "nobody"))["limits"] == unlimited
    assert ledger.show(Scope("user", "nobody"))["spent"]["cost_usd"] == "0"
    json.dumps(ledger.show(THREAD))  # JSON-plain for `budget show --json`
    assert ledger.release_stale() == 1 and [h["key"] for h in ledger.holds(THREAD)] == ["h2"]


# -- speed: what reserve executes -------------------------------------------


@pytest.fixture
def sqlite_ledger(tmp_path: Path, clock: Clock):
    with BudgetLedger(tmp_path / "ledger.sqlite", clock=clock) as led:
        yield led


def test_reserve_reads_through_indexes(sqlite_ledger: BudgetLedger, tmp_path: Path) -> None:
    """Every statement of a reserve is an index search (no table scan), the key is read
    once, and limits and totals of all scopes come from one statement."""
    ledger = sqlite_ledger
    scopes = [REQ, THREAD, USER]
    for s in scopes:
        ledger.set_limits(s, LimitConfig(max_cost_usd=Decimal("100")))
    for i in range(30):  # some history on every scope
        ledger.reserve(f"old{i}", [Scope("request", f"o{i}"), THREAD, USER], Usage(1, 2, 3))
        ledger.commit(f"old{i}", Usage(1, 2, 3))
    statements: list[str] = []
    ledger._db().set_trace_callback(statements.append)
    try:
        ledger.reserve("new", scopes, Usage(1, 2, 3), limits={s: LimitConfig(max_total_tokens=10_000) for s in scopes})
    finally:
        ledger._db().set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH"))]
    assert sum("FROM reservations WHERE key" in s for s in reads) == 1
    assert sum("FROM scope_limits" in s or "JOIN scope_limits" in s for s in reads) == 1
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    try:
        for sql in reads:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            scans = [p for p in plan if p.startswith("SCAN") and p not in ("SCAN w", "SCAN 3 CONSTANT ROWS")]
            assert not scans, (sql, plan)
            if "reservation_scopes" in sql:
                assert any("COVERING INDEX idx_reservation_scopes_scope_key" in p for p in plan), plan
            if sql.lstrip().startswith("UPDATE reservations SET status = 'released'"):
                assert any("idx_reservations_status_expires" in p for p in plan), plan
    finally:
        conn.close()


def test_durability_settings(sqlite_ledger: BudgetLedger, tmp_path: Path) -> None:
    ledger = sqlite_ledger
    assert ledger._db().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: money
    with OutcomeStore(tmp_path / "outcomes.sqlite") as store:
        assert store._db().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: a log
        assert store._db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- migration --------------------------------------------------------------


def test_a_0001_file_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    now = time.time()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    name, statements = MIGRATIONS[0]
    assert name == "0001_ledger"
    for statement in statements:
        conn.execute(statement)
    conn.execute("INSERT INTO _migrations VALUES ('0001_ledger', '2024-01-01T00:00:00.000+00:00')")
    conn.execute("INSERT INTO scope_limits VALUES ('thread', 't1', NULL, NULL, 10000, ?)", (now,))
    hold = (
        "INSERT INTO reservations (key, status, reserved_output_tokens, reserved_total_tokens, reserved_micro_usd, "
        "actual_output_tokens, actual_total_tokens, actual_micro_usd, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    conn.execute(hold, ("paid", "committed", 10, 100, 3000, 8, 90, 2500, now - 5000, now - 5000))
    conn.execute(hold, ("abandoned", "reserved", 10, 100, 4000, None, None, None, now - 2000, now - 2000))
    conn.execute(hold, ("recent", "reserved", 10, 100, 1000, None, None, None, now - 10, now - 10))
    for key in ("paid", "abandoned", "recent"):
        conn.execute("INSERT INTO reservation_scopes VALUES (?, 'thread', 't1')", (key,))
    conn.commit()
    conn.close()

    with BudgetLedger(path) as led:  # default_ttl_s = 900
        assert led.applied_migrations() == [n for n, _ in MIGRATIONS]
        assert led.limits(THREAD) == LimitConfig(max_cost_usd=Decimal("0.01"))
        assert led.spent(THREAD) == Usage(8, 90, 2500)
        assert led.reserved(THREAD) == Usage(20, 200, 5000)
        assert [h["expires_at"] for h in led.holds(THREAD)] == [None, None]
        assert led.settled("paid") == (Usage(8, 90, 2500), None)
        # a hold from before expiries existed lives default_ttl_s after it was taken
        assert led.reserve("new", [REQ, THREAD], Usage(micro_usd=2500)) == "reserved"
        assert (led.status("abandoned"), led.status("recent")) == ("released", "reserved")
        assert led.release_stale(now=now + 1000) == 2  # "recent" and "new" (its ttl is 900 s)
    indexes = {r[0] for r in _rows(path, "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'")}
    assert {"idx_reservations_status_expires", "idx_reservation_scopes_scope_key"} <= indexes
    assert "idx_reservation_scopes_scope" not in indexes
    assert _rows(path, "PRAGMA journal_mode")[0][0] == "wal"


# -- many processes, one cap ------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    from effreason_agents.adapters.ledger import BudgetExhausted, BudgetLedger, Scope, Usage

    path, proc, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    rng = random.Random(proc)
    led = BudgetLedger(path)
    thread = Scope("thread", "chat")
    report = {"committed": 0, "refused": 0, "released": 0, "abandoned": 0, "ran": 0}
    while time.time() < start:  # start together
        time.sleep(0.001)
    for i in range(n):
        key = f"p{proc}-{i}"
        worst = rng.randint(300, 1500)
        action = rng.choices(["commit", "release", "abandon"], [70, 15, 15])[0]
        try:
            led.reserve(key, [Scope("request", key), thread], Usage(micro_usd=worst),
                        ttl_s=0.05 if action == "abandon" else None)
        except BudgetExhausted as exc:
            assert exc.scope_kind == "thread", exc
            report["refused"] += 1
            continue
        report["ran"] += 1
        time.sleep(rng.uniform(0, 0.003))  # the model call
        if action == "commit":
            actual = rng.randint(0, worst)
            led.commit(key, Usage(micro_usd=actual), result={"text": key})
            report["committed"] += actual
        elif action == "release":
            led.release(key)
            report["released"] += 1
        else:
            report["abandoned"] += 1  # left held, as by a crash: it expires
    led.close()
    print(json.dumps(report))
    """
)


def test_eight_processes_never_exceed_a_small_cap(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    cap_micro = 6000
    thread = Scope("thread", "chat")
    with BudgetLedger(path) as setup:
        setup.set_limits(thread, LimitConfig(max_cost_usd=Decimal(cap_micro) / 1_000_000))

    # Watch committed + held on the thread while the processes run; each read is a snapshot.
    peak: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        conn = sqlite3.connect(path, timeout=30)
        try:
            while not stop.is_set():
                (used,) = conn.execute(
                    "SELECT COALESCE(SUM(CASE r.status WHEN 'committed' THEN r.actual_micro_usd "
                    "WHEN 'reserved' THEN r.reserved_micro_usd ELSE 0 END), 0) FROM reservation_scopes s "
                    "JOIN reservations r ON r.key = s.reservation_key WHERE s.kind = 'thread' AND s.scope_key = 'chat'"
                ).fetchone()
                peak.append(used)
                time.sleep(0.002)
        finally:
            conn.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(p), "25", str(start)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for p in range(8)
    ]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        stop.set()
        watcher.join()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

    committed = sum(r["committed"] for r in reports)
    assert sum(r["ran"] + r["refused"] for r in reports) == 200
    assert sum(r["refused"] for r in reports) > 0, "the cap never bound: make it smaller"
    assert sum(r["ran"] for r in reports) > 0
    assert peak and max(peak) <= cap_micro
    with BudgetLedger(path) as led:
        spent, held = led.spent(thread), led.reserved(thread)
        assert spent.micro_usd == committed  # the ledger's spend is what was billed
        assert spent.micro_usd + held.micro_usd <= cap_micro
        abandoned = sum(r["abandoned"] for r in reports)
        assert len(led.holds(thread)) <= abandoned  # only abandoned holds may remain, until they expire


# -- running totals: a check and a read cost the same whatever the history -------------


def _vm_steps(ledger: BudgetLedger, call) -> int:
    """SQLite virtual-machine instructions run by ``call()`` on the ledger's connection."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    ledger._db().set_progress_handler(count, 1)
    try:
        call()
    finally:
        ledger._db().set_progress_handler(None, 1)
    return steps[0]


def test_a_hold_and_a_read_take_the_same_steps_however_long_the_history(sqlite_ledger: BudgetLedger) -> None:
    """An API key's user scope accumulates every request it makes: holding, settling and
    reading its budget execute exactly as many SQLite instructions after 400 settled holds
    as after 10 (the running totals are read, the history is never summed)."""
    ledger = sqlite_ledger
    ledger.set_limits(USER, LimitConfig(max_cost_usd=Decimal("1000")))
    ledger.set_limits(THREAD, LimitConfig(max_total_tokens=10**9))
    done = 0
    costs = []
    for history in (10, 400):
        while done < history:
            key = f"h{done}"
            ledger.reserve(key, [Scope("request", key), THREAD, USER], Usage(1, 20, 300))
            ledger.commit(key, Usage(1, 15, 200))
            done += 1
        key = f"new{history}"
        scopes = [Scope("request", key), THREAD, USER]
        costs.append((
            _vm_steps(ledger, lambda: ledger.reserve(key, scopes, Usage(1, 20, 300))),
            _vm_steps(ledger, lambda: ledger.commit(key, Usage(1, 15, 200))),
            _vm_steps(ledger, lambda: ledger.show(USER)),
            _vm_steps(ledger, lambda: ledger.remaining(USER)),
            _vm_steps(ledger, lambda: ledger.spent(THREAD)),
        ))
    assert costs[0] == costs[1], costs
    assert ledger.spent(USER) == Usage(402, 6030, 80_400)


def test_reads_use_the_totals_and_never_the_scopes_history(sqlite_ledger: BudgetLedger, tmp_path: Path) -> None:
    """What spent / reserved / remaining / show execute: index searches only, the scope's
    totals by primary key, and reservation_scopes probed only by a hold's key (for holds
    past their expiry), never searched by scope."""
    ledger, clock = sqlite_ledger, sqlite_ledger._clock
    for i in range(20):
        ledger.reserve(f"old{i}", [Scope("request", f"o{i}"), USER], Usage(1, 2, 3), ttl_s=5)
        if i % 2:
            ledger.commit(f"old{i}", Usage(1, 2, 3))
    clock.now = T0 + 10  # ten holds past their expiry, not swept: reads leave them out
    statements: list[str] = []
    ledger._db().set_trace_callback(statements.append)
    try:
        assert ledger.reserved(USER) == Usage()
        assert ledger.spent(USER) == Usage(10, 20, 30)
        assert ledger.show(USER)["expired_holds"] == 10 and ledger.show(USER)["holds"] == 10
        ledger.remaining(USER)
    finally:
        ledger._db().set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert any("scope_totals" in s for s in reads)
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    try:
        for sql in reads:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            assert not [p for p in plan if p.startswith("SCAN") and p != "SCAN late"], (sql, plan)
            for p in plan:
                if p.startswith("SEARCH s "):  # one hold's row, never the scope's rows
                    assert all(f"{c}=?" in p for c in ("reservation_key", "kind", "scope_key")), plan
    finally:
        conn.close()


def test_a_ledger_from_before_running_totals_is_backfilled(
    db_target: str, db_rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger written at the previous schema (migrations 0001-0003) gets its running
    totals from its rows when opened: committed actual usage is spent, every outstanding
    hold is held (past its expiry or not), and reads report what they did before the
    upgrade: holds past their expiry are not held, holds from before expiries existed are."""
    previous = MIGRATIONS[:3]
    assert [n for n, _ in previous] == ["0001_ledger", "0002_hold_expiry_and_result", "0003_virtual_keys"]
    monkeypatch.setattr(BudgetLedger, "migrations", previous)
    assert BudgetLedger.migrate(db_target) == [n for n, _ in previous]
    monkeypatch.undo()

    db_rows(db_target, "INSERT INTO scope_limits VALUES ('thread', 't1', NULL, NULL, 10000, ?)", (T0,))
    hold = (
        "INSERT INTO reservations (key, status, reserved_output_tokens, reserved_total_tokens, reserved_micro_usd, "
        "actual_output_tokens, actual_total_tokens, actual_micro_usd, created_at, updated_at, expires_at, result) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    history = [
        ("paid1", "committed", (10, 100, 3000), (8, 90, 2500), T0 - 500, T0 + 400, ["r1", "t1", "u1"]),
        ("paid2", "committed", (5, 50, 2000), (5, 40, 1500), T0 - 400, T0 + 500, ["r2", "t1"]),
        ("gone", "released", (7, 70, 9999), (None, None, None), T0 - 300, T0 + 600, ["r3", "t1", "u1"]),
        ("live", "reserved", (3, 30, 1000), (None, None, None), T0 - 5, T0 + 600, ["r4", "t1", "u1"]),
        ("late", "reserved", (4, 40, 1200), (None, None, None), T0 - 100, T0 - 10, ["r5", "t1"]),
        ("legacy", "reserved", (2, 20, 500), (None, None, None), T0 - 5000, None, ["t1"]),  # from before 0002
    ]
    kinds = {"r": "request", "t": "thread", "u": "user"}
    for key, status, held, actual, taken, expires, scopes in history:
        db_rows(db_target, hold, (key, status, *held, *actual, taken, taken, expires, None))
        for s in scopes:
            db_rows(db_target, "INSERT INTO reservation_scopes VALUES (?, ?, ?)", (key, kinds[s[0]], s))

    with BudgetLedger(db_target, clock=Clock()) as led:
        assert led.applied_migrations() == [n for n, _ in MIGRATIONS]
        assert "0004_scope_totals" in led.applied_migrations()
        totals = stored_totals(db_rows, db_target)
        assert totals == fresh_totals(db_rows, db_target)
        assert totals[("thread", "t1")] == (13, 130, 4000, 9, 90, 2700, 3)
        assert totals[("user", "u1")] == (8, 90, 2500, 3, 30, 1000, 1)
        assert ("request", "r3") not in totals  # only a released hold: nothing spent or held

        assert led.spent(THREAD) == Usage(13, 130, 4000)
        assert led.reserved(THREAD) == Usage(5, 50, 1500)  # "late" is past its expiry; "legacy" still counts
        shown = led.show(THREAD)
        assert (shown["holds"], shown["expired_holds"]) == (3, 2)
        assert shown["remaining"]["cost_usd"] == "0.0045"
        assert led.remaining(USER)["max_cost_usd"]["used"] == "0.002500"

        # The next hold sweeps "late" and "legacy" (the ledger's default ttl is 900 s), which frees
        # their room: 4000 spent + 1000 held + 5000 fits the 10000 cap exactly.
        assert led.reserve("next", [Scope("request", "r6"), THREAD], Usage(micro_usd=5000)) == "reserved"
        assert (led.status("late"), led.status("legacy")) == ("released", "released")
        with pytest.raises(BudgetExhausted):
            led.reserve("over", [Scope("request", "r7"), THREAD], Usage(micro_usd=1))
        led.commit("live", Usage(2, 20, 800))
        assert stored_totals(db_rows, db_target) == fresh_totals(db_rows, db_target)
        assert stored_totals(db_rows, db_target)[("thread", "t1")] == (15, 150, 4800, 0, 0, 5000, 1)
