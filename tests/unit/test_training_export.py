"""``effreason export sft|dpo``: training data from a real SQLite outcome store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from effreason_agents.adapters.store import AttemptRecord, BenchResult, BenchRun, OutcomeStore, RequestRecord
from effreason_agents.cli.app import app
from effreason_agents.errors import OutcomeDataError
import effreason_agents.training.export as ex

__all__: list[str] = []

runner = CliRunner()

COT_SYSTEM = "Think step by step and show your reasoning. Then write '####' followed by the final answer only."


def record(
    store: OutcomeStore,
    run: str,
    item: str,
    question: str,
    gold: str,
    attempts: list[tuple[str, str, str, int]],
    *,
    answer_type: str = "number",
    truncated: tuple[int, ...] = (),
    error: tuple[int, ...] = (),
) -> None:
    """One graded bench request; ``attempts`` are (arm, strategy, reply text, output tokens),
    each graded from the answer read from its text. The bench row is the last attempt's."""
    from effreason_agents.core.prompts import parse_answer
    from effreason_agents.evaluation.tasks import TaskItem, check_answer

    arm = attempts[-1][0] if len(attempts) == 1 else "graph"
    rid = f"{run}-{item}-{arm}"
    rows = []
    for i, (a_arm, strategy, text, tokens) in enumerate(attempts):
        rows.append(
            AttemptRecord(
                attempt_id=f"{rid}-{i}", request_id=rid, index=i, arm=a_arm, tier=a_arm.split(":")[0], model="m",
                engine="embedded", strategy=strategy, max_tokens=384, output_tokens=tokens,
                answer=None if i in error else parse_answer(text).answer, raw_text="" if i in error else text,
                error="boom" if i in error else None, truncated=i in truncated,
            )
        )
    final = rows[-1].answer
    item_obj = TaskItem(id=item, question=question, answer=gold, type=answer_type, difficulty="easy",  # type: ignore[arg-type]
                        category="t")
    request = RequestRecord(request_id=rid, question=question, status="answered", graph_version="g",
                            config_version="c", started_at="2026-01-01T00:00:00.000+00:00", final_answer=final)
    bench = BenchResult(run_id=run, item_id=item, arm=arm, request_id=rid, question=question, gold=item_obj.answer,
                        answer_type=answer_type, difficulty="easy", predicted=final,
                        correct=check_answer(final, item_obj), output_tokens=sum(t for *_, t in attempts))
    store.record(request, rows, bench)


def open_run(store: OutcomeStore, run: str, suite: str = "builtin") -> None:
    store.open_bench_run(BenchRun(run_id=run, out_dir=f"runs/{run}", suite=suite, arms=["small:direct", "small:cot"],
                                  config_version="c"))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "outcomes.sqlite"
    with OutcomeStore(path) as store:
        open_run(store, "r1")
        # q1: both arms right; direct is shorter
        record(store, "r1", "q1", "What is 2 + 2?", "4", [("small:direct", "direct", "The answer is 4", 3)])
        record(store, "r1", "q1", "What is 2 + 2?", "4",
               [("small:cot", "cot", "2 plus 2 makes 4, so the sum is 4.\n#### 4", 14)])
        # q2: direct wrong, cot right -> chosen cot, dpo rejects the wrong direct
        record(store, "r1", "q2", "What is 17 * 3?", "51", [("small:direct", "direct", "The answer is 41", 3)])
        record(store, "r1", "q2", "What is 17 * 3?", "51",
               [("small:cot", "cot", "17 * 3 = 51.\n#### 51", 9)])
        # q3: nothing right
        record(store, "r1", "q3", "What is 99 * 99?", "9801", [("small:direct", "direct", "The answer is 9000", 4)])
        # q4: escalated request: the wrong cheap attempt, then a right long one; and a truncated right one
        record(store, "r1", "q4", "Is 7 prime?", "yes",
               [("small:direct", "direct", "The answer is no", 3), ("large:cot", "cot", "7 has no divisors but 1 and 7.\n#### yes", 12)],
               answer_type="yesno")
        record(store, "r1", "q4", "Is 7 prime?", "yes", [("small:cot", "cot", "Yes", 2)], answer_type="yesno",
               truncated=(0,))
        open_run(store, "r2", suite="other")
        record(store, "r2", "q5", "What is 10 - 3?", "7", [("small:direct", "direct", "The answer is 7", 3)])
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_question(rows: list[dict[str, Any]], key: str = "messages") -> dict[str, dict[str, Any]]:
    out = {}
    for row in rows:
        turns = row[key] if key == "messages" else row["prompt"]
        user = [m["content"] for m in turns if m["role"] == "user"]
        out[user[0]] = row
    return out


