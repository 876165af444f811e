"""CostAwareMiddleware inside a real ``create_agent`` agent, with scripted chat models as tiers.

Each tier's client is a TierClient whose ``chat_model`` returns a scripted model (tools are
accepted and ignored), so each test controls replies, usage and logprobs, and the real budget
ledger (SQLite in tmp_path) checks holds and commits.
"""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from effreason_agents.config import Config, LimitConfig, config_from_data
from effreason_agents.errors import ConfigError
from effreason_agents.adapters.ledger import Scope, from_micro, to_micro
from effreason_agents.langchain.middleware import CostAwareMiddleware, DifficultySelector
from effreason_agents.graph.nodes import Services

from helpers import EASY, ENVIRON, FakeTierClient, ScriptedChat

HARD = "Prove that the derivative of x^2 is 2x step by step, then explain why the integral of 2x is x^2."


def reply(text: str, p: float | None, *, input_tokens: int = 50, output_tokens: int = 3, model: str = "served",
          tool_calls: list[dict[str, Any]] | None = None) -> AIMessage:
    """A reply whose last token (the answer) has probability ``p`` (no logprobs when ``None``)."""
    meta: dict[str, Any] = {"finish_reason": "stop", "model_name": model}
    if p is not None:
        meta["logprobs"] = {"content": [
            {"token": text, "logprob": math.log(p),
             "top_logprobs": [{"token": text, "logprob": math.log(p)}, {"token": "x", "logprob": math.log((1 - p) / 2 or 1e-9)}]}
        ]}
    return AIMessage(
        content=text,
        tool_calls=tool_calls or [],
        usage_metadata={"input_tokens": input_tokens, "output_tokens": output_tokens,
                        "total_tokens": input_tokens + output_tokens},
        response_metadata=meta,
    )


