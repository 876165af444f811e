"""Fit confidence calibrators (uncertainty signals → P(correct)) from logged outcomes.

The fitting side of :mod:`effreason_agents.adapters.calibrator`, in numpy alone (no
scikit-learn): a ridge-penalized logistic regression solved by Newton's method
(penalty ``0.5 * ||w||² / C`` on the standardized weights, intercept not
penalized; ``C = 1`` as scikit-learn's default) and an isotonic regression by
pool-adjacent-violators on the single signal with the best AUROC.

Model choice: both candidates are scored by cross-validated Brier score over
``folds`` folds *by row* (stratified by the label, shuffled with ``seed``); the
lower wins, ties go to logistic. Folds by row are acceptable here because every
row is one attempt at one question by one (tier, strategy); a question asked
several times would leak across folds, so deduplicate by question first when
the log holds repeats. Reported metrics (AUROC, Brier, ECE with 10 equal-width
bins) are computed on the winner's out-of-fold predictions, never on training
fits; ``signal_auroc`` gives each raw signal's AUROC on the rows that have it
(below 0.5 means "higher signal, more often wrong", e.g. entropy).

Rows are dicts with ``signals`` (a mapping; values may be ``None``) and
``correct`` (bool); rows whose ``correct`` is ``None`` are skipped, and rows
carrying ``tier``/``strategy`` keys that differ from the requested ones are
skipped (rows without those keys are all used).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.adapters.atomic import write_json
from effreason_agents.adapters.calibrator import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    Calibrator,
    CalibratorError,
    feature_value,
)
from effreason_agents.evaluation.metrics import auroc, brier, ece
from effreason_agents.core.confidence import SIGNAL_NAMES
from effreason_agents.core.numeric import sigmoid

__all__ = [
    "auroc",
    "brier",
    "ece",
    "fit_calibrator",
    "pick_threshold",
    "predict_proba",
    "save_artifact",
    "threshold_curve",
]

RIDGE_C = 1.0


# -- data ------------------------------------------------------------------------


def _label(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise CalibratorError(f"'correct' must be a bool (or None to skip the row), got {value!r}")


def _select_rows(rows: Iterable[Mapping[str, Any]], tier: str, strategy: str) -> tuple[list[dict], np.ndarray]:
    sigs: list[dict] = []
    labels: list[bool] = []
    for row in rows:
        if "tier" in row and row["tier"] is not None and row["tier"] != tier:
            continue
        if "strategy" in row and row["strategy"] is not None and row["strategy"] != strategy:
            continue
        lab = _label(row.get("correct"))
        if lab is None:
            continue
        s = row.get("signals") or {}
        if not isinstance(s, Mapping):
            raise CalibratorError(f"'signals' must be a mapping, got {type(s).__name__}")
        sigs.append(dict(s))
        labels.append(lab)
    return sigs, np.array(labels, dtype=bool)


def _matrix(sigs: Sequence[Mapping[str, Any]], features: Sequence[str]) -> np.ndarray:
    """Rows × features, NaN where a value is missing."""
    out = np.full((len(sigs), len(features)), np.nan)
    for i, s in enumerate(sigs):
        for j, f in enumerate(features):
            v = feature_value(s.get(f))
            if v is not None:
                out[i, j] = v
    return out


def _data_sha256(sigs: Sequence[Mapping[str, Any]], y: np.ndarray, features: Sequence[str]) -> str:
    canon = [
        {"signals": {f: feature_value(s.get(f)) for f in features}, "correct": bool(c)}
        for s, c in zip(sigs, y)
    ]
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# -- models ----------------------------------------------------------------------


def _fit_logistic(X: np.ndarray, y: np.ndarray, c: float = RIDGE_C) -> dict[str, Any]:
    """Ridge logistic regression on standardized, mean-imputed features (Newton + backtracking)."""
    mean = np.array([np.nanmean(col) if np.isfinite(col).any() else 0.0 for col in X.T])
    Xi = np.where(np.isnan(X), mean, X)
    scale = Xi.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = np.c_[(Xi - mean) / scale, np.ones(len(Xi))]
    d = Z.shape[1]
    pen = np.full(d, 1.0 / c)
    pen[-1] = 0.0
    yf = y.astype(float)

    def loss(beta: np.ndarray) -> float:
        t = Z @ beta
        # log(1 + e^t) - y t, stably
        return float(np.sum(np.logaddexp(0.0, t) - yf * t) + 0.5 * np.sum(pen * beta**2))

    beta = np.zeros(d)
    cur = loss(beta)
    for _ in range(100):
        p = sigmoid(Z @ beta)
        grad = Z.T @ (p - yf) + pen * beta
        H = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(pen + 1e-9)
        step = np.linalg.solve(H, grad)
        t = 1.0
        while True:
            cand = beta - t * step
            new = loss(cand)
            if new <= cur + 1e-12 or t < 1e-8:
                break
            t *= 0.5
        beta, improvement = cand, cur - new
        cur = new
        if np.max(np.abs(t * step)) < 1e-10 or improvement < 1e-14:
            break
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "weights": beta[:-1].tolist(),
        "intercept": float(beta[-1]),
    }


def _pav(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Pool-adjacent-violators for a non-decreasing fit; returns block values, weights, spans."""
    vals: list[float] = []
    wts: list[float] = []
    spans: list[tuple[int, int]] = []
    for i, (yi, wi) in enumerate(zip(y, w)):
        vals.append(float(yi))
        wts.append(float(wi))
        spans.append((i, i))
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, (_, e2) = vals.pop(), wts.pop(), spans.pop()
            v1, w1, (s1, _) = vals.pop(), wts.pop(), spans.pop()
            vals.append((v1 * w1 + v2 * w2) / (w1 + w2))
            wts.append(w1 + w2)
            spans.append((s1, e2))
    return np.array(vals), np.array(wts), spans


