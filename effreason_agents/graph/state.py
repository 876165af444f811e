"""The reasoning graph's state and per-run context.

State holds only JSON-plain values, so it checkpoints and travels over
LangGraph Server unchanged. Money is a decimal string.

Keys (who writes them):

``question`` (input)
    the user's question.
``request_id``, ``scopes``, ``started_at``, ``difficulty``, ``features``, ``arms``, ``rung`` (classify)
    ``scopes`` are the budget-ledger scopes every call is held against: ``[kind, key]``
    for the request, and the thread and user when the context names them.
    ``arms`` is the usable ladder for this question: one dict per arm with
    ``name``, ``tier``, ``model``, ``engine``, ``strategy``, ``max_tokens``,
    ``prompt_tokens`` and ``worst_case_cost_usd``; ``rung`` indexes the arm to run next
    (``None`` when no arm fits the budget).
``attempts`` (solve appends, assess completes the last one)
    one dict per attempt, the fields of :class:`~effreason_agents.adapters.store.AttemptRecord`.
``decision``, ``decision_reason`` (assess, escalate)
    a :class:`~effreason_agents.core.records.Decision` value (``"solve"``, ``"accept"``,
    ``"escalate"``, ``"stop"``) and why, for people.
``stop_reason``, ``budget_scope`` (classify, solve, escalate)
    a :class:`~effreason_agents.core.records.StopReason` value when the request stopped
    without an accepted answer, and the scope (``request``, ``thread``, ``user``) whose
    budget ran out.
``down_tiers`` (escalate)
    tiers that failed in this request and are skipped.
``retry`` (escalate, cleared by solve)
    ``{"max_tokens", "of"}`` when a truncated reply is retried on the same arm with a larger cap.
``result`` (finalize)
    the answer and totals, see :func:`~effreason_agents.graph.nodes.finalize`.
``logged`` (log)
    whether the outcome store recorded the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from typing_extensions import TypedDict

__all__ = [
    "ReasoningContext",
    "context_of",
    "ReasoningInput",
    "ReasoningState",
]


class ReasoningInput(TypedDict):
    question: str


class ReasoningState(TypedDict, total=False):
    question: str
    request_id: str
    scopes: list[list[str]]
    started_at: str
    difficulty: str
    features: dict[str, Any]
    arms: list[dict[str, Any]]
    rung: int | None
    skipped: list[str]
    attempts: list[dict[str, Any]]
    decision: str
    decision_reason: str
    stop_reason: str | None
    budget_scope: str | None
    down_tiers: list[str]
    retry: dict[str, Any] | None
    result: dict[str, Any]
    logged: bool


@dataclass
class ReasoningContext:
    """Per-run settings, passed as ``graph.invoke(..., context=ReasoningContext(...))``
    (or a dict with these keys). Every field is optional."""

    confidence_threshold: float | None = None
    """Escalate while confidence is below this (default: the config's)."""
    max_cost_usd: str | float | None = None
    """A dollar limit for this request (the smaller of this and the config's wins)."""
    log: bool = True
    """Record the request and its attempts in the outcome store."""
    thread_id: str | None = None
    user_id: str | None = None


C = TypeVar("C")


def context_of(cls: type[C], ctx: C | Mapping[str, Any] | None, what: str = "context") -> C:
    """A run's context as ``cls``: ``None`` is the defaults, a mapping is checked for unknown
    keys (a :class:`~effreason_agents.errors.ConfigError` before any model call)."""
    from effreason_agents.errors import ConfigError

    if ctx is None:
        return cls()
    if isinstance(ctx, Mapping):
        known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        unknown = sorted(set(ctx) - known)
        if unknown:
            raise ConfigError(f"unknown {what} keys {unknown}; known: {sorted(known)}")
        return cls(**ctx)
    return ctx
