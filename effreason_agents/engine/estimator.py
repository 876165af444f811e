"""Token budgets for the TALE-style ``budget-cot`` strategy.

``budget-cot`` prompts "think step by step and use less than N tokens"; this
module picks N for one question. Three estimators, chosen by
``BudgetConfig.estimator``:

- ``heuristic`` (default, free): N from the difficulty classifier's features
  and score — easy ≈ 24–40, medium ≈ 60–120, hard ≈ 150–300 tokens, monotone
  in the difficulty score.
- ``tale``: ask the cheapest tier, at temperature 0, how many output tokens a
  careful step-by-step answer needs, in the ``[[N]]`` form of the TALE paper
  (Han et al. 2024). The call's tokens and cost are reported on the
  :class:`Estimate`.
- ``regressor``: a ridge-regularised linear model on ``log(output_tokens)`` of
  *correct* logged answers over fixed query features, fitted with numpy
  (:class:`BudgetRegressor`) and stored as plain JSON.

Every N is clamped to ``[MIN_BUDGET, MAX_BUDGET]``. The lower clamp matters:
TALE reports *token elasticity* — a budget that is too small backfires, the
model ignores it and writes more tokens than it would under a moderate budget
(a 10-token budget produced longer answers than a 50-token one). So no
estimator ever returns less than ``MIN_BUDGET``.

:func:`estimate_budget` never raises for an estimation failure: a TALE call
that fails or cannot be parsed, or a regressor file that is missing or
broken, falls back to the heuristic with ``method="heuristic (fallback: why)"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from effreason_agents.adapters.atomic import write_json
from effreason_agents.core.features import classify_difficulty, difficulty_features
from effreason_agents.errors import EffReasonError, EstimatorError, TierError

if TYPE_CHECKING:
    from effreason_agents.config import BudgetConfig
    from effreason_agents.adapters.tiers import TierClient

__all__ = [
    "MAX_BUDGET",
    "MIN_BUDGET",
    "REGRESSOR_FEATURES",
    "REGRESSOR_VERSION",
    "TALE_PROMPT",
    "BudgetRegressor",
    "Estimate",
    "EstimatorError",
    "clamp_budget",
    "estimate_budget",
    "heuristic_budget",
    "parse_budget",
    "regressor_features",
    "rows_from_store",
    "tale_budget",
]

log = logging.getLogger(__name__)

MIN_BUDGET = 16
"""Smallest budget ever returned. Below this, token elasticity makes budgets backfire."""
MAX_BUDGET = 1024
"""Largest budget ever returned; larger problems should escalate, not think longer on a small tier."""


@dataclass(frozen=True)
class Estimate:
    """A token budget N and what estimating it cost."""

    tokens: int
    method: str
    cost_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def fell_back(self) -> bool:
        return self.method.startswith("heuristic (fallback")


def clamp_budget(tokens: float) -> int:
    """Round and clamp to ``[MIN_BUDGET, MAX_BUDGET]`` (non-finite values clamp to the nearest end)."""
    if math.isnan(tokens):
        return MIN_BUDGET
    if math.isinf(tokens):
        return MAX_BUDGET if tokens > 0 else MIN_BUDGET
    return int(min(MAX_BUDGET, max(MIN_BUDGET, round(tokens))))


# -- heuristic ----------------------------------------------------------------------


def heuristic_budget(question: str) -> int:
    """N from the difficulty score (which combines words, numbers, operators,
    multi-step wording, hard words, sentences and the question type).

    Piecewise linear and non-decreasing in the score, with the classifier's
    thresholds as breakpoints: easy (score < 1.2) 24–40, medium (< 3.0) 60–120,
    hard 150 rising to 300; then clamped.
    """
    _, f = classify_difficulty(question)
    s = max(0.0, float(f["score"]))
    if s < 1.2:
        n = 24 + (40 - 24) * s / 1.2
    elif s < 3.0:
        n = 60 + (120 - 60) * (s - 1.2) / 1.8
    else:
        n = min(300.0, 150 + 30 * (s - 3.0))
    return clamp_budget(n)


# -- TALE ---------------------------------------------------------------------------

TALE_PROMPT = (
    "How many output tokens would a careful step-by-step answer to this question need? "
    "Reply only as [[N]].\n\nQuestion: {question}"
)

_BRACKETED = re.compile(r"\[\[\s*(\d[\d,]*)")
_ANY_INT = re.compile(r"\d[\d,]*")


def parse_budget(text: str) -> int | None:
    """The first integer inside ``[[...]]``, else the first integer at all, else ``None`` (not clamped)."""
    m = _BRACKETED.search(text) or _ANY_INT.search(text)
    if not m:
        return None
    digits = m.group(1 if m.re is _BRACKETED else 0).replace(",", "")
    return int(digits) if digits else None


def tale_budget(question: str, client: TierClient | Any, *, max_tokens: int = 24) -> Estimate:
    """Ask ``client`` (the cheapest tier) for N in ``[[N]]`` form, at temperature 0.

    Falls back to :func:`heuristic_budget` when the tier fails or the reply has no
    number; the tokens and cost of a call that did return are still reported.
    """
    from langchain_core.messages import HumanMessage

    try:
        c = client.complete([HumanMessage(content=TALE_PROMPT.format(question=question))], max_tokens=max_tokens, temperature=0.0)
    except TierError as exc:
        return Estimate(heuristic_budget(question), f"heuristic (fallback: tale call failed: {exc})")
    spent = {"cost_usd": Decimal(c.cost_usd), "input_tokens": int(c.input_tokens), "output_tokens": int(c.output_tokens)}
    n = parse_budget(c.text or "")
    if n is None:
        reply = (c.text or "").strip().replace("\n", " ")[:60]
        return Estimate(heuristic_budget(question), f"heuristic (fallback: no number in tale reply {reply!r})", **spent)
    return Estimate(clamp_budget(n), "tale", **spent)


# -- regressor ----------------------------------------------------------------------

REGRESSOR_VERSION = 1
_FORMAT = "effreason-budget-regressor"
_NUMERIC = ("words", "numbers", "max_number_digits", "operators", "multi_step_words", "hard_words", "sentences")
from effreason_agents.core.features import QUESTION_TYPES as _TYPES  # noqa: E402
REGRESSOR_FEATURES: tuple[str, ...] = tuple(f"log1p_{n}" for n in _NUMERIC) + tuple(f"type={t}" for t in _TYPES)
"""The fixed feature vector: ``log1p`` of each numeric difficulty feature, then a one-hot
of the question type. Changing it needs a new ``REGRESSOR_VERSION``."""
_MIN_ROWS = 8


def regressor_features(question: str) -> np.ndarray:
    """The feature vector (in ``REGRESSOR_FEATURES`` order) of one question."""
    f = difficulty_features(question)
    nums = [math.log1p(max(0, float(f[n]))) for n in _NUMERIC]
    onehot = [1.0 if f["type"] == t else 0.0 for t in _TYPES]
    return np.array(nums + onehot, dtype=float)


def _rows_hash(pairs: Sequence[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for q, t in sorted(pairs):
        h.update(json.dumps([q, t], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


class BudgetRegressor:
    """Ridge regression of ``log(output_tokens)`` of correct answers on :data:`REGRESSOR_FEATURES`.

    Features are standardised with the training mean/scale; the intercept (the
    mean log tokens) is not penalised. ``predict`` returns ``exp(prediction) × margin``,
    clamped: the margin (default 1.2) leaves room above the typical length so a
    correct answer is rarely cut.
    """

    def __init__(self, *, alpha: float = 1.0, margin: float = 1.2) -> None:
        if alpha < 0 or margin <= 0:
            raise EstimatorError("alpha must be >= 0 and margin > 0")
        self.alpha = float(alpha)
        self.margin = float(margin)
        self.weights: np.ndarray | None = None
        self.intercept = 0.0
        self.mean = np.zeros(len(REGRESSOR_FEATURES))
        self.scale = np.ones(len(REGRESSOR_FEATURES))
        self.n_rows = 0
        self.data_sha256 = ""

    @property
    def fitted(self) -> bool:
        return self.weights is not None

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> BudgetRegressor:
        """Fit on rows with ``question``, ``output_tokens`` and ``correct``; only correct rows
        with a positive token count are used, and at least 8 are needed."""
        pairs: list[tuple[str, int]] = []
        for r in rows:
            if not bool(r.get("correct")):
                continue
            q, t = r.get("question"), r.get("output_tokens")
            if not isinstance(q, str) or not q.strip() or t is None or int(t) <= 0:
                continue
            pairs.append((q, int(t)))
        if len(pairs) < _MIN_ROWS:
            raise EstimatorError(
                f"a budget regressor needs at least {_MIN_ROWS} correct answers with output tokens; got {len(pairs)} "
                f"(of {len(rows)} rows). Log more graded outcomes (e.g. run a benchmark) and fit again."
            )
        X = np.vstack([regressor_features(q) for q, _ in pairs])
        y = np.log(np.array([t for _, t in pairs], dtype=float))
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0
        Z = (X - mean) / scale
        ym = float(y.mean())
        A = Z.T @ Z + self.alpha * np.eye(Z.shape[1])
        w = np.linalg.lstsq(A, Z.T @ (y - ym), rcond=None)[0]
        self.weights, self.intercept, self.mean, self.scale = w, ym, mean, scale
        self.n_rows = len(pairs)
        self.data_sha256 = _rows_hash(pairs)
        return self

    def predict_log(self, question: str) -> float:
        if self.weights is None:
            raise EstimatorError("the budget regressor is not fitted; call fit() or load() first")
        z = (regressor_features(question) - self.mean) / self.scale
        return float(self.intercept + z @ self.weights)

    def predict(self, question: str) -> int:
        """Budget N: ``exp(log-prediction) × margin``, clamped."""
        lp = min(self.predict_log(question), math.log(MAX_BUDGET) + 1.0)  # no overflow in exp
        return clamp_budget(math.exp(lp) * self.margin)

    def to_json(self) -> dict[str, Any]:
        if self.weights is None:
            raise EstimatorError("the budget regressor is not fitted; nothing to save")
        return {
            "format": _FORMAT,
            "version": REGRESSOR_VERSION,
            "feature_names": list(REGRESSOR_FEATURES),
            "weights": [float(v) for v in self.weights],
            "intercept": self.intercept,
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "alpha": self.alpha,
            "margin": self.margin,
            "n_rows": self.n_rows,
            "data_sha256": self.data_sha256,
            "min_budget": MIN_BUDGET,
            "max_budget": MAX_BUDGET,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (atomically: a temp file, then rename)."""
        p = Path(path)
        write_json(p, self.to_json())
        return p

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "the model data") -> BudgetRegressor:
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise EstimatorError(f"{source} is not a budget regressor file (format {_FORMAT!r} expected)")
        if data.get("version") != REGRESSOR_VERSION:
            raise EstimatorError(
                f"{source} has budget regressor version {data.get('version')!r}, this library reads version "
                f"{REGRESSOR_VERSION}; fit it again with this version"
            )
        if list(data.get("feature_names") or []) != list(REGRESSOR_FEATURES):
            raise EstimatorError(
                f"{source} was fitted on other features ({data.get('feature_names')!r}); fit it again with this version"
            )
        k = len(REGRESSOR_FEATURES)
        try:
            m = cls(alpha=float(data["alpha"]), margin=float(data["margin"]))
            w = np.array(data["weights"], dtype=float)
            mean = np.array(data["mean"], dtype=float)
            scale = np.array(data["scale"], dtype=float)
            intercept = float(data["intercept"])
            n_rows = int(data["n_rows"])
            sha = str(data.get("data_sha256", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise EstimatorError(f"{source} is a broken budget regressor file ({exc!r}); fit it again") from exc
        if not (w.shape == mean.shape == scale.shape == (k,)) or not np.all(np.isfinite(np.r_[w, mean, scale, intercept])):
            raise EstimatorError(f"{source} is a broken budget regressor file (bad weight arrays); fit it again")
        if np.any(scale == 0):
            raise EstimatorError(f"{source} is a broken budget regressor file (zero scale); fit it again")
        m.weights, m.mean, m.scale, m.intercept, m.n_rows, m.data_sha256 = w, mean, scale, intercept, n_rows, sha
        return m

    @classmethod
    def load(cls, path: str | Path) -> BudgetRegressor:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise EstimatorError(f"budget regressor file {str(p)!r} does not exist; fit one first") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EstimatorError(f"budget regressor file {str(p)!r} cannot be read as JSON ({exc})") from exc
        return cls.from_json(data, source=f"budget regressor file {str(p)!r}")


def rows_from_store(store_path: str | Path, *, run_id: str | None = None, arm: str | None = None) -> list[dict[str, Any]]:
    """Training rows (``question``, ``correct``, ``output_tokens``) from the outcome store's
    graded benchmark results, optionally for one run and/or one arm. ``store_path``: the
    SQLite file or the PostgreSQL URL; opened read-only."""
    from effreason_agents.adapters.store import OutcomeStore
    from effreason_agents.core.text import is_postgres_url, redact_url

    where = redact_url(str(store_path)) if is_postgres_url(store_path) else str(store_path)
    if not is_postgres_url(store_path) and not Path(store_path).is_file():
        raise EstimatorError(f"outcome store {where!r} does not exist; run a benchmark to create graded outcomes")
    try:
        with OutcomeStore(store_path, read_only=True) as store:
            results = store.bench_results(run_id, arm=arm)
    except EffReasonError as exc:
        raise EstimatorError(f"cannot read graded results from {where!r} ({exc}); is it an outcome store?") from exc
    out = [{"question": r.question, "correct": bool(r.correct), "output_tokens": int(r.output_tokens or 0)}
           for r in results]
    if not out:
        what = (" matching" + (f" run_id={run_id!r}" if run_id else "") + (f" arm={arm!r}" if arm else "")
                if run_id or arm else "")
        raise EstimatorError(f"outcome store {where!r} has no{what} bench_results; run a benchmark first")
    return out


# -- dispatch -----------------------------------------------------------------------

_cache_lock = threading.Lock()
_regressor_cache: dict[str, tuple[tuple[int, int], BudgetRegressor]] = {}


def _cached_regressor(path: str) -> BudgetRegressor:
    """Load once per path; reloaded when the file's mtime or size changes."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError as exc:
        raise EstimatorError(f"budget regressor file {str(p)!r} does not exist; fit one first") from exc
    key, stamp = str(p.resolve()), (st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _regressor_cache.get(key)
        if hit and hit[0] == stamp:
            return hit[1]
    model = BudgetRegressor.load(p)
    with _cache_lock:
        _regressor_cache[key] = (stamp, model)
    return model


def _fallback(question: str, why: str) -> Estimate:
    log.warning("budget estimator falling back to the heuristic: %s", why)
    return Estimate(heuristic_budget(question), f"heuristic (fallback: {why})")


def estimate_budget(question: str, budget_cfg: BudgetConfig, *, client: TierClient | Any | None = None) -> Estimate:
    """N for ``question`` by ``budget_cfg.estimator``; never raises for estimation failures."""
    kind = getattr(budget_cfg, "estimator", "heuristic")
    if kind == "tale":
        if client is None:
            return _fallback(question, "estimator 'tale' needs a tier client and none is usable")
        try:
            est = tale_budget(question, client)
        except Exception as exc:  # noqa: BLE001 - estimation must not fail the request
            return _fallback(question, f"tale estimator failed: {type(exc).__name__}: {exc}")
        if est.fell_back:
            log.warning("budget estimator: %s", est.method)
        return est
    if kind == "regressor":
        path = getattr(budget_cfg, "regressor_path", None)
        if not path:
            return _fallback(question, "estimator 'regressor' needs budget.regressor_path")
        try:
            return Estimate(_cached_regressor(path).predict(question), "regressor")
        except Exception as exc:  # noqa: BLE001
            return _fallback(question, str(exc))
    return Estimate(heuristic_budget(question), "heuristic")
