"""`effreason chat` end to end: the real embedded server, the real budget ledger and the
SQLite checkpointer, driven through piped stdin in separate processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pytest

pytestmark = pytest.mark.integration

CHAT = [sys.executable, "-m", "effreason_agents.cli", "chat"]
QUESTIONS = "What is 2 + 3?\nWhat is 6 times 7?\nWhat is 10 minus 4?\n"

# A price on the (free) embedded tier, so the thread's dollar cap bites: $0.001 per output
# token, and small:direct's cap pinned at 24 tokens, so its worst case is exactly $0.024.
PRICED = {
    "EFFREASON__tiers__small__price_output_per_1m": "1000",
    "EFFREASON__tiers__small__price_input_per_1m": "0",
    "EFFREASON__strategies__direct__max_tokens": "24",
}
# Room for one direct call's worst case plus less than one token: the first turn fits,
# and after it (at least one output token spent) no call fits any more.
BUDGET = "0.0245"


def _chat(args: list[str], stdin: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(CHAT + args, input=stdin, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def _turn_blocks(stdout: str) -> list[list[str]]:
    """The lines after each ``you> question`` echo (piped stdin echoes the question)."""
    blocks: list[list[str]] = []
    for line in stdout.splitlines():
        if line.startswith("you> "):
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
    return blocks


def test_three_turns_free_tier_and_the_thread_survives_a_restart(
    tmp_path: Path, cli_env: Callable[..., dict[str, str]]
) -> None:
    env = cli_env()
    first = _chat(["--thread", "t1", "--budget-usd", "0.01"], QUESTIONS, env, tmp_path)
    blocks = _turn_blocks(first.stdout)
    assert len(blocks) == 3, first.stdout
    for block in blocks:
        assert len(block) >= 2 and block[0].strip(), first.stdout  # an answer, then the cost line
        assert "output tokens · thread remaining $0.0100 of $0.0100" in block[1], first.stdout  # free tier: $0
    assert "resume later with: effreason chat --thread t1" in first.stdout

    checkpoints = tmp_path / "checkpoints.sqlite"
    assert checkpoints.is_file()
    con = sqlite3.connect(checkpoints)
    try:
        assert con.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 't1'").fetchone()[0] >= 3
    finally:
        con.close()

    second = _chat(["--thread", "t1"], "/history\n/quit\n", env, tmp_path)
    assert "resuming thread t1: 6 earlier messages" in second.stdout, second.stdout
    for q in QUESTIONS.splitlines():
        assert f"you: {q}" in second.stdout
    assert second.stdout.count("  bot: ") == 3

    # the outcome store logged one request per turn
    con = sqlite3.connect(tmp_path / "outcomes.sqlite")
    try:
        assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == 3
    finally:
        con.close()


def test_a_priced_thread_hits_its_cap_then_refuses_and_resumes(
    tmp_path: Path, cli_env: Callable[..., dict[str, str]]
) -> None:
    env = cli_env(**PRICED)
    first = _chat(["--thread", "t1", "--budget-usd", BUDGET], QUESTIONS, env, tmp_path)
    blocks = _turn_blocks(first.stdout)
    assert len(blocks) == 3, first.stdout

    # turn 1 is answered and costs real money
    answer, cost_line = blocks[0][0], blocks[0][1]
    assert "has used its budget" not in answer, first.stdout
    spent = Decimal(cost_line.split("cost $", 1)[1].split(" ", 1)[0])
    assert Decimal("0.001") <= spent <= Decimal("0.024"), cost_line
    left = Decimal(cost_line.split("thread remaining $", 1)[1].split(" ", 1)[0])
    assert left == (Decimal(BUDGET) - spent).quantize(Decimal("0.0001")), cost_line

    # turns 2 and 3 are polite refusals that cost nothing; the REPL kept running
    for block in blocks[1:]:
        assert block[0].startswith("This conversation has used its budget ($"), first.stdout
        assert f"of ${Decimal(BUDGET):.4f}" in block[0] and block[0].endswith("I can't answer more questions here."), first.stdout
        assert block[1].startswith("cost $0 · 0 output tokens"), first.stdout
        assert "status budget_exhausted" in block[1], first.stdout
    assert "bye" in first.stdout

    # a new process on the same thread sees the earlier turns, and the cap still holds
    second = _chat(["--thread", "t1"], "/history\nWhat is 1 + 1?\n", env, tmp_path)
    assert "resuming thread t1: 6 earlier messages" in second.stdout, second.stdout
    assert "you: What is 2 + 3?" in second.stdout
    assert second.stdout.count("[budget_exhausted, $0]") == 2, second.stdout
    last = _turn_blocks(second.stdout)[-1]
    assert last[0].startswith("This conversation has used its budget"), second.stdout

    # the ledger holds the spend of turn 1 only, and no reservation is left behind
    from effreason_agents.adapters.ledger import BudgetLedger, Scope

    with BudgetLedger(tmp_path / "ledger.sqlite") as ledger:
        thread = ledger.remaining(Scope("thread", "t1"))["max_cost_usd"]
    assert Decimal(thread["used"]) == spent and Decimal(thread["reserved"]) == 0
