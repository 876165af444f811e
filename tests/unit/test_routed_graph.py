"""The classify node with a trained router artifact: the router's start arm, its predictions
in the logged features, the configured policy override, and refusal of unusable artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router_training.models import fit_router
from router_training.table import OutcomeTable

from helpers import large_reply, small_reply

DATE_Q = "What date is 3 days after 2024-03-06?"


def _table() -> OutcomeTable:
    """small:direct is right on arithmetic and wrong on dates; large:cot is right on both."""
    prompts, correct = [], []
    for i in range(60):
        prompts.append(f"What is {i} + {i + 3}?")
        correct.append([1.0, 1.0])
        prompts.append(f"What date is {i % 9 + 1} days after 2024-0{i % 9 + 1}-1{i % 9}? ({i})")
        correct.append([0.0, 1.0])
    cost = np.tile([0.00001, 0.001], (len(prompts), 1))
    return OutcomeTable(prompts, ["small:direct", "large:cot"], np.array(correct), cost=cost, source="test")


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fitted = fit_router(_table(), "logistic", seed=0)
    return fitted.save(tmp_path_factory.mktemp("router") / "r",
                       {"policy": {"kind": "threshold", "tau": 0.6,
                                   "costs": {"small:direct": 0.00001, "large:cot": 0.001}}})


def test_router_sends_each_question_to_the_cheapest_arm_likely_right(make_graph: Any, router_dir: Path) -> None:
    h = make_graph(small=[small_reply("5", 0.9)], large=[large_reply("2024-03-09", 0.95)],
                   router={"artifact": str(router_dir)})
    easy = h.ask("What is 2 + 3?")
    assert easy["arms_tried"] == ["small:direct"]
    hard = h.ask(DATE_Q)
    assert hard["arms_tried"] == ["large:cot"]  # the router skipped the small arm
    assert len(h.small.calls) == 1 and len(h.large.calls) == 1
    rows = h.store().recent_requests(2)
    routed = {r.question: r.extra["features"]["router"] for r in rows}
    assert routed[DATE_Q]["choice"] == "large:cot"
    assert routed[DATE_Q]["p_correct"]["small:direct"] < 0.6 <= routed[DATE_Q]["p_correct"]["large:cot"]
    assert routed["What is 2 + 3?"]["choice"] == "small:direct"


def test_a_configured_tau_overrides_the_artifacts_policy(make_graph: Any, router_dir: Path) -> None:
    # tau 0: the cheapest arm always qualifies
    h = make_graph(small=[small_reply("2024-03-09", 0.9)], router={"artifact": str(router_dir), "tau": 0.0})
    assert h.ask(DATE_Q)["arms_tried"] == ["small:direct"]


def test_an_artifact_for_other_arms_is_refused_and_the_heuristic_starts(make_graph: Any, router_dir: Path) -> None:
    h = make_graph(small=[small_reply("5", 0.9)], ladder=("small:direct", "large:direct"),
                   router={"artifact": str(router_dir)})
    with pytest.warns(UserWarning, match="router not used: .*trained on arms"):
        r = h.ask(DATE_Q)
    assert r["arms_tried"] == ["small:direct"]  # heuristic start, the request still answers


def test_a_missing_artifact_is_refused_with_a_warning(make_graph: Any, tmp_path: Path) -> None:
    h = make_graph(small=[small_reply("5", 0.9)], router={"artifact": str(tmp_path / "nowhere")})
    with pytest.warns(UserWarning, match="router not used"):
        r = h.ask("What is 2 + 3?")
    assert r["status"] == "answered"
