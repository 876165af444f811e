"""Exactly once: a reasoning graph re-executed from a checkpoint never calls a provider, or
charges the ledger, a second time for a call it already made.

The hold key is (request, attempt): a re-executed ``solve`` finds its hold settled and
returns the stored attempt. The graph runs with a LangGraph checkpointer over real HTTP to
a loopback fake OpenAI server, with the ledger in a real SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from budget_helpers import fake_tier, hold_counts, make_config
from fake_openai import FakeOpenAI

from effreason_agents.core.records import Scope
from effreason_agents.graph import ReasoningContext, build_reasoning_graph

QUESTION = "What is 2 + 3?"
THREAD = "replayed"


def same_result(a: dict[str, Any], b: dict[str, Any]) -> None:
    keys = ("request_id", "answer", "status", "final_tier", "arms_tried", "total_input_tokens",
            "total_output_tokens", "total_cost_usd")
    assert {k: b[k] for k in keys} == {k: a[k] for k in keys}
    fields = ("arm", "answer", "input_tokens", "output_tokens", "cost_usd", "raw_text")
    assert [{k: x.get(k) for k in fields} for x in b["attempts"]] == [{k: x.get(k) for k in fields} for x in a["attempts"]]


class Run:
    """One reasoning graph with a checkpointer, on fake tiers, and what its first run did."""

    def __init__(self, tmp_path: Path, servers: dict[str, FakeOpenAI], *, threshold: float | None = None) -> None:
        tiers = {name: fake_tier(s.base_url) for name, s in servers.items()}
        self.config = make_config(tmp_path, tiers, [f"{name}:direct" for name in servers],
                                  budget={"thread": {"max_cost_usd": "1.0"}})
        self.saver = InMemorySaver()
        self.servers = servers
        self.context = ReasoningContext(thread_id=THREAD, confidence_threshold=threshold)
        self.graphs: list[Any] = []
        self.graph = self.build()
        self.cfg = {"configurable": {"thread_id": THREAD}}
        self.result = self.graph.invoke({"question": QUESTION}, config=self.cfg, context=self.context)["result"]
        self.calls = self.total_calls()
        self.spent = self.graph.services.ledger.spent(Scope("thread", THREAD))

    def build(self) -> Any:
        graph = build_reasoning_graph(self.config, checkpointer=self.saver)
        self.graphs.append(graph)
        return graph

    def total_calls(self) -> int:
        return sum(s.calls for s in self.servers.values())

    def before_solve(self, graph: Any, *, earliest: bool = False) -> Any:
        snapshots = [s for s in graph.get_state_history(self.cfg) if s.next == ("solve",)]
        assert snapshots, "no checkpoint before a solve step"
        return snapshots[-1] if earliest else snapshots[0]  # the history is newest first

    def assert_nothing_charged_again(self, replayed: dict[str, Any], graph: Any) -> None:
        assert self.total_calls() == self.calls, "a replayed step called the provider again"
        assert graph.services.ledger.spent(Scope("thread", THREAD)) == self.spent
        counts = hold_counts(self.config.ledger_path())
        assert (counts["committed"], counts["reserved"]) == (self.calls, 0), counts
        same_result(self.result, replayed)

    def close(self) -> None:
        for g in self.graphs:
            g.services.close()


@pytest.fixture()
def make_run(tmp_path: Path) -> Any:
    runs: list[Run] = []

    def make(servers: dict[str, FakeOpenAI], **kw: Any) -> Run:
        run = Run(tmp_path / str(len(runs)), servers, **kw)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()


def test_replaying_solve_returns_the_stored_attempt(make_run: Any, fake_openai: FakeOpenAI) -> None:
    run = make_run({"fast": fake_openai})
    assert (run.result["status"], run.result["answer"], run.calls) == ("answered", "5", 1)
    snapshot = run.before_solve(run.graph)
    replayed = run.graph.invoke(None, config=snapshot.config, context=run.context)["result"]
    run.assert_nothing_charged_again(replayed, run.graph)


def test_replaying_in_a_new_process_state_uses_the_ledger(make_run: Any, fake_openai: FakeOpenAI) -> None:
    """A fresh graph (new services, nothing in memory) on the same ledger file and checkpoints:
    the settled attempt comes from the ledger."""
    run = make_run({"fast": fake_openai})
    fresh = run.build()
    snapshot = run.before_solve(fresh)
    replayed = fresh.invoke(None, config=snapshot.config, context=run.context)["result"]
    run.assert_nothing_charged_again(replayed, fresh)


def test_replaying_an_escalated_request_calls_no_tier_again(
    make_run: Any, make_fake_openai: Callable[..., FakeOpenAI]
) -> None:
    servers = {"small": make_fake_openai("ok"), "large": make_fake_openai("ok")}
    run = make_run(servers, threshold=1.0)  # never confident enough: escalates through the ladder
    assert run.result["arms_tried"] == ["small:direct", "large:direct"]
    assert (servers["small"].calls, servers["large"].calls) == (1, 1)
    snapshot = run.before_solve(run.graph, earliest=True)
    replayed = run.graph.invoke(None, config=snapshot.config, context=run.context)["result"]
    run.assert_nothing_charged_again(replayed, run.graph)


def test_resuming_after_a_later_node_failed_calls_no_tier_again(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, {"fast": fake_tier(fake_openai.base_url)}, ["fast:direct"],
                         budget={"thread": {"max_cost_usd": "1.0"}})
    graph = build_reasoning_graph(config, checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": THREAD}}
    ctx = ReasoningContext(thread_id=THREAD)
    store = graph.services.store
    record = store.record
    failures = [RuntimeError("the outcome store's disk went away")]

    def record_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return record(*args, **kwargs)

    monkeypatch.setattr(store, "record", record_once)
    try:
        with pytest.raises(RuntimeError, match="disk went away"):
            graph.invoke({"question": QUESTION}, config=cfg, context=ctx)
        assert fake_openai.calls == 1
        spent = graph.services.ledger.spent(Scope("thread", THREAD))
        result = graph.invoke(None, config=cfg, context=ctx)["result"]
        assert (result["status"], result["answer"]) == ("answered", "5")
        assert fake_openai.calls == 1
        assert graph.services.ledger.spent(Scope("thread", THREAD)) == spent
        assert store.get_request(result["request_id"]) is not None
        assert hold_counts(config.ledger_path())["committed"] == 1
    finally:
        graph.services.close()
