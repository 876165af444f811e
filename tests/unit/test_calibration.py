"""Calibrator fitting (router_training.calibration) and run-time use (effreason_agents.adapters.calibrator)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from effreason_agents.adapters.calibrator import (
    Calibrator,
    CalibratorError,
    CalibratorSet,
    CalibratorWarning,
)
from effreason_agents.errors import EffReasonError
from router_training.calibration import (
    auroc,
    brier,
    ece,
    fit_calibrator,
    pick_threshold,
    predict_proba,
    save_artifact,
    threshold_curve,
)


def synthetic_rows(n: int = 300, seed: int = 1, with_noise_signal: bool = True) -> list[dict]:
    """Correctness depends on answer_min_logprob: P(correct) = sigmoid(3 * (lp + 1))."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        lp = float(rng.uniform(-3.0, 0.0))
        correct = bool(rng.random() < 1.0 / (1.0 + math.exp(-3.0 * (lp + 1.0))))
        signals = {
            "answer_min_logprob": lp,
            "answer_mean_logprob": lp / 2 + float(rng.normal(0, 0.3)),
            "answer_max_entropy": float(-lp * 0.5 + rng.normal(0, 0.4)),
            "answer_min_margin": None,
            "output_mean_logprob": float(rng.normal(-1, 0.2)) if with_noise_signal else None,
            "truncated": 0.0,
        }
        if rng.random() < 0.05:
            signals["answer_mean_logprob"] = None  # occasional missing value
        rows.append({"tier": "small", "strategy": "direct", "signals": signals, "correct": correct})
    return rows


# -- metrics ---------------------------------------------------------------------


def test_auroc_hand_cases():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5
    # one tie across classes: pairs (pos,neg): (0.5 vs 0.1)=1, (0.5 vs 0.5)=0.5, (0.9 vs 0.1)=1, (0.9 vs 0.5)=1
    assert auroc([0.1, 0.5, 0.5, 0.9], [False, False, True, True]) == pytest.approx(3.5 / 4)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_brier_hand_cases():
    assert brier([1.0, 0.0], [True, False]) == 0.0
    assert brier([0.0, 1.0], [True, False]) == 1.0
    assert brier([0.5, 0.5, 0.8], [True, False, True]) == pytest.approx((0.25 + 0.25 + 0.04) / 3)


def test_ece_hand_cases():
    # bin [0.2,0.3): p=0.25 x4, 1 correct; bin [0.7,0.8): p=0.75 x4, 3 correct → perfectly calibrated
    p = [0.25] * 4 + [0.75] * 4
    y = [True, False, False, False, True, True, True, False]
    assert ece(p, y) == pytest.approx(0.0, abs=1e-12)
    # all p=0.9 but half right: |0.5 - 0.9| = 0.4
    assert ece([0.9] * 4, [True, False, True, False]) == pytest.approx(0.4)
    # p = 1.0 lands in the last bin
    assert ece([1.0, 1.0], [True, True]) == 0.0


# -- fitting and round trip ------------------------------------------------------


def test_fit_logistic_round_trip_matches_runtime(tmp_path):
    rows = synthetic_rows()
    art = fit_calibrator(rows, "small", "direct", features=["answer_min_logprob", "answer_mean_logprob"])
    assert art["format"] == "effreason-calibrator" and art["version"] == 1
    assert art["kind"] in ("logistic", "isotonic")
    m = art["metrics"]
    assert m["auroc"] > 0.8
    assert 0 <= m["brier"] < 0.25 and 0 <= m["ece"] < 0.15
    assert m["signal_auroc"]["answer_min_logprob"] > 0.8
    assert art["training"]["n"] == 300
    assert 0 < art["training"]["positives"] < 300
    assert len(art["training"]["data_sha256"]) == 64

    path = save_artifact(art, tmp_path / "small-direct.json")
    cal = Calibrator.load(path)
    signals = [r["signals"] for r in rows]
    fitted = predict_proba(art, signals)
    runtime = np.array([cal.predict(s) for s in signals])
    assert np.all((runtime >= 0) & (runtime <= 1))
    np.testing.assert_allclose(runtime, fitted, atol=1e-9, rtol=0)