def make_config(tmp: Path, *, budget: dict[str, Any] | None = None, escalation: dict[str, Any] | None = None,
                large_enabled: bool = True) -> Config:
    common = {"engine": "openai-compatible", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    return config_from_data({
        "tiers": {
            "small": {**common, "model": "small-model", "price_input_per_1m": "0.10", "price_output_per_1m": "0.20",
                      "capabilities": {"logprobs": True, "top_logprobs": 2}},
            "large": {**common, "model": "large-model", "api_key_env": "LARGE_KEY", "price_input_per_1m": "1.50",
                      "price_output_per_1m": "2.50", "capabilities": {"logprobs": True, "top_logprobs": 2},
                      "enabled": large_enabled},
        },
        "strategies": {"direct": {"kind": "direct", "max_tokens": 24}, "cot": {"kind": "cot", "max_tokens": 256}},
        "ladder": ["small:direct", "large:cot"],
        "budget": budget or {},
        "escalation": {"start_arm": {"easy": "small:direct", "medium": "small:direct", "hard": "large:cot"},
                       **(escalation or {})},
        "store": {"path": str(tmp / "outcomes.sqlite")},
    }, source="test")


SMALL = Decimal("0.0000056")  # 50 * 0.10 + 3 * 0.20 per 1M
LARGE = Decimal("0.0000825")  # 50 * 1.50 + 3 * 2.50 per 1M


def held(usd: Decimal) -> Decimal:
    """What the ledger records for ``usd`` (whole micro-dollars, rounded up)."""
    return from_micro(to_micro(usd))


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Harness:
    def __init__(self, tmp: Path, small: list[Any], large: list[Any], **kw: Any) -> None:
        mw_kw = {k: kw.pop(k) for k in list(kw) if k in ("select", "max_tokens", "confidence_threshold", "escalate",
                                                         "calibrators", "calibrator_strategy")}
        self.config = make_config(tmp, **kw)
        self.small = FakeTierClient("small", self.config, small)
        clients = {"small": self.small}
        self.large = FakeTierClient("large", self.config, large)
        if self.config.tiers["large"].is_enabled(ENVIRON):
            clients["large"] = self.large
        self.services = Services(self.config, environ=ENVIRON, clients=clients)
        self.mw = CostAwareMiddleware(services=self.services, **mw_kw)
        placeholder = ScriptedChat(client=FakeTierClient("small", self.config, []))
        self.agent = create_agent(model=placeholder, tools=[add], middleware=[self.mw])

    def ask(self, question: str = EASY, thread: str | None = "t1", context: Any = None) -> dict[str, Any]:
        cfg = {"configurable": {"thread_id": thread}} if thread else {}
        return self.agent.invoke({"messages": [HumanMessage(question)]}, cfg, context=context)

    def outstanding(self, *scopes: Scope) -> list[Any]:
        return [self.services.ledger.reserved(s) for s in scopes]


@pytest.fixture()
def harness(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(small: list[Any] = (), large: list[Any] = (), **kw: Any) -> Harness:  # type: ignore[assignment]
        h = Harness(tmp_path / str(len(made)), list(small), list(large), **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.services.close()


def info(out: dict[str, Any]) -> dict[str, Any]:
    return out["messages"][-1].response_metadata["effreason"]


# -- tier selection -------------------------------------------------------------------


def test_easy_question_runs_on_the_small_tier(harness: Any) -> None:
    h = harness(small=[reply("5", 0.9)])
    out = h.ask(EASY)
    assert out["messages"][-1].content == "5"
    i = info(out)
    assert (i["tier"], i["difficulty"], i["escalated"], i["status"]) == ("small", "easy", False, "answered")
    assert i["cost_usd"] == "0.0000056" and (i["input_tokens"], i["output_tokens"]) == (50, 3)
    assert i["confidence"] == pytest.approx(0.9)
    assert h.large.calls == []
    assert h.small.bound_tools == [["add"]]  # create_agent bound the tools to the tier's model
    assert h.small.settings[0]["max_tokens"] == 256


def test_hard_question_starts_on_the_large_tier(harness: Any) -> None:
    h = harness(large=[reply("ok", 0.95)])
    i = info(h.ask(HARD))
    assert (i["tier"], i["difficulty"], i["selected_tier"]) == ("large", "hard", "large")
    assert h.small.calls == []


def test_disabled_tier_falls_back_to_the_cheapest(harness: Any) -> None:
    h = harness(small=[reply("ok", 0.95)], large_enabled=False)
    assert h.mw.tiers == ["small"]
    assert info(h.ask(HARD))["tier"] == "small"


def test_custom_select_callable(harness: Any) -> None:
    seen: list[Any] = []

    def select(request: Any) -> str:
        seen.append(request.messages[-1].content)
        return "large"

    h = harness(large=[reply("5", 0.9)], select=select)
    i = info(h.ask(EASY))
    assert i["tier"] == "large" and i["selected_by"] == "select"
    assert seen == [EASY]


def test_select_naming_an_unknown_tier_is_a_config_error(harness: Any) -> None:
    h = harness(select=lambda r: "huge")
    with pytest.raises(ConfigError, match="huge"):
        h.ask()
    assert h.small.calls == []


def test_difficulty_selector_decides_from_the_last_human_message(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    sel = DifficultySelector(cfg, ["small", "large"])
    assert sel.decide(EASY)["tier"] == "small"
    assert sel.decide(HARD)["tier"] == "large"
    assert DifficultySelector(cfg, ["small"]).decide(HARD)["tier"] == "small"


# -- budget ledger --------------------------------------------------------------------


def test_holds_are_committed_at_actual_usage(harness: Any) -> None:
    h = harness(small=[reply("5", 0.9)])
    h.ask(EASY, context={"user_id": "ann"})
    ledger = h.services.ledger
    for scope in (Scope("thread", "t1"), Scope("user", "ann")):
        spent = ledger.spent(scope)
        assert (spent.output_tokens, spent.total_tokens, spent.cost_usd) == (3, 53, held(SMALL))
        assert ledger.reserved(scope).total_tokens == 0


def test_tool_loop_charges_every_model_call(harness: Any) -> None:
    call = reply("", None, tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c1", "type": "tool_call"}])
    h = harness(small=[call, reply("5", 0.9)])
    out = h.ask(EASY)
    assert out["messages"][-1].content == "5"
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]
    assert h.services.ledger.spent(Scope("thread", "t1")).cost_usd == 2 * held(SMALL)


def test_failed_call_releases_its_hold_and_raises(harness: Any) -> None:
    h = harness(small=[RuntimeError("endpoint down")])
    with pytest.raises(RuntimeError, match="endpoint down"):
        h.ask(EASY, context={"user_id": "ann"})
    ledger = h.services.ledger
    for scope in (Scope("thread", "t1"), Scope("user", "ann")):
        assert ledger.reserved(scope).total_tokens == 0
        assert ledger.spent(scope).total_tokens == 0


def test_orphan_tool_message_is_refused_before_any_call(harness: Any) -> None:
    from langchain_core.messages import ToolMessage

    h = harness(small=[reply("5", 0.9)])
    with pytest.raises(ValueError, match="tool_call_id 'call-9'"):
        h.agent.invoke({"messages": [HumanMessage(EASY), ToolMessage("5", tool_call_id="call-9")]},
                       {"configurable": {"thread_id": "t1"}})
    assert h.small.calls == [] and h.services.ledger.reserved(Scope("thread", "t1")).total_tokens == 0


def test_exhausted_budget_refuses_without_calling_a_model(harness: Any) -> None:
    h = harness(small=[reply("5", 0.9)])
    h.services.ledger.set_limits(Scope("thread", "t1"), LimitConfig(max_total_tokens=10))
    out = h.ask(EASY)
    msg = out["messages"][-1]
    assert msg.response_metadata["effreason"]["status"] == "budget_exhausted"
    assert "conversation" in msg.content and "budget" in msg.content
    assert not msg.tool_calls
    assert h.small.calls == [] and h.large.calls == []
    assert h.services.ledger.reserved(Scope("thread", "t1")).total_tokens == 0


def test_configured_thread_limits_apply(harness: Any) -> None:
    h = harness(small=[reply("5", 0.9)], budget={"thread": {"max_output_tokens": 100}})
    assert info(h.ask(EASY))["status"] == "budget_exhausted"  # the worst case (256 output tokens) never fits
    assert h.small.calls == []


def test_expensive_tier_falls_back_to_a_cheaper_one_that_fits(harness: Any) -> None:
    h = harness(small=[reply("ok", 0.95)])
    # the large tier's worst case (>= 256 * 2.50 / 1M = $0.00064) does not fit; the small one does
    h.services.ledger.set_limits(Scope("thread", "t1"), LimitConfig(max_cost_usd=Decimal("0.0002")))
    i = info(h.ask(HARD))
    assert (i["selected_tier"], i["tier"]) == ("large", "small")
    assert "did not fit" in i["reason"]


# -- escalation -----------------------------------------------------------------------


def test_low_confidence_escalates_once_to_the_next_tier(harness: Any) -> None:
    h = harness(small=[reply("4", 0.2)], large=[reply("5", 0.95)])
    out = h.ask(EASY)
    assert out["messages"][-1].content == "5"
    assert len([m for m in out["messages"] if m.type == "ai"]) == 1  # the low-confidence reply is replaced
    i = info(out)
    assert i["escalated"] is True and i["tiers_tried"] == ["small", "large"] and i["tier"] == "large"
    assert Decimal(i["cost_usd"]) == SMALL + LARGE
    assert h.services.ledger.spent(Scope("thread", "t1")).cost_usd == held(SMALL) + held(LARGE)


def test_still_low_after_escalation_is_marked(harness: Any) -> None:
    h = harness(small=[reply("4", 0.2)], large=[reply("6", 0.3)])
    i = info(h.ask(EASY))
    assert i["status"] == "low_confidence" and i["tiers_tried"] == ["small", "large"]


def test_tool_calls_and_missing_logprobs_never_escalate(harness: Any) -> None:
    call = reply("", 0.01, tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c1", "type": "tool_call"}])
    h = harness(small=[call, reply("5", None)])
    out = h.ask(EASY)
    assert info(out)["confidence"] is None and info(out)["escalated"] is False
    assert h.large.calls == []


def test_escalation_that_does_not_fit_keeps_the_first_reply(harness: Any) -> None:
    h = harness(small=[reply("4", 0.2)], large=[reply("5", 0.95)])
    h.services.ledger.set_limits(Scope("thread", "t1"), LimitConfig(max_cost_usd=Decimal("0.0002")))
    i = info(h.ask(EASY))
    assert i["tiers_tried"] == ["small"] and i["status"] == "low_confidence"
    assert i["reason"].startswith("not escalated")
    assert h.large.calls == []


def test_failed_escalation_releases_and_keeps_the_first_reply(harness: Any) -> None:
    h = harness(small=[reply("4", 0.2)], large=[RuntimeError("boom")])
    out = h.ask(EASY)
    assert out["messages"][-1].content == "4"
    assert "failed" in info(out)["reason"]
    ledger = h.services.ledger
    assert ledger.reserved(Scope("thread", "t1")).total_tokens == 0
    assert ledger.spent(Scope("thread", "t1")).cost_usd == held(SMALL)


def test_escalation_can_be_turned_off(harness: Any) -> None:
    h = harness(small=[reply("4", 0.2)], escalate=False)
    assert info(h.ask(EASY))["tiers_tried"] == ["small"]


def test_calibrators_replace_the_heuristic(harness: Any) -> None:
    class Cal:
        def confidence(self, tier: str, strategy: str, signals: Any) -> tuple[float, str]:
            assert signals["answer_min_logprob"] == pytest.approx(math.log(0.2))
            return 0.9, "calibrated: test"

        def find(self, tier: str, strategy: str) -> None:
            return None  # no fitted threshold: the configured one applies

    h = harness(small=[reply("4", 0.2)], calibrators=Cal())
    i = info(h.ask(EASY))
    assert i["confidence"] == 0.9 and i["confidence_method"] == "calibrated: test" and not i["escalated"]


def test_async_agent(harness: Any) -> None:
    h = harness(small=[reply("4", 0.2)], large=[reply("5", 0.95)])
    out = asyncio.run(h.agent.ainvoke({"messages": [HumanMessage(EASY)]}, {"configurable": {"thread_id": "t1"}}))
    assert out["messages"][-1].content == "5" and info(out)["tiers_tried"] == ["small", "large"]
    assert h.services.ledger.reserved(Scope("thread", "t1")).total_tokens == 0


def test_bad_arguments() -> None:
    cfg = make_config(Path("/nonexistent"))
    services = Services(cfg, environ=ENVIRON, clients={"small": FakeTierClient("small", cfg, [])})
    with pytest.raises(ConfigError):
        CostAwareMiddleware(services=services, max_tokens=0)
    with pytest.raises(ConfigError):
        CostAwareMiddleware(services=services, confidence_threshold=1.5)


def test_cost_callback_prices_every_call_by_its_tier(harness: Any) -> None:
    from effreason_agents.langchain.callbacks import cost_callback

    h = harness(small=[reply("4", 0.2)], large=[reply("5", 0.95)])
    with cost_callback(h.config) as cb:
        h.ask(EASY)
    assert cb.cost_by_tier == {"small": SMALL, "large": LARGE}  # the served name "served" matches no tier: labels do
    assert cb.usage_metadata["served"]["total_tokens"] == 106
