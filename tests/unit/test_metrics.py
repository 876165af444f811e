"""Metrics: every value below is computed by hand from the definitions in the docstrings."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from effreason_agents.errors import EffReasonError
from effreason_agents.evaluation.metrics import (
    MetricsError,
    PGRUndefinedError,
    apgr,
    cost_accuracy_hull,
    cpt,
    hull_area,
    many_arm_baselines,
    oracle_curve,
    random_curve,
    router_curve,
    summarize,
    two_arm_summary,
)

approx = pytest.approx


def flat(curve: list[list[float]]) -> list[float]:
    return [v for point in curve for v in point]


def pgr_values(curve: list[list[float]]) -> list[float]:
    return [p for _, p in curve]


# -- summarize ----------------------------------------------------------------------------


def test_summarize_hand_computed() -> None:
    rows = [
        {"correct": True, "output_tokens": 10, "cost_usd": "0.001", "latency_s": 1.0, "escalated": False, "large_calls": 0, "attempts": 1},
        {"correct": False, "output_tokens": 20, "cost_usd": 0.002, "latency_s": 2.0, "escalated": True, "large_calls": 1, "attempts": 2},
        {"correct": True, "output_tokens": 30, "cost_usd": Decimal("0.003"), "latency_s": None, "escalated": True, "large_calls": 2, "attempts": 3},
        {"correct": True, "output_tokens": 40, "cost_usd": 0, "latency_s": 4.0, "escalated": False, "large_calls": 0, "attempts": 1},
    ]
    s = summarize(rows)
    assert s["n"] == 4
    assert s["accuracy"] == 0.75
    assert s["mean_output_tokens"] == 25
    # linear percentile: position 0.9 * 3 = 2.7 between 30 and 40
    assert s["p90_output_tokens"] == approx(37.0)
    assert s["mean_cost_usd"] == approx(0.0015)
    # latencies without the None: [1, 2, 4]; p50 = 2, p90 at position 1.8 = 2 + 0.8 * 2
    assert s["p50_latency_s"] == approx(2.0)
    assert s["p90_latency_s"] == approx(3.6)
    assert s["tokens_per_correct"] == approx(100 / 3)
    assert s["escalation_rate"] == 0.5
    assert s["large_call_share"] == 0.5  # rows with >= 1 large call, not the number of calls
    assert s["mean_attempts"] == 1.75
    json.dumps(s)
    assert all(type(v) in (int, float) for v in s.values())


def test_summarize_sums_money_as_decimal_and_omits_absent_keys() -> None:
    rows = [
        {"correct": False, "output_tokens": 5, "cost_usd": 0.1, "latency_s": None},
        {"correct": False, "output_tokens": 5, "cost_usd": 0.2, "latency_s": None},
    ]
    s = summarize(rows)
    assert s["mean_cost_usd"] == 0.15  # exactly: 0.1 + 0.2 summed as Decimal
    assert s["tokens_per_correct"] is None  # nothing correct
    assert s["p50_latency_s"] is None and s["p90_latency_s"] is None
    assert not {"escalation_rate", "large_call_share", "mean_attempts"} & set(s)


def test_summarize_rejects_empty_and_bad_cost() -> None:
    with pytest.raises(MetricsError, match="no rows"):
        summarize([])
    with pytest.raises(MetricsError, match="row 0"):
        summarize([{"correct": True, "output_tokens": 1, "cost_usd": "abc", "latency_s": None}])


# -- two models ---------------------------------------------------------------------------

# Case A: the strong model is never wrong where the weak one is right.
#   weak right on items 0-3, strong right on 0-6: 3 items gain, gap = 3 items.
WEAK_A = [True] * 4 + [False] * 6
STRONG_A = [True] * 7 + [False] * 3

# Case B: one item (3) where the weak model is right and the strong one wrong.
#   gains per item: 0 0 0 -1 +1 +1 +1 +1 +1 0; 5 gains, 1 loss, gap = 4 items.
WEAK_B = [True, True, True, True, False, False, False, False, False, False]
STRONG_B = [True, True, True, False, True, True, True, True, True, False]


def test_random_curve_is_the_diagonal() -> None:
    curve = random_curve(WEAK_B, STRONG_B, points=101)
    assert len(curve) == 101
    assert all(c == approx(p) for c, p in curve)
    assert apgr(curve) == approx(0.5)
    assert cpt(curve, 0.5) == approx(0.5)
    assert cpt(curve, 0.8) == approx(0.8)


def test_oracle_reaches_pgr_1_at_the_share_of_items_it_can_fix() -> None:
    curve = oracle_curve(WEAK_A, STRONG_A, points=11)
    # PGR = k/3 for k <= 3 items sent, then 1: reaches 1 at c = 3/10 (weak wrong & strong right)
    assert pgr_values(curve) == approx([0, 1 / 3, 2 / 3, 1, 1, 1, 1, 1, 1, 1, 1])
    assert cpt(curve, 1.0) == approx(0.3)
    assert cpt(curve, 0.5) == approx(0.15)
    # area: triangle 0.3 * 1 / 2 + rectangle 0.7 * 1
    assert apgr(curve) == approx(0.85)
    assert apgr(oracle_curve(WEAK_A, STRONG_A, points=101)) == approx(0.85)


def test_oracle_exceeds_1_when_weak_beats_strong_on_some_items() -> None:
    curve = oracle_curve(WEAK_B, STRONG_B, points=11)
    # cumulative gain 0,1,2,3,4,5,5,5,5,5,4 over a gap of 4
    assert pgr_values(curve) == approx([0, 0.25, 0.5, 0.75, 1, 1.25, 1.25, 1.25, 1.25, 1.25, 1])
    # trapezoid: 0.1 * (sum of values - (first + last) / 2) = 0.1 * (9.75 - 0.5) = 0.925
    assert apgr(curve) == approx(0.925)
    assert cpt(curve, 1.0) == approx(0.4)
    assert cpt(curve, 0.5) == approx(0.2)
    assert cpt(curve, 0.8) == approx(0.32)
    # a finer grid is the same piecewise-linear curve
    fine = oracle_curve(WEAK_B, STRONG_B, points=101)
    assert apgr(fine) == approx(0.925)
    assert dict((round(c, 6), p) for c, p in fine)[0.35] == approx(0.875)


def test_perfect_score_router_equals_the_oracle() -> None:
    gains = [int(s) - int(w) for w, s in zip(WEAK_B, STRONG_B)]
    oracle = oracle_curve(WEAK_B, STRONG_B)
    assert flat(router_curve(WEAK_B, STRONG_B, gains)) == approx(flat(oracle))
    # distinct scores in the same order give the same curve
    distinct = [g + i * 1e-3 for i, g in enumerate(gains)]
    assert flat(router_curve(WEAK_B, STRONG_B, distinct)) == approx(flat(oracle))
    assert apgr(router_curve(WEAK_B, STRONG_B, gains)) == approx(0.925)


def test_router_curve_hand_computed_with_interpolation() -> None:
    weak = [False, False, True, False]
    strong = [True, True, True, False]  # gap 2 items
    scores = [0.9, 0.1, 0.8, 0.5]  # sends items 0 (+1), 2 (0), 3 (0), 1 (+1)
    curve = router_curve(weak, strong, scores, points=9)
    assert pgr_values(curve) == approx([0, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.75, 1])
    # trapezoid at step 1/8: (0 + .25 + 5 * .5 + .75 + 1 - (0 + 1) / 2) / 8
    assert apgr(curve) == approx(0.5)
    assert cpt(curve, 0.5) == approx(0.25)
    assert cpt(curve, 0.8) == approx(0.9)  # 0.75 + 0.3 / 0.5 * 0.25


def test_router_ties_are_sent_in_expected_random_order() -> None:
    weak = [False, False, True, False]
    strong = [True, True, True, False]
    # items 0 and 2 tie on top (gains +1, 0), items 1 and 3 below (gains +1, 0):
    # expected gain grows by 1/2 per item either way -> the diagonal
    curve = router_curve(weak, strong, [1, 0, 1, 0], points=5)
    assert pgr_values(curve) == approx([0, 0.25, 0.5, 0.75, 1])
    # all scores equal: the random router
    assert apgr(router_curve(WEAK_B, STRONG_B, [0.0] * 10)) == approx(0.5)


def test_router_curve_rejects_bad_scores() -> None:
    with pytest.raises(MetricsError, match="scores"):
        router_curve(WEAK_B, STRONG_B, [1.0] * 3)
    with pytest.raises(MetricsError, match="finite"):
        router_curve(WEAK_B, STRONG_B, [float("nan")] * 10)
    with pytest.raises(MetricsError, match="same items"):
        random_curve(WEAK_B, STRONG_B[:-1])


def test_cpt_interpolates_on_a_hand_made_curve() -> None:
    curve = [[0.0, 0.0], [0.5, 0.4], [1.0, 1.0]]
    assert cpt(curve, 0.5) == approx(0.5 + 0.1 / 0.6 * 0.5)
    assert cpt(curve, 0.4) == approx(0.5)
    assert cpt(curve, 0.0) == 0.0
    assert cpt(curve, 1.0) == approx(1.0)
    assert cpt(curve, 1.1) is None
    # the first crossing counts, even if the curve dips afterwards
    bumpy = [[0.0, 0.0], [0.5, 0.9], [0.75, 0.6], [1.0, 1.0]]
    assert cpt(bumpy, 0.8) == approx(0.8 / 0.9 * 0.5)
    assert apgr(curve) == approx(0.5 * 0.4 / 2 + 0.5 * 1.4 / 2)


def test_equal_accuracies_make_pgr_undefined() -> None:
    weak = [True, False, True, False]
    strong = [False, True, True, False]
    for call in (
        lambda: random_curve(weak, strong),
        lambda: oracle_curve(weak, strong),
        lambda: router_curve(weak, strong, [1, 2, 3, 4]),
        lambda: two_arm_summary(weak, strong, [1, 2, 3, 4]),
    ):
        with pytest.raises(PGRUndefinedError, match="same accuracy") as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, EffReasonError)


def test_two_arm_summary_shape() -> None:
    s = two_arm_summary(WEAK_B, STRONG_B)
    assert s["acc_weak"] == 0.4 and s["acc_strong"] == 0.8
    assert "router" not in s and set(s["curves"]) == {"random", "oracle"}
    assert s["random"] == approx({"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8})
    assert s["oracle"] == approx({"apgr": 0.925, "cpt50": 0.2, "cpt80": 0.32})
    with_router = two_arm_summary(WEAK_B, STRONG_B, scores=list(range(10)))
    assert set(with_router["router"]) == {"apgr", "cpt50", "cpt80"}
    assert len(with_router["curves"]["router"]) == 101
    text = json.dumps(with_router)
    assert "NaN" not in text
    assert all(type(v) is float for c in with_router["curves"].values() for p in c for v in p)


# -- many arms ----------------------------------------------------------------------------


def test_hull_drops_dominated_and_non_convex_points() -> None:
    pts = [(0, 0.2), (1, 0.5), (2, 0.6), (3, 0.9), (2.5, 0.4), (4, 0.85), (1, 0.3)]
    # (2, 0.6) lies below the segment (1, 0.5)-(3, 0.9), which is 0.7 at cost 2;
    # (2.5, 0.4), (4, 0.85) and (1, 0.3) are dominated
    assert cost_accuracy_hull(pts) == [(0.0, 0.2), (1.0, 0.5), (3.0, 0.9)]
    # area: 1 * (0.2 + 0.5) / 2 + 2 * (0.5 + 0.9) / 2 + flat 1 * 0.9 to cost 4, over the range 4
    assert hull_area(pts) == approx((0.35 + 1.4 + 0.9) / 4)


def test_hull_collinear_and_degenerate_cases() -> None:
    assert cost_accuracy_hull([(0, 0), (1, 0.5), (2, 1)]) == [(0.0, 0.0), (2.0, 1.0)]
    assert hull_area([(0, 0), (1, 0.5), (2, 1)]) == approx(0.5)
    # one cost: the range is zero, the area is the best accuracy
    assert cost_accuracy_hull([(1, 0.3), (1, 0.7)]) == [(1.0, 0.7)]
    assert hull_area([(1, 0.3), (1, 0.7)]) == approx(0.7)
    assert hull_area([(0.5, 0.4)]) == approx(0.4)
    # a cheaper arm that is also better dominates everything
    assert cost_accuracy_hull([(1, 0.9), (2, 0.5)]) == [(1.0, 0.9)]
    assert hull_area([(1, 0.9), (2, 0.5)]) == approx(0.9)
    with pytest.raises(MetricsError):
        hull_area([])


def test_many_arm_baselines_by_hand() -> None:
    correct = {
        "a": [True, False, False, False],
        "b": [True, True, False, False],
        "c": [False, True, True, False],
    }
    cost = {"a": [1, 1, 1, 1], "b": [2, 2, 2, 2], "c": [5, 4, 3, 6]}
    tokens = {"a": [10, 10, 10, 10], "b": [20, 20, 20, 20], "c": [30, 40, 50, 60]}
    out = many_arm_baselines(correct, cost, tokens)
    # picks: item0 a (1, 10), item1 b (2, 20), item2 c (3, 50), item3 nobody right -> cheapest a (1, 10)
    assert out["oracle"] == approx({"accuracy": 0.75, "mean_cost_usd": 1.75, "mean_output_tokens": 22.5})
    # mean over arms: accuracy (1/4 + 2/4 + 2/4) / 3, cost (1 + 2 + 4.5) / 3, tokens (10 + 20 + 45) / 3
    assert out["random"] == approx({"accuracy": 1.25 / 3, "mean_cost_usd": 2.5, "mean_output_tokens": 25.0})
    no_tokens = many_arm_baselines(correct, cost)
    assert no_tokens["oracle"]["mean_output_tokens"] is None
    assert no_tokens["oracle"]["accuracy"] == 0.75
    json.dumps(out)


def test_many_arm_oracle_with_free_arms_picks_fewer_tokens() -> None:
    correct = {"long": [True, True], "short": [True, False]}
    cost = {"long": [0, 0], "short": [0, 0]}
    tokens = {"long": [100, 100], "short": [5, 5]}
    out = many_arm_baselines(correct, cost, tokens)
    assert out["oracle"] == approx({"accuracy": 1.0, "mean_cost_usd": 0.0, "mean_output_tokens": 52.5})
    with pytest.raises(MetricsError, match="'short'"):
        many_arm_baselines(correct, {"long": [0, 0], "short": [0]}, tokens)
