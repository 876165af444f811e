"""Evaluation protocols for routers (router_training.protocols), the metadata groups of an
OutcomeTable they split on, the bootstrap interval of APGR (evaluation.metrics.bootstrap_apgr)
and `effreason router eval` with --split-by and --train/--test."""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from effreason_agents.adapters.store import AttemptRecord, BenchResult, BenchRun, OutcomeStore, RequestRecord
from effreason_agents.errors import EvaluationError, MetricsError, PGRUndefinedError
from effreason_agents.evaluation.metrics import _Ordering, _grid, bootstrap_apgr, two_arm_summary
from effreason_agents.evaluation.outcomes import OutcomeTable, load_table, select_arms
from router_training.evaluate import cross_validate, oof_predictions, two_arm_report
from router_training.protocols import (
    bootstrap_report,
    evaluate_protocol,
    group_values,
    holdout_groups,
    kfold,
    train_test,
)

SUBJECTS = ["algebra", "biology", "chemistry", "history", "law", "music", "poetry"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def grouped_table(sizes: Sequence[int], seed: int = 0, column: str = "subject") -> OutcomeTable:
    """A two-arm table whose prompts fall into groups of the given sizes."""
    rng = np.random.default_rng(seed)
    prompts, values = [], []
    for g, size in enumerate(sizes):
        for i in range(size):
            prompts.append(f"g{g} prompt {i}")
            values.append(f"group-{g}")
    n = len(prompts)
    correct = np.column_stack([rng.random(n) < 0.5, rng.random(n) < 0.8]).astype(float)
    return OutcomeTable(prompts, ["weak", "strong"], correct, source="synthetic", groups={column: values})


class Recorder:
    """A fit that remembers every training table and predicts from a prompt-keyed lookup."""

    def __init__(self, answers: dict[str, list[float]] | None = None, arms: int = 2) -> None:
        self.trained: list[OutcomeTable] = []
        self.asked: list[list[str]] = []
        self.answers = answers or {}
        self.arms = arms

    def __call__(self, table: OutcomeTable):  # type: ignore[no-untyped-def]
        self.trained.append(table)

        def predict(prompts: Sequence[str]) -> np.ndarray:
            self.asked.append(list(prompts))
            return np.asarray([self.answers.get(p, [0.5] * self.arms) for p in prompts], dtype=float)

        return predict


# -- OutcomeTable.groups --------------------------------------------------------------------


WIDE = (
    "sample_id,prompt,eval_name,subject,gpt-4,mixtral\n"
    "0,What is 2 + 2?,mmlu,algebra,True,False\n"
    "1,Name a prime.,mmlu,,1,yes\n"
    "2,What is 3 * 3?,mmlu,algebra,0,True\n"
    "3, What is 2 + 2? ,mmlu,geometry,True,True\n"
    "4,Name a prime.,mmlu,number theory,False,False\n"
)


def test_wide_keeps_metadata_columns_as_groups(tmp_path: Path) -> None:
    t = load_table(write(tmp_path / "w.csv", WIDE))
    assert t.arms == ["gpt-4", "mixtral"]
    assert t.prompts == ["What is 2 + 2?", "Name a prime.", "What is 3 * 3?"]
    # first value stands; an empty first value is filled by a later row; sample_id keeps the first row's
    assert t.groups == {"sample_id": ["0", "1", "2"], "eval_name": ["mmlu"] * 3,
                        "subject": ["algebra", "number theory", "algebra"]}
    notes = " ".join(t.notes)
    assert "kept as metadata (groups): sample_id, eval_name, subject" in notes
    assert "column 'subject': 1 repeated prompt carried a different value" in notes
    assert "column 'sample_id': 2 repeated prompts" in notes


def test_wide_complete_keeps_first_group_value_and_notes_conflicts(tmp_path: Path) -> None:
    from effreason_agents.evaluation.outcomes import load_wide

    text = "prompt,a,b,split\nq1,True,False,train\nq2,False,True,test\nq1,True,True,test\n"
    t = load_wide(write(tmp_path / "w.csv", text), complete=True)
    assert t.groups == {"split": ["train", "test"]}
    assert any("column 'split': 1 repeated prompt" in n and "first value was kept" in n for n in t.notes)


def test_groups_follow_subset_select_arms_and_dropped_prompts(tmp_path: Path) -> None:
    text = "prompt,a,b,c,subject\nq1,True,False,True,x\nq2,False,True,,y\nq3,,,True,z\nq4,True,True,False,\n"
    t = load_table(write(tmp_path / "w.csv", text))
    assert t.groups == {"subject": ["x", "y", "z", None]}
    assert t.subset([3, 0]).groups == {"subject": [None, "x"]}
    assert t.subset(np.array([False, True, True, False])).groups == {"subject": ["y", "z"]}
    picked = select_arms(t, ["b", "a"])  # q3 has no label for a or b: left out, its group too
    assert picked.prompts == ["q1", "q2", "q4"] and picked.groups == {"subject": ["x", "y", None]}
    only_empty = load_table(write(tmp_path / "e.csv", "prompt,a,b,notes\nq1,1,0,\nq2,0,1,\n"))
    assert only_empty.groups == {}  # a column without any value is not kept


def test_sha256_leaves_groups_out(tmp_path: Path) -> None:
    plain = load_table(write(tmp_path / "p.csv", "prompt,a,b\nq1,1,0\nq2,0,1\n"))
    tagged = load_table(write(tmp_path / "t.csv", "prompt,a,b,subject\nq1,1,0,x\nq2,0,1,y\n"))
    assert tagged.groups and plain.sha256() == tagged.sha256()
    relabelled = load_table(write(tmp_path / "r.csv", "prompt,a,b,subject\nq1,1,0,x\nq2,1,1,y\n"))
    assert relabelled.sha256() != tagged.sha256()


def test_table_checks_group_lengths() -> None:
    with pytest.raises(ValueError, match="group column 'subject' has 1 values, expected 2"):
        OutcomeTable(["p0", "p1"], ["a", "b"], [[1, 0], [0, 1]], groups={"subject": ["x"]})
    with pytest.raises(ValueError, match="non-empty"):
        OutcomeTable(["p0"], ["a", "b"], [[1, 0]], groups={"": ["x"]})


def test_long_files_keep_known_metadata_columns(tmp_path: Path) -> None:
    rows = [
        {"prompt": "q1", "arm": "a", "correct": True, "Subject": "law", "split": 1, "note": "x"},
        {"prompt": "q1", "arm": "b", "correct": False, "Subject": "law", "split": 1, "note": "y"},
        {"prompt": "q2", "arm": "a", "correct": False, "Subject": "music", "note": "z"},
        {"prompt": "q2", "arm": "b", "correct": True, "Subject": "art", "note": "w"},
    ]
    path = write(tmp_path / "l.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    t = load_table(path)
    assert t.groups == {"subject": ["law", "music"], "split": ["1", None]}  # 'note' is not a metadata name
    assert any("column 'subject': 1 repeated prompt" in n for n in t.notes)
    csv_path = write(tmp_path / "l.csv", "prompt,model,correct,category\nq1,a,1,easy\nq1,b,0,easy\nq2,a,0,hard\nq2,b,1,\n")
    assert load_table(csv_path).groups == {"category": ["easy", "hard"]}


def test_store_keeps_suite_and_difficulty(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with OutcomeStore(path) as store:
        store.open_bench_run(BenchRun(run_id="r1", out_dir="o", suite="gsm8k", config_version="v",
                                      arms=["small:direct", "large:cot"]))
        for i, diff in enumerate(["easy", "hard"]):
            for arm, ok in (("small:direct", i == 0), ("large:cot", True)):
                rid = f"{i}-{arm}"
                store.record(
                    RequestRecord(request_id=rid, question=f"q{i}", status="answered", graph_version="g",
                                  config_version="v", started_at="2025-01-01T00:00:00.000+00:00"),
                    [AttemptRecord(attempt_id=rid + "a", request_id=rid, index=0, arm=arm, tier=arm.split(":")[0],
                                   model="m", engine="embedded", strategy="direct", max_tokens=8)],
                    BenchResult(run_id="r1", item_id=f"i{i}", arm=arm, request_id=rid, question=f"q{i}", gold="1",
                                answer_type="number", difficulty=diff, correct=ok),
                )
    t = load_table(path)
    assert t.groups == {"suite": ["gsm8k", "gsm8k"], "difficulty": ["easy", "hard"], "answer_type": ["number"] * 2}


# -- splits never leak ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_holdout_groups_keep_every_group_in_one_fold(seed: int, k: int) -> None:
    sizes = np.random.default_rng(seed).integers(1, 40, size=k + 4).tolist()
    t = grouped_table(sizes, seed)
    folds = holdout_groups(t, "subject", k, seed)
    values = t.groups["subject"]
    assert folds.shape == (len(t),) and set(folds.tolist()) == set(range(k))  # no empty fold
    for g in set(values):
        assert len({f for f, v in zip(folds.tolist(), values) if v == g}) == 1
    load = np.bincount(folds, minlength=k)
    assert load.max() - load.min() <= max(sizes)  # greedy balance: within one group of each other
    assert np.array_equal(folds, holdout_groups(t, "subject", k, seed))  # deterministic


def test_holdout_groups_balance_by_prompt_count() -> None:
    t = grouped_table([50, 30, 20, 20, 10, 10, 10])
    folds = holdout_groups(t, "subject", 3, 0)
    assert sorted(np.bincount(folds).tolist()) == [50, 50, 50]
    assert holdout_groups(t, "SUBJECT", 3, 0).tolist() == folds.tolist()  # case-insensitive column name


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("k", [2, 4])
def test_group_protocol_never_trains_on_a_test_group(seed: int, k: int) -> None:
    t = grouped_table([12, 9, 7, 7, 5, 3], seed)
    subject = dict(zip(t.prompts, t.groups["subject"]))
    fit = Recorder()
    r = evaluate_protocol(t, column="subject", k=k, seed=seed, fit=fit, n_boot=50)
    assert len(fit.trained) == k == len(fit.asked)
    for trained, asked in zip(fit.trained, fit.asked):
        assert set(trained.prompts).isdisjoint(asked)
        assert {subject[p] for p in trained.prompts}.isdisjoint({subject[p] for p in asked})
        assert set(trained.groups["subject"]) == {subject[p] for p in trained.prompts}
    assert sorted(p for a in fit.asked for p in a) == sorted(t.prompts)  # every prompt tested once
    proto = r["protocol"]
    assert proto["name"] == "groups" and proto["column"] == "subject" and proto["n_groups"] == 6
    assert sorted(g for f in proto["folds"] for g in f["groups"]) == sorted(set(t.groups["subject"]))
    assert sum(f["n_test"] for f in proto["folds"]) == len(t)


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("k", [2, 3, 6])
def test_kfold_never_trains_on_a_test_prompt(seed: int, k: int) -> None:
    t = grouped_table([20, 10])
    fit = Recorder()
    probs = oof_predictions(t, fit, folds=kfold(t, k, seed))
    assert probs.shape == (30, 2) and len(fit.trained) == k
    for trained, asked in zip(fit.trained, fit.asked):
        assert set(trained.prompts).isdisjoint(asked) and len(trained) + len(asked) == len(t)
    assert sorted(p for a in fit.asked for p in a) == sorted(t.prompts)


def test_kfold_protocol_matches_cross_validate() -> None:
    t = grouped_table([25, 25, 10], 4)
    score = {p: [0.5, 0.5 + 0.3 * math.sin(i)] for i, p in enumerate(t.prompts)}
    r = evaluate_protocol(t, k=4, seed=2, fit=Recorder(score), n_boot=100)
    cv = cross_validate(t, Recorder(score), k=4, seed=2)
    for key in ("apgr", "cpt50", "cpt80", "auc", "n", "weak", "strong", "baselines", "many_arm"):
        assert r[key] == cv[key], key
    assert r["protocol"] == {"name": "kfold", "k": 4, "seed": 2, "description": "4-fold cross-validation by prompt"}
    assert r["bootstrap"]["apgr"] == r["apgr"] and r["bootstrap"]["n_boot"] == 100


def test_train_test_removes_shared_prompts_and_aligns_arms() -> None:
    train = OutcomeTable(["a", "b", "c"], ["w", "s"], [[1, 0], [0, 1], [0, 1]], source="train.csv")
    test = OutcomeTable(["c", "d", "e", "b"], ["s", "w"], [[1, 0], [1, 0], [0, 0], [1, 1]], source="test.csv")
    fit = Recorder({"d": [0.2, 0.9], "e": [0.6, 0.1]})
    held = train_test(train, test, fit)
    assert fit.trained == [train] and fit.asked == [["d", "e"]]
    assert held.table.prompts == ["d", "e"] and held.table.arms == ["w", "s"]
    assert held.table.correct.tolist() == [[0, 1], [0, 0]]  # columns reordered to the training order
    assert held.probs.tolist() == [[0.2, 0.9], [0.6, 0.1]]
    assert held.protocol["overlap_removed"] == 2 and held.protocol["n_test"] == 2
    assert held.notes == ["2 test prompts also in the training data left out of the test side"]


def test_train_test_errors() -> None:
    train = OutcomeTable(["a", "b"], ["w", "s"], [[1, 0], [0, 1]], source="train.csv")
    other = OutcomeTable(["c", "d"], ["w", "x"], [[1, 0], [0, 1]], source="test.csv")
    with pytest.raises(EvaluationError, match=r"same arms: training \(train.csv\): w, s; test \(test.csv\): w, x"):
        train_test(train, other, Recorder())
    same = OutcomeTable(["b", "a"], ["w", "s"], [[1, 0], [0, 1]], source="again.csv")
    with pytest.raises(EvaluationError, match="every test prompt .* is also in the training data"):
        train_test(train, same, Recorder())
    with pytest.raises(EvaluationError, match="both a training and a test table"):
        evaluate_protocol(None, train=train, fit=Recorder())
    with pytest.raises(EvaluationError, match="not both"):
        evaluate_protocol(train, train=train, test=other, fit=Recorder())


def test_group_errors_name_the_columns() -> None:
    t = grouped_table([5, 5, 5])
    with pytest.raises(EvaluationError, match=r"no column 'topic' to split by; columns available: subject \(3 values\)"):
        holdout_groups(t, "topic", 2, 0)
    with pytest.raises(EvaluationError, match=r"column 'subject' has 3 groups \(group-0, group-1, group-2\), "
                                              r"fewer than the 5 folds; use at most 3 folds \(--cv 3\)"):
        holdout_groups(t, "subject", 5, 0)
    with pytest.raises(EvaluationError, match="at least 2 folds"):
        holdout_groups(t, "subject", 1, 0)
    bare = OutcomeTable(["a", "b"], ["w", "s"], [[1, 0], [0, 1]], source="x.csv")
    with pytest.raises(EvaluationError, match="no column 'subject'.*none: this data has no metadata columns"):
        group_values(bare, "subject")


def test_missing_group_values_form_one_group() -> None:
    t = grouped_table([4, 4, 4])
    t.groups["subject"][:4] = [None] * 4
    r = evaluate_protocol(t, column="subject", k=3, fit=Recorder(), n_boot=0)
    assert r["bootstrap"] is None
    assert [None] in [f["groups"] for f in r["protocol"]["folds"]]
    assert any("4 prompts without a 'subject' value form one group" in n for n in r["notes"])


# -- bootstrap -------------------------------------------------------------------------------


def pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(n) < 0.55, rng.random(n) < 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_point_estimate_is_two_arm_summary(seed: int) -> None:
    w, s = pair(300, seed)
    rng = np.random.default_rng(seed + 10)
    for scores in (rng.random(300), np.round(rng.random(300), 1), s.astype(float) - w + rng.normal(0, 0.8, 300)):
        r = bootstrap_apgr(w.tolist(), s.tolist(), scores.tolist(), n_boot=50, seed=seed)
        assert r["apgr"] == two_arm_summary(w.tolist(), s.tolist(), scores.tolist())["router"]["apgr"]
        assert r["low"] <= r["apgr"] <= r["high"] and r["n_boot"] == 50 and r["level"] == 0.95


@pytest.mark.parametrize("seed", [0, 4])
def test_each_resample_is_scored_like_two_arm_summary(seed: int) -> None:
    """The vectorised APGR of a resample equals two_arm_summary on the resampled items."""
    n = 60
    w, s = pair(n, seed)
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 1)  # many ties
    ordering = _Ordering(scores, s.astype(np.int64) - w.astype(np.int64))
    cs = _grid(101)
    for _ in range(20):
        draw = rng.integers(0, n, n)
        counts = np.bincount(draw, minlength=n)[None, :]
        got = ordering.apgrs(counts, cs * n, cs)[0]
        ws, ss = w[draw], s[draw]
        if ws.sum() == ss.sum():
            assert math.isnan(got)
            continue
        want = two_arm_summary(ws.tolist(), ss.tolist(), scores[draw].tolist())["router"]["apgr"]
        assert got == pytest.approx(want, abs=1e-12)


def test_perfect_router_interval_collapses_near_the_oracle() -> None:
    w, s = pair(2000, 3)
    s = s | w  # the strong model is right wherever the weak one is: the oracle's APGR is 1 − u/(2n)
    perfect = (s.astype(float) - w).tolist()
    r = bootstrap_apgr(w.tolist(), s.tolist(), perfect, n_boot=300, seed=1)
    oracle = two_arm_summary(w.tolist(), s.tolist())["oracle"]["apgr"]
    assert r["apgr"] == pytest.approx(oracle, abs=1e-12)
    assert r["low"] <= oracle <= r["high"] and r["high"] - r["low"] < 0.03
    constant = bootstrap_apgr(w.tolist(), s.tolist(), [0.0] * 2000, n_boot=100)
    assert constant["apgr"] == pytest.approx(0.5) and constant["low"] == pytest.approx(0.5)
    assert constant["high"] == pytest.approx(0.5)  # a router with no preference is random in every resample


def test_paired_difference() -> None:
    w, s = pair(500, 5)
    rng = np.random.default_rng(5)
    good = (s.astype(float) - w + rng.normal(0, 0.5, 500)).tolist()
    r = bootstrap_apgr(w.tolist(), s.tolist(), good, baseline_scores=good, n_boot=200)
    assert r["diff"] == 0 and r["diff_low"] == 0 and r["diff_high"] == 0 and r["p_better"] == 0
    noise = rng.random(500).tolist()
    better = bootstrap_apgr(w.tolist(), s.tolist(), good, baseline_scores=noise, n_boot=200)
    alone = bootstrap_apgr(w.tolist(), s.tolist(), noise, n_boot=200)
    assert better["diff"] == pytest.approx(better["apgr"] - alone["apgr"], abs=1e-12)
    assert better["diff_low"] > 0 and better["p_better"] == 1.0
    worse = bootstrap_apgr(w.tolist(), s.tolist(), noise, baseline_scores=good, n_boot=200)
    assert worse["diff_high"] < 0 and worse["p_better"] == 0
    assert "diff" not in alone


def test_resamples_without_a_gap_are_skipped_and_counted() -> None:
    # Two items: drawing the second twice gives equal accuracies (about 1 resample in 4).
    r = bootstrap_apgr([False, False], [True, False], [1.0, 0.0], n_boot=400, seed=0)
    assert 50 < r["skipped"] < 150
    # PGR(c) = min(1, 2c) on the items as given; a resample of the first item twice is PGR(c) = c
    assert r["apgr"] == pytest.approx(0.75) and r["low"] == pytest.approx(0.5) and r["high"] == pytest.approx(0.75)


def test_bootstrap_errors() -> None:
    with pytest.raises(PGRUndefinedError):
        bootstrap_apgr([True, False], [False, True], [0.1, 0.2])
    with pytest.raises(MetricsError, match="n_boot must be at least 1"):
        bootstrap_apgr([False], [True], [0.1], n_boot=0)
    with pytest.raises(MetricsError, match="level must be a fraction"):
        bootstrap_apgr([False], [True], [0.1], level=95)
    with pytest.raises(MetricsError, match="baseline_scores has 1 values for 2 items"):
        bootstrap_apgr([False, False], [True, False], [0.1, 0.2], baseline_scores=[0.1])
    with pytest.raises(MetricsError, match="finite"):
        bootstrap_apgr([False], [True], [math.nan])


def test_bootstrap_is_fast_and_seeded() -> None:
    w, s = pair(7658, 9)
    scores = np.random.default_rng(9).random(7658).tolist()
    started = time.perf_counter()
    r = bootstrap_apgr(w.tolist(), s.tolist(), scores, n_boot=1000, seed=3)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"1000 resamples of 7658 items took {elapsed:.2f} s"
    assert r == bootstrap_apgr(w.tolist(), s.tolist(), scores, n_boot=1000, seed=3)
    assert r != bootstrap_apgr(w.tolist(), s.tolist(), scores, n_boot=1000, seed=4)


def test_bootstrap_report_matches_two_arm_report() -> None:
    t = grouped_table([40, 40], 2)
    probs = np.random.default_rng(2).random((80, 2))
    r = bootstrap_report(t, probs, "weak", "strong", n_boot=50)
    assert r["apgr"] == two_arm_report(t, probs, "weak", "strong")["apgr"]


# -- effreason router eval --------------------------------------------------------------------


def wide_csv(path: Path, start: int, n: int, seed: int, arms: Sequence[str] = ("weak", "strong")) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["prompt", *arms, "subject"])
        for i in range(start, start + n):
            subject = SUBJECTS[i % len(SUBJECTS)]
            hard = rng.random() < 0.4
            text = f"{'Prove the difficult theorem' if hard else 'Name the simple fact'} {i} of {subject}"
            weak = rng.random() < (0.15 if hard else 0.9)
            out.writerow([text, weak, rng.random() < 0.85, subject])
    return path


def invoke(*args: str):  # type: ignore[no-untyped-def]
    from effreason_agents.cli import app

    return CliRunner().invoke(app, ["router", "eval", *args])


def test_cli_split_by_subject(tmp_path: Path) -> None:
    data = wide_csv(tmp_path / "d.csv", 0, 105, 1)
    r = invoke("--data", str(data), "--split-by", "subject", "--cv", "3", "--bootstrap", "200", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    proto = doc["protocol"]
    assert proto["name"] == "groups" and proto["column"] == "subject" and proto["n_groups"] == 7 and proto["k"] == 3
    fold_groups = [set(f["groups"]) for f in proto["folds"]]
    assert set().union(*fold_groups) == set(SUBJECTS) and sum(map(len, fold_groups)) == 7
    boot = doc["bootstrap"]
    assert boot["apgr"] == doc["apgr"] and boot["low"] <= doc["apgr"] <= boot["high"] and boot["n_boot"] == 200
    assert set(doc["baselines"]) == {"random", "oracle"} and doc["auc"] is not None
    for key in ("cpt50", "cpt80"):
        assert key in doc and key in doc["baselines"]["oracle"]

    text = invoke("--data", str(data), "--split-by", "subject", "--cv", "3", "--bootstrap", "100")
    assert text.exit_code == 0, text.output
    out = text.stdout
    assert "3 folds over whole groups of 'subject' (7 groups" in out and "fold 1:" in out
    router = next(line for line in out.splitlines() if line.startswith("router"))
    low, high = (float(x) for x in router.split("[", 1)[1].split("]", 1)[0].split(","))
    assert low <= float(router.split()[1]) <= high
    assert "95% interval" in out and "AUC" in out and "oracle" in out and "random" in out


def test_cli_train_test(tmp_path: Path) -> None:
    train = wide_csv(tmp_path / "train.csv", 0, 90, 2)
    test = wide_csv(tmp_path / "test.csv", 60, 60, 2)  # shares some prompts with train
    r = invoke("--train", str(train), "--test", str(test), "--bootstrap", "100", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    proto = doc["protocol"]
    assert proto["name"] == "train_test" and proto["n_train"] == 90
    assert proto["overlap_removed"] > 0 and proto["n_test"] == 60 - proto["overlap_removed"] == doc["n"]
    assert any("also in the training data" in n for n in doc["notes"])
    assert doc["bootstrap"]["low"] <= doc["apgr"] <= doc["bootstrap"]["high"]
    text = invoke("--train", str(train), "--test", str(test), "--bootstrap", "0")
    assert text.exit_code == 0, text.output
    assert "trained on" in text.stdout and "[" not in text.stdout.split("policy", 1)[1].splitlines()[1]


def test_cli_errors(tmp_path: Path) -> None:
    data = wide_csv(tmp_path / "d.csv", 0, 30, 3)
    other = wide_csv(tmp_path / "o.csv", 100, 30, 3, arms=("weak", "other"))
    r = invoke("--data", str(data), "--split-by", "topic", "--bootstrap", "0")
    assert r.exit_code == 1 and "no column 'topic'" in r.output and "subject (7 values)" in r.output
    r = invoke("--data", str(data), "--split-by", "subject", "--cv", "9")
    assert r.exit_code == 1 and "fewer than the 9 folds" in r.output
    r = invoke("--train", str(data))
    assert r.exit_code == 1 and "--train and --test together" in r.output
    r = invoke("--data", str(data), "--train", str(data), "--test", str(other))
    assert r.exit_code == 1 and "not both" in r.output
    r = invoke("--train", str(data), "--test", str(other))
    assert r.exit_code == 1 and "weak, strong" in r.output and "weak, other" in r.output
    r = invoke("--train", str(data), "--test", str(other), "--split-by", "subject")
    assert r.exit_code == 1 and "--split-by" in r.output
    r = invoke()
    assert r.exit_code == 1 and "no data" in r.output
    r = invoke("--data", str(data), "--model", "forest")
    assert r.exit_code == 1 and "unknown --model 'forest'" in r.output and "logistic" in r.output
