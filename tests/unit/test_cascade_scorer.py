"""Cascade scorers: answer features (the reply's arithmetic checked), fitting and
cross-validating a scorer against pre-routing, the artifact on disk, and the runner judging
the cheap arm's reply with it on scripted tiers."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from effreason_agents.adapters.scorer import (
    CALIBRATED_SIGNAL,
    SCORER_SIGNAL,
    CascadeScorer,
    combine,
    save_scorer,
)
from effreason_agents.adapters.store import AttemptRecord, BenchResult, BenchRun, OutcomeStore, RequestRecord
from effreason_agents.cli.app import app
from effreason_agents.core.answer_features import (
    ANSWER_FEATURES,
    FEATURES_VERSION,
    SIGNAL_FEATURES,
    answer_features,
    arithmetic_checks,
    feature_names,
    feature_vector,
    safe_eval,
)
from effreason_agents.engine import policy
from effreason_agents.errors import CalibratorError, RouterTrainError
from effreason_agents.evaluation.metrics import two_arm_summary
from router_training.cascade import (
    CascadeData,
    cascade_data,
    cascade_report,
    fit_scorer,
    load_cascade_data,
    store_replies,
    train_scorer,
    with_prices,
)
from router_training.table import OutcomeTable

from helpers import reply, small_reply, large_reply

WEAK, STRONG = "small:direct", "large:cot"


def sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# -- arithmetic and features --------------------------------------------------------------


def test_safe_eval_takes_arithmetic_and_nothing_else() -> None:
    assert safe_eval("(1 + 2) * 3") == 9
    assert safe_eval("$1,200 / 4") == 300
    assert safe_eval("2^3") == 8 and safe_eval("6 × 7") == 42 and safe_eval("10 x 5") == 50
    assert safe_eval("20% * 50") == pytest.approx(10)
    assert safe_eval("-3 + 1") == -2
    for bad in ("__import__('os').system('true')", "len([1])", "a + 1", "1 / 0", "9 ** 9 ** 9", "2 ** 1000",
                "().__class__", "1 if 1 else 2", ""):
        assert safe_eval(bad) is None, bad


def test_calculator_annotations_are_checked() -> None:
    text = ("She has 16 - 3 = <<16-3=13>>13 eggs.\n"
            "Then <<13-4=8>>8 are left.\n"  # wrong: 9
            "Each third: <<16*2/3=10.666666666666668>>10.67 feet.\n"  # right, shown rounded
            "Six: <<2*3=6>>7\n")  # the calculator is right but the text says 7
    a = arithmetic_checks(text)
    assert (a["calc_total"], a["calc_wrong"], a["rounded"]) == (4, 2, 1)
    assert a["results"][:2] == [13.0, 8.0]


def test_plain_equations_are_checked_including_chains() -> None:
    a = arithmetic_checks("First 16 - 3 = 13, then 13 - 4 = 8. So 22 + 4 x 12 = 22 + 48 = 70 apples.\n"
                          "Also 12 ÷ 4 = 3 and 140 / 3 = 46.67 rats; 2x + 3 = 7 is algebra; 240 * 100% = 40 * Total.")
    # checked: 16-3=13, 13-4=8 (wrong), 22+4x12 = 22+48, 22+48 = 70, 12÷4=3, 140/3=46.67 (rounded)
    assert a["eq_total"] == 6
    assert a["eq_wrong"] == 1
    assert a["rounded"] == 1
    assert a["calc_total"] == 0


def test_sentence_breaks_end_an_equation() -> None:
    a = arithmetic_checks("He has 5 cats. 2 + 2 = 4, and 3 + 3 = 7.")
    assert (a["eq_total"], a["eq_wrong"]) == (2, 1)


def test_answer_features_of_a_clean_reply() -> None:
    q = "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. She sells the rest at $2. How much?"
    r = ("She has 16 - 3 - 4 = <<16-3-4=9>>9 eggs left.\n"
         "She makes 9 * 2 = $<<9*2=18>>18.\n#### 18")
    f = answer_features(q, r)
    assert set(f) == set(ANSWER_FEATURES)
    assert f["answer_found"] == 1 and f["method_separator"] == 1 and f["separator"] == 1
    assert f["answer_integer"] == 1 and f["answer_decimal"] == 0 and f["answer_digits"] == 2
    assert f["final_is_result"] == 1 and f["final_seen_before"] == 1 and f["final_in_question"] == 0
    assert f["question_numbers_used"] == 1.0
    assert f["arith_any_wrong"] == 0 and f["calc_total"] == pytest.approx(math.log(3))
    assert f["hedges"] == 0 and f["ends_abruptly"] == 0 and f["answer_type_match"] == 1


def test_answer_features_of_a_doubtful_reply() -> None:
    q = "A ball bounces to 2/3 of its height. It falls from 24 feet. How high is the second bounce?"
    r = ("I think the first bounce is approximately 24 * 2/3 = 15 feet. However, I'm not sure.\n"
         "The second is 15 * 2/3 = 10.5\n#### 10.5")
    f = answer_features(q, r)
    assert f["answer_decimal"] == 1 and f["answer_decimals"] == 1 and f["answer_integer"] == 0
    assert f["arith_any_wrong"] == 1 and f["eq_wrong"] == pytest.approx(math.log(3))
    assert f["arith_wrong_share"] == 1.0 and f["results_fractional"] == 0.5
    assert f["hedges"] > 0 and f["corrections"] > 0
    cut = answer_features(q, "The first bounce is 24 * 2/3 = 16 and then the second one goes to")
    assert cut["ends_abruptly"] == 1 and cut["separator"] == 0 and cut["method_last_number"] == 1
    none = answer_features(q, "")
    assert none["answer_found"] == 0 and none["reply_chars"] == 0


def test_answer_form_and_type() -> None:
    assert answer_features("Q?", "#### -4")["answer_negative"] == 1
    assert answer_features("Q?", "#### 3/4")["answer_fraction"] == 1
    assert answer_features("Is 7 prime?", "#### Yes", "yesno")["answer_type_match"] == 1
    assert answer_features("Is 7 prime?", "#### 7", "yesno")["answer_type_match"] == 0
    assert answer_features("Which? (A) 1 (B) 2", "#### B", "choice")["answer_type_match"] == 1
    assert answer_features("Q with 5 and 7?", "So 5.\n#### 5")["final_in_question"] == 1


def test_feature_vector_layout_and_missing_signals() -> None:
    names = feature_names()
    v = feature_vector("What is 2 + 3?", "2 + 3 = 5\n#### 5", {"answer_min_logprob": -0.5, "truncated": None})
    assert v.shape == (len(names),) and names[: len(ANSWER_FEATURES)] == list(ANSWER_FEATURES)
    sig = {n: v[names.index(n)] for n in SIGNAL_FEATURES}
    assert sig["answer_min_logprob"] == -0.5
    assert math.isnan(sig["truncated"]) and math.isnan(sig["self_verify"])
    assert np.isfinite(v[: len(names) - len(SIGNAL_FEATURES)]).all()
    assert any(n.startswith("question_") for n in names)


# -- synthetic outcomes ------------------------------------------------------------------


def synthetic(n: int = 60, seed: int = 0) -> CascadeData:
    """Word problems; the weak arm is wrong on every third, and then its arithmetic is off."""
    rng = np.random.default_rng(seed)
    prompts, replies, weak, strong = [], [], [], []
    for i in range(n):
        a, b = int(rng.integers(2, 90)), int(rng.integers(2, 90))
        wrong = i % 3 == 0
        shown = a + b + (1 if wrong else 0)
        prompts.append(f"Item {i}: Tom has {a} apples and buys {b} more. How many apples does he have now?")
        replies.append(f"Tom has {a} + {b} = <<{a}+{b}={shown}>>{shown} apples.\n#### {shown}")
        weak.append(not wrong)
        strong.append(not (i % 7 == 0))
    return CascadeData(prompts, replies, np.array(weak), np.array(strong), WEAK, STRONG,
                       weak_cost=np.full(n, 10.0), strong_cost=np.full(n, 40.0), cost_unit="output_tokens",
                       source="synthetic")


def test_fit_scorer_learns_the_reply_and_predicts_through_the_run_time_code() -> None:
    data = synthetic()
    fitted = fit_scorer(data, grid_c=(0.3,), grid_text=(0.0, 3.0))
    p = fitted.predict(data)
    assert p[~data.weak_right].max() < p[data.weak_right].min()  # wrong arithmetic: lower P(right)
    one = fitted.scorer.predict(data.prompts[0], data.replies[0])
    assert one == pytest.approx(p[0], abs=1e-12)
    card = fitted.card
    assert card["arm"] == WEAK and card["applies_to"] == [WEAK]
    assert "arith_any_wrong" in card["features"]["dense"] and card["features"]["signals"] == []
    assert card["training"]["hyper"]["C"] == 0.3


def test_single_class_training_gives_a_constant_scorer() -> None:
    data = synthetic(12)
    data.weak_right[:] = True
    fitted = fit_scorer(data)
    p = fitted.predict(data)
    assert np.allclose(p, p[0]) and p[0] > 0.99
    assert "constant" in fitted.card["training"]


def test_signals_in_the_training_replies_become_features() -> None:
    data = synthetic(30)
    data.signals = [{"answer_min_logprob": (-0.1 if r else -3.0)} for r in data.weak_right]
    fitted = fit_scorer(data, grid_c=(1.0,), grid_text=(0.0,))
    assert fitted.card["features"]["signals"] == ["answer_min_logprob"]
    s = fitted.scorer
    sure = s.predict(data.prompts[1], data.replies[1], {"answer_min_logprob": -0.05})
    unsure = s.predict(data.prompts[1], data.replies[1], {"answer_min_logprob": -4.0})
    missing = s.predict(data.prompts[1], data.replies[1], {})
    assert sure > missing > unsure


# -- artifact ----------------------------------------------------------------------------


def test_artifact_round_trip(tmp_path: Path) -> None:
    data = synthetic()
    fitted = fit_scorer(data, grid_c=(0.3,), grid_text=(3.0,))
    path = fitted.save(tmp_path / "scorer", {"threshold": 0.4, "applies_to": [WEAK, "small"]})
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "weights.npz"]
    loaded = CascadeScorer.load(path)
    assert loaded.threshold == 0.4 and loaded.applies(WEAK) and loaded.applies("small:cot", "small")
    assert not loaded.applies("large:cot", "large", "gpt-4")
    assert loaded.text_weight == 3.0 and len(loaded.text) > 0
    got = loaded.predict_many(data.prompts, data.replies)
    assert np.allclose(got, fitted.predict(data), atol=1e-12)
    card = json.loads((path / "card.json").read_text())
    assert card["format"] == "effreason-cascade-scorer" and card["features"]["version"] == FEATURES_VERSION
    with np.load(path / "weights.npz", allow_pickle=False) as z:
        assert z["vocab"].dtype.kind == "U"


def _saved(tmp_path: Path) -> Path:
    return fit_scorer(synthetic(30), grid_c=(0.3,), grid_text=(3.0,)).save(tmp_path / "s")


def test_missing_and_corrupted_artifacts_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CalibratorError, match="not found.*effreason router cascade"):
        CascadeScorer.load(tmp_path / "nowhere")
    path = _saved(tmp_path)
    (path / "card.json").write_text("{not json")
    with pytest.raises(CalibratorError, match="corrupted cascade scorer card"):
        CascadeScorer.load(path)

    path = _saved(tmp_path)
    (path / "weights.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(CalibratorError, match="corrupted cascade scorer weights"):
        CascadeScorer.load(path)

    path = _saved(tmp_path)
    (path / "weights.npz").unlink()
    with pytest.raises(CalibratorError, match="has no weights.npz"):
        CascadeScorer.load(path)

    path = _saved(tmp_path)
    with np.load(path / "weights.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["w_dense"] = arrays["w_dense"][:-1]
    np.savez(path / "weights.npz", **arrays)
    with pytest.raises(CalibratorError, match="w_dense has shape"):
        CascadeScorer.load(path)

    path = _saved(tmp_path)
    arrays["w_dense"] = np.array([object()] * 3, dtype=object)
    np.savez(path / "weights.npz", **arrays)
    with pytest.raises(CalibratorError, match="corrupted cascade scorer weights"):
        CascadeScorer.load(path)  # object arrays would need pickle: refused


def test_foreign_and_outdated_cards_are_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    card = json.loads((path / "card.json").read_text())
    for change, message in (({"format": "effreason-router"}, "not a cascade scorer card"),
                            ({"version": 99}, "version 99"),
                            ({"features": {**card["features"], "version": 0}}, "answer features version 0"),
                            ({"features": {**card["features"], "dense": ["no_such_feature"]}}, "unknown features"),
                            ({"threshold": 1.5}, "threshold must lie in")):
        (path / "card.json").write_text(json.dumps({**card, **change}))
        with pytest.raises(CalibratorError, match=message):
            CascadeScorer.load(path)


def test_save_refuses_a_foreign_directory_and_replaces_an_old_artifact(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    fitted = fit_scorer(synthetic(30), grid_c=(0.3,), grid_text=(0.0,))
    with pytest.raises(CalibratorError, match="not a scorer artifact"):
        fitted.save(other)
    assert (other / "notes.txt").read_text() == "mine"
    path = fitted.save(tmp_path / "s", {"threshold": 0.1})
    fitted.save(path, {"threshold": 0.2})
    assert CascadeScorer.load(path).threshold == 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "s"]  # no temporary directories left
    with pytest.raises(CalibratorError, match="threshold"):
        save_scorer(tmp_path / "bad", {**fitted.card, "threshold": -1}, fitted.arrays)
    assert not (tmp_path / "bad").exists()


def test_combine_rule() -> None:
    assert combine(0.3, 0.9, "replace") == (0.3, "cascade scorer")
    p, how = combine(0.8, 0.2, "combine")
    assert p == pytest.approx(0.5) and "mean logit" in how
    p, _ = combine(0.9, 0.6, "combine")
    assert p == pytest.approx(sigmoid((logit(0.9) + logit(0.6)) / 2))
    assert combine(0.7, None, "combine")[0] == 0.7
    with pytest.raises(CalibratorError, match="unknown scorer mode"):
        combine(0.5, 0.5, "vote")


def test_scored_confidence_replaces_or_combines_the_calibrated_one() -> None:
    sig = {"answer_min_logprob": math.log(0.9)}
    conf, method, cal = policy.confidence(None, "small", "direct", sig, has_answer=True, answer_method="separator")
    assert conf == pytest.approx(0.9)
    scorer = object()
    assert policy.scored_confidence(conf, method, cal, scorer, 0.2) == (0.2, "cascade scorer", scorer)
    got, how, used = policy.scored_confidence(conf, method, cal, scorer, 0.2, "combine")
    assert got == pytest.approx(sigmoid((logit(0.2) + logit(0.9)) / 2)) and "heuristic" in how and used is None


# -- data and cross-validation ------------------------------------------------------------


def test_cascade_data_from_a_table() -> None:
    d = synthetic(10)
    correct = np.column_stack([d.weak_right, d.strong_right]).astype(float)
    correct[0, 1] = np.nan
    replies = list(d.replies)
    replies[1] = None
    table = OutcomeTable(d.prompts, [WEAK, STRONG], correct, tokens=np.tile([10.0, 40.0], (10, 1)),
                         responses={WEAK: replies})
    out = cascade_data(table, WEAK, STRONG)
    assert len(out) == 8 and out.cost_unit == "output_tokens" and out.weak_cost.sum() == 80
    assert any("without a label" in n for n in out.notes) and any("without a reply" in n for n in out.notes)
    with pytest.raises(RouterTrainError, match="no replies of the weak arm 'large:cot'"):
        cascade_data(table, STRONG, WEAK)
    priced = with_prices(out, {WEAK: 1.0, STRONG: 10.0})
    assert priced.strong_cost[0] == pytest.approx(40 * 10 / 1e6) and priced.cost_unit.startswith("usd")
    with pytest.raises(RouterTrainError, match="no price for large:cot"):
        with_prices(out, {WEAK: 1.0})


def test_cv_report_shape_and_cost_accounting() -> None:
    data = synthetic(60)
    r = cascade_report(data, k=3, seed=0, n_boot=50, grid_c=(0.3,), grid_text=(0.0, 3.0))
    assert {"n", "k", "weak", "strong", "acc_weak", "acc_strong", "cascade", "pre_routing", "baselines", "folds",
            "oof", "cost_unit", "always_weak_cost", "notes", "seconds"} <= set(r)
    assert r["n"] == 60 and len(r["oof"]) == 60 and len(r["folds"]) == 3
    cas, pre = r["cascade"], r["pre_routing"]
    for m in (cas, pre):
        assert {"apgr", "cpt50", "cpt80", "auc", "interval", "cost", "curve", "pgr_within_cost"} <= set(m)
        assert m["interval"]["low"] <= m["apgr"] <= m["interval"]["high"] and m["interval"]["n_boot"] == 50
    # the reply gives the weak arm's failures away; the question does not
    assert cas["auc"] > 0.95 and cas["apgr"] > pre["apgr"]
    assert cas["vs_pre_routing"]["diff"] == pytest.approx(cas["apgr"] - pre["apgr"])
    # the same numbers as the metrics module on the out-of-fold scores
    oof = np.asarray(r["oof"])
    expect = two_arm_summary(data.weak_right.tolist(), data.strong_right.tolist(), (1 - oof).tolist())
    assert cas["apgr"] == pytest.approx(expect["router"]["apgr"])
    # costs: the cascade pays every cheap call; pre-routing one arm per item
    assert r["always_weak_cost"] == pytest.approx(0.25)
    cc, pc = cas["cost"]["curve"], pre["cost"]["curve"]
    assert cc[0][1] == pytest.approx(0.25) and cc[-1][1] == pytest.approx(1.25)
    assert pc[0][1] == pytest.approx(0.25) and pc[-1][1] == pytest.approx(1.0)
    assert cas["cost"]["at_cpt80"] == pytest.approx(0.25 + cas["cpt80"])


def test_train_scorer_writes_the_cv_summary_and_threshold(tmp_path: Path) -> None:
    data = synthetic(45)
    r = cascade_report(data, k=3, n_boot=20, grid_c=(0.3,), grid_text=(0.0,))
    path = train_scorer(data, tmp_path / "s", report=r, applies_to=["small"], grid_c=(0.3,), grid_text=(0.0,))
    s = CascadeScorer.load(path)
    assert s.applies_to == ["small"] and s.card["cv"]["cascade"]["apgr"] == r["cascade"]["apgr"]
    oof = np.asarray(r["oof"])
    escalated = (oof < s.threshold).mean()
    assert escalated == pytest.approx(math.ceil(r["cascade"]["cpt80"] * 45) / 45)


def test_replies_and_signals_from_the_outcome_store(tmp_path: Path) -> None:
    db = tmp_path / "outcomes.sqlite"
    data = synthetic(12)
    with OutcomeStore(db) as store:
        store.open_bench_run(BenchRun(run_id="r1", out_dir=str(tmp_path), suite="t", arms=[WEAK, STRONG],
                                      config_version="v"))
        for i, (q, text) in enumerate(zip(data.prompts, data.replies)):
            for arm, right in ((WEAK, data.weak_right[i]), (STRONG, data.strong_right[i])):
                rid = f"{arm}-{i}"
                req = RequestRecord(request_id=rid, question=q, status="answered", graph_version="g",
                                    config_version="v", started_at="2024-01-01T00:00:00")
                att = AttemptRecord(attempt_id=f"a-{rid}", request_id=rid, index=0, arm=arm, tier=arm.split(":")[0],
                                    model="m", engine="openai", strategy=arm.split(":")[1], max_tokens=64,
                                    output_tokens=10 if arm == WEAK else 40, cost_usd="0.001",
                                    raw_text=text if arm == WEAK else "#### 1",
                                    signals={"answer_min_logprob": -0.1 if right else -2.0})
                res = BenchResult(run_id="r1", item_id=str(i), arm=arm, request_id=rid, question=q, gold="1",
                                  answer_type="number", correct=bool(right), output_tokens=att.output_tokens,
                                  cost_usd="0.001" if arm == WEAK else "0.004")
                store.record(req, [att], res)
    loaded = load_cascade_data(db, weak=WEAK, strong=STRONG)
    assert len(loaded) == 12 and loaded.cost_unit == "usd"
    assert loaded.replies == data.replies and loaded.answer_types == ["number"] * 12
    assert loaded.signals[0]["answer_min_logprob"] == (-0.1 if data.weak_right[0] else -2.0)
    texts, sigs, types = store_replies(db, OutcomeTable(data.prompts[:2] + ["unknown question"], [WEAK, STRONG],
                                                        np.ones((3, 2))), WEAK)
    assert texts[:2] == data.replies[:2] and texts[2] is None and sigs[2] is None


def test_cli_cascade_report_and_artifact(tmp_path: Path) -> None:
    data = synthetic(45)
    wide = tmp_path / "wide.csv"
    with wide.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", WEAK, STRONG, f"{WEAK}_response", f"{STRONG}_response"])
        for q, r, a, b in zip(data.prompts, data.replies, data.weak_right, data.strong_right):
            w.writerow([q, str(bool(a)), str(bool(b)), r, "The total is computed carefully.\n#### 1"])
    art = tmp_path / "scorer"
    res = CliRunner().invoke(app, ["router", "cascade", "--data", str(wide), "--weak", WEAK, "--strong", STRONG,
                                   "--cv", "3", "--bootstrap", "20", "--out", str(art), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["weak"] == WEAK and doc["n"] == 45 and doc["artifact"] == str(art)
    assert "curve" not in doc["cascade"] and "oof" not in doc
    assert doc["cascade"]["apgr"] > doc["pre_routing"]["apgr"]
    assert CascadeScorer.load(art).card["cv"]["k"] == 3
    text = CliRunner().invoke(app, ["router", "cascade", "--data", str(wide), "--weak", WEAK, "--strong", STRONG,
                                    "--cv", "3", "--bootstrap", "20", "--price", f"{WEAK}=0.5",
                                    "--price", f"{STRONG}=10"])
    assert text.exit_code == 0, text.output
    assert "cascade" in text.stdout and "pre-routing" in text.stdout and "usd" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 80
    bad = CliRunner().invoke(app, ["router", "cascade", "--data", str(wide), "--weak", "nosuch:arm", "--cv", "3"])
    assert bad.exit_code != 0 and "unknown arm 'nosuch:arm'" in bad.output


# -- the runner judging the cheap arm's reply ------------------------------------------------


def hand_scorer(tmp_path: Path, *, applies_to: list[str] | None = None, threshold: float | None = None) -> Path:
    """P(right) = sigmoid(2 − 4 · arith_any_wrong): 0.88 for a clean reply, 0.12 when its
    arithmetic is wrong."""
    card: dict[str, Any] = {
        "kind": "logistic", "arm": WEAK, "strong": STRONG, "applies_to": applies_to or [WEAK],
        "features": {"version": FEATURES_VERSION, "dense": ["arith_any_wrong"], "signals": [],
                     "text": {"terms": 0, "weight": 0.0}},
        "threshold": threshold,
    }
    arrays = {"mean": np.zeros(1), "scale": np.ones(1), "w_dense": np.array([-4.0]), "intercept": np.array([2.0]),
              "vocab": np.zeros(0, dtype="<U1"), "idf": np.zeros(0), "w_text": np.zeros(0)}
    return save_scorer(tmp_path / "scorer", card, arrays)


def wrong_sum(p: float) -> Any:
    return reply("6", p, input_tokens=50, output_tokens=8, model="small-served", prefix="2 + 3 = 6\n#### ")


def right_sum(p: float) -> Any:
    return reply("5", p, input_tokens=50, output_tokens=8, model="small-served", prefix="2 + 3 = 5\n#### ")


def test_the_scorer_replaces_the_confidence_and_escalates_a_wrong_reply(make_graph: Any, tmp_path: Path) -> None:
    # the tier is sure of its answer (0.99), but its arithmetic is wrong: the scorer says 0.12
    h = make_graph(small=[wrong_sum(0.99)], large=[large_reply("5", 0.99)],
                   escalation={"scorer": str(hand_scorer(tmp_path)), "calibrators": "off"})
    r = h.ask()
    first = r["attempts"][0]
    assert first["confidence"] == pytest.approx(sigmoid(-2.0))
    assert first["confidence_method"] == "cascade scorer"
    assert first["signals"][SCORER_SIGNAL] == pytest.approx(sigmoid(-2.0))
    assert first["signals"][CALIBRATED_SIGNAL] == pytest.approx(0.99)
    assert r["arms_tried"] == [WEAK, STRONG] and r["answer"] == "5"
    assert SCORER_SIGNAL not in r["attempts"][1]["signals"]  # the scorer judges the cheap arm only
    logged = h.store().attempts_for(r["request_id"])[0]
    assert logged.signals[SCORER_SIGNAL] == pytest.approx(sigmoid(-2.0))
    assert logged.signals[CALIBRATED_SIGNAL] == pytest.approx(0.99)


def test_the_scorer_keeps_a_right_reply_the_tier_was_unsure_of(make_graph: Any, tmp_path: Path) -> None:
    h = make_graph(small=[right_sum(0.2)], escalation={"scorer": str(hand_scorer(tmp_path)), "calibrators": "off"})
    r = h.ask()
    (only,) = r["attempts"]
    assert only["confidence"] == pytest.approx(sigmoid(2.0)) and only["signals"][CALIBRATED_SIGNAL] == 0.2
    assert r["arms_tried"] == [WEAK] and r["status"] == "answered" and h.large.calls == []


def test_combine_mode_averages_in_logit_space(make_graph: Any, tmp_path: Path) -> None:
    h = make_graph(small=[right_sum(0.2)], large=[large_reply("5", 0.99)],
                   escalation={"scorer": str(hand_scorer(tmp_path)), "scorer_mode": "combine", "calibrators": "off"})
    r = h.ask()
    first = r["attempts"][0]
    assert first["confidence"] == pytest.approx(sigmoid((2.0 + logit(0.2)) / 2), abs=1e-6)
    assert first["confidence_method"].startswith("cascade scorer combined")
    assert first["signals"][SCORER_SIGNAL] == pytest.approx(sigmoid(2.0))


def test_the_scorers_threshold_applies_unless_one_is_set(make_graph: Any, tmp_path: Path) -> None:
    art = str(hand_scorer(tmp_path, threshold=0.95))
    h = make_graph(small=[right_sum(0.99)], large=[large_reply("5", 0.99)],
                   escalation={"scorer": art, "calibrators": "off"})
    r = h.ask()
    assert r["attempts"][0]["threshold"] == 0.95 and r["arms_tried"] == [WEAK, STRONG]  # 0.88 < 0.95
    h2 = make_graph(small=[right_sum(0.99)], escalation={"scorer": art, "calibrators": "off",
                                                          "confidence_threshold": 0.5})
    assert h2.ask()["arms_tried"] == [WEAK]


def test_a_scorer_for_other_arms_or_a_broken_one_is_not_used(make_graph: Any, tmp_path: Path) -> None:
    art = str(hand_scorer(tmp_path, applies_to=["medium:cot"]))
    h = make_graph(small=[small_reply("5", 0.99)], escalation={"scorer": art, "calibrators": "off"})
    with pytest.warns(UserWarning, match="none of the ladder's arms"):
        r = h.ask()
    assert SCORER_SIGNAL not in r["attempts"][0]["signals"] and r["attempts"][0]["confidence"] == pytest.approx(0.99)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{")
    h2 = make_graph(small=[small_reply("5", 0.99)], escalation={"scorer": str(broken), "calibrators": "off"})
    with pytest.warns(UserWarning, match="cascade scorer not used: corrupted"):
        r2 = h2.ask()
    assert r2["status"] == "answered" and SCORER_SIGNAL not in r2["attempts"][0]["signals"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert h2.services.scorer is None  # refused once, not on every request
