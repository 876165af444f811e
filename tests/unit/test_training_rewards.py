"""Reward functions for RL fine-tuning: hand-computed values and TRL's calling convention."""

from __future__ import annotations

from typing import Any

import pytest

from effreason_agents.adapters.tiers import estimate_tokens
from effreason_agents.training.rewards import (
    completion_text,
    correctness_reward,
    group_indices,
    kimi_lambdas,
    kimi_length_reward,
    l1_length_reward,
    l1_reward,
)

__all__: list[str] = []


def reply(answer: str, n: int) -> str:
    """A reply of exactly ``n`` characters ending in ``#### answer``."""
    tail = f"#### {answer}"
    assert n >= len(tail)
    return tail.rjust(n, ".")


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


TRL_EXTRAS: dict[str, Any] = {"trainer_state": object(), "difficulty": ["easy"] * 4, "id": [1, 2, 3, 4]}


# -- completions -------------------------------------------------------------------------


def test_completion_text_reads_strings_and_conversations() -> None:
    assert completion_text("#### 4") == "#### 4"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
                            {"role": "assistant", "content": "a2"}]) == "a2"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "#### "}, {"type": "text", "text": "7"}]}]) == "#### 7"
    assert completion_text({"role": "assistant", "content": "x"}) == "x"
    with pytest.raises(TypeError, match="string or a list of messages"):
        completion_text(42)


# -- correctness -------------------------------------------------------------------------


def test_correctness_by_answer_type_with_the_project_graders() -> None:
    f = correctness_reward()
    completions = ["so it is 1,000 apples\n#### 1,000", "#### B", "The answer is Yes.", "#### March 1, 2024",
                   "#### \"Er\"", "#### 12", "#### C", "#### no"]
    answers = ["1000", "B", "yes", "2024-03-01", "er", "13", "B", "yes"]
    types = ["number", "choice", "yesno", "date", "text", "number", "choice", "yesno"]
    assert f(completions, answer=answers, answer_type=types) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert f.__name__ == "correctness"  # TRL logs rewards under the function's name


def test_correctness_trl_convention_conversational_and_extra_kwargs_ignored() -> None:
    f = correctness_reward(answer_key="solution", type_key="kind")
    completions = [chat("#### 4"), chat("#### 5"), chat("The answer is 4"), chat("")]
    out = f(completions, solution=["4"] * 4, prompts=[[{"role": "user", "content": "2+2?"}]] * 4,
            completion_ids=[[1, 2]] * 4, **TRL_EXTRAS)
    assert out == [1.0, 0.0, 1.0, 0.0]
    # no type column: number by default
    assert correctness_reward()(["#### 4.0"], answer=["4"]) == [1.0]


def test_correctness_bad_columns_say_what_is_missing() -> None:
    f = correctness_reward()
    with pytest.raises(KeyError, match="needs the dataset column 'answer'; columns passed: gold"):
        f(["#### 4"], gold=["4"])
    with pytest.raises(ValueError, match="column 'answer' has 2 values for 1 completions"):
        f(["#### 4"], answer=["4", "5"])
    with pytest.raises(ValueError, match="not a valid 'number' answer"):
        f(["#### 4"], answer=["four"], answer_type=["number"])


# -- Kimi 1.5 ----------------------------------------------------------------------------


def test_kimi_lambdas_hand_computed() -> None:
    # min 10, max 50: 0.5 - (n - 10) / 40
    assert kimi_lambdas([10, 20, 30, 50]) == pytest.approx([0.5, 0.25, 0.0, -0.5])
    assert kimi_lambdas([7, 7, 7]) == [0.0, 0.0, 0.0]


def test_kimi_reward_groups_of_num_generations() -> None:
    f = kimi_length_reward(num_generations=4, length="chars")
    # group 1: lengths 10, 20, 30, 50 → λ 0.5, 0.25, 0, -0.5; correct, wrong, correct, wrong
    # group 2: lengths 8, 8, 8, 8 → λ 0; correct, wrong, wrong, correct
    completions = [reply("4", 10), reply("5", 20), reply("4", 30), reply("6", 50),
                   reply("9", 8), reply("1", 8), reply("2", 8), reply("9", 8)]
    out = f(completions, answer=["4"] * 4 + ["9"] * 4, answer_type=["number"] * 8)
    # a wrong completion gets min(0, λ): 0 for the short wrong one (λ 0.25), -0.5 for the long one
    assert out == pytest.approx([0.5, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0])
    assert f.__name__ == "kimi_length"


