"""Request budgets: what an arm may cost at worst, and whether that still fits.

An arm's worst case is its prompt tokens plus its full output-token cap, priced
at the tier's rates. The ``classify`` and ``escalate`` decisions only consider
arms whose worst case fits what is left of the request's budget, so a request
can never spend past its limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from decimal import Decimal, InvalidOperation

from effreason_agents.config import BudgetConfig, TierConfig
from effreason_agents.errors import ConfigError
from effreason_agents.core.money import call_cost

__all__ = [
    "cost_usd",
    "dollar_limit",
    "Spend",
    "effective_budget",
    "fits",
    "worst_case_cost",
]


@dataclass(frozen=True)
class Spend:
    """What a request has spent so far."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, input_tokens: int, output_tokens: int, cost: Decimal | str) -> "Spend":
        return Spend(self.input_tokens + input_tokens, self.output_tokens + output_tokens, self.cost_usd + Decimal(cost))


def cost_usd(tier: TierConfig, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> Decimal:
    """Exact cost of a call from its usage and the tier's prices per 1M tokens (cached input
    tokens at the tier's cached-input price when it has one)."""
    return call_cost(input_tokens, output_tokens, tier.price_input_per_1m, tier.price_output_per_1m,
                     cached_input_tokens=cached_input_tokens, price_cached_input_per_1m=tier.price_cached_input_per_1m)


def worst_case_cost(tier: TierConfig, prompt_tokens: int, max_tokens: int) -> Decimal:
    """The most one call can cost: the prompt plus every allowed output token."""
    return cost_usd(tier, prompt_tokens, max_tokens)


def dollar_limit(value: Any, name: str) -> Decimal:
    """``value`` as a positive, finite dollar amount, or a :class:`ConfigError` naming ``name``."""
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{name} must be a number of dollars, got {value!r}") from None
    if not d.is_finite() or d <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return d


def effective_budget(base: BudgetConfig, max_cost_usd: Decimal | str | float | None = None) -> BudgetConfig:
    """The request budget with a per-run dollar limit applied (the smaller limit wins)."""
    if max_cost_usd is None:
        return base
    limit = dollar_limit(max_cost_usd, "max_cost_usd")
    current = base.max_cost_usd
    return base.model_copy(update={"max_cost_usd": limit if current is None else min(limit, current)})


def fits(budget: BudgetConfig, spent: Spend, prompt_tokens: int, max_tokens: int, worst_cost: Decimal) -> str | None:
    """``None`` when the call fits the remaining budget, otherwise the reason it does not."""
    if budget.max_output_tokens is not None and spent.output_tokens + max_tokens > budget.max_output_tokens:
        left = budget.max_output_tokens - spent.output_tokens
        return f"needs up to {max_tokens} output tokens, {max(left, 0)} left of {budget.max_output_tokens}"
    if budget.max_total_tokens is not None and spent.total_tokens + prompt_tokens + max_tokens > budget.max_total_tokens:
        left = budget.max_total_tokens - spent.total_tokens
        return f"needs up to {prompt_tokens + max_tokens} tokens, {max(left, 0)} left of {budget.max_total_tokens}"
    if budget.max_cost_usd is not None and spent.cost_usd + worst_cost > budget.max_cost_usd:
        left = budget.max_cost_usd - spent.cost_usd
        return f"may cost ${worst_cost}, ${max(left, Decimal(0))} left of ${budget.max_cost_usd}"
    return None
