"""Strategies: prompts per kind and tier capability, answer parsing and normalization."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from effreason_agents.config import Capabilities, StrategyConfig
from effreason_agents.core.prompts import DIRECT_PREFIX, SEPARATOR, build_prompt, normalize_answer, parse_answer

PREFILL = Capabilities(assistant_prefill=True)
NO_PREFILL = Capabilities()


def strategy(kind: str, **kw: object) -> StrategyConfig:
    return StrategyConfig.model_validate({"kind": kind, "max_tokens": 64, **kw})


# -- build_prompt -----------------------------------------------------------------------


def test_direct_with_prefill_primes_the_answer() -> None:
    p = build_prompt(strategy("direct"), "  What is 2 + 3?\n", PREFILL)
    assert [type(m) for m in p.messages] == [SystemMessage, HumanMessage, AIMessage]
    assert p.messages[1].content == "What is 2 + 3?"  # stripped
    assert p.messages[2].content == DIRECT_PREFIX == p.prefill
    assert p.stop == ["\n"]


def test_direct_without_prefill_asks_for_the_separator() -> None:
    p = build_prompt(strategy("direct"), "What is 2 + 3?", NO_PREFILL)
    assert [type(m) for m in p.messages] == [SystemMessage, HumanMessage]
    assert SEPARATOR in p.messages[0].content
    assert p.prefill == ""
    assert p.stop == ["\n\n"]


@pytest.mark.parametrize("caps", [PREFILL, NO_PREFILL])
def test_cod_limits_words_per_step(caps: Capabilities) -> None:
    p = build_prompt(strategy("cod", word_limit=7), "Q?", caps)
    assert [type(m) for m in p.messages] == [SystemMessage, HumanMessage]
    system = p.messages[0].content
    assert "at most 7 words per step" in system and SEPARATOR in system
    assert p.stop == [] and p.prefill == ""


@pytest.mark.parametrize("caps", [PREFILL, NO_PREFILL])
def test_cot_reasons_then_separates(caps: Capabilities) -> None:
    p = build_prompt(strategy("cot"), "Q?", caps)
    assert [type(m) for m in p.messages] == [SystemMessage, HumanMessage]
    system = p.messages[0].content
    assert "step by step" in system and SEPARATOR in system and "words per step" not in system
    assert p.stop == [] and p.prefill == ""


# -- parse_answer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "answer", "method", "spanned"),
    [
        ("#### 42", "42", "separator", "42"),
        ("She has 3 + 4 = 7 apples.\n#### 7", "7", "separator", "7"),
        ("step one\n#### 1\nwait, fix\n#### 2", "2", "separator", "2"),
        ("#### $1,000.00", "1000", "separator", "1,000.00"),
        ("#### -3.50", "-3.5", "separator", "-3.50"),
        ("#### 50%", "50", "separator", "50"),
        ("x\n####\n  12 \n", "12", "separator", "12"),
        ("#### **Paris**", "Paris", "separator", "Paris"),
        ("The answer is 5.", "5", "answer-is", "5"),
        ("The answer is 4, I think the answer is 6.", "6", "answer-is", "6"),
        ("The answer is: **Paris**.", "Paris", "answer-is", "Paris"),
        ("The answer is yes.", "yes", "answer-is", "yes"),
        ("3 apples, then 4 more, so 7 in total.", "7", "last-number", "7"),
        ("about 1,250.0 dollars", "1250", "last-number", "1,250.0"),
        ("Yes.", "Yes", "text", "Yes"),
        ("No", "No", "text", "No"),
    ],
)
def test_parse_answer(reply: str, answer: str, method: str, spanned: str) -> None:
    parsed = parse_answer(reply)
    assert parsed.answer == answer
    assert parsed.method == method
    assert parsed.span is not None
    lo, hi = parsed.span
    assert reply[lo:hi] == spanned


def test_answer_is_wins_over_an_earlier_number_only_when_no_separator() -> None:
    assert parse_answer("The answer is 3\n#### 4").answer == "4"


def test_empty_separator_falls_back() -> None:
    parsed = parse_answer("The answer is 9 ####")
    assert (parsed.answer, parsed.method) == ("9", "answer-is")


@pytest.mark.parametrize("reply", ["", "   ", "\n\n"])
def test_no_answer(reply: str) -> None:
    parsed = parse_answer(reply)
    assert parsed.answer is None and parsed.span is None and parsed.method == "none"


@pytest.mark.parametrize("reply", ["####", "#### ", "#### \n"])
def test_bare_separator_is_no_answer(reply: str) -> None:
    assert parse_answer(reply).answer is None


# -- normalize_answer -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("42", "42"),
        (" 42.\nmore text", "42"),
        ("$1,234", "1234"),
        ("12.50", "12.5"),
        ("3.0", "3"),
        ("-0.0", "0"),
        ("15%", "15"),
        ('"Paris"', "Paris"),
        ("`x = 4`", "x = 4"),
        ("", None),
        ("  ...  ", None),
    ],
)
def test_normalize_answer(raw: str, norm: str | None) -> None:
    assert normalize_answer(raw) == norm


def test_same_number_same_canonical_form() -> None:
    assert normalize_answer(".5") == normalize_answer("0.5") == "0.5"
    assert parse_answer("#### .5").answer == "0.5"
