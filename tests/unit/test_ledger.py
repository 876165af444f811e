"""Budget ledger on both backends: real SQLite files in tmp_path and fresh databases on a
real PostgreSQL server (``db_target``); what only a SQLite file has is tested on SQLite."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from effreason_agents.config import BudgetConfig, LimitConfig
from effreason_agents.errors import EffReasonError
from effreason_agents.adapters.ledger import (
    BudgetExhausted,
    MIGRATIONS,
    BudgetLedger,
    LedgerError,
    Scope,
    Usage,
    from_micro,
    to_micro,
)
from totals_helpers import fresh_totals, live_sums, stored_totals

REQ = Scope("request", "r1")
THREAD = Scope("thread", "t1")
USER = Scope("user", "u1")


@pytest.fixture
def ledger(db_target: str):
    with BudgetLedger(db_target) as led:
        yield led


def rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- money and usage ------------------------------------------------------


def test_to_micro_rounds_up_and_from_micro_is_exact() -> None:
    assert to_micro("0.01") == 10_000
    assert to_micro(Decimal("0.0000001")) == 1  # a tenth of a micro-dollar still counts
    assert to_micro("0.0000010000001") == 2
    assert to_micro("0.000001") == 1
    assert to_micro(0) == 0
    assert to_micro("-0.0000015") == -1  # ceil, towards +inf
    assert from_micro(1500) == Decimal("0.0015")
    assert str(from_micro(10_000)) == "0.010000"
    assert from_micro(to_micro("1.234567")) == Decimal("1.234567")
    with pytest.raises(TypeError):
        to_micro(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_micro("abc")
    with pytest.raises(ValueError):
        to_micro("NaN")


def test_usage_arithmetic_and_validation() -> None:
    a = Usage(output_tokens=10, total_tokens=30, micro_usd=5)
    b = Usage(1, 2, 3)
    assert a + b == Usage(11, 32, 8)
    assert a + Usage() == a
    assert sum([a, b], Usage()) == Usage(11, 32, 8)
    assert Usage.from_usd(1, 2, "0.0000011") == Usage(1, 2, 2)
    assert Usage(micro_usd=1500).cost_usd == Decimal("0.0015")
    assert a.exceeds(Usage(10, 30, 4)) and not a.exceeds(a)
    with pytest.raises(ValueError):
        Usage(output_tokens=-1)
    with pytest.raises(ValueError):
        Usage(micro_usd=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Scope("session", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Scope("thread", "")


# -- limits and arithmetic ------------------------------------------------


def test_schema_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    names = [name for name, _ in MIGRATIONS]
    assert names[:2] == ["0001_ledger", "0002_hold_expiry_and_result"]
    with BudgetLedger(path) as led:
        assert led.applied_migrations() == names
    with BudgetLedger(path) as led:  # reopening applies nothing twice
        assert led.applied_migrations() == names
    assert rows(path, "PRAGMA journal_mode")[0][0] == "wal"


def test_limits_roundtrip(ledger: BudgetLedger) -> None:
    assert ledger.limits(THREAD) is None
    ledger.set_limits(THREAD, LimitConfig(max_output_tokens=100, max_cost_usd=Decimal("0.01")))
    assert ledger.limits(THREAD) == LimitConfig(max_output_tokens=100, max_cost_usd=Decimal("0.01"))
    ledger.set_limits(THREAD, LimitConfig(max_total_tokens=7))  # upsert replaces
    assert ledger.limits(THREAD) == LimitConfig(max_total_tokens=7)
    with pytest.raises(ValueError, match="micro-dollar"):
        ledger.set_limits(USER, LimitConfig(max_cost_usd=Decimal("0.0000001")))


def test_reserve_commit_release_across_three_scopes(ledger: BudgetLedger) -> None:
    ledger.set_limits(REQ, LimitConfig(max_output_tokens=100))
    ledger.set_limits(THREAD, LimitConfig(max_total_tokens=1000))
    ledger.set_limits(USER, LimitConfig(max_cost_usd=Decimal("0.0100")))
    scopes = [REQ, THREAD, USER]
    worst = Usage(output_tokens=60, total_tokens=400, micro_usd=4000)

    assert ledger.reserve("a", scopes, worst) == "reserved"
    for s in scopes:
        assert ledger.reserved(s) == worst
        assert ledger.spent(s) == Usage()
    rem = ledger.remaining(USER)["max_cost_usd"]
    assert rem == {"limit": "0.010000", "used": "0.000000", "reserved": "0.004000", "remaining": "0.006000"}

    ledger.commit("a", Usage(output_tokens=20, total_tokens=300, micro_usd=3000))
    for s in scopes:
        assert ledger.spent(s) == Usage(20, 300, 3000)
        assert ledger.reserved(s) == Usage()
    assert ledger.remaining(REQ)["max_output_tokens"] == {"limit": 100, "used": 20, "reserved": 0, "remaining": 80}
    assert ledger.remaining(REQ)["max_cost_usd"]["limit"] is None  # unlimited there
    assert ledger.remaining(REQ)["max_cost_usd"]["remaining"] is None

    # output tokens: 20 spent + 81 > 100 on the request scope
    with pytest.raises(BudgetExhausted) as exc:
        ledger.reserve("b", scopes, Usage(81, 10, 10))
    assert (exc.value.scope, exc.value.limit, exc.value.needed, exc.value.remaining) == (REQ, "max_output_tokens", 81, 80)
    # exactly up to the limit fits
    assert ledger.reserve("b", scopes, Usage(80, 10, 10)) == "reserved"
    ledger.release("b")
    assert ledger.reserved(REQ) == Usage()

    # total tokens: 300 spent + 701 > 1000 on the thread scope
    with pytest.raises(BudgetExhausted) as exc:
        ledger.reserve("c", scopes, Usage(1, 701, 1))
    assert (exc.value.scope, exc.value.limit) == (THREAD, "max_total_tokens")
    # dollars: 3000 spent + 7001 > 10000 micro on the user scope
    with pytest.raises(BudgetExhausted) as exc:
        ledger.reserve("c", scopes, Usage(1, 1, 7001))
    assert (exc.value.scope, exc.value.limit) == (USER, "max_cost_usd")
    assert exc.value.needed == Decimal("0.007001") and exc.value.remaining == Decimal("0.007")
    assert ledger.reserve("c", scopes, Usage(1, 1, 7000)) == "reserved"

    # outstanding reservations count against other requests on a shared scope
    other = Scope("request", "r2")
    with pytest.raises(BudgetExhausted) as exc:
        ledger.reserve("d", [other, USER], Usage(micro_usd=1))
    assert exc.value.scope == USER
    ledger.release("c")
    assert ledger.reserve("d", [other, USER], Usage(micro_usd=7000)) == "reserved"


def test_over_limit_writes_nothing_and_message_is_user_facing(ledger: BudgetLedger, db_target: str, db_rows) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.0100")))
    ledger.reserve("a", [REQ, THREAD], Usage(micro_usd=10_000))
    ledger.commit("a", Usage(micro_usd=10_000))
    before = db_rows(db_target, "SELECT COUNT(*) FROM reservations")[0][0]
    with pytest.raises(BudgetExhausted) as exc:
        ledger.reserve("b", [Scope("request", "r2"), THREAD, USER], Usage(micro_usd=1000))
    assert isinstance(exc.value, EffReasonError)
    assert str(exc.value) == "the thread budget is spent: $0.0100 of $0.0100 used"
    assert exc.value.scope == THREAD and exc.value.remaining == 0
    assert db_rows(db_target, "SELECT COUNT(*) FROM reservations")[0][0] == before
    assert db_rows(db_target, "SELECT COUNT(*) FROM reservation_scopes WHERE reservation_key='b'") == [(0,)]
    assert ledger.status("b") is None
    assert ledger.reserved(USER) == Usage()


def test_nearly_spent_message(ledger: BudgetLedger) -> None:
    ledger.set_limits(USER, LimitConfig(max_output_tokens=100))
    ledger.reserve("a", [USER], Usage(output_tokens=90))
    with pytest.raises(BudgetExhausted, match="user budget is nearly spent.*up to 20 output tokens.*only 10 output"):
        ledger.reserve("b", [USER], Usage(output_tokens=20))


def test_actual_above_worst_is_recorded_and_logged(ledger: BudgetLedger, caplog) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
    ledger.reserve("a", [THREAD], Usage(micro_usd=1000))
    with caplog.at_level("WARNING", logger="effreason_agents.adapters.ledger"):
        ledger.commit("a", Usage(micro_usd=1200))
    [record] = caplog.records
    assert record.levelname == "ERROR"  # a defect, not a normal path
    assert "exceeds" in record.getMessage() and "tighten the bound" in record.getMessage()
    assert ledger.spent(THREAD) == Usage(micro_usd=1200)
    assert ledger.remaining(THREAD)["max_cost_usd"]["remaining"] == "0.008800"


# -- idempotency ----------------------------------------------------------


def test_reserve_twice_charges_once(ledger: BudgetLedger) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.0015")))
    assert ledger.reserve("k", [THREAD], Usage(micro_usd=1000)) == "reserved"
    assert ledger.reserve("k", [THREAD], Usage(micro_usd=1000)) == "reserved"  # would not fit if charged again
    assert ledger.reserved(THREAD) == Usage(micro_usd=1000)


def test_commit_twice_and_rerun_after_commit_charge_once(ledger: BudgetLedger) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.0015")))
    ledger.reserve("k", [THREAD], Usage(micro_usd=1000))
    ledger.commit("k", Usage(micro_usd=900))
    ledger.commit("k", Usage(micro_usd=900))
    ledger.commit("k", Usage(micro_usd=5))  # a re-run reporting other numbers changes nothing
    assert ledger.spent(THREAD) == Usage(micro_usd=900)
    # LangGraph re-runs the node: reserve returns "committed", nothing is held again
    assert ledger.reserve("k", [THREAD], Usage(micro_usd=1000)) == "committed"
    assert ledger.reserved(THREAD) == Usage()
    assert ledger.spent(THREAD) == Usage(micro_usd=900)
    ledger.release("k")  # releasing spent money is a no-op
    assert ledger.status("k") == "committed" and ledger.spent(THREAD) == Usage(micro_usd=900)


def test_release_rules(ledger: BudgetLedger) -> None:
    ledger.reserve("k", [THREAD], Usage(micro_usd=10))
    ledger.release("k")
    ledger.release("k")  # no-op
    ledger.release("never-reserved")  # no-op, safe in cleanup code
    assert ledger.status("k") == "released"
    with pytest.raises(LedgerError, match="no reservation"):
        ledger.commit("unknown", Usage())
    assert ledger.spent(THREAD) == Usage()
    # a released key can be reserved afresh (e.g. a retry after a failed step)
    assert ledger.reserve("k", [THREAD], Usage(micro_usd=20)) == "reserved"
    assert ledger.reserved(THREAD) == Usage(micro_usd=20)


def test_commit_after_release_records_the_billed_spend(ledger: BudgetLedger, caplog) -> None:
    """The provider billed the call, so a settlement that arrives after its hold was freed
    is recorded (and logged as an error), never refused."""
    ledger.reserve("k", [THREAD], Usage(micro_usd=10))
    ledger.release("k")
    with caplog.at_level("ERROR", logger="effreason_agents.adapters.ledger"):
        ledger.commit("k", Usage(micro_usd=8))
    assert "released before it was settled" in caplog.text and "was released at" in caplog.text
    assert ledger.status("k") == "committed"
    assert ledger.spent(THREAD) == Usage(micro_usd=8) and ledger.reserved(THREAD) == Usage()


# -- context manager and stale reservations --------------------------------


def test_reservation_context_manager(ledger: BudgetLedger) -> None:
    ledger.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
    with pytest.raises(RuntimeError, match="model down"):
        with ledger.reservation("fail", [THREAD], Usage(micro_usd=5000)) as res:
            assert ledger.reserved(THREAD) == Usage(micro_usd=5000)
            raise RuntimeError("model down")
    assert res.key == "fail" and ledger.status("fail") == "released"
    assert ledger.reserved(THREAD) == Usage()

    with ledger.reservation("noop", [THREAD], Usage(micro_usd=5000)):
        pass  # neither committed nor raised
    assert ledger.status("noop") == "released"

    with ledger.reservation("ok", [THREAD], Usage(micro_usd=5000)) as res:
        assert not res.already_committed
        res.commit(Usage(micro_usd=4000))
    assert ledger.status("ok") == "committed" and ledger.spent(THREAD) == Usage(micro_usd=4000)

    with ledger.reservation("ok", [THREAD], Usage(micro_usd=5000)) as res:  # re-run of a paid step
        assert res.already_committed
    assert ledger.spent(THREAD) == Usage(micro_usd=4000) and ledger.reserved(THREAD) == Usage()

    with pytest.raises(BudgetExhausted):
        with ledger.reservation("big", [THREAD], Usage(micro_usd=7000)):
            pytest.fail("body must not run when the budget cannot cover it")
    assert ledger.status("big") is None


def test_release_stale(ledger: BudgetLedger) -> None:
    ledger.reserve("old", [THREAD], Usage(micro_usd=10))
    ledger.reserve("done", [THREAD], Usage(micro_usd=10))
    ledger.commit("done", Usage(micro_usd=10))
    assert ledger.release_stale(3600) == 0  # nothing that old
    assert ledger.status("old") == "reserved"
    assert ledger.release_stale(60, now=time.time() + 120) == 1
    assert ledger.status("old") == "released" and ledger.status("done") == "committed"
    assert ledger.reserved(THREAD) == Usage() and ledger.spent(THREAD) == Usage(micro_usd=10)


def test_configure_from_budget_config(ledger: BudgetLedger) -> None:
    budget = BudgetConfig(
        max_output_tokens=50, thread=LimitConfig(max_cost_usd=Decimal("0.02")), user=LimitConfig(max_total_tokens=9)
    )
    scopes = ledger.configure(budget, "r9", thread_id="t9", user_id="u9")
    assert scopes == [Scope("request", "r9"), Scope("thread", "t9"), Scope("user", "u9")]
    assert ledger.limits(scopes[0]) == LimitConfig(max_output_tokens=50)
    assert ledger.limits(scopes[1]) == LimitConfig(max_cost_usd=Decimal("0.02"))
    assert ledger.configure(budget, "r10") == [Scope("request", "r10")]


def test_closed_ledger_raises(db_target: str) -> None:
    led = BudgetLedger(db_target)
    led.close()
    led.close()  # idempotent
    with pytest.raises(LedgerError, match="closed"):
        led.spent(THREAD)
    with pytest.raises(LedgerError, match="closed"):
        led.reserve("k", [THREAD], Usage(micro_usd=1))


def test_a_directory_is_not_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="directory"):
        BudgetLedger(tmp_path)


# -- concurrency ----------------------------------------------------------

N_REQUESTS = 50
WORST = 1000  # micro-dollars: $0.001 per request at worst
CAP = Decimal("0.0100")  # covers about 10 requests


@pytest.mark.parametrize("shared", [False, True], ids=["own-ledger-per-thread", "shared-ledger"])
def test_concurrent_requests_never_overspend(db_target: str, db_rows, shared: bool) -> None:
    path = db_target
    thread = Scope("thread", "chat")
    with BudgetLedger(path) as setup:
        setup.set_limits(thread, LimitConfig(max_cost_usd=CAP))
    shared_ledger = BudgetLedger(path) if shared else None
    barrier = threading.Barrier(N_REQUESTS)
    outcome: dict[int, str] = {}
    committed_actual: dict[int, int] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        led = shared_ledger or BudgetLedger(path)
        rng = random.Random(i)
        try:
            barrier.wait()
            scopes = [Scope("request", f"r{i}"), thread]
            try:
                led.reserve(f"req-{i}", scopes, Usage(micro_usd=WORST))
            except BudgetExhausted as exc:
                assert exc.scope == thread
                outcome[i] = "exhausted"
                return
            time.sleep(rng.uniform(0, 0.005))  # the model call
            actual = rng.randint(800, WORST)
            led.commit(f"req-{i}", Usage(micro_usd=actual))
            committed_actual[i] = actual
            outcome[i] = "ran"
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            if shared_ledger is None:
                led.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if shared_ledger is not None:
        shared_ledger.close()
    assert not errors, errors
    assert len(outcome) == N_REQUESTS  # none lost (a dict key cannot be both)
    ran = [i for i, o in outcome.items() if o == "ran"]
    assert set(ran) == set(committed_actual)
    assert len(ran) >= 9

    with BudgetLedger(path) as led:
        spent = led.spent(thread)
        assert spent.micro_usd == sum(committed_actual.values())
        assert spent.cost_usd <= CAP
        assert led.reserved(thread) == Usage()
        statuses = dict(db_rows(path, "SELECT key, status FROM reservations"))
        assert statuses == {f"req-{i}": "committed" for i in ran}  # the refused left no row


def test_many_openers_of_a_new_ledger_at_once(tmp_path: Path) -> None:
    """Threads and processes opening the same fresh file all get a usable ledger (the WAL
    switch and the migrations are serialized / retried instead of failing with 'locked')."""
    import subprocess
    import sys
    import threading

    from effreason_agents.adapters.ledger import BudgetLedger

    path = tmp_path / "fresh.sqlite"
    code = f"from effreason_agents.adapters.ledger import BudgetLedger; BudgetLedger({str(path)!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            BudgetLedger(path).close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]


# -- running totals per scope ----------------------------------------------------


class _Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _assert_totals_exact(
    led: BudgetLedger, db_rows, target: str, scopes: list[Scope], now: float
) -> tuple[int, int]:
    """The stored totals are the sums over the history, and every read reports what a sum
    over the history says it must (holds past their expiry not held). Returns how many
    scopes had live holds, and how many had holds past their expiry not swept yet."""
    assert stored_totals(db_rows, target) == fresh_totals(db_rows, target)
    live = expired = 0
    for s in scopes:
        want = live_sums(db_rows, target, s.kind, s.key, now, led.default_ttl_s)
        assert led.spent(s) == Usage(*want[0:3]), s
        assert led.reserved(s) == Usage(*want[3:6]), s
        shown = led.show(s)
        assert (shown["holds"], shown["expired_holds"]) == want[6:8], s
        assert shown["held"]["total_tokens"] == want[4] and shown["spent"]["output_tokens"] == want[0]
        money = led.remaining(s)["max_cost_usd"]
        assert (money["used"], money["reserved"]) == (str(from_micro(want[2])), str(from_micro(want[5])))
        live += want[6] > want[7]
        expired += want[7] > 0
    return live, expired


def test_totals_equal_the_sums_of_the_history_after_random_operations(db_target: str, db_rows) -> None:
    """A few hundred random holds, settlements, releases, expiries and sweeps on overlapping
    scopes (fixed seed): after each batch, the running totals are exactly the sums over the
    history and the reads report what they reported when they summed the history."""
    rng = random.Random(20240611)
    clock = _Clock()
    requests = [Scope("request", f"r{i}") for i in range(8)]
    threads = [Scope("thread", f"t{i}") for i in range(3)]
    users = [Scope("user", f"u{i}") for i in range(2)]
    every = requests + threads + users
    keys = [f"k{i}" for i in range(60)]
    seen = {"refused": 0, "reserved": 0, "committed": 0, "released": 0, "swept": 0, "held again": 0,
            "scopes with live holds": 0, "scopes with expired holds": 0}
    with BudgetLedger(db_target, clock=clock, default_ttl_s=40) as led:
        led.set_limits(threads[0], LimitConfig(max_cost_usd=Decimal("0.02")))
        led.set_limits(users[0], LimitConfig(max_total_tokens=6000))
        led.set_limits(users[1], LimitConfig(max_output_tokens=900, max_cost_usd=Decimal("0.05")))
        for step in range(400):
            op = rng.choices(
                ["reserve", "commit", "release", "tick", "sweep", "stale"], [45, 25, 10, 12, 4, 4]
            )[0]
            key = rng.choice(keys)
            if op == "reserve":
                scopes = [rng.choice(requests), *rng.sample(threads, rng.randint(0, 2)),
                          *rng.sample(users, rng.randint(0, 2))]
                rng.shuffle(scopes)
                worst = Usage(rng.randint(0, 120), rng.randint(0, 800), rng.randint(0, 4000))
                before = led.status(key)
                try:
                    status = led.reserve(key, scopes, worst, ttl_s=rng.choice([None, 1, 5, 30, 200]))
                except BudgetExhausted:
                    seen["refused"] += 1
                else:
                    seen["held again" if before == "released" and status == "reserved" else "reserved"] += 1
            elif op == "commit" and led.status(key) is not None:
                actual = Usage(rng.randint(0, 130), rng.randint(0, 900), rng.randint(0, 4500))
                led.commit(key, actual, result={"step": step})
                seen["committed"] += 1
            elif op == "release":
                led.release(key)
                seen["released"] += 1
            elif op == "tick":
                clock.now += rng.uniform(0, 25)
            elif op == "sweep":
                seen["swept"] += led.release_stale()
            elif op == "stale":
                seen["swept"] += led.release_stale(rng.uniform(0, 60))
            if step % 25 == 24 or step == 399:
                live, expired = _assert_totals_exact(led, db_rows, db_target, every, clock.now)
                seen["scopes with live holds"] += live
                seen["scopes with expired holds"] += expired
        assert all(seen.values()), seen  # every kind of change and of read happened
        totals = stored_totals(db_rows, db_target)
        assert led.rebuild_totals() >= len(totals)
        assert stored_totals(db_rows, db_target) == totals  # nothing to repair


def test_rebuild_totals_repairs_totals_written_behind_the_ledgers_back(db_target: str, db_rows) -> None:
    with BudgetLedger(db_target) as led:
        led.set_limits(THREAD, LimitConfig(max_cost_usd=Decimal("0.01")))
        led.reserve("a", [REQ, THREAD], Usage(5, 50, 4000))
        led.commit("a", Usage(4, 40, 3000))
        led.reserve("b", [Scope("request", "r2"), THREAD, USER], Usage(5, 50, 5000))
        right = stored_totals(db_rows, db_target)
        assert right[("thread", "t1")] == (4, 40, 3000, 5, 50, 5000, 1)
        # e.g. an older version still running after the migration: its settlement moved no totals
        db_rows(db_target, "UPDATE reservations SET status = 'committed', actual_output_tokens = 1, "
                           "actual_total_tokens = 10, actual_micro_usd = 1000 WHERE key = 'b'")
        db_rows(db_target, "UPDATE scope_totals SET spent_micro_usd = 0 WHERE kind = 'request'")
        assert led.rebuild_totals() == 4
        assert stored_totals(db_rows, db_target) == fresh_totals(db_rows, db_target)
        assert led.spent(THREAD) == Usage(5, 50, 4000) and led.reserved(THREAD) == Usage()
        assert led.reserve("c", [THREAD], Usage(micro_usd=6000)) == "reserved"  # 4000 + 6000 fits exactly
        with pytest.raises(BudgetExhausted):
            led.reserve("d", [THREAD], Usage(micro_usd=1))


TOTALS_WORKER = """
import json, random, sys, time
from effreason_agents.adapters.ledger import BudgetExhausted, BudgetLedger, Scope, Usage

