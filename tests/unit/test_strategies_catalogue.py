"""The strategy catalogue: concise-cot, budget-cot (TALE), few-shot CoD/CoT per answer type,
output caps, thinking sections; and the tier options that go with it (reasoning effort,
vLLM thinking_token_budget, two-phase thinking with a scripted chat model)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from effreason_agents.config import (
    Capabilities,
    StrategyConfig,
    TierConfig,
    config_from_data,
    default_config_data,
)
from effreason_agents.core.prompts import (
    ANSWER_TYPES,
    SEPARATOR,
    build_prompt,
    output_cap,
    parse_answer,
    split_thinking,
)
from effreason_agents.adapters.tiers import STOP_THINKING, TierClient

pytestmark = pytest.mark.timeout(60)

CAPS = Capabilities()
PREFILL_CAPS = Capabilities(assistant_prefill=True)


def strat(kind: str, **kw: Any) -> StrategyConfig:
    return StrategyConfig.model_validate({"kind": kind, "max_tokens": kw.pop("max_tokens", 256), **kw})


def system_text(messages: list[BaseMessage]) -> str:
    assert isinstance(messages[0], SystemMessage)
    return str(messages[0].content)


# -- prompts ----------------------------------------------------------------------------


def test_concise_cot_prompt() -> None:
    p = build_prompt(strat("concise-cot"), "  What is 2 + 3?  ", CAPS)
    sys = system_text(p.messages)
    assert "step by step" in sys and "concise" in sys.lower() and SEPARATOR in sys
    assert [type(m) for m in p.messages] == [SystemMessage, HumanMessage]
    assert p.messages[-1].content == "What is 2 + 3?"
    assert p.stop == [] and p.prefill == "" and p.budget_tokens is None


def test_budget_cot_uses_the_argument_over_the_strategy() -> None:
    p = build_prompt(strat("budget-cot", budget_tokens=99), "Q?", CAPS, budget_tokens=57)
    assert "less than 57 tokens" in system_text(p.messages) and SEPARATOR in system_text(p.messages)
    assert p.budget_tokens == 57


def test_budget_cot_falls_back_to_the_strategy_budget() -> None:
    p = build_prompt(strat("budget-cot", budget_tokens=80), "Q?", CAPS)
    assert "less than 80 tokens" in system_text(p.messages)
    assert p.budget_tokens == 80


def test_budget_cot_without_a_budget_raises() -> None:
    with pytest.raises(ValueError, match="budget"):
        build_prompt(strat("budget-cot"), "Q?", CAPS)


def test_old_signature_still_works() -> None:
    for kind in ("direct", "cod", "cot", "concise-cot"):
        assert build_prompt(strat(kind), "Q?", CAPS).messages
    direct = build_prompt(strat("direct"), "Q?", PREFILL_CAPS, answer_type="choice")
    assert direct.prefill == "The answer is" and len(direct.messages) == 3


@pytest.mark.parametrize("kind", ["cod", "cot", "concise-cot", "budget-cot"])
def test_every_reasoning_prompt_asks_for_the_separator(kind: str) -> None:
    p = build_prompt(strat(kind, budget_tokens=50), "Q?", CAPS)
    assert SEPARATOR in system_text(p.messages)


@pytest.mark.parametrize("kind", ["cod", "cot"])
def test_no_examples_without_few_shot(kind: str) -> None:
    p = build_prompt(strat(kind), "Q?", CAPS, answer_type="date")
    assert len(p.messages) == 2


@pytest.mark.parametrize("kind", ["concise-cot", "budget-cot"])
def test_few_shot_only_for_cod_and_cot(kind: str) -> None:
    p = build_prompt(strat(kind, few_shot=True, budget_tokens=40), "Q?", CAPS, answer_type="number")
    assert len(p.messages) == 2


EXPECTED_ANSWERS = {
    "number": ["8", "190"],
    "choice": ["B", "C"],
    "yesno": ["yes", "no"],
    "date": ["03/01/2024", "01/02/2024"],
    "text": ["er", "Mercury"],
}


@pytest.mark.parametrize("kind", ["cod", "cot"])
@pytest.mark.parametrize("answer_type", ANSWER_TYPES)
def test_few_shot_examples_per_answer_type(kind: str, answer_type: str) -> None:
    p = build_prompt(strat(kind, few_shot=True), "The real question?", CAPS, answer_type=answer_type)
    msgs = p.messages
    assert [type(m) for m in msgs] == [SystemMessage, HumanMessage, AIMessage, HumanMessage, AIMessage, HumanMessage]
    assert msgs[-1].content == "The real question?"
    answers = []
    for reply in (msgs[2], msgs[4]):
        text = str(reply.content)
        assert text.splitlines()[-1].startswith(f"{SEPARATOR} ")
        answers.append(parse_answer(text).answer)
    assert answers == EXPECTED_ANSWERS[answer_type]


@pytest.mark.parametrize("answer_type", [None, "unknown-type"])
def test_unknown_answer_type_uses_number_examples(answer_type: str | None) -> None:
    p = build_prompt(strat("cot", few_shot=True), "Q?", CAPS, answer_type=answer_type)
    assert parse_answer(str(p.messages[2].content)).answer == "8"


@pytest.mark.parametrize("word_limit", [1, 2, 3, 5])
@pytest.mark.parametrize("answer_type", ANSWER_TYPES)
def test_cod_examples_respect_the_word_limit(answer_type: str, word_limit: int) -> None:
    p = build_prompt(strat("cod", few_shot=True, word_limit=word_limit), "Q?", CAPS, answer_type=answer_type)
    assert f"at most {word_limit} words" in system_text(p.messages)
    for reply in (p.messages[2], p.messages[4]):
        *steps, last = str(reply.content).splitlines()
        assert last.startswith(SEPARATOR) and steps
        for step in steps:
            assert 1 <= len(step.split()) <= word_limit, step


def test_cod_examples_are_shorter_than_cot_examples() -> None:
    cod = build_prompt(strat("cod", few_shot=True), "Q?", CAPS)
    cot = build_prompt(strat("cot", few_shot=True), "Q?", CAPS)
    for i in (2, 4):
        assert len(str(cod.messages[i].content)) < len(str(cot.messages[i].content))


# -- output caps --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "cap"), [(10, 42), (32, 64), (100, 200), (300, 384), (1000, 384)])
def test_output_cap_for_budget_cot(n: int, cap: int) -> None:
    assert output_cap(strat("budget-cot", max_tokens=384), n) == cap


def test_output_cap_budget_cot_uses_the_strategy_budget_when_none_given() -> None:
    assert output_cap(strat("budget-cot", max_tokens=384, budget_tokens=50), None) == 100
    assert output_cap(strat("budget-cot", max_tokens=384), None) == 384


@pytest.mark.parametrize("kind", ["direct", "cod", "cot", "concise-cot"])
def test_output_cap_other_kinds_is_max_tokens(kind: str) -> None:
    assert output_cap(strat(kind, max_tokens=123), 10) == 123


# -- thinking sections --------------------------------------------------------------------


def test_split_thinking() -> None:
    assert split_thinking("<think>\n2+2=4\n</think>\n#### 4", "</think>") == ("2+2=4", "#### 4")
    assert split_thinking("a </think> b </think> #### 5") == ("a </think> b", "#### 5")
    assert split_thinking("<think>still going", "</think>") == ("still going", "")
    assert split_thinking("#### 7", "</think>") == ("", "#### 7")
    assert split_thinking("[R]x[/R] #### 1", "[/R]") == ("[R]x", "#### 1")
    assert parse_answer(split_thinking("<think>maybe 3</think>#### 4")[1]).answer == "4"


# -- config defaults ---------------------------------------------------------------------


def test_default_strategies() -> None:
    cfg = config_from_data(default_config_data({}))
    s = cfg.strategies
    assert s["concise-cot"].kind == "concise-cot" and s["concise-cot"].max_tokens == 256
    assert s["budget-cot"].kind == "budget-cot" and s["budget-cot"].max_tokens == 384
    assert s["budget-cot"].budget_tokens is None
    fs = s["cod-fewshot"]
    assert (fs.kind, fs.max_tokens, fs.word_limit, fs.few_shot) == ("cod", 160, 5, True)
    assert [a.name for a in cfg.ladder] == ["small:direct", "small:cot", "large:cod", "large:cot"]


# -- tier options --------------------------------------------------------------------------


def tier(**overrides: Any) -> TierConfig:
    fields: dict[str, Any] = {
        "engine": "openai-compatible",
        "model": "test-model",
        "base_url": "http://127.0.0.1:9/v1",
        "max_retries": 0,
        "timeout_s": 10.0,
    }
    fields.update(overrides)
    return TierConfig.model_validate(fields)


def test_reasoning_effort_sent_to_capable_tiers() -> None:
    t = tier(engine="openai", api_key_env="K", capabilities={"reasoning_effort": True})
    llm = TierClient("t", t, environ={"K": "sk-test"}).chat_model(max_tokens=8, reasoning_effort="low")
    assert llm.reasoning_effort == "low"


def test_reasoning_effort_dropped_for_other_tiers() -> None:
    llm = TierClient("t", tier(), environ={}).chat_model(max_tokens=8, reasoning_effort="high")
    assert llm.reasoning_effort is None


def test_extra_body_merged_for_vllm_only() -> None:
    t = tier(engine="vllm", extra_body={"top_k": 20})
    llm = TierClient("t", t, environ={}).chat_model(max_tokens=8, extra_body={"thinking_token_budget": 64})
    assert llm.extra_body == {"top_k": 20, "thinking_token_budget": 64}
    other = TierClient("t", tier(), environ={}).chat_model(max_tokens=8, extra_body={"thinking_token_budget": 64})
    assert other.extra_body is None


def usage_reply(content: str, inp: int, out: int, finish: str, logprob_token: str | None = None) -> AIMessage:
    meta: dict[str, Any] = {"finish_reason": finish, "model_name": "served"}
    if logprob_token is not None:
        meta["logprobs"] = {"content": [{"token": logprob_token, "logprob": -0.1, "top_logprobs": []}]}
    return AIMessage(
        content=content,
        usage_metadata={"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out},
        response_metadata=meta,
    )


class ScriptedChat(BaseChatModel):
    client: Any
    defaults: dict[str, Any] = {}

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        self.client.calls.append(list(messages))
        self.client.settings.append({**self.defaults, **kw, "stop": stop if stop is not None else self.defaults.get("stop")})
        return ChatResult(generations=[ChatGeneration(message=self.client.script.pop(0))])


class ScriptedTierClient(TierClient):
    def __init__(self, t: TierConfig, script: list[AIMessage]) -> None:
        super().__init__("t", t, environ={})
        self.script = list(script)
        self.calls: list[list[BaseMessage]] = []
        self.settings: list[dict[str, Any]] = []

    def chat_model(self, **kwargs: Any) -> ScriptedChat:
        return ScriptedChat(client=self, defaults=kwargs)


QUESTION = [SystemMessage("Think, then answer after ####."), HumanMessage("What is 6 * 7?")]
PRICED = {"price_input_per_1m": "1", "price_output_per_1m": "2"}


def test_complete_passes_reasoning_effort() -> None:
    c = ScriptedTierClient(tier(capabilities={"reasoning_effort": True}), [usage_reply("#### 42", 5, 2, "stop")])
    c.complete(QUESTION, max_tokens=16, reasoning_effort="minimal")
    assert c.settings[0]["reasoning_effort"] == "minimal"


def test_thinking_token_budget_for_vllm_with_the_capability() -> None:
    t = tier(engine="vllm", capabilities={"thinking": True, "thinking_token_budget": True})
    c = ScriptedTierClient(t, [usage_reply("<think>6*7</think>#### 42", 5, 9, "stop")])
    out = c.complete(QUESTION, max_tokens=64, thinking_budget=32)
    assert len(c.calls) == 1
    assert c.settings[0]["extra_body"] == {"thinking_token_budget": 32}
    assert c.settings[0]["max_tokens"] == 64 and out.output_tokens == 9


def test_thinking_budget_ignored_without_thinking_capability() -> None:
    t = tier(engine="vllm", capabilities={"thinking_token_budget": True})
    c = ScriptedTierClient(t, [usage_reply("#### 42", 5, 2, "stop")])
    c.complete(QUESTION, max_tokens=64, thinking_budget=32)
    assert len(c.calls) == 1 and "extra_body" not in c.settings[0]
    assert c.settings[0]["max_tokens"] == 64 and c.settings[0]["stop"] is None


def test_thinking_token_budget_capability_needs_the_vllm_engine() -> None:
    """A non-vLLM tier never gets the vLLM field; it is run in two phases instead."""
    t = tier(capabilities={"thinking": True, "thinking_token_budget": True})
    c = ScriptedTierClient(t, [usage_reply("<think>6*7=42", 5, 10, "stop"), usage_reply("#### 42", 20, 3, "stop")])
    c.complete(QUESTION, max_tokens=64, thinking_budget=10)
    assert len(c.calls) == 2 and all("extra_body" not in s for s in c.settings)


def test_two_phase_thinking_with_prefill() -> None:
    t = tier(capabilities={"thinking": True, "assistant_prefill": True, "logprobs": True}, **PRICED)
    c = ScriptedTierClient(
        t,
        [
            usage_reply("<think>6 times 7 is", 20, 16, "length", logprob_token=" is"),
            usage_reply("#### 42", 40, 4, "stop", logprob_token="42"),
        ],
    )
    out = c.complete(QUESTION, max_tokens=50, thinking_budget=16, stop=["\n\n"])
    # phase 1: the thinking budget, stopped at the end marker
    assert c.settings[0]["max_tokens"] == 16 and c.settings[0]["stop"] == ["</think>"]
    # phase 2: the remaining tokens, the caller's stop, continuing a prefilled assistant turn
    assert c.settings[1]["max_tokens"] == 50 - 16 and c.settings[1]["stop"] == ["\n\n"]
    thought = "<think>6 times 7 is</think>\n"
    assert c.calls[1][:-1] == QUESTION
    assert isinstance(c.calls[1][-1], AIMessage) and c.calls[1][-1].content == thought
    assert out.text == thought + "#### 42"
    assert out.prefill == thought and out.generated_text == "#### 42"
    assert (out.input_tokens, out.output_tokens) == (60, 20)
    assert out.cost_usd == Decimal(60 * 1 + 20 * 2) / Decimal(1_000_000)
    assert out.finish_reason == "stop"
    assert out.logprobs is not None and [lp.token for lp in out.logprobs] == ["42"]
    assert parse_answer(out.text).answer == "42"


def test_two_phase_thinking_without_prefill_asks_for_the_answer() -> None:
    t = tier(capabilities={"thinking": True})
    c = ScriptedTierClient(t, [usage_reply("<think>6*7=42", 20, 7, "stop"), usage_reply("#### 42", 40, 3, "stop")])
    out = c.complete(QUESTION, max_tokens=30, thinking_budget=12)
    assert c.settings[0]["max_tokens"] == 12
    assert c.settings[1]["max_tokens"] == 30 - 7
    follow = c.calls[1]
    assert follow[: len(QUESTION)] == QUESTION
    assert isinstance(follow[-2], AIMessage) and follow[-2].content == "<think>6*7=42</think>\n"
    assert isinstance(follow[-1], HumanMessage) and follow[-1].content == STOP_THINKING
    assert out.text == "<think>6*7=42</think>\n#### 42"
    assert out.generated_text == "#### 42"
    assert (out.input_tokens, out.output_tokens) == (60, 10)


def test_two_phase_keeps_the_callers_prefill() -> None:
    t = tier(capabilities={"thinking": True, "assistant_prefill": True})
    c = ScriptedTierClient(t, [usage_reply("hmm", 10, 8, "length"), usage_reply(" 42", 20, 2, "stop")])
    out = c.complete([*QUESTION, AIMessage("<think>")], max_tokens=20, thinking_budget=8)
    assert c.calls[0][-1].content == "<think>"
    assert c.calls[1][-1].content == "<think>hmm</think>\n"
    assert c.calls[1][:-1] == QUESTION
    assert out.text == "<think>hmm</think>\n 42"


def test_phase_one_with_the_answer_needs_no_phase_two() -> None:
    t = tier(capabilities={"thinking": True})
    c = ScriptedTierClient(t, [usage_reply("quick: #### 42", 10, 5, "stop")])
    out = c.complete(QUESTION, max_tokens=30, thinking_budget=12)
    assert len(c.calls) == 1 and out.text == "quick: #### 42"


def test_no_phase_two_when_phase_one_spent_the_whole_cap() -> None:
    t = tier(capabilities={"thinking": True})
    c = ScriptedTierClient(t, [usage_reply("<think>long", 10, 20, "length")])
    out = c.complete(QUESTION, max_tokens=20, thinking_budget=64)
    assert c.settings[0]["max_tokens"] == 20
    assert len(c.calls) == 1 and out.finish_reason == "length"
