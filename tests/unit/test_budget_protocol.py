"""The budget protocol (DESIGN.md) held against a misbehaving provider, over real HTTP and a
real SQLite ledger, through every front end that calls a tier: the reasoning graph,
``ChatCostAware`` and ``CostAwareMiddleware``.

Each scenario runs many requests at once against loopback fake OpenAI servers
(:mod:`fake_openai`) and ends with the same checks (:func:`budget_helpers.assert_budget_kept`):
no scope's spend exceeds its cap, no hold is left open, every settled hold stayed within its
worst case, and the providers' HTTP 200 answers equal the settled holds.

* ``over_report``: the provider reports 1.4 × the o200k prompt tokens (a smaller vocabulary
  on CJK and digits). The hold must still be a true upper bound, and requests past the cap
  end ``budget_exhausted`` naming the scope that ran out.
* ``no_usage`` / ``bad_usage``: a reply without readable usage is settled at its hold, never
  at zero, and the attempt says ``usage_missing``.
* ``error_500`` then ``ok``: the failing tier's calls are never charged (their holds are
  released) and every request answers from the next tier.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage

from budget_helpers import (
    assert_budget_kept,
    billed_micro,
    fake_tier,
    ledger_rows,
    make_config,
    question,
    results_micro,
    run_all,
)
from fake_openai import FakeOpenAI

from effreason_agents.core.records import Scope
from effreason_agents.graph import ReasoningContext, build_reasoning_graph
from effreason_agents.langchain.chat_model import ChatCostAware
from effreason_agents.langchain.middleware import CostAwareMiddleware

# Prices per 1M tokens such that about 20-25 requests of an over-reported ~600-character
# question (about 460 prompt tokens + 10 output tokens, about $0.002) fit a $0.05 cap.
PRICE_IN, PRICE_OUT = "4.0", "16.0"
THREAD_CAP = "0.05"
REQUEST_CAP = "0.02"
N_REQUESTS = 100


def tier(server: FakeOpenAI, **kw: Any) -> dict[str, Any]:
    return fake_tier(server.base_url, price_in=PRICE_IN, price_out=PRICE_OUT, **kw)


def ask_many(graph: Any, n: int, thread_of: Callable[[int], str], user: str) -> list[dict[str, Any]]:
    def ask(i: int) -> dict[str, Any]:
        ctx = ReasoningContext(thread_id=thread_of(i), user_id=user)
        return graph.invoke({"question": question(i)}, context=ctx)["result"]

    return run_all(ask, n)


def committed(path: Path) -> list[dict[str, Any]]:
    return [r for r in ledger_rows(path) if r["status"] == "committed"]


# -- the reasoning graph ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binding", "budget", "threads"),
    [
        ("thread", {"thread": {"max_cost_usd": THREAD_CAP}, "user": {"max_cost_usd": "0.08"}}, 1),
        ("user", {"thread": {"max_cost_usd": THREAD_CAP}, "user": {"max_cost_usd": THREAD_CAP}}, 2),
    ],
)
def test_concurrent_requests_never_overspend_when_the_provider_over_reports(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI], binding: str, budget: dict[str, Any], threads: int
) -> None:
    server = make_fake_openai("over_report")
    fast = tier(server)
    config = make_config(tmp_path, {"fast": fast}, ["fast:direct"], budget={"max_cost_usd": REQUEST_CAP, **budget})
    graph = build_reasoning_graph(config)
    try:
        results = ask_many(graph, N_REQUESTS, lambda i: f"t{i % threads}", "ann")
        ledger = graph.services.ledger
        statuses = [r["status"] for r in results]
        assert set(statuses) <= {"answered", "budget_exhausted"}, statuses
        assert statuses.count("answered") >= 5, "the cap should hold about 20 of these requests"
        assert statuses.count("budget_exhausted") >= 1, "100 requests cost far more than the cap"
        assert all(r["answer"] == "5" for r in results if r["status"] == "answered")
        assert_budget_kept(ledger, config.ledger_path(), calls=server.calls)
        user = ledger.spent(Scope("user", "ann")).micro_usd
        assert user == billed_micro(server.responses, fast) == results_micro(results) > 0
        assert sum(ledger.spent(Scope("thread", f"t{i}")).micro_usd for i in range(threads)) == user
        scopes = {r["budget_scope"] for r in results if r["status"] == "budget_exhausted"}
        if binding == "thread":  # the thread's cap is the smallest: it is always the one that runs out
            assert scopes == {"thread"}
        else:  # two threads share the user's cap, which runs out first
            assert scopes <= {"thread", "user"} and "user" in scopes
    finally:
        graph.services.close()


def test_reply_without_usage_is_settled_at_its_hold(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = make_fake_openai("no_usage")
    config = make_config(tmp_path, {"fast": tier(server)}, ["fast:direct"],
                         budget={"max_cost_usd": REQUEST_CAP, "thread": {"max_cost_usd": THREAD_CAP}})
    graph = build_reasoning_graph(config)
    try:
        results = ask_many(graph, 30, lambda i: "t", "ann")
        answered = [r for r in results if r["status"] == "answered"]
        assert answered, [r["status"] for r in results]
        for r in answered:
            (attempt,) = r["attempts"]
            assert attempt["usage_missing"] is True
        rows = committed(config.ledger_path())
        assert len(rows) == server.calls == len(answered)
        for row in rows:  # settled at the hold, never at zero
            assert row["actual_micro_usd"] == row["reserved_micro_usd"] > 0
            assert row["actual_output_tokens"] == row["reserved_output_tokens"] > 0
            assert row["actual_total_tokens"] == row["reserved_total_tokens"] > 0
        ledger = graph.services.ledger
        spent = ledger.spent(Scope("thread", "t")).micro_usd
        assert spent == sum(r["reserved_micro_usd"] for r in rows) == results_micro(results) > 0
        assert_budget_kept(ledger, config.ledger_path(), calls=server.calls)
    finally:
        graph.services.close()


@pytest.mark.parametrize("kind", ["negative", "string"])
def test_unreadable_usage_is_settled_at_its_hold(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI], kind: str
) -> None:
    server = make_fake_openai("bad_usage", bad_usage=kind)
    config = make_config(tmp_path, {"fast": tier(server)}, ["fast:direct"],
                         budget={"max_cost_usd": REQUEST_CAP, "thread": {"max_cost_usd": THREAD_CAP}})
    graph = build_reasoning_graph(config)
    try:
        results = ask_many(graph, 8, lambda i: "t", "ann")  # no exception escapes
        for r in results:
            assert (r["status"], r["answer"]) == ("answered", "5"), r.get("reason")
            (attempt,) = r["attempts"]
            assert attempt["usage_missing"] is True
        rows = committed(config.ledger_path())
        assert len(rows) == server.calls == 8
        for row in rows:
            assert row["actual_micro_usd"] == row["reserved_micro_usd"] > 0
        assert graph.services.ledger.spent(Scope("thread", "t")).micro_usd == results_micro(results)
        assert_budget_kept(graph.services.ledger, config.ledger_path(), calls=server.calls)
    finally:
        graph.services.close()


def test_failing_tier_is_never_charged_and_the_next_tier_answers(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI]
) -> None:
    broken, working = make_fake_openai("error_500"), make_fake_openai("ok")
    large = tier(working)
    config = make_config(tmp_path, {"small": tier(broken), "large": large}, ["small:direct", "large:direct"],
                         budget={"max_cost_usd": REQUEST_CAP, "thread": {"max_cost_usd": "1.0"}})
    graph = build_reasoning_graph(config)
    try:
        results = ask_many(graph, 20, lambda i: "t", "ann")
        for r in results:
            assert (r["status"], r["final_tier"], r["answer"]) == ("answered", "large", "5"), r.get("reason")
            assert r["arms_tried"] == ["small:direct", "large:direct"]
        assert broken.calls == 0 and broken.received == 20
        rows = ledger_rows(config.ledger_path())
        assert sum(r["status"] == "released" for r in rows) == broken.received  # the 500s' holds
        assert_budget_kept(graph.services.ledger, config.ledger_path(), calls=broken.calls + working.calls)
        spent = graph.services.ledger.spent(Scope("thread", "t")).micro_usd
        assert spent == billed_micro(working.responses, large) == results_micro(results)
    finally:
        graph.services.close()


# -- ChatCostAware ------------------------------------------------------------------------


def chat_many(model: ChatCostAware, n: int) -> list[AIMessage]:
    return run_all(lambda i: model.invoke(question(i)), n, workers=50)


def test_chat_model_never_overspends_when_the_provider_over_reports(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = make_fake_openai("over_report")
    fast = tier(server)
    config = make_config(tmp_path, {"fast": fast}, ["fast:direct"],
                         budget={"max_cost_usd": REQUEST_CAP, "thread": {"max_cost_usd": THREAD_CAP}})
    model = ChatCostAware(config=config, thread_id="t", user_id="ann")
    try:
        messages = chat_many(model, 60)
        statuses = [m.response_metadata["status"] for m in messages]
        assert set(statuses) == {"answered", "budget_exhausted"}, statuses
        ledger = model.reasoning_graph().services.ledger
        assert_budget_kept(ledger, config.ledger_path(), calls=server.calls)
        assert ledger.spent(Scope("thread", "t")).micro_usd == billed_micro(server.responses, fast)
    finally:
        model.close()


def test_chat_model_settles_a_reply_without_usage_at_its_hold(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = make_fake_openai("no_usage")
    config = make_config(tmp_path, {"fast": tier(server)}, ["fast:direct"],
                         budget={"max_cost_usd": REQUEST_CAP, "thread": {"max_cost_usd": THREAD_CAP}})
    model = ChatCostAware(config=config, thread_id="t", user_id="ann")
    try:
        messages = chat_many(model, 10)
        assert all(m.response_metadata["status"] == "answered" for m in messages)
        rows = committed(config.ledger_path())
        assert len(rows) == server.calls == 10
        assert all(row["actual_micro_usd"] == row["reserved_micro_usd"] > 0 for row in rows)
        assert_budget_kept(model.reasoning_graph().services.ledger, config.ledger_path(), calls=server.calls)
    finally:
        model.close()


# -- CostAwareMiddleware ------------------------------------------------------------------


class Agent:
    """A ``create_agent`` agent (no tools) whose model calls go through the middleware."""

    def __init__(self, config: Any) -> None:
        self.mw = CostAwareMiddleware(config, max_tokens=24)
        self.agent = create_agent(model=self.mw.base_model(), tools=[], middleware=[self.mw])
        self.ledger_path = config.ledger_path()

    def ask(self, i: int, thread: str = "t", user: str = "ann") -> AIMessage:
        out = self.agent.invoke({"messages": [HumanMessage(question(i))]}, {"configurable": {"thread_id": thread}},
                                context={"user_id": user})
        return out["messages"][-1]

    def close(self) -> None:
        self.mw.services.close()


def info(message: AIMessage) -> dict[str, Any]:
    return message.response_metadata["effreason"]


def test_middleware_never_overspends_when_the_provider_over_reports(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = make_fake_openai("over_report")
    fast = tier(server)
    config = make_config(tmp_path, {"fast": fast}, ["fast:direct"],
                         budget={"max_cost_usd": REQUEST_CAP, "thread": {"max_cost_usd": THREAD_CAP}})
    agent = Agent(config)
    try:
        replies = run_all(agent.ask, 60, workers=50)
        statuses = [info(m)["status"] for m in replies]
        assert set(statuses) == {"answered", "budget_exhausted"}, statuses
        assert_budget_kept(agent.mw.ledger, agent.ledger_path, calls=server.calls)
        assert agent.mw.ledger.spent(Scope("thread", "t")).micro_usd == billed_micro(server.responses, fast)
    finally:
        agent.close()


def test_middleware_falls_back_from_a_failing_tier(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI]
) -> None:
    broken, working = make_fake_openai("error_500"), make_fake_openai("ok")
    large = tier(working)
    config = make_config(tmp_path, {"small": tier(broken), "large": large}, ["small:direct", "large:direct"],
                         budget={"max_cost_usd": REQUEST_CAP, "thread": {"max_cost_usd": "1.0"}})
    agent = Agent(config)
    try:
        replies = run_all(agent.ask, 10)
        for m in replies:
            assert m.content == "The answer is 5.\n#### 5"
            assert (info(m)["tier"], info(m)["status"]) == ("large", "answered")
        assert broken.calls == 0 and broken.received == 10
        assert working.calls == 10
        assert_budget_kept(agent.mw.ledger, agent.ledger_path, calls=working.calls)
        assert agent.mw.ledger.spent(Scope("thread", "t")).micro_usd == billed_micro(working.responses, large)
    finally:
        agent.close()


@pytest.mark.parametrize(("mode", "kind"), [("no_usage", "alternate"), ("bad_usage", "negative"),
                                            ("bad_usage", "string")])
def test_middleware_settles_a_reply_without_readable_usage_at_its_hold(
    tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI], mode: str, kind: str
) -> None:
    server = make_fake_openai(mode, bad_usage=kind)
    config = make_config(tmp_path, {"fast": tier(server)}, ["fast:direct"],
                         budget={"max_cost_usd": REQUEST_CAP, "thread": {"max_cost_usd": THREAD_CAP}})
    agent = Agent(config)
    try:
        replies = run_all(agent.ask, 6)
        assert all(info(m)["status"] == "answered" for m in replies)
        rows = committed(agent.ledger_path)
        assert len(rows) == server.calls == 6
        assert all(row["actual_micro_usd"] == row["reserved_micro_usd"] > 0 for row in rows)
        assert_budget_kept(agent.mw.ledger, agent.ledger_path, calls=server.calls)
    finally:
        agent.close()
