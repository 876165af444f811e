"""The cascade scorer end to end on the real embedded server: a scorer fitted on graded
replies and saved, loaded through the configuration, and the cheap arm's real answer judged
by it — kept when the threshold allows, escalated when it does not — with the scorer's
value and the calibrated confidence both in the attempt's signals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from effreason_agents.adapters.scorer import CALIBRATED_SIGNAL, SCORER_SIGNAL, CascadeScorer
from effreason_agents.config import config_from_data, default_config_data
from effreason_agents.core.features import answer_type_of
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.graph.nodes import Services
from router_training.cascade import CascadeData, fit_scorer

pytestmark = pytest.mark.integration

CHEAP, NEXT = "small:direct", "small:cot"


def _graded_replies(n: int = 60) -> CascadeData:
    """Sums answered by the cheap arm; it is wrong on every third, and then its arithmetic is off."""
    prompts, replies, weak = [], [], []
    for i in range(n):
        a, b = 3 + i, 11 + 2 * i
        wrong = i % 3 == 0
        shown = a + b + (2 if wrong else 0)
        prompts.append(f"What is {a} + {b}?")
        replies.append(f"{a} + {b} = {shown}\n#### {shown}" if i % 2 else f"The answer is {shown}.")
        weak.append(not wrong)
    return CascadeData(prompts, replies, np.array(weak), np.ones(n, dtype=bool), CHEAP, NEXT, source="test")


def test_the_cheap_answer_is_scored_then_kept_or_escalated(tmp_path: Path, embedded_server: Any) -> None:
    art = fit_scorer(_graded_replies(), grid_c=(0.3,), grid_text=(0.0, 3.0)).save(tmp_path / "scorer")
    scorer = CascadeScorer.load(art)
    data = default_config_data({})
    data["ladder"] = [CHEAP, NEXT]
    data["store"] = {"path": str(tmp_path / "outcomes.sqlite")}
    data["escalation"] = {**data.get("escalation", {}), "scorer": str(art)}
    services = Services(config_from_data(data), environ={})
    question = "What is 2 + 3?"
    try:
        assert services.scorer is not None
        graph = build_reasoning_graph(services.config, services=services)
        kept = graph.invoke({"question": question}, context={"log": False, "confidence_threshold": 0.0})
        escalated = graph.invoke({"question": question}, context={"log": False, "confidence_threshold": 1.0})
    finally:
        services.close()

    for state in (kept, escalated):
        first = state["result"]["attempts"][0]
        assert first["arm"] == CHEAP
        p = first["signals"][SCORER_SIGNAL]
        assert 0.0 <= p <= 1.0
        assert CALIBRATED_SIGNAL in first["signals"]  # the calibrated value is kept apart
        assert first["confidence"] == pytest.approx(p, abs=1e-6)
        assert first["confidence_method"] == "cascade scorer"
        # the run time scored the real reply exactly as the artifact scores it offline
        answer_type = answer_type_of((state.get("features") or {}).get("type"))
        assert p == pytest.approx(scorer.predict(question, first["raw_text"], first["signals"],
                                                 answer_type=answer_type), abs=1e-9)

    # threshold 1: no P(right) reaches it, so the cheap answer is escalated; the next arm is not scored
    tried = escalated["result"]["arms_tried"]
    assert tried[:2] == [CHEAP, NEXT]
    assert SCORER_SIGNAL not in escalated["result"]["attempts"][1]["signals"]
    # threshold 0: the scored answer is kept (unless the reply had no answer or was cut off)
    first = kept["result"]["attempts"][0]
    if first["answer"] is not None and not first["truncated"]:
        assert kept["result"]["arms_tried"] == [CHEAP]
