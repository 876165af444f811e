"""Outcome readers (effreason_agents.evaluation.outcomes), as router training uses them: the
three formats (store, long, wide) loaded into an OutcomeTable, de-duplication, label parsing
and every bad-input error (file, column, row)."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from effreason_agents.errors import EffReasonError
from effreason_agents.adapters.store import AttemptRecord, BenchResult, BenchRun, OutcomeStore, RequestRecord
from effreason_agents.evaluation.outcomes import (
    OutcomeDataError,
    OutcomeTable,
    infer_format,
    load_store,
    load_table,
    load_wide,
    parse_bool,
    select_arms,
)

RouterDataError = OutcomeDataError

nan = math.nan


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def same(a: np.ndarray | None, b: list[list[float]]) -> bool:
    assert a is not None
    return bool(np.allclose(a, np.asarray(b, dtype=float), equal_nan=True))


# -- labels -----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["true", "True", " TRUE ", "1", "1.0", "yes", "YES", "Y", "t", True, 1, 1.0])
def test_parse_bool_true(raw: object) -> None:
    assert parse_bool(raw) is True


@pytest.mark.parametrize("raw", ["false", "False", "0", "0.0", "no", "No", "n", "F", False, 0])
def test_parse_bool_false(raw: object) -> None:
    assert parse_bool(raw) is False


@pytest.mark.parametrize("raw", ["maybe", "", "2", "0.5", None, 0.5, [], "truthy"])
def test_parse_bool_rejects(raw: object) -> None:
    assert parse_bool(raw) is None


def test_error_class() -> None:
    assert issubclass(OutcomeDataError, EffReasonError) and issubclass(OutcomeDataError, ValueError)


def test_router_training_uses_the_shared_readers_and_table() -> None:
    import router_training.data as data
    import router_training.table as table
    from effreason_agents.evaluation import outcomes

    assert table.OutcomeTable is outcomes.OutcomeTable
    assert data.RouterDataError is outcomes.OutcomeDataError
    for name in ("load_table", "load_long", "load_wide", "load_store", "select_arms", "infer_format", "parse_bool"):
        assert getattr(data, name) is getattr(outcomes, name)


# -- wide -------------------------------------------------------------------------------

WIDE = (
    "sample_id,prompt,eval_name,gold,gpt-4,mixtral,mixtral_response\n"
    "0,What is 2 + 2?,gsm8k,4,True,False,The answer is 4.\n"
    "1,  Name a prime.  ,gsm8k,7,1,yes,\n"
    "2,What is 3 * 3?,gsm8k,9,0.75,,nine\n"
)


def test_wide_round_trip(tmp_path: Path) -> None:
    t = load_table(write(tmp_path / "w.csv", WIDE))
    assert isinstance(t, OutcomeTable)
    assert t.arms == ["gpt-4", "mixtral"]
    assert t.prompts == ["What is 2 + 2?", "Name a prime.", "What is 3 * 3?"]
    assert same(t.correct, [[1, 0], [1, 1], [0.75, nan]])  # an empty cell is a missing result
    assert t.cost is None
    # tokens only where a label and a response text exist (row 3's "nine" belongs to no label)
    assert t.tokens is not None and np.isnan(t.tokens[:, 0]).all()
    assert t.tokens[0, 1] > 0 and np.isnan(t.tokens[1, 1]) and np.isnan(t.tokens[2, 1])
    notes = " ".join(t.notes)
    assert "sample_id" in notes and "eval_name" in notes and "gold" in notes
    assert "output tokens counted" in notes
    assert t.source.endswith("w.csv")


def test_wide_dedupe_averages_labels(tmp_path: Path) -> None:
    text = "prompt,a,b\nq1,True,False\n q1 ,False,False\nq2,True,True\nq1,True,True\n"
    t = load_table(write(tmp_path / "w.csv", text))
    assert t.prompts == ["q1", "q2"]
    assert same(t.correct, [[2 / 3, 1 / 3], [1, 1]])
    notes = " ".join(t.notes)
    assert "merged 4 duplicate labels" in notes and "2 rows repeated an earlier prompt" in notes


def test_wide_ignores_non_label_columns(tmp_path: Path) -> None:
    text = "prompt,a,b,comment,count\nq1,True,False,hello,3\nq2,False,True,x,5\n"
    t = load_table(write(tmp_path / "w.csv", text))
    assert t.arms == ["a", "b"]
    assert "comment" in " ".join(t.notes) and "count" in " ".join(t.notes)


def test_wide_arm_selection_orders_and_errors(tmp_path: Path) -> None:
    text = "prompt,a,b,c\nq1,True,False,True\nq2,False,True,\nq3,,,True\n"
    path = write(tmp_path / "w.csv", text)
    t = load_table(path, arms=["b", "a"])
    assert t.arms == ["b", "a"] and t.prompts == ["q1", "q2"]  # q3 has no label for a or b
    assert same(t.correct, [[0, 1], [1, 0]])
    assert any("left out" in n for n in t.notes)
    with pytest.raises(RouterDataError, match=r"unknown arm 'zz'; available arms: a, b, c"):
        load_table(path, arms=["a", "zz"])
    with pytest.raises(RouterDataError, match=r"need at least two arms; found 1 \('a'\)"):
        load_table(path, arms=["a"])


def test_wide_bad_label_names_file_row_column(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", "prompt,a,b\nq1,True,False\nq2,True,False\nq3,maybe,True\n")
    with pytest.raises(RouterDataError) as e:
        load_table(path)
    msg = str(e.value)
    assert str(path) in msg and "row 3 (line 4), column 'a': 'maybe' is not a boolean (true/false/1/0/yes/no)" in msg


def test_wide_score_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", "prompt,a,b\nq1,0.5,1\nq2,1.5,0\nq3,0.2,1\n")
    with pytest.raises(RouterDataError, match=r"row 2 \(line 3\), column 'a': '1.5' is not a boolean .* or a score in \[0, 1\]"):
        load_table(path)


def test_wide_empty_prompt_and_missing_prompt_column(tmp_path: Path) -> None:
    with pytest.raises(RouterDataError, match=r"w.csv: row 2 \(line 3\), column 'prompt': the prompt is empty"):
        load_table(write(tmp_path / "w.csv", "prompt,a,b\nq1,1,0\n   ,1,0\n"))
    with pytest.raises(RouterDataError, match=r"missing required columns: 'prompt' \(columns: 'question', 'a', 'b'\)"):
        load_table(write(tmp_path / "x.csv", "question,a,b\nq1,1,0\n"))


def test_wide_single_arm_and_no_rows(tmp_path: Path) -> None:
    with pytest.raises(RouterDataError, match=r"need at least two model columns .*; found 1: 'a' \(columns: 'prompt', 'a'\)"):
        load_table(write(tmp_path / "one.csv", "prompt,a\nq1,True\n"))
    with pytest.raises(RouterDataError, match="no data rows"):
        load_table(write(tmp_path / "head.csv", "prompt,a,b\n"))


def test_wide_complete_keeps_the_first_row_and_the_responses(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", "prompt,a,b,a_response\nq1,True,False,x y\n q1 ,False,False,z\nq2,1,0,\n")
    averaged = load_wide(path)
    assert same(averaged.correct, [[0.5, 0], [1, 0]])
    t = load_wide(path, complete=True)
    assert t.prompts == ["q1", "q2"] and same(t.correct, [[1, 0], [1, 0]])
    assert t.responses == {"a": ["x y", None]}
    assert t.tokens is not None and t.tokens[0, 0] > 0 and np.isnan(t.tokens[1, 0]) and np.isnan(t.tokens[:, 1]).all()
    assert t.token_method is not None and any(t.token_method in n for n in t.notes)
    assert any("1 repeated prompts dropped, keeping the first occurrence: rows 2 (same as row 1)" in n for n in t.notes)
    # without complete, an empty cell is a missing result; with it, an error naming row and column
    gap = write(tmp_path / "gap.csv", "prompt,a,b\nq1,1,0\nq2,,1\n")
    assert same(load_wide(gap).correct, [[1, 0], [nan, 1]])
    with pytest.raises(RouterDataError, match=r"gap.csv: row 2 \(line 3\), column 'a': '' is not a boolean"):
        load_wide(gap, complete=True)


def test_table_checks_and_subsets_keep_every_field() -> None:
    kw = dict(cost=[[0.1, 0.2], [0.3, 0.4]], tokens=[[1, 2], [3, 4]], input_tokens=[[5, 6], [7, 8]],
              latency_s=[[0.5, 1.5], [2.5, 3.5]], responses={"b": ["r0", None]}, token_method="m", run_id="r",
              config_version="v")
    t = OutcomeTable(["p0", "p1"], ["a", "b"], [[1, 0], [0, 1]], source="s", **kw)  # type: ignore[arg-type]
    s = t.subset([1])
    assert s.prompts == ["p1"] and s.responses == {"b": [None]} and same(s.latency_s, [[2.5, 3.5]])
    assert (s.token_method, s.run_id, s.config_version) == ("m", "r", "v")
    swapped = select_arms(t, ["b", "a"])
    assert swapped.arms == ["b", "a"] and same(swapped.input_tokens, [[6, 5], [8, 7]])
    assert swapped.responses == {"b": ["r0", None]}
    assert t.costs_decimal("b") == [Decimal("0.2"), Decimal("0.4")]
    with pytest.raises(ValueError, match="responses of 'c'"):
        OutcomeTable(["p0"], ["a", "b"], [[1, 0]], responses={"c": ["x"]})
    with pytest.raises(ValueError, match="responses of 'a' has 2 entries, expected 1"):
        OutcomeTable(["p0"], ["a", "b"], [[1, 0]], responses={"a": ["x", "y"]})
    with pytest.raises(ValueError, match=r"latency_s has shape \(1, 1\)"):
        OutcomeTable(["p0"], ["a", "b"], [[1, 0]], latency_s=[[1.0]])


# -- long -------------------------------------------------------------------------------


def jsonl(path: Path, rows: list[object]) -> Path:
    return write(path, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_long_jsonl_round_trip(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "o.jsonl", [
        {"prompt": "q1", "arm": "small:direct", "correct": True, "output_tokens": 5, "cost_usd": "0"},
        {"prompt": "q1", "arm": "large:cot", "correct": "yes", "output_tokens": 50, "cost_usd": 0.002},
        "",
        {"prompt": "q2", "arm": "small:direct", "score": 0.25, "tokens": 7},
        {"prompt": "q2", "arm": "large:cot", "correct": 0, "cost": "0.004", "extra": "ignored"},
    ])
    t = load_table(path)
    assert t.arms == ["small:direct", "large:cot"] and t.prompts == ["q1", "q2"]
    assert same(t.correct, [[1, 1], [0.25, 0]])
    assert same(t.tokens, [[5, 50], [7, nan]])
    assert same(t.cost, [[0, 0.002], [nan, 0.004]])
    assert t.mean_cost() == {"small:direct": 0.0, "large:cot": pytest.approx(0.003)}


def test_long_csv_with_model_column_and_dedupe(tmp_path: Path) -> None:
    text = ("Prompt,Model,Correct,output_tokens\n"
            "q1,m1,TRUE,4\n"
            "q1 ,m1,false,6\n"
            "q1,m2,No,\n"
            '"q2\nsecond line",m1,1,3\n'
            '"q2\nsecond line",m2,0,3\n')
    path = write(tmp_path / "o.csv", text)
    assert infer_format(path) == "long"
    t = load_table(path)
    assert t.arms == ["m1", "m2"] and t.prompts == ["q1", "q2\nsecond line"]
    assert same(t.correct, [[0.5, 0], [1, 0]])
    assert same(t.tokens, [[5, nan], [3, 3]])
    assert t.cost is None
    assert any("merged 1 duplicate labels" in n for n in t.notes)


def test_long_csv_error_rows_are_line_numbers(tmp_path: Path) -> None:
    rows = ["prompt,arm,correct"] + [f"q{i},a{i % 2},true" for i in range(5)] + ["q9,a1,maybe"]
    path = write(tmp_path / "o.csv", "\n".join(rows) + "\n")
    with pytest.raises(RouterDataError) as e:
        load_table(path)
    assert str(e.value) == f"{path}: row 6 (line 7), column 'correct': 'maybe' is not a boolean (true/false/1/0/yes/no)"
    # a quoted prompt on lines 3-4: the record after it is row 3, on line 5
    path2 = write(tmp_path / "o2.csv", 'prompt,arm,correct\nq1,a,1\n"multi\nline",a,1\nq3,b,perhaps\n')
    with pytest.raises(RouterDataError, match=r"row 3 \(line 5\), column 'correct': 'perhaps'"):
        load_table(path2)


def test_long_missing_columns_are_listed(tmp_path: Path) -> None:
    with pytest.raises(RouterDataError) as e:
        load_table(write(tmp_path / "o.csv", "prompt,model_name,label\nq,a,1\n"), "long")
    msg = str(e.value)
    assert "missing required columns: 'arm' (or 'model'), 'correct' (or 'score')" in msg
    assert "'model_name'" in msg  # the columns found are shown
    with pytest.raises(RouterDataError, match=r"o.jsonl: row 2: missing required columns: 'prompt'"):
        load_table(jsonl(tmp_path / "o.jsonl", [{"prompt": "q", "arm": "a", "correct": 1},
                                                {"question": "q", "arm": "b", "correct": 1}]))


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"prompt": "q", "arm": "b", "correct": "maybe"},
         r"row 2, column 'correct': 'maybe' is not a boolean \(true/false/1/0/yes/no\)"),
        ({"prompt": "q", "arm": "b", "correct": 0.5}, r"row 2, column 'correct': 0.5 is not a boolean"),
        ({"prompt": "q", "arm": "b", "score": 1.2}, r"row 2, column 'score': 1.2 is not a number in \[0, 1\]"),
        ({"prompt": "q", "arm": "b", "score": -0.1}, r"row 2, column 'score': -0.1 is not a number in \[0, 1\]"),
        ({"prompt": "q", "arm": "b", "score": "high"}, r"row 2, column 'score': 'high' is not a number"),
        ({"prompt": "  ", "arm": "b", "correct": 1}, r"row 2, column 'prompt': the prompt is empty"),
        ({"prompt": 12, "arm": "b", "correct": 1}, r"row 2, column 'prompt': the prompt is not text"),
        ({"prompt": "q", "arm": "", "correct": 1}, r"row 2, column 'arm': the arm name is empty"),
        ({"prompt": "q", "arm": "b", "correct": None}, r"row 2, column 'correct': the correctness value is empty"),
        ({"prompt": "q", "arm": "b", "correct": 1, "output_tokens": -3},
         r"row 2, column 'output_tokens': -3 is not a token count"),
        ({"prompt": "q", "arm": "b", "correct": 1, "cost_usd": "cheap"}, r"row 2, column 'cost_usd': 'cheap' is not a cost"),
    ],
)
def test_long_bad_values(tmp_path: Path, record: dict[str, object], match: str) -> None:
    path = jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "arm": "a", "correct": 1}, record])
    with pytest.raises(RouterDataError, match=match) as e:
        load_table(path)
    assert str(e.value).startswith(f"{path}: row 2")


def test_long_bad_json_line_and_single_arm(tmp_path: Path) -> None:
    with pytest.raises(RouterDataError, match=r"row 2: not valid JSON"):
        load_table(jsonl(tmp_path / "a.jsonl", [{"prompt": "q", "arm": "a", "correct": 1}, "{oops"]))
    with pytest.raises(RouterDataError, match=r"row 1: expected a JSON object"):
        load_table(jsonl(tmp_path / "b.jsonl", ["[1, 2]"]))
    with pytest.raises(RouterDataError, match=r"need at least two arms; found 1 \('a'\)"):
        load_table(jsonl(tmp_path / "c.jsonl", [{"prompt": "q", "arm": "a", "correct": 1},
                                                {"prompt": "r", "arm": "a", "correct": 0}]))


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(RouterDataError, match=r"empty.jsonl: the file is empty"):
        load_table(write(tmp_path / "empty.jsonl", "\n \n"))
    with pytest.raises(RouterDataError, match=r"empty.csv: the file is empty"):
        load_table(write(tmp_path / "empty.csv", ""))
    with pytest.raises(RouterDataError, match=r"absent.csv: no such file"):
        load_table(tmp_path / "absent.csv", "wide")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(RouterDataError, match=r"dir.jsonl: is a directory"):
        load_table(tmp_path / "dir.jsonl")
    bad = tmp_path / "latin.csv"
    bad.write_bytes("prompt,a,b\ncaf\xe9,1,0\n".encode("latin-1"))
    with pytest.raises(RouterDataError, match=r"latin.csv: not UTF-8 text"):
        load_table(bad)
    with pytest.raises(RouterDataError, match=r"cannot tell the format"):
        load_table(write(tmp_path / "data.txt", "x"))
    with pytest.raises(RouterDataError, match=r"unknown data format 'tsv'"):
        load_table(tmp_path / "absent.csv", "tsv")
    with pytest.raises(RouterDataError, match=r"a run id only applies to the outcome store"):
        load_table(write(tmp_path / "w.csv", WIDE), run_id="r1")


def test_long_with_unknown_extension_is_sniffed(tmp_path: Path) -> None:
    path = write(tmp_path / "outcomes.log", '{"prompt": "q", "arm": "a", "correct": true}\n'
                                            '{"prompt": "q", "arm": "b", "correct": false}\n')
    t = load_table(path, "long")
    assert t.arms == ["a", "b"] and same(t.correct, [[1, 0]])


def test_infer_format(tmp_path: Path) -> None:
    assert infer_format("store") == "store"
    assert infer_format(tmp_path / "x.sqlite") == "store"
    assert infer_format(tmp_path / "x.jsonl") == "long"
    assert infer_format(write(tmp_path / "w.csv", WIDE)) == "wide"
    assert infer_format(write(tmp_path / "l.csv", "prompt,arm,correct\n")) == "long"


# -- store ------------------------------------------------------------------------------


def add(store: OutcomeStore, run: str, item: str, arm: str, question: str, correct: bool, tokens: int,
        cost: str) -> None:
    rid = f"{run}-{item}-{arm}"
    request = RequestRecord(request_id=rid, question=question, status="answered", graph_version="g",
                            config_version="c", started_at="2025-01-01T00:00:00.000+00:00")
    attempt = AttemptRecord(attempt_id=f"{rid}-a0", request_id=rid, index=0, arm=arm, tier=arm.split(":")[0],
                            model="m", engine="embedded", strategy="direct", max_tokens=64, output_tokens=tokens,
                            cost_usd=cost)
    bench = BenchResult(run_id=run, item_id=item, arm=arm, request_id=rid, question=question, gold="4",
                        answer_type="number", correct=correct, output_tokens=tokens, cost_usd=cost)
    store.record(request, [attempt], bench)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "outcomes.sqlite"
    with OutcomeStore(path) as store:
        store.open_bench_run(BenchRun(run_id="r1", out_dir="out/1", suite="builtin", config_version="v",
                                      arms=["small:direct", "large:cot", "graph"], created_at="2025-01-01T00:00:00"))
        store.open_bench_run(BenchRun(run_id="r2", out_dir="out/2", suite="builtin", config_version="v",
                                      arms=["small:direct", "large:cot", "small:cot"], created_at="2025-01-02T00:00:00"))
        for i, (w, s) in enumerate([(True, True), (False, True), (False, False)]):
            q = f"What is {i} + {i}?"
            add(store, "r1", f"i{i}", "small:direct", q, w, 3, "0")
            add(store, "r1", f"i{i}", "large:cot", q, s, 50, "0.0002")
            add(store, "r1", f"i{i}", "graph", q, True, 53, "0.0002")
        # run 2 repeats item i0 (with the opposite small:direct label) and adds an arm
        add(store, "r2", "i0", "small:direct", " What is 0 + 0? ", False, 5, "0")
        add(store, "r2", "i0", "large:cot", "What is 0 + 0?", True, 40, "0.0004")
    return path


def test_store_all_runs(store_path: Path) -> None:
    t = load_table(store_path)
    assert t.arms == ["small:direct", "large:cot"]  # no graph; small:cot has no results
    assert t.prompts == ["What is 0 + 0?", "What is 1 + 1?", "What is 2 + 2?"]
    assert same(t.correct, [[0.5, 1], [0, 1], [0, 0]])
    assert same(t.tokens, [[4, 45], [3, 50], [3, 50]])
    assert same(t.cost, [[0, 0.0003], [0, 0.0002], [0, 0.0002]])
    notes = " ".join(t.notes)
    assert "small:cot" in notes and "merged 2 duplicate labels" in notes and "2 runs" in notes


def test_store_one_run_and_literal_store(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = load_table(store_path, run_id="r1")
    assert same(t.correct, [[1, 1], [0, 1], [0, 0]])
    assert "run r1" in t.source
    monkeypatch.delenv("EFFREASON_CONFIG", raising=False)
    monkeypatch.setenv("EFFREASON_STORE", str(store_path))
    t2 = load_table("store", run_id="r1", arms=["large:cot", "small:direct"])
    assert t2.arms == ["large:cot", "small:direct"] and same(t2.correct, [[1, 1], [1, 0], [0, 0]])


def test_store_errors(store_path: Path, tmp_path: Path) -> None:
    with pytest.raises(RouterDataError, match=r"no benchmark run 'nope' \(runs: r1, r2\)"):
        load_table(store_path, run_id="nope")
    with pytest.raises(RouterDataError, match=r"unknown arm 'graph'; available arms: small:direct, large:cot"):
        load_table(store_path, arms=["small:direct", "graph"])
    with pytest.raises(RouterDataError, match="no outcome store here"):
        load_table(tmp_path / "absent.sqlite")
    empty = tmp_path / "empty.sqlite"
    OutcomeStore(empty).close()
    with pytest.raises(RouterDataError, match="no benchmark results"):
        load_table(empty)
    junk = write(tmp_path / "junk.sqlite", "not a database at all")
    with pytest.raises(RouterDataError, match="junk.sqlite"):
        load_table(junk)


def test_store_newest_run_and_complete(store_path: Path) -> None:
    newest = load_store(store_path, latest=True)
    assert newest.run_id == "r2" and newest.config_version == "v" and "run r2, suite builtin" in newest.source
    assert newest.arms == ["small:direct", "large:cot"] and newest.prompts == ["What is 0 + 0?"]
    assert same(newest.correct, [[0, 1]]) and same(newest.tokens, [[5, 40]]) and newest.token_method == "logged usage"
    assert newest.costs_decimal("large:cot") == [Decimal("0.0004")]
    # complete: the first result of a (question, arm) stands instead of the average
    first = load_store(store_path, complete=True)
    assert same(first.correct, [[1, 1], [0, 1], [0, 0]]) and first.run_id is None
    assert any("2 results repeating an earlier question" in n for n in first.notes)


def test_select_arms_keeps_cost_and_tokens(store_path: Path) -> None:
    t = load_table(store_path)
    s = select_arms(t, ["large:cot", "small:direct"])
    assert s.cost is not None and s.tokens is not None
    assert same(s.cost, t.cost[:, ::-1].tolist())  # type: ignore[index]
