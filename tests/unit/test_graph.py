"""The reasoning graph end to end, with scripted LangChain chat models in place of the tiers.

Each tier's client is a :class:`helpers.FakeTierClient`: the real ``TierClient.complete``
(prefill handling, usage, cost, logprob parsing, error mapping) around a chat model that
returns scripted ``AIMessage``s with OpenAI-shaped logprobs, so each test controls the
confidence. The ``make_graph`` fixture (``conftest.py``) builds the graph on them.
"""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage

from effreason_agents.errors import ConfigError, InvalidQuestionError
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.graph.state import ReasoningContext

from helpers import EASY, LARGE_COST, REQUEST, SMALL_COST, large_reply, reply, small_reply, unreachable


# -- routing ----------------------------------------------------------------------------


def test_confident_first_answer(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)], large=[large_reply("6", 0.99)])
    r = h.ask()
    assert r["answer"] == "5"
    assert r["status"] == "answered"
    assert r["escalated"] is False
    assert r["arms_tried"] == ["small:direct"]
    assert r["final_tier"] == "small" and r["final_attempt"] == 0
    assert r["confidence"] == pytest.approx(0.9)
    assert r["difficulty"] == "easy"
    assert r["total_cost_usd"] == "0.0000056"
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (50, 3)
    assert h.large.calls == []
    (settings,) = h.small.settings
    assert settings["max_tokens"] == 24 and settings["stop"] == ["\n\n"]
    (attempt,) = r["attempts"]
    assert attempt["model"] == "small-served"
    assert attempt["raw_text"] == "#### 5"
    assert attempt["finish_reason"] == "stop"


def test_low_confidence_escalates_to_the_next_arm(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)])
    r = h.ask()
    assert r["status"] == "answered"
    assert r["answer"] == "5" and r["final_tier"] == "large" and r["final_attempt"] == 1
    assert r["escalated"] is True
    assert r["arms_tried"] == ["small:direct", "large:cot"]
    assert [a["confidence"] for a in r["attempts"]] == [pytest.approx(0.2), pytest.approx(0.95)]
    assert r["total_cost_usd"] == str(SMALL_COST + LARGE_COST) == "0.0002056"
    assert [a["cost_usd"] for a in r["attempts"]] == ["0.0000056", "0.0002"]
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (150, 23)
    assert len(h.small.calls) == 1 and len(h.large.calls) == 1
    assert h.large.settings[0]["max_tokens"] == 256


def test_escalation_stops_when_confident(make_graph: Any) -> None:
    h = make_graph(
        small=[small_reply("4", 0.1), small_reply("5", 0.8)],
        large=[large_reply("6", 0.99)],
        ladder=("small:direct", "small:cot", "large:cot"),
    )
    r = h.ask()
    assert r["arms_tried"] == ["small:direct", "small:cot"]
    assert r["answer"] == "5" and r["status"] == "answered"
    assert h.large.calls == []


def test_low_confidence_everywhere_returns_the_most_confident(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.3)], large=[large_reply("5", 0.1)])
    r = h.ask()
    assert r["status"] == "low_confidence"
    assert r["answer"] == "4" and r["final_attempt"] == 0
    assert "ladder is exhausted" in r["reason"]


def test_hard_question_starts_higher_on_the_ladder(make_graph: Any) -> None:
    h = make_graph(large=[large_reply("12", 0.9)], escalation={"start_arm": {"hard": "large:cot"}})
    r = h.ask(
        "Janet has 16 eggs every day. She eats 3 for breakfast and bakes muffins with 4 more each day. "
        "She sells the remaining eggs at $2 each, so how much money does she make every day?"
    )
    assert r["difficulty"] == "hard"
    assert r["arms_tried"] == ["large:cot"]  # escalation.start_arm.hard
    assert h.small.calls == []


def test_zero_threshold_never_escalates(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.01)], large=[large_reply("5", 0.99)])
    r = h.ask(context={"confidence_threshold": 0.0})
    assert r["status"] == "answered" and r["answer"] == "4"
    assert r["arms_tried"] == ["small:direct"]
    assert h.large.calls == []


