"""Outcome store: one row per request and one per attempt, in SQLite.

Records cross a boundary (the database, the CLI's JSON), so they are pydantic
models. Money is a decimal string (``"0.000123"``), never a summed float.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RequestStatus = Literal["answered", "low_confidence", "failed", "budget_exhausted"]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AttemptRecord(BaseModel):
    """One arm run on one query."""

    model_config = ConfigDict(extra="forbid")

    attempt_id: str
    request_id: str
    index: int = Field(ge=0, description="position among the request's attempts")
    arm: str
    tier: str
    model: str
    engine: str
    strategy: str
    max_tokens: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: str = "0"
    latency_s: float = 0.0
    finish_reason: str | None = None
    confidence: float | None = None
    confidence_method: str | None = None
    signals: dict[str, float | None] = Field(default_factory=dict)
    answer: str | None = None
    raw_text: str = ""
    error: str | None = None
    created_at: str = Field(default_factory=utc_now)


class RequestRecord(BaseModel):
    """One question through the graph."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    question: str
    final_answer: str | None = None
    final_attempt_index: int | None = None
    status: RequestStatus
    difficulty: str | None = None
    arms_tried: list[str] = Field(default_factory=list)
    escalated: bool = False
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cost_usd: str = "0"
    graph_version: str
    config_version: str
    thread_id: str | None = None
    user_id: str | None = None
    started_at: str
    finished_at: str = Field(default_factory=utc_now)
    extra: dict[str, Any] = Field(default_factory=dict)
