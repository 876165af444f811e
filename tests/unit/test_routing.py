"""Routing decisions: start rung, arm choice under budget and failed tiers, escalation, final answer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from effreason_agents.core.budget import Spend
from effreason_agents.config import BudgetConfig
from effreason_agents.engine.policy import escalation_decision, final_choice, pick_arm, start_rung

NO_LIMIT = BudgetConfig()


def arm(name: str, *, max_tokens: int = 100, prompt_tokens: int = 50, cost: str = "0") -> dict[str, Any]:
    tier = name.split(":")[0]
    return {
        "name": name,
        "tier": tier,
        "strategy": name.split(":")[1],
        "max_tokens": max_tokens,
        "prompt_tokens": prompt_tokens,
        "worst_case_cost_usd": cost,
    }


LADDER = [
    arm("small:direct", max_tokens=24),
    arm("small:cot", max_tokens=384),
    arm("large:cod", max_tokens=160, cost="0.0001"),
    arm("large:cot", max_tokens=384, cost="0.0003"),
]


# -- start_rung -------------------------------------------------------------------------

START_ARM = {"easy": "small:direct", "medium": "small:cot", "hard": "large:cod"}


@pytest.mark.parametrize(
    ("difficulty", "arms", "rung"),
    [("easy", LADDER, 0), ("medium", LADDER, 1), ("hard", LADDER, 2), ("hard", LADDER[:2], 0), ("medium", LADDER[:1], 0)],
)
def test_start_rung(difficulty: str, arms: list[dict[str, str]], rung: int) -> None:
    assert start_rung(difficulty, START_ARM, arms) == rung  # type: ignore[arg-type]


def test_start_rung_defaults_to_the_bottom() -> None:
    assert start_rung("hard", {"easy": "small:cot"}, LADDER) == 0


def test_start_rung_empty_ladder() -> None:
    with pytest.raises(ValueError, match="empty"):
        start_rung("easy", START_ARM, [])


# -- pick_arm ---------------------------------------------------------------------------


def test_pick_arm_takes_the_start_when_it_fits() -> None:
    assert pick_arm(LADDER, 1, NO_LIMIT, Spend()) == (1, [])


def test_pick_arm_skips_failed_tiers() -> None:
    i, skipped = pick_arm(LADDER, 0, NO_LIMIT, Spend(), {"small"})
    assert i == 2
    assert len(skipped) == 2
    assert all("tier 'small' failed earlier" in s for s in skipped)
    assert skipped[0].startswith("small:direct")


def test_pick_arm_skips_arms_over_budget() -> None:
    i, skipped = pick_arm(LADDER, 2, BudgetConfig(max_cost_usd=Decimal("0.0002")), Spend())
    assert i == 2 and skipped == []
    i, skipped = pick_arm(LADDER, 3, BudgetConfig(max_cost_usd=Decimal("0.0002")), Spend(), allow_below=False)
    assert i is None
    assert len(skipped) == 1 and skipped[0].startswith("large:cot: over budget")


def test_pick_arm_counts_what_was_spent() -> None:
    b = BudgetConfig(max_cost_usd=Decimal("0.0002"))
    i, skipped = pick_arm(LADDER, 2, b, Spend(0, 0, Decimal("0.00015")), allow_below=False)
    assert i is None and len(skipped) == 2


def test_pick_arm_output_token_budget_moves_below_start() -> None:
    b = BudgetConfig(max_output_tokens=200)
    i, skipped = pick_arm(LADDER, 3, b, Spend())
    assert i == 2
    assert len(skipped) == 1 and skipped[0].startswith("large:cot: over budget (needs up to 384 output tokens")


def test_pick_arm_below_start_prefers_the_nearest() -> None:
    b = BudgetConfig(max_output_tokens=100)  # only small:direct fits
    assert pick_arm(LADDER, 3, b, Spend())[0] == 0
    b = BudgetConfig(max_output_tokens=400)
    assert pick_arm(LADDER, 3, b, Spend(0, 0, Decimal(0)), {"large"})[0] == 1


def test_pick_arm_without_allow_below_never_goes_down() -> None:
    i, skipped = pick_arm(LADDER, 2, NO_LIMIT, Spend(), {"large"}, allow_below=False)
    assert i is None and len(skipped) == 2


def test_pick_arm_nothing_fits() -> None:
    i, skipped = pick_arm(LADDER, 1, BudgetConfig(max_output_tokens=1), Spend())
    assert i is None
    assert len(skipped) == 4  # every arm, each once


# -- escalation_decision ----------------------------------------------------------------


def attempt(**fields: Any) -> dict[str, Any]:
    return {"tier": "small", "answer": "5", "confidence": 0.9, "error": None, **fields}


@pytest.mark.parametrize(
    ("fields", "escalate", "why"),
    [
        ({"error": "tier 'small': cannot connect", "answer": None, "confidence": None}, True, "tier error"),
        ({"answer": None, "confidence": 0.0}, True, "no answer"),
        ({"confidence": None}, False, "no logprobs"),
        ({"confidence": 0.49}, True, "below threshold"),
        ({"confidence": 0.5}, False, "meets threshold"),
        ({"confidence": 0.51}, False, "meets threshold"),
    ],
)
def test_escalation_decision(fields: dict[str, Any], escalate: bool, why: str) -> None:
    decision, reason = escalation_decision(attempt(**fields), 0.5)
    assert decision is escalate
    assert why in reason


def test_zero_threshold_accepts_any_confident_answer() -> None:
    assert escalation_decision(attempt(confidence=0.0), 0.0)[0] is False
    assert escalation_decision(attempt(answer=None), 0.0)[0] is True


# -- final_choice -----------------------------------------------------------------------


def test_final_choice_answered() -> None:
    attempts = [attempt(answer="4", confidence=0.2), attempt(answer="5", confidence=0.8)]
    assert final_choice(attempts, 0.5) == (1, "answered")


def test_final_choice_accepts_an_answer_without_confidence() -> None:
    assert final_choice([attempt(confidence=0.1), attempt(confidence=None)], 0.5) == (1, "answered")


def test_final_choice_low_confidence_picks_the_most_confident() -> None:
    attempts = [
        attempt(answer="4", confidence=0.4),
        attempt(answer="5", confidence=0.1),
        attempt(error="x", answer=None),
    ]
    assert final_choice(attempts, 0.5) == (0, "low_confidence")


def test_final_choice_low_confidence_tie_goes_to_the_later_arm() -> None:
    attempts = [attempt(answer="4", confidence=0.3), attempt(answer="5", confidence=0.3)]
    assert final_choice(attempts, 0.5) == (1, "low_confidence")


@pytest.mark.parametrize(
    "attempts",
    [[], [attempt(error="tier 'small': timed out", answer=None)], [attempt(answer=None, confidence=0.0)] * 2],
)
def test_final_choice_failed(attempts: list[dict[str, Any]]) -> None:
    assert final_choice(attempts, 0.5) == (None, "failed")


def test_pick_arm_below_first_prefers_cheaper_arms_when_the_start_does_not_fit() -> None:
    # output-token budget of 200: large:cod (160) would fit above, but the cheaper small:direct (24) below wins
    b = BudgetConfig(max_output_tokens=200)
    start_too_big = [*LADDER[:1], arm("small:cot", max_tokens=384), arm("large:cod", max_tokens=160, cost="0.0001")]
    assert pick_arm(start_too_big, 1, b, Spend(), below_first=True)[0] == 0
    assert pick_arm(start_too_big, 1, b, Spend())[0] == 2  # without it, upwards first
