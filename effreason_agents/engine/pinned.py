"""Outcome-store rows for a pinned-tier call: one held call of a caller's own messages on
one tier (the HTTP server's ``effreason/<tier>`` models), logged like a graph request with
one attempt of strategy ``pinned`` so spend and latency reports cover it too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from effreason_agents.adapters.store import AttemptRecord, RequestRecord, utc_now
from effreason_agents.config import Config
from effreason_agents.core.messages import message_text
from effreason_agents.core.money import format_usd
from effreason_agents.core.records import Status
from effreason_agents.engine.runner import Held, attempt_id

__all__ = ["PINNED_STRATEGY", "PINNED_VERSION", "pinned_records"]

PINNED_STRATEGY = "pinned"
"""The strategy name of a pinned call: the caller's messages, sent as they are."""
PINNED_VERSION = "pinned/1"


def pinned_records(
    config: Config, request_id: str, tier: str, messages: Sequence[BaseMessage], held: Held, *, max_tokens: int,
    thread_id: str | None = None, user_id: str | None = None, config_version: str | None = None,
) -> tuple[RequestRecord, list[AttemptRecord]]:
    """The request and attempt rows of one settled pinned call."""
    c = held.completion
    t = config.tiers[tier]
    question = next((message_text(m) for m in reversed(messages) if isinstance(m, HumanMessage)), "") or "(no user message)"
    arm = f"{tier}:{PINNED_STRATEGY}"
    cost = format_usd(c.cost_usd)
    attempt = AttemptRecord(
        attempt_id=attempt_id(f"{request_id}:0"), request_id=request_id, index=0, arm=arm, tier=tier, model=c.model,
        engine=t.engine, strategy=PINNED_STRATEGY, max_tokens=max_tokens, input_tokens=c.input_tokens,
        output_tokens=c.output_tokens, cost_usd=cost, latency_s=round(c.latency_s, 4), finish_reason=c.finish_reason,
        raw_text=c.text, truncated=c.finish_reason == "length", usage_missing=held.usage_missing,
    )
    request = RequestRecord(
        request_id=request_id, question=question, final_answer=c.text, final_attempt_index=0,
        status=Status.ANSWERED.value, arms_tried=[arm], total_input_tokens=c.input_tokens,
        total_output_tokens=c.output_tokens, total_cost_usd=cost, graph_version=PINNED_VERSION,
        config_version=config_version or config.version(), thread_id=thread_id, user_id=user_id,
        started_at=utc_now(), extra={"tool_calls": c.tool_calls} if c.tool_calls else {},
    )
    return request, [attempt]
