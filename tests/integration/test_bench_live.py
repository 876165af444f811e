"""The live benchmark end to end on the embedded server: report files, resume, refusals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

pytestmark = pytest.mark.integration

EFFREASON = [sys.executable, "-m", "effreason_agents.cli"]


def _bench(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(EFFREASON + ["bench", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)


def _count(db: Path, sql: str) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def test_bench_writes_every_report_file_and_resumes_without_double_counting(
    tmp_path: Path, cli_env: Callable[..., dict[str, str]]
) -> None:
    env = cli_env()
    out = tmp_path / "out"
    args = ["--suite", "builtin", "--arms", "small:direct", "small:cot", "--graph", "--out", str(out)]
    r = _bench(tmp_path, env, *args, "--limit", "3")
    assert r.returncode == 0, r.stderr
    for name in ("results.json", "report.md", "frontier.png", "run.json"):
        assert (out / name).is_file(), name
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "results.json").read_text())
    assert set(res["arms"]) == {"small:direct", "small:cot"}
    for m in [*res["arms"].values(), res["graph"]]:
        assert m["n"] == 3 and 0.0 <= m["accuracy"] <= 1.0 and m["mean_output_tokens"] > 0
        assert {"accuracy", "mean_output_tokens", "mean_cost_usd", "p50_latency_s", "n"} <= set(m)
    assert "escalation_rate" in res["graph"]
    assert {"oracle", "random"} <= set(res["baselines"])
    report = (out / "report.md").read_text()
    assert "small:direct" in report and "graph" in report

    db = tmp_path / "outcomes.sqlite"
    assert _count(db, "select count(*) from bench_results") == 9
    assert _count(db, "select count(*) from requests") == 9  # every bench row has its request

    # resume with a larger slice: only the 2 new items run, nothing is counted twice
    r = _bench(tmp_path, env, *args, "--limit", "5")
    assert r.returncode == 0, r.stderr
    assert _count(db, "select count(*) from bench_results") == 15
    assert _count(db, "select count(*) from requests") == 15
    res = json.loads((out / "results.json").read_text())
    assert res["graph"]["n"] == 5

    # the same command again runs nothing new
    r = _bench(tmp_path, env, *args, "--limit", "5")
    assert r.returncode == 0, r.stderr
    assert _count(db, "select count(*) from bench_results") == 15

    # a changed config is refused, unless forced
    changed = cli_env(EFFREASON_CONFIDENCE_THRESHOLD="0.9")
    r = _bench(tmp_path, changed, *args, "--limit", "5")
    assert r.returncode != 0 and "--force" in r.stderr
    r = _bench(tmp_path, changed, *args, "--limit", "5", "--force")
    assert r.returncode == 0, r.stderr

    # the fixed arms' results come out as a RouteLLM-style wide CSV, which replays offline
    wide = out / "outcomes_wide.csv"
    header = wide.read_text().splitlines()[0]
    assert header == "prompt,small:direct,small:cot,small:direct_response,small:cot_response"
    r = _bench(tmp_path, env, "--replay", str(wide), "--weak", "small:direct", "--strong", "small:cot",
               "--out", str(tmp_path / "replay"), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["kind"] == "replay" and rep["meta"]["n_items"] == 5
    assert "o200k" in rep["meta"]["token_count_method"]
    if "two_arm" in rep:  # only when the two arms' accuracies differ
        assert rep["baselines"]["random"]["apgr"] == pytest.approx(0.5)
    assert (tmp_path / "replay" / "results.json").is_file()
    # ... and so does the run straight from the outcome store
    r = _bench(tmp_path, env, "--replay", "store", "--weak", "small:direct", "--strong", "small:cot",
               "--out", str(tmp_path / "replay-store"), "--json")
    assert r.returncode == 0, r.stderr
    from_store = json.loads(r.stdout)
    assert from_store["meta"]["n_items"] == 5
    assert from_store["arms"]["small:direct"]["accuracy"] == rep["arms"]["small:direct"]["accuracy"]

    # effreason report re-renders from results.json alone
    (out / "report.md").unlink()
    (out / "frontier.png").unlink()
    r = subprocess.run(EFFREASON + ["report", str(out)], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "report.md").is_file() and (out / "frontier.png").is_file()


def test_bench_refuses_bad_requests_before_any_model_call(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    env = cli_env()
    r = _bench(tmp_path, env, "--suite", "builtin", "--arms", "small:nope", "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "small:direct" in r.stderr  # the valid arms are listed
    r = _bench(tmp_path, env, "--suite", "no-such-suite", "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "builtin" in r.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = _bench(tmp_path, env, "--data", str(empty), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "empty" in r.stderr.lower()
    assert not (tmp_path / "outcomes.sqlite").exists() or _count(tmp_path / "outcomes.sqlite", "select count(*) from requests") == 0
