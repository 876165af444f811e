"""The assess node with fitted calibrators: calibrated P(correct), the calibrator's threshold,
and the fall-backs to the heuristic (missing, broken, foreign or unusable artifacts)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from effreason_agents.adapters.calibrator import CalibratorWarning, builtin_dir, load_calibrators
from effreason_agents.config import default_config_data, config_from_data
from effreason_agents.core.confidence import HEURISTIC_METHOD

from helpers import large_reply, small_reply


def artifact(*, tier: str = "small", strategy: str = "direct", weight: float = 1.0, intercept: float = 0.0,
             features: tuple[str, ...] = ("answer_min_logprob",), threshold: float | None = None,
             model: str | None = None) -> dict[str, Any]:
    """A logistic calibrator: p = sigmoid(weight * x + intercept) on raw (unscaled) features."""
    a: dict[str, Any] = {
        "format": "effreason-calibrator",
        "version": 1,
        "tier": tier,
        "strategy": strategy,
        "kind": "logistic",
        "features": list(features),
        "params": {"mean": [0.0] * len(features), "scale": [1.0] * len(features),
                   "weights": [weight] * len(features), "intercept": intercept},
    }
    if threshold is not None:
        a["threshold"] = threshold
    if model is not None:
        a["model"] = model
    return a


def write(dir_: Path, name: str, data: Any) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    p = dir_ / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t))


def test_calibrated_confidence_replaces_the_heuristic(make_graph: Any, tmp_path: Path) -> None:
    # heuristic: 0.2 < 0.5 would escalate; the calibrator says p = sigmoid(ln 0.2 + 3) ≈ 0.80
    write(tmp_path / "cal", "small-direct.json", artifact(intercept=3.0))
    h = make_graph(small=[small_reply("5", 0.2)], large=[large_reply("6", 0.99)],
                   escalation={"calibrators": str(tmp_path / "cal")})
    r = h.ask()
    (attempt,) = r["attempts"]
    assert attempt["confidence"] == pytest.approx(sigmoid(math.log(0.2) + 3), abs=1e-6)
    assert attempt["confidence_method"] == "calibrated: logistic on 1 feature"
    assert attempt["threshold"] == 0.5
    assert r["arms_tried"] == ["small:direct"] and r["status"] == "answered"
    assert h.large.calls == []


def test_the_calibrators_threshold_applies_unless_one_is_set(make_graph: Any, tmp_path: Path) -> None:
    write(tmp_path / "cal", "small-direct.json", artifact(intercept=3.0, threshold=0.9))
    h = make_graph(small=[small_reply("5", 0.2)], large=[large_reply("6", 0.99)],
                   escalation={"calibrators": str(tmp_path / "cal")})
    r = h.ask()
    assert r["attempts"][0]["threshold"] == 0.9
    assert r["arms_tried"] == ["small:direct", "large:cot"]  # 0.80 < 0.9: escalated
    # a threshold given for the run wins over the artifact's
    h2 = make_graph(small=[small_reply("5", 0.2)], escalation={"calibrators": str(tmp_path / "cal")})
    r2 = h2.ask(context={"confidence_threshold": 0.7})
    assert r2["attempts"][0]["threshold"] == 0.7 and r2["arms_tried"] == ["small:direct"]


def test_a_strategy_wildcard_calibrator_applies_to_every_strategy(make_graph: Any, tmp_path: Path) -> None:
    write(tmp_path / "cal", "small-any.json", artifact(strategy="*", intercept=-5.0))
    h = make_graph(small=[small_reply("5", 0.9)], large=[large_reply("6", 0.99)],
                   escalation={"calibrators": str(tmp_path / "cal")})
    r = h.ask()
    assert r["attempts"][0]["confidence"] < 0.01  # calibrated low: escalates despite p(token) = 0.9
    assert r["arms_tried"] == ["small:direct", "large:cot"]
    assert r["attempts"][1]["confidence_method"] == f"{HEURISTIC_METHOD} (no calibrator for tier 'large' / strategy 'cot')"


def test_without_calibrators_the_output_says_heuristic(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)], escalation={"calibrators": "off"})
    r = h.ask()
    assert r["attempts"][0]["confidence_method"].startswith(HEURISTIC_METHOD)
    assert r["attempts"][0]["confidence"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("broken.json", "{not json", "not valid JSON"),
        ("foreign.json", {"format": "something-else"}, "not a calibrator artifact"),
        ("future.json", {**artifact(), "version": 99}, "version 99"),
        ("model.json", artifact(model="another-model"), "fitted on model 'another-model'"),
        ("tier.json", artifact(tier="medium"), "no tier 'medium'"),
    ],
)
def test_unusable_artifacts_fall_back_to_the_heuristic_with_a_warning(
    make_graph: Any, tmp_path: Path, name: str, content: Any, why: str
) -> None:
    write(tmp_path / "cal", name, content)
    h = make_graph(small=[small_reply("5", 0.9)], escalation={"calibrators": str(tmp_path / "cal")})
    with pytest.warns(UserWarning, match=why):
        r = h.ask()
    assert r["status"] == "answered" and r["answer"] == "5"
    assert r["attempts"][0]["confidence_method"].startswith(HEURISTIC_METHOD)


def test_features_the_tier_cannot_provide_are_refused(make_graph: Any, tmp_path: Path) -> None:
    # a tier without logprobs: a calibrator on logprob signals cannot apply
    write(tmp_path / "cal", "small-direct.json", artifact())
    plain = AIMessage(content="#### 5", usage_metadata={"input_tokens": 50, "output_tokens": 3, "total_tokens": 53},
                      response_metadata={"finish_reason": "stop", "model_name": "small-served"})
    h = make_graph(small=[plain], small_tier={"capabilities": {"logprobs": False}},
                   escalation={"calibrators": str(tmp_path / "cal")})
    with pytest.warns(UserWarning, match="needs features .*answer_min_logprob"):
        r = h.ask()
    assert r["status"] == "answered"
    assert r["attempts"][0]["confidence"] is None  # no logprobs, no calibrator: nothing to act on


def test_a_missing_directory_warns_and_uses_the_heuristic(make_graph: Any, tmp_path: Path) -> None:
    h = make_graph(small=[small_reply("5", 0.9)], escalation={"calibrators": str(tmp_path / "nowhere")})
    with pytest.warns(UserWarning, match="does not exist"):
        r = h.ask()
    assert r["attempts"][0]["confidence_method"].startswith(HEURISTIC_METHOD)


def test_builtin_calibrators_fit_only_the_embedded_default(make_graph: Any) -> None:
    # the test tiers serve "small-model": the shipped SmolLM2 calibrators are skipped, quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibratorWarning)
        h = make_graph(small=[small_reply("5", 0.9)])
        r = h.ask()
    assert r["attempts"][0]["confidence_method"].startswith(HEURISTIC_METHOD)


def test_the_shipped_calibrators_load_for_the_default_config() -> None:
    cfg = config_from_data(default_config_data({}))
    assert builtin_dir().is_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cals = load_calibrators(cfg)
    assert ("small", "direct") in cals
    cal = cals[("small", "direct")]
    assert cal.model == cfg.tiers["small"].model
    assert cal.threshold is not None and 0.0 <= cal.threshold <= 1.0
    assert cal.training["n"] > 0 and cal.metrics["heldout"]["auroc"] > 0.5


def verdict(p_yes: float) -> AIMessage:
    return AIMessage(
        content="yes" if p_yes >= 0.5 else "no",
        usage_metadata={"input_tokens": 30, "output_tokens": 1, "total_tokens": 31},
        response_metadata={"finish_reason": "length", "model_name": "small-served", "logprobs": {"content": [
            {"token": "yes" if p_yes >= 0.5 else "no", "logprob": math.log(max(p_yes, 1 - p_yes)),
             "top_logprobs": [{"token": "yes", "logprob": math.log(p_yes * 0.9)},
                              {"token": " No", "logprob": math.log((1 - p_yes) * 0.9)},
                              {"token": "maybe", "logprob": math.log(0.1)}]}]}},
    )


def test_self_verification_is_a_charged_signal(make_graph: Any, tmp_path: Path) -> None:
    write(tmp_path / "cal", "small-direct.json",
          artifact(features=("self_verify",), weight=10.0, intercept=-5.0))  # p = sigmoid(10 * p_yes - 5)
    h = make_graph(small=[small_reply("5", 0.9), verdict(0.2)], large=[large_reply("6", 0.99), verdict(0.9)],
                   escalation={"self_verify": True, "calibrators": str(tmp_path / "cal")})
    r = h.ask()
    first, second = r["attempts"]
    assert first["signals"]["self_verify"] == pytest.approx(0.2)
    assert first["confidence"] == pytest.approx(sigmoid(10 * 0.2 - 5), abs=1e-6)  # low: escalated
    assert (first["input_tokens"], first["output_tokens"]) == (50 + 30, 3 + 1)  # the check is charged
    assert "Proposed answer: 5" in str(h.small.calls[1][-1].content)
    assert h.small.settings[1]["max_tokens"] == 1
    assert second["signals"]["self_verify"] == pytest.approx(0.9)
    assert r["answer"] == "6"


def test_self_verification_is_off_by_default(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("5", 0.9)])
    r = h.ask()
    assert r["attempts"][0]["signals"]["self_verify"] is None
    assert len(h.small.calls) == 1