def test_kimi_reward_groups_by_prompt_when_interleaved_and_conversational() -> None:
    f = kimi_length_reward(length="chars")
    p1, p2 = [{"role": "user", "content": "2+2?"}], [{"role": "user", "content": "3+3?"}]
    completions = [chat(reply("4", 10)), chat(reply("6", 12)), chat(reply("4", 30)), chat(reply("6", 20))]
    out = f(completions, prompts=[p1, p2, p1, p2], answer=["4", "6", "4", "6"], **{"answer_type": ["number"] * 4})
    # prompt 1: lengths 10, 30 → λ 0.5, -0.5 (both right); prompt 2: 12, 20 → 0.5, -0.5
    assert out == pytest.approx([0.5, 0.5, -0.5, -0.5])
    with pytest.raises(ValueError, match="num_generations=3"):
        kimi_length_reward(3, length="chars")(completions, answer=["4"] * 4)
    with pytest.raises(KeyError, match="'prompts'"):
        kimi_length_reward(length="chars")(completions, answer=["4"] * 4)


def test_kimi_reward_length_from_completion_ids_and_default_tokens() -> None:
    f = kimi_length_reward(num_generations=2, length="completion_ids")
    out = f(["#### 4", "#### 4"], answer=["4", "4"], completion_ids=[[1] * 5, [1] * 15])
    assert out == pytest.approx([0.5, -0.5])
    texts = ["#### 4", "Two and two make four, as everyone knows.\n#### 4"]
    assert estimate_tokens(texts[0]) < estimate_tokens(texts[1])
    assert kimi_length_reward(num_generations=2)(texts, answer=["4", "4"]) == pytest.approx([0.5, -0.5])


# -- L1 ----------------------------------------------------------------------------------


def test_l1_reward_hand_computed() -> None:
    # max: 1[correct] * clip(0.0003 (target - n) + 0.5, 0, 1)
    assert l1_reward(True, 500, 1000) == pytest.approx(0.65)
    assert l1_reward(True, 100, 1000) == pytest.approx(0.77)
    assert l1_reward(True, 3000, 1000) == 0.0  # 0.0003 * -2000 + 0.5 = -0.1 → 0
    assert l1_reward(True, 0, 10000) == 1.0  # 3.5 → 1
    assert l1_reward(False, 100, 1000) == 0.0
    # exact: 1[correct] - alpha |target - n|
    assert l1_reward(True, 500, 1000, mode="exact") == pytest.approx(0.85)
    assert l1_reward(False, 1200, 1000, mode="exact") == pytest.approx(-0.06)
    assert l1_reward(True, 90, 100, mode="exact", alpha=0.01) == pytest.approx(0.9)
    assert l1_reward(True, 60, 100, mode="max", alpha=0.01, delta=0.2) == pytest.approx(0.6)


def test_l1_length_reward_target_column_and_fixed_target() -> None:
    f = l1_length_reward("max", length="chars")
    completions = [chat(reply("4", 500)), chat(reply("4", 3000)), chat(reply("5", 100))]
    out = f(completions, answer=["4", "4", "4"], target_tokens=[1000, 1000, 1000], prompts=["p"] * 3, **{"x": [0] * 3})
    assert out == pytest.approx([0.65, 0.0, 0.0])
    g = l1_length_reward("exact", target=100, alpha=0.01, length="chars")
    assert g([reply("4", 90), reply("5", 120)], answer=["4", "4"]) == pytest.approx([0.9, -0.2])
    assert g.__name__ == "l1_length_exact"
    with pytest.raises(KeyError, match="'target_tokens'"):
        f(completions, answer=["4"] * 3)
    with pytest.raises(ValueError, match="unknown L1 mode 'min'"):
        l1_length_reward("min")
    with pytest.raises(ValueError, match="unknown length measure 'words'"):
        l1_length_reward(target=10, length="words")(["#### 4"], answer=["4"])


def test_group_indices() -> None:
    assert group_indices(6, num_generations=3) == [[0, 1, 2], [3, 4, 5]]
    assert group_indices(4, prompts=["a", "b", "a", "b"]) == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="pass num_generations"):
        group_indices(4)