target, proc, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(proc)
threads = [Scope("thread", f"t{i}") for i in range(3)]
users = [Scope("user", f"u{i}") for i in range(2)]
report = {"refused": 0, "held": 0, "committed_micro": 0, "errors": []}
led = BudgetLedger(target)
while time.time() < start:
    time.sleep(0.001)
for i in range(n):
    key = f"p{proc}-{i}"
    scopes = [Scope("request", key), *rng.sample(threads, rng.randint(1, 2)), *rng.sample(users, rng.randint(1, 2))]
    rng.shuffle(scopes)  # every process names them in its own order
    worst = Usage(rng.randint(1, 50), rng.randint(50, 200), rng.randint(300, 1500))
    action = rng.choices(["commit", "release", "abandon", "sweep"], [60, 15, 15, 10])[0]
    try:
        led.reserve(key, scopes, worst, ttl_s=0.05 if action == "abandon" else None)
    except BudgetExhausted:
        report["refused"] += 1
        continue
    except Exception as exc:
        report["errors"].append(repr(exc))
        continue
    report["held"] += 1
    time.sleep(rng.uniform(0, 0.003))  # the model call
    try:
        if action == "release":
            led.release(key)
            continue
        if action == "abandon":
            continue  # left held, as by a crash: it expires and another process sweeps it
        if action == "sweep":
            led.release_stale()  # sweeps other processes' expired holds while they reserve
        actual = rng.randint(0, worst.micro_usd)
        led.commit(key, Usage(worst.output_tokens, worst.total_tokens, actual), result={"key": key})
        report["committed_micro"] += actual
    except Exception as exc:
        report["errors"].append(repr(exc))