def test_context_threshold_overrides_the_config(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.9)], large=[large_reply("5", 0.99)])
    r = h.ask(context=ReasoningContext(confidence_threshold=0.95))
    assert r["arms_tried"] == ["small:direct", "large:cot"]


def test_prefilled_direct_answer_is_scored_on_its_own_tokens(make_graph: Any) -> None:
    h = make_graph(
        small=[reply(" 5", 0.8, input_tokens=40, output_tokens=2, prefix="")],
        small_tier={"capabilities": {"logprobs": True, "top_logprobs": 2, "assistant_prefill": True}},
    )
    r = h.ask()
    (messages,) = h.small.calls
    assert isinstance(messages[-1], AIMessage) and messages[-1].content == "The answer is"
    assert h.small.settings[0]["stop"] == ["\n"]
    assert r["attempts"][0]["raw_text"] == "The answer is 5"
    assert r["answer"] == "5"
    assert r["confidence"] == pytest.approx(0.8)


# -- tier failures ----------------------------------------------------------------------


def test_unreachable_tier_is_recorded_and_the_next_tier_answers(make_graph: Any) -> None:
    h = make_graph(
        small=[unreachable()],
        large=[large_reply("5", 0.9)],
        ladder=("small:direct", "small:cot", "large:cot"),
    )
    r = h.ask()
    assert r["status"] == "answered" and r["answer"] == "5" and r["final_tier"] == "large"
    assert r["arms_tried"] == ["small:direct", "large:cot"]  # small:cot skipped: tier down
    assert any(s.startswith("small:cot") and "failed earlier" in s for s in r["skipped"])
    failed = r["attempts"][0]
    assert "cannot connect" in failed["error"] and failed["error_kind"] == "unreachable"
    assert failed["answer"] is None and failed["cost_usd"] == "0"
    assert r["total_cost_usd"] == "0.0002"
    assert len(h.small.calls) == 1

    row = h.store().attempts_for(r["request_id"])[0]
    assert row.error == failed["error"]
    assert row.confidence_method == "error: unreachable"


def test_bad_request_does_not_take_the_tier_down(make_graph: Any) -> None:
    bad = openai.BadRequestError("bad", response=httpx.Response(400, request=REQUEST), body=None)
    h = make_graph(small=[bad, small_reply("5", 0.9)], ladder=("small:direct", "small:cot", "large:cot"))
    r = h.ask()
    assert r["arms_tried"] == ["small:direct", "small:cot"]
    assert r["attempts"][0]["error_kind"] == "bad_request"
    assert r["answer"] == "5"


def test_all_tiers_failing(make_graph: Any) -> None:
    h = make_graph(small=[unreachable()], large=[unreachable()])
    r = h.ask()
    assert r["status"] == "failed"
    assert r["answer"] is None and r["final_attempt"] is None and r["confidence"] is None
    assert [a["error_kind"] for a in r["attempts"]] == ["unreachable", "unreachable"]
    assert r["total_cost_usd"] == "0"
    request = h.store().get_request(r["request_id"])
    assert request is not None and request.status == "failed" and request.final_answer is None


# -- budgets ----------------------------------------------------------------------------


def test_budget_too_small_for_the_large_arm(make_graph: Any) -> None:
    # small:direct may cost 0.0000149, large:cot 0.0007915 (101 prompt tokens, full output cap)
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.99)])
    r = h.ask(context={"max_cost_usd": "0.0001"})
    assert h.large.calls == []
    assert r["arms_tried"] == ["small:direct"]
    assert r["status"] in ("low_confidence", "budget_exhausted")
    assert "budget" in r["reason"]
    assert r["answer"] == "4"
    assert any(s.startswith("large:cot: over budget") for s in r["skipped"])
    assert Decimal(r["total_cost_usd"]) <= Decimal("0.0001")


