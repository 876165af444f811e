"""Replay: loading logged outcomes (RouteLLM wide CSV, the outcome store) through the shared
outcome readers with complete=True, and evaluating routing policies offline. Expected
values are computed by hand (see test_metrics for the curves of the same weak/strong pair)."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from effreason_agents.core.features import classify_difficulty
from effreason_agents.config import Config, config_from_data, default_config_data
from effreason_agents.errors import EffReasonError
from effreason_agents.adapters.store import AttemptRecord, BenchResult, BenchRun, OutcomeStore, RequestRecord
from effreason_agents.evaluation.metrics import cost_accuracy_hull, two_arm_summary
from effreason_agents.evaluation.outcomes import OutcomeDataError, OutcomeTable
from effreason_agents.evaluation.replay import (
    TOKENS_LOGGED,
    TOKENS_NONE,
    TOKENS_O200K,
    ReplayError,
    load_store_table,
    load_wide_csv,
    replay,
    router_scores,
)

approx = pytest.approx

# weak = tiny-model, strong = gpt-4o-mini: per-item gains 0 0 0 -1 +1 +1 +1 +1 +1 0
WEAK = [True, True, True, True, False, False, False, False, False, False]
STRONG = [True, True, True, False, True, True, True, True, True, False]
MYSTERY = [False] * 9 + [True]
# Spellings RouteLLM files (and pandas) use for booleans.
SPELL_TRUE = ["True", "true", "1", "1.0", "TRUE"]
SPELL_FALSE = ["False", "false", "0", "0.0", "FALSE"]
PROMPTS = [
    "What is 2 + 2?",
    "What is 3 + 5?",
    "Is 7 larger than 3?",
    "What is 9 - 4?",
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A train travels 60 km per hour for 3 hours, then 40 km per hour for 2 hours. How far does it go?",
    "Sara reads 12 pages each day. How many pages does she read in 2 weeks?",
    "If a shirt costs $20 and is 25 percent off, what is the price?",
    "Prove that the sum of two even numbers is even.",
    "What is the capital of France?",
]
# o200k token counts (checked against bpe-openai): "4" -> 1, "hello world" -> 2, "The answer is 4." -> 6
TINY_RESPONSES = ["4", "hello world"] * 5
TINY_TOKENS = [1, 2] * 5
STRONG_RESPONSE = "The answer is 4."
STRONG_TOKENS = 6


def spell(value: bool, i: int) -> str:
    return (SPELL_TRUE if value else SPELL_FALSE)[i % 5]


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def wide_csv(tmp_path: Path) -> Path:
    header = ["", "prompt", "tiny-model", "gpt-4o-mini", "mystery-model", "category",
              "tiny-model_response", "gpt-4o-mini_response", "examples"]
    rows = [
        [i, PROMPTS[i], spell(WEAK[i], i), spell(STRONG[i], i + 1), spell(MYSTERY[i], i + 2), "math",
         TINY_RESPONSES[i], STRONG_RESPONSE, "Q: 1 + 1? A: 2"]
        for i in range(10)
    ]
    # a repeated prompt (row 11) with different grades: dropped, the first row stands
    rows.append([10, PROMPTS[1], "False", "False", "True", "math", "x", "y", ""])
    return write_csv(tmp_path / "gsm8k_responses.csv", header, rows)


@pytest.fixture
def priced_config() -> Config:
    data = default_config_data({})
    data["tiers"]["small"]["model"] = "tiny-model"
    data["tiers"]["small"]["price_input_per_1m"] = "0.10"
    data["tiers"]["small"]["price_output_per_1m"] = "0.40"
    # the default large tier is gpt-4o-mini at 0.15 / 0.60 per 1M tokens
    return config_from_data(data)


def o200k(text: str) -> int:
    from bpe_openai import get_encoding

    return len(get_encoding("o200k_base").encode(text))


def labels(t: OutcomeTable) -> dict[str, list[bool]]:
    """Each arm's labels as booleans; a missing or fractional label fails the lookup."""
    return {a: [{1.0: True, 0.0: False}[v] for v in t.correct[:, j].tolist()] for j, a in enumerate(t.arms)}


def assert_plain(x: Any) -> None:
    """Only JSON-plain Python types, no numpy scalars or Decimals."""
    if isinstance(x, dict):
        for k, v in x.items():
            assert type(k) is str
            assert_plain(v)
    elif isinstance(x, list):
        for v in x:
            assert_plain(v)
    else:
        assert x is None or type(x) in (bool, int, float, str), f"{x!r} is {type(x)}"


# -- the wide CSV -------------------------------------------------------------------------