led.close()
print(json.dumps(report))
"""


def test_processes_on_overlapping_scopes_keep_the_totals_exact_and_never_pass_a_cap(db_target: str, db_rows) -> None:
    """Six processes hold, settle, release, abandon and sweep on overlapping threads and users
    (each naming its scopes in its own order): no error (no deadlock on PostgreSQL), no cap
    passed, and the running totals equal the sums over the history."""
    import json
    import subprocess
    import sys

    caps = {Scope("thread", "t0"): 9000, Scope("thread", "t1"): 12000, Scope("thread", "t2"): 15000,
            Scope("user", "u0"): 20000, Scope("user", "u1"): 25000}
    with BudgetLedger(db_target) as setup:
        for scope, cap in caps.items():
            setup.set_limits(scope, LimitConfig(max_cost_usd=from_micro(cap)))
    start = time.time() + 3.0
    procs = [
        subprocess.Popen([sys.executable, "-c", TOTALS_WORKER, db_target, str(p), "30", str(start)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in range(6)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["errors"] for r in reports] == [[]] * 6
    assert sum(r["refused"] for r in reports) > 0 and sum(r["held"] for r in reports) > 0, reports

    time.sleep(0.1)  # the abandoned holds expire
    with BudgetLedger(db_target) as led:
        led.release_stale()
        assert stored_totals(db_rows, db_target) == fresh_totals(db_rows, db_target)
        for scope, cap in caps.items():
            assert led.reserved(scope) == Usage()
            assert led.spent(scope).micro_usd <= cap, scope
        [(billed,)] = db_rows(db_target, "SELECT SUM(actual_micro_usd) FROM reservations WHERE status = 'committed'")
        assert int(billed) == sum(r["committed_micro"] for r in reports)