def test_config_budget_applies_without_context(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.99)], budget={"max_cost_usd": "0.0001"})
    r = h.ask()
    assert h.large.calls == [] and "budget" in r["reason"]


@pytest.mark.parametrize(
    ("budget", "context"),
    [({}, {"max_cost_usd": "0.000001"}), ({"max_total_tokens": 100}, None)],
)
def test_budget_below_the_cheapest_prompt_is_an_error_before_any_call(
    make_graph: Any, budget: dict[str, Any], context: Any
) -> None:
    h = make_graph(small=[small_reply("4", 0.9)], large=[large_reply("5", 0.9)], budget=budget)
    with pytest.raises(ConfigError, match="smaller than"):
        h.ask(context=context)
    assert h.small.calls == [] and h.large.calls == []


@pytest.mark.parametrize(("budget", "context"), [({"max_output_tokens": 10}, None)])
def test_budget_too_small_for_every_arm(make_graph: Any, budget: dict[str, Any], context: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.9)], large=[large_reply("5", 0.9)], budget=budget)
    r = h.ask(context=context)
    assert h.small.calls == [] and h.large.calls == []
    assert r["status"] == "budget_exhausted"
    assert r["answer"] is None and r["attempts"] == [] and r["total_cost_usd"] == "0"
    assert "budget" in r["reason"]
    store = h.store()
    assert store.count_requests() == 1
    assert store.attempts_for(r["request_id"]) == []


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", ["abc", 1.5, -0.1])
def test_invalid_context_threshold_fails_before_any_model_call(make_graph: Any, threshold: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.9)], large=[large_reply("5", 0.9)])
    with pytest.raises(ConfigError, match="confidence_threshold"):
        h.ask(context={"confidence_threshold": threshold})
    assert h.small.calls == [] and h.large.calls == []


def test_invalid_context_cost_limit_is_a_config_error(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.9)])
    with pytest.raises(ConfigError, match="max_cost_usd"):
        h.ask(context={"max_cost_usd": "abc"})
    assert h.small.calls == []


def test_non_positive_context_cost_limit_fails_before_any_model_call(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.9)])
    with pytest.raises(ConfigError, match="max_cost_usd must be > 0"):
        h.ask(context={"max_cost_usd": 0})
    assert h.small.calls == []


@pytest.mark.parametrize("question", ["", "   \n\t ", 42])
def test_invalid_question_fails_before_any_model_call(make_graph: Any, question: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.9)], large=[large_reply("5", 0.9)])
    with pytest.raises(InvalidQuestionError):
        h.ask(question)
    assert h.small.calls == [] and h.large.calls == []
    assert h.store().count_requests() == 0


def test_question_too_long_for_every_tier(make_graph: Any) -> None:
    h = make_graph(small_tier={"context_window": 200}, large_tier={"context_window": 300})
    with pytest.raises(InvalidQuestionError, match="too long"):
        h.ask("word " * 250)  # 250 + 96 prompt tokens + output cap > 300
    assert h.small.calls == [] and h.large.calls == []


def test_question_too_long_for_the_small_tier_goes_to_the_large(make_graph: Any) -> None:
    h = make_graph(large=[large_reply("5", 0.9)], small_tier={"context_window": 150})
    r = h.ask("What is the sum of these numbers: " + "1 " * 40)  # 47 + 96 + 24 > 150
    assert r["arms_tried"] == ["large:cot"]
    assert h.small.calls == []


# -- outcome store ----------------------------------------------------------------------