def test_load_wide_csv(wide_csv: Path) -> None:
    t = load_wide_csv(wide_csv)
    assert isinstance(t, OutcomeTable)
    assert t.prompts == PROMPTS
    assert t.arms == ["tiny-model", "gpt-4o-mini", "mystery-model"]
    assert labels(t) == {"tiny-model": WEAK, "gpt-4o-mini": STRONG, "mystery-model": MYSTERY}
    assert t.responses["tiny-model"] == TINY_RESPONSES
    assert t.responses["gpt-4o-mini"] == [STRONG_RESPONSE] * 10
    assert "mystery-model" not in t.responses
    # the responses' o200k token counts, counted once when the file is read
    assert t.token_method == TOKENS_O200K
    assert t.tokens is not None and t.tokens[:, 0].tolist() == TINY_TOKENS
    assert t.tokens[:, 1].tolist() == [STRONG_TOKENS] * 10 and all(math.isnan(v) for v in t.tokens[:, 2])
    assert t.cost is None and t.run_id is None and t.config_version is None
    assert t.source == str(wide_csv)
    assert any("category" in n for n in t.notes)
    assert any("1 repeated prompts dropped" in n and "11 (same as row 2)" in n for n in t.notes)


def test_replay_refuses_tables_without_a_boolean_for_every_cell(tmp_path: Path) -> None:
    t = OutcomeTable(["q1", "q2", "q3"], ["a", "b"], [[1.0, 0.0], [0.5, 1.0], [0.0, math.nan]], source="averaged")
    with pytest.raises(ReplayError, match=r"averaged: replay needs a right-or-wrong label .*: a \(1 of 3\), b \(1 of 3\)"):
        replay(t, "a", "b")


def test_replay_wide_csv(wide_csv: Path, priced_config: Config) -> None:
    t = load_wide_csv(wide_csv)
    r = replay(t, "tiny-model", "gpt-4o-mini", config=priced_config)
    assert_plain(r)
    json.dumps(r)
    assert r["kind"] == "replay"
    meta = r["meta"]
    assert meta["suite"] == str(wide_csv) and meta["n_items"] == 10
    assert meta["token_count_method"] == TOKENS_O200K
    assert meta["config_version"] == priced_config.version()
    assert meta["command"] == ""

    arms = r["arms"]
    assert set(arms) == {"tiny-model", "gpt-4o-mini", "mystery-model"}
    assert arms["tiny-model"]["accuracy"] == 0.4
    assert arms["gpt-4o-mini"]["accuracy"] == 0.8
    assert arms["mystery-model"]["accuracy"] == 0.1
    assert arms["tiny-model"]["n"] == 10
    assert (arms["tiny-model"]["tier"], arms["gpt-4o-mini"]["tier"], arms["mystery-model"]["tier"]) == ("small", "large", "")
    assert arms["tiny-model"]["p50_latency_s"] is None and arms["tiny-model"]["p90_latency_s"] is None

    # tokens counted from the responses
    assert arms["tiny-model"]["mean_output_tokens"] == 1.5
    assert arms["gpt-4o-mini"]["mean_output_tokens"] == STRONG_TOKENS
    assert arms["tiny-model"]["tokens_per_correct"] == approx(15 / 4)
    assert arms["mystery-model"]["mean_output_tokens"] is None
    assert r["distributions"]["output_tokens"] == {"tiny-model": TINY_TOKENS, "gpt-4o-mini": [STRONG_TOKENS] * 10}
    assert [o200k(x) for x in TINY_RESPONSES] == TINY_TOKENS and o200k(STRONG_RESPONSE) == STRONG_TOKENS

    # prices: exact Decimal cost of (prompt tokens, response tokens) per item
    m = Decimal(1_000_000)
    tiny_cost = [(Decimal(o200k(q)) * Decimal("0.10") + Decimal(n) * Decimal("0.40")) / m for q, n in zip(PROMPTS, TINY_TOKENS)]
    gpt_cost = [(Decimal(o200k(q)) * Decimal("0.15") + Decimal(STRONG_TOKENS) * Decimal("0.60")) / m for q in PROMPTS]
    assert arms["tiny-model"]["mean_cost_usd"] == approx(float(sum(tiny_cost) / 10), rel=1e-12)
    assert arms["gpt-4o-mini"]["mean_cost_usd"] == approx(float(sum(gpt_cost) / 10), rel=1e-12)
    assert arms["mystery-model"]["mean_cost_usd"] == 0.0
    assert any(n.startswith("mystery-model: no logged cost") for n in meta["notes"])

    # two models: the hand-computed curves of this pair
    two = r["two_arm"]
    assert (two["weak"], two["strong"], two["acc_weak"], two["acc_strong"]) == ("tiny-model", "gpt-4o-mini", 0.4, 0.8)
    assert set(two["curves"]) == {"random", "oracle", "router"}
    b = r["baselines"]
    assert (b["random"]["apgr"], b["random"]["cpt50"], b["random"]["cpt80"]) == approx((0.5, 0.5, 0.8))
    assert (b["oracle"]["apgr"], b["oracle"]["cpt50"], b["oracle"]["cpt80"]) == approx((0.925, 0.2, 0.32))
    assert r["router"]["name"] == "heuristic-difficulty"
    assert set(r["router"]) == {"name", "apgr", "cpt50", "cpt80"}

    # many arms: the oracle picks tiny (cheaper) on items 0-3, gpt-4o-mini on 4-8, the free mystery-model on 9
    assert b["oracle"]["accuracy"] == 1.0
    assert b["oracle"]["mean_cost_usd"] == approx(float((sum(tiny_cost[:4]) + sum(gpt_cost[4:9])) / 10), rel=1e-12)
    assert b["oracle"]["mean_output_tokens"] is None  # mystery-model has no token counts
    assert b["random"]["accuracy"] == approx(1.3 / 3)
    assert b["random"]["mean_cost_usd"] == approx(float((sum(tiny_cost) + sum(gpt_cost)) / 30), rel=1e-12)
    hull_in = [(arms[a]["mean_cost_usd"], arms[a]["accuracy"]) for a in arms]
    assert r["hull"]["x"] == "mean_cost_usd"
    assert r["hull"]["points"] == [list(p) for p in cost_accuracy_hull(hull_in)]
    assert 0.1 < r["hull"]["area"] < 0.8