def test_forced_logistic_and_isotonic_artifacts_round_trip(tmp_path):
    rows = synthetic_rows(n=200, seed=3)
    art = fit_calibrator(rows, "small", "direct")
    signals = [r["signals"] for r in rows] + [{}, {"answer_min_logprob": None}]
    # the full default feature set: signals absent everywhere (margin) are dropped
    assert "answer_min_margin" not in art["features"]
    assert "answer_min_margin" not in art["metrics"]["signal_auroc"]
    assert "truncated" not in art["training"]["candidate_features"]  # constant 0.0
    # exercise both runtime kinds regardless of which one won
    from router_training import calibration as calmod

    X = calmod._matrix([r["signals"] for r in rows], ["answer_min_logprob"])
    y = np.array([r["correct"] for r in rows])
    iso = dict(art, kind="isotonic", features=["answer_min_logprob"], params=calmod._fit_isotonic(X[:, 0], y, 1.0))
    assert iso["params"]["x"] == sorted(iso["params"]["x"])
    assert all(a <= b for a, b in zip(iso["params"]["y"], iso["params"]["y"][1:]))
    logi = dict(art, kind="logistic", features=["answer_min_logprob"], params=calmod._fit_logistic(X, y))
    for i, a in enumerate((iso, logi)):
        cal = Calibrator.load(save_artifact(a, tmp_path / f"a{i}.json"))
        runtime = np.array([cal.predict(s) for s in signals])
        np.testing.assert_allclose(runtime, predict_proba(a, signals), atol=1e-9, rtol=0)


def test_isotonic_decreasing_feature():
    from router_training import calibration as calmod

    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([1, 1, 0, 1, 0, 0], dtype=bool)  # higher entropy → more often wrong
    params = calmod._fit_isotonic(x, y, -1.0)
    assert params["x"] == sorted(params["x"])
    assert all(a >= b for a, b in zip(params["y"], params["y"][1:]))
    assert params["y"][0] == 1.0 and params["y"][-1] == 0.0


def test_fit_errors():
    rows = synthetic_rows(n=50)
    one_class = [dict(r, correct=True) for r in rows]
    with pytest.raises(CalibratorError, match="both right and wrong"):
        fit_calibrator(one_class, "small", "direct")
    with pytest.raises(CalibratorError, match="fewer than folds"):
        fit_calibrator(rows[:3], "small", "direct", folds=5)
    with pytest.raises(CalibratorError, match="missing in every row"):
        fit_calibrator(rows, "small", "direct", features=["answer_min_margin"])
    no_logprobs = [dict(r, signals={k: None for k in r["signals"]}) for r in rows]
    with pytest.raises(CalibratorError, match="no signal is present"):
        fit_calibrator(no_logprobs, "small", "direct")
    with pytest.raises(CalibratorError):
        fit_calibrator(rows, "small", "direct", folds=1)
    # rows of another tier are ignored → nothing left
    with pytest.raises(CalibratorError, match="fewer than folds"):
        fit_calibrator(rows, "large", "direct")
    assert issubclass(CalibratorError, EffReasonError) and issubclass(CalibratorError, ValueError)


def test_fit_is_deterministic_for_seed():
    rows = synthetic_rows(n=120, seed=5)
    a = fit_calibrator(rows, "small", "direct", seed=7)
    b = fit_calibrator(rows, "small", "direct", seed=7)
    assert a["params"] == b["params"] and a["metrics"] == b["metrics"]


# -- artifact errors --------------------------------------------------------------


def _valid_artifact() -> dict:
    return {
        "format": "effreason-calibrator",
        "version": 1,
        "tier": "small",
        "strategy": "direct",
        "kind": "logistic",
        "features": ["answer_min_logprob"],
        "params": {"mean": [-1.0], "scale": [0.5], "weights": [2.0], "intercept": 0.0},
        "training": {"n": 10, "positives": 5, "data_sha256": "0" * 64, "created_at": "2025-01-01T00:00:00+00:00"},
        "metrics": {"auroc": 0.8, "brier": 0.2, "ece": 0.05},
    }


