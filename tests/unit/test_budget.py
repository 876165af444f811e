"""Request budgets: spend accounting, worst cases, per-run limits, and whether a call fits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from effreason_agents.core.budget import Spend, effective_budget, fits, worst_case_cost
from effreason_agents.config import BudgetConfig, TierConfig
from effreason_agents.errors import ConfigError


def budget(**limits: object) -> BudgetConfig:
    return BudgetConfig.model_validate(limits)


def test_spend_adds_exactly() -> None:
    s = Spend().add(10, 2, "0.1").add(5, 3, Decimal("0.2"))
    assert (s.input_tokens, s.output_tokens, s.total_tokens) == (15, 5, 20)
    assert s.cost_usd == Decimal("0.3")
    assert Spend() == Spend(0, 0, Decimal(0))  # frozen value object; add returns a new one


def test_worst_case_cost_prices_the_full_output_cap() -> None:
    tier = TierConfig(engine="openai", model="m", price_input_per_1m=Decimal("2"), price_output_per_1m=Decimal("8"))
    assert worst_case_cost(tier, 500, 250) == Decimal("0.003")  # 500*2e-6 + 250*8e-6


def test_no_limits_always_fit() -> None:
    assert fits(budget(), Spend(10**9, 10**9, Decimal(10**6)), 10**6, 10**6, Decimal(10**6)) is None


def test_output_token_limit() -> None:
    b = budget(max_output_tokens=100)
    spent = Spend(0, 40, Decimal(0))
    assert fits(b, spent, 10_000, 60, Decimal(0)) is None  # exactly at the limit fits
    why = fits(b, spent, 0, 61, Decimal(0))
    assert why is not None and "61 output tokens" in why and "60 left of 100" in why


def test_total_token_limit_counts_prompt_and_spend() -> None:
    b = budget(max_total_tokens=1000)
    spent = Spend(300, 100, Decimal(0))
    assert fits(b, spent, 400, 200, Decimal(0)) is None  # 400 + 600 = 1000
    why = fits(b, spent, 401, 200, Decimal(0))
    assert why is not None and "601 tokens" in why and "600 left of 1000" in why


def test_cost_limit() -> None:
    b = budget(max_cost_usd="0.01")
    spent = Spend(0, 0, Decimal("0.004"))
    assert fits(b, spent, 0, 0, Decimal("0.006")) is None
    why = fits(b, spent, 0, 0, Decimal("0.0061"))
    assert why is not None and "$0.0061" in why and "$0.006 left of $0.01" in why


def test_overspent_budget_reports_zero_left() -> None:
    why = fits(budget(max_cost_usd="0.01"), Spend(0, 0, Decimal("0.02")), 0, 0, Decimal("0.001"))
    assert why is not None and "$0 left" in why
    why = fits(budget(max_output_tokens=10), Spend(0, 20, Decimal(0)), 0, 1, Decimal(0))
    assert why is not None and "0 left" in why


def test_effective_budget_without_per_run_limit_is_the_base() -> None:
    base = budget(max_cost_usd="0.5", max_output_tokens=10)
    assert effective_budget(base, None) is base


@pytest.mark.parametrize(
    ("base", "per_run", "expected"),
    [
        (None, "0.02", Decimal("0.02")),
        ("0.05", "0.02", Decimal("0.02")),
        ("0.01", "0.02", Decimal("0.01")),
        ("0.01", 0.005, Decimal("0.005")),
        (None, Decimal("1E-7"), Decimal("1E-7")),
    ],
)
def test_smaller_dollar_limit_wins(base: str | None, per_run: object, expected: Decimal) -> None:
    b = budget(max_cost_usd=base, max_output_tokens=10)
    out = effective_budget(b, per_run)  # type: ignore[arg-type]
    assert out.max_cost_usd == expected
    assert out.max_output_tokens == 10
    assert b.max_cost_usd == (None if base is None else Decimal(base))  # base left unchanged


@pytest.mark.parametrize("bad", [0, "0", -1, "-0.01"])
def test_non_positive_limit_rejected(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_cost_usd must be > 0"):
        effective_budget(budget(), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["abc", "NaN", float("nan")])
def test_non_numeric_limit_rejected_with_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_cost_usd"):
        effective_budget(budget(), bad)  # type: ignore[arg-type]
