"""Read the outcome store into flat rows for fitting routers and calibrators.

One JSON-plain dict per attempt, joined with its request's question,
difficulty, status and final answer. Reading never creates or migrates a store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from effreason_agents.adapters.atomic import atomic_open
from effreason_agents.adapters.store import AttemptRecord, OutcomeStore, RequestRecord

__all__ = ["ATTEMPT_ROW_KEYS", "attempt_row", "read_attempts", "write_jsonl"]

ATTEMPT_ROW_KEYS: tuple[str, ...] = (
    "request_id",
    "question",
    "difficulty",
    "status",
    "final_answer",
    "arm",
    "tier",
    "model",
    "strategy",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_s",
    "finish_reason",
    "confidence",
    "signals",
    "answer",
    "error",
    "is_final",
)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a non-finite value counts as unavailable."""
    return value if value is None or math.isfinite(value) else None


def attempt_row(request: RequestRecord, attempt: AttemptRecord) -> dict[str, Any]:
    """One flat training row; ``is_final`` marks the attempt whose answer the request returned."""
    return {
        "request_id": request.request_id,
        "question": request.question,
        "difficulty": request.difficulty,
        "status": request.status,
        "final_answer": request.final_answer,
        "arm": attempt.arm,
        "tier": attempt.tier,
        "model": attempt.model,
        "strategy": attempt.strategy,
        "input_tokens": attempt.input_tokens,
        "output_tokens": attempt.output_tokens,
        "cost_usd": attempt.cost_usd,
        "latency_s": _finite(attempt.latency_s),
        "finish_reason": attempt.finish_reason,
        "confidence": _finite(attempt.confidence),
        "signals": {name: _finite(value) for name, value in attempt.signals.items()},
        "answer": attempt.answer,
        "error": attempt.error,
        "is_final": request.final_attempt_index is not None and attempt.index == request.final_attempt_index,
    }


def read_attempts(store_path: str | Path) -> list[dict[str, Any]]:
    """Every logged attempt as a flat dict (keys: ``ATTEMPT_ROW_KEYS``).

    Raises ``StoreError`` if ``store_path`` does not exist or is not an outcome store.
    """
    with OutcomeStore(store_path, read_only=True) as store:
        return [attempt_row(request, attempt) for request, attempt in store.iter_attempts()]


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write one JSON object per line, atomically: the file appears complete or not at all.

    Returns the number of rows written. Values must be JSON-plain (no NaN).
    """
    count = 0
    with atomic_open(Path(path).expanduser()) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            count += 1
    return count
