"""ChatCostAware with scripted tiers (no model, no network): usage, metadata, streaming,
callbacks, bad input refused before any call, and the parameters that change the config."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Iterator
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.base import BaseTracer

from effreason_agents.langchain.chat_model import ChatCostAware, messages_to_question, result_message
from effreason_agents.config import Config
from effreason_agents.errors import InvalidQuestionError

from helpers import EASY, large_reply, small_reply, unreachable


def model_for(h: Any, **kw: Any) -> ChatCostAware:
    return ChatCostAware(graph=h.graph, **kw)


def no_calls(h: Any) -> None:
    assert h.small.calls == [] and h.large.calls == []


# -- answers, usage, metadata ------------------------------------------------------------


def test_confident_answer_message(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    msg = model_for(h).invoke(EASY)
    assert isinstance(msg, AIMessage)
    assert msg.content == "5"
    assert msg.usage_metadata == {"input_tokens": 50, "output_tokens": 3, "total_tokens": 53}
    meta = msg.response_metadata
    assert meta["model_name"] == "small-served"
    assert meta["model_provider"] == "effreason"
    assert meta["arms_tried"] == ["small:direct"]
    assert meta["escalated"] is False
    assert meta["confidence"] == pytest.approx(0.9)
    assert meta["cost_usd"] == "0.0000056"
    assert meta["status"] == "answered"
    assert meta["finish_reason"] == "stop"
    assert meta["request_id"]
    (call,) = h.small.calls
    assert EASY in str(call[-1].content)


def test_escalation_sums_usage_and_names_the_answering_model(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)])
    msg = model_for(h).invoke([HumanMessage(EASY)])
    assert msg.content == "5"
    assert msg.usage_metadata == {"input_tokens": 150, "output_tokens": 23, "total_tokens": 173}
    meta = msg.response_metadata
    assert meta["model_name"] == "large-served"
    assert meta["arms_tried"] == ["small:direct", "large:cot"]
    assert meta["escalated"] is True
    assert meta["cost_usd"] == "0.0002056"


def test_outcome_logged_unless_log_false(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9), small_reply("5", 0.9)])
    first = model_for(h).invoke(EASY)
    second = model_for(h, log=False).invoke(EASY)
    store = h.store()
    assert store.get_request(first.response_metadata["request_id"]) is not None
    assert store.get_request(second.response_metadata["request_id"]) is None


def test_failed_request_still_answers_with_text(make_graph: Any) -> None:
    h = make_graph(small=[unreachable()], large=[unreachable()])
    msg = model_for(h).invoke(EASY)
    assert msg.response_metadata["status"] == "failed"
    assert msg.content.startswith("I couldn't find an answer")
    assert msg.usage_metadata["total_tokens"] == 0


def test_stop_sequences_cut_the_answer() -> None:
    result = {"answer": "5 apples", "status": "answered", "final_attempt": 0,
              "attempts": [{"model": "m", "input_tokens": 1, "output_tokens": 2}]}
    assert result_message(result, stop=[" app"]).content == "5"
    assert result_message(result).content == "5 apples"


def test_context_fields_reach_the_graph(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    msg = model_for(h, thread_id="t1", user_id="ann").invoke(EASY)
    row = h.store().get_request(msg.response_metadata["request_id"])
    assert (row.thread_id, row.user_id) == ("t1", "ann")


def test_confidence_threshold_field(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.5)], large=[large_reply("5", 0.95)])
    msg = model_for(h, confidence_threshold=0.3).invoke(EASY)
    assert msg.content == "4" and h.large.calls == []



def test_configurable_fields_at_runtime(make_graph: Any) -> None:
    from langchain_core.runnables import ConfigurableField

    h = make_graph(small=[small_reply("4", 0.5), small_reply("4", 0.5)], large=[large_reply("5", 0.95)])
    m = model_for(h, confidence_threshold=0.3).configurable_fields(
        confidence_threshold=ConfigurableField(id="threshold")
    )
    assert m.invoke(EASY).content == "4" and h.large.calls == []
    escalated = m.invoke(EASY, config={"configurable": {"threshold": 0.9}})
    assert escalated.content == "5" and escalated.response_metadata["escalated"] is True

# -- conversation → question -------------------------------------------------------------


def test_history_and_system_become_the_question() -> None:
    q = messages_to_question(
        [
            SystemMessage("Answer with a number."),
            HumanMessage("What is 2 + 3?"),
            AIMessage("5", response_metadata={"answered": True}),
            HumanMessage("And times 2?"),
        ]
    )
    assert q.startswith("Instructions: Answer with a number.")
    assert "Q: What is 2 + 3?\nA: 5" in q
    assert q.endswith("Now answer this question: And times 2?")


def test_tool_results_after_the_question_are_context() -> None:
    q = messages_to_question(
        [
            HumanMessage("What is 2 + 3?"),
            AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"}]),
            ToolMessage("5", tool_call_id="c1", name="add"),
        ]
    )
    assert q == "What is 2 + 3?\n\nTool result (add): 5"


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "no messages"),
        ([SystemMessage("be brief")], "no human message"),
        ([AIMessage("hi")], "no human message"),
        ([HumanMessage("   ")], "empty"),
        ([HumanMessage("hi"), ToolMessage("5", tool_call_id="nope")], "no earlier AIMessage"),
        ([HumanMessage([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])], "text only"),
        ([HumanMessage([{"type": "text", "text": "hi"}, {"type": "audio", "base64": "AAA", "mime_type": "audio/wav"}])],
         "text only"),
    ],
)
def test_bad_input_raises_value_error_before_any_call(make_graph: Any, messages: list[Any], match: str) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    with pytest.raises(ValueError, match=match):
        model_for(h).invoke(messages)
    no_calls(h)


def test_no_human_message_is_an_invalid_question(make_graph: Any) -> None:
    h = make_graph()
    with pytest.raises(InvalidQuestionError):
        model_for(h).invoke([SystemMessage("x")])


def test_text_blocks_are_accepted(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    msg = model_for(h).invoke([HumanMessage([{"type": "text", "text": "What is "}, "2 + 3?"])])
    assert msg.content == "5"


def test_per_call_kwargs_are_refused_before_any_call(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    with pytest.raises(ValueError, match="per-call arguments"):
        model_for(h).invoke(EASY, model="other")
    no_calls(h)


# -- streaming, async, batch, callbacks ----------------------------------------------------


def test_stream_yields_the_answer_with_usage_on_the_last_chunk(make_graph: Any) -> None:
    long = "12345678901234567890123"
    h = make_graph(small=[small_reply(long, 0.9)])
    chunks = list(model_for(h).stream(EASY))
    assert len(chunks) == 2
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == long
    assert chunks[0].usage_metadata is None
    assert chunks[-1].usage_metadata == {"input_tokens": 50, "output_tokens": 3, "total_tokens": 53}
    total = chunks[0] + chunks[1]
    assert total.usage_metadata["total_tokens"] == 53
    assert total.response_metadata["model_name"] == "small-served"


def test_streaming_field_makes_invoke_stream(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    tokens: list[str] = []

    class H(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kw: Any) -> None:
            tokens.append(token)

    msg = model_for(h, streaming=True).invoke(EASY, config={"callbacks": [H()]})
    assert msg.content == "5" and tokens == ["5"]
    assert msg.usage_metadata["total_tokens"] == 53


def test_async_and_batch(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9), small_reply("7", 0.9), small_reply("9", 0.9)])
    m = model_for(h)
    first = asyncio.run(m.ainvoke(EASY))
    assert first.content == "5"
    rest = m.batch([EASY, EASY], config={"max_concurrency": 1})
    assert sorted(r.content for r in rest) == ["7", "9"]


def test_astream(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])

    async def run() -> list[Any]:
        return [c async for c in model_for(h).astream(EASY)]

    chunks = asyncio.run(run())
    assert "".join(str(c.content) for c in chunks) == "5"
    assert chunks[-1].usage_metadata["total_tokens"] == 53


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.ends: list[Any] = []
        self.parents: list[UUID | None] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                            **kw: Any) -> None:
        self.starts.append(kw.get("metadata") or {})
        self.parents.append(parent_run_id)

    def on_llm_end(self, response: Any, **kw: Any) -> None:
        self.ends.append(response)


class RunCollector(BaseTracer):
    """A tracer (as LangSmith's is) that keeps every finished run."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[Any] = []

    def _persist_run(self, run: Any) -> None:
        """Nothing to persist: runs are kept in :attr:`runs`."""

    def _end_trace(self, run: Any) -> None:
        super()._end_trace(run)
        self.runs.append(run)


def walk(run: Any) -> Iterator[Any]:
    yield run
    for child in run.child_runs:
        yield from walk(child)


def test_handlers_see_the_call_and_tracers_the_nested_tier_call(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    rec, tracer = Recorder(), RunCollector()
    model_for(h).invoke(EASY, config={"callbacks": [rec, tracer]})
    (outer,) = rec.starts  # a plain handler sees the chat-model run only
    assert outer["ls_provider"] == "effreason" and outer["ls_model_type"] == "chat"
    assert rec.parents == [None] and len(rec.ends) == 1
    assert rec.ends[0].generations[0][0].message.content == "5"
    (root,) = [r for r in tracer.runs if r.parent_run_id is None]  # a tracer sees the tier's call nested under it
    llm_runs = [r for r in walk(root) if r.run_type == "llm"]
    assert len(llm_runs) == 2 and llm_runs[0] is root


def test_usage_callback_counts_each_token_once(make_graph: Any) -> None:
    from langchain_core.callbacks import get_usage_metadata_callback

    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)])
    with get_usage_metadata_callback() as cb:
        msg = model_for(h).invoke(EASY)
    assert sum(u["total_tokens"] for u in cb.usage_metadata.values()) == msg.usage_metadata["total_tokens"] == 173



