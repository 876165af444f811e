"""The ``bon`` strategy (Best-of-N with early rejection) on the real embedded server: candidates
continued round after round through assistant prefill, the lowest partials dropped, one
attempt charged for every token and held at its worst case in the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from effreason_agents.adapters.ledger import Scope
from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.config import config_from_data, default_config_data
from effreason_agents.core.prompts import build_prompt
from effreason_agents.engine.runner import prompting
from effreason_agents.engine.sampling import best_of_n, bon_input_bound
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.graph.nodes import ReasoningNodes, Services

pytestmark = pytest.mark.integration

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def _config(tmp_path: Path, **strategy: Any) -> Any:
    data = default_config_data({})
    data["strategies"]["bon-test"] = {"kind": "bon", "max_tokens": 48, "samples": 4, "sample_prompt": "cot",
                                      "temperature": 0.8, "round_tokens": 16, "reject_fraction": 0.5, **strategy}
    data["ladder"] = ["small:bon-test"]
    data["store"] = {"path": str(tmp_path / "outcomes.sqlite")}
    return config_from_data(data)


def test_best_of_n_continues_partials_and_drops_the_lowest(tmp_path: Path, embedded_server: Any) -> None:
    cfg = _config(tmp_path)
    services = Services(cfg, environ={})
    try:
        client = services.clients["small"]
        strategy = cfg.strategies["bon-test"]
        prompt = build_prompt(prompting(strategy), QUESTION, client.tier.capabilities)
        r = best_of_n(client, prompt.messages, question=QUESTION, max_tokens=48, samples=4, round_tokens=16,
                      reject_fraction=0.5, temperature=0.8, stop=prompt.stop)
        assert r.winner is not None and r.winner_score is not None and r.winner_score <= 0
        # a candidate still running after round 1 was continued from its partial text
        assert r.rounds >= 2 and r.requests > 4
        assert any(c.requests >= 2 and c.output_tokens > 16 for c in r.candidates)
        assert r.rejected_per_round and len(r.rejected_per_round[0]) in (0, 1, 2)
        dropped = [i for idx in r.rejected_per_round for i in idx]
        assert all(r.candidates[i].state == "rejected" for i in dropped)
        assert r.output_tokens == sum(c.output_tokens for c in r.candidates)
        assert all(c.output_tokens <= 48 for c in r.candidates)
        assert r.input_tokens <= bon_input_bound(client.prompt_bound(prompt.messages), 48, 16, 4)
    finally:
        services.close()


def test_bon_arm_in_the_graph_is_held_and_settled(tmp_path: Path, embedded_server: Any) -> None:
    cfg = _config(tmp_path)
    services = Services(cfg, environ={})
    try:
        graph = build_reasoning_graph(cfg, services=services)
        r = graph.invoke({"question": QUESTION}, context={"thread_id": "t-bon"})["result"]
        (a,) = r["attempts"]
        assert a["strategy"] == "bon-test" and a["samples_cap"] == 4 and len(a["samples"]) == 4
        sig = a["signals"]
        assert sig["bon_candidates"] == 4 and "bon_score" in sig and sig["bon_rounds"] >= 1
        tokens = [sig[f"bon_tokens_c{i}"] for i in range(4)]
        assert a["output_tokens"] == sum(tokens)
        ledger = services.ledger
        spent = ledger.spent(Scope("thread", "t-bon"))
        assert spent.output_tokens == a["output_tokens"]
        assert spent.total_tokens == a["input_tokens"] + a["output_tokens"]
        assert ledger.reserved(Scope("thread", "t-bon")).total_tokens == 0
        (arm,) = ReasoningNodes(services).plan_arms(QUESTION)
        assert a["input_tokens"] <= arm["input_tokens_bound"]  # the hold covered every re-sent prompt
        store = OutcomeStore(tmp_path / "outcomes.sqlite")
        try:
            (row,) = store.attempts_for(r["request_id"])
            assert row.signals["bon_candidates"] == 4
        finally:
            store.close()
    finally:
        services.close()
