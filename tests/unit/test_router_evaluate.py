"""Router evaluation: folds by prompt, out-of-fold predictions, RouteLLM and RouterBench
metrics against hand-computed cases, policy curves, choosing an operating point, and
cross-validation of a trivial prompt-length router."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from effreason_agents.evaluation.metrics import MetricsError, PGRUndefinedError, oracle_curve
from router_training.evaluate import (
    TAU_GRID,
    EvaluationError,
    costs_for,
    cross_validate,
    default_pair,
    lambda_grid,
    many_arm_report,
    oof_predictions,
    pick_policy,
    plot_pgr,
    policy_curve,
    prompt_folds,
    two_arm_report,
)
from router_training.table import OutcomeTable

approx = pytest.approx

# per-item gains strong − weak: 0 0 0 −1 +1 +1 +1 +1 +1 0
WEAK = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
STRONG = [1, 1, 1, 0, 1, 1, 1, 1, 1, 0]


def pair_table(weak: Sequence[float] = WEAK, strong: Sequence[float] = STRONG) -> OutcomeTable:
    n = len(weak)
    return OutcomeTable([f"q{i}" for i in range(n)], ["small:direct", "large:cot"],
                        np.column_stack([weak, strong]).astype(float))


# -- folds ------------------------------------------------------------------------------


def test_prompt_folds_partition_by_prompt() -> None:
    folds = prompt_folds(23, 5, seed=3)
    assert folds.shape == (23,) and set(folds.tolist()) == set(range(5))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1  # balanced
    assert np.array_equal(folds, prompt_folds(23, 5, seed=3))  # deterministic per seed
    assert not np.array_equal(folds, prompt_folds(23, 5, seed=4))


def test_prompt_folds_errors() -> None:
    with pytest.raises(EvaluationError, match=r"fewer prompts \(3\) than folds \(5\)"):
        prompt_folds(3, 5, seed=0)
    with pytest.raises(EvaluationError, match="at least 2 folds"):
        prompt_folds(10, 1, seed=0)
    assert issubclass(EvaluationError, MetricsError) and issubclass(EvaluationError, ValueError)


def test_oof_predictions_never_train_on_the_test_prompt() -> None:
    t = pair_table()
    seen: list[set[str]] = []

    def fit(train: OutcomeTable):  # noqa: ANN202
        trained = set(train.prompts)
        seen.append(trained)

        def predict(prompts: Sequence[str]) -> np.ndarray:
            assert not trained & set(prompts), "a test prompt was in the training fold"
            return np.tile([0.25, 0.75], (len(prompts), 1))

        return predict

    probs = oof_predictions(t, fit, k=5, seed=0)
    assert probs.shape == (10, 2) and np.allclose(probs, [[0.25, 0.75]] * 10)
    assert len(seen) == 5 and all(len(s) == 8 for s in seen)
    # every prompt is left out exactly once
    left_out = [set(t.prompts) - s for s in seen]
    assert sorted(q for s in left_out for q in s) == sorted(t.prompts)


def test_oof_predictions_checks_the_predictor() -> None:
    t = pair_table()
    with pytest.raises(EvaluationError, match=r"fold 0: the predictor returned shape \(2, 3\)"):
        oof_predictions(t, lambda _t: (lambda ps: np.zeros((len(ps), 3))), k=5)
    with pytest.raises(EvaluationError, match="probabilities in \\[0, 1\\]"):
        oof_predictions(t, lambda _t: (lambda ps: np.full((len(ps), 2), 2.0)), k=5)
    with pytest.raises(EvaluationError, match="fewer prompts"):
        oof_predictions(t, lambda _t: (lambda ps: np.zeros((len(ps), 2))), k=11)


# -- two arms ---------------------------------------------------------------------------


def test_perfect_router_matches_the_oracle() -> None:
    t = pair_table()
    r = two_arm_report(t, t.correct.copy(), "small:direct", "large:cot")
    assert r["apgr"] == approx(r["baselines"]["oracle"]["apgr"])
    assert np.allclose(r["curve"], oracle_curve(WEAK, STRONG))
    assert r["cpt50"] == approx(r["baselines"]["oracle"]["cpt50"])
    assert r["n"] == 10 and r["acc_weak"] == approx(0.4) and r["acc_strong"] == approx(0.8)
    assert r["auc"] == approx(1.0)  # 1 − P(weak right) ranks every weak failure first
    assert r["weak"] == "small:direct" and r["strong"] == "large:cot"


def test_constant_router_is_random() -> None:
    t = pair_table()
    r = two_arm_report(t, np.full((10, 2), 0.5), "small:direct", "large:cot")
    assert r["apgr"] == approx(0.5)
    assert r["cpt50"] == approx(0.5) and r["cpt80"] == approx(0.8)
    assert r["baselines"]["random"] == {"apgr": approx(0.5), "cpt50": approx(0.5), "cpt80": approx(0.8),
                                        "curve": r["baselines"]["random"]["curve"]}
    assert r["auc"] == approx(0.5)


def test_auc_hand_computed() -> None:
    # weak wrong on prompts 1 and 3; 1 − p_weak = 0.1, 0.5, 0.6, 0.7:
    # pairs (wrong, right): (0.5, 0.1) ok, (0.5, 0.6) no, (0.7, 0.1) ok, (0.7, 0.6) ok -> 3/4
    t = pair_table([1, 0, 1, 0], [1, 1, 1, 1])
    probs = np.array([[0.9, 1], [0.5, 1], [0.4, 1], [0.3, 1]])
    assert two_arm_report(t, probs, "small:direct", "large:cot")["auc"] == approx(0.75)


def test_two_arm_uses_prompts_with_both_labels_and_thresholds_scores() -> None:
    t = OutcomeTable(["a", "b", "c", "d"], ["w", "s"],
                     np.array([[0.4, 0.9], [1.0, 1.0], [math.nan, 1.0], [0.6, 0.7]]))
    r = two_arm_report(t, np.full((4, 2), 0.5), "w", "s")
    assert r["n"] == 3  # "c" has no weak label
    # scores count as right when >= 0.5: weak [F, T, T], strong [T, T, T]
    assert r["acc_weak"] == approx(2 / 3) and r["acc_strong"] == approx(1.0)
    equal = OutcomeTable(["a", "b"], ["w", "s"], np.array([[0.4, 0.9], [0.6, 0.2]]))
    with pytest.raises(PGRUndefinedError, match="same accuracy"):
        two_arm_report(equal, np.full((2, 2), 0.5), "w", "s")
    nothing = OutcomeTable(["a", "b"], ["w", "s"], np.array([[0.4, math.nan], [math.nan, 0.2]]))
    with pytest.raises(EvaluationError, match="no prompt has a label for both 'w' and 's'"):
        two_arm_report(nothing, np.full((2, 2), 0.5), "w", "s")


def test_two_arm_errors() -> None:
    t = pair_table()
    with pytest.raises(EvaluationError, match=r"unknown strong arm 'x'; arms: small:direct, large:cot"):
        two_arm_report(t, t.correct, "small:direct", "x")
    with pytest.raises(EvaluationError, match="both 'large:cot'"):
        two_arm_report(t, t.correct, "large:cot", "large:cot")
    with pytest.raises(EvaluationError, match=r"shape \(10, 3\)"):
        two_arm_report(t, np.zeros((10, 3)), "small:direct", "large:cot")


# -- many arms --------------------------------------------------------------------------

# three arms, cost 0 / 1 / 10; each more expensive arm also gets the next prompt right
THREE = OutcomeTable(["p0", "p1", "p2", "p3"], ["small:direct", "small:cot", "large:cot"],
                     np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=float))
THREE_COSTS = {"small:direct": 0.0, "small:cot": 1.0, "large:cot": 10.0}
THREE_PROBS = THREE.correct * 0.8 + 0.1  # 0.9 where right, 0.1 where wrong


def test_threshold_curve_hand_computed() -> None:
    curve = policy_curve(THREE, THREE_PROBS, THREE_COSTS, kind="threshold")
    assert [pt["value"] for pt in curve] == list(TAU_GRID)
    by = {pt["value"]: pt for pt in curve}
    # tau = 0 (and 0.1: every P >= 0.1): the cheapest arm for everything
    for tau in (0.0, 0.1):
        assert by[tau]["accuracy"] == 0.25 and by[tau]["mean_cost"] == 0.0
        assert by[tau]["share"] == {"small:direct": 1.0, "small:cot": 0.0, "large:cot": 0.0}
    # tau = 0.5: p0 -> small:direct, p1 -> small:cot, p2 -> large:cot, p3 (no arm sure) -> most likely, cheapest tie
    for tau in (0.5, 0.9, 1.0):
        assert by[tau]["accuracy"] == 0.75 and by[tau]["mean_cost"] == approx(11 / 4)
        assert by[tau]["share"] == {"small:direct": 0.5, "small:cot": 0.25, "large:cot": 0.25}


def test_lambda_curve_spans_accuracy_to_cheapest() -> None:
    grid = lambda_grid(list(THREE_COSTS.values()))
    assert grid[0] == 0.0 and grid == sorted(grid)
    assert grid[-1] * 1.0 > 1.0  # large enough that the cheapest arm always wins (smallest gap is 1)
    assert lambda_grid([2.0, 2.0]) == [0.0]
    curve = policy_curve(THREE, THREE_PROBS, THREE_COSTS, kind="lambda")
    assert curve[0]["accuracy"] == 0.75 and curve[0]["mean_cost"] == approx(11 / 4)  # lambda 0: most likely arm
    assert curve[-1]["share"]["small:direct"] == 1.0 and curve[-1]["accuracy"] == 0.25
    costs = [pt["mean_cost"] for pt in curve]
    assert costs == sorted(costs, reverse=True)  # a larger penalty never costs more
    with pytest.raises(EvaluationError, match="'threshold' or 'lambda'"):
        policy_curve(THREE, THREE_PROBS, THREE_COSTS, kind="greedy")
    with pytest.raises(EvaluationError, match="no cost for arm large:cot"):
        policy_curve(THREE, THREE_PROBS, {"small:direct": 0, "small:cot": 1}, kind="lambda")


def test_many_arm_report_hand_computed() -> None:
    r = many_arm_report(THREE, THREE_PROBS, THREE_COSTS)
    assert r["n"] == 4
    assert r["arms"]["small:cot"] == {"accuracy": 0.5, "mean_cost": 1.0}
    # fixed hull (0, .25) (1, .5) (10, .75): (1 * .375 + 9 * .625) / 10
    assert r["fixed"]["hull_area"] == approx(0.6)
    # policy points (0, .25) and (2.75, .75), flat to cost 10: (2.75 * .5 + 7.25 * .75) / 10
    assert r["policy"]["hull_area"] == approx(0.68125)
    assert r["policy"]["hull"] == [[0.0, 0.25], [2.75, 0.75]] and r["policy"]["kind"] == "threshold"
    # lambda in (0.08, 0.8) adds (0.25, .5): p1 -> small:cot, p2 -> small:direct
    assert r["lambda"]["hull"] == [[0.0, 0.25], [0.25, 0.5], [2.75, 0.75]]
    assert r["lambda"]["hull_area"] == approx((0.25 * 0.375 + 2.5 * 0.625 + 7.25 * 0.75) / 10)
    assert r["baselines"]["oracle"] == {"accuracy": 0.75, "mean_cost": approx(2.75)}
    assert r["baselines"]["random"] == {"accuracy": approx(0.5), "mean_cost": approx(11 / 3)}
    assert len(r["points"]["threshold"]) == len(TAU_GRID)


def test_many_arm_report_needs_complete_rows() -> None:
    t = OutcomeTable(["a", "b"], ["x", "y"], np.array([[1, math.nan], [math.nan, 0]]))
    with pytest.raises(EvaluationError, match="no prompt has a label for every arm"):
        many_arm_report(t, np.full((2, 2), 0.5), {"x": 0, "y": 1})


# -- picking an operating point ---------------------------------------------------------


def point(value: float, acc: float, cost: float, large: float) -> dict:
    return {"value": value, "accuracy": acc, "mean_cost": cost,
            "share": {"small:direct": 1 - large, "large:cot": large}}


CURVE = [point(0.0, 0.5, 1.0, 0.0), point(0.5, 0.7, 3.0, 0.2), point(0.8, 0.8, 5.0, 0.5),
         point(0.9, 0.8, 6.0, 0.6), point(1.0, 0.75, 9.0, 1.0)]


def test_pick_policy_targets() -> None:
    assert pick_policy(CURVE)["value"] == 0.8  # most accurate, cheaper of the two at 0.8
    assert pick_policy(CURVE, max_share=("large", 0.2))["value"] == 0.5
    assert pick_policy(CURVE, max_share=("large", 0.1))["value"] == 0.0
    assert pick_policy(CURVE, max_share=("large:cot", 0.55))["value"] == 0.8  # an arm name works too
    assert pick_policy(CURVE, max_mean_cost=4.0)["value"] == 0.5
    assert pick_policy(CURVE, max_mean_cost=100)["value"] == 0.8
    assert pick_policy(CURVE, min_accuracy=0.75)["value"] == 0.8  # cheapest reaching it
    assert pick_policy(CURVE, min_accuracy=0.6)["value"] == 0.5
    assert pick_policy(CURVE, min_accuracy=0.6, max_share=("large", 0.2))["value"] == 0.5
    chosen = pick_policy(CURVE, min_accuracy=0.6)
    assert chosen == CURVE[1] and chosen is not CURVE[1]


def test_pick_policy_no_solution() -> None:
    with pytest.raises(EvaluationError, match=r"lowest mean cost is 1 \(value 0\); raise the cap"):
        pick_policy(CURVE, max_mean_cost=0.5)
    with pytest.raises(EvaluationError, match=r"best accuracy is 0.8 \(value 0.8\); lower the target"):
        pick_policy(CURVE, min_accuracy=0.9)
    with pytest.raises(EvaluationError, match=r"at most 20% of calls to tier 'large' and accuracy at least 0.75"):
        pick_policy(CURVE, max_share=("large", 0.2), min_accuracy=0.75)
    with pytest.raises(EvaluationError, match=r"no operating point sends at most 10% of calls to tier 'large': "
                                              r"the lowest share is 20.0% \(value 0.5\)"):
        pick_policy(CURVE[1:], max_share=("large", 0.1))
    with pytest.raises(EvaluationError, match=r"no arm of tier 'medium' among the arms small:direct, large:cot"):
        pick_policy(CURVE, max_share=("medium", 0.5))
    with pytest.raises(EvaluationError, match="no operating points"):
        pick_policy([])


def test_pick_policy_on_a_real_curve() -> None:
    curve = policy_curve(THREE, THREE_PROBS, THREE_COSTS, kind="threshold")
    assert pick_policy(curve, max_share=("large", 0.0))["accuracy"] == 0.25
    best = pick_policy(curve, min_accuracy=0.7)
    assert best["accuracy"] == 0.75 and best["mean_cost"] == approx(2.75)


# -- cross-validation -------------------------------------------------------------------


def length_table(n: int = 240, seed: int = 1) -> OutcomeTable:
    """Short prompts are easy for the small arm; the large arm is right 90% of the time."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 80, size=n)
    prompts = [f"{i}:" + "x" * int(L) for i, L in enumerate(lengths)]
    weak = rng.random(n) < 1 - lengths / 80
    strong = rng.random(n) < 0.9
    correct = np.column_stack([weak, strong]).astype(float)
    cost = np.tile([0.0, 0.001], (n, 1))
    tokens = np.tile([5.0, 80.0], (n, 1))
    return OutcomeTable(prompts, ["large:cot", "small:direct"][::-1], correct, cost, tokens, "synthetic")


