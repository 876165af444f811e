"""``effreason calibrate``'s evaluation: the split by item, held-out scoring, threshold on
training items, the cascade report and the artifact it writes (synthetic logged rows)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from effreason_agents.adapters.calibrator import Calibrator, CalibratorError
from effreason_agents.config import config_from_data, default_config_data
from effreason_agents.errors import ConfigError
from effreason_agents.evaluation.tasks import load_suite
from effreason_agents.core.money import format_usd
from router_training.calibration_run import CalibrationPlan, _evaluate_strategy, heldout_ids, render_markdown


def plan(tmp_path: Path, **kw: Any) -> CalibrationPlan:
    cfg = config_from_data(default_config_data({}))
    items = load_suite("builtin", limit=20)
    return CalibrationPlan(cfg, items, kw.pop("tier", "small"), kw.pop("strategies", ["direct"]), kw.pop("strong", None),
                           tmp_path, **kw)


def synthetic(n: int, seed: int = 0) -> tuple[dict[str, dict], dict[str, dict]]:
    """Small-arm rows whose correctness follows two signals (each alone only partly), and a
    strong arm that is right 80% of the time at 10× the tokens."""
    rng = random.Random(seed)
    small, strong = {}, {}
    for i in range(n):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        p = 1 / (1 + math.exp(-(2 * a + 2 * b)))
        sid = f"item-{i:04d}"
        small[sid] = {
            "item_id": sid, "question": f"q{i}", "correct": rng.random() < p, "judged": i % 17 != 0,
            "signals": {"answer_min_logprob": a, "qtype_arithmetic": b, "truncated": 0.0},
            "cost_usd": 0.0, "output_tokens": 5,
        }
        strong[sid] = {"item_id": sid, "question": f"q{i}", "correct": rng.random() < 0.8, "judged": True,
                       "signals": {}, "cost_usd": 0.001, "output_tokens": 50}
    return small, strong


def test_heldout_split_is_by_item_and_stable() -> None:
    ids = [f"id-{i}" for i in range(1000)]
    held = heldout_ids(ids, 0.3, seed=0)
    assert 0.25 < len(held) / len(ids) < 0.35
    assert held == heldout_ids(list(reversed(ids)), 0.3, seed=0)  # order does not matter
    assert heldout_ids(ids + ["new"], 0.3, 0) - {"new"} == held  # adding items keeps the split
    assert held != heldout_ids(ids, 0.3, seed=1)


def test_combination_beats_each_single_signal_and_threshold_meets_target(tmp_path: Path) -> None:
    small, strong = synthetic(600)
    p = plan(tmp_path, max_escalation_rate=0.4)
    held = heldout_ids(list(small), p.holdout, p.seed)
    section, artifact = _evaluate_strategy(p, small, strong, held, "direct")
    assert section["n"] == sum(1 for i in held if small[i]["judged"])
    assert section["n_train"] == sum(1 for i in small if i not in held and small[i]["judged"])
    assert set(section["signals"]) == {"answer_min_logprob", "qtype_arithmetic"}  # constant 'truncated' dropped
    assert section["combined"]["auroc"] > section["best_single_auroc"] > 0.6
    for m in (*section["signals"].values(), section["combined"]):
        assert 0 <= m["ece"] <= 1 and 0 <= m["brier"] <= 1
    cas = section["cascade"]
    assert section["escalation_rate"] == cas["at_threshold"]["escalation_rate"]
    assert section["target"] == {"max_escalation_rate": 0.4}
    assert cas["always_small"]["output_tokens"] == 5 and cas["always_strong"]["output_tokens"] == 50
    assert [pt["threshold"] for pt in cas["curve"]] == [round(0.1 * i, 1) for i in range(11)]
    assert cas["curve"][0]["escalation_rate"] == pytest.approx(
        sum(1 for i in held if not small[i]["judged"]) / len(held))  # unjudged replies always escalate
    assert cas["curve"][-1]["accuracy"] == pytest.approx(cas["always_strong"]["accuracy"], abs=0.05)
    # the artifact the runtime loads
    cal = Calibrator(artifact)
    assert cal.threshold == section["threshold"] and cal.model == "SmolLM2-135M-Instruct"
    assert artifact["metrics"]["heldout"]["auroc"] == section["combined"]["auroc"]
    md = render_markdown({"suite": "builtin", "tier": "small", "model": "m", "items": 600, "holdout": 0.3, "seed": 0,
                          "strong_arm": "large:cod", "artifacts_dir": "out/calibrators",
                          "calibrators": [{**section, "artifact": "out/calibrators/small-direct.json"}]})
    assert "| **combined** |" in md and "escalation.calibrators" not in md and "calibrators = " in md
    # dollars by the one formatter: the small arm is free, the strong arm costs $0.001 per call
    assert "| always `small:direct` | 0% |" in md and " | $0 | 5.0 |" in md
    assert f" | {format_usd(cas['always_strong']['cost'], symbol=True)} | 50.0 |" in md and "| $0.0010 | 50.0 |" in md


def test_min_accuracy_target_picks_the_cheapest_threshold_reaching_it(tmp_path: Path) -> None:
    small, strong = synthetic(600, seed=3)
    p = plan(tmp_path, min_accuracy=0.7)
    held = heldout_ids(list(small), p.holdout, p.seed)
    section, _ = _evaluate_strategy(p, small, strong, held, "direct")
    assert section["target"] == {"min_accuracy": 0.7}
    assert 0 < section["threshold"] < 1


def test_an_unreachable_target_is_a_clear_error(tmp_path: Path) -> None:
    small, strong = synthetic(300)
    p = plan(tmp_path, min_accuracy=0.99)
    with pytest.raises(CalibratorError, match="no threshold meets"):
        _evaluate_strategy(p, small, strong, heldout_ids(list(small), 0.3, 0), "direct")


def test_one_class_only_is_a_clear_error(tmp_path: Path) -> None:
    small, strong = synthetic(200)
    for r in small.values():
        r["correct"] = False
    with pytest.raises(CalibratorError, match="needs both right and wrong answers"):
        _evaluate_strategy(plan(tmp_path), small, strong, heldout_ids(list(small), 0.3, 0), "direct")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"tier": "medium"}, "unknown tier 'medium'"),
        ({"tier": "large"}, "not enabled"),
        ({"strategies": ["nope"]}, "unknown strategy 'nope'"),
        ({"holdout": 1.0}, "--holdout"),
        ({"max_escalation_rate": 1.5}, "--max-escalation-rate"),
        ({"strong": "small:nope"}, "nope"),
    ],
)
def test_bad_plans_are_refused_before_any_model_call(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        plan(tmp_path, **kw)


def test_default_arms_are_the_tiers_ladder_strategies_plus_the_strong_arm(tmp_path: Path) -> None:
    p = plan(tmp_path, strategies=[])
    assert p.strategies == ["direct", "cot"]
    assert p.strong == "small:cot"  # no other tier enabled offline: the top arm of the ladder
    assert [a.name for a in p.arms] == ["small:direct", "small:cot"]