def test_cost_callback_takes_the_exact_cost_of_every_attempt(make_graph: Any) -> None:
    from decimal import Decimal

    from effreason_agents.langchain.callbacks import cost_callback

    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)])
    with cost_callback(h.config) as cb:
        msg = model_for(h).invoke(EASY)
    assert cb.total_cost_usd == Decimal(msg.response_metadata["cost_usd"]) > 0
    assert cb.total_tokens == 173 and cb.cost_by_tier == {"large": cb.total_cost_usd}

def test_chain_with_prompt_and_parser(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model_for(h) | StrOutputParser()
    assert chain.invoke({"q": EASY}) == "5"


# -- configuration, tools, structured output -------------------------------------------------


def test_import_is_lazy() -> None:
    import subprocess

    code = "import sys, effreason_agents; assert 'langchain_core' not in sys.modules; " \
           "from effreason_agents import ChatCostAware; print(ChatCostAware.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ChatCostAware"


def test_standard_params_change_the_config(tmp_path: Any) -> None:
    m = ChatCostAware(config={"store": {"path": str(tmp_path / "o.sqlite")}}, max_tokens=50, temperature=0.3,
                      timeout=7, max_retries=0)
    c = m.effective_config()
    assert isinstance(c, Config)
    assert c.strategies["cot"].max_tokens == 50 and c.strategies["direct"].max_tokens == 24
    assert c.strategies["cot"].temperature == 0.3 and c.strategies["sc"].temperature == 0.7
    assert {t.timeout_s for t in c.tiers.values()} == {7.0}
    assert {t.max_retries for t in c.tiers.values()} == {0}


def test_from_config_toml_and_dict(tmp_path: Any) -> None:
    p = tmp_path / "effreason.toml"
    p.write_text('ladder = ["small:direct"]\n[store]\npath = "%s"\n' % (tmp_path / "o.sqlite"))
    m = ChatCostAware.from_config(str(p), thread_id="t")
    assert [a.name for a in m.effective_config().ladder] == ["small:direct"] and m.thread_id == "t"
    d = ChatCostAware.from_config({"ladder": ["small:cot"]})
    assert [a.name for a in d.effective_config().ladder] == ["small:cot"]
    with pytest.raises(ValueError):
        ChatCostAware.from_config({"ladder": ["nope:direct"]})


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def tool_reply(model: str = "small-served") -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "call-1"}],
                     usage_metadata={"input_tokens": 60, "output_tokens": 9, "total_tokens": 69},
                     response_metadata={"finish_reason": "tool_calls", "model_name": model})