def test_replay_router_scores(wide_csv: Path) -> None:
    t = load_wide_csv(wide_csv)
    scores = router_scores(t.prompts)
    assert len(scores) == 10 and all(type(s) is float for s in scores)
    # the heuristic difficulty classifier's score: one-step sums below word problems
    assert scores == [classify_difficulty(q)[1]["score"] for q in t.prompts]
    assert scores[0] < scores[4] and scores[0] < scores[8]
    default = replay(t, "tiny-model", "gpt-4o-mini")
    expected = two_arm_summary(WEAK, STRONG, scores)
    assert default["router"] == approx({"name": "heuristic-difficulty", **expected["router"]})
    # a perfect router (scores = gain of the strong model per item) matches the oracle
    gains = [int(s) - int(w) for w, s in zip(WEAK, STRONG)]
    r = replay(t, "tiny-model", "gpt-4o-mini", scores=gains, router_name="perfect")
    assert r["router"] == approx({"name": "perfect", "apgr": 0.925, "cpt50": 0.2, "cpt80": 0.32})
    assert r["meta"]["config_version"] is None
    with pytest.raises(ReplayError, match="3 router scores for 10 prompts"):
        replay(t, "tiny-model", "gpt-4o-mini", scores=[1.0, 2.0, 3.0])


def test_replay_without_prices_or_responses(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "plain.csv", ["prompt", "weak-m", "strong-m"],
                     [[q, str(w), str(s)] for q, w, s in zip(PROMPTS, WEAK, STRONG)])
    r = replay(load_wide_csv(path), "weak-m", "strong-m")
    assert r["meta"]["token_count_method"] == TOKENS_NONE
    assert r["arms"]["weak-m"]["mean_output_tokens"] is None
    assert r["arms"]["weak-m"]["mean_cost_usd"] == 0.0
    assert "hull" not in r  # neither costs nor tokens to draw it over
    assert r["distributions"]["output_tokens"] == {}
    assert r["baselines"]["oracle"]["apgr"] == approx(0.925)
    assert_plain(r)


def test_replay_equal_accuracies_notes_instead_of_pgr(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tie.csv", ["prompt", "a", "b", "a_response", "b_response"],
                     [["q1", "True", "False", "1", "one"], ["q2", "False", "True", "2", "two"]])
    r = replay(load_wide_csv(path), "a", "b")
    assert "two_arm" not in r and "router" not in r
    assert "apgr" not in r["baselines"]["random"]
    assert any("no PGR/APGR between a and b" in n and "same accuracy" in n for n in r["meta"]["notes"])
    assert r["hull"]["x"] == "mean_output_tokens"
    assert r["baselines"]["oracle"]["accuracy"] == 1.0


