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
``concise-cot``
    Concise chain of thought (Renze & Guven 2024): step by step, "Be concise."
``budget-cot``
    TALE (Han et al. 2024): step by step "and use less than N tokens", N the
    per-question budget the caller estimated (or the strategy's fixed one).

``cod`` and ``cot`` with ``few_shot`` put two short worked examples, matched to
the question's answer type (number, choice, yes/no, date, text), before the
question as earlier user/assistant turns; CoD examples are terse drafts within
the word limit. Every prompt but ``direct`` asks for the answer after ``####``.

Answers are parsed from the text after the last ``####``, then after an
"answer is" phrase, then the last number in the text (GSM8K convention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from effreason_agents.config import Capabilities, StrategyConfig

__all__ = [
    "ANSWER_TYPES",
    "DIRECT_PREFIX",
    "ParsedAnswer",
    "Prompt",
    "SEPARATOR",
    "build_prompt",
    "few_shot_examples",
    "normalize_answer",
    "output_cap",
    "parse_answer",
    "split_thinking",
]

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
    budget_tokens: int | None = None


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer read from a reply: the normalized answer, where it stands in the reply
    text (character span, for locating its tokens) and how it was found."""

    answer: str | None
    span: tuple[int, int] | None
    method: str


ANSWER_TYPES = ("number", "choice", "yesno", "date", "text")


@dataclass(frozen=True)
class _Example:
    question: str
    cot: str  # full reasoning, without the answer line
    draft: tuple[str, ...]  # Chain of Draft steps, at most 3 words each
    answer: str


_EXAMPLES: dict[str, tuple[_Example, _Example]] = {
    "number": (
        _Example(
            "Pens cost 3 dollars each. Mia buys 4 pens and pays with a 20-dollar bill. How much change does she get?",
            "4 pens cost 4 × 3 = 12 dollars. She pays 20 dollars, so her change is 20 − 12 = 8 dollars.",
            ("4*3=12", "20-12=8"),
            "8",
        ),
        _Example(
            "A train runs at 60 km per hour for 2.5 hours, then travels 40 km more. How far does it go in total?",
            "In 2.5 hours at 60 km per hour it covers 60 × 2.5 = 150 km. With the last 40 km that is 150 + 40 = 190 km.",
            ("60*2.5=150", "150+40=190"),
            "190",
        ),
    ),
    "choice": (
        _Example(
            "Which of these animals is a mammal?\nA) shark\nB) dolphin\nC) trout\nD) octopus",
            "Sharks and trout are fish and an octopus is a mollusc. A dolphin breathes air and nurses its young, "
            "so it is the mammal, option B.",
            ("shark, trout: fish", "octopus: mollusc", "dolphin: mammal"),
            "B",
        ),
        _Example(
            "What is 15% of 80?\nA) 8\nB) 10\nC) 12\nD) 15",
            "10% of 80 is 8 and 5% of 80 is 4, so 15% is 8 + 4 = 12, which is option C.",
            ("10%=8, 5%=4", "8+4=12", "option C"),
            "C",
        ),
    ),
    "yesno": (
        _Example(
            "A coin is heads up. Ann flips it, then Bob flips it. Is the coin still heads up?",
            "The coin starts heads up. Ann's flip turns it tails up and Bob's flip turns it back to heads up.",
            ("start: heads", "Ann: tails", "Bob: heads"),
            "yes",
        ),
        _Example(
            "Is 91 a prime number?",
            "91 = 7 × 13, so it has divisors other than 1 and itself and is not prime.",
            ("91=7*13", "not prime"),
            "no",
        ),
    ),
    "date": (
        _Example(
            "Today is 02/27/2024. What is the date 3 days from today in MM/DD/YYYY?",
            "2024 is a leap year, so February has 29 days. The 3 days after February 27 are February 28, "
            "February 29 and March 1.",
            ("2024: leap year", "Feb 28, 29", "then Mar 1"),
            "03/01/2024",
        ),
        _Example(
            "Yesterday was 12/31/2023. What is the date tomorrow in MM/DD/YYYY?",
            "If yesterday was December 31, 2023, today is January 1, 2024, so tomorrow is January 2, 2024.",
            ("today: 01/01/2024", "tomorrow: +1 day"),
            "01/02/2024",
        ),
    ),
    "text": (
        _Example(
            'Take the last letter of each word in "Grace Hopper" and join them.',
            'The last letter of "Grace" is "e" and the last letter of "Hopper" is "r". Joined they give "er".',
            ("Grace: e", "Hopper: r", "join: er"),
            "er",
        ),
        _Example(
            "Which planet is closest to the Sun?",
            "In order from the Sun the planets are Mercury, Venus, Earth and Mars, so the closest is Mercury.",
            ("order: Mercury first",),
            "Mercury",
        ),
    ),
}


def few_shot_examples(kind: str, answer_type: str | None, word_limit: int = 5) -> list[BaseMessage]:
    """Two worked examples for ``answer_type`` (unknown or ``None``: number) as alternating
    user/assistant messages. ``kind`` "cod" writes terse drafts of at most ``word_limit``
    words per step; anything else writes full reasoning. Each reply ends with ``#### <answer>``."""
    examples = _EXAMPLES.get(answer_type or "number", _EXAMPLES["number"])
    out: list[BaseMessage] = []
    for ex in examples:
        if kind == "cod":
            body = "\n".join(" ".join(step.split()[:word_limit]) for step in ex.draft)
        else:
            body = ex.cot
        out += [HumanMessage(ex.question), AIMessage(f"{body}\n{SEPARATOR} {ex.answer}")]
    return out


def build_prompt(
    strategy: StrategyConfig,
    question: str,
    capabilities: Capabilities,
    *,
    answer_type: str | None = None,
    budget_tokens: int | None = None,
) -> Prompt:
    """The chat messages that ask ``question`` under ``strategy`` for a tier with ``capabilities``.

    ``answer_type`` picks the few-shot examples (``cod``/``cot`` with ``few_shot``);
    ``budget_tokens`` is budget-cot's N (else ``strategy.budget_tokens``; neither: ValueError)."""
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
    final = f"'{SEPARATOR}' followed by the final answer only."
    n: int | None = None
    if strategy.kind == "cod":
        system = (
            "Think step by step, but write only a minimal draft of each step, "
            f"at most {strategy.word_limit} words per step. "
            f"After the draft, write {final}"
        )
    elif strategy.kind == "cot":
        system = f"Think step by step and show your reasoning. Then write {final}"
    elif strategy.kind == "concise-cot":
        system = f"Think step by step, but be concise. Then write {final}"
    elif strategy.kind == "budget-cot":
        n = budget_tokens if budget_tokens is not None else strategy.budget_tokens
        if n is None:
            raise ValueError("budget-cot needs a token budget: pass budget_tokens or set strategy.budget_tokens")
        if n <= 0:
            raise ValueError(f"budget-cot token budget must be positive, got {n}")
        system = f"Think step by step and use less than {n} tokens. Then write {final}"
    else:  # pragma: no cover - guarded by the config's Literal
        raise ValueError(f"unknown strategy kind {strategy.kind!r}")
    shots: list[BaseMessage] = []
    if strategy.few_shot and strategy.kind in ("cod", "cot"):
        shots = few_shot_examples(strategy.kind, answer_type, strategy.word_limit)
    return Prompt(messages=[SystemMessage(system), *shots, HumanMessage(q)], stop=[], budget_tokens=n)


def output_cap(strategy: StrategyConfig, budget_tokens: int | None) -> int:
    """The output-token cap of a call: for budget-cot with budget N, ``min(max_tokens,
    max(2N, N + 32))`` (room for the answer after the reasoning); otherwise ``max_tokens``."""
    if strategy.kind == "budget-cot":
        n = budget_tokens if budget_tokens is not None else strategy.budget_tokens
        if n is not None:
            return min(strategy.max_tokens, max(2 * n, n + 32))
    return strategy.max_tokens


def split_thinking(text: str, end_marker: str = "</think>") -> tuple[str, str]:
    """Split a reasoning model's reply into (thinking, answer part) at the last ``end_marker``.
    Without the marker: a reply that opens a thinking section (``<think>``) is all thinking,
    any other reply is all answer."""
    opener = "<" + end_marker[2:] if end_marker.startswith("</") else ""
    if end_marker and end_marker in text:
        i = text.rindex(end_marker)
        thinking, answer = text[:i].strip(), text[i + len(end_marker) :].strip()
    elif opener and text.lstrip().startswith(opener):
        thinking, answer = text.strip(), ""
    else:
        return "", text.strip()
    if opener and thinking.startswith(opener):
        thinking = thinking[len(opener) :].strip()
    return thinking, answer


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
