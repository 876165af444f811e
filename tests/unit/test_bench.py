"""Benchmark bookkeeping without a model: arm names, run ids, aggregation of graded rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from effreason_agents.evaluation.bench import Bench, BenchError, resolve_arms, run_id_for, single_arm_config
from effreason_agents.config import config_from_data, default_config_data
from effreason_agents.adapters.store import BenchResult
from effreason_agents.evaluation.tasks import TaskItem


def config(tmp_path: Path):  # noqa: ANN201
    data = default_config_data({})
    data["store"] = {"path": str(tmp_path / "o.sqlite")}
    return config_from_data(data)


def items(n: int) -> list[TaskItem]:
    return [
        TaskItem(id=f"i{i}", question=f"What is {i} + 1?", answer=str(i + 1), type="number", difficulty="easy",
                 category="arithmetic")
        for i in range(n)
    ]


def row(item: str, arm: str, correct: bool, tokens: int, **kw: object) -> BenchResult:
    return BenchResult(run_id="r", item_id=item, arm=arm, question=f"q {item}", gold="1", answer_type="number",
                       correct=correct, output_tokens=tokens, latency_s=0.1, **kw)


def test_resolve_arms_lists_valid_names_and_dedupes(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert [a.name for a in resolve_arms(cfg, ["small:direct", "small:cot:64", "small:direct"])] == [
        "small:direct", "small:cot:64"]
    with pytest.raises(BenchError, match="small:direct"):
        resolve_arms(cfg, ["small:nope"])
    with pytest.raises(BenchError, match="valid arms"):
        resolve_arms(cfg, ["large:cot"])  # the large tier is disabled without a key


def test_single_arm_config_runs_one_arm(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    (arm,) = resolve_arms(cfg, ["small:cot"])
    assert [a.name for a in single_arm_config(cfg, arm).ladder] == ["small:cot"]


def test_run_id_is_stable_per_directory(tmp_path: Path) -> None:
    assert run_id_for(tmp_path / "a") == run_id_for(tmp_path / "a") != run_id_for(tmp_path / "b")


def test_empty_suite_and_nothing_to_run_are_errors(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with pytest.raises(BenchError, match="empty"):
        Bench(cfg, [], resolve_arms(cfg, ["small:direct"]))
    with pytest.raises(BenchError, match="nothing to run"):
        Bench(cfg, items(2), [], graph=False)


def test_results_aggregate_complete_items_only(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    b = Bench(cfg, items(3), resolve_arms(cfg, ["small:direct", "small:cot"]), graph=True, out_dir=tmp_path)
    rows = [
        row("i0", "small:direct", True, 5), row("i0", "small:cot", True, 100),
        row("i1", "small:direct", False, 5), row("i1", "small:cot", True, 120),
        row("i2", "small:direct", False, 6),  # i2 unfinished for cot and graph
        row("i0", "graph", True, 5, attempts=1), row("i1", "graph", True, 125, attempts=2, escalated=True),
    ]
    res = b.results(rows)
    assert res["meta"]["n_items"] == 2 and any("not finished" in n for n in res["meta"]["notes"])
    assert res["arms"]["small:direct"]["accuracy"] == 0.5 and res["arms"]["small:cot"]["accuracy"] == 1.0
    assert "escalation_rate" not in res["arms"]["small:direct"]
    assert res["graph"]["escalation_rate"] == 0.5 and res["graph"]["mean_attempts"] == 1.5
    # oracle: i0 by direct (5 tokens), i1 only cot is right (120)
    assert res["baselines"]["oracle"]["accuracy"] == 1.0
    assert res["baselines"]["oracle"]["mean_output_tokens"] == pytest.approx(62.5)
    assert res["two_arm"]["weak"] == "small:direct" and res["two_arm"]["strong"] == "small:cot"
    assert res["baselines"]["random"]["apgr"] == pytest.approx(0.5)
    assert res["distributions"]["output_tokens"]["graph"] == [5, 125]
    assert res["hull"]["x"] == "mean_output_tokens"  # every arm is free


def test_no_routing_gain_when_the_cheapest_arm_is_best(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    b = Bench(cfg, items(2), resolve_arms(cfg, ["small:direct", "small:cot"]), graph=False, out_dir=tmp_path)
    rows = [row("i0", "small:direct", True, 5), row("i0", "small:cot", False, 100),
            row("i1", "small:direct", True, 5), row("i1", "small:cot", True, 90)]
    res = b.results(rows)
    assert "two_arm" not in res and any("no routing gain" in n for n in res["meta"]["notes"])


def test_budget_fit_command_fits_on_graded_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json as _json
    import sqlite3

    from typer.testing import CliRunner

    from effreason_agents.cli import app
    from effreason_agents.adapters.store import BenchRun, OutcomeStore

    store_path = tmp_path / "o.sqlite"
    with OutcomeStore(store_path) as store:
        store.open_bench_run(BenchRun(run_id="r", out_dir=str(tmp_path), suite="s", arms=["small:cot"], config_version="c"))
    con = sqlite3.connect(store_path)
    for i in range(12):
        q = "What is " + " + ".join(str(n) for n in range(i + 2)) + "?"
        con.execute(
            "INSERT INTO bench_results (run_id, item_id, arm, question, gold, answer_type, correct, output_tokens, created_at)"
            " VALUES ('r', ?, 'small:cot', ?, '1', 'number', 1, ?, 'now')", (f"i{i}", q, 20 + 15 * i))
    con.commit()
    con.close()
    monkeypatch.setenv("EFFREASON_STORE", str(store_path))
    out = tmp_path / "reg.json"
    r = CliRunner().invoke(app, ["budget", "fit", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert _json.loads(r.output)["correct_rows_used"] == 12 and out.is_file()
    r = CliRunner().invoke(app, ["budget", "fit", "--out", str(out), "--run", "nope"])
    assert r.exit_code != 0


def test_confidence_quality_per_arm() -> None:
    from effreason_agents.evaluation.bench import confidence_quality

    q = confidence_quality([(0.9, "calibrated: logistic on 3 features"), (0.2, "calibrated: logistic on 3 features"),
                            (None, "no answer parsed"), (0.6, "heuristic: x (no calibrator)")], [True, False, False, True])
    assert q is not None and q["n"] == 3
    assert q["auroc"] == 1.0
    assert q["brier"] == pytest.approx((0.1**2 + 0.2**2 + 0.4**2) / 3)
    assert q["methods"] == ["calibrated: logistic on 3 features", "heuristic: x"]
    assert confidence_quality([(None, None)], [True]) is None
    assert confidence_quality([(0.5, "h"), (0.7, "h")], [True, True])["auroc"] is None  # one class: no AUROC


def test_report_shows_the_confidence_section(tmp_path: Path) -> None:
    from effreason_agents.evaluation.report import write_report

    results = {"kind": "live", "meta": {"suite": "s", "n_items": 2}, "baselines": {},
               "arms": {"small:direct": {"accuracy": 0.5, "mean_output_tokens": 3, "mean_cost_usd": 0.0,
                                         "confidence": {"n": 2, "auroc": 0.75, "brier": 0.2, "ece": 0.1,
                                                        "methods": ["calibrated: logistic on 2 features"]}}}}
    paths = write_report(results, tmp_path)
    md = Path(paths["report"]).read_text() if "report" in paths else (tmp_path / "report.md").read_text()
    assert "## Confidence" in md and "| `small:direct` | 2 | 0.750 | 0.200 | 0.100 | calibrated: logistic on 2 features |" in md


def test_wide_csv_export_reads_back_through_the_replay_reader(tmp_path: Path) -> None:
    from effreason_agents.adapters.store import AttemptRecord, OutcomeStore, RequestRecord
    from effreason_agents.evaluation.bench import WIDE_CSV
    from effreason_agents.evaluation.replay import load_wide_csv

    cfg = config(tmp_path)
    b = Bench(cfg, items(3), resolve_arms(cfg, ["small:direct", "small:cot"]), graph=False, out_dir=tmp_path)
    rows = []
    with OutcomeStore(tmp_path / "x.sqlite") as store:
        for it, arm, correct, text in [("i0", "small:direct", True, "1"), ("i0", "small:cot", True, "so, 1"),
                                       ("i1", "small:direct", False, "3"), ("i1", "small:cot", True, "2"),
                                       ("i2", "small:direct", True, "3")]:  # i2 unfinished for cot: not exported
            rid = f"{it}-{arm}"
            store.record(
                RequestRecord(request_id=rid, question=f"q {it}", status="answered", graph_version="g",
                              config_version="c", started_at="2025-01-01T00:00:00.000+00:00"),
                [AttemptRecord(attempt_id=f"{rid}-0", request_id=rid, index=0, arm=arm, tier="small", model="m",
                               engine="embedded", strategy=arm.split(":")[1], max_tokens=64, raw_text=text)],
            )
            rows.append(row(it, arm, correct, 3, request_id=rid))
        assert b.export_wide_csv(store, rows, tmp_path / WIDE_CSV) == 2
    t = load_wide_csv(tmp_path / WIDE_CSV)
    assert t.prompts == ["What is 0 + 1?", "What is 1 + 1?"] and t.arms == ["small:direct", "small:cot"]
    assert t.correct.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert t.responses == {"small:direct": ["1", "3"], "small:cot": ["so, 1", "2"]}
