"""The budget protocol across processes: several worker processes (:mod:`budget_worker`)
share one ledger file and one loopback fake OpenAI server, and the caps still hold; and a
process killed in the middle of a call leaves a hold that expires on its own.

Each worker is a fresh Python process running its own reasoning graph, so the only thing the
processes share is the SQLite ledger: what keeps them under the caps is its write lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budget_helpers import (
    assert_budget_kept,
    billed_micro,
    config_data,
    fake_tier,
    hold_counts,
    ledger_rows,
    make_config,
    question,
    results_micro,
)
from fake_openai import FakeOpenAI

from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.core.money import to_micro
from effreason_agents.core.records import Scope
from effreason_agents.graph import ReasoningContext, build_reasoning_graph

WORKER = Path(__file__).with_name("budget_worker.py")
PROCESSES, PER_PROCESS = 4, 25
PRICE_IN, PRICE_OUT = "4.0", "16.0"  # about 20-25 over-reported requests fit $0.05 (see test_budget_protocol)


def worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EFFREASON"))}


def start_worker(config: Path, *, first: int, count: int, thread: str, user: str | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(WORKER), str(config), "--first", str(first), "--count", str(count), "--thread", thread]
    if user:
        cmd += ["--user", user]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env())


def run_workers(tmp_path: Path, data: dict[str, Any], *, thread: str = "t", user: str = "ann") -> list[dict[str, Any]]:
    """Every worker's results; fails when a worker exits with an error."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    procs = [start_worker(path, first=k * PER_PROCESS, count=PER_PROCESS, thread=thread, user=user)
             for k in range(PROCESSES)]
    results: list[dict[str, Any]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"a worker failed (exit {proc.returncode}):\n{err[-4000:]}"
        results += [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(results) == PROCESSES * PER_PROCESS
    return results


def tier(server: FakeOpenAI, **kw: Any) -> dict[str, Any]:
    return fake_tier(server.base_url, price_in=PRICE_IN, price_out=PRICE_OUT, **kw)


BUDGET = {"max_cost_usd": "0.02", "thread": {"max_cost_usd": "0.05"}, "user": {"max_cost_usd": "0.08"}}


@pytest.mark.parametrize("mode", ["over_report", "no_usage", "bad_usage"])
def test_processes_sharing_a_ledger_never_overspend(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI], mode: str
) -> None:
    server = make_fake_openai(mode)
    fast = tier(server)
    data = config_data(tmp_path, {"fast": fast}, ["fast:direct"], budget=BUDGET)
    results = run_workers(tmp_path, data)
    statuses = [r["status"] for r in results]
    assert set(statuses) <= {"answered", "budget_exhausted"}, [r.get("reason") for r in results]
    assert "answered" in statuses, statuses
    assert "budget_exhausted" in statuses, (
        f"{PROCESSES * PER_PROCESS} requests cost far more than the caps, yet every one answered: were calls "
        "settled below their cost (at zero)?")
    ledger_path = tmp_path / "ledger.sqlite"
    ledger = BudgetLedger(ledger_path)
    try:
        assert_budget_kept(ledger, ledger_path, calls=server.calls)
        spent = ledger.spent(Scope("thread", "t")).micro_usd
        assert spent == ledger.spent(Scope("user", "ann")).micro_usd == results_micro(results) > 0
        if mode == "over_report":
            assert spent == billed_micro(server.responses, fast)
        else:  # no readable usage: every call settled at its hold, never at zero
            rows = [r for r in ledger_rows(ledger_path) if r["status"] == "committed"]
            assert all(r["actual_micro_usd"] == r["reserved_micro_usd"] > 0 for r in rows)
            assert all(r["attempts"][0]["usage_missing"] is True for r in results if r["status"] == "answered")
    finally:
        ledger.close()
    assert {r["budget_scope"] for r in results if r["status"] == "budget_exhausted"} <= {"thread", "user", "request"}


def test_processes_fall_back_from_a_failing_tier_without_charging_it(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI]
) -> None:
    broken, working = make_fake_openai("error_500"), make_fake_openai("ok")
    large = tier(working)
    data = config_data(tmp_path, {"small": tier(broken), "large": large}, ["small:direct", "large:direct"],
                       budget={"max_cost_usd": "0.02", "thread": {"max_cost_usd": "1.0"}})
    results = run_workers(tmp_path, data)
    assert {(r["status"], r["final_tier"]) for r in results} == {("answered", "large")}
    assert broken.calls == 0 and broken.received == PROCESSES * PER_PROCESS
    ledger_path = tmp_path / "ledger.sqlite"
    assert hold_counts(ledger_path)["released"] == broken.received
    ledger = BudgetLedger(ledger_path)
    try:
        assert_budget_kept(ledger, ledger_path, calls=working.calls)
        spent = ledger.spent(Scope("thread", "t")).micro_usd
        assert spent == billed_micro(working.responses, large) == results_micro(results)
    finally:
        ledger.close()


