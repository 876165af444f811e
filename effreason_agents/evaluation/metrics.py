"""Evaluation metrics: pure functions over graded outcomes.

Three groups, each function documenting its definition:

* one arm: :func:`summarize` (accuracy, output tokens, cost, latency, escalation);
* two-model routing as in RouteLLM (Ong et al. 2024): the PGR curve of a router,
  a random router and an oracle (:func:`router_curve`, :func:`random_curve`,
  :func:`oracle_curve`), :func:`apgr`, :func:`cpt` and :func:`two_arm_summary`;
  :func:`bootstrap_apgr` puts a percentile interval around a router's APGR (and
  around its difference from another router on the same items);
* many arms as in RouterBench (Hu et al. 2024): :func:`cost_accuracy_hull`,
  :func:`hull_area` (AIQ) and :func:`many_arm_baselines`.

Conventions
-----------
*Share of calls to the strong model* ``c`` is a fraction in [0, 1]. With ``n``
items, sending ``k`` of them to the strong model gives ``c = k/n``; a router
curve is evaluated at real ``k = c·n`` by linear interpolation between the
integer counts ``⌊c·n⌋`` and ``⌈c·n⌉`` (equivalently: the expected accuracy of
sending the fractional item with probability ``c·n − ⌊c·n⌋``), so every curve is
piecewise linear in ``c`` with breakpoints at multiples of ``1/n``.

*PGR* (performance gap recovered) at share ``c`` is
``(acc_router(c) − acc_weak) / (acc_strong − acc_weak)``. It is undefined when
``acc_strong == acc_weak``: every two-model function then raises
:class:`PGRUndefinedError` (a ``ValueError``). PGR is not clipped: an oracle
that profits from items the weak model gets right and the strong model gets
wrong exceeds 1 before it returns to 1 at ``c = 1``.

Money is summed as :class:`~decimal.Decimal` and reported as ``float``; every
returned number is a plain Python ``float``/``int`` (JSON-serializable).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from effreason_agents.errors import MetricsError, PGRUndefinedError

__all__ = [
    "MetricsError",
    "PGRUndefinedError",
    "summarize",
    "router_curve",
    "random_curve",
    "oracle_curve",
    "apgr",
    "cpt",
    "two_arm_summary",
    "bootstrap_apgr",
    "cost_accuracy_hull",
    "hull_area",
    "many_arm_baselines",
]

Curve = list[list[float]]

# Tolerance for comparing PGR values computed in floating point (e.g. 0.8 vs 0.7999999999).
_EPS = 1e-9


# -- one arm ------------------------------------------------------------------------------


def _to_decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None:
        raise MetricsError(f"{where}: cost_usd must be a number or a decimal string, got {value!r}")
    try:
        # str() of a float gives its shortest repr, so 0.1 becomes Decimal("0.1"), not 0.1000000000000000055...
        d = Decimal(value) if isinstance(value, (str, int)) else Decimal(str(value))
    except Exception:  # noqa: BLE001 - decimal raises InvalidOperation/TypeError/ValueError
        raise MetricsError(f"{where}: cost_usd must be a number or a decimal string, got {value!r}") from None
    if not d.is_finite():
        raise MetricsError(f"{where}: cost_usd must be finite, got {value!r}")
    return d


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q, method="linear"))


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summary of one arm over graded rows.

    Each row has ``correct`` (bool), ``output_tokens`` (int, or ``None`` when not
    known), ``cost_usd`` (``Decimal``, decimal string or number) and ``latency_s``
    (float or ``None``); optionally ``escalated`` (bool), ``large_calls`` (int) and
    ``attempts`` (int).

    Returns:

    * ``n``: number of rows; ``accuracy``: share of rows with ``correct``;
    * ``mean_output_tokens``, ``p90_output_tokens``: mean and 90th percentile of
      the known output-token counts (``None`` when no row has one);
    * ``mean_cost_usd``: the Decimal sum of ``cost_usd`` divided by ``n``, as float;
    * ``p50_latency_s``, ``p90_latency_s``: percentiles of the non-``None``
      latencies (``None`` when there are none);
    * ``tokens_per_correct``: total output tokens / number of correct rows
      (``None`` when no row is correct or no token count is known);
    * when rows carry the key: ``escalation_rate`` = share of rows with
      ``escalated``; ``large_call_share`` = share of rows that made at least one
      large-tier call (``large_calls >= 1``); ``mean_attempts`` = mean ``attempts``.
      Each is computed over the rows where the value is not ``None``.

    Percentiles use numpy's ``"linear"`` method. Empty ``rows`` raise
    :class:`MetricsError`.
    """
    if not rows:
        raise MetricsError("summarize: no rows to summarize")
    n = len(rows)
    n_correct = 0
    tokens: list[int] = []
    latencies: list[float] = []
    total_cost = Decimal(0)
    for i, row in enumerate(rows):
        if "correct" not in row:
            raise MetricsError(f"summarize: row {i} has no 'correct' value")
        n_correct += bool(row["correct"])
        tok = row.get("output_tokens")
        if tok is not None:
            tokens.append(int(tok))
        total_cost += _to_decimal(row.get("cost_usd"), f"summarize: row {i}")
        lat = row.get("latency_s")
        if lat is not None:
            latencies.append(float(lat))
    out: dict[str, Any] = {
        "n": n,
        "accuracy": n_correct / n,
        "mean_output_tokens": (sum(tokens) / len(tokens)) if tokens else None,
        "p90_output_tokens": _percentile(tokens, 90),
        "mean_cost_usd": float(total_cost / n),
        "p50_latency_s": _percentile(latencies, 50),
        "p90_latency_s": _percentile(latencies, 90),
        "tokens_per_correct": (sum(tokens) / n_correct) if (tokens and n_correct) else None,
    }
    esc = [bool(r["escalated"]) for r in rows if r.get("escalated") is not None]
    if esc:
        out["escalation_rate"] = sum(esc) / len(esc)
    large = [int(r["large_calls"]) for r in rows if r.get("large_calls") is not None]
    if large:
        out["large_call_share"] = sum(1 for x in large if x >= 1) / len(large)
    attempts = [int(r["attempts"]) for r in rows if r.get("attempts") is not None]
    if attempts:
        out["mean_attempts"] = sum(attempts) / len(attempts)
    return out


