"""``effreason db status | migrate | copy``, the database URLs of the configuration, and
the chat graph's checkpoints on PostgreSQL — against a real PostgreSQL (pgserver)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from typer.testing import CliRunner

from effreason_agents.adapters.keys import KeyStore
from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.adapters.store import AttemptRecord, OutcomeStore, RequestRecord
from effreason_agents.cli import app
from effreason_agents.config import Config, config_from_data, default_config_data, load_config
from effreason_agents.core.records import Scope, Usage
from effreason_agents.errors import ConfigError

runner = CliRunner()


def said(output: str) -> str:
    """CLI output as one line of words (rich's error boxes wrap messages)."""
    return re.sub(r"[│╭╮╰╯─\s]+", " ", output)


def write_config(tmp: Path, **extra: Any) -> Path:
    lines = [f'[store]\npath = "{tmp / "outcomes.sqlite"}"']
    if extra.get("store_url"):
        lines.append(f'url = "{extra["store_url"]}"')
    lines.append(f'[budget]\nledger_path = "{tmp / "ledger.sqlite"}"')
    path = tmp / "effreason.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def single_machine(tmp: Path) -> dict[str, Any]:
    """A single machine's SQLite ledger (a key, spend, a live hold, limits) and outcome store."""
    ledger_path, store_path = tmp / "ledger.sqlite", tmp / "outcomes.sqlite"
    with KeyStore(ledger_path) as keys:
        secret, key = keys.create("app", budget_usd="2.5", rpm=60)
    with BudgetLedger(ledger_path) as ledger:
        for i in range(30):
            ledger.reserve(f"r{i}:0", [Scope("request", f"r{i}"), key.scope], Usage.from_usd(10, 50, Decimal("0.0001")))
            ledger.commit(f"r{i}:0", Usage.from_usd(7, 40, Decimal("0.00007")), result={"completion": {"text": f"{i}"}})
        ledger.reserve("live:0", [Scope("request", "live"), key.scope], Usage.from_usd(5, 5, Decimal("0.00002")),
                       ttl_s=3600)
        spent = ledger.spent(key.scope)
    with OutcomeStore(store_path) as store:
        for i in range(12):
            rid = f"q{i}"
            store.record(
                RequestRecord(request_id=rid, question=f"What is {i} + 1?", final_answer=str(i + 1), final_attempt_index=0,
                              status="answered", arms_tried=["small:direct"], total_input_tokens=9, total_output_tokens=2,
                              total_cost_usd="0.000011", graph_version="t", config_version="c",
                              started_at=f"2026-11-29T00:00:{i:02d}Z"),
                [AttemptRecord(attempt_id=f"a{i}", request_id=rid, index=0, arm="small:direct", tier="small",
                               model="m", engine="embedded", strategy="direct", max_tokens=8, input_tokens=9,
                               output_tokens=2, cost_usd="0.000011", answer=str(i + 1), raw_text=f"#### {i + 1}",
                               signals={"mean_logprob": -0.1})],
            )
    return {"secret": secret, "key": key, "spent": spent, "ledger": ledger_path, "store": store_path}


def test_copy_moves_every_row_and_a_second_run_copies_nothing(tmp_path: Path, pg_url: str) -> None:
    before = single_machine(tmp_path)
    done = runner.invoke(app, ["db", "copy", "--from", f"sqlite:{tmp_path}", "--to", pg_url, "--json"])
    assert done.exit_code == 0, done.output
    copies = {c["component"]: c for c in json.loads(done.output)["copies"]}
    assert copies["ledger"]["complete"] and copies["store"]["complete"]
    tables = {t["table"]: t for c in copies.values() for t in c["tables"]}
    assert tables["requests"]["inserted"] == 12 and tables["attempts"]["inserted"] == 12
    assert tables["reservations"]["inserted"] == 31 and tables["api_keys"]["inserted"] == 1
    # the key works against PostgreSQL with the same secret, budget, spend and live hold
    with KeyStore(pg_url) as keys, BudgetLedger(pg_url) as ledger:
        key = keys.authenticate(before["secret"])
        assert key is not None and key.name == "app" and key.rpm == 60
        assert ledger.spent(key.scope) == before["spent"]
        assert ledger.limits(key.scope).max_cost_usd == Decimal("2.5")
        assert ledger.settled("r3:0")[1] == {"completion": {"text": "3"}}
        assert ledger.status("live:0") == "reserved"
    with OutcomeStore(pg_url, read_only=True) as store:
        assert store.count_requests() == 12
        assert [r.request_id for r in store.recent_requests(3)] == ["q11", "q10", "q9"]
        assert store.attempts_for("q4")[0].signals == {"mean_logprob": -0.1}
    again = runner.invoke(app, ["db", "copy", "--from", f"sqlite:{tmp_path}", "--to", pg_url, "--json"])
    assert again.exit_code == 0, again.output
    assert all(t["inserted"] == 0 for c in json.loads(again.output)["copies"] for t in c["tables"])


def test_copy_output_never_shows_the_password(tmp_path: Path, pg_url: str) -> None:
    single_machine(tmp_path)
    url = pg_url.replace("postgres:@", "postgres:hunter2@") if "postgres:@" in pg_url else pg_url
    done = runner.invoke(app, ["db", "copy", "--from", f"sqlite:{tmp_path / 'ledger.sqlite'}", "--to", url])
    assert "hunter2" not in done.output


def test_copy_refuses_bad_sources_and_targets(tmp_path: Path) -> None:
    done = runner.invoke(app, ["db", "copy", "--from", str(tmp_path), "--to", "postgresql://x/y"])
    assert done.exit_code != 0 and "sqlite:PATH" in said(done.output)
    done = runner.invoke(app, ["db", "copy", "--from", f"sqlite:{tmp_path}", "--to", "postgresql://x/y"])
    assert done.exit_code != 0 and "neither ledger.sqlite nor outcomes.sqlite" in said(done.output)
    single_machine(tmp_path)
    done = runner.invoke(app, ["db", "copy", "--from", f"sqlite:{tmp_path}", "--to", "mysql://x/y"])
    assert done.exit_code != 0 and "postgresql://" in said(done.output)


def test_status_changes_nothing_and_migrate_applies(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path)
    monkeypatch.setenv("EFFREASON_DATABASE_URL", pg_url)
    done = runner.invoke(app, ["db", "status", "--json", "--config", str(config)])
    assert done.exit_code == 0, done.output
    rows = {r["component"]: r for r in json.loads(done.output)["databases"]}
    assert rows["ledger"]["dialect"] == "postgresql" and rows["ledger"]["applied"] == []
    assert rows["store"]["pending"] and rows["store"]["applied_now"] == []
    done = runner.invoke(app, ["db", "migrate", "--json", "--config", str(config)])
    rows = {r["component"]: r for r in json.loads(done.output)["databases"]}
    assert rows["ledger"]["pending"] == [] and rows["ledger"]["applied_now"] == rows["ledger"]["applied"]
    assert rows["store"]["pending"] == [] and "0001_requests_and_attempts" in rows["store"]["applied"]
    done = runner.invoke(app, ["db", "status", "--config", str(config)])
    assert done.exit_code == 0 and "postgresql" in done.output and "pending" not in done.output


# -- configuration ----------------------------------------------------------------------


def test_one_database_url_selects_postgresql_for_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFREASON_DATABASE_URL", "postgresql://app:pw@db/eff")
    cfg = load_config(None)
    assert cfg.store.target() == cfg.ledger_target() == cfg.database_url() == "postgresql://app:pw@db/eff"


def test_store_url_alone_puts_the_ledger_there_too_and_bad_urls_are_refused() -> None:
    data = default_config_data()
    data["store"] = {"url": "postgresql://db/eff"}
    cfg = config_from_data(data, source="test")
    assert cfg.ledger_target() == "postgresql://db/eff"
    data["budget"] = {"ledger_url": "postgresql://other/led"}
    assert config_from_data(data, source="test").ledger_target() == "postgresql://other/led"
    data["store"] = {"url": "mysql://u:secret@db/eff"}
    with pytest.raises(ConfigError, match="postgresql://") as err:
        config_from_data(data, source="test")
    assert "secret" not in str(err.value)
    assert isinstance(Config.model_validate(default_config_data()).ledger_target(), Path)


# -- chat checkpoints ----------------------------------------------------------------------


def test_chat_conversations_are_checkpointed_in_postgresql(make_graph: Any, pg_url: str) -> None:
    from effreason_agents.graph.chat import build_chat_graph

    h = make_graph(small=[AIMessage("#### 5"), AIMessage("#### 6")])
    cfg = h.config.model_copy(update={"store": h.config.store.model_copy(update={"url": pg_url})})
    first = build_chat_graph(cfg, reasoning_graph=h.graph, use_ledger=False)
    assert type(first.checkpointer).__name__ == "PostgresSaver"
    thread = {"configurable": {"thread_id": "t-pg"}}
    first.invoke({"messages": [HumanMessage("What is 2 + 3?")]}, thread)
    first.checkpointer.conn.close()
    second = build_chat_graph(cfg, reasoning_graph=h.graph, use_ledger=False)  # another process, same database
    out = second.invoke({"messages": [HumanMessage("And 3 + 3?")]}, thread)
    assert [m.content for m in out["messages"] if isinstance(m, HumanMessage)] == ["What is 2 + 3?", "And 3 + 3?"]
    second.checkpointer.conn.close()


def test_graded_outcomes_are_read_back_from_postgresql(pg_url: str) -> None:
    """Training and replay read a shared PostgreSQL store like a SQLite file."""
    from effreason_agents.adapters.store import BenchResult, BenchRun
    from effreason_agents.engine.estimator import rows_from_store
    from effreason_agents.evaluation.outcomes import load_store

    with OutcomeStore(pg_url) as store:
        store.open_bench_run(BenchRun(run_id="r1", out_dir="out", suite="builtin", arms=["a:direct", "b:cot"],
                                      config_version="c"))
        for i in range(4):
            for arm, correct in (("a:direct", i % 2 == 0), ("b:cot", True)):
                rid = f"{arm}-{i}"
                store.record(
                    RequestRecord(request_id=rid, question=f"q{i}", status="answered", graph_version="t",
                                  config_version="c", started_at="2026-11-29T00:00:00Z"), [],
                    BenchResult(run_id="r1", item_id=f"i{i}", arm=arm, request_id=rid, question=f"q{i}", gold="1",
                                answer_type="number", correct=correct, output_tokens=5 + i, cost_usd="0.001"))
    table = load_store(pg_url)
    assert table.arms == ["a:direct", "b:cot"] and len(table.prompts) == 4
    rows = rows_from_store(pg_url, arm="a:direct")
    assert [r["correct"] for r in rows] == [True, False, True, False] and rows[3]["output_tokens"] == 8
