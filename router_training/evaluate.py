"""Evaluating routers on logged outcomes — the metrics the benchmark harness reports.

* :func:`prompt_folds`, :func:`oof_predictions`: k-fold cross-validation by prompt
  (a table's rows are unique prompts, so no prompt is ever in two folds).
* :func:`two_arm_report`: RouteLLM's view between a weak and a strong arm — APGR,
  CPT(50%), CPT(80%) of the router score ``P(strong right) − P(weak right)``, the
  AUC of the weak arm's predicted failure, and the random and oracle baselines
  (:func:`effreason_agents.evaluation.metrics.two_arm_summary`).
* :func:`policy_curve`, :func:`many_arm_report`: RouterBench's view over many arms —
  the operating points of the threshold policy (cheapest arm with ``P ≥ τ``) and the
  cost-penalized policy (``argmax P − λ·cost``), their cost/accuracy hull areas
  against the fixed arms', and the random and oracle routers.
* :func:`prediction_report`: both views of held-out predictions; :func:`cross_validate`:
  that report from k-fold out-of-fold predictions (other protocols — whole groups held
  out, train on one file and test on another — are in :mod:`router_training.protocols`).
* :func:`pick_policy`: the operating point meeting a target (share of calls to a
  tier, mean cost, accuracy), for calibrating a deployed policy from logs.
* :func:`plot_pgr`: PGR vs share of strong calls as a PNG.

Labels: a table cell in [0, 1] counts as *right* when it is at least 0.5 (scores are
thresholded, booleans are 1/0). Every returned number is a plain ``float``/``int``
(JSON-ready); metrics that are undefined are ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.evaluation.metrics import (
    MetricsError,
    PGRUndefinedError,
    auroc,
    hull_area,
    many_arm_baselines,
    two_arm_summary,
)

from effreason_agents.evaluation.outcomes import OutcomeTable
from effreason_agents.errors import EvaluationError

__all__ = [
    "EvaluationError",
    "Predictor",
    "Fit",
    "TAU_GRID",
    "costs_for",
    "cross_validate",
    "default_pair",
    "lambda_grid",
    "many_arm_report",
    "oof_predictions",
    "pair_scores",
    "pick_policy",
    "plot_pgr",
    "policy_curve",
    "prediction_report",
    "prompt_folds",
    "resolve_pair",
    "two_arm_report",
]

#: predict(prompts) -> (len(prompts), n_arms) array of P(correct), columns in the table's arm order.
Predictor = Callable[[Sequence[str]], Any]
#: fit(train_table) -> predictor.
Fit = Callable[[OutcomeTable], Predictor]

#: τ values swept by the threshold policy: 0, 0.05, …, 1.
TAU_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
_LAMBDA_POINTS = 40
_EPS = 1e-9


# -- folds and out-of-fold predictions ---------------------------------------------------


def prompt_folds(n: int, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k−1) of each of ``n`` prompts: a seeded random permutation dealt round-robin,
    so folds differ in size by at most one. Rows are unique prompts, so this splits by prompt."""
    n, k = int(n), int(k)
    if k < 2:
        raise EvaluationError(f"cross-validation needs at least 2 folds (got {k})")
    if n < k:
        raise EvaluationError(f"fewer prompts ({n}) than folds ({k}); use fewer folds or log more outcomes")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.empty(n, dtype=np.int64)
    folds[perm] = np.arange(n) % k
    return folds