# -- two models (RouteLLM) ---------------------------------------------------------------


def _check_pair(weak: Sequence[bool], strong: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    if len(weak) != len(strong):
        raise MetricsError(f"weak has {len(weak)} items but strong has {len(strong)}; they must be the same items")
    if len(weak) == 0:
        raise MetricsError("no items: PGR needs at least one graded item")
    w = np.asarray([bool(x) for x in weak], dtype=np.int64)
    s = np.asarray([bool(x) for x in strong], dtype=np.int64)
    gap = int(s.sum() - w.sum())
    if gap == 0:
        raise PGRUndefinedError(
            f"PGR is undefined: the weak and strong models have the same accuracy ({w.sum()}/{len(w)} correct each), "
            "so there is no performance gap to recover; compare a pair whose accuracies differ"
        )
    return w, s


def _grid(points: int) -> np.ndarray:
    if int(points) < 2:
        raise MetricsError(f"points must be at least 2 (got {points})")
    return np.linspace(0.0, 1.0, int(points))


def _curve_from_gains(w: np.ndarray, s: np.ndarray, breaks_k: np.ndarray, breaks_gain: np.ndarray, points: int) -> Curve:
    """PGR on the grid from the cumulative gain (in items) at the given counts sent to strong."""
    n = len(w)
    gap = float(s.sum() - w.sum())
    cs = _grid(points)
    gain = np.interp(cs * n, breaks_k, breaks_gain)
    return [[float(c), float(g / gap)] for c, g in zip(cs, gain)]


def router_curve(weak: Sequence[bool], strong: Sequence[bool], scores: Sequence[float], points: int = 101) -> Curve:
    """PGR of a score-threshold router on ``points`` evenly spaced shares ``c`` in [0, 1].

    At share ``c`` the router sends the ``c·n`` items with the highest ``scores``
    to the strong model (higher score = more in need of the strong model) and
    the rest to the weak one; accuracy at a fractional count is interpolated
    linearly between the integer counts ``⌊c·n⌋`` and ``⌈c·n⌉``.

    Tied scores: a threshold router cannot split items with equal scores, so a
    group of ``m`` tied items is treated as sent in random order — the expected
    gain after sending ``j`` of them is ``j/m`` of the group's total gain. The
    curve is therefore linear across each tied group (no arbitrary tie order
    is rewarded or punished).

    Returns ``[[c, pgr], ...]``. Raises :class:`PGRUndefinedError` when the two
    accuracies are equal, :class:`MetricsError` on mismatched lengths or
    non-finite scores.
    """
    w, s = _check_pair(weak, strong)
    if len(scores) != len(w):
        raise MetricsError(f"scores has {len(scores)} values for {len(w)} items")
    sc = np.asarray([float(x) for x in scores], dtype=float)
    if not np.all(np.isfinite(sc)):
        raise MetricsError("scores must be finite numbers (found NaN or infinity)")
    gains = s - w
    order = np.argsort(-sc, kind="stable")
    sorted_scores = sc[order]
    sorted_gains = gains[order]
    # Breakpoints at the end of each group of tied scores.
    ends = [i + 1 for i in range(len(sc)) if i + 1 == len(sc) or sorted_scores[i + 1] != sorted_scores[i]]
    cum = np.cumsum(sorted_gains)
    breaks_k = np.asarray([0, *ends], dtype=float)
    breaks_gain = np.asarray([0, *(cum[e - 1] for e in ends)], dtype=float)
    return _curve_from_gains(w, s, breaks_k, breaks_gain, points)


def random_curve(weak: Sequence[bool], strong: Sequence[bool], points: int = 101) -> Curve:
    """Expected PGR of a router that sends each call to the strong model with probability ``c``.

    Its expected accuracy is ``(1 − c)·acc_weak + c·acc_strong``, so PGR(c) = c
    exactly and its APGR is 0.5. Raises :class:`PGRUndefinedError` when the two
    accuracies are equal (for consistency with the other curves).
    """
    _check_pair(weak, strong)
    return [[float(c), float(c)] for c in _grid(points)]


def oracle_curve(weak: Sequence[bool], strong: Sequence[bool], points: int = 101) -> Curve:
    """PGR of the best possible router at each share ``c``.

    It sends to the strong model, first, the items where the weak model is
    wrong and the strong one right (gain +1), then the items where both agree
    (gain 0), and last those where the weak model is right and the strong one
    wrong (gain −1). With ``u`` items of gain +1 it reaches its maximum at
    ``c = u/n`` — PGR 1 exactly when no item has gain −1, above 1 otherwise —
    and ends at PGR 1 at ``c = 1``. Fractional counts are interpolated as in
    :func:`router_curve`.
    """
    w, s = _check_pair(weak, strong)
    gains = np.sort(s - w)[::-1]
    breaks_k = np.arange(len(w) + 1, dtype=float)
    breaks_gain = np.concatenate([[0.0], np.cumsum(gains)]).astype(float)
    return _curve_from_gains(w, s, breaks_k, breaks_gain, points)


def _check_curve(curve: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    if len(curve) < 2:
        raise MetricsError("a PGR curve needs at least two [c, pgr] points")
    arr = np.asarray([[float(p[0]), float(p[1])] for p in curve], dtype=float)
    c, pgr = arr[:, 0], arr[:, 1]
    if np.any(np.diff(c) < 0):
        raise MetricsError("a PGR curve's shares c must be in increasing order")
    return c, pgr


def apgr(curve: Sequence[Sequence[float]]) -> float:
    """Average PGR: the area under PGR(c) over the curve's shares (c from 0 to 1), by
    the trapezoid rule over the given points.

    For curves from this module it is exact when every multiple of ``1/n`` lies on
    the grid (``points − 1`` a multiple of ``n``), otherwise a close approximation.
    A random router scores 0.5.
    """
    c, pgr = _check_curve(curve)
    return float(np.sum(np.diff(c) * (pgr[1:] + pgr[:-1]) / 2.0))


def cpt(curve: Sequence[Sequence[float]], x: float) -> float | None:
    """Call-performance threshold: the smallest share ``c`` of calls sent to the strong
    model at which PGR reaches ``x`` (a fraction: 0.5 for CPT(50%)).

    Between two grid points where PGR crosses ``x`` upwards, ``c`` is linearly
    interpolated. Returns ``None`` when the curve never reaches ``x``. PGR values
    within 1e-9 of ``x`` count as reaching it (floating-point slack).
    """
    c, pgr = _check_curve(curve)
    target = float(x)
    if pgr[0] >= target - _EPS:
        return float(c[0])
    for i in range(1, len(c)):
        if pgr[i] >= target - _EPS:
            p0, p1 = pgr[i - 1], pgr[i]
            if p1 - p0 <= 0:
                return float(c[i])
            t = min(1.0, max(0.0, (target - p0) / (p1 - p0)))
            return float(c[i - 1] + t * (c[i] - c[i - 1]))
    return None


def _policy(curve: Curve) -> dict[str, float | None]:
    return {"apgr": apgr(curve), "cpt50": cpt(curve, 0.5), "cpt80": cpt(curve, 0.8)}


def two_arm_summary(
    weak: Sequence[bool], strong: Sequence[bool], scores: Sequence[float] | None = None, points: int = 101
) -> dict[str, Any]:
    """RouteLLM metrics between a weak and a strong model on the same items.

    Returns ``{"acc_weak", "acc_strong", "random": {"apgr", "cpt50", "cpt80"},
    "oracle": {...}, "router": {...} (only when ``scores`` are given),
    "curves": {"random": [[c, pgr], ...], "oracle": ..., "router": ...}}``.
    CPT values are shares of calls (fractions), ``None`` when never reached.
    Raises :class:`PGRUndefinedError` when ``acc_strong == acc_weak``.
    """
    w, s = _check_pair(weak, strong)
    n = len(w)
    curves: dict[str, Curve] = {"random": random_curve(weak, strong, points), "oracle": oracle_curve(weak, strong, points)}
    if scores is not None:
        curves["router"] = router_curve(weak, strong, scores, points)
    out: dict[str, Any] = {"acc_weak": float(w.sum() / n), "acc_strong": float(s.sum() / n)}
    for name, curve in curves.items():
        out[name] = _policy(curve)
    out["curves"] = curves
    return out


# -- bootstrap intervals -----------------------------------------------------------------

# Resamples processed at once: bounds the (chunk × items) count matrices to a few MB.
_BOOT_CHUNK = 128


class _Ordering:
    """A router's items sorted once by descending score, split into groups of tied scores:
    what :func:`router_curve` interpolates over, prepared for many resamples."""

    def __init__(self, sc: np.ndarray, gains: np.ndarray) -> None:
        self.order = np.argsort(-sc, kind="stable")
        ss = sc[self.order]
        self.starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
        self.gains = gains[self.order]

    def apgrs(self, counts: np.ndarray, targets: np.ndarray, cs: np.ndarray) -> np.ndarray:
        """APGR (trapezoid over the shares ``cs``, gains read at ``targets`` = ``cs·n``) for each
        row of ``counts`` (how many times each item was drawn). A resample's curve is
        :func:`router_curve`'s: linear across each group of tied scores, so a group's drawn
        items count by their totals. NaN where the resample has no performance gap."""
        c = counts[:, self.order]
        size = np.add.reduceat(c, self.starts, axis=1)
        gain = np.add.reduceat(c * self.gains, self.starts, axis=1)
        b = len(c)
        zeros = np.zeros((b, 1), dtype=size.dtype)
        k = np.concatenate([zeros, np.cumsum(size, axis=1)], axis=1)
        g = np.concatenate([zeros, np.cumsum(gain, axis=1)], axis=1)
        gap = g[:, -1].astype(float)
        widths = np.diff(cs)
        out = np.full(b, np.nan)
        for r in range(b):
            if gap[r] == 0:
                continue
            # First breakpoint at or past each target: the target lies in (k[idx-1], k[idx]].
            idx = np.searchsorted(k[r], targets, side="left")
            lo = np.maximum(idx - 1, 0)
            k0, k1, g0, g1 = k[r, lo], k[r, idx], g[r, lo], g[r, idx]
            span = np.where(k1 > k0, k1 - k0, 1)
            pgr = np.where(idx == 0, 0.0, g0 + (targets - k0) * (g1 - g0) / span) / gap[r]
            out[r] = float(np.sum(widths * (pgr[1:] + pgr[:-1]) / 2.0))
        return out


def _scores_array(scores: Sequence[float], n: int, what: str) -> np.ndarray:
    if len(scores) != n:
        raise MetricsError(f"{what} has {len(scores)} values for {n} items")
    sc = np.asarray([float(x) for x in scores], dtype=float)
    if not np.all(np.isfinite(sc)):
        raise MetricsError(f"{what} must be finite numbers (found NaN or infinity)")
    return sc


def bootstrap_apgr(
    weak: Sequence[bool],
    strong: Sequence[bool],
    scores: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    baseline_scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A bootstrap percentile interval for a router's APGR.

    ``apgr`` is the router's APGR on the items as given — exactly
    ``two_arm_summary(weak, strong, scores)["router"]["apgr"]`` (101 shares, ties as in
    :func:`router_curve`). Each of ``n_boot`` resamples draws ``n`` items with
    replacement (seeded by ``seed``) and recomputes APGR by the same definition on
    the resampled items; ``low`` and ``high`` are the ``(1 − level)/2`` and
    ``(1 + level)/2`` percentiles (numpy's ``"linear"`` method) of those values.
    A resample whose weak and strong accuracies are equal has no PGR: it is skipped
    and counted in ``skipped`` (``low``/``high`` are ``None`` when every resample is).

    With ``baseline_scores`` (another router's scores on the same items), the
    comparison is paired — both routers are scored on each resample: ``diff`` is
    APGR(router) − APGR(baseline) on the items as given, ``diff_low``/``diff_high``
    the percentile interval of the per-resample differences, and ``p_better`` the
    share of (non-skipped) resamples where the router's APGR exceeds the
    baseline's by more than 1e-12 (identical routers give 0).

    Returns ``{"apgr", "low", "high", "n_boot", "level", "skipped"}`` plus ``{"diff",
    "diff_low", "diff_high", "p_better"}`` with a baseline. Raises
    :class:`PGRUndefinedError` when the two accuracies are equal on the items as
    given, :class:`MetricsError` on mismatched lengths, non-finite scores,
    ``n_boot < 1`` or a ``level`` outside (0, 1).
    """
    w, s = _check_pair(weak, strong)
    n = len(w)
    sc = _scores_array(scores, n, "scores")
    base = None if baseline_scores is None else _scores_array(baseline_scores, n, "baseline_scores")
    n_boot = int(n_boot)
    if n_boot < 1:
        raise MetricsError(f"n_boot must be at least 1 (got {n_boot})")
    level = float(level)
    if not 0.0 < level < 1.0:
        raise MetricsError(f"level must be a fraction between 0 and 1, e.g. 0.95 (got {level})")
    point = apgr(router_curve(weak, strong, sc.tolist()))
    gains = s - w
    cs = _grid(101)
    targets = cs * n
    mine = _Ordering(sc, gains)
    theirs = None if base is None else _Ordering(base, gains)
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    other = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - start)
        draws = rng.integers(0, n, size=(b, n))
        counts = np.bincount((draws + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        values[start:start + b] = mine.apgrs(counts, targets, cs)
        if theirs is not None:
            other[start:start + b] = theirs.apgrs(counts, targets, cs)
    ok = np.isfinite(values)
    q = (100.0 * (1.0 - level) / 2.0, 100.0 * (1.0 + level) / 2.0)

    def interval(x: np.ndarray) -> tuple[float | None, float | None]:
        if x.size == 0:
            return None, None
        lo, hi = np.percentile(x, q, method="linear")
        return float(lo), float(hi)

    low, high = interval(values[ok])
    out: dict[str, Any] = {"apgr": point, "low": low, "high": high, "n_boot": n_boot, "level": level,
                           "skipped": int((~ok).sum())}
    if base is not None:
        diffs = values[ok] - other[ok]
        d_low, d_high = interval(diffs)
        out.update({
            "diff": point - apgr(router_curve(weak, strong, base.tolist())),
            "diff_low": d_low,
            "diff_high": d_high,
            "p_better": float(np.mean(diffs > 1e-12)) if diffs.size else None,
        })
    return out


# -- many arms (RouterBench) -------------------------------------------------------------


def _points(points: Iterable[Sequence[float]]) -> list[tuple[float, float]]:
    pts = [(float(p[0]), float(p[1])) for p in points]
    if not pts:
        raise MetricsError("no (cost, accuracy) points")
    for p in pts:
        if not (math.isfinite(p[0]) and math.isfinite(p[1])):
            raise MetricsError(f"(cost, accuracy) points must be finite, got {p}")
    return pts


def cost_accuracy_hull(points: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """The non-decreasing upper convex hull of ``(cost, accuracy)`` points, cheapest first.

    Construction: sort by cost; keep only points more accurate than every cheaper
    point (dropping dominated ones, and all but the most accurate of equal-cost
    points); then keep the upper convex hull of what is left (a point on or below
    the segment joining its neighbours is dropped, so collinear middle points go).
    The result starts at the cheapest point, is strictly increasing in both cost
    and accuracy, and concave. Any mix of two neighbouring hull points is reachable
    by routing a share of the items to each, which is why points below it are
    not worth using.
    """
    pts = sorted(_points(points), key=lambda p: (p[0], -p[1]))
    frontier: list[tuple[float, float]] = []
    for p in pts:
        if not frontier or p[1] > frontier[-1][1]:
            frontier.append(p)
    hull: list[tuple[float, float]] = []
    for p in frontier:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Cross product of (h2 − h1) × (p − h1) ≥ 0: h2 is on or below segment h1→p.
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def hull_area(points: Sequence[Sequence[float]]) -> float:
    """RouterBench's AIQ: the area under the non-decreasing convex hull of the points,
    divided by the cost range.

    The range runs from the cheapest point's cost to the most expensive point's
    cost; beyond its last vertex the hull stays flat at its best accuracy (a
    dominated, more expensive arm cannot lower what is reachable). The result is
    therefore the hull's mean accuracy over the cost range, between the cheapest
    arm's accuracy and the best accuracy. Degenerate case: when every point has
    the same cost the range is zero, and the area is defined as the best accuracy
    (the limit of the mean over a shrinking range).
    """
    pts = _points(points)
    hull = cost_accuracy_hull(pts)
    lo = hull[0][0]
    hi = max(p[0] for p in pts)
    if hi <= lo:
        return float(hull[-1][1])
    area = 0.0
    for (x1, y1), (x2, y2) in zip(hull, hull[1:]):
        area += (x2 - x1) * (y1 + y2) / 2
    area += (hi - hull[-1][0]) * hull[-1][1]
    return float(area / (hi - lo))


def many_arm_baselines(
    correct: Mapping[str, Sequence[bool]],
    cost: Mapping[str, Sequence[float]],
    output_tokens: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Oracle and random routers over many arms graded on the same items.

    * ``oracle``: for each item, the cheapest arm that is right; when no arm is
      right, the cheapest arm (the item counts as wrong). "Cheapest" orders by
      cost, then (when given) output tokens, then the order of arms in ``correct``
      — so with all costs zero the oracle picks the shortest right answer.
    * ``random``: each item goes to an arm chosen uniformly at random; in
      expectation that is the mean over arms of each arm's accuracy, mean cost
      and mean output tokens.

    Each has ``accuracy``, ``mean_cost_usd`` (costs summed as Decimal) and
    ``mean_output_tokens`` (``None`` without ``output_tokens``).
    """
    arms = list(correct)
    if not arms:
        raise MetricsError("many_arm_baselines: no arms")
    n = len(correct[arms[0]])
    if n == 0:
        raise MetricsError("many_arm_baselines: no items")
    for a in arms:
        if a not in cost:
            raise MetricsError(f"many_arm_baselines: no costs for arm {a!r}")
        if output_tokens is not None and a not in output_tokens:
            raise MetricsError(f"many_arm_baselines: no output tokens for arm {a!r}")
        lens = {len(correct[a]), len(cost[a])} | ({len(output_tokens[a])} if output_tokens is not None else set())
        if lens != {n}:
            raise MetricsError(f"many_arm_baselines: arm {a!r} does not have exactly {n} items in every input")
    dcost = {a: [_to_decimal(v, f"arm {a!r} item {i}") for i, v in enumerate(cost[a])] for a in arms}

    o_correct = 0
    o_cost = Decimal(0)
    o_tokens = 0
    for i in range(n):
        def key(j: int) -> tuple[Decimal, int, int]:
            a = arms[j]
            return (dcost[a][i], int(output_tokens[a][i]) if output_tokens is not None else 0, j)

        right = [j for j, a in enumerate(arms) if correct[a][i]]
        pick = arms[min(right or range(len(arms)), key=key)]
        o_correct += bool(correct[pick][i])
        o_cost += dcost[pick][i]
        if output_tokens is not None:
            o_tokens += int(output_tokens[pick][i])

    k = len(arms)
    r_acc = sum(sum(bool(x) for x in correct[a]) for a in arms) / (n * k)
    r_cost = sum((sum(dcost[a], Decimal(0)) for a in arms), Decimal(0)) / (n * k)
    r_tokens = (sum(sum(int(x) for x in output_tokens[a]) for a in arms) / (n * k)) if output_tokens is not None else None
    return {
        "oracle": {
            "accuracy": o_correct / n,
            "mean_cost_usd": float(o_cost / n),
            "mean_output_tokens": (o_tokens / n) if output_tokens is not None else None,
        },
        "random": {"accuracy": float(r_acc), "mean_cost_usd": float(r_cost), "mean_output_tokens": r_tokens},
    }


# -- confidence quality: does a score separate right from wrong answers? ----------------

ECE_BINS = 10


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the average of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=float)
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties count 1/2).

    ``nan`` when only one class is present.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("auroc: scores and labels must be 1-D arrays of the same length")
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def brier(p: Sequence[float], labels: Sequence[bool]) -> float:
    """Mean squared error between predicted probabilities and the 0/1 outcomes."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(labels, dtype=float)
    if p.shape != y.shape or len(p) == 0:
        raise ValueError("brier: p and labels must be non-empty and of the same length")
    return float(np.mean((p - y) ** 2))


def ece(p: Sequence[float], labels: Sequence[bool], bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins of [0, 1]
    (p = 1 falls into the last bin): Σ (n_b / n) · |accuracy_b − mean p_b|."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(labels, dtype=float)
    if p.shape != y.shape or len(p) == 0:
        raise ValueError("ece: p and labels must be non-empty and of the same length")
    idx = np.clip(np.floor(p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(p) * abs(y[m].mean() - p[m].mean())
    return float(total)
