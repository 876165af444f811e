"""The ``sc`` strategy inside the reasoning graph, on the real embedded server: one attempt
that draws samples until the majority settles, charged for every sample, held in the ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from effreason_agents.config import config_from_data, default_config_data
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.adapters.ledger import Scope
from effreason_agents.graph.nodes import Services
from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.engine.sampling import majority
from effreason_agents.evaluation.tasks import answer_key

pytestmark = pytest.mark.integration


def _graph(tmp_path: Path, strategy: dict[str, Any], **budget: Any) -> tuple[Any, Services]:
    data = default_config_data({})
    data["strategies"]["sc-test"] = {"kind": "sc", "max_tokens": 16, "temperature": 0.7, **strategy}
    data["ladder"] = ["small:sc-test"]
    data["store"] = {"path": str(tmp_path / "outcomes.sqlite")}
    data["budget"] = budget
    cfg = config_from_data(data)
    services = Services(cfg, environ={})
    return build_reasoning_graph(cfg, services=services), services


def test_sc_arm_stops_early_and_counts_every_sample(tmp_path: Path, embedded_server: Any) -> None:
    graph, services = _graph(tmp_path, {"samples": 8, "sample_prompt": "direct", "stop_rule": "beta"})
    try:
        r = graph.invoke({"question": "What is 2 + 3?"}, context={"thread_id": "t-sc"})["result"]
        (a,) = r["attempts"]
        assert a["strategy"] == "sc-test" and a["samples_cap"] == 8
        drawn = a["samples"]
        assert 1 <= len(drawn) <= 8
        assert a["answer"] is not None and answer_key(a["answer"]) == majority(drawn)[0]  # votes by normal form
        sig = a["signals"]
        assert sig["agreement_share"] == pytest.approx(drawn.count(majority(drawn)[0]) / len(drawn))
        assert sig["distinct_answers"] == len(set(drawn) - {None})
        assert sig["answer_min_logprob"] is not None  # from the representative sample's logprobs
        assert a["output_tokens"] >= len(drawn)  # every sample paid for, at least one token each
        assert a["confidence_method"].startswith(("heuristic: majority share", "calibrated"))
        # the ledger committed exactly what the attempt reports, and holds nothing
        ledger = services.ledger
        assert ledger.spent(Scope("thread", "t-sc")).output_tokens == a["output_tokens"]
        assert ledger.reserved(Scope("thread", "t-sc")).output_tokens == 0
        store = OutcomeStore(tmp_path / "outcomes.sqlite")
        try:
            (row,) = store.attempts_for(r["request_id"])
            assert row.samples == drawn and row.samples_cap == 8
        finally:
            store.close()
    finally:
        services.close()


def test_sc_arm_that_cannot_fit_the_budget_is_not_run(tmp_path: Path, embedded_server: Any) -> None:
    # 8 samples × 16 output tokens cannot fit 40 output tokens: no call, budget_exhausted
    graph, services = _graph(tmp_path, {"samples": 8}, max_output_tokens=40)
    try:
        r = graph.invoke({"question": "What is 2 + 3?"}, context={"log": False})["result"]
        assert r["attempts"] == [] and r["status"] == "budget_exhausted"
        assert Decimal(r["total_cost_usd"]) == 0
    finally:
        services.close()
