"""``effreason budget show`` and ``effreason budget release-stale`` on a real SQLite ledger."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.cli import app
from effreason_agents.config import LimitConfig
from effreason_agents.core.records import Scope, Usage

THREAD = Scope("thread", "t1")
LONG_USER = Scope("user", "alice.with.a.very.long.identifier@sso.example.com")


def write_config(tmp_path: Path, ledger: Path) -> Path:
    path = tmp_path / "effreason.toml"
    path.write_text(f'[budget]\nledger_path = "{ledger.as_posix()}"\n')
    return path


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture()
def ledger_path(tmp_path: Path) -> Path:
    """A ledger where thread t1 (limits: 1000 output tokens, $0.05) has spent one call and
    holds two more: a fresh one, and one past its deadline (taken two hours ago, 60 s to
    live). The long-named user shares the spent call and the expired hold, without limits."""
    path = tmp_path / "ledger.sqlite"
    with BudgetLedger(path) as now:
        now.set_limits(THREAD, LimitConfig(max_output_tokens=1000, max_cost_usd=Decimal("0.05")))
        now.reserve("r3:0", [THREAD], Usage(50, 100, 500))
    # Taken after the fresh hold: every reserve first releases the holds whose time is up.
    with BudgetLedger(path, clock=lambda: time.time() - 7200) as past:
        past.reserve("r1:0", [THREAD, LONG_USER], Usage(100, 300, 1200))
        past.commit("r1:0", Usage(40, 200, 800))
        past.reserve("r2:0", [THREAD, LONG_USER], Usage(100, 300, 1200), ttl_s=60)
    return path


@pytest.fixture()
def config(tmp_path: Path, ledger_path: Path) -> Path:
    return write_config(tmp_path, ledger_path)


def test_show_prints_limits_spent_held_remaining_and_holds(config: Path, ledger_path: Path) -> None:
    r = CliRunner().invoke(app, ["budget", "show", "--thread", "t1", "--config", str(config)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "thread t1"
    table = {}
    for line in lines:
        words = line.split()
        if line.startswith(" output tokens"):
            table["output"] = words[2:]
        elif line.startswith(" total tokens"):
            table["total"] = words[2:]
        elif line.startswith(" dollars"):
            table["dollars"] = words[1:]
    # limit, spent, held (the live hold; the expired one no longer counts), remaining = limit - spent - held
    assert table["output"] == ["1,000", "40", "50", "910"]
    assert table["total"] == ["unlimited", "200", "100", "unlimited"]
    assert table["dollars"] == ["$0.0500", "$0.0008", "$0.0005", "$0.0487"]
    assert "2 open holds, 1 past the deadline" in flat(r.stdout)
    assert f"ledger: {ledger_path}" in r.stdout.replace("\n", "")


def test_show_json_is_the_ledgers_report(config: Path, ledger_path: Path) -> None:
    r = CliRunner().invoke(app, ["budget", "show", "--thread", "t1", "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    with BudgetLedger(ledger_path) as ledger:
        expected = ledger.show(THREAD)
    assert doc == {**expected, "ledger": str(ledger_path)}
    assert doc["scope"] == "thread:t1" and doc["holds"] == 2 and doc["expired_holds"] == 1
    assert doc["limits"] == {"output_tokens": 1000, "total_tokens": None, "cost_usd": "0.05"}
    assert doc["spent"]["cost_usd"] == "0.0008" and doc["remaining"]["output_tokens"] == 910


def test_show_fits_80_columns_with_a_long_user_id(config: Path) -> None:
    r = CliRunner().invoke(app, ["budget", "show", "--user", LONG_USER.key, "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert f"user {LONG_USER.key}" in r.stdout
    assert "has no limits" not in r.stdout and "unlimited" in r.stdout  # spent, so a table
    assert "1 open hold, 1 past the deadline" in flat(r.stdout)
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


def test_a_scope_never_seen_has_no_limits_and_nothing_spent(config: Path) -> None:
    r = CliRunner().invoke(app, ["budget", "show", "--request", "never-seen", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert "request never-seen has no limits and nothing spent or held." in r.stdout
    r = CliRunner().invoke(app, ["budget", "show", "--request", "never-seen", "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["limits"] == {"output_tokens": None, "total_tokens": None, "cost_usd": None}
    assert doc["spent"] == {"output_tokens": 0, "total_tokens": 0, "cost_usd": "0"} and doc["holds"] == 0


@pytest.mark.parametrize(
    "args",
    [[], ["--thread", "t1", "--user", "u"], ["--thread", "t1", "--request", "r", "--user", "u"]],
    ids=["none", "two", "three"],
)
def test_show_needs_exactly_one_scope(config: Path, args: list[str]) -> None:
    r = CliRunner().invoke(app, ["budget", "show", *args, "--config", str(config)])
    assert r.exit_code == 2
    assert "give exactly one of --thread ID, --user ID or --request ID" in flat(r.output.replace("│", ""))
    assert r.stdout == ""


def test_show_refuses_an_empty_id(config: Path) -> None:
    r = CliRunner().invoke(app, ["budget", "show", "--thread", "", "--config", str(config)])
    assert r.exit_code == 2 and "non-empty" in r.output


def test_release_stale_releases_only_holds_past_their_deadline(config: Path, ledger_path: Path) -> None:
    r = CliRunner().invoke(app, ["budget", "release-stale", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert "released 1 hold past its deadline" in r.stdout
    with BudgetLedger(ledger_path) as ledger:
        assert ledger.status("r2:0") == "released" and ledger.status("r3:0") == "reserved"
        assert ledger.show(THREAD)["holds"] == 1
    r = CliRunner().invoke(app, ["budget", "release-stale", "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"released": 0, "older_than_s": None, "ledger": str(ledger_path)}


def test_release_stale_older_than(config: Path, ledger_path: Path) -> None:
    r = CliRunner().invoke(app, ["budget", "release-stale", "--older-than", "3600", "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["released"] == 1  # the two-hour-old hold; the fresh one stays
    r = CliRunner().invoke(app, ["budget", "release-stale", "--older-than", "0", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert "released 1 hold open longer than 0 s" in r.stdout
    with BudgetLedger(ledger_path) as ledger:
        assert ledger.show(THREAD)["holds"] == 0
        assert ledger.show(THREAD)["spent"]["output_tokens"] == 40  # spend is never released
    r = CliRunner().invoke(app, ["budget", "release-stale", "--older-than", "-1", "--config", str(config)])
    assert r.exit_code == 2


@pytest.mark.parametrize("command", [["show", "--thread", "t1"], ["release-stale"]])
def test_a_ledger_path_that_is_a_directory_is_an_error(tmp_path: Path, command: list[str]) -> None:
    folder = tmp_path / "ledger-dir"
    folder.mkdir()
    r = CliRunner().invoke(app, ["budget", *command, "--config", str(write_config(tmp_path, folder))])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and f"{folder} is a directory" in r.stderr
    assert r.stdout == "" and "Traceback" not in r.output


@pytest.mark.parametrize("command", [["show", "--user", "u"], ["release-stale", "--json"]])
def test_a_file_that_is_not_a_ledger_is_an_error(tmp_path: Path, command: list[str]) -> None:
    bad = tmp_path / "ledger.sqlite"
    bad.write_text("not a database, just text\n" * 100)
    r = CliRunner().invoke(app, ["budget", *command, "--config", str(write_config(tmp_path, bad))])
    assert r.exit_code == 1
    assert "not a usable budget ledger" in r.stderr and r.stdout == "" and "Traceback" not in r.output


def test_the_default_ledger_lies_beside_the_outcome_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EFFREASON_CONFIG", raising=False)
    monkeypatch.setenv("EFFREASON_STORE", str(tmp_path / "data" / "outcomes.sqlite"))
    with BudgetLedger(tmp_path / "data" / "ledger.sqlite") as ledger:
        ledger.set_limits(Scope("user", "u"), LimitConfig(max_total_tokens=5000))
    r = CliRunner().invoke(app, ["budget", "show", "--user", "u", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["limits"]["total_tokens"] == 5000 and doc["ledger"] == str(tmp_path / "data" / "ledger.sqlite")