# -- sft ---------------------------------------------------------------------------------


def test_sft_shortest_correct_trace_in_trl_format(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    summary = ex.export_store("sft", store_path, out, eval_share=0.0)
    rows = read_jsonl(out)
    assert not ex.eval_path(out).exists()
    for row in rows:
        assert set(row) == {"messages"}
        roles = [m["role"] for m in row["messages"]]
        assert roles[-2:] == ["user", "assistant"] and roles[:-2] in ([], ["system"])
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in row["messages"])
    q = by_question(rows)
    assert set(q) == {"What is 2 + 2?", "What is 17 * 3?", "Is 7 prime?", "What is 10 - 3?"}
    assert q["What is 2 + 2?"]["messages"][-1]["content"] == "The answer is 4"  # 3 tokens beat 14
    assert q["What is 17 * 3?"]["messages"][-1]["content"] == "17 * 3 = 51.\n#### 51"  # the only right one
    # the truncated "Yes" (2 tokens) is never chosen; the escalated request's right attempt is
    assert q["Is 7 prime?"]["messages"][-1]["content"] == "7 has no divisors but 1 and 7.\n#### yes"
    # system turn: the one the trace's strategy sent (primed direct / cot)
    assert q["What is 17 * 3?"]["messages"][0] == {"role": "system", "content": COT_SYSTEM}
    assert q["What is 2 + 2?"]["messages"][0]["content"] == "Answer the question with the final answer only, no explanation."
    assert summary.questions == 5 and summary.written == {"train": 4, "eval": 0}
    assert summary.skipped == {ex.NO_CORRECT: 1}
    assert summary.mean_tokens_chosen == pytest.approx((3 + 9 + 12 + 3) / 4, abs=0.005)
    # all correct, complete traces: 3, 14, 9, 12, 3 (the truncated "Yes" is not counted)
    assert summary.mean_tokens_correct == pytest.approx((3 + 14 + 9 + 12 + 3) / 5, abs=0.005)


