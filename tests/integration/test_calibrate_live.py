"""Calibrated confidence against the real embedded server: ``effreason calibrate`` end to end,
and the graph escalating on a low calibrated P(correct) but not on a high one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from effreason_agents.adapters.calibrator import Calibrator
from effreason_agents.config import config_from_data, default_config_data
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.graph.nodes import Services

pytestmark = pytest.mark.integration

EFFREASON = [sys.executable, "-m", "effreason_agents.cli"]


def test_calibrate_fits_reports_and_the_graph_uses_it(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    conf = tmp_path / "effreason.toml"
    conf.write_text('[strategies.concise-cot]\nkind = "concise-cot"\nmax_tokens = 32\n')
    out = tmp_path / "cal"
    args = ["calibrate", "--suite", "builtin", "--limit", "40", "--tier", "small", "--strategy", "direct",
            "--strong", "small:concise-cot", "--max-escalation-rate", "0.5", "--out", str(out), "--json",
            "--config", str(conf)]
    p = subprocess.run(EFFREASON + args, env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert {"n", "signals", "combined", "threshold", "escalation_rate"} <= set(report)
    assert report["n"] > 0 and report["signals"]
    for m in report["signals"].values():
        assert set(m) == {"auroc", "ece"}
    assert set(report["combined"]) == {"auroc", "ece", "brier"}
    assert 0.0 <= report["threshold"] <= 1.0 and report["escalation_rate"] <= 0.5 + 1e-9
    (section,) = report["calibrators"]
    assert section["n"] + section["n_train"] <= 40
    artifact = out / "calibrators" / "small-direct.json"
    cal = Calibrator.load(artifact)
    assert cal.tier == "small" and cal.strategy == "direct" and cal.model == "SmolLM2-135M-Instruct"
    assert (out / "calibration.md").read_text().count("| **combined** |") == 1

    # rerunning resumes: nothing is asked again, same figures
    again = subprocess.run(EFFREASON + args, env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["combined"] == report["combined"]

    ask = subprocess.run(EFFREASON + ["ask", "What is 2 + 3?", "--json", "--config", str(conf)],
                         env=cli_env(EFFREASON__escalation__calibrators=str(out / "calibrators")),
                         cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert ask.returncode == 0, ask.stderr
    first = json.loads(ask.stdout)["attempts"][0]
    assert first["confidence_method"].startswith("calibrated: "), first
    assert first["threshold"] == pytest.approx(cal.threshold)


def _artifact(intercept: float) -> dict[str, Any]:
    return {"format": "effreason-calibrator", "version": 1, "tier": "small", "strategy": "direct",
            "kind": "logistic", "features": ["answer_min_logprob"], "model": "SmolLM2-135M-Instruct",
            "params": {"mean": [0.0], "scale": [1.0], "weights": [0.5], "intercept": intercept}, "threshold": 0.5}


@pytest.mark.parametrize(("intercept", "escalates"), [(8.0, False), (-8.0, True)])
def test_low_calibrated_confidence_escalates_and_high_does_not(
    tmp_path: Path, embedded_server: Any, intercept: float, escalates: bool
) -> None:
    d = tmp_path / "cals"
    d.mkdir()
    (d / "small-direct.json").write_text(json.dumps(_artifact(intercept)))
    data = default_config_data({})
    data["store"] = {"path": str(tmp_path / "outcomes.sqlite")}
    data["escalation"] = {"calibrators": str(d)}
    cfg = config_from_data(data)
    services = Services(cfg, environ={})
    try:
        graph = build_reasoning_graph(cfg, services=services)
        r = graph.invoke({"question": "What is 2 + 3?"}, context={"log": False})["result"]
    finally:
        services.close()
    first = r["attempts"][0]
    assert first["confidence_method"] == "calibrated: logistic on 1 feature"
    assert (first["confidence"] < 0.5) is escalates
    assert r["escalated"] is escalates
    assert r["arms_tried"][0] == "small:direct"
    if escalates:
        assert r["arms_tried"][1] == "small:cot"
