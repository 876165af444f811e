"""Strategies: how a tier is prompted, and how its answer is read back.

A strategy is a prompt family plus an output-token cap and an answer parser:

``direct``
    Answer with no reasoning. On tiers that continue a prefilled assistant
    message (llama.cpp, vLLM) the reply is primed with ``"The answer is"`` and
    stopped at the first newline: small models ignore "answer directly" but
    follow a primed prefix, at a few output tokens instead of ~70.
``cod``
    Chain of Draft (Xu et al. 2025): reason step by step but keep each step a
    terse draft of at most ``word_limit`` words, final answer after ``####``.
``cot``
    Chain of thought: reason step by step, final answer after ``####``.

Answers are parsed from the text after the last ``####``, then after an
"answer is" phrase, then the last number in the text (GSM8K convention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from .config import Capabilities, StrategyConfig

SEPARATOR = "####"
DIRECT_PREFIX = "The answer is"

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"answer is[:\s]*", re.IGNORECASE)


@dataclass(frozen=True)
class Prompt:
    """The messages for one call, its stop sequences and the prefilled assistant text."""

    messages: list[BaseMessage]
    stop: list[str]
    prefill: str = ""


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer read from a reply: the normalized answer, where it stands in the reply
    text (character span, for locating its tokens) and how it was found."""

    answer: str | None
    span: tuple[int, int] | None
    method: str


def build_prompt(strategy: StrategyConfig, question: str, capabilities: Capabilities) -> Prompt:
    """The chat messages that ask ``question`` under ``strategy`` for a tier with ``capabilities``."""
    q = question.strip()
    if strategy.kind == "direct":
        if capabilities.assistant_prefill:
            return Prompt(
                messages=[
                    SystemMessage("Answer the question with the final answer only, no explanation."),
                    HumanMessage(q),
                    AIMessage(DIRECT_PREFIX),
                ],
                stop=["\n"],
                prefill=DIRECT_PREFIX,
            )
        return Prompt(
            messages=[
                SystemMessage(
                    "Answer the question with the final answer only, no explanation, "
                    f"on one line in the form '{SEPARATOR} <answer>'."
                ),
                HumanMessage(q),
            ],
            stop=["\n\n"],
        )
    if strategy.kind == "cod":
        system = (
            "Think step by step, but write only a minimal draft of each step, "
            f"at most {strategy.word_limit} words per step. "
            f"After the draft, write '{SEPARATOR}' followed by the final answer only."
        )
    elif strategy.kind == "cot":
        system = (
            "Think step by step and show your reasoning. "
            f"Then write '{SEPARATOR}' followed by the final answer only."
        )
    else:  # pragma: no cover - guarded by the config's Literal
        raise ValueError(f"unknown strategy kind {strategy.kind!r}")
    return Prompt(messages=[SystemMessage(system), HumanMessage(q)], stop=[])


def normalize_answer(text: str) -> str | None:
    """Trim a raw answer: first line, surrounding quotes/markup/punctuation; numbers lose
    ``,`` ``$`` ``%`` and a trailing ``.0``."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = line.strip(" \t*_`\"'“”")
    line = line.rstrip(".!;:")
    line = line.strip(" \t*_`\"'“”")
    if not line:
        return None
    candidate = line.replace(",", "").replace("$", "").replace("%", "").strip()
    if _NUMBER.fullmatch(candidate):
        return _canonical_number(candidate)
    return line


def _canonical_number(s: str) -> str:
    s = s.replace(",", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".") or "0"
    if s.startswith("-."):
        s = "-0" + s[1:]
    elif s.startswith("."):
        s = "0" + s
    if s in ("-0", ""):
        s = "0"
    return s


def _after(text: str, start: int, method: str) -> ParsedAnswer | None:
    """The answer on the first non-empty line after ``start``; a number in it wins."""
    raw = text[start:]
    ans = normalize_answer(raw)
    if ans is None:
        return None
    first = raw.strip().splitlines()[0]
    line_start = text.find(first, start)
    nums = [n for n in _NUMBER.finditer(first) if any(ch.isdigit() for ch in n.group())]
    if nums and (_NUMBER.fullmatch(ans.replace(",", "")) or len(nums) == 1):
        n = nums[0]
        return ParsedAnswer(_canonical_number(n.group()), (line_start + n.start(), line_start + n.end()), method)
    i = first.find(ans)
    span = (line_start + i, line_start + i + len(ans)) if i >= 0 else (line_start, line_start + len(first))
    return ParsedAnswer(ans, span, method)


def parse_answer(text: str) -> ParsedAnswer:
    """Read the final answer from a reply (see the module docstring for the order)."""
    if SEPARATOR in text:
        found = _after(text, text.rindex(SEPARATOR) + len(SEPARATOR), "separator")
        if found is not None:
            return found
    phrases = list(_ANSWER_IS.finditer(text))
    if phrases:
        last_is = phrases[-1]
        found = _after(text, last_is.end(), "answer-is")
        if found is not None:
            return found
    nums = [n for n in _NUMBER.finditer(text) if any(ch.isdigit() for ch in n.group())]
    if nums:
        last = nums[-1]
        return ParsedAnswer(_canonical_number(last.group()), (last.start(), last.end()), "last-number")
    found = _after(text, 0, "text") if text.replace(SEPARATOR, "").strip() else None
    return found if found is not None else ParsedAnswer(None, None, "none")
