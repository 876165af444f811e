"""End to end against the real embedded llama.cpp server, over HTTP, with real SQLite."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

pytestmark = pytest.mark.integration

EFFREASON = [sys.executable, "-m", "effreason_agents.cli"]



def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(EFFREASON + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def remote_server():
    """A second embedded server in its own process, standing in for a remote tier."""
    port = _free_port()
    proc = subprocess.Popen(
        EFFREASON + ["serve-local", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("EFFREASON")},
    )
    try:
        deadline = time.monotonic() + 90
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if "http://" in line or proc.poll() is not None:
                break
        assert f":{port}" in line, f"serve-local did not report its address: {line!r}"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_ask_json_end_to_end(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    r = _run(["ask", "What is 2 + 3?", "--json"], cli_env(), tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) >= {"answer", "escalated", "total_cost_usd", "total_output_tokens", "attempts"}
    assert doc["total_output_tokens"] > 0
    assert doc["attempts"], doc
    for a in doc["attempts"]:
        assert set(a) >= {"tier", "model", "strategy", "input_tokens", "output_tokens", "cost_usd", "latency_s",
                          "confidence", "finish_reason"}
        assert a["tier"] == "small"
        assert a["input_tokens"] > 0 and a["output_tokens"] > 0
        assert a["confidence"] is not None and 0.0 <= a["confidence"] <= 1.0
        assert a["finish_reason"] in ("stop", "length")
    assert doc["escalated"] == (len(doc["attempts"]) > 1)

    db = tmp_path / "outcomes.sqlite"
    req = _rows(db, "select request_id, question, total_output_tokens, escalated from requests")
    assert req == [(doc["request_id"], "What is 2 + 3?", doc["total_output_tokens"], int(doc["escalated"]))]
    atts = _rows(db, "select output_tokens, signals, logprobs from attempts order by attempt_index")
    assert [a[0] for a in atts] == [a["output_tokens"] for a in doc["attempts"]]
    for out_tokens, signals, logprobs in atts:  # logprobs were captured and turned into signals
        assert json.loads(signals)["answer_min_logprob"] is not None
        tokens = json.loads(logprobs)
        assert len(tokens) == out_tokens or len(tokens) == out_tokens - 1  # llama.cpp may omit the EOS token
        assert all(t["top"] and t["logprob"] <= 0 for t in tokens)

    tail = _run(["log", "tail", "--json"], cli_env(), tmp_path)
    assert tail.returncode == 0, tail.stderr
    assert json.loads(tail.stdout)[0]["request_id"] == doc["request_id"]


def test_escalation_reaches_remote_tier(tmp_path: Path, remote_server: str, cli_env: Callable[..., dict[str, str]]) -> None:
    env = cli_env(OPENAI_API_KEY="sk-local-test", OPENAI_BASE_URL=remote_server)
    # threshold 1.0: no answer is ever confident enough, so the ladder is climbed to the top
    r = _run(["ask", "What is 4 + 4?", "--json", "--threshold", "1.0"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    tiers = [a["tier"] for a in doc["attempts"]]
    assert tiers[0] == "small" and "large" in tiers, tiers
    assert doc["escalated"] is True
    large = [a for a in doc["attempts"] if a["tier"] == "large"]
    for a in large:
        assert a["error"] is None and a["output_tokens"] > 0
        # priced with the default large tier's rates ($0.15 / $0.60 per 1M)
        assert a["cost_usd"] == pytest.approx((a["input_tokens"] * 0.15 + a["output_tokens"] * 0.60) / 1e6)
    assert doc["total_cost_usd"] > 0
    assert doc["answer"] is not None


def test_remote_tier_down_falls_back(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    closed = _free_port()  # nothing listens here
    env = cli_env(OPENAI_API_KEY="sk-local-test", OPENAI_BASE_URL=f"http://127.0.0.1:{closed}/v1")
    # a hard question starts on the large tier, which is down: the request answers from the small tier
    q = ("A train leaves at 3 pm at 60 km per hour. A second train leaves the same station at 4 pm at 80 km per "
         "hour on the same track. How many hours after 4 pm does the second train catch up?")
    r = _run(["ask", q, "--json"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    first = doc["attempts"][0]
    assert first["tier"] == "large" and first["error"] and "connect" in first["error"]
    assert first["output_tokens"] == 0 and first["cost_usd"] == 0
    assert [a["tier"] for a in doc["attempts"][1:]] and all(a["tier"] == "small" for a in doc["attempts"][1:])
    assert doc["answer"] is not None
    db = tmp_path / "outcomes.sqlite"
    errors = _rows(db, "select tier, error from attempts where error is not null")
    assert errors and errors[0][0] == "large"
    assert _rows(db, "select count(*) from requests") == [(1,)]


def test_bad_questions_are_refused_before_any_model_call(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    env = cli_env()
    for q in ["", "   \n\t "]:
        r = _run(["ask", q, "--json"], env, tmp_path, timeout=60)
        assert r.returncode == 2 and "empty" in r.stderr
    long_q = "Add these numbers: " + " + ".join(str(i) for i in range(3000))
    r = _run(["ask", long_q], env, tmp_path)
    assert r.returncode == 2 and "too long" in r.stderr
    assert not (tmp_path / "outcomes.sqlite").exists() or _rows(tmp_path / "outcomes.sqlite", "select count(*) from requests") == [(0,)]


def test_ctrl_c_leaves_no_half_written_rows(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    env = cli_env()
    proc = subprocess.Popen(
        EFFREASON + ["ask", "Write a long step by step explanation of how to add 123 and 456.", "--threshold", "1.0"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(4.0)  # imports done, the server is up and the graph is mid-request (two cot attempts take longer)
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("effreason ask did not stop on Ctrl-C")
    # 130: the CLI caught the interrupt; -SIGINT: it arrived outside the CLI's handler; 0: it finished first
    assert proc.returncode in (0, 130, -signal.SIGINT)
    db = tmp_path / "outcomes.sqlite"
    if db.exists():
        # either the request completed (all rows) or nothing of it was written
        for (rid, n_arms) in _rows(db, "select request_id, json_array_length(arms_tried) from requests"):
            assert _rows(db, f"select count(*) from attempts where request_id = '{rid}'") == [(n_arms,)]
        orphans = _rows(db, "select count(*) from attempts where request_id not in (select request_id from requests)")
        assert orphans == [(0,)]
