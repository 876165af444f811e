"""Cascade scorers: fit and evaluate P(the cheap arm's answer is right) from its reply.

A *cascade* (FrugalGPT, AutoMix) always runs the cheap (weak) arm, reads its answer,
and pays the strong arm only when that answer looks wrong. *Pre-routing* decides from
the question alone, before any call. The cascade sees more — the reply itself — but
always pays for the cheap call. This module measures both on the same items and folds.

Data (:class:`CascadeData`): the prompts where both arms are graded and the weak arm's
reply is known — ``table.responses[weak]`` of an :class:`~router_training.table.OutcomeTable`
(the ``<model>_response`` columns of a wide CSV), or, for the outcome store, the
weak arm's logged attempt (:func:`store_replies`: its raw text, uncertainty signals and
the item's answer type).

Scorer (:func:`fit_scorer`): logistic regression (scikit-learn, lbfgs, L2) on the
standardized dense features of :func:`effreason_agents.core.answer_features.feature_vector`
(answer, reply, arithmetic checks, question features; the uncertainty signals that the
training replies carry), optionally side by side with a TF-IDF of the reply's words
scaled by a *text weight* (a larger weight penalizes the text weights less). ``C``
and the text weight (0 = dense features only) are picked from :data:`C_GRID` ×
:data:`TEXT_WEIGHTS` by stratified inner cross-validation on the training rows (mean
log loss; the simpler setting wins ties; with fewer rows of a class than inner folds,
the middle setting of the grid is taken). Labels are thresholded at 0.5; a training
set with a single class gives a constant scorer (its base rate). The fitted scorer
predicts through the run-time code (:class:`effreason_agents.adapters.scorer.CascadeScorer`).

Evaluation (:func:`cascade_report`): k folds by prompt (:func:`router_training.evaluate.prompt_folds`);
in each, the scorer and the question-only router (``fit_predict("logistic")``) are
fitted on the other folds and score the held-out prompts. Orderings: the cascade
escalates the lowest P(right) first (score ``1 − P(cheap right)``), pre-routing sends
the highest ``P(strong right) − P(weak right)`` first. Both get APGR / CPT(50%) /
CPT(80%) over the share of items sent to the strong arm, a bootstrap interval
(:func:`effreason_agents.evaluation.metrics.bootstrap_apgr`, paired for the difference),
and their cost as a share of always-strong: the cascade pays every cheap call plus the
strong calls it escalates; pre-routing pays one arm per item.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.adapters.scorer import ARTIFACT_FORMAT, ARTIFACT_VERSION, AnswerText, CascadeScorer, save_scorer
from effreason_agents.core.answer_features import FEATURES_VERSION, SIGNAL_FEATURES, feature_names, feature_vector
from effreason_agents.errors import EffReasonError, RouterTrainError
from effreason_agents.evaluation.metrics import auroc, bootstrap_apgr, two_arm_summary
from effreason_agents.evaluation.outcomes import OutcomeTable, infer_format, load_table
from router_training.evaluate import EvaluationError, costs_for, default_pair, prompt_folds, resolve_pair

__all__ = [
    "C_GRID",
    "TEXT_WEIGHTS",
    "CascadeData",
    "FittedScorer",
    "cascade_data",
    "cascade_report",
    "fit_scorer",
    "load_cascade_data",
    "store_replies",
    "train_scorer",
    "with_prices",
]

#: Inverse L2 strengths tried by the inner cross-validation.
C_GRID: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
#: Scales of the reply's TF-IDF block next to the standardized dense features (0: not used).
TEXT_WEIGHTS: tuple[float, ...] = (0.0, 3.0, 10.0)
INNER_FOLDS = 3
_EPS = 1e-6
_TRAIN_EXTRA = "pip install 'effreason-agents[train]'"
Progress = Callable[[str, int, int], None]


# -- data ----------------------------------------------------------------------------------


@dataclass
class CascadeData:
    """What a cascade is fitted and judged on: one row per prompt where both arms are
    graded and the weak arm's reply is known.

    ``weak_right`` / ``strong_right``: the arms' labels (thresholded at 0.5);
    ``replies``: the weak arm's full reply; ``signals``: its uncertainty signals per row
    (``None`` where not logged); ``answer_types``: the expected answer type per row
    (``None``: number); ``weak_cost`` / ``strong_cost``: cost per call in ``cost_unit``
    (``"usd"`` or ``"output_tokens"``; a missing value is the arm's mean), or ``None``
    when neither was logged.
    """

    prompts: list[str]
    replies: list[str]
    weak_right: np.ndarray
    strong_right: np.ndarray
    weak: str
    strong: str
    signals: list[Mapping[str, Any] | None] | None = None
    answer_types: list[str | None] | None = None
    weak_cost: np.ndarray | None = None
    strong_cost: np.ndarray | None = None
    cost_unit: str | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    _dense: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.prompts)
        self.weak_right = np.asarray(self.weak_right, dtype=bool)
        self.strong_right = np.asarray(self.strong_right, dtype=bool)
        for name in ("replies", "weak_right", "strong_right", "signals", "answer_types", "weak_cost", "strong_cost"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise RouterTrainError(f"cascade data: {name} has {len(value)} entries for {n} prompts")

    def __len__(self) -> int:
        return len(self.prompts)

    def dense(self) -> np.ndarray:
        """Every row's :func:`~effreason_agents.core.answer_features.feature_vector` (computed
        once; columns in ``feature_names(SIGNAL_FEATURES)`` order, ``NaN`` for missing signals)."""
        if self._dense is None:
            sig = self.signals or [None] * len(self)
            types = self.answer_types or [None] * len(self)
            rows = [feature_vector(q, r, s, answer_type=t) for q, r, s, t in zip(self.prompts, self.replies, sig, types)]
            self._dense = np.stack(rows) if rows else np.zeros((0, len(feature_names())))
        return self._dense

    def subset(self, rows: np.ndarray | Sequence[int]) -> "CascadeData":
        idx = np.arange(len(self))[np.asarray(rows)]
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        part = CascadeData(
            [self.prompts[i] for i in idx], [self.replies[i] for i in idx], self.weak_right[idx],
            self.strong_right[idx], self.weak, self.strong, pick(self.signals), pick(self.answer_types),
            None if self.weak_cost is None else self.weak_cost[idx],
            None if self.strong_cost is None else self.strong_cost[idx], self.cost_unit, self.source, list(self.notes),
        )
        if self._dense is not None:
            part._dense = self._dense[idx]
        return part

    def table(self) -> OutcomeTable:
        """The two arms' labels as an :class:`OutcomeTable` (for the question-only router)."""
        correct = np.column_stack([self.weak_right, self.strong_right]).astype(float)
        return OutcomeTable(list(self.prompts), [self.weak, self.strong], correct, source=self.source)