def test_runtime_logistic_predict_by_hand_and_imputation(tmp_path):
    cal = Calibrator(_valid_artifact())
    assert cal.predict({"answer_min_logprob": -1.0}) == pytest.approx(0.5)
    assert cal.predict({"answer_min_logprob": -0.5}) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert cal.predict({"answer_min_logprob": None}) == pytest.approx(0.5)  # training mean
    assert cal.predict({"answer_min_logprob": float("nan")}) == pytest.approx(0.5)
    assert cal.predict({"answer_min_logprob": -1e6}) == 0.0
    assert cal.describe() == "calibrated: logistic on 1 feature"


def test_load_errors(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(CalibratorError, match="not valid JSON"):
        Calibrator.load(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CalibratorError):
        Calibrator.load(p)
    with pytest.raises(CalibratorError, match="cannot read"):
        Calibrator.load(tmp_path / "missing.json")

    foreign = dict(_valid_artifact(), format="some-router")
    p.write_text(json.dumps(foreign))
    with pytest.raises(CalibratorError, match="not a calibrator artifact"):
        Calibrator.load(p)
    other = dict(_valid_artifact(), version=2)
    p.write_text(json.dumps(other))
    with pytest.raises(CalibratorError, match="version 2 is not supported"):
        Calibrator.load(p)
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(CalibratorError, match="JSON object"):
        Calibrator.load(p)
    bad_params = _valid_artifact()
    bad_params["params"]["weights"] = [1.0, 2.0]
    with pytest.raises(CalibratorError, match="weights"):
        Calibrator(bad_params)
    bad_kind = dict(_valid_artifact(), kind="forest")
    with pytest.raises(CalibratorError, match="unknown calibrator kind"):
        Calibrator(bad_kind)
    with pytest.raises(CalibratorError):
        save_artifact(bad_kind, tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


def test_check_features():
    cal = Calibrator(_valid_artifact())
    cal.check_features(["answer_min_logprob", "truncated"])
    with pytest.raises(CalibratorError, match="does not provide"):
        cal.check_features(["truncated"])


# -- set -------------------------------------------------------------------------


def test_calibrator_set_load_dir_skips_broken(tmp_path):
    save_artifact(_valid_artifact(), tmp_path / "a-small-direct.json")
    (tmp_path / "b-broken.json").write_text("{trunc")
    (tmp_path / "c-foreign.json").write_text(json.dumps({"format": "other"}))
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(CalibratorWarning) as rec:
        cs = CalibratorSet.load_dir(tmp_path)
    assert len(rec) == 2
    assert "b-broken.json" in str(rec[0].message)
    assert set(cs) == {("small", "direct")}

    p, how = cs.confidence("small", "direct", {"answer_min_logprob": -1.0})
    assert p == pytest.approx(0.5) and how == "calibrated: logistic on 1 feature"
    p, why = cs.confidence("small", "cot", {"answer_min_logprob": -1.0})
    assert p is None and "no calibrator" in why
    p, why = cs.confidence("small", "direct", {"answer_min_logprob": None})
    assert p is None and "no calibrator features present" in why

    with pytest.warns(CalibratorWarning, match="does not exist"):
        assert CalibratorSet.load_dir(tmp_path / "nope") == {}


def test_calibrator_set_wildcard_strategy(tmp_path):
    save_artifact(dict(_valid_artifact(), strategy="*"), tmp_path / "any.json")
    cs = CalibratorSet.load_dir(tmp_path)
    p, how = cs.confidence("small", "cot", {"answer_min_logprob": -1.0})
    assert p == pytest.approx(0.5)


def test_runtime_module_does_not_import_sklearn():
    import effreason_agents.adapters.calibrator as mod

    src = Path(mod.__file__).read_text(encoding="utf-8")
    assert "sklearn" not in src.replace("no scikit-learn", "")
    import router_training.calibration as fit_mod

    assert "sklearn" not in Path(fit_mod.__file__).read_text(encoding="utf-8")


# -- thresholds ------------------------------------------------------------------


def test_threshold_curve_and_pick():
    p = [0.9, 0.8, 0.3, 0.1, None]
    small = [True, True, False, False, True]
    large = [True, True, True, False, True]
    cs = [1.0] * 5
    cl = [10.0] * 5
    curve = threshold_curve(p, small, large, cs, cl, thresholds=[0.0, 0.5, 0.85, 1.01])
    by_t = {pt["threshold"]: pt for pt in curve}
    # t=0: keep all with p (4), None escalates
    assert by_t[0.0]["escalation_rate"] == pytest.approx(0.2)
    assert by_t[0.0]["accuracy"] == pytest.approx(3 / 5)
    assert by_t[0.0]["cost"] == pytest.approx((5 * 1 + 10) / 5)
    # t=0.5: keep 0.9, 0.8 → right; escalate 0.3 (large right), 0.1 (large wrong), None (large right)
    assert by_t[0.5]["escalation_rate"] == pytest.approx(0.6)
    assert by_t[0.5]["accuracy"] == pytest.approx(4 / 5)
    assert by_t[0.5]["cost"] == pytest.approx((5 + 30) / 5)
    assert by_t[0.85]["escalation_rate"] == pytest.approx(0.8)
    assert by_t[0.85]["accuracy"] == pytest.approx(4 / 5)
    assert by_t[1.01]["escalation_rate"] == 1.0
    assert by_t[1.01]["cost"] == pytest.approx(11.0)

    assert pick_threshold(curve, min_accuracy=0.8)["threshold"] == 0.5  # cheapest at 80%
    assert pick_threshold(curve, max_escalation_rate=0.3)["threshold"] == 0.0
    assert pick_threshold(curve)["threshold"] == 0.5  # most accurate, then cheapest
    with pytest.raises(CalibratorError, match="no threshold"):
        pick_threshold(curve, min_accuracy=0.9)
    with pytest.raises(ValueError):
        threshold_curve([0.5], [True, False], [True], [1.0], [1.0])

    default = threshold_curve(p, small, large, cs, cl)
    assert len(default) == 101 and default[0]["threshold"] == 0.0 and default[-1]["threshold"] == 1.0


def test_one_sigmoid_for_floats_and_arrays() -> None:
    import effreason_agents.adapters.calibrator as runtime
    import effreason_agents.adapters.router as router
    import router_training.calibration as fitting
    from effreason_agents.core.numeric import sigmoid

    assert sigmoid(0) == 0.5 and type(sigmoid(0.0)) is float and type(sigmoid(np.float64(1.0))) is float
    assert sigmoid(2.0) == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-15)
    assert sigmoid(800.0) == 1.0 and sigmoid(-800.0) == 0.0  # no OverflowError
    assert sigmoid(-40.0) == pytest.approx(math.exp(-40.0), rel=1e-12)  # tiny tails are kept, not rounded to 0
    assert math.isnan(sigmoid(math.nan))
    x = np.array([[-1000.0, -2.0, 0.0], [2.0, 1000.0, 40.0]])
    with np.errstate(over="raise", invalid="raise"):  # no overflow in either tail
        y = sigmoid(x)
    assert y.shape == x.shape and y.dtype == np.float64
    assert y[0, 1] + y[1, 0] == pytest.approx(1.0) and y[0, 2] == 0.5
    assert (y[0, 0], y[1, 1]) == (0.0, 1.0)
    assert np.array_equal(y, np.array([[sigmoid(float(v)) for v in row] for row in x]))
    assert math.isnan(sigmoid(np.array([math.nan]))[0])
    # the router, the run-time calibrator and the fitter all use this one function
    assert router.sigmoid is runtime.sigmoid is fitting.sigmoid is sigmoid
    assert not any(hasattr(m, "_sigmoid") for m in (router, runtime, fitting))


def test_judgments_logged_beside_the_signals_are_never_calibrator_features():
    from effreason_agents.adapters.scorer import CALIBRATED_SIGNAL, SCORER_SIGNAL

    rows = synthetic_rows(n=200, seed=5)
    for r in rows:  # a scorer that knows the answer: a calibrator must still not learn from it
        r["signals"] = {**r["signals"], SCORER_SIGNAL: float(r["correct"]), CALIBRATED_SIGNAL: 0.5 + 0.1 * r["correct"]}
    art = fit_calibrator(rows, "small", "direct")
    assert SCORER_SIGNAL not in art["training"]["candidate_features"]
    assert CALIBRATED_SIGNAL not in art["training"]["candidate_features"]
