"""The chat graph with a scripted reasoning graph in place of the real one (no model)."""

from __future__ import annotations

import importlib.util
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from effreason_agents.graph import chat as chat_mod
from effreason_agents.graph.chat import (
    ChatContext,
    build_chat_graph,
    close_chat_graph,
    ensure_limits,
    question_with_history,
    refusal_text,
)
from effreason_agents.config import Config, LimitConfig, config_from_data, default_config_data
from effreason_agents.errors import ConfigError, InvalidQuestionError
from effreason_agents.graph.state import ReasoningContext

ROOT = Path(__file__).resolve().parents[2]


def result(answer: str | None, status: str = "answered", cost: str = "0.000123", out_tokens: int = 12) -> dict[str, Any]:
    attempts = [] if answer is None else [{"arm": "small:direct", "tier": "small", "model": "smol", "answer": answer}]
    return {
        "request_id": "r",
        "answer": answer,
        "status": status,
        "final_attempt": 0 if attempts else None,
        "confidence": 0.9 if attempts else None,
        "arms_tried": [a["arm"] for a in attempts],
        "total_input_tokens": 40 if attempts else 0,
        "total_output_tokens": out_tokens if attempts else 0,
        "total_cost_usd": cost if attempts else "0",
        "reason": "budget exhausted: no arm fits the thread budget" if status == "budget_exhausted" else "confident",
        "attempts": attempts,
    }


class FakeReasoner:
    """Anything with ``.invoke(input, context=...)`` returning ``{"result": ...}``."""

    def __init__(self, *results: dict[str, Any]) -> None:
        self.results = list(results)
        self.calls: list[tuple[dict[str, Any], ReasoningContext]] = []

    def invoke(self, inp: dict[str, Any], context: ReasoningContext) -> dict[str, Any]:
        self.calls.append((inp, context))
        return {"result": self.results.pop(0)}


@pytest.fixture()
def cfg(tmp_path: Path) -> Config:
    return config_from_data({**default_config_data({}), "store": {"path": str(tmp_path / "outcomes.sqlite")}})


