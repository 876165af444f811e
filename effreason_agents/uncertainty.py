"""Uncertainty signals for an attempt, and the confidence the ``assess`` node uses.

Signals (all optional: a tier without logprobs yields ``None`` for each):

``answer_mean_logprob`` / ``answer_min_logprob``
    mean and minimum logprob of the tokens that spell the parsed answer;
``answer_max_entropy``
    the largest entropy (nats) over the top alternatives the endpoint returned
    at an answer token (renormalized over those alternatives);
``answer_min_margin``
    the smallest gap between the top-1 and top-2 alternative logprobs at an answer token;
``output_mean_logprob``
    mean logprob over the whole generated output;
``truncated``
    1.0 when the output was cut by the token cap (``finish_reason == "length"``).

Confidence, until a fitted calibrator is configured, is the documented
heuristic ``exp(answer_min_logprob)``: the probability the model gave the least
likely token of its answer (on the embedded SmolLM2 this signal separated right
from wrong answers best). It is 0 when no answer was parsed or when a reply
truncated before its answer separator; ``None`` when the tier gives no logprobs.
"""

from __future__ import annotations

import math
from typing import Sequence

from .tiers import TokenLogprob

HEURISTIC_METHOD = "heuristic: exp(min answer-token logprob)"
SIGNAL_NAMES = (
    "answer_mean_logprob",
    "answer_min_logprob",
    "answer_max_entropy",
    "answer_min_margin",
    "output_mean_logprob",
    "truncated",
)


def answer_tokens(logprobs: Sequence[TokenLogprob], text_offset: int, span: tuple[int, int]) -> list[TokenLogprob]:
    """The generated tokens that overlap ``span`` (character offsets into the full reply text,
    whose generated part starts at ``text_offset``, e.g. after a prefilled prefix)."""
    out: list[TokenLogprob] = []
    pos = text_offset
    lo, hi = span
    for tok in logprobs:
        end = pos + len(tok.token)
        if end > lo and pos < hi and tok.token.strip():
            out.append(tok)
        pos = end
        if pos >= hi:
            break
    return out


def _entropy(top: Sequence[tuple[str, float]]) -> float | None:
    if not top:
        return None
    probs = [math.exp(lp) for _, lp in top]
    z = sum(probs)
    if z <= 0:
        return None
    return -sum((p / z) * math.log(p / z) for p in probs if p > 0)


def _margin(top: Sequence[tuple[str, float]]) -> float | None:
    if len(top) < 2:
        return None
    a, b = sorted((lp for _, lp in top), reverse=True)[:2]
    return a - b


def compute_signals(
    logprobs: Sequence[TokenLogprob] | None,
    text_offset: int,
    span: tuple[int, int] | None,
    finish_reason: str | None,
) -> dict[str, float | None]:
    """All signals of one attempt (see the module docstring)."""
    sig: dict[str, float | None] = {name: None for name in SIGNAL_NAMES}
    sig["truncated"] = 1.0 if finish_reason == "length" else 0.0
    if not logprobs:
        return sig
    sig["output_mean_logprob"] = sum(t.logprob for t in logprobs) / len(logprobs)
    if span is None:
        return sig
    toks = answer_tokens(logprobs, text_offset, span)
    if not toks:
        return sig
    sig["answer_mean_logprob"] = sum(t.logprob for t in toks) / len(toks)
    sig["answer_min_logprob"] = min(t.logprob for t in toks)
    ents = [e for e in (_entropy(t.top) for t in toks) if e is not None]
    sig["answer_max_entropy"] = max(ents) if ents else None
    margins = [m for m in (_margin(t.top) for t in toks) if m is not None]
    sig["answer_min_margin"] = min(margins) if margins else None
    return sig


def heuristic_confidence(
    signals: dict[str, float | None], *, has_answer: bool, answer_method: str
) -> tuple[float | None, str]:
    """Confidence in [0, 1] (or ``None`` when the tier gives no logprobs) and how it was computed."""
    if not has_answer:
        return 0.0, "no answer parsed"
    if signals.get("truncated") and answer_method in ("last-number", "text"):
        return 0.0, "truncated before the answer"
    lp = signals.get("answer_min_logprob")
    if lp is None:
        return None, "no logprobs from this tier"
    return max(0.0, min(1.0, math.exp(lp))), HEURISTIC_METHOD
