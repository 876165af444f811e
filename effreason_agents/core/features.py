"""Heuristic difficulty classifier: easy / medium / hard from the question text alone.

Used by the ``classify`` node until a trained router is configured. The
features are cheap and explainable: length, how many numbers and arithmetic
operators, multi-step wording, and the question type. The score thresholds are
deliberately simple; :func:`classify_difficulty` returns the features so they
can be logged and later used to fit a router.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from effreason_agents.config import Difficulty

__all__ = [
    "COUNT_FEATURES",
    "QUESTION_FEATURES",
    "QUESTION_TYPES",
    "answer_type_of",
    "classify_difficulty",
    "difficulty_features",
    "difficulty_score",
    "question_type",
    "question_vector",
]

#: Every value :func:`question_type` returns, in the order one-hot encodings use.
QUESTION_TYPES: tuple[str, ...] = ("arithmetic", "multiple_choice", "comparison", "yes_no", "word_problem", "open")
#: The counts :func:`difficulty_features` returns, in the order feature vectors use.
COUNT_FEATURES: tuple[str, ...] = (
    "chars", "words", "numbers", "max_number_digits", "operators", "multi_step_words", "hard_words", "sentences",
)
#: Names of the :func:`question_vector` entries: ``ln(1 + count)`` of each count, the
#: difficulty score, then a one-hot of the question type.
QUESTION_FEATURES: tuple[str, ...] = (*COUNT_FEATURES, "score", *(f"type={t}" for t in QUESTION_TYPES))

_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_OPS = re.compile(r"(?<=[\d\s)])[-+*/×÷^%](?=[\s\d(])|\b(?:plus|minus|times|divided|multiplied|sum|product|difference|percent)\b", re.I)
_MULTI_STEP = re.compile(
    r"\b(?:then|after|afterwards|each|every|total|remaining|left|altogether|twice|half|per|more than|less than|"
    r"how many|how much|if|when|before|ratio|average)\b",
    re.I,
)
_HARD_WORDS = re.compile(
    r"\b(?:prove|proof|derive|explain why|integral|derivative|probability|optimi[sz]e|algorithm|"
    r"step[- ]by[- ]step|theorem|complexity|equation|solve for)\b",
    re.I,
)
_YESNO = re.compile(r"^\s*(?:is|are|was|were|does|do|did|can|could|will|would|should|has|have)\b", re.I)
_CHOICE = re.compile(r"(?:^|\s)\(?[A-E][).:]\s", re.M)
_COMPARE = re.compile(r"\b(?:larger|smaller|bigger|greater|less|more|compare)\b", re.I)


def question_type(question: str) -> str:
    """One of :data:`QUESTION_TYPES`: ``arithmetic``, ``multiple_choice``, ``comparison``,
    ``yes_no``, ``word_problem``, ``open``."""
    q = question.strip()
    if len(_CHOICE.findall(q)) >= 2:
        return "multiple_choice"
    words = re.findall(r"[A-Za-z]+", q)
    nums = _NUM.findall(q)
    if len(nums) == 2 and _COMPARE.search(q) and re.search(r"\b(?:which|compare)\b", q, re.I):
        return "comparison"
    if nums and len(words) <= 6:
        return "arithmetic"
    if _YESNO.match(q):
        return "yes_no"
    if nums:
        return "word_problem"
    return "open"


def difficulty_features(question: str) -> dict[str, Any]:
    """The :data:`COUNT_FEATURES` of ``question`` and its ``type`` (:func:`question_type`)."""
    q = question.strip()
    return {
        "chars": len(q),
        "words": len(q.split()),
        "numbers": len(_NUM.findall(q)),
        "max_number_digits": max((len(re.sub(r"\D", "", n)) for n in _NUM.findall(q)), default=0),
        "operators": len(_OPS.findall(q)),
        "multi_step_words": len(_MULTI_STEP.findall(q)),
        "hard_words": len(_HARD_WORDS.findall(q)),
        "sentences": max(1, len(re.findall(r"[.!?](?:\s|$)", q))),
        "type": question_type(q),
    }


def difficulty_score(f: dict[str, Any]) -> float:
    """Higher is harder. Roughly: one-step single-digit arithmetic ≈ 0, a multi-sentence
    word problem ≈ 3+, anything asking for proofs or derivations ≥ 4."""
    s = 0.0
    s += min(f["words"], 120) / 30.0
    s += max(0, f["numbers"] - 2) * 0.5
    s += max(0, f["max_number_digits"] - 1) * 0.6
    s += max(0, f["operators"] - 1) * 0.6
    s += f["multi_step_words"] * 0.4
    s += f["hard_words"] * 2.0
    s += (f["sentences"] - 1) * 0.5
    if f["type"] == "word_problem":
        s += 0.8
    elif f["type"] == "open":
        s += 0.8
    return round(s, 3)


def classify_difficulty(question: str) -> tuple[Difficulty, dict[str, Any]]:
    """Difficulty label and the features it was computed from (including ``score``)."""
    f = difficulty_features(question)
    score = difficulty_score(f)
    f["score"] = score
    label: Difficulty = "easy" if score < 1.2 else "medium" if score < 3.0 else "hard"
    return label, f


def question_vector(question: str | dict[str, Any]) -> np.ndarray:
    """The numeric features of a question, in :data:`QUESTION_FEATURES` order (float64).

    ``question`` is the text, or the features :func:`classify_difficulty` already
    returned for it (with ``score``). Counts enter as ``ln(1 + x)``, the score as is,
    the type as a one-hot over :data:`QUESTION_TYPES`. Routers use this vector as their
    hand features; changing it changes every fitted router's inputs.
    """
    f = classify_difficulty(question)[1] if isinstance(question, str) else question
    vals = [math.log1p(float(f[k])) for k in COUNT_FEATURES]
    vals.append(float(f["score"]))
    vals.extend(1.0 if f["type"] == t else 0.0 for t in QUESTION_TYPES)
    return np.asarray(vals, dtype=np.float64)


_ANSWER_TYPES = {"multiple_choice": "choice", "yes_no": "yesno", "open": "text"}


def answer_type_of(question_type_name: str | None) -> str:
    """The answer type a question type usually has (``number`` unless it is a choice,
    yes/no or open question); strategies pick few-shot examples by it."""
    return _ANSWER_TYPES.get(question_type_name or "", "number")