def length_fit(train: OutcomeTable):  # noqa: ANN201
    """P(small right) falls with prompt length (fitted by a 1-D least-squares line); P(large right)
    is the training accuracy."""
    L = np.array([len(p) for p in train.prompts], dtype=float)
    y = train.correct[:, 0]
    slope, icpt = np.polyfit(L, y, 1)
    strong = float(np.nanmean(train.correct[:, 1]))

    def predict(prompts: Sequence[str]) -> np.ndarray:
        x = np.array([len(p) for p in prompts], dtype=float)
        return np.column_stack([np.clip(icpt + slope * x, 0, 1), np.full(len(x), strong)])

    return predict


def test_cross_validate_length_router_beats_random() -> None:
    t = length_table()
    r = cross_validate(t, length_fit, k=5, seed=0)
    assert r["weak"] == "small:direct" and r["strong"] == "large:cot"
    assert r["cost_unit"] == "usd" and r["costs"] == approx({"small:direct": 0.0, "large:cot": 0.001})
    assert r["k"] == 5 and r["arms"] == ["small:direct", "large:cot"] and r["n"] == 240
    assert r["baselines"]["random"]["apgr"] == approx(0.5)
    assert r["apgr"] > 0.6 and r["apgr"] <= r["baselines"]["oracle"]["apgr"] + 1e-9
    assert r["auc"] > 0.7
    assert r["cpt50"] < 0.5
    assert len(r["curve"]) == 101 and r["curve"][0] == [0.0, 0.0]
    many = r["many_arm"]
    assert many["policy"]["hull_area"] > many["fixed"]["hull_area"]
    assert r["notes"] == []