def test_store_has_one_request_and_one_row_per_attempt(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)])
    out = h.graph.invoke({"question": EASY}, context={"thread_id": "t1", "user_id": "u1"})
    r = out["result"]
    assert out["logged"] is True
    store = h.store()
    assert store.count_requests() == 1
    request = store.get_request(r["request_id"])
    assert request is not None
    assert request.question == EASY
    assert (request.status, request.final_answer, request.final_attempt_index) == ("answered", "5", 1)
    assert request.escalated is True and request.arms_tried == ["small:direct", "large:cot"]
    assert (request.total_input_tokens, request.total_output_tokens, request.total_cost_usd) == (150, 23, "0.0002056")
    assert (request.thread_id, request.user_id) == ("t1", "u1")
    assert request.config_version == h.config.version()
    rows = store.attempts_for(r["request_id"])
    assert [(a.index, a.arm, a.tier) for a in rows] == [(0, "small:direct", "small"), (1, "large:cot", "large")]
    for row, attempt in zip(rows, r["attempts"], strict=True):
        assert row.attempt_id == attempt["attempt_id"]
        assert (row.input_tokens, row.output_tokens) == (attempt["input_tokens"], attempt["output_tokens"])
        assert row.cost_usd == attempt["cost_usd"]
        assert row.confidence == pytest.approx(attempt["confidence"])
        assert row.answer == attempt["answer"]
    assert [(a.input_tokens, a.output_tokens, a.cost_usd) for a in rows] == [(50, 3, "0.0000056"), (100, 20, "0.0002")]
    assert [a.confidence for a in rows] == [pytest.approx(0.2), pytest.approx(0.95)]
    assert rows[0].signals["answer_min_logprob"] == pytest.approx(math.log(0.2))


def test_each_request_gets_its_own_row(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9), small_reply("7", 0.9)])
    ids = {h.ask()["request_id"], h.ask("What is 3 + 4?")["request_id"]}
    assert len(ids) == 2
    assert h.store().count_requests() == 2


@pytest.mark.parametrize("context", [{"log": False}, ReasoningContext(log=False)])
def test_log_false_writes_nothing(make_graph: Any, context: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    out = h.graph.invoke({"question": EASY}, context=context)
    assert out["logged"] is False and out["result"]["answer"] == "5"
    assert h.store().count_requests() == 0


def test_graph_exposes_its_services(make_graph: Any) -> None:
    h = make_graph()
    assert h.graph.services is h.services


# -- inside a user's own graph ----------------------------------------------------------


def test_runs_as_a_node_of_a_users_own_graph(make_graph: Any) -> None:
    from typing_extensions import TypedDict
    from langgraph.graph import END, START, StateGraph

    h = make_graph(small=[small_reply("5", 0.9)])

    class AppState(TypedDict, total=False):
        question: str
        result: dict[str, Any]
        reply: str

    def respond(state: AppState) -> dict[str, Any]:
        return {"reply": f"answer: {state['result']['answer']} (${state['result']['total_cost_usd']})"}

    app = StateGraph(AppState)
    app.add_node("reason", h.graph)  # the compiled reasoning graph as a subgraph node
    app.add_node("respond", respond)
    app.add_edge(START, "reason")
    app.add_edge("reason", "respond")
    app.add_edge("respond", END)
    out = app.compile().invoke({"question": EASY})
    assert out["reply"] == "answer: 5 ($0.0000056)"
    assert out["result"]["arms_tried"] == ["small:direct"]


def test_state_is_json_plain_and_checkpoints(make_graph: Any) -> None:
    import json as _json

    from langgraph.checkpoint.memory import InMemorySaver

    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)])
    graph = build_reasoning_graph(h.config, services=h.services, checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t1"}}
    out = graph.invoke({"question": EASY}, cfg)
    _json.dumps(out)  # every value is JSON-plain
    saved = graph.get_state(cfg).values
    assert saved["result"]["answer"] == "5" and len(saved["attempts"]) == 2


# -- budgets across requests (the ledger) and truncation ---------------------------------


def test_fifty_concurrent_requests_never_overspend_a_thread_cap(make_graph: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from effreason_agents.adapters.ledger import Scope

    # small:direct's worst case is 101 prompt + 24 output tokens = $0.0000149; the cap covers ~10 of those
    cap = Decimal("0.00015")
    h = make_graph(small=[small_reply("5", 0.95) for _ in range(50)], budget={"thread": {"max_cost_usd": str(cap)}})
    barrier = threading.Barrier(50)

    def one(_: int) -> dict[str, Any]:
        barrier.wait()
        return h.ask(context={"thread_id": "shared"})

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    ran = [r for r in results if r["status"] == "answered"]
    refused = [r for r in results if r["status"] == "budget_exhausted"]
    assert len(ran) + len(refused) == 50  # each request either ran or was refused, none lost
    assert all(r["attempts"] == [] and r["answer"] is None for r in refused)
    assert len(ran) >= 10
    spent = sum((Decimal(r["total_cost_usd"]) for r in ran), Decimal(0))
    assert spent <= cap
    # the ledger rounds each charge up to whole micro-dollars: never below the real spend, never over the cap
    assert spent <= h.services.ledger.spent(Scope("thread", "shared")).cost_usd <= cap
    assert h.large.calls == []


def test_thread_budget_carries_across_requests_and_then_refuses(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.95) for _ in range(5)], budget={"thread": {"max_cost_usd": "0.00003"}})
    statuses = [h.ask(context={"thread_id": "t"})["status"] for _ in range(5)]
    # $0.0000056 per answer, $0.0000149 held per call: answers until the hold no longer fits
    assert statuses[:2] == ["answered", "answered"] and statuses[-1] == "budget_exhausted"
    other = h.ask(context={"thread_id": "another"})  # another thread has its own budget
    assert other["status"] in ("answered", "failed")