def _fit_isotonic(x: np.ndarray, y: np.ndarray, sign: float) -> dict[str, Any]:
    """Monotone fit of P(correct) on one feature; ``sign`` = +1 increasing, −1 decreasing.

    Rows with the feature missing are left out of the fit; at prediction time
    they take the training mean. Thresholds are returned ascending in the raw
    feature, so ``np.interp`` applies directly in either direction.
    """
    present = np.isfinite(x)
    if not present.any():  # feature absent in this training fold: constant prediction
        return {"x": [0.0], "y": [float(np.mean(y))], "mean": 0.0}
    xp, yp = x[present], y[present].astype(float)
    mean = float(xp.mean())
    u = sign * xp
    # collapse ties in x to weighted points
    ux, inv = np.unique(u, return_inverse=True)
    wy = np.bincount(inv, weights=yp)
    cnt = np.bincount(inv).astype(float)
    vals, _, spans = _pav(wy / cnt, cnt)
    xs: list[float] = []
    ys: list[float] = []
    for v, (s, e) in zip(vals, spans):
        xs.append(float(ux[s]))
        ys.append(float(v))
        if e != s:
            xs.append(float(ux[e]))
            ys.append(float(v))
    xs_raw = [sign * v for v in xs]
    if sign < 0:
        xs_raw, ys = xs_raw[::-1], ys[::-1]
    ys = [min(1.0, max(0.0, v)) for v in ys]
    return {"x": xs_raw, "y": ys, "mean": mean}


def _predict_matrix(kind: str, params: Mapping[str, Any], X: np.ndarray) -> np.ndarray:
    mean = np.asarray(params["mean"], dtype=float).reshape(-1)
    Xi = np.where(np.isnan(X), mean, X)
    if kind == "logistic":
        z = (Xi - mean) / np.asarray(params["scale"], dtype=float)
        p = sigmoid(z @ np.asarray(params["weights"], dtype=float) + float(params["intercept"]))
    elif kind == "isotonic":
        p = np.interp(Xi[:, 0], np.asarray(params["x"], dtype=float), np.asarray(params["y"], dtype=float))
    else:
        raise CalibratorError(f"unknown calibrator kind {kind!r}")
    return np.clip(p, 0.0, 1.0)