# -- a killed process ----------------------------------------------------------------------

TIMEOUT_S = 1.0
EXPIRY_WAIT_S = 20.0
# Output tokens priced, input free: every hold of the 24-token direct arm is exactly
# 24 × $1000 / 1M = $0.024, whatever bound the engine puts on the prompt.
KILL_TIER = {"price_in": "0", "price_out": "1000", "timeout_s": TIMEOUT_S, "max_retries": 0}
KILL_CAP = "0.036"  # one hold fits, two do not


def wait_for_open_hold(path: Path, server: FakeOpenAI, proc: subprocess.Popen[str], within_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the worker exited before its call was held: {proc.communicate()[1][-4000:]}"
        if server.received:
            open_holds = [r for r in ledger_rows(path) if r["status"] == "reserved"]
            if open_holds:
                return open_holds[0]
        time.sleep(0.01)
    raise AssertionError(f"no open hold appeared in {path} within {within_s} s")


def test_a_killed_process_hold_expires_on_its_own(tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = make_fake_openai("slow", slow_s=60)
    tiers = {"fast": fake_tier(server.base_url, **KILL_TIER)}
    budget = {"thread": {"max_cost_usd": KILL_CAP}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_data(tmp_path, tiers, ["fast:direct"], budget=budget)), encoding="utf-8")
    config = make_config(tmp_path, tiers, ["fast:direct"], budget=budget)
    graph = build_reasoning_graph(config)  # built before the kill: the wait below is the hold's, not imports'
    ledger_path = config.ledger_path()
    proc = start_worker(path, first=0, count=1, thread="t")
    try:
        stale = wait_for_open_hold(ledger_path, server, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    killed_at = time.monotonic()
    server.mode = "ok"
    assert {r["key"]: r for r in ledger_rows(ledger_path)}[stale["key"]]["status"] == "reserved", (
        "the worker settled its hold before it was killed: the scenario needs a hold left open")
    cap = to_micro(Decimal(KILL_CAP))
    assert stale["reserved_micro_usd"] <= cap < 2 * stale["reserved_micro_usd"], (
        "the scenario needs a cap that holds one call but not two", stale)
    try:
        while True:  # no release_stale: the hold's deadline alone must free the thread's budget
            result = graph.invoke({"question": question(1)}, context=ReasoningContext(thread_id="t"))["result"]
            if result["status"] != "budget_exhausted":
                break
            assert time.monotonic() - killed_at < EXPIRY_WAIT_S, (
                f"the killed process's hold still blocks the thread {EXPIRY_WAIT_S} s after the kill (tier timeout "
                f"{TIMEOUT_S} s, no retries): {result['reason']}")
            time.sleep(0.25)
        assert (result["status"], result["answer"]) == ("answered", "5"), result.get("reason")
        rows = {r["key"]: r for r in ledger_rows(ledger_path)}
        assert rows[stale["key"]]["status"] != "reserved"
        assert hold_counts(ledger_path)["reserved"] == 0
        assert server.calls == 1  # the killed call was never answered
        assert graph.services.ledger.spent(Scope("thread", "t")).micro_usd <= cap
    finally:
        graph.services.close()
