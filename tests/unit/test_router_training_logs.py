"""router_training.logs: flat attempt rows from the outcome store, atomic JSONL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from effreason_agents.errors import StoreError
from effreason_agents.adapters.store import AttemptRecord, RequestRecord, open_store
from router_training.logs import ATTEMPT_ROW_KEYS, read_attempts, write_jsonl


def _request(request_id: str, **overrides: object) -> RequestRecord:
    fields: dict[str, object] = {
        "request_id": request_id,
        "question": f"question {request_id}?",
        "status": "answered",
        "graph_version": "g1",
        "config_version": "c1",
        "started_at": "2025-01-01T00:00:00.000+00:00",
    }
    fields.update(overrides)
    return RequestRecord.model_validate(fields)


def _attempt(request_id: str, index: int, **overrides: object) -> AttemptRecord:
    fields: dict[str, object] = {
        "attempt_id": f"{request_id}-{index}",
        "request_id": request_id,
        "index": index,
        "arm": f"arm{index}",
        "tier": "small" if index == 0 else "large",
        "model": "m",
        "engine": "embedded",
        "strategy": "direct",
        "max_tokens": 32,
    }
    fields.update(overrides)
    return AttemptRecord.model_validate(fields)


@pytest.fixture()
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "outcomes.sqlite"
    with open_store(path) as store:
        store.record(
            _request("esc", final_answer="4", final_attempt_index=1, difficulty="hard", escalated=True),
            [
                _attempt("esc", 0, answer="5", confidence=0.2, cost_usd="0.0000010",
                         signals={"mean_logprob": -2.0, "broken": float("nan")}),
                _attempt("esc", 1, answer="4", confidence=0.9, cost_usd="0.0021", input_tokens=12,
                         output_tokens=3, latency_s=0.5, finish_reason="stop"),
            ],
        )
        store.record(
            _request("fail", status="failed", final_answer=None, final_attempt_index=None),
            [_attempt("fail", 0, error="tier 'small': timeout", confidence=float("inf"))],
        )
    return path


def test_read_attempts_rows(store_path: Path) -> None:
    rows = read_attempts(store_path)
    assert len(rows) == 3
    assert all(tuple(row) == ATTEMPT_ROW_KEYS for row in rows)

    first, second, failed = rows
    assert (first["request_id"], first["arm"], first["is_final"]) == ("esc", "arm0", False)
    assert (second["arm"], second["is_final"]) == ("arm1", True)
    assert second == {
        "request_id": "esc",
        "question": "question esc?",
        "difficulty": "hard",
        "status": "answered",
        "final_answer": "4",
        "arm": "arm1",
        "tier": "large",
        "model": "m",
        "strategy": "direct",
        "input_tokens": 12,
        "output_tokens": 3,
        "cost_usd": "0.0021",
        "latency_s": 0.5,
        "finish_reason": "stop",
        "confidence": 0.9,
        "signals": {},
        "answer": "4",
        "error": None,
        "is_final": True,
    }
    # non-finite floats become None so the rows stay JSON-plain
    assert first["signals"] == {"mean_logprob": -2.0, "broken": None}
    assert first["cost_usd"] == "0.0000010"
    assert failed["is_final"] is False
    assert failed["confidence"] is None
    assert failed["status"] == "failed"
    assert failed["error"] == "tier 'small': timeout"
    # JSON-plain: survives a strict round trip unchanged
    assert json.loads(json.dumps(rows, allow_nan=False)) == rows


def test_read_attempts_missing_store(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "outcomes.sqlite"
    with pytest.raises(StoreError, match="no outcome store"):
        read_attempts(path)
    assert not path.exists()
    assert not path.parent.exists()


def test_read_attempts_does_not_modify_store(store_path: Path) -> None:
    before = store_path.read_bytes()
    read_attempts(store_path)
    assert store_path.read_bytes() == before


def test_read_attempts_non_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"\x00not sqlite at all" * 100)
    with pytest.raises(StoreError, match="junk.sqlite"):
        read_attempts(path)


def test_write_jsonl_round_trip(store_path: Path, tmp_path: Path) -> None:
    rows = read_attempts(store_path)
    out = tmp_path / "data" / "attempts.jsonl"
    assert write_jsonl(rows, out) == 3
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert sorted(p.name for p in out.parent.iterdir()) == ["attempts.jsonl"]


def test_write_jsonl_failure_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "attempts.jsonl"

    def rows() -> Iterator[dict[str, int]]:
        yield {"a": 1}
        yield {"a": 2}
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_jsonl(rows(), out)
    assert list(tmp_path.iterdir()) == []


def test_write_jsonl_failure_keeps_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "attempts.jsonl"
    write_jsonl([{"old": True}], out)
    with pytest.raises(ValueError):
        write_jsonl([{"new": 1}, {"bad": float("nan")}], out)
    assert out.read_text(encoding="utf-8") == '{"old": true}\n'
    assert list(tmp_path.iterdir()) == [out]
