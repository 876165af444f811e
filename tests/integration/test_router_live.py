"""Routers end to end on the real embedded server: logs from the benchmark harness, a router
trained on them from the wide CSV and from the outcome store, evaluated, its policy tuned,
and the classify node starting each question where the router says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from effreason_agents.config import config_from_data, default_config_data
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.graph.nodes import Services
from router_training.models import fit_router
from router_training.table import OutcomeTable

pytestmark = pytest.mark.integration

EFFREASON = [sys.executable, "-m", "effreason_agents.cli"]


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(EFFREASON + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_train_eval_calibrate_and_route_from_harness_logs(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    env = cli_env()
    bench = _run(["bench", "--suite", "builtin", "--limit", "24", "--arms", "small:direct", "small:cot",
                  "--out", str(tmp_path / "bench"), "--json"], env, tmp_path)
    assert bench.returncode == 0, bench.stderr
    wide = tmp_path / "bench" / "outcomes_wide.csv"
    assert wide.is_file()

    r = _run(["router", "eval", "--data", str(wide), "--weak", "small:cot", "--strong", "small:direct", "--cv", "3",
              "--json", "--out", str(tmp_path / "eval")], env, tmp_path)
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert {"apgr", "cpt50", "cpt80", "auc", "n", "baselines"} <= set(ev) and ev["n"] == 24
    assert {"random", "oracle"} <= set(ev["baselines"])
    assert (tmp_path / "eval" / "pgr.png").stat().st_size > 0

    art = tmp_path / "router"
    t = _run(["router", "train", "--data", "store", "--model", "logistic", "--cv", "3", "--out", str(art), "--json"],
             env, tmp_path)
    assert t.returncode == 0, t.stderr
    trained = json.loads(t.stdout)
    assert trained["model"] == "logistic" and set(trained["arms"]) == {"small:direct", "small:cot"}
    card = json.loads((art / "card.json").read_text())
    assert card["training"]["n_prompts"] == 24 and card["training"]["data_sha256"]
    assert "logistic" in card["cv"]

    c = _run(["router", "calibrate", "--router", str(art), "--data", str(wide), "--cv", "3",
              "--max-mean-cost", "50", "--json"], env, tmp_path)
    assert c.returncode == 0, c.stderr
    tuned = json.loads(c.stdout)
    assert tuned["chosen"]["mean_cost"] <= 50
    assert json.loads((art / "card.json").read_text())["policy"]["target"].startswith("mean cost per query at most 50")

    ask = _run(["ask", "What is 2 + 3?", "--json"], cli_env(EFFREASON__router__artifact=str(art)), tmp_path)
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["attempts"][0]["arm"] in ("small:direct", "small:cot")


def test_classify_starts_where_the_router_says(tmp_path: Path, embedded_server: Any) -> None:
    prompts, correct = [], []
    for i in range(40):
        prompts.append(f"What is {i} + {i + 2}?")
        correct.append([1.0, 0.0])
        prompts.append(f"Spell the word number {i} backwards, letter by letter, then join them.")
        correct.append([0.0, 1.0])
    table = OutcomeTable(prompts, ["small:direct", "small:cot"], np.array(correct),
                         tokens=np.tile([10.0, 150.0], (len(prompts), 1)), source="test")
    art = fit_router(table, "logistic", seed=0).save(
        tmp_path / "r", {"policy": {"kind": "threshold", "tau": 0.6, "costs": {"small:direct": 10, "small:cot": 150}}})
    data = default_config_data({})
    data["ladder"] = ["small:direct", "small:cot"]
    data["store"] = {"path": str(tmp_path / "outcomes.sqlite")}
    data["router"] = {"artifact": str(art)}
    cfg = config_from_data(data)
    services = Services(cfg, environ={})
    try:
        graph = build_reasoning_graph(cfg, services=services)
        easy = graph.invoke({"question": "What is 4 + 7?"}, context={"log": False})
        spell = graph.invoke({"question": "Spell the word number 77 backwards, letter by letter, then join them."},
                             context={"log": False})
    finally:
        services.close()
    assert easy["result"]["arms_tried"][0] == "small:direct"
    assert easy["features"]["router"]["choice"] == "small:direct"
    assert spell["result"]["arms_tried"] == ["small:cot"]
    assert spell["features"]["router"]["p_correct"]["small:cot"] >= 0.6