def test_unknown_model_names_list_the_models(wide_csv: Path) -> None:
    t = load_wide_csv(wide_csv)
    with pytest.raises(ReplayError, match="unknown weak model 'gpt-5'.*tiny-model, gpt-4o-mini, mystery-model") as info:
        replay(t, "gpt-5", "gpt-4o-mini")
    assert isinstance(info.value, EffReasonError)
    with pytest.raises(ReplayError, match="unknown strong model"):
        replay(t, "tiny-model", "nope")
    with pytest.raises(ReplayError, match="two different models"):
        replay(t, "tiny-model", "tiny-model")


# -- bad files ----------------------------------------------------------------------------


def test_missing_prompt_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "noprompt.csv", ["question", "a", "b"], [["q", "True", "False"]])
    with pytest.raises(ReplayError, match=r"noprompt\.csv: missing required columns: 'prompt' \(columns: 'question', 'a', 'b'\)"):
        load_wide_csv(path)


def test_one_model_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", ["prompt", "a", "a_response", "examples"], [["q", "True", "x", "e"]])
    with pytest.raises(ReplayError, match=r"one\.csv: need at least two model columns.*found 1: 'a'"):
        load_wide_csv(path)


def test_non_boolean_value_names_row_and_column(tmp_path: Path) -> None:
    rows = [[f"q{i}", "True", "False"] for i in range(5)]
    rows[2][2] = "maybe"
    path = write_csv(tmp_path / "maybe.csv", ["prompt", "a", "b"], rows)
    with pytest.raises(ReplayError, match=r"maybe\.csv: row 3 \(line 4\), column 'b': 'maybe' is not a boolean"):
        load_wide_csv(path)
    rows[2][2] = ""
    path = write_csv(tmp_path / "blank.csv", ["prompt", "a", "b"], rows)
    with pytest.raises(ReplayError, match=r"row 3 \(line 4\), column 'b': '' is not a boolean .*the cell is empty"):
        load_wide_csv(path)
    # a score is a label for router training, but replay needs right or wrong
    rows[2][2] = "0.75"
    path = write_csv(tmp_path / "score.csv", ["prompt", "a", "b"], rows)
    with pytest.raises(ReplayError, match=r"row 3 \(line 4\), column 'b': '0.75' is not a boolean .*scores are not accepted"):
        load_wide_csv(path)


