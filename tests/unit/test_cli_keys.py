"""``effreason keys create|list|revoke`` on a real SQLite ledger named by a config file."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effreason_agents.adapters.keys import KEY_PREFIX, KeyStore
from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.cli import app
from effreason_agents.config import LimitConfig
from effreason_agents.core.records import Usage

LONG_NAME = "a-service-account-with-a-very-long-name@platform.example.com"
KEY_RE = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


@pytest.fixture()
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture()
def config(tmp_path: Path, ledger_path: Path) -> Path:
    path = tmp_path / "effreason.toml"
    path.write_text(f'[budget]\nledger_path = "{ledger_path.as_posix()}"\n\n[budget.user]\nmax_cost_usd = "2"\n')
    return path


def flat(text: str) -> str:
    return " ".join(text.split())


def test_create_prints_the_key_once_with_its_limits(config: Path, ledger_path: Path) -> None:
    r = CliRunner().invoke(app, ["keys", "create", "--name", "alice", "--budget-usd", "5",
                                 "--thread-budget-usd", "0.5", "--rpm", "60", "--config", str(config)])
    assert r.exit_code == 0, r.output
    found = KEY_RE.findall(r.stdout)
    assert len(found) == 1, r.stdout
    secret = found[0]
    assert f"  {secret}\n" in r.stdout  # whole, on a line of its own, so it can be copied
    assert "shown only once and cannot be shown again" in flat(r.stdout)
    assert "budget: $5.00" in flat(r.stdout) and "per thread: $0.5000" in flat(r.stdout)
    assert "rpm: 60" in flat(r.stdout)
    with KeyStore(ledger_path) as store:
        key = store.authenticate(secret)
    assert key is not None and key.name == "alice" and key.rpm == 60
    assert f"(id {key.id})" in r.stdout and f"user:key:{key.id}" in r.stdout
    with BudgetLedger(ledger_path) as ledger:
        assert ledger.limits(key.scope) == LimitConfig(max_cost_usd=Decimal("5"))


def test_create_without_budgets_names_the_config_limits_that_apply(config: Path) -> None:
    r = CliRunner().invoke(app, ["keys", "create", "--name", "bob", "--config", str(config)])
    assert r.exit_code == 0, r.output
    text = flat(r.stdout)
    assert "budget: $2.00 (config [budget.user])" in text
    assert "per thread: unlimited (config [budget.thread])" in text
    assert "rpm: unlimited" in text


def test_create_json_shape(config: Path, ledger_path: Path) -> None:
    r = CliRunner().invoke(app, ["keys", "create", "--name", "alice", "--budget-usd", "1.25", "--rpm", "10",
                                 "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc) == {"key", "id", "name", "prefix", "scope", "rpm", "thread_budget_usd", "created_at",
                        "revoked_at", "status", "budget_usd", "ledger", "note"}
    assert KEY_RE.fullmatch(doc["key"])
    assert doc["name"] == "alice" and doc["rpm"] == 10 and doc["budget_usd"] == "1.25"
    assert doc["thread_budget_usd"] is None and doc["status"] == "active" and doc["revoked_at"] is None
    assert doc["scope"] == f"user:key:{doc['id']}" and doc["ledger"] == str(ledger_path)
    assert doc["prefix"] == doc["key"][: len(KEY_PREFIX) + 4] + "…"
    assert "cannot be shown again" in doc["note"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "x", "--rpm", "0"], "rpm (requests per minute) must be a whole number >= 1"),
        (["--name", "x", "--budget-usd", "abc"], "budget_usd must be an amount of USD"),
        (["--name", "x", "--budget-usd", "-1"], "budget_usd must be more than $0"),
        (["--name", ""], "non-empty name"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(config: Path, ledger_path: Path, args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["keys", "create", *args, "--config", str(config)])
    assert r.exit_code == 1
    assert message in flat(r.stderr) and r.stdout == ""
    with KeyStore(ledger_path) as store:
        assert store.list() == []


def test_a_taken_name_is_refused(config: Path) -> None:
    assert CliRunner().invoke(app, ["keys", "create", "--name", "alice", "--config", str(config)]).exit_code == 0
    r = CliRunner().invoke(app, ["keys", "create", "--name", "alice", "--config", str(config)])
    assert r.exit_code == 1
    assert "a key named 'alice' already exists" in flat(r.stderr) and KEY_PREFIX not in r.output


def make_keys(ledger_path: Path) -> dict[str, str]:
    """alice ($5, rpm 60) has spent $0.0012 and holds $0.0005; the long-named key has no
    budget of its own; carol is revoked. Returns each key by name."""
    secrets = {}
    with KeyStore(ledger_path) as store:
        secrets["alice"], alice = store.create("alice", budget_usd="5", rpm=60)
        secrets[LONG_NAME], _ = store.create(LONG_NAME)
        secrets["carol"], _ = store.create("carol", budget_usd="1")
        store.revoke("carol")
    with BudgetLedger(ledger_path) as ledger:
        ledger.reserve("r1", [alice.scope], Usage.from_usd(10, 20, "0.002"))
        ledger.commit("r1", Usage.from_usd(10, 20, "0.0012"))
        ledger.reserve("r2", [alice.scope], Usage.from_usd(10, 20, "0.0005"))
    return secrets


def table_rows(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in stdout.splitlines() if line.strip()}


def test_list_shows_limits_and_spend_never_the_keys(config: Path, ledger_path: Path) -> None:
    secrets = make_keys(ledger_path)
    r = CliRunner().invoke(app, ["keys", "list", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert not any(s in r.stdout for s in secrets.values()) and not KEY_RE.search(r.stdout)
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    rows = table_rows(r.stdout)
    assert rows["name"] == ["name", "id", "key", "rpm", "budget", "spent", "held", "left"]
    with KeyStore(ledger_path) as store:
        alice = store.get("alice")
    assert alice is not None
    assert rows["alice"] == ["alice", alice.id, alice.prefix, "60", "$5.00", "$0.0012", "$0.0005", "$5.00"]  # left: $4.9983, to the cent
    # no budget of its own: the config's [budget.user] $2 applies (marked *), nothing spent
    long_row = next(words for first, words in rows.items() if LONG_NAME.startswith(first) and first != "alice")
    assert long_row[3:] == ["-", "$2.00*", "$0", "$0", "$2.00"]
    assert "* from config [budget.user]" in r.stdout
    assert "carol" not in r.stdout  # revoked keys only with --all
    assert f"ledger: {ledger_path}" in r.stdout.replace("\n", "")


def test_list_all_marks_revoked_keys(config: Path, ledger_path: Path) -> None:
    make_keys(ledger_path)
    r = CliRunner().invoke(app, ["keys", "list", "--all", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    rows = table_rows(r.stdout)
    assert rows["carol"][-1] == "revoked" and rows["alice"][-1] == "$5.00"


def test_list_json_shape(config: Path, ledger_path: Path) -> None:
    secrets = make_keys(ledger_path)
    r = CliRunner().invoke(app, ["keys", "list", "--all", "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert not any(s in r.stdout for s in secrets.values())
    doc = json.loads(r.stdout)
    assert doc["ledger"] == str(ledger_path)
    by_name = {k["name"]: k for k in doc["keys"]}
    assert list(by_name) == ["alice", LONG_NAME, "carol"]  # oldest first
    alice = by_name["alice"]
    assert set(alice) == {"id", "name", "prefix", "scope", "rpm", "thread_budget_usd", "created_at", "revoked_at",
                          "status", "budget_usd", "budget_source", "spent_usd", "held_usd", "remaining_usd", "budget"}
    assert (alice["budget_usd"], alice["budget_source"], alice["spent_usd"], alice["held_usd"], alice["remaining_usd"]) \
        == ("5", "key", "0.0012", "0.0005", "4.9983")
    with BudgetLedger(ledger_path) as ledger, KeyStore(ledger_path) as store:
        key = store.get("alice")
        assert key is not None and alice["budget"] == ledger.show(key.scope)
    assert by_name[LONG_NAME]["budget_source"] == "config" and by_name[LONG_NAME]["budget_usd"] == "2"
    assert by_name["carol"]["status"] == "revoked" and by_name["carol"]["revoked_at"] is not None
    r = CliRunner().invoke(app, ["keys", "list", "--json", "--config", str(config)])
    assert [k["name"] for k in json.loads(r.stdout)["keys"]] == ["alice", LONG_NAME]


def test_list_without_keys_says_how_to_create_one(config: Path) -> None:
    r = CliRunner().invoke(app, ["keys", "list", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert "no active keys" in r.stdout and "effreason keys create --name NAME" in flat(r.stdout)


def test_revoke_by_name_or_id_then_the_key_is_refused(config: Path, ledger_path: Path) -> None:
    secrets = make_keys(ledger_path)
    r = CliRunner().invoke(app, ["keys", "revoke", "alice", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert "revoked key alice" in flat(r.stdout)
    with KeyStore(ledger_path) as store:
        key = store.authenticate(secrets["alice"])
        assert key is not None and key.revoked
    r = CliRunner().invoke(app, ["keys", "revoke", key.id, "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["already_revoked"] is True and doc["status"] == "revoked" and doc["id"] == key.id
    r = CliRunner().invoke(app, ["keys", "revoke", "alice", "--config", str(config)])
    assert "was already revoked" in flat(r.stdout)


def test_revoking_an_unknown_key_fails(config: Path, ledger_path: Path) -> None:
    make_keys(ledger_path)
    r = CliRunner().invoke(app, ["keys", "revoke", "nobody", "--config", str(config)])
    assert r.exit_code == 1
    assert "no key named 'nobody'" in flat(r.stderr) and "keys list --all" in flat(r.stderr)


def test_a_name_with_markup_or_emoji_codes_is_printed_as_is(config: Path) -> None:
    r = CliRunner().invoke(app, ["keys", "create", "--name", "[bold]:key:", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert "created key [bold]:key:" in r.stdout and ":key:" in r.stdout.split("spends as:")[1]
