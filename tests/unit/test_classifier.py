"""Heuristic difficulty classifier and question types."""

from __future__ import annotations

import pytest

import math

import numpy as np

from effreason_agents.core.features import (
    QUESTION_FEATURES,
    QUESTION_TYPES,
    classify_difficulty,
    difficulty_features,
    difficulty_score,
    question_type,
    question_vector,
)

WORD_PROBLEM = (
    "Janet has 16 eggs every day. She eats 3 for breakfast and bakes muffins with 4 more each day. "
    "She sells the remaining eggs at $2 each, so how much money does she make every day?"
)


@pytest.mark.parametrize(
    "question",
    ["What is 2 + 3?", "What is 7 times 8?", "Is the sky blue?", "What is the capital of France?"],
)
def test_easy(question: str) -> None:
    assert classify_difficulty(question)[0] == "easy"


def test_multi_step_word_problem_is_hard() -> None:
    label, f = classify_difficulty(WORD_PROBLEM)
    assert label == "hard"
    assert f["sentences"] == 3
    assert f["numbers"] == 4
    assert f["multi_step_words"] >= 3
    assert f["type"] == "word_problem"


@pytest.mark.parametrize(
    "question",
    ["Prove that the square root of 2 is irrational.", "Prove it.", "Derive the formula for the area of a circle."],
)
def test_proofs_are_not_easy(question: str) -> None:
    label, f = classify_difficulty(question)
    assert label != "easy"
    assert f["hard_words"] >= 1


def test_long_arithmetic_is_hard() -> None:
    assert classify_difficulty("Compute 123456 * 789 - 4321 / 7 + 99.")[0] == "hard"


def test_medium_between() -> None:
    assert classify_difficulty("A train travels 60 miles in 1.5 hours. What is its average speed?")[0] == "medium"


def test_features_are_returned_with_the_score() -> None:
    label, f = classify_difficulty("  What is 2 + 3?  ")
    assert f["chars"] == len("What is 2 + 3?")
    assert (f["words"], f["numbers"], f["operators"], f["max_number_digits"]) == (5, 2, 1, 1)
    assert f["score"] == difficulty_score(difficulty_features("What is 2 + 3?"))


def test_score_grows_with_hard_words_and_steps() -> None:
    base = difficulty_score(difficulty_features("What is 12 + 30?"))
    assert difficulty_score(difficulty_features("Prove what is 12 + 30?")) > base
    assert difficulty_score(difficulty_features("What is 12 + 30 + 45 + 67?")) > base
    assert difficulty_score(difficulty_features("What is 123456 + 30?")) > base


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("What is 2 + 3?", "arithmetic"),
        ("Which is correct? A) red B) blue C) green", "multiple_choice"),
        ("(A) 4 (B) 5 — which is the sum of 2 and 2?", "multiple_choice"),
        ("Which is larger, 9.11 or 9.9?", "comparison"),
        ("Is the sky blue?", "yes_no"),
        ("Does 7 divide 49 without a remainder at all?", "yes_no"),
        (WORD_PROBLEM, "word_problem"),
        ("What is the capital of France?", "open"),
    ],
)
def test_question_type(question: str, kind: str) -> None:
    assert question_type(question) == kind


@pytest.mark.parametrize(
    "question",
    ["What is 2 + 3?", "Which is correct? A) red B) blue C) green", "Which is larger, 9.11 or 9.9?",
     "Is the sky blue?", WORD_PROBLEM, "What is the capital of France?"],
)
def test_question_vector_is_counts_score_and_type(question: str) -> None:
    _, f = classify_difficulty(question)
    assert f["type"] in QUESTION_TYPES
    v = question_vector(question)
    assert v.shape == (len(QUESTION_FEATURES),) == (15,) and v.dtype == np.float64
    named = dict(zip(QUESTION_FEATURES, v.tolist()))
    for k in ("chars", "words", "numbers", "max_number_digits", "operators", "multi_step_words", "hard_words",
              "sentences"):
        assert named[k] == pytest.approx(math.log1p(f[k]))
    assert named["score"] == f["score"]
    assert [t for t in QUESTION_TYPES if named[f"type={t}"] == 1.0] == [f["type"]]
    assert sum(named[f"type={t}"] for t in QUESTION_TYPES) == 1.0
    # the classifier's features give the same vector without classifying again
    assert np.array_equal(question_vector(f), v)


def test_every_user_of_question_types_shares_the_one_list() -> None:
    from effreason_agents.adapters.router import HAND_FEATURES
    from effreason_agents.core import confidence
    from effreason_agents.engine.estimator import REGRESSOR_FEATURES

    assert HAND_FEATURES == QUESTION_FEATURES
    assert confidence.QUESTION_TYPES is QUESTION_TYPES
    assert [s for s in confidence.QUESTION_SIGNALS if s.startswith("qtype_")] == [f"qtype_{t}" for t in QUESTION_TYPES]
    assert REGRESSOR_FEATURES[-len(QUESTION_TYPES):] == tuple(f"type={t}" for t in QUESTION_TYPES)