def _check_probs(table: OutcomeTable, probs: Any, what: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    shape = (len(table.prompts), len(table.arms))
    if p.shape != shape:
        raise EvaluationError(f"{what} has shape {p.shape}; expected {shape} (prompts × arms {table.arms})")
    if not np.all(np.isfinite(p)):
        raise EvaluationError(f"{what} contains NaN or infinite values")
    if p.size and (p.min() < -_EPS or p.max() > 1 + _EPS):
        raise EvaluationError(f"{what} must be probabilities in [0, 1] (found {p.min():.3g} … {p.max():.3g})")
    return np.clip(p, 0.0, 1.0)


def oof_predictions(table: OutcomeTable, fit: Fit, *, k: int = 5, seed: int = 0,
                    folds: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold P(correct) for every prompt and arm, shape ``(n, a)``.

    For each of the ``k`` folds of :func:`prompt_folds` (or of ``folds``, a fold id
    0..k−1 per prompt from another splitter, which then sets ``k`` and ``seed`` aside),
    ``fit`` is called on the table without that fold and the predictor it returns is
    asked about the fold's prompts; it must return an ``(m, a)`` array of probabilities
    in the table's arm order.
    """
    if folds is None:
        folds = prompt_folds(len(table), k, seed)
    else:
        folds = np.asarray(folds, dtype=np.int64)
        if folds.shape != (len(table),) or (folds < 0).any():
            raise EvaluationError(f"folds must be a non-negative fold id per prompt ({len(table)} prompts)")
        k = int(folds.max()) + 1 if folds.size else 0
    out = np.full((len(table), len(table.arms)), np.nan)
    for f in range(k):
        test = np.flatnonzero(folds == f)
        if not test.size:
            continue
        predict = fit(table.subset(folds != f))
        pred = np.asarray(predict([table.prompts[i] for i in test]), dtype=float)
        if pred.shape != (len(test), len(table.arms)):
            raise EvaluationError(
                f"fold {f}: the predictor returned shape {pred.shape} for {len(test)} prompts; "
                f"expected {(len(test), len(table.arms))}"
            )
        out[test] = pred
    return _check_probs(table, out, "out-of-fold predictions")


# -- two arms (RouteLLM) ----------------------------------------------------------------


def _arm_index(table: OutcomeTable, arm: str, role: str) -> int:
    if arm not in table.arms:
        raise EvaluationError(f"unknown {role} arm {arm!r}; arms: {', '.join(table.arms)}")
    return table.arms.index(arm)


def _policy_metrics(summary: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {k: summary[name][k] for k in ("apgr", "cpt50", "cpt80")}


def pair_scores(table: OutcomeTable, probs: Any, weak: str, strong: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The items :func:`two_arm_report` scores: ``(rows, w, s, pw, ps)`` — ``rows`` a mask of
    the prompts where both arms have a label, ``w``/``s`` whether the weak/strong arm is
    right there (labels thresholded at 0.5), ``pw``/``ps`` the predicted P(right) of each.
    The router score is ``ps − pw``. Raises :class:`EvaluationError` for an unknown arm,
    the same arm twice, or no prompt with both labels."""
    p = _check_probs(table, probs)
    iw, js = _arm_index(table, weak, "weak"), _arm_index(table, strong, "strong")
    if iw == js:
        raise EvaluationError(f"the weak and strong arms are both {weak!r}; pick two different arms")
    both = np.isfinite(table.correct[:, iw]) & np.isfinite(table.correct[:, js])
    if not both.any():
        raise EvaluationError(f"no prompt has a label for both {weak!r} and {strong!r}")
    return both, table.correct[both, iw] >= 0.5, table.correct[both, js] >= 0.5, p[both, iw], p[both, js]


def two_arm_report(table: OutcomeTable, probs: Any, weak: str, strong: str) -> dict[str, Any]:
    """RouteLLM metrics of the router ``probs`` between ``weak`` and ``strong``.

    Over the prompts where both arms have a label (thresholded at 0.5):

    * router score = ``P(strong right) − P(weak right)``; at share ``c`` the ``c·n``
      prompts with the highest score go to the strong arm
      (:func:`~effreason_agents.evaluation.metrics.router_curve`, ties treated as random order);
    * ``apgr``, ``cpt50``, ``cpt80``: area under PGR(c) and the smallest share
      reaching PGR 50% / 80% (``None`` when never reached);
    * ``auc``: AUROC of ``1 − P(weak right)`` against "the weak arm is wrong" — how
      well the router knows when the cheap arm fails, the signal escalation needs
      (``None`` when the weak arm is always right or always wrong on these prompts);
    * ``baselines``: ``random`` (APGR 0.5) and ``oracle`` (APGR/CPT of the best
      possible ordering), each with its ``curve``; ``curve``: the router's PGR curve
      ``[[share, pgr], ...]`` on 101 shares.

    Returns ``{"apgr", "cpt50", "cpt80", "auc", "n", "weak", "strong", "acc_weak",
    "acc_strong", "baselines": {"random": {"apgr", "cpt50", "cpt80", "curve"},
    "oracle": {...}}, "curve"}``. Raises :class:`~effreason_agents.evaluation.metrics.PGRUndefinedError`
    when the two arms are equally accurate on these prompts, :class:`EvaluationError`
    when no prompt has both labels.
    """
    both, w, s, pw, ps = pair_scores(table, probs, weak, strong)
    summary = two_arm_summary(w.tolist(), s.tolist(), (ps - pw).tolist())
    auc = auroc((1.0 - pw).tolist(), (~w).tolist())
    curves = summary["curves"]
    return {
        **_policy_metrics(summary, "router"),
        "auc": None if np.isnan(auc) else float(auc),
        "n": int(both.sum()),
        "weak": weak,
        "strong": strong,
        "acc_weak": summary["acc_weak"],
        "acc_strong": summary["acc_strong"],
        "baselines": {name: {**_policy_metrics(summary, name), "curve": curves[name]} for name in ("random", "oracle")},
        "curve": curves["router"],
    }


# -- many arms (RouterBench) ------------------------------------------------------------


def _cost_vector(table: OutcomeTable, costs: Mapping[str, float]) -> np.ndarray:
    missing = [a for a in table.arms if a not in costs]
    if missing:
        raise EvaluationError(f"no cost for arm{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    c = np.asarray([float(costs[a]) for a in table.arms], dtype=float)
    if not np.all(np.isfinite(c)) or (c < 0).any():
        raise EvaluationError(f"arm costs must be finite and non-negative: {dict(zip(table.arms, c.tolist()))}")
    return c


def _complete(table: OutcomeTable) -> np.ndarray:
    rows = np.isfinite(table.correct).all(axis=1)
    if not rows.any():
        raise EvaluationError(
            "no prompt has a label for every arm, so policies over all arms cannot be scored; "
            f"select arms that were run on the same prompts (arms: {', '.join(table.arms)})"
        )
    return rows


def lambda_grid(costs: Sequence[float]) -> list[float]:
    """λ values for the cost-penalized policy, in accuracy per unit of the given costs.

    With ``span`` = most expensive − cheapest cost, the grid is 0 followed by
    ``_LAMBDA_POINTS`` geometrically spaced multiples ``g/span`` with ``g`` from 10⁻³
    (nearly "most likely arm") to twice ``span`` over the smallest gap between the
    cheapest cost and another (large enough that the cheapest arm always wins, since
    probabilities differ by at most 1). Values are rounded to 6 significant digits and
    the rounded values are the ones applied. Equal costs give ``[0.0]``.
    """
    c = np.asarray(list(costs), dtype=float)
    lo, hi = float(c.min()), float(c.max())
    span = hi - lo
    if span <= 0:
        return [0.0]
    gap = float(min(x - lo for x in c if x > lo))
    top = max(2.0 * span / gap, 1.0)
    grid = np.geomspace(1e-3, top, _LAMBDA_POINTS) / span
    return [0.0, *sorted({float(f"{x:.6g}") for x in grid})]


def _choices(probs: np.ndarray, cost: np.ndarray, kind: str, value: float) -> np.ndarray:
    """Arm index chosen per row. Columns are visited cheapest first (ties in table order),
    so every tie on P (or on P − λ·cost) goes to the cheaper arm."""
    order = np.argsort(cost, kind="stable")
    p = probs[:, order]
    if kind == "threshold":
        ok = p >= value - _EPS
        pick = np.where(ok.any(axis=1), ok.argmax(axis=1), p.argmax(axis=1))
    else:
        pick = (p - value * cost[order][None, :]).argmax(axis=1)
    return order[pick]


def policy_curve(table: OutcomeTable, probs: Any, costs: Mapping[str, float], kind: str = "threshold") -> list[dict[str, Any]]:
    """Operating points of a routing policy over the prompts where every arm has a label.

    * ``kind="threshold"``: for each τ in :data:`TAU_GRID`, each prompt goes to the
      cheapest arm with ``P ≥ τ``, else to the most likely arm (cheapest on ties);
    * ``kind="lambda"``: for each λ in :func:`lambda_grid`, each prompt goes to the
      arm maximizing ``P − λ·cost`` (cheapest on ties); λ is in accuracy per unit of
      ``costs`` (per USD, or per output token when costs are token counts).

    Each point is ``{"value": τ or λ, "accuracy": share of prompts whose chosen arm is
    right (labels ≥ 0.5), "mean_cost": mean of the chosen arms' ``costs``, "share":
    {arm: share of prompts sent to it} (every arm, in table order)}``.
    """
    if kind not in ("threshold", "lambda"):
        raise EvaluationError(f"policy kind must be 'threshold' or 'lambda', not {kind!r}")
    p = _check_probs(table, probs)
    cost = _cost_vector(table, costs)
    rows = _complete(table)
    right = table.correct[rows] >= 0.5
    p = p[rows]
    n = int(rows.sum())
    values = list(TAU_GRID) if kind == "threshold" else lambda_grid(cost)
    curve: list[dict[str, Any]] = []
    for v in values:
        chosen = _choices(p, cost, kind, v)
        counts = np.bincount(chosen, minlength=len(table.arms))
        curve.append({
            "value": float(v),
            "accuracy": float(right[np.arange(n), chosen].mean()),
            "mean_cost": float(cost[chosen].mean()),
            "share": {a: float(counts[j] / n) for j, a in enumerate(table.arms)},
        })
    return curve


def _area(points: Sequence[Sequence[float]], hi: float) -> float:
    """:func:`~effreason_agents.evaluation.metrics.hull_area` of a policy's points over the fixed arms' cost
    range. Both policy grids include the always-cheapest-arm point, so the range starts at the
    cheapest arm's cost; a dominated point (lowest accuracy, at ``hi``, the dearest arm's cost)
    stretches it to ``hi`` without changing the hull, so policies and arms are averaged over
    the same range."""
    pts = [(float(x), float(y)) for x, y in points]
    floor = min(y for _, y in pts)
    if hi > max(x for x, _ in pts):
        pts.append((hi, floor))
    return hull_area(pts)


def many_arm_report(table: OutcomeTable, probs: Any, costs: Mapping[str, float]) -> dict[str, Any]:
    """RouterBench-style view of the router's policies over every arm.

    Over the prompts where every arm has a label (``n``):

    * ``arms``: each fixed arm's ``accuracy`` and ``mean_cost`` (its entry in ``costs``);
    * ``fixed``: ``hull_area`` (AIQ: area under the non-decreasing convex hull of the
      arms' (cost, accuracy) points divided by the cost range, i.e. the hull's mean
      accuracy between the cheapest and the dearest arm — the harness's normalization)
      and ``hull`` (its vertices);
    * ``policy`` (the threshold policy) and ``lambda`` (the cost-penalized one): the
      same area over the *same* cost range for the policy's operating points (the
      hull held flat beyond its dearest point), its ``hull`` and ``kind``;
    * ``baselines``: ``random`` (each prompt to a uniformly random arm) and ``oracle``
      (the cheapest right arm per prompt), each ``{"accuracy", "mean_cost"}``
      (:func:`~effreason_agents.evaluation.metrics.many_arm_baselines`);
    * ``points``: ``{"threshold": policy_curve(...), "lambda": policy_curve(...)}``.

    A policy beats the fixed arms when its ``hull_area`` exceeds ``fixed.hull_area``.
    """
    from effreason_agents.evaluation.metrics import cost_accuracy_hull

    p = _check_probs(table, probs)
    cost = _cost_vector(table, costs)
    rows = _complete(table)
    right = table.correct[rows] >= 0.5
    n = int(rows.sum())
    arm_pts = {a: (float(cost[j]), float(right[:, j].mean())) for j, a in enumerate(table.arms)}
    hi = float(cost.max())
    base = many_arm_baselines(
        {a: right[:, j].tolist() for j, a in enumerate(table.arms)},
        {a: [float(cost[j])] * n for j, a in enumerate(table.arms)},
    )
    out: dict[str, Any] = {
        "n": n,
        "costs": {a: float(cost[j]) for j, a in enumerate(table.arms)},
        "arms": {a: {"accuracy": acc, "mean_cost": c} for a, (c, acc) in arm_pts.items()},
        "fixed": {"hull_area": hull_area(list(arm_pts.values())),
                  "hull": [list(x) for x in cost_accuracy_hull(list(arm_pts.values()))]},
        "baselines": {name: {"accuracy": float(b["accuracy"]), "mean_cost": float(b["mean_cost_usd"])}
                      for name, b in base.items()},
        "points": {},
    }
    for kind, key in (("threshold", "policy"), ("lambda", "lambda")):
        curve = policy_curve(table, p, costs, kind=kind)
        pts = [(pt["mean_cost"], pt["accuracy"]) for pt in curve]
        out[key] = {"kind": kind, "hull_area": _area(pts, hi),
                    "hull": [list(x) for x in cost_accuracy_hull(pts)]}
        out["points"][kind] = curve
    return out


# -- the whole evaluation ---------------------------------------------------------------


def costs_for(table: OutcomeTable) -> tuple[dict[str, float], str]:
    """Per-arm cost for policies and the unit it is in.

    Mean logged USD per call (``table.mean_cost()``) when every arm's is known and one
    is above zero (``"usd"``); else mean output tokens when every arm's is known
    (``"output_tokens"``); else the arms' order in the table, 0, 1, 2, …
    (``"arm order"`` — list the arms cheapest first).
    """
    usd = table.mean_cost()
    if all(v is not None for v in usd.values()) and any(v for v in usd.values()):
        return {a: float(v) for a, v in usd.items() if v is not None}, "usd"
    tok = table.mean_tokens()
    if all(v is not None for v in tok.values()):
        return {a: float(v) for a, v in tok.items() if v is not None}, "output_tokens"
    return {a: float(i) for i, a in enumerate(table.arms)}, "arm order"


def default_pair(table: OutcomeTable, costs: Mapping[str, float] | None = None) -> tuple[str, str]:
    """(weak, strong) as the harness picks them: the cheapest arm (by ``costs``, default
    :func:`costs_for`; then mean cost, then mean output tokens, then table order) and the
    most accurate other arm (mean label over its labelled prompts; earlier arm on ties)."""
    if costs is None:
        costs, _ = costs_for(table)
    usd, tok = table.mean_cost(), table.mean_tokens()
    inf = float("inf")

    def key(a: str) -> tuple[float, float, float, int]:
        return (float(costs.get(a, inf)), usd[a] if usd[a] is not None else inf,
                tok[a] if tok[a] is not None else inf, table.arms.index(a))

    weak = min(table.arms, key=key)

    def accuracy(a: str) -> float:
        col = table.correct[:, table.arms.index(a)]
        col = col[np.isfinite(col)]
        return float((col >= 0.5).mean()) if col.size else -1.0

    others = [a for a in table.arms if a != weak]
    strong = max(others, key=lambda a: (accuracy(a), -table.arms.index(a)))
    return weak, strong


def resolve_pair(table: OutcomeTable, costs: Mapping[str, float], weak: str | None = None,
                 strong: str | None = None) -> tuple[str, str]:
    """The (weak, strong) pair to report: the given arms, the missing one(s) filled in by
    :func:`default_pair` (never the same arm twice). Raises :class:`EvaluationError` for an
    unknown arm or the same arm given twice."""
    if weak is None or strong is None:
        dw, ds = default_pair(table, costs)
        if weak is None and strong is None:
            weak, strong = dw, ds
        elif weak is None:
            weak = dw if dw != strong else ds
        else:
            strong = ds if ds != weak else dw
    assert weak is not None and strong is not None
    _arm_index(table, weak, "weak")
    _arm_index(table, strong, "strong")
    if weak == strong:
        raise EvaluationError(f"the weak and strong arms are both {weak!r}; pick two different arms")
    return weak, strong


def prediction_report(table: OutcomeTable, probs: Any, *, weak: str, strong: str, costs: Mapping[str, float],
                      cost_unit: str) -> dict[str, Any]:
    """Held-out predictions ``probs`` (prompts × arms of ``table``) scored both ways:
    :func:`two_arm_report` between ``weak`` and ``strong`` (its keys ``None`` with a note
    when the two arms are equally accurate) and :func:`many_arm_report` under ``costs``
    (``many_arm`` ``None`` with a note when no prompt has a label for every arm).

    Returns ``{"apgr", "cpt50", "cpt80", "auc", "n", "weak", "strong", "acc_weak",
    "acc_strong", "baselines", "curve", "arms", "costs", "cost_unit", "many_arm", "notes"}``.
    """
    notes: list[str] = []
    result: dict[str, Any] = {"apgr": None, "cpt50": None, "cpt80": None, "auc": None, "n": None,
                              "weak": weak, "strong": strong, "baselines": {}, "curve": None}
    try:
        result.update(two_arm_report(table, probs, weak, strong))
    except PGRUndefinedError as exc:
        notes.append(f"no APGR/CPT between {weak} and {strong}: {exc}")
        result["n"] = int((np.isfinite(table.correct[:, table.arms.index(weak)])
                           & np.isfinite(table.correct[:, table.arms.index(strong)])).sum())
    result.update({"arms": list(table.arms), "costs": dict(costs), "cost_unit": cost_unit})
    if np.isfinite(table.correct).all(axis=1).any():
        result["many_arm"] = many_arm_report(table, probs, costs)
    else:
        result["many_arm"] = None
        notes.append("no many-arm report: no prompt has a label for every arm")
    result["notes"] = notes
    return result


def cross_validate(
    table: OutcomeTable,
    fit: Fit,
    *,
    k: int = 5,
    seed: int = 0,
    weak: str | None = None,
    strong: str | None = None,
    costs: Mapping[str, float] | None = None,
    cost_unit: str | None = None,
) -> dict[str, Any]:
    """k-fold cross-validation by prompt of a router model: out-of-fold predictions
    (:func:`oof_predictions`) scored by :func:`two_arm_report` and :func:`many_arm_report`.

    ``weak``/``strong`` default to :func:`default_pair`; ``costs`` to :func:`costs_for`
    (``cost_unit`` says which: ``"usd"``, ``"output_tokens"`` or ``"arm order"``; for
    given ``costs``, the ``cost_unit`` passed along, default ``"given"``).

    Returns ``{"apgr", "cpt50", "cpt80", "auc", "n", "weak", "strong", "acc_weak",
    "acc_strong", "baselines", "curve", "k", "seed", "arms", "costs", "cost_unit",
    "many_arm", "notes"}`` — the first group as in :func:`two_arm_report`
    (``None`` with a note when PGR is undefined because the two arms are equally
    accurate), ``many_arm`` as in :func:`many_arm_report` (``None`` with a note when no
    prompt has a label for every arm).
    """
    if costs is None:
        costs, unit = costs_for(table)
    else:
        costs, unit = {a: float(v) for a, v in costs.items()}, cost_unit or "given"
    weak, strong = resolve_pair(table, costs, weak, strong)
    probs = oof_predictions(table, fit, k=k, seed=seed)
    result = prediction_report(table, probs, weak=weak, strong=strong, costs=costs, cost_unit=unit)
    result.update({"k": int(k), "seed": int(seed)})
    return result


# -- choosing an operating point --------------------------------------------------------


def _tier_of(arm: str) -> str:
    return arm.split(":", 1)[0]


def pick_policy(
    curve: Sequence[Mapping[str, Any]],
    *,
    max_share: tuple[str, float] | None = None,
    max_mean_cost: float | None = None,
    min_accuracy: float | None = None,
) -> dict[str, Any]:
    """The operating point of ``curve`` (from :func:`policy_curve`) that meets the target.

    Caps: ``max_share=(tier, x)`` — at most a share ``x`` of calls to arms of that tier
    (arm names are ``tier:strategy[:cap]``; an arm named exactly ``tier`` counts too);
    ``max_mean_cost`` — mean cost per query at most this (in the curve's cost unit).
    Among the points within the caps: with ``min_accuracy``, the cheapest point whose
    accuracy reaches it (the more accurate on equal cost); otherwise the most accurate
    point (the cheaper on equal accuracy). Ties after that keep the earlier point.
    Returns a copy of the chosen point. Raises :class:`EvaluationError` naming the
    closest the curve gets when no point meets the target.
    """
    pts = [dict(p) for p in curve]
    if not pts:
        raise EvaluationError("the policy curve has no operating points")
    targets: list[str] = []
    ok = pts
    if max_share is not None:
        tier, cap = str(max_share[0]), float(max_share[1])
        arms = list(pts[0].get("share") or {})
        mine = [a for a in arms if a == tier or _tier_of(a) == tier]
        if not mine:
            raise EvaluationError(f"no arm of tier {tier!r} among the arms {', '.join(arms)}")

        def share(p: Mapping[str, Any]) -> float:
            return float(sum(p["share"].get(a, 0.0) for a in mine))

        targets.append(f"at most {cap:.0%} of calls to tier {tier!r}")
        ok = [p for p in ok if share(p) <= cap + _EPS]
        if not ok:
            low = min(pts, key=share)
            raise EvaluationError(
                f"no operating point sends at most {cap:.0%} of calls to tier {tier!r}: the lowest share is "
                f"{share(low):.1%} (value {low['value']:g}); raise the cap"
            )
    if max_mean_cost is not None:
        targets.append(f"mean cost at most {max_mean_cost:g}")
        within = [p for p in ok if float(p["mean_cost"]) <= float(max_mean_cost) + _EPS]
        if not within:
            low = min(ok, key=lambda p: float(p["mean_cost"]))
            raise EvaluationError(
                f"no operating point meets {' and '.join(targets)}: the lowest mean cost is "
                f"{float(low['mean_cost']):.6g} (value {low['value']:g}); raise the cap"
            )
        ok = within
    if min_accuracy is not None:
        targets.append(f"accuracy at least {min_accuracy:g}")
        reach = [p for p in ok if float(p["accuracy"]) >= float(min_accuracy) - _EPS]
        if not reach:
            best = max(ok, key=lambda p: float(p["accuracy"]))
            raise EvaluationError(
                f"no operating point meets {' and '.join(targets)}: the best accuracy is "
                f"{float(best['accuracy']):.4g} (value {best['value']:g}); lower the target"
            )
        return dict(min(reach, key=lambda p: (float(p["mean_cost"]), -float(p["accuracy"]))))
    return dict(min(ok, key=lambda p: (-float(p["accuracy"]), float(p["mean_cost"]))))


# -- plot -------------------------------------------------------------------------------


def plot_pgr(curves: Mapping[str, Sequence[Sequence[float]]], path: str | Path, *, weak: str | None = None,
             strong: str | None = None) -> Path:
    """Write a PNG of PGR vs share of calls sent to the strong arm, one line per curve.

    Reuses the benchmark report's PGR plot (matplotlib Agg canvas, no pyplot state;
    written to a temporary file and moved into place). Each legend entry carries the
    curve's APGR; ``random``, ``oracle`` and ``router`` get the report's colours.
    ``weak``/``strong`` name the arms on the axis and in the title.
    """
    from effreason_agents.evaluation.metrics import apgr
    from effreason_agents.evaluation.report import _plot_pgr, _save_figure, _View

    clean = {str(name): [[float(c), float(v)] for c, v in pts] for name, pts in curves.items() if pts}
    if not clean:
        raise EvaluationError("plot_pgr: no curves to plot")
    policies = {name: {"apgr": apgr(pts)} for name, pts in clean.items()}
    results = {
        "kind": "replay",
        "arms": {},
        "baselines": {n: policies[n] for n in ("random", "oracle") if n in policies},
        "two_arm": {"weak": weak or "weak", "strong": strong or "strong", "curves": clean},
    }
    if "router" in policies:
        results["router"] = dict(policies["router"])
    # The report labels only random/oracle/router with their APGR; name the others here.
    labelled = {n if n in ("random", "oracle", "router") else f"{n} (APGR {policies[n]['apgr']:.3f})": pts
                for n, pts in clean.items()}
    results["two_arm"]["curves"] = labelled
    fig = _plot_pgr(_View(results))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_figure(fig, out)
    return out
