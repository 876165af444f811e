"""Every strategy end to end on the embedded server, and a truncated reply handled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from effreason_agents.config import Config, config_from_data, default_config_data
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.graph.nodes import Services
from effreason_agents.adapters.store import OutcomeStore

pytestmark = pytest.mark.integration


def single_arm(tmp_path: Path, arm: str, **budget: Any) -> Config:
    data = default_config_data({})
    data["ladder"] = [arm]
    data["store"] = {"path": str(tmp_path / "outcomes.sqlite")}
    data["budget"] = budget
    return config_from_data(data)


@pytest.mark.parametrize("strategy", ["direct", "cod", "cod-fewshot", "cot", "concise-cot", "budget-cot"])
def test_each_strategy_end_to_end(tmp_path: Path, strategy: str, embedded_server: Any) -> None:
    cfg = single_arm(tmp_path, f"small:{strategy}")
    services = Services(cfg)
    try:
        graph = build_reasoning_graph(cfg, services=services)
        r = graph.invoke({"question": "What is 3 + 4?"}, context={"confidence_threshold": 0.0})["result"]
        first = r["attempts"][0]
        assert first["arm"] == f"small:{strategy}" and first["error"] is None
        assert first["output_tokens"] > 0 and first["finish_reason"] in ("stop", "length")
        if strategy == "budget-cot":
            assert first["budget_tokens"] and first["budget_method"] == "heuristic"
            assert first["max_tokens"] <= cfg.strategies["budget-cot"].max_tokens
        with OutcomeStore(cfg.store.resolved_path()) as store:
            (row,) = store.attempts_for(r["request_id"])[:1]
            assert row.strategy == strategy and row.output_tokens == first["output_tokens"]
    finally:
        services.close()


def test_truncated_reply_is_retried_and_marked(tmp_path: Path, embedded_server: Any) -> None:
    data = default_config_data({})
    data["ladder"] = ["small:cot"]
    data["strategies"]["cot"]["max_tokens"] = 8  # far too few for a chain of thought
    data["budget"] = {"on_truncation": "retry"}
    data["store"] = {"path": str(tmp_path / "outcomes.sqlite")}
    cfg = config_from_data(data)
    services = Services(cfg)
    try:
        r = build_reasoning_graph(cfg, services=services).invoke(
            {"question": "Explain step by step: what is 12 + 35?"})["result"]
        first = r["attempts"][0]
        assert first["finish_reason"] == "length" and first["truncated"] is True
        second = r["attempts"][1]
        assert second["retry_of"] == 0 and second["max_tokens"] == 16
        if second["truncated"]:  # still cut: never returned as answered
            assert r["status"] != "answered" and r["truncated"] is True
        with OutcomeStore(cfg.store.resolved_path()) as store:
            rows = store.attempts_for(r["request_id"])
            assert rows[0].truncated is True and rows[1].retry_of == 0
    finally:
        services.close()