def test_cross_validate_defaults_and_units() -> None:
    t = length_table(60)
    free = OutcomeTable(t.prompts, t.arms, t.correct, np.zeros_like(t.cost), t.tokens)
    assert costs_for(free) == ({"small:direct": 5.0, "large:cot": 80.0}, "output_tokens")
    bare = OutcomeTable(t.prompts, t.arms, t.correct)
    assert costs_for(bare) == ({"small:direct": 0.0, "large:cot": 1.0}, "arm order")
    assert default_pair(bare) == ("small:direct", "large:cot")
    r = cross_validate(bare, length_fit, k=3, costs={"small:direct": 2.0, "large:cot": 1.0})
    assert r["cost_unit"] == "given" and r["weak"] == "large:cot"  # the cheaper arm by the given costs
    r2 = cross_validate(bare, length_fit, k=3, strong="small:direct")
    assert (r2["weak"], r2["strong"]) == ("large:cot", "small:direct")
    with pytest.raises(EvaluationError, match="unknown weak arm 'nope'"):
        cross_validate(bare, length_fit, weak="nope")


def test_cross_validate_equal_arms_gives_a_note() -> None:
    t = pair_table([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1])
    r = cross_validate(t, lambda _t: (lambda ps: np.full((len(ps), 2), 0.5)), k=3)
    assert r["apgr"] is None and r["cpt50"] is None and r["n"] == 6
    assert any("no APGR/CPT" in n for n in r["notes"])
    assert r["many_arm"] is not None


# -- plot -------------------------------------------------------------------------------


def test_plot_pgr_writes_png(tmp_path: Path) -> None:
    t = pair_table()
    r = two_arm_report(t, t.correct.copy(), "small:direct", "large:cot")
    curves = {"router": r["curve"], "mf": r["curve"], **{n: b["curve"] for n, b in r["baselines"].items()}}
    out = plot_pgr(curves, tmp_path / "sub" / "pgr.png", weak="small:direct", strong="large:cot")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["pgr.png"]  # no temporary file left behind
    with pytest.raises(EvaluationError, match="no curves"):
        plot_pgr({}, tmp_path / "x.png")
