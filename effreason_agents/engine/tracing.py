"""Trace labels: LangSmith metadata and tags for every tier call.

Each tier call's ``RunnableConfig`` carries ``effreason_<name>`` metadata (arm, tier,
strategy, difficulty…) and ``effreason:tier=…`` tags, so traces can be filtered by
what the policy decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, merge_configs

from effreason_agents.core.money import format_usd

__all__ = ["METADATA_PREFIX", "attempt_config", "run_metadata", "run_tags", "traced_config"]

METADATA_PREFIX = "effreason_"



def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_usd(value)
    return value


def run_metadata(
    *,
    arm: str | None = None,
    tier: str | None = None,
    strategy: str | None = None,
    difficulty: str | None = None,
    confidence: float | None = None,
    cost_usd: Decimal | str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Run metadata (``effreason_<name>`` keys, ``None`` values left out, money as a decimal
    string) for a ``RunnableConfig`` — LangSmith shows and filters on them."""
    values = {"arm": arm, "tier": tier, "strategy": strategy, "difficulty": difficulty,
              "confidence": confidence, "cost_usd": cost_usd, **extra}
    return {f"{METADATA_PREFIX}{k}": _plain(v) for k, v in values.items() if v is not None}


def run_tags(*, arm: str | None = None, tier: str | None = None, strategy: str | None = None) -> list[str]:
    """Tags like ``effreason:tier=small`` for the same run."""
    return [f"effreason:{k}={v}" for k, v in (("arm", arm), ("tier", tier), ("strategy", strategy)) if v]


def traced_config(config: RunnableConfig | None = None, *, tags: Sequence[str] = (), **labels: Any) -> RunnableConfig:
    """``config`` with :func:`run_metadata` and :func:`run_tags` of ``labels`` merged in
    (existing metadata, tags and callbacks are kept)::

        graph.invoke(x, traced_config({"configurable": {"thread_id": "t1"}}, arm="small:direct"))
    """
    tag_labels = {k: labels.get(k) for k in ("arm", "tier", "strategy")}
    extra: RunnableConfig = {"metadata": run_metadata(**labels), "tags": [*run_tags(**tag_labels), *tags]}
    return merge_configs(ensure_config(config), extra)


def attempt_config(arm: Mapping[str, Any], config: RunnableConfig | None = None, **labels: Any) -> RunnableConfig:
    """The config for one arm's tier call: ``arm`` is one of the reasoning graph's planned
    arms (``state["arms"][rung]``, with ``name``, ``tier``, ``strategy``) or an attempt record;
    ``labels`` add e.g. ``difficulty``, ``confidence`` or ``cost_usd``. Pass it as
    ``TierClient.complete(..., config=attempt_config(arm, difficulty=...))``."""
    return traced_config(config, arm=arm.get("name") or arm.get("arm"), tier=arm.get("tier"),
                         strategy=arm.get("strategy"), **labels)