def test_truncated_reply_is_retried_with_a_larger_cap_and_marked(make_graph: Any) -> None:
    cut = reply("4", 0.99, input_tokens=50, output_tokens=24, finish_reason="length", model="small-served")
    h = make_graph(small=[cut, small_reply("5", 0.95)], ladder=("small:direct", "large:cot"),
                   small_tier={"context_window": 4096}, budget={"on_truncation": "retry"})
    r = h.ask()
    first, second = r["attempts"]
    assert first["truncated"] is True and second["retry_of"] == 0
    assert second["max_tokens"] == 48 and h.small.settings[1]["max_tokens"] == 48
    assert r["answer"] == "5" and r["status"] == "answered" and r["truncated"] is False
    assert h.large.calls == []


def test_truncation_escalates_when_configured(make_graph: Any) -> None:
    cut = reply("4", 0.99, input_tokens=50, output_tokens=24, finish_reason="length", model="small-served")
    h = make_graph(small=[cut], large=[large_reply("5", 0.95)], budget={"on_truncation": "escalate"})
    r = h.ask()
    assert [a["arm"] for a in r["attempts"]] == ["small:direct", "large:cot"]
    assert r["answer"] == "5"


def test_a_truncated_reply_is_never_answered(make_graph: Any) -> None:
    cut = reply("4", 0.99, input_tokens=50, output_tokens=24, finish_reason="length", model="small-served")
    h = make_graph(small=[cut], ladder=("small:direct",), budget={"on_truncation": "escalate"})
    r = h.ask()
    assert r["status"] == "low_confidence" and r["truncated"] is True


def test_re_executed_solve_node_never_charges_twice(make_graph: Any) -> None:
    from effreason_agents.adapters.ledger import Scope
    from effreason_agents.graph.nodes import ReasoningNodes

    h = make_graph(small=[small_reply("5", 0.95), small_reply("5", 0.95)])
    nodes = ReasoningNodes(h.services)
    ctx = SimpleNamespace(context={"thread_id": "t"})
    state: dict[str, Any] = {"question": EASY}
    state.update(nodes.classify(state, ctx))  # type: ignore[arg-type]
    first = nodes.solve(state, ctx)  # type: ignore[arg-type]
    again = nodes.solve(state, ctx)  # the same step re-run (a retry, a resumed interrupt)
    assert first["attempts"][0]["index"] == again["attempts"][0]["index"] == 0
    spent = h.services.ledger.spent(Scope("thread", "t"))
    assert spent.output_tokens == 3  # one call's usage, not two