def _costs(table: OutcomeTable, iw: int, js: int, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    for matrix, unit in ((table.cost, "usd"), (table.tokens, "output_tokens")):
        if matrix is None:
            continue
        w, s = matrix[:, iw].astype(float), matrix[:, js].astype(float)
        if not (np.isfinite(w).any() and np.isfinite(s).any()):
            continue
        w = np.where(np.isfinite(w), w, np.nanmean(w))[rows]
        s = np.where(np.isfinite(s), s, np.nanmean(s))[rows]
        if unit == "usd" and not (w.sum() > 0 or s.sum() > 0):
            continue
        return w, s, unit
    return None, None, None


def cascade_data(
    table: OutcomeTable,
    weak: str | None = None,
    strong: str | None = None,
    *,
    replies: Sequence[str | None] | None = None,
    signals: Sequence[Mapping[str, Any] | None] | None = None,
    answer_types: Sequence[str | None] | None = None,
) -> CascadeData:
    """The :class:`CascadeData` of ``table`` between ``weak`` and ``strong``.

    ``weak``/``strong`` default to :func:`router_training.evaluate.default_pair` (the
    cheapest arm and the most accurate other one). The weak arm's replies are
    ``replies`` when given (one per table row), else ``table.responses[weak]``; rows
    without a reply, or without a label for either arm, are left out (a note counts
    them). ``signals`` and ``answer_types``, when given, are per table row. Raises
    :class:`RouterTrainError` when the weak arm has no replies or nothing is left.
    """
    try:
        weak, strong = resolve_pair(table, costs_for(table)[0], weak, strong)
    except EvaluationError as exc:
        raise RouterTrainError(str(exc)) from exc
    texts = list(replies) if replies is not None else table.responses.get(weak)
    if texts is None:
        having = [a for a in table.arms if a in table.responses]
        raise RouterTrainError(
            f"no replies of the weak arm {weak!r} in {table.source or 'the data'}: a cascade scorer reads the cheap "
            "arm's answers. Use a wide CSV with a '<model>_response' column, or the outcome store"
            + (f"; arms with replies: {', '.join(having)} (pick one with --weak)" if having else "")
        )
    if len(texts) != len(table):
        raise RouterTrainError(f"{len(texts)} replies for {len(table)} prompts")
    iw, js = table.arms.index(weak), table.arms.index(strong)
    labelled = np.isfinite(table.correct[:, iw]) & np.isfinite(table.correct[:, js])
    has_reply = np.asarray([t is not None for t in texts])
    rows = np.flatnonzero(labelled & has_reply)
    notes = []
    if (~labelled).any():
        notes.append(f"{int((~labelled).sum())} prompts without a label for both {weak} and {strong} left out")
    if (labelled & ~has_reply).any():
        notes.append(f"{int((labelled & ~has_reply).sum())} prompts without a reply of {weak} left out")
    if rows.size == 0:
        raise RouterTrainError(f"no prompt has labels for both {weak!r} and {strong!r} and a reply of {weak!r}")
    wc, sc, unit = _costs(table, iw, js, rows)
    if unit is None:
        notes.append("no costs or token counts logged: cost shares are not reported")
    return CascadeData(
        [table.prompts[i] for i in rows], [str(texts[i]) for i in rows], table.correct[rows, iw] >= 0.5,
        table.correct[rows, js] >= 0.5, weak, strong,
        None if signals is None else [signals[i] for i in rows],
        None if answer_types is None else [answer_types[i] for i in rows],
        wc, sc, unit, table.source, notes,
    )


def with_prices(data: CascadeData, prices: Mapping[str, float]) -> CascadeData:
    """``data`` with its output-token counts turned into dollars: ``prices`` maps the weak
    and the strong arm to USD per million output tokens. Raises :class:`RouterTrainError`
    when an arm has no price, a price is negative, or the costs are not token counts."""
    missing = [a for a in (data.weak, data.strong) if a not in prices]
    if missing:
        raise RouterTrainError(f"no price for {', '.join(missing)}; give one per arm as ARM=USD_PER_1M_OUTPUT_TOKENS")
    if any(not math.isfinite(float(prices[a])) or float(prices[a]) < 0 for a in (data.weak, data.strong)):
        raise RouterTrainError("prices must be finite, non-negative USD per million output tokens")
    if data.cost_unit != "output_tokens" or data.weak_cost is None or data.strong_cost is None:
        raise RouterTrainError(f"prices apply to output-token counts, but the costs here are {data.cost_unit or 'unknown'}")
    out = data.subset(np.arange(len(data)))
    out.weak_cost = data.weak_cost * float(prices[data.weak]) / 1e6
    out.strong_cost = data.strong_cost * float(prices[data.strong]) / 1e6
    out.cost_unit = "usd (output tokens at the given prices)"
    return out


def store_replies(path: str | Path, table: OutcomeTable, arm: str) -> tuple[
        list[str | None], list[dict[str, Any] | None], list[str | None]]:
    """The weak arm's logged replies for ``table``'s prompts, from the outcome store's
    benchmark runs: per prompt, the raw text and signals of the arm's last attempt on that
    question (the one its grade is about) and the item's answer type; ``None`` where the
    store has none. ``path`` as :func:`~effreason_agents.evaluation.outcomes.load_store` takes it."""
    from effreason_agents.adapters.store import OutcomeStore
    from effreason_agents.core.text import is_postgres_url
    from effreason_agents.errors import StoreError

    if str(path) == "store":
        from effreason_agents.config import load_config

        target: Any = load_config().store.target()
    else:
        target = str(path) if is_postgres_url(str(path)) else Path(path).expanduser()
    index = {p: i for i, p in enumerate(table.prompts)}
    texts: list[str | None] = [None] * len(table)
    sigs: list[dict[str, Any] | None] = [None] * len(table)
    types: list[str | None] = [None] * len(table)
    try:
        with OutcomeStore(target, read_only=True) as store:
            for res in store.bench_results(arm=arm):
                i = index.get(res.question.strip())
                if i is None or texts[i] is not None or not res.request_id:
                    continue
                attempts = [a for a in store.attempts_for(res.request_id) if a.arm == arm] or \
                    store.attempts_for(res.request_id)
                if not attempts:
                    continue
                last = attempts[-1]
                texts[i], sigs[i], types[i] = last.raw_text, dict(last.signals), res.answer_type
    except StoreError as exc:
        raise RouterTrainError(f"cannot read replies from the outcome store: {exc}") from None
    return texts, sigs, types


def load_cascade_data(path: str | Path, fmt: str | None = None, *, weak: str | None = None,
                      strong: str | None = None) -> CascadeData:
    """Load graded outcomes (:func:`~effreason_agents.evaluation.outcomes.load_table`) with
    the weak arm's replies: a wide CSV's ``<model>_response`` column, or the outcome
    store's logged attempts (:func:`store_replies`)."""
    kind = (fmt or infer_format(path)).strip().lower()
    arms = [a for a in (weak, strong) if a]
    table = load_table(path, kind, arms=None)
    if arms:
        unknown = [a for a in arms if a not in table.arms]
        if unknown:
            raise RouterTrainError(f"unknown arm {unknown[0]!r}; arms in {table.source}: {', '.join(table.arms)}")
    if kind != "store":
        return cascade_data(table, weak, strong)
    if weak is None:
        weak = default_pair(table)[0]
    texts, sigs, types = store_replies(path, table, weak)
    return cascade_data(table, weak, strong, replies=texts, signals=sigs, answer_types=types)


# -- fitting -----------------------------------------------------------------------------------


def _need_sklearn() -> None:
    import importlib.util

    if importlib.util.find_spec("sklearn") is None or importlib.util.find_spec("scipy") is None:
        raise RouterTrainError(f"fitting a cascade scorer needs scikit-learn: {_TRAIN_EXTRA}")


@dataclass
class _Design:
    """Standardized dense columns and the reply vocabulary fitted on some training rows."""

    columns: np.ndarray  # indices into feature_names(SIGNAL_FEATURES)
    mean: np.ndarray
    scale: np.ndarray
    text: AnswerText

    @classmethod
    def fit(cls, dense: np.ndarray, replies: Sequence[str], min_df: int, max_terms: int) -> "_Design":
        finite = np.isfinite(dense)
        keep = []
        for j in range(dense.shape[1]):
            col = dense[finite[:, j], j]
            if col.size and np.unique(col).size > 1:
                keep.append(j)
        cols = np.asarray(keep, dtype=np.int64)
        sub = dense[:, cols]
        mean = np.nanmean(sub, axis=0) if cols.size else np.zeros(0)
        scale = np.nanstd(sub, axis=0) if cols.size else np.zeros(0)
        scale = np.where(scale > 0, scale, 1.0)
        return cls(cols, mean, scale, AnswerText.fit(replies, min_df=min_df, max_terms=max_terms))

    def matrix(self, dense: np.ndarray, replies: Sequence[str], weight: float) -> Any:
        z = (dense[:, self.columns] - self.mean) / self.scale
        z = np.where(np.isfinite(z), z, 0.0)
        if not weight or not len(self.text):
            return z
        from scipy import sparse

        rows = [self.text.row(r) for r in replies]
        indptr = np.concatenate([[0], np.cumsum([len(i) for i, _ in rows])])
        idx = np.concatenate([i for i, _ in rows]) if rows else np.zeros(0, np.int64)
        val = np.concatenate([v for _, v in rows]) if rows else np.zeros(0)
        t = sparse.csr_matrix((val * weight, idx, indptr), shape=(len(replies), len(self.text)))
        return sparse.hstack([sparse.csr_matrix(z), t], format="csr")


def _logistic(C: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="lbfgs", max_iter=5000, random_state=seed)


def _pick(dense: np.ndarray, replies: list[str], y: np.ndarray, seed: int, grid_c: Sequence[float],
          grid_text: Sequence[float], inner: int, min_df: int, max_terms: int) -> tuple[float, float, dict[str, float]]:
    """(C, text weight) with the lowest inner-CV log loss, and every setting's loss."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    settings = [(c, w) for w in grid_text for c in grid_c]
    if min(int(y.sum()), int((~y).sum())) < inner or len(settings) == 1:
        return settings[len(settings) // 2][0], settings[len(settings) // 2][1], {}
    losses = {s: [] for s in settings}
    folds = StratifiedKFold(n_splits=inner, shuffle=True, random_state=seed)
    for tr, te in folds.split(np.zeros(len(y)), y):
        design = _Design.fit(dense[tr], [replies[i] for i in tr], min_df, max_terms)
        for w in grid_text:
            A = design.matrix(dense[tr], [replies[i] for i in tr], w)
            B = design.matrix(dense[te], [replies[i] for i in te], w)
            for c in grid_c:
                m = _logistic(c, seed).fit(A, y[tr])
                losses[(c, w)].append(log_loss(y[te], m.predict_proba(B)[:, 1], labels=[False, True]))
    mean = {s: float(np.mean(v)) for s, v in losses.items()}
    best = min(settings, key=lambda s: (round(mean[s], 12), s[1], s[0]))
    return best[0], best[1], {f"C={c:g},text={w:g}": round(v, 5) for (c, w), v in mean.items()}


@dataclass
class FittedScorer:
    """A fitted cascade scorer in memory: :meth:`predict` runs the run-time code
    (:class:`~effreason_agents.adapters.scorer.CascadeScorer`), :meth:`save` writes it."""

    card: dict[str, Any]
    arrays: dict[str, np.ndarray]
    scorer: CascadeScorer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.scorer = CascadeScorer({"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, **self.card},
                                    self.arrays, source="<fitted>")

    def predict(self, data: CascadeData) -> np.ndarray:
        """P(the weak arm is right) for each row of ``data``."""
        dense = data.dense()[:, self.scorer.feature_index]
        return np.asarray([_sig(self.scorer.logit(dense[i], data.replies[i])) for i in range(len(data))])

    def save(self, path: str | Path, card_extra: Mapping[str, Any] | None = None) -> Path:
        """Write the artifact directory (:func:`effreason_agents.adapters.scorer.save_scorer`);
        ``card_extra`` (cv report, threshold, applies_to) is merged into the card."""
        card = dict(self.card)
        for k, v in (card_extra or {}).items():
            if k == "training" and isinstance(v, Mapping):
                card["training"] = {**card.get("training", {}), **v}
            else:
                card[k] = v
        return save_scorer(path, card, self.arrays)


def _sig(x: float) -> float:
    from effreason_agents.core.numeric import sigmoid

    return float(sigmoid(x))


def fit_scorer(
    data: CascadeData,
    *,
    seed: int = 0,
    grid_c: Sequence[float] = C_GRID,
    grid_text: Sequence[float] = TEXT_WEIGHTS,
    inner_folds: int = INNER_FOLDS,
    min_df: int = 2,
    max_terms: int = 20000,
) -> FittedScorer:
    """Fit a cascade scorer on every row of ``data`` (see the module docstring).

    ``grid_c`` × ``grid_text`` are the settings the inner ``inner_folds``-fold
    cross-validation chooses from (one setting: no search). Raises
    :class:`RouterTrainError` for empty data, an empty grid or a missing scikit-learn.
    """
    if len(data) == 0:
        raise RouterTrainError("cannot fit a cascade scorer on no data")
    if not grid_c or not grid_text or any(c <= 0 for c in grid_c) or any(w < 0 for w in grid_text):
        raise RouterTrainError("the C grid needs positive values and the text weights non-negative ones")
    _need_sklearn()
    started = time.perf_counter()
    dense_all = data.dense()
    replies = list(data.replies)
    y = data.weak_right.astype(bool)
    pos = int(y.sum())
    names = feature_names(SIGNAL_FEATURES)
    info: dict[str, Any] = {}
    if pos in (0, len(y)):
        base = min(max(pos / len(y), _EPS), 1 - _EPS)
        design = _Design(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), AnswerText([], np.zeros(0)))
        w_dense, w_text, intercept, C, weight = np.zeros(0), np.zeros(0), math.log(base / (1 - base)), None, 0.0
        info["constant"] = f"every training answer is {'right' if pos else 'wrong'}: the scorer predicts {base:.3g}"
    else:
        C, weight, losses = _pick(dense_all, replies, y, seed, grid_c, grid_text, inner_folds, min_df, max_terms)
        design = _Design.fit(dense_all, replies, min_df, max_terms)
        if not len(design.text):
            weight = 0.0
        model = _logistic(C, seed).fit(design.matrix(dense_all, replies, weight), y)
        sign = 1.0 if bool(model.classes_[1]) else -1.0
        coef = sign * model.coef_[0]
        d = design.columns.size
        w_dense = coef[:d]
        w_text = coef[d:] if weight else np.zeros(len(design.text))
        intercept = sign * float(model.intercept_[0])
        info["inner_cv_log_loss"] = losses
    if not weight:  # the reply's words are not used: the artifact carries no vocabulary
        design.text, w_text = AnswerText([], np.zeros(0)), np.zeros(0)
    dense_names = [names[j] for j in design.columns]
    signals = [s for s in SIGNAL_FEATURES if s in dense_names]
    card = {
        "kind": "logistic",
        "arm": data.weak,
        "strong": data.strong,
        "applies_to": [data.weak],
        "features": {"version": FEATURES_VERSION, "dense": dense_names, "signals": signals,
                     "text": {"terms": len(design.text), "weight": float(weight), "min_df": min_df}},
        "threshold": None,
        "training": {"n": len(y), "positives": pos, "source": data.source, "seed": seed,
                     "hyper": {"C": C, "text_weight": float(weight), "C_grid": list(grid_c),
                               "text_weights": list(grid_text), "inner_folds": inner_folds},
                     "fit_seconds": round(time.perf_counter() - started, 3), **info},
    }
    arrays = {
        "mean": design.mean.astype(np.float64), "scale": design.scale.astype(np.float64),
        "w_dense": np.asarray(w_dense, dtype=np.float64), "intercept": np.asarray([intercept], dtype=np.float64),
        "vocab": np.asarray(design.text.vocab, dtype=str) if len(design.text) else np.zeros(0, dtype="<U1"),
        "idf": design.text.idf.astype(np.float64), "w_text": np.asarray(w_text, dtype=np.float64),
    }
    return FittedScorer(card, arrays)


# -- evaluation --------------------------------------------------------------------------------


def _grid(points: int = 101) -> np.ndarray:
    return np.linspace(0.0, 1.0, points)


def _cumulative(scores: np.ndarray, values: np.ndarray, points: int = 101) -> np.ndarray:
    """Sum of ``values`` over the ``c·n`` items with the highest ``scores``, for each share
    ``c`` on the grid; linear across groups of tied scores and between integer counts
    (as :func:`~effreason_agents.evaluation.metrics.router_curve` treats PGR)."""
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    ss, vv = scores[order], values[order]
    ends = [i + 1 for i in range(n) if i + 1 == n or ss[i + 1] != ss[i]]
    cum = np.cumsum(vv)
    bk = np.asarray([0, *ends], dtype=float)
    bv = np.asarray([0.0, *(cum[e - 1] for e in ends)])
    return np.interp(_grid(points) * n, bk, bv)


def _cost_curves(data: CascadeData, scores: np.ndarray, cascade: bool) -> np.ndarray | None:
    """Cost as a share of always-strong at each share of items sent to the strong arm."""
    if data.weak_cost is None or data.strong_cost is None:
        return None
    total_strong = float(data.strong_cost.sum())
    if total_strong <= 0:
        return None
    strong_part = _cumulative(scores, data.strong_cost)
    if cascade:  # every cheap call is paid, then the escalated strong ones
        cost = float(data.weak_cost.sum()) + strong_part
    else:  # one arm per item
        cost = float(data.weak_cost.sum()) - _cumulative(scores, data.weak_cost) + strong_part
    return cost / total_strong


def _method(data: CascadeData, scores: np.ndarray, base: np.ndarray | None, cascade: bool, n_boot: int, seed: int,
            level: float) -> dict[str, Any]:
    w, s = data.weak_right.tolist(), data.strong_right.tolist()
    summary = two_arm_summary(w, s, scores.tolist())
    curve = summary["curves"]["router"]
    out: dict[str, Any] = {k: summary["router"][k] for k in ("apgr", "cpt50", "cpt80")}
    auc = auroc(scores.tolist(), (~data.weak_right).tolist())
    out["auc"] = None if np.isnan(auc) else float(auc)
    if n_boot > 0:
        boot = bootstrap_apgr(w, s, scores.tolist(), n_boot=n_boot, seed=seed, level=level,
                              baseline_scores=None if base is None else base.tolist())
        out["interval"] = {k: boot[k] for k in ("low", "high", "level", "n_boot", "skipped")}
        if base is not None:
            out["vs_pre_routing"] = {k: boot[k] for k in ("diff", "diff_low", "diff_high", "p_better")}
    costs = _cost_curves(data, scores, cascade)
    if costs is not None:
        grid = _grid()
        at = {name: (None if out[name] is None else float(np.interp(out[name], grid, costs))) for name in ("cpt50", "cpt80")}
        out["cost"] = {"at_cpt50": at["cpt50"], "at_cpt80": at["cpt80"],
                       "curve": [[float(c), float(x)] for c, x in zip(grid, costs)]}
        # PGR reachable within a spend (share of always-strong): the best grid point that fits
        pgr = np.asarray([p for _, p in curve])
        out["pgr_within_cost"] = {f"{b:g}": (float(pgr[costs <= b + 1e-12].max()) if (costs <= b + 1e-12).any() else None)
                                  for b in (0.25, 0.5, 0.75)}
    out["curve"] = curve
    return out


def cascade_report(
    data: CascadeData,
    *,
    k: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    pre_routing: str = "logistic",
    grid_c: Sequence[float] = C_GRID,
    grid_text: Sequence[float] = TEXT_WEIGHTS,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """k-fold cross-validated cascade report next to pre-routing, on the same folds and items.

    Returns ``{"n", "k", "seed", "weak", "strong", "acc_weak", "acc_strong", "cost_unit",
    "always_weak_cost", "cascade", "pre_routing", "baselines", "folds", "oof", "notes",
    "seconds"}``. ``cascade`` and ``pre_routing`` each hold ``apgr``, ``cpt50``, ``cpt80``,
    ``auc`` (of the ordering against "the weak arm is wrong"), ``interval`` (bootstrap
    percentile interval of APGR: ``low``, ``high``, ``level``, ``n_boot``, ``skipped``),
    ``cost`` (``at_cpt50``, ``at_cpt80``: cost as a share of always-strong at those
    shares; ``curve``) and ``pgr_within_cost`` (the best PGR whose cost stays within 25%,
    50%, 75% of always-strong), ``curve`` (PGR per share); ``cascade.vs_pre_routing``
    is the paired bootstrap of the APGR difference (``diff``, ``diff_low``,
    ``diff_high``, ``p_better``). ``folds``: the scorer's chosen ``C`` and text weight
    per fold; ``oof``: the out-of-fold P(weak right) of every row. Costs are ``None``
    without logged costs or token counts.
    """
    from router_training.models import fit_predict

    started = time.perf_counter()
    n = len(data)
    folds = prompt_folds(n, k, seed)
    oof = np.full(n, np.nan)
    pre = np.full(n, np.nan)
    table = data.table()
    fit_router = fit_predict(pre_routing)
    chosen: list[dict[str, Any]] = []
    steps = 2 * k
    for f in range(k):
        test = np.flatnonzero(folds == f)
        train = np.flatnonzero(folds != f)
        if on_progress:
            on_progress(f"fold {f + 1}/{k}: cascade scorer", 2 * f, steps)
        fitted = fit_scorer(data.subset(train), seed=seed, grid_c=grid_c, grid_text=grid_text)
        oof[test] = fitted.predict(data.subset(test))
        hyper = fitted.card["training"]["hyper"]
        chosen.append({"fold": f, "n_train": int(train.size), "n_test": int(test.size), "C": hyper["C"],
                       "text_weight": hyper["text_weight"]})
        if on_progress:
            on_progress(f"fold {f + 1}/{k}: pre-routing", 2 * f + 1, steps)
        predict = fit_router(table.subset(train))
        p = np.asarray(predict([data.prompts[i] for i in test]), dtype=float)
        pre[test] = p[:, 1] - p[:, 0]
    if on_progress:
        on_progress("bootstrap", steps, steps)
    cascade_scores = 1.0 - oof
    w, s = data.weak_right.tolist(), data.strong_right.tolist()
    summary = two_arm_summary(w, s)
    report: dict[str, Any] = {
        "n": n, "k": int(k), "seed": int(seed), "weak": data.weak, "strong": data.strong,
        "acc_weak": summary["acc_weak"], "acc_strong": summary["acc_strong"], "cost_unit": data.cost_unit,
        "always_weak_cost": (float(data.weak_cost.sum() / data.strong_cost.sum())
                             if data.weak_cost is not None and data.strong_cost is not None and data.strong_cost.sum() > 0
                             else None),
        "cascade": _method(data, cascade_scores, pre, True, n_boot, seed, level),
        "pre_routing": {"model": pre_routing, **_method(data, pre, None, False, n_boot, seed, level)},
        "baselines": {name: {**summary[name], "curve": summary["curves"][name]} for name in ("random", "oracle")},
        "folds": chosen,
        "oof": [float(x) for x in oof],
        "source": data.source,
        "notes": list(data.notes),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if on_progress:
        on_progress("done", steps, steps)
    return report


def _threshold(oof: Sequence[float], share: float | None) -> float | None:
    """The P(right) below which the out-of-fold scores escalate ``share`` of the items."""
    if share is None:
        return None
    p = np.sort(np.asarray(oof, dtype=float))
    m = int(math.ceil(share * len(p)))
    if m <= 0:
        return float(p[0]) if p.size else None
    if m >= len(p):
        return 1.0
    return float((p[m - 1] + p[m]) / 2.0)


def train_scorer(data: CascadeData, out: str | Path, *, report: Mapping[str, Any] | None = None, seed: int = 0,
                 applies_to: Sequence[str] | None = None, grid_c: Sequence[float] = C_GRID,
                 grid_text: Sequence[float] = TEXT_WEIGHTS) -> Path:
    """Fit the scorer on every row of ``data`` and save it to ``out``.

    With a :func:`cascade_report` of the same data, its summary goes into the card's
    ``cv`` and the card's ``threshold`` is the P(right) below which the out-of-fold
    scores escalate the share reaching CPT(80%) (``None`` when never reached); the
    configuration's ``escalation.confidence_threshold`` wins over it. ``applies_to``:
    the arm, tier or model names the scorer judges at run time (default: the weak arm).
    """
    fitted = fit_scorer(data, seed=seed, grid_c=grid_c, grid_text=grid_text)
    extra: dict[str, Any] = {}
    if applies_to:
        names = [str(a) for a in dict.fromkeys(applies_to) if str(a)]
        if not names:
            raise RouterTrainError("applies_to must name at least one arm, tier or model")
        extra["applies_to"] = names
    if report is not None:
        cas = report.get("cascade") or {}
        extra["cv"] = {
            "k": report.get("k"), "seed": report.get("seed"), "n": report.get("n"),
            "cascade": {key: cas.get(key) for key in ("apgr", "cpt50", "cpt80", "auc", "interval")},
            "pre_routing": {key: (report.get("pre_routing") or {}).get(key)
                            for key in ("apgr", "cpt50", "cpt80", "auc", "interval")},
            "cost_unit": report.get("cost_unit"),
            "cost_at_cpt80": (cas.get("cost") or {}).get("at_cpt80"),
        }
        extra["threshold"] = _threshold(report.get("oof") or [], cas.get("cpt80"))
        extra["threshold_rule"] = ("P(right) below which the out-of-fold scores escalated the share reaching "
                                   "PGR 80% (CPT(80%))")
    try:
        return fitted.save(out, extra)
    except EffReasonError:
        raise
    except OSError as exc:
        raise RouterTrainError(f"cannot write the scorer to {out}: {exc}") from exc