def run(graph: Any, text: str, thread: str = "t1", **ctx: Any) -> dict[str, Any]:
    return graph.invoke({"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}}, context=ChatContext(**ctx))


def spend(cfg: Config, kind: str, key: str, usd: str) -> None:
    from effreason_agents.adapters.ledger import BudgetLedger, Scope, Usage

    with BudgetLedger(cfg.ledger_path()) as ledger:
        ledger.reserve(f"spend-{kind}-{key}-{usd}", [Scope(kind, key)], Usage.from_usd(cost_usd=usd))  # type: ignore[arg-type]
        ledger.commit(f"spend-{kind}-{key}-{usd}", Usage.from_usd(cost_usd=usd))


def test_messages_and_turns_accumulate_in_one_thread(cfg: Config) -> None:
    fake = FakeReasoner(result("5"), result("42", cost="0.0002", out_tokens=7))
    graph = build_chat_graph(cfg, checkpointer=InMemorySaver(), reasoning_graph=fake)
    run(graph, "What is 2 + 3?", user_id="ann")
    out = run(graph, "What is 6 times 7?", user_id="ann")
    msgs = out["messages"]
    assert [type(m) for m in msgs] == [HumanMessage, AIMessage, HumanMessage, AIMessage]
    assert [m.content for m in msgs] == ["What is 2 + 3?", "5", "What is 6 times 7?", "42"]
    assert [t["question"] for t in out["turns"]] == ["What is 2 + 3?", "What is 6 times 7?"]
    assert [t["turn"] for t in out["turns"]] == [0, 1]
    assert out["turns"][1]["cost_usd"] == "0.0002" and out["turns"][1]["output_tokens"] == 7
    assert out["turns"][1]["status"] == "answered" and "remaining" in out["turns"][1]
    # the thread and user go to the reasoning graph; the second question carries the first turn
    ctx = fake.calls[1][1]
    assert (ctx.thread_id, ctx.user_id) == ("t1", "ann")
    assert fake.calls[0][0]["question"] == "What is 2 + 3?"
    assert "Q: What is 2 + 3?\nA: 5" in fake.calls[1][0]["question"]
    assert fake.calls[1][0]["question"].endswith("What is 6 times 7?")
    # another thread starts empty
    fake.results.append(result("hello"))
    other = run(graph, "Hi?", thread="t2")
    assert len(other["messages"]) == 2 and len(other["turns"]) == 1


def test_response_metadata_and_usage(cfg: Config) -> None:
    graph = build_chat_graph(cfg, checkpointer=InMemorySaver(), reasoning_graph=FakeReasoner(result("5")))
    reply = run(graph, "What is 2 + 3?", budget_usd="0.01")["messages"][-1]
    meta = reply.response_metadata
    assert meta["status"] == "answered" and meta["cost_usd"] == "0.000123"
    assert meta["output_tokens"] == 12 and meta["input_tokens"] == 40
    assert meta["arms"] == ["small:direct"] and meta["model_name"] == "smol"
    assert reply.usage_metadata == {"input_tokens": 40, "output_tokens": 12, "total_tokens": 52}
    thread_cost = meta["remaining"]["thread"]["max_cost_usd"]
    assert Decimal(thread_cost["limit"]) == Decimal("0.01")
    assert set(thread_cost) == {"limit", "used", "reserved", "remaining"}


def test_budget_exhausted_turn_is_a_polite_refusal(cfg: Config) -> None:
    fake = FakeReasoner(result(None, status="budget_exhausted"))
    graph = build_chat_graph(cfg, checkpointer=InMemorySaver(), reasoning_graph=fake)
    from effreason_agents.adapters.ledger import BudgetLedger

    with BudgetLedger(cfg.ledger_path()) as ledger:
        ensure_limits(ledger, cfg, "t1", None, "0.01")
    spend(cfg, "thread", "t1", "0.0095")
    out = run(graph, "What is 2 + 3?")
    reply = out["messages"][-1]
    assert reply.content == (
        "This conversation has used its budget ($0.0095 of $0.0100; the $0.0005 left can't cover another answer). "
        "I can't answer more questions here."
    )
    assert reply.response_metadata["status"] == "budget_exhausted"
    assert reply.response_metadata["cost_usd"] == "0" and reply.response_metadata["output_tokens"] == 0
    assert out["turns"][-1]["status"] == "budget_exhausted"


def test_refusal_text_names_the_tightest_scope() -> None:
    def entry(limit: str, used: str) -> dict[str, Any]:
        return {"limit": limit, "used": used, "reserved": "0", "remaining": str(Decimal(limit) - Decimal(used))}

    unl = {"limit": None, "used": 0, "reserved": 0, "remaining": None}
    remaining = {
        "thread": {"max_cost_usd": entry("0.01", "0.002"), "max_output_tokens": unl},
        "user": {"max_cost_usd": entry("0.05", "0.0499")},
    }
    assert refusal_text(remaining) == (
        "You have used your budget ($0.0499 of $0.0500; the $0.0001 left can't cover another answer). "
        "I can't answer more questions right now."
    )
    spent = {"thread": {"max_cost_usd": entry("0.01", "0.01")}}
    assert refusal_text(spent) == "This conversation has used its budget ($0.0100 of $0.0100). I can't answer more questions here."
    tokens = {"thread": {"max_output_tokens": {"limit": 100, "used": 96, "reserved": 0, "remaining": 4}}}
    assert refusal_text(tokens).startswith("This conversation has used its budget (96 tokens of 100 tokens; the 4 tokens left")
    assert "budget for one request" in refusal_text({}, "no arm fits")


def test_no_human_message_is_an_error(cfg: Config) -> None:
    fake = FakeReasoner(result("5"))
    graph = build_chat_graph(cfg, checkpointer=InMemorySaver(), reasoning_graph=fake)
    with pytest.raises(InvalidQuestionError, match="user message"):
        graph.invoke({"messages": [AIMessage("hello")]}, {"configurable": {"thread_id": "t"}})
    with pytest.raises(InvalidQuestionError, match="empty"):
        graph.invoke({"messages": [HumanMessage("   ")]}, {"configurable": {"thread_id": "t2"}})
    assert fake.calls == []


def test_bad_budget_fails_before_the_reasoning_graph(cfg: Config) -> None:
    fake = FakeReasoner(result("5"))
    graph = build_chat_graph(cfg, checkpointer=InMemorySaver(), reasoning_graph=fake)
    with pytest.raises(ConfigError, match="budget_usd"):
        run(graph, "What is 2 + 3?", budget_usd="-1")
    with pytest.raises(TypeError, match="budget"):  # langgraph coerces dict contexts into ChatContext
        graph.invoke({"messages": [HumanMessage("q?")]}, {"configurable": {"thread_id": "t"}}, context={"budget": 1})
    assert fake.calls == []


def test_history_is_left_out_when_long_or_refused() -> None:
    ok = {"status": "answered", "answered": True}
    short = [HumanMessage("a?"), AIMessage("1", response_metadata=ok)]
    assert question_with_history(short, "b?").startswith("Earlier in this conversation:\nQ: a?\nA: 1")
    long = [HumanMessage("a" * 500), AIMessage("1", response_metadata=ok)]
    assert question_with_history(long, "b?") == "b?"
    refused = [HumanMessage("a?"), AIMessage("no", response_metadata={"status": "budget_exhausted", "answered": False})]
    kept = [HumanMessage("a?"), AIMessage("1", response_metadata={"status": "budget_exhausted", "answered": True})]
    assert "Q: a?" in question_with_history(kept, "b?")
    assert question_with_history(refused, "b?") == "b?"


def test_ensure_limits(cfg: Config) -> None:
    from effreason_agents.adapters.ledger import BudgetLedger, Scope

    cfg = cfg.model_copy(deep=True)
    cfg.budget.thread = LimitConfig(max_output_tokens=500)
    cfg.budget.user = LimitConfig(max_cost_usd=Decimal("1"))
    with BudgetLedger(cfg.ledger_path()) as ledger:
        ensure_limits(ledger, cfg, "t1", "ann", "0.02")
        assert ledger.limits(Scope("thread", "t1")) == LimitConfig(max_output_tokens=500, max_cost_usd=Decimal("0.02"))
        assert ledger.limits(Scope("user", "ann")) == LimitConfig(max_cost_usd=Decimal("1"))
        ensure_limits(ledger, cfg, "t1", "ann", None)  # a later turn without --budget-usd keeps the cap
        assert ledger.limits(Scope("thread", "t1")).max_cost_usd == Decimal("0.02")  # type: ignore[union-attr]
        ensure_limits(ledger, cfg, "t2", None, None)  # a new thread gets the config's limits
        assert ledger.limits(Scope("thread", "t2")) == LimitConfig(max_output_tokens=500)


def test_default_checkpointer_is_sqlite_and_survives_a_restart(cfg: Config) -> None:
    graph = build_chat_graph(cfg, reasoning_graph=FakeReasoner(result("5")))
    run(graph, "What is 2 + 3?")
    close_chat_graph(graph)
    path = cfg.store.resolved_path().with_name("checkpoints.sqlite")
    assert path.is_file()
    again = build_chat_graph(cfg, reasoning_graph=FakeReasoner(result("9")))
    try:
        state = again.get_state({"configurable": {"thread_id": "t1"}})
        assert [m.content for m in state.values["messages"]] == ["What is 2 + 3?", "5"]
        out = run(again, "And 4 + 5?")
        assert [m.content for m in out["messages"]] == ["What is 2 + 3?", "5", "And 4 + 5?", "9"]
    finally:
        close_chat_graph(again)
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 't1'").fetchone()[0] > 0
    finally:
        con.close()


def test_checkpointer_false_builds_without_one(cfg: Config) -> None:
    graph = build_chat_graph(cfg, checkpointer=False, reasoning_graph=FakeReasoner(result("5")))
    assert graph.checkpointer is None
    out = graph.invoke({"messages": [HumanMessage("What is 2 + 3?")]})  # no thread: only request scope
    assert out["messages"][-1].content == "5" and out["turns"][0]["remaining"] == {}


def test_default_reasoning_graph_is_built_without_a_checkpointer(cfg: Config) -> None:
    graph = build_chat_graph(cfg, checkpointer=False)
    assert graph.reasoning_graph.checkpointer is False
    assert "respond" in graph.get_graph().nodes


def test_chatbot_entry_point_imports_without_starting_anything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EFFREASON_CONFIG", raising=False)
    monkeypatch.setenv("EFFREASON_STORE", str(tmp_path / "outcomes.sqlite"))
    from effreason_agents.adapters import embedded

    before = dict(embedded._servers)
    spec = importlib.util.spec_from_file_location("graph_chatbot", ROOT / "graphs" / "chatbot.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.graph.checkpointer is None  # LangGraph Server supplies its own
    assert "respond" in module.graph.get_graph().nodes
    assert embedded._servers == before
    assert not (tmp_path / "checkpoints.sqlite").exists()


def test_cli_chat_repl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from effreason_agents.graph import builder as graph_mod
    from effreason_agents.cli import app

    fake = FakeReasoner(result("5", cost="0.004"), result(None, status="budget_exhausted"))
    monkeypatch.setattr(graph_mod, "build_reasoning_graph", lambda *a, **k: fake)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EFFREASON_CONFIG", raising=False)
    monkeypatch.setenv("EFFREASON_STORE", str(tmp_path / "outcomes.sqlite"))

    def fake_reasoning_with_spend(inp: dict[str, Any], context: ReasoningContext) -> dict[str, Any]:
        out = FakeReasoner.invoke(fake, inp, context)
        if out["result"]["answer"] is not None:  # what the lead's ledger wiring commits
            cfg = config_from_data({**default_config_data({}), "store": {"path": str(tmp_path / "outcomes.sqlite")}})
            spend(cfg, "thread", context.thread_id or "", out["result"]["total_cost_usd"])
        return out

    fake.invoke = fake_reasoning_with_spend  # type: ignore[method-assign]
    runner = CliRunner()
    res = runner.invoke(app, ["chat", "--thread", "t1", "--budget-usd", "0.005"], input="What is 2 + 3?\nAnd 3 + 4?\n/quit\n")
    assert res.exit_code == 0, res.output
    assert "thread t1" in res.output
    assert "cost $0.0040 · 12 output tokens · thread remaining $0.0010 of $0.0050" in res.output
    assert "This conversation has used its budget ($0.0040 of $0.0050; the $0.0010 left can't cover another answer)" in res.output
    res = runner.invoke(app, ["chat", "--thread", "t1"], input="/history\n")
    assert res.exit_code == 0, res.output
    assert "resuming thread t1: 4 earlier messages" in res.output
    assert "you: What is 2 + 3?" in res.output and "bot: 5" in res.output
    assert chat_mod.checkpoint_path(config_from_data({**default_config_data({}), "store": {"path": str(tmp_path / "outcomes.sqlite")}})).is_file()


def test_cli_chat_rejects_a_bad_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from effreason_agents.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFREASON_STORE", str(tmp_path / "outcomes.sqlite"))
    res = CliRunner().invoke(app, ["chat", "--budget-usd", "abc"], input="")
    assert res.exit_code == 2
