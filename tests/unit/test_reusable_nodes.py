"""The nodes as a reusable API: the state contract, progress events on the custom stream,
and add_cost_aware_reasoning inside a user's own graph (scripted tiers)."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from effreason_agents.graph import add_cost_aware_reasoning, nodes
from effreason_agents.errors import InvalidQuestionError
from effreason_agents.adapters.ledger import Scope
from effreason_agents.graph.state import ReasoningState

from helpers import large_reply, small_reply


def test_the_contract_names_real_state_keys() -> None:
    keys = set(ReasoningState.__annotations__)
    assert set(nodes.NODE_CONTRACT) == {"classify", "solve", "assess", "escalate", "finalize", "log"}
    for node, io in nodes.NODE_CONTRACT.items():
        assert set(io["reads"]) <= keys and set(io["writes"]) <= keys, node
        assert callable(getattr(nodes, node))


def test_progress_events_on_the_custom_stream(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)])
    events = [c for c in h.graph.stream({"question": "What is 2 + 3?"}, stream_mode="custom")]
    kinds = [e["event"] for e in events]
    assert kinds == ["arm_chosen", "attempt", "escalation", "attempt", "done"]
    assert events[0]["arm"] == "small:direct" and events[0]["by"] == "classifier"
    assert events[1]["escalate"] is True and events[2]["to"] == "large:cot"
    assert events[3]["total_cost_usd"] == "0.0002056"  # cost so far, both attempts
    assert events[4]["status"] == "answered" and events[4]["answer"] == "5"


class UserState(TypedDict, total=False):
    question: str
    answer: str | None
    reasoning: dict[str, Any]
    steps: list[str]


def _user_graph(h: Any, **kw: Any) -> Any:
    builder = StateGraph(UserState)
    builder.add_node("prepare", lambda s: {"question": s["question"].strip(), "steps": ["prepare"]})
    name = add_cost_aware_reasoning(builder, name="reason", services=h.services, **kw)
    builder.add_node("after", lambda s: {"steps": s["steps"] + ["after"]})
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", name)
    builder.add_edge(name, "after")
    builder.add_edge("after", END)
    return builder.compile(checkpointer=InMemorySaver())


def test_add_cost_aware_reasoning_inside_a_user_graph(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    g = _user_graph(h, context={"log": False})
    out = g.invoke({"question": "  What is 2 + 3?  "}, {"configurable": {"thread_id": "user-thread"}})
    assert out["answer"] == "5" and out["steps"] == ["prepare", "after"]
    assert out["reasoning"]["status"] == "answered" and out["reasoning"]["arms_tried"] == ["small:direct"]
    # the run's thread is the budget thread: the ledger charged it
    assert h.services.ledger.spent(Scope("thread", "user-thread")).output_tokens == 3


def test_custom_keys_and_no_result_key(make_graph: Any) -> None:
    class Other(TypedDict, total=False):
        q: str
        a: str | None

    h = make_graph(small=[small_reply("5", 0.9)])
    builder = StateGraph(Other)
    add_cost_aware_reasoning(builder, name="r", services=h.services, question_key="q", answer_key="a",
                                   result_key=None, context={"log": False})
    builder.add_edge(START, "r")
    builder.add_edge("r", END)
    assert builder.compile().invoke({"q": "What is 2 + 3?"}) == {"q": "What is 2 + 3?", "a": "5"}


def test_a_missing_question_key_is_a_clear_error(make_graph: Any) -> None:
    h = make_graph()
    builder = StateGraph(UserState)
    add_cost_aware_reasoning(builder, name="reason", services=h.services, question_key="question")
    builder.add_edge(START, "reason")
    builder.add_edge("reason", END)
    with pytest.raises(InvalidQuestionError, match="no 'question' key"):
        builder.compile().invoke({"steps": []})
    assert h.small.calls == []


def test_each_tier_call_is_labelled_for_traces(make_graph: Any) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    seen: list[dict[str, Any]] = []

    class Spy(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, *, metadata: Any = None, tags: Any = None,
                                **kw: Any) -> None:
            seen.append({"metadata": dict(metadata or {}), "tags": list(tags or [])})

    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)])
    h.graph.invoke({"question": "What is 2 + 3?"}, {"callbacks": [Spy()]})
    arms = [s["metadata"].get("effreason_arm") for s in seen]
    assert arms == ["small:direct", "large:cot"]
    assert seen[1]["metadata"]["effreason_tier"] == "large"
    assert seen[0]["metadata"]["effreason_difficulty"] == "easy"