def test_empty_prompt(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "empty.csv", ["prompt", "a", "b"], [["q1", "1", "0"], ["  ", "1", "0"]])
    with pytest.raises(ReplayError, match=r"empty\.csv: row 2 \(line 3\), column 'prompt': the prompt is empty"):
        load_wide_csv(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no such file"):
        load_wide_csv(tmp_path / "absent.csv")
    (tmp_path / "zero.csv").write_text("")
    with pytest.raises(ReplayError, match="empty"):
        load_wide_csv(tmp_path / "zero.csv")
    header_only = write_csv(tmp_path / "header.csv", ["prompt", "a", "b"], [])
    with pytest.raises(ReplayError):
        load_wide_csv(header_only)


# -- the outcome store --------------------------------------------------------------------

def add_result(store: OutcomeStore, run: str, item: str, arm: str, question: str, correct: bool,
               tokens: tuple[int, int], cost: str, latency: float) -> None:
    rid = f"{run}-{item}-{arm}"
    request = RequestRecord(request_id=rid, question=question, status="answered", graph_version="g",
                            config_version=f"v-{run}", started_at="2025-01-01T00:00:00.000+00:00")
    attempt = AttemptRecord(attempt_id=f"{rid}-a0", request_id=rid, index=0, arm=arm, tier=arm.split(":")[0],
                            model="m", engine="embedded", strategy="direct", max_tokens=64,
                            output_tokens=tokens[1], cost_usd=cost)
    bench = BenchResult(run_id=run, item_id=item, arm=arm, request_id=rid, question=question, gold="4",
                        answer_type="number", difficulty="easy", predicted="4", correct=correct,
                        input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=cost, latency_s=latency,
                        large_calls=int(arm.startswith("large")))
    store.record(request, [attempt], bench)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "outcomes.sqlite"
    with OutcomeStore(path) as st:
        st.open_bench_run(BenchRun(run_id="old", out_dir="out/a", suite="arithmetic", config_version="v-old",
                                   arms=["small:direct", "small:cot"], created_at="2024-01-01T00:00:00"))
        st.open_bench_run(BenchRun(run_id="new", out_dir="out/b", suite="builtin", config_version="v-new",
                                   arms=["small:direct", "large:cot", "graph"], created_at="2025-01-01T00:00:00"))
        for i, (w, s) in enumerate([(True, True), (False, True), (False, True), (True, False)]):
            q = f"What is {i} + {i}?"
            add_result(st, "new", f"i{i}", "small:direct", q, w, (20, 3), "0", 0.1 * (i + 1))
            add_result(st, "new", f"i{i}", "large:cot", q, s, (30, 50), "0.0000345", 1.0 + i)
            add_result(st, "new", f"i{i}", "graph", q, True, (50, 53), "0.0000345", 2.0)
            add_result(st, "old", f"i{i}", "small:direct", q, w, (20, 3), "0", 0.1)
            add_result(st, "old", f"i{i}", "small:cot", q, not w, (20, 40), "0", 0.5)
        add_result(st, "new", "i9", "small:direct", "unfinished", True, (20, 3), "0", 0.1)  # no large:cot result yet
    return path


def test_load_store_table_newest_run(store: Path) -> None:
    before = store.read_bytes()
    t = load_store_table(store)
    assert isinstance(t, OutcomeTable)
    assert t.run_id == "new" and t.config_version == "v-new"
    assert t.arms == ["small:direct", "large:cot"]  # the graph is not a model
    assert t.prompts == [f"What is {i} + {i}?" for i in range(4)]
    assert labels(t) == {"small:direct": [True, False, False, True], "large:cot": [True, True, True, False]}
    assert t.tokens is not None and t.tokens[:, 1].tolist() == [50] * 4 and t.token_method == TOKENS_LOGGED
    assert t.input_tokens is not None and t.input_tokens[:, 0].tolist() == [20] * 4
    assert t.latency_s is not None and t.latency_s[:, 1].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert t.costs_decimal("large:cot") == [Decimal("0.0000345")] * 4
    assert t.responses == {}
    assert "run new" in t.source and "builtin" in t.source
    assert any("1 items without a result for every arm" in n for n in t.notes)
    # the file is untouched (opened read-only): same bytes, and nothing written to the
    # write-ahead log (a WAL reader may create an empty one)
    assert store.read_bytes() == before
    wal = Path(str(store) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_load_store_table_by_run_id_and_errors(store: Path, tmp_path: Path) -> None:
    old = load_store_table(store, run_id="old")
    assert old.arms == ["small:direct", "small:cot"] and old.config_version == "v-old"
    with pytest.raises(ReplayError, match=r"no benchmark run 'nope' \(runs: old, new\)"):
        load_store_table(store, run_id="nope")
    with pytest.raises(ReplayError, match="no outcome store"):
        load_store_table(tmp_path / "absent.sqlite")
    bare = tmp_path / "bare.sqlite"
    sqlite3.connect(bare).close()
    with pytest.raises(ReplayError, match=r"bare\.sqlite.*lacks migrations"):
        load_store_table(bare)
    empty = tmp_path / "empty.sqlite"
    OutcomeStore(empty).close()
    with pytest.raises(ReplayError, match=r"empty\.sqlite: no benchmark runs; run `effreason bench` first"):
        load_store_table(empty)
    assert ReplayError is OutcomeDataError


def test_replay_store_table(store: Path, priced_config: Config) -> None:
    r = replay(load_store_table(store), "small:direct", "large:cot", config=priced_config)
    assert_plain(r)
    assert r["meta"]["token_count_method"] == TOKENS_LOGGED
    assert r["meta"]["run_id"] == "new" and r["meta"]["config_version"] == "v-new"
    small, large = r["arms"]["small:direct"], r["arms"]["large:cot"]
    assert (small["tier"], small["strategy"], large["tier"], large["strategy"]) == ("small", "direct", "large", "cot")
    assert small["accuracy"] == 0.5 and large["accuracy"] == 0.75
    assert large["mean_output_tokens"] == 50
    assert large["mean_cost_usd"] == approx(0.0000345)  # the logged cost, not re-priced
    assert small["mean_cost_usd"] == 0.0
    assert large["p50_latency_s"] == approx(2.5)  # logged latencies 1, 2, 3, 4
    # gains 0 +1 +1 -1, gap 1 item: the oracle peaks at PGR 2 after 2 of 4 items
    assert r["two_arm"]["curves"]["oracle"][50] == approx([0.5, 2.0])
    assert r["baselines"]["oracle"]["accuracy"] == 1.0
    assert r["baselines"]["oracle"]["mean_output_tokens"] == approx((3 + 50 + 50 + 3) / 4)
    assert r["hull"]["x"] == "mean_cost_usd"
    assert r["hull"]["points"] == [[0.0, 0.5], [0.0000345, 0.75]]