def predict_proba(artifact: Mapping[str, Any], signals: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Vectorized P(correct) for a list of signal mappings (the fitting side's view of an artifact)."""
    X = _matrix(signals, artifact["features"])
    return _predict_matrix(artifact["kind"], artifact["params"], X)


def _signal_auroc(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.full(X.shape[1], np.nan)
    for j in range(X.shape[1]):
        m = np.isfinite(X[:, j])
        if m.any():
            out[j] = auroc(X[m, j], y[m])
    return out


def _best_single(X: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """Index of the feature with the largest |AUROC − 0.5| and its direction (+1/−1)."""
    aucs = _signal_auroc(X, y)
    strength = np.where(np.isfinite(aucs), np.abs(aucs - 0.5), -1.0)
    j = int(np.argmax(strength))
    sign = -1.0 if np.isfinite(aucs[j]) and aucs[j] < 0.5 else 1.0
    return j, sign


def _fit_kind(kind: str, X: np.ndarray, y: np.ndarray) -> tuple[list[int], dict[str, Any]]:
    """(feature column indices, params)."""
    if kind == "logistic":
        return list(range(X.shape[1])), _fit_logistic(X, y)
    j, sign = _best_single(X, y)
    return [j], _fit_isotonic(X[:, j], y, sign)


def _folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id per row: stratified by label, shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    offset = 0
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


# -- fitting ---------------------------------------------------------------------


def fit_calibrator(
    rows: Iterable[Mapping[str, Any]],
    tier: str,
    strategy: str,
    *,
    features: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a calibrator for (tier, strategy) and return its artifact (see module docs).

    ``features`` defaults to every known signal present in at least one row and
    not constant (falling back to merely present ones when all are constant).
    Raises :class:`CalibratorError` when the rows hold one class only, fewer rows
    than ``folds``, or none of the requested features.
    """
    if not isinstance(folds, int) or folds < 2:
        raise CalibratorError(f"folds must be an integer ≥ 2, got {folds!r}")
    sigs, y = _select_rows(rows, tier, strategy)
    n = len(y)
    if n < folds:
        raise CalibratorError(
            f"only {n} labelled rows for tier {tier!r} / strategy {strategy!r}, fewer than folds={folds}; "
            "log more outcomes or lower folds"
        )
    pos = int(y.sum())
    if pos == 0 or pos == n:
        raise CalibratorError(
            f"all {n} rows for tier {tier!r} / strategy {strategy!r} are "
            f"{'correct' if pos else 'wrong'}: a calibrator needs both right and wrong answers"
        )
    if features is None:
        # not the judgments recorded beside the signals (a cascade scorer's and the calibrated
        # confidence): a calibrator fitted on them could not be applied to the raw signals
        from effreason_agents.adapters.scorer import CALIBRATED_SIGNAL, SCORER_SIGNAL

        judged = {SCORER_SIGNAL, CALIBRATED_SIGNAL}
        candidates = list(SIGNAL_NAMES) + sorted({k for s in sigs for k in s} - set(SIGNAL_NAMES) - judged)
    else:
        candidates = list(dict.fromkeys(features))
        if not candidates:
            raise CalibratorError("features must not be empty")
    Xall = _matrix(sigs, candidates)
    present = np.isfinite(Xall).any(axis=0)
    if features is None:  # by default also drop signals that never vary (e.g. truncated always 0)
        varies = np.array([np.unique(col[np.isfinite(col)]).size > 1 for col in Xall.T])
        if (present & varies).any():
            present &= varies
    if features is not None and not present.all():
        absent = [f for f, ok in zip(candidates, present) if not ok]
        raise CalibratorError(
            f"features {absent} are missing in every row for tier {tier!r} / strategy {strategy!r} "
            "(tier without logprobs?); drop them or log outcomes that carry them"
        )
    feats = [f for f, ok in zip(candidates, present) if ok]
    if not feats:
        raise CalibratorError(
            f"no signal is present in any row for tier {tier!r} / strategy {strategy!r} "
            "(tier without logprobs?); no calibrator can be fitted"
        )
    X = Xall[:, present]

    fold = _folds(y, folds, seed)
    oof = {k: np.empty(n) for k in ("logistic", "isotonic")}
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        train = ~test
        for kind in oof:
            cols, params = _fit_kind(kind, X[train], y[train])
            oof[kind][test] = _predict_matrix(kind, params, X[test][:, cols])
    cv_brier = {k: brier(v, y) for k, v in oof.items()}
    kind = "logistic" if cv_brier["logistic"] <= cv_brier["isotonic"] else "isotonic"
    cols, params = _fit_kind(kind, X, y)
    p = oof[kind]
    sig_auc = _signal_auroc(X, y)

    def _num(v: float) -> float | None:
        return None if not math.isfinite(v) else float(v)

    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "tier": tier,
        "strategy": strategy,
        "kind": kind,
        "features": [feats[c] for c in cols],
        "params": params,
        "training": {
            "n": n,
            "positives": pos,
            "data_sha256": _data_sha256(sigs, y, feats),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "folds": folds,
            "seed": seed,
            "candidate_features": feats,
        },
        "metrics": {
            "auroc": _num(auroc(p, y)),
            "brier": _num(brier(p, y)),
            "ece": _num(ece(p, y)),
            "cv_brier": {k: _num(v) for k, v in cv_brier.items()},
            "signal_auroc": {f: _num(a) for f, a in zip(feats, sig_auc)},
            "evaluation": f"out-of-fold, {folds} label-stratified folds by row, seed {seed}",
        },
    }


def save_artifact(artifact: Mapping[str, Any], path: str | Path) -> Path:
    """Validate ``artifact`` and write it as JSON atomically (temp file + ``os.replace``)."""
    Calibrator(artifact, source=str(path))  # refuse to write something the runtime cannot load
    dest = Path(path)
    write_json(dest, artifact, sort_keys=True, allow_nan=False)
    return dest


# -- cascade thresholds ----------------------------------------------------------


def threshold_curve(
    p: Sequence[float | None],
    correct_small: Sequence[bool],
    correct_large: Sequence[bool],
    costs_small: Sequence[float],
    costs_large: Sequence[float],
    thresholds: Sequence[float] | None = None,
) -> list[dict[str, float]]:
    """Operating points of a two-step cascade per threshold.

    Per item: keep the small answer when ``p >= threshold``, else escalate and use
    the large answer (``p`` ``None``/NaN always escalates). An escalated item costs
    ``costs_small + costs_large`` (the small attempt was already paid). Each point
    is ``{threshold, escalation_rate, accuracy, cost}`` with ``cost`` the mean cost
    per item. ``thresholds`` defaults to 0, 0.01, …, 1.
    """
    pa = np.array([np.nan if v is None else float(v) for v in p], dtype=float)
    cs = np.asarray(correct_small, dtype=bool)
    cl = np.asarray(correct_large, dtype=bool)
    ks = np.asarray(costs_small, dtype=float)
    kl = np.asarray(costs_large, dtype=float)
    n = len(pa)
    if n == 0 or not (len(cs) == len(cl) == len(ks) == len(kl) == n):
        raise ValueError("threshold_curve: all inputs must be non-empty and of the same length")
    ts = np.linspace(0.0, 1.0, 101) if thresholds is None else np.asarray(thresholds, dtype=float)
    curve = []
    for t in ts:
        keep = np.isfinite(pa) & (pa >= t)
        acc = np.where(keep, cs, cl).mean()
        cost = np.where(keep, ks, ks + kl).mean()
        curve.append(
            {
                "threshold": float(t),
                "escalation_rate": float(1.0 - keep.mean()),
                "accuracy": float(acc),
                "cost": float(cost),
            }
        )
    return curve


def pick_threshold(
    curve: Sequence[Mapping[str, float]],
    *,
    max_escalation_rate: float | None = None,
    min_accuracy: float | None = None,
) -> dict[str, float]:
    """Choose an operating point of :func:`threshold_curve`.

    Among points meeting the constraints: with ``min_accuracy`` the cheapest
    (ties: higher accuracy, then lower threshold); otherwise the most accurate
    (ties: cheaper, then lower threshold). Raises :class:`CalibratorError` when no
    point meets the constraints.
    """
    if not curve:
        raise CalibratorError("pick_threshold: the curve is empty")
    eps = 1e-12
    ok = [
        pt
        for pt in curve
        if (max_escalation_rate is None or pt["escalation_rate"] <= max_escalation_rate + eps)
        and (min_accuracy is None or pt["accuracy"] >= min_accuracy - eps)
    ]
    if not ok:
        raise CalibratorError(
            f"no threshold meets max_escalation_rate={max_escalation_rate} and min_accuracy={min_accuracy}; "
            "relax a constraint"
        )
    if min_accuracy is not None:
        key = lambda pt: (pt["cost"], -pt["accuracy"], pt["threshold"])  # noqa: E731
    else:
        key = lambda pt: (-pt["accuracy"], pt["cost"], pt["threshold"])  # noqa: E731
    return dict(min(ok, key=key))
