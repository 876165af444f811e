"""Uncertainty signals for an attempt, and the confidence the ``assess`` node uses.

Every signal is a named float; a signal the tier cannot provide is ``None``
(a tier without logprobs has no logprob signals; only ``sc`` attempts have
agreement signals). A fitted calibrator (:mod:`~effreason_agents.adapters.calibrator`)
uses whichever of its features are present.

Over the tokens that spell the parsed answer:

``answer_mean_logprob`` / ``answer_min_logprob``
    mean and minimum token logprob;
``answer_mean_entropy`` / ``answer_max_entropy``
    mean and largest entropy (nats) over the top alternatives the endpoint returned
    at each answer token (renormalized over those alternatives);
``answer_min_margin``
    the smallest gap between the top-1 and top-2 alternative logprobs.

Over the whole generated output:

``output_mean_logprob`` / ``output_min_logprob``
    mean and minimum token logprob;
``output_mean_entropy``
    mean entropy over the returned top alternatives;
``length_ratio``
    output tokens divided by the arm's output-token cap (what the strategy budgets for);
``truncated``
    1.0 when the output was cut by the token cap (``finish_reason == "length"``);
``separator_found``
    1.0 when the answer followed the strategy's answer marker, 0.0 when it was
    guessed from the text (last number, bare text).

Over the samples of an ``sc`` attempt (self-consistency):

``agreement_share``
    the share of samples that gave the majority answer;
``distinct_answers``
    how many different answers the samples gave.

About the question and the answer (known before or regardless of logprobs; they let a
calibrator learn where the model is reliable, e.g. a small model on yes/no questions
but not on date arithmetic):

``question_score``, ``question_words``, ``question_numbers``, ``question_max_digits``
    the classifier's difficulty score and the features it is computed from;
``qtype_<type>``
    1.0 for the question's type (``arithmetic``, ``multiple_choice``, ``comparison``,
    ``yes_no``, ``word_problem``, ``open``), 0.0 for the others;
``answer_chars`` / ``answer_numeric``
    the parsed answer's length, and 1.0 when it is a number.

Optional, off by default because it costs a call (``escalation.self_verify``):

``self_verify``
    AutoMix-style self-verification: the same tier is asked whether its answer to the
    question is correct; P(yes) from the logprobs of its one-token reply (renormalized
    over the yes/no alternatives), or 1.0/0.0 from the text on tiers without logprobs.

Confidence, until a fitted calibrator applies, is the documented heuristic
``exp(answer_min_logprob)`` — the probability the model gave the least likely
token of its answer — and for ``sc`` attempts the majority's share. It is 0
when no answer was parsed or when a reply truncated before its answer
separator; ``None`` when the tier gives no logprobs (and the attempt is not sc).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from effreason_agents.core.records import TokenLogprob

__all__ = [
    "AGREEMENT_SIGNALS",
    "ALTERNATIVE_SIGNALS",
    "HEURISTIC_METHOD",
    "HEURISTIC_SC_METHOD",
    "LOGPROB_SIGNALS",
    "QUESTION_SIGNALS",
    "SHAPE_SIGNALS",
    "SIGNAL_NAMES",
    "VERIFY_SIGNALS",
    "answer_tokens",
    "available_signals",
    "compute_signals",
    "heuristic_confidence",
    "p_yes",
    "question_signals",
]

HEURISTIC_METHOD = "heuristic: exp(min answer-token logprob)"
HEURISTIC_SC_METHOD = "heuristic: majority share of the samples"
LOGPROB_SIGNALS = (
    "answer_mean_logprob",
    "answer_min_logprob",
    "output_mean_logprob",
    "output_min_logprob",
)
ALTERNATIVE_SIGNALS = (  # need the top alternatives per token
    "answer_mean_entropy",
    "answer_max_entropy",
    "answer_min_margin",
    "output_mean_entropy",
)
SHAPE_SIGNALS = ("length_ratio", "truncated", "separator_found")
AGREEMENT_SIGNALS = ("agreement_share", "distinct_answers")
from effreason_agents.core.features import QUESTION_TYPES  # noqa: E402
QUESTION_SIGNALS = (
    "question_score",
    "question_words",
    "question_numbers",
    "question_max_digits",
    *(f"qtype_{t}" for t in QUESTION_TYPES),
    "answer_chars",
    "answer_numeric",
)
VERIFY_SIGNALS = ("self_verify",)
SIGNAL_NAMES = (
    LOGPROB_SIGNALS + ALTERNATIVE_SIGNALS + SHAPE_SIGNALS + AGREEMENT_SIGNALS + QUESTION_SIGNALS + VERIFY_SIGNALS
)
_NUMBER = re.compile(r"^[-+]?\$?\d[\d,]*(?:\.\d+)?%?$")


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


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compute_signals(
    logprobs: Sequence[TokenLogprob] | None,
    text_offset: int,
    span: tuple[int, int] | None,
    finish_reason: str | None,
    *,
    output_tokens: int | None = None,
    max_tokens: int | None = None,
    answer_method: str | None = None,
    samples: Sequence[str | None] | None = None,
) -> dict[str, float | None]:
    """All signals of one attempt (see the module docstring). ``samples`` are the
    answers an sc attempt drew (``None`` for a sample without an answer)."""
    sig: dict[str, float | None] = {name: None for name in SIGNAL_NAMES}
    sig["truncated"] = 1.0 if finish_reason == "length" else 0.0
    if answer_method is not None:
        sig["separator_found"] = 1.0 if answer_method == "separator" else 0.0
    n_out = output_tokens if output_tokens is not None else (len(logprobs) if logprobs else None)
    if n_out is not None and max_tokens:
        sig["length_ratio"] = n_out / max_tokens
    if samples:
        answered = [a for a in samples if a is not None]
        if answered:
            top = max(answered.count(a) for a in set(answered))
            sig["agreement_share"] = top / len(samples)
        else:
            sig["agreement_share"] = 0.0
        sig["distinct_answers"] = float(len(set(answered)))
    if not logprobs:
        return sig
    sig["output_mean_logprob"] = _mean([t.logprob for t in logprobs])
    sig["output_min_logprob"] = min(t.logprob for t in logprobs)
    sig["output_mean_entropy"] = _mean([e for e in (_entropy(t.top) for t in logprobs) if e is not None])
    if span is None:
        return sig
    toks = answer_tokens(logprobs, text_offset, span)
    if not toks:
        return sig
    sig["answer_mean_logprob"] = _mean([t.logprob for t in toks])
    sig["answer_min_logprob"] = min(t.logprob for t in toks)
    ents = [e for e in (_entropy(t.top) for t in toks) if e is not None]
    sig["answer_mean_entropy"] = _mean(ents)
    sig["answer_max_entropy"] = max(ents) if ents else None
    margins = [m for m in (_margin(t.top) for t in toks) if m is not None]
    sig["answer_min_margin"] = min(margins) if margins else None
    return sig


def question_signals(features: Mapping[str, Any] | None, answer: str | None) -> dict[str, float | None]:
    """The question and answer signals (see the module docstring) from the classifier's
    ``features`` and the parsed answer."""
    f = features or {}
    out: dict[str, float | None] = {}
    for name, key in (("question_score", "score"), ("question_words", "words"),
                      ("question_numbers", "numbers"), ("question_max_digits", "max_number_digits")):
        v = f.get(key)
        out[name] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    qtype = f.get("type")
    for t in QUESTION_TYPES:
        out[f"qtype_{t}"] = None if qtype is None else (1.0 if qtype == t else 0.0)
    out["answer_chars"] = None if answer is None else float(len(answer))
    out["answer_numeric"] = None if answer is None else (1.0 if _NUMBER.match(answer.strip()) else 0.0)
    return out


def p_yes(logprobs: Sequence[TokenLogprob] | None, text: str) -> float | None:
    """P(yes) of a one-word yes/no reply: from the first token's alternatives (renormalized
    over those that read yes or no), else from the text; ``None`` when it says neither."""
    if logprobs:
        first = logprobs[0]
        cands = first.top or [(first.token, first.logprob)]
        yes = sum(math.exp(lp) for t, lp in cands if t.strip().lower().strip(".!") == "yes")
        no = sum(math.exp(lp) for t, lp in cands if t.strip().lower().strip(".!") == "no")
        if yes + no > 0:
            return yes / (yes + no)
    word = text.strip().lower()
    if word.startswith("yes"):
        return 1.0
    if word.startswith("no"):
        return 0.0
    return None


def available_signals(logprobs: bool, top_logprobs: int, sc: bool, self_verify: bool = False) -> set[str]:
    """The signals an attempt can carry on a tier with these capabilities (and settings)."""
    out = set(SHAPE_SIGNALS) | set(QUESTION_SIGNALS)
    if self_verify:
        out.update(VERIFY_SIGNALS)
    if logprobs:
        out.update(LOGPROB_SIGNALS)
        if top_logprobs >= 2:
            out.update(ALTERNATIVE_SIGNALS)
    if sc:
        out.update(AGREEMENT_SIGNALS)
    return out


def heuristic_confidence(
    signals: dict[str, float | None], *, has_answer: bool, answer_method: str
) -> tuple[float | None, str]:
    """Confidence in [0, 1] (or ``None`` when the tier gives no logprobs) and how it was computed."""
    if not has_answer:
        return 0.0, "no answer parsed"
    if signals.get("truncated") and answer_method in ("last-number", "text"):
        return 0.0, "truncated before the answer"
    share = signals.get("agreement_share")
    if share is not None:
        return max(0.0, min(1.0, share)), HEURISTIC_SC_METHOD
    lp = signals.get("answer_min_logprob")
    if lp is None:
        return None, "no logprobs from this tier"
    return max(0.0, min(1.0, math.exp(lp))), HEURISTIC_METHOD