def test_sft_system_none_and_run_and_suite_filters(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    ex.export_store("sft", store_path, out, run_id="r2", eval_share=0.0, system="none")
    assert read_jsonl(out) == [{"messages": [{"role": "user", "content": "What is 10 - 3?"},
                                             {"role": "assistant", "content": "The answer is 7"}]}]
    summary = ex.export_store("sft", store_path, out, suite="builtin", eval_share=0.0)
    assert summary.runs == ["r1"] and "What is 10 - 3?" not in by_question(read_jsonl(out))


def test_ties_go_to_the_arm_name() -> None:
    base = dict(question="q", gold="4", answer_type="number", strategy="cot", correct=True)
    traces = [ex.Trace(arm="small:z", text="z", output_tokens=5, order=0, **base),  # type: ignore[arg-type]
              ex.Trace(arm="small:a", text="a", output_tokens=5, order=1, **base),  # type: ignore[arg-type]
              ex.Trace(arm="small:m", text="m", output_tokens=9, order=2, **base)]  # type: ignore[arg-type]
    assert ex.shortest_correct(traces).text == "a"  # type: ignore[union-attr]
    chosen, rejected, reason = ex.dpo_choice(traces)
    assert (chosen.text, rejected.text, reason) == ("a", "m", None)  # type: ignore[union-attr]


# -- dpo ---------------------------------------------------------------------------------


def test_dpo_pairs_in_trl_format_and_pairing_rule(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "dpo.jsonl"
    summary = ex.export_store("dpo", store_path, out, eval_share=0.0)
    rows = read_jsonl(out)
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
        assert row["chosen"] != row["rejected"]
    q = by_question(rows, "prompt")
    # a longer correct trace exists: it is the rejected one
    assert q["What is 2 + 2?"]["chosen"][0]["content"] == "The answer is 4"
    assert q["What is 2 + 2?"]["rejected"][0]["content"] == "2 plus 2 makes 4, so the sum is 4.\n#### 4"
    # no longer correct trace: the wrong one
    assert q["What is 17 * 3?"]["rejected"][0]["content"] == "The answer is 41"
    # correct traces: the 12-token one is chosen; longer correct: none complete (truncated "Yes" is 2) -> wrong
    assert q["Is 7 prime?"]["rejected"][0]["content"] == "The answer is no"
    assert "What is 99 * 99?" not in q and "What is 10 - 3?" not in q
    assert summary.skipped == {ex.NO_CORRECT: 1, ex.NOTHING_TO_REJECT: 1}
    assert summary.written == {"train": 3, "eval": 0}
    assert summary.mean_tokens_rejected == pytest.approx((14 + 3 + 3) / 3, abs=0.005)


# -- split -------------------------------------------------------------------------------


def test_split_by_question_never_leaks(tmp_path: Path) -> None:
    path = tmp_path / "many.sqlite"
    with OutcomeStore(path) as store:
        open_run(store, "big")
        for i in range(120):
            q = f"What is {i} + 1?"
            # each question answered by two arms, so a per-attempt split would leak
            record(store, "big", f"i{i}", q, str(i + 1), [("small:direct", "direct", f"The answer is {i + 1}", 3)])
            record(store, "big", f"i{i}", q, str(i + 1),
                   [("small:cot", "cot", f"{i} + 1 = {i + 1}\n#### {i + 1}", 8)])
    for kind in ("sft", "dpo"):
        out = tmp_path / f"{kind}.jsonl"
        summary = ex.export_store(kind, path, out, eval_share=0.25, seed=3)  # type: ignore[arg-type]
        key = "messages" if kind == "sft" else "prompt"
        train = set(by_question(read_jsonl(out), key))
        evals = set(by_question(read_jsonl(tmp_path / f"{kind}.eval.jsonl"), key))
        assert not train & evals
        assert len(train) + len(evals) == 120 == sum(summary.written.values())
        assert 12 <= len(evals) <= 48  # about a quarter
        assert evals == {f"What is {i} + 1?" for i in range(120) if ex.in_eval_split(f"What is {i} + 1?", 0.25, 3)}
    # deterministic, and the seed changes it
    assert [ex.in_eval_split(f"q{i}", 0.3) for i in range(50)] == [ex.in_eval_split(f"q{i}", 0.3) for i in range(50)]
    assert [ex.in_eval_split(f"q{i}", 0.3, 0) for i in range(50)] != [ex.in_eval_split(f"q{i}", 0.3, 1) for i in range(50)]


def test_eval_path_puts_eval_before_the_suffix(tmp_path: Path) -> None:
    assert ex.eval_path(tmp_path / "sft.jsonl") == tmp_path / "sft.eval.jsonl"
    assert ex.eval_path(tmp_path / "data") == tmp_path / "data.eval"


# -- bad input ---------------------------------------------------------------------------


def test_empty_store_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    OutcomeStore(path).close()
    out = tmp_path / "sft.jsonl"
    with pytest.raises(OutcomeDataError, match=r"empty\.sqlite.*no graded outcomes.*effreason bench"):
        ex.export_store("sft", path, out)
    assert not out.exists() and not ex.eval_path(out).exists()


def test_missing_store_and_unknown_run_list_what_exists(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    with pytest.raises(OutcomeDataError, match="no outcome store at .*nope.sqlite"):
        ex.export_store("sft", tmp_path / "nope.sqlite", out)
    with pytest.raises(OutcomeDataError, match=r"no benchmark run 'r9'; runs available: r1 \(suite builtin\), r2 \(suite other\)"):
        ex.export_store("sft", store_path, out, run_id="r9")
    with pytest.raises(OutcomeDataError, match="no benchmark run of suite 'gsm8k'"):
        ex.export_store("sft", store_path, out, suite="gsm8k")
    with pytest.raises(OutcomeDataError, match=r"eval-share must be in \[0, 1\)"):
        ex.export_store("sft", store_path, out, eval_share=1.0)
    with pytest.raises(OutcomeDataError, match="unknown export kind 'ppo'"):
        ex.export_store("ppo", store_path, out)  # type: ignore[arg-type]
    assert not out.exists()


def test_run_with_no_correct_trace_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "wrong.sqlite"
    with OutcomeStore(path) as store:
        open_run(store, "w")
        record(store, "w", "x", "What is 1 + 1?", "2", [("small:direct", "direct", "The answer is 3", 3)])
    out = tmp_path / "sft.jsonl"
    with pytest.raises(OutcomeDataError, match=r"none of the 1 questions gives a sft example \(1 no correct trace\)"):
        ex.export_store("sft", path, out)
    assert not out.exists()


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(store_path: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "sft.jsonl"
    out.write_text("old\n")

    real_dumps = json.dumps
    calls = {"n": 0}

    def dumps(obj: Any, *a: Any, **kw: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_dumps(obj, *a, **kw)

    monkeypatch.setattr(ex.json, "dumps", dumps)
    with pytest.raises(OSError, match="disk full"):
        ex.export_store("sft", store_path, out, eval_share=0.5)
    assert out.read_text() == "old\n" and not ex.eval_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("outcomes.sqlite")) == ["sft.jsonl"]


def test_failure_while_writing_removes_both_temporary_files(store_path: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from effreason_agents.adapters import atomic

    out = tmp_path / "out" / "sft.jsonl"
    real_replace = atomic.os.replace
    seen: list[str] = []

    def replace(src: str, dst: Any) -> None:
        seen.append(str(dst))
        raise OSError("no space left")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="no space left"):
        ex.export_store("dpo", store_path, out, eval_share=0.5)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert seen and list(out.parent.iterdir()) == []


# -- the command -------------------------------------------------------------------------


def test_cli_export_json_summary_and_files(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    res = runner.invoke(app, ["export", "sft", "--data", str(store_path), "--out", str(out), "--eval-share", "0.5",
                              "--seed", "1", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kind"] == "sft" and doc["questions"] == 5 and sum(doc["written"].values()) == 4
    assert doc["files"] == {"train": str(out), "eval": str(ex.eval_path(out))}
    assert doc["skipped"] == {ex.NO_CORRECT: 1}
    assert len(read_jsonl(out)) == doc["written"]["train"]
    assert len(read_jsonl(ex.eval_path(out))) == doc["written"]["eval"]
    assert doc["mean_output_tokens"]["chosen"] < doc["mean_output_tokens"]["all_correct"]


def test_cli_export_table_and_errors(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "dpo.jsonl"
    res = runner.invoke(app, ["export", "dpo", "--data", str(store_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "questions" in res.stdout and "mean output tokens, rejected" in res.stdout and "skipped" in res.stdout
    res = runner.invoke(app, ["export", "dpo", "--data", str(store_path), "--run", "zzz", "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 1 and "runs available: r1" in res.output.replace("\n", "")
    assert not (tmp_path / "x.jsonl").exists()
    res = runner.invoke(app, ["export", "kto", "--data", str(store_path), "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 1 and "unknown export kind 'kto'" in res.output