def test_bind_tools_makes_no_call_and_starts_no_server() -> None:
    from langchain_core.runnables import RunnableBinding

    m = ChatCostAware(max_tokens=40)
    bound = m.bind_tools([add], tool_choice="add")
    assert isinstance(bound, RunnableBinding) and bound.bound is m
    assert bound.kwargs["tools"][0]["function"]["name"] == "add"
    assert bound.kwargs["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert m.bind_tools([add], tool_choice="any").kwargs["tool_choice"] == "required"
    assert m._graph is None  # nothing built, no server started
    assert m.with_structured_output({"title": "X", "type": "object", "properties": {"a": {"type": "integer"}}}) is not None


def test_tool_call_goes_to_the_picked_tier_and_is_charged(make_graph: Any) -> None:
    from effreason_agents.adapters.ledger import Scope

    h = make_graph(small=[tool_reply()])
    msg = model_for(h, thread_id="t1").bind_tools([add]).invoke(EASY)
    assert msg.tool_calls[0]["name"] == "add" and msg.tool_calls[0]["args"] == {"a": 2, "b": 3}
    assert h.large.calls == [] and len(h.small.calls) == 1  # an easy question: the small tier
    sent = h.small.call_kwargs[0]
    assert sent["tools"][0]["function"]["name"] == "add"
    assert msg.usage_metadata == {"input_tokens": 60, "output_tokens": 9, "total_tokens": 69}
    meta = msg.response_metadata
    assert meta["model_provider"] == "effreason" and meta["tier"] == "small" and meta["arms_tried"] == ["small:tools"]
    assert meta["model_name"] == "small-served" and meta["status"] == "answered"
    ledger = h.services.ledger
    assert ledger.spent(Scope("thread", "t1")).total_tokens == 69
    assert ledger.reserved(Scope("thread", "t1")).total_tokens == 0


def test_a_tool_call_keeps_the_system_message_as_the_system_prompt(make_graph: Any) -> None:
    h = make_graph(small=[tool_reply()])
    msg = model_for(h).bind_tools([add]).invoke([SystemMessage("Use the tools."), HumanMessage(EASY)])
    assert msg.tool_calls[0]["name"] == "add"
    (sent,) = h.small.calls
    assert isinstance(sent[0], SystemMessage) and sent[0].content == "Use the tools."
    assert [type(m) for m in sent[1:]] == [HumanMessage]


def test_tools_tier_sends_every_tool_call_to_that_tier(make_graph: Any) -> None:
    h = make_graph(large=[tool_reply("large-served")])
    msg = model_for(h, tools_tier="large").bind_tools([add]).invoke(EASY)
    assert msg.response_metadata["tier"] == "large" and h.small.calls == []


def test_unknown_tools_tier() -> None:
    with pytest.raises(ValueError, match="tools_tier"):
        ChatCostAware(tools_tier="nope").bind_tools([])


def test_tool_call_over_budget_is_refused_without_a_call(make_graph: Any) -> None:
    from effreason_agents.config import LimitConfig
    from effreason_agents.adapters.ledger import Scope

    h = make_graph(small=[tool_reply()])
    h.services.ledger.set_limits(Scope("thread", "t1"), LimitConfig(max_total_tokens=10))
    msg = model_for(h, thread_id="t1").bind_tools([add]).invoke(EASY)
    assert msg.response_metadata["status"] == "budget_exhausted" and not msg.tool_calls
    assert "budget" in msg.content
    no_calls(h)


def test_tool_calls_stream_as_one_chunk(make_graph: Any) -> None:
    h = make_graph(small=[tool_reply()])
    chunks = list(model_for(h).bind_tools([add]).stream(EASY))
    assert len(chunks) == 1 and isinstance(chunks[0], AIMessageChunk)
    assert chunks[0].tool_calls[0]["args"] == {"a": 2, "b": 3}
    assert chunks[0].usage_metadata["total_tokens"] == 69


def test_structured_output_json_schema(make_graph: Any) -> None:
    from pydantic import BaseModel

    class Sum(BaseModel):
        """The sum."""

        total: int

    def text_reply(text: str) -> AIMessage:
        return AIMessage(text, usage_metadata={"input_tokens": 40, "output_tokens": 6, "total_tokens": 46},
                         response_metadata={"finish_reason": "stop", "model_name": "small-served"})

    h = make_graph(small=[text_reply('{"total": 5}'), text_reply('{"total": 7}'), text_reply("not json")])
    model = model_for(h)
    assert model.with_structured_output(Sum).invoke(EASY) == Sum(total=5)
    sent = h.small.call_kwargs[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Sum"
    assert sent["json_schema"]["schema"]["properties"]["total"]["type"] == "integer"
    assert model.with_structured_output(Sum, method="json_mode").invoke(EASY) == Sum(total=7)
    assert h.small.call_kwargs[1]["response_format"] == {"type": "json_object"}
    raw = model.with_structured_output(Sum, include_raw=True).invoke(EASY)
    assert raw["parsed"] is None and raw["parsing_error"] is not None and raw["raw"].content == "not json"


def test_structured_output_bad_arguments() -> None:
    m = ChatCostAware()
    with pytest.raises(ValueError, match="method"):
        m.with_structured_output({"title": "X", "type": "object"}, method="xml")
    with pytest.raises(ValueError, match="schema"):
        m.with_structured_output(None)


def test_ls_params() -> None:
    m = ChatCostAware(max_tokens=10, stop=["x"], temperature=0.0)
    p = m._get_ls_params()
    assert p["ls_provider"] == "effreason" and p["ls_model_name"] == "effreason-cost-aware"
    assert p["ls_max_tokens"] == 10 and p["ls_stop"] == ["x"] and p["ls_temperature"] == 0.0
    assert m._llm_type == "effreason-cost-aware"


def test_graph_is_built_once_and_closed(tmp_path: Any) -> None:
    import threading

    m = ChatCostAware(config={"store": {"path": str(tmp_path / "o.sqlite")}})
    graphs: list[Any] = []
    threads = [threading.Thread(target=lambda: graphs.append(m.reasoning_graph())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(g) for g in graphs}) == 1
    m.close()
    assert m.reasoning_graph() is not graphs[0]
    m.close()


def test_non_text_blocks_in_earlier_ai_replies_are_skipped() -> None:
    q = messages_to_question(
        [
            HumanMessage("What is 2 + 3?"),
            AIMessage([{"type": "reasoning", "reasoning": "add"}, {"type": "text", "text": "5"}],
                      response_metadata={"answered": True}),
            HumanMessage("And 3 + 4?"),
        ]
    )
    assert "A: 5" in q and q.endswith("Now answer this question: And 3 + 4?")
