"""Fit routers: per-arm P(correct) predictors from an :class:`~router_training.table.OutcomeTable`.

:func:`fit_router` featurizes the prompts with :class:`effreason_agents.adapters.router.Featurizer`
(word + char TF-IDF, hand features, optionally MiniLM embeddings) and fits one of
:data:`KINDS`; the result predicts through the same numpy code the run time uses
(:class:`effreason_agents.adapters.router.Router`), and :meth:`FittedRouter.save` writes the
artifact.

Labels. ``table.correct`` holds values in [0, 1] with NaN where an arm has no result;
a NaN cell is skipped (that prompt does not train that arm).

* ``logistic`` — one scikit-learn ``LogisticRegression`` per arm on the sparse features
  (liblinear, L2, no class weights, ``intercept_scaling=10`` so the intercept is hardly
  penalized). ``C``: ``"auto"`` (default) picks it from :data:`C_GRID` by stratified
  3-fold log loss on the arm's rows when it has at most :data:`C_AUTO_MAX_ROWS` labelled
  rows (small tables are sensitive to it) and uses :data:`C_LARGE` above that (large
  ones are not, and 15 extra fits per arm would cost minutes); ``"cv"`` always
  searches; a number fixes it. Labels are thresholded: ``>= 0.5`` is correct.
* ``gbm`` — one ``HistGradientBoostingClassifier`` per arm on dense inputs: the two
  TF-IDF blocks compressed by a ``TruncatedSVD`` (``svd_components``, 64 by default)
  followed by the hand features (and the embedding when on). Labels thresholded at 0.5.
  The SVD components are saved as an array; the classifiers in ``model.skops``.
* ``mlp`` — torch: a shared trunk (one hidden ReLU layer of ``hidden`` = 256 units, fed
  the sparse features through an ``EmbeddingBag``) and one sigmoid output per arm,
  trained with Adam on the masked binary cross-entropy of the known cells; soft labels
  are used as they are. ``epochs`` passes, more on small tables so that at least
  ``min_steps`` minibatch steps are taken. Exported as arrays ``W0 (d×h), b0, W1 (h×a), b1``.
* ``mf`` — torch: matrix factorization in the spirit of RouteLLM's ``mf`` router: the
  query's features projected to ``dim`` = 32 (``P``), a learned embedding per arm (``E``)
  and a bias; ``p = σ(E[arm] · P x + bias[arm])``, masked BCE on (query, arm) pairs. The
  arms share the query projection, so an arm with few logs borrows strength from the
  others.

An arm whose known labels fall in a single class (after thresholding at 0.5), or that
has none, predicts its base rate — the mean of its labels, or of all labels when it has
none — as a constant. Torch kinds are deterministic for a given ``seed`` (their random
state is forked, the caller's is left alone).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.adapters.router import (
    FEATURIZER_VERSION,
    KINDS,
    Featurizer,
    Router,
    RouterError,
    gbm_dense,
    save_router,
)

from effreason_agents.evaluation.outcomes import OutcomeTable

__all__ = ["C_AUTO_MAX_ROWS", "C_GRID", "C_LARGE", "DEFAULTS", "KINDS", "KNN_K_GRID", "KNN_TEMP_GRID", "FittedRouter",
           "fit_predict", "fit_router", "knn_select"]

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
C_AUTO_MAX_ROWS = 3000  # C="auto": inner CV up to this many labelled rows per arm, else C_LARGE
C_LARGE = 0.3  # on 7,634 MMLU prompts: 5-fold APGR 0.62 at C = 0.3, 0.61 at 1, 0.60 at 3
FEATURE_DEFAULTS: dict[str, Any] = {"max_words": 20000, "max_chars": 20000, "min_df": 2}
DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic": {"C": "auto", "max_iter": 200, "solver": "liblinear", "intercept_scaling": 10.0},
    "gbm": {"svd_components": 64, "max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31,
            "min_samples_leaf": 20, "l2_regularization": 0.0, "early_stopping": "auto"},
    "mlp": {"hidden": 256, "epochs": 8, "min_steps": 300, "lr": 1e-3, "batch_size": 256, "weight_decay": 1e-5,
            "dropout": 0.1, "init_std": 0.1},
    "mf": {"dim": 32, "epochs": 15, "min_steps": 300, "lr": 3e-3, "batch_size": 256, "weight_decay": 1e-5,
           "init_std": 0.1},
    "knn": {"k": "auto", "temp": "auto", "prior": 1.0},
}
DEFAULTS["ensemble"] = {**DEFAULTS["logistic"], **DEFAULTS["knn"], "weight": 0.5}
#: k and temp (0: uniform weights) tried by the knn kind's leave-one-out selection.
KNN_K_GRID = (10, 25, 50, 100, 200, 400)
KNN_TEMP_GRID = (0.0, 0.02, 0.05, 0.1)
_EPS = 1e-6
_TRAIN_EXTRA = "pip install 'effreason-agents[train]'"


# -- labels ----------------------------------------------------------------------------


def _logit(p: float) -> float:
    p = min(max(float(p), _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def _arm_labels(Y: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per arm: the known rows, the base rate, and whether it is constant (one class)."""
    known_all = Y[np.isfinite(Y)]
    overall = float(known_all.mean()) if known_all.size else 0.5
    rows, base, const = [], np.empty(Y.shape[1]), np.zeros(Y.shape[1], dtype=bool)
    for j in range(Y.shape[1]):
        r = np.flatnonzero(np.isfinite(Y[:, j]))
        rows.append(r)
        y = Y[r, j]
        base[j] = float(y.mean()) if y.size else overall
        const[j] = y.size == 0 or len(np.unique(y >= 0.5)) < 2
    return rows, np.clip(base, _EPS, 1.0 - _EPS), const


# -- fitted router ---------------------------------------------------------------------


@dataclass
class FittedRouter:
    """A fitted router in memory: :meth:`predict` runs the run-time code, :meth:`save` writes it."""

    kind: str
    arms: list[str]
    featurizer: Featurizer
    arrays: dict[str, np.ndarray]
    sk_model: list[Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    router: Router = field(init=False, repr=False)

    def __post_init__(self) -> None:
        card = {"kind": self.kind, "arms": list(self.arms),
                "features": {"set": self.featurizer.name, "version": FEATURIZER_VERSION, "dim": self.featurizer.dim,
                             "embeddings": self.featurizer.embeddings},
                "policy": {"kind": "threshold", "tau": 0.5, "costs": {}}}
        self.router = Router(card, self.featurizer, self.arrays, self.sk_model)

    def predict(self, prompts: Sequence[str]) -> np.ndarray:
        """P(correct) (n × arms, columns in :attr:`arms` order)."""
        return self.router.predict(prompts)

    def predict_one(self, text: str) -> dict[str, float]:
        return self.router.predict_one(text)

    def save(self, path: str | os.PathLike[str], card_extra: Mapping[str, Any] | None = None) -> Path:
        """Write the artifact directory (see :func:`effreason_agents.adapters.router.save_router`);
        ``card_extra`` (cv metrics, policy, training details) is merged into the card."""
        model: Any = {"arrays": self.arrays, "sk_model": self.sk_model} if self.kind == "gbm" else self.arrays
        extra: dict[str, Any] = {"training": dict(self.training)}
        for k, v in (card_extra or {}).items():
            if k == "training" and isinstance(v, Mapping):
                extra["training"].update(v)
            else:
                extra[k] = v
        return save_router(path, self.featurizer, self.kind, model, self.arms, extra)


# -- kinds -----------------------------------------------------------------------------


def _need_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise RouterError(f"fitting a router needs scikit-learn: {_TRAIN_EXTRA}") from exc


def _pick_c(X: Any, y: np.ndarray, hp: Mapping[str, Any], seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    if min(int(y.sum()), int((~y).sum())) < 3:
        return C_LARGE
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    best, best_loss = C_LARGE, math.inf
    for c in C_GRID:
        losses = []
        for tr, te in folds.split(np.zeros(len(y)), y):
            m = LogisticRegression(C=c, solver=hp["solver"], max_iter=hp["max_iter"],
                                   intercept_scaling=hp["intercept_scaling"], random_state=seed)
            m.fit(X[tr], y[tr])
            losses.append(log_loss(y[te], m.predict_proba(X[te])[:, 1], labels=[False, True]))
        loss = float(np.mean(losses))
        if loss < best_loss - 1e-12:
            best, best_loss = c, loss
    return best


def _fit_logistic(X: Any, Y: np.ndarray, hp: Mapping[str, Any], seed: int) -> tuple[dict[str, np.ndarray], dict]:
    _need_sklearn()
    from sklearn.linear_model import LogisticRegression

    rows, base, const = _arm_labels(Y)
    n_arms, d = Y.shape[1], X.shape[1]
    W, b = np.zeros((n_arms, d)), np.zeros(n_arms)
    chosen: dict[str, float] = {}
    for j in range(n_arms):
        if const[j]:
            b[j] = _logit(base[j])
            continue
        r = rows[j]
        y = Y[r, j] >= 0.5
        mode = hp["C"]
        if mode == "cv" or (mode == "auto" and len(r) <= C_AUTO_MAX_ROWS):
            c = _pick_c(X[r], y, hp, seed)
        elif mode == "auto":
            c = C_LARGE
        else:
            c = float(mode)
        chosen[str(j)] = c
        m = LogisticRegression(C=c, solver=hp["solver"], max_iter=hp["max_iter"],
                               intercept_scaling=hp["intercept_scaling"], random_state=seed)
        m.fit(X[r], y)
        sign = 1.0 if bool(m.classes_[1]) else -1.0
        W[j] = sign * m.coef_[0]
        b[j] = sign * float(m.intercept_[0])
    return {"W": W, "b": b}, ({"C": chosen} if isinstance(hp["C"], str) else {})


def _fit_gbm(X: Any, Y: np.ndarray, featurizer: Featurizer, hp: Mapping[str, Any], seed: int
             ) -> tuple[dict[str, np.ndarray], list[Any]]:
    _need_sklearn()
    from sklearn.decomposition import TruncatedSVD
    from sklearn.ensemble import HistGradientBoostingClassifier

    t = featurizer.text_dim
    k = min(int(hp["svd_components"]), t - 1, X.shape[0] - 1)
    if k >= 1:
        svd = TruncatedSVD(n_components=k, random_state=seed).fit(X[:, :t])
        # stored as float32; the inputs are computed from the stored (rounded) values
        comps = svd.components_.astype(np.float32)
    else:
        comps = np.zeros((0, t), dtype=np.float32)
    D = gbm_dense(X, comps, t)
    rows, base, const = _arm_labels(Y)
    models: list[Any] = []
    for j in range(Y.shape[1]):
        if const[j]:
            models.append(None)
            continue
        r = rows[j]
        clf = HistGradientBoostingClassifier(
            max_iter=int(hp["max_iter"]), learning_rate=float(hp["learning_rate"]),
            max_leaf_nodes=int(hp["max_leaf_nodes"]), min_samples_leaf=int(hp["min_samples_leaf"]),
            l2_regularization=float(hp["l2_regularization"]), early_stopping=hp["early_stopping"],
            random_state=seed)
        clf.fit(D[r], (Y[r, j] >= 0.5).astype(np.int64))
        models.append(clf)
    arrays = {"svd": comps, "base_rate": base.astype(np.float64), "constant": const.astype(np.int8)}
    return arrays, models


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise RouterError(f"the mlp and mf routers are fitted with torch: {_TRAIN_EXTRA}") from exc
    return torch


def _bags(torch: Any, X: Any, rows: np.ndarray) -> tuple[Any, Any, Any]:
    sub = X[rows]
    return (torch.from_numpy(sub.indices.astype(np.int64)), torch.from_numpy(sub.indptr[:-1].astype(np.int64)),
            torch.from_numpy(sub.data.astype(np.float32)))


def _train_torch(kind: str, X: Any, Y: np.ndarray, hp: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    torch = _torch()
    nn = torch.nn
    n, a = Y.shape
    d = X.shape[1]
    _, base, const = _arm_labels(Y)
    X = X.tocsr()
    target = torch.from_numpy(np.nan_to_num(Y, nan=0.0).astype(np.float32))
    mask = torch.from_numpy(np.isfinite(Y).astype(np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        width = int(hp["hidden"]) if kind == "mlp" else int(hp["dim"])
        bag = nn.EmbeddingBag(d, width, mode="sum")
        nn.init.normal_(bag.weight, std=float(hp["init_std"]))
        if kind == "mlp":
            b0 = nn.Parameter(torch.zeros(width))
            out = nn.Linear(width, a)
            nn.init.normal_(out.weight, std=1.0 / math.sqrt(width))
            with torch.no_grad():
                out.bias.copy_(torch.tensor([_logit(p) for p in base], dtype=torch.float32))
            drop = nn.Dropout(float(hp["dropout"]))
            modules = nn.ModuleList([bag, out])
            extra = [b0]

            def forward(idx: Any, off: Any, w: Any, train: bool) -> Any:
                h = torch.relu(bag(idx, off, per_sample_weights=w) + b0)
                return out(drop(h) if train else h)
        else:
            E = nn.Parameter(torch.randn(a, width) * float(hp["init_std"]))
            bias = nn.Parameter(torch.tensor([_logit(p) for p in base], dtype=torch.float32))
            modules = nn.ModuleList([bag])
            extra = [E, bias]

            def forward(idx: Any, off: Any, w: Any, train: bool) -> Any:
                return bag(idx, off, per_sample_weights=w) @ E.T + bias

        params_all = [*modules.parameters(), *extra]
        try:  # the fused CPU kernel is several times faster on the large input layer
            opt = torch.optim.Adam(params_all, lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]), fused=True)
        except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older torch
            opt = torch.optim.Adam(params_all, lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
        rng = np.random.default_rng(seed)
        bs = max(1, int(hp["batch_size"]))
        lossf = nn.BCEWithLogitsLoss(reduction="none")
        modules.train()
        epochs = max(int(hp["epochs"]), math.ceil(int(hp["min_steps"]) / math.ceil(n / bs)))
        for _ in range(epochs):
            order = rng.permutation(n)
            for s in range(0, n, bs):
                rows = order[s:s + bs]
                m = mask[rows]
                if float(m.sum()) == 0.0:
                    continue
                idx, off, w = _bags(torch, X, rows)
                logits = forward(idx, off, w, True)
                loss = (lossf(logits, target[rows]) * m).sum() / m.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        modules.eval()
        with torch.no_grad():
            if kind == "mlp":
                W1 = out.weight.detach().numpy().T.astype(np.float32).copy()
                b1 = out.bias.detach().numpy().astype(np.float32).copy()
                for j in np.flatnonzero(const):
                    W1[:, j] = 0.0
                    b1[j] = _logit(base[j])
                return {"W0": bag.weight.detach().numpy().astype(np.float32).copy(),
                        "b0": b0.detach().numpy().astype(np.float32).copy(), "W1": W1, "b1": b1}
            Em = E.detach().numpy().astype(np.float32).copy()
            bm = bias.detach().numpy().astype(np.float32).copy()
            for j in np.flatnonzero(const):
                Em[j] = 0.0
                bm[j] = _logit(base[j])
            return {"P": np.ascontiguousarray(bag.weight.detach().numpy().T.astype(np.float32)), "E": Em, "bias": bm}


def _knn_arrays(E: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    known = np.isfinite(Y)
    _, base, _ = _arm_labels(Y)
    return {"knn_emb": np.ascontiguousarray(E, dtype=np.float32),
            "knn_y": np.where(known, Y, 0.0).astype(np.float32), "knn_mask": known.astype(np.float32),
            "knn_base": base.astype(np.float64)}


def knn_select(E: np.ndarray, Y: np.ndarray, *, ks: Sequence[int] = KNN_K_GRID, temps: Sequence[float] = KNN_TEMP_GRID,
               prior: float = 1.0, chunk: int = 1024) -> dict[str, Any]:
    """Choose the knn kind's k and temp by leave-one-out log loss on the training prompts:
    every prompt is predicted from its nearest *other* prompts, for each (k, temp) of the
    grids, and the pair with the lowest mean log loss over the known labels wins (ties: the
    smaller k, then uniform weights). Returns ``{"k", "temp", "loss", "grid": {...}}``."""
    from effreason_agents.adapters.router import knn_proba

    E = np.ascontiguousarray(E, dtype=np.float32)
    n = E.shape[0]
    ks = sorted({int(k) for k in ks if 1 <= int(k) <= max(1, n - 1)}) or [max(1, min(n - 1, 1))]
    if n < 2:
        return {"k": 1, "temp": 0.0, "loss": None, "grid": {}}
    top_k = max(ks)
    arrays = _knn_arrays(E, Y)
    y, mask, base = arrays["knn_y"], arrays["knn_mask"], arrays["knn_base"]
    losses = {(k, t): 0.0 for k in ks for t in temps}
    count = float(mask.sum()) or 1.0
    for s0 in range(0, n, chunk):
        S = E[s0:s0 + chunk] @ E.T
        S[np.arange(S.shape[0]), np.arange(s0, s0 + S.shape[0])] = -np.inf  # leave the prompt itself out
        idx = np.argpartition(-S, top_k - 1, axis=1)[:, :top_k]
        order = np.argsort(-np.take_along_axis(S, idx, axis=1), axis=1)
        idx = np.take_along_axis(idx, order, axis=1)  # nearest first
        sims = np.take_along_axis(S, idx, axis=1)
        yt, mt = Y[s0:s0 + chunk], mask[s0:s0 + chunk]
        for k in ks:
            for t in temps:
                w = np.exp((sims[:, :k] - sims[:, :1]) / t) if t > 0 else np.ones((len(sims), k))
                num = np.einsum("ij,ijk->ik", w, y[idx[:, :k]]) + prior * base
                den = np.einsum("ij,ijk->ik", w, mask[idx[:, :k]]) + prior
                p = np.clip(num / np.maximum(den, 1e-12), _EPS, 1 - _EPS)
                ll = -(np.nan_to_num(yt) * np.log(p) + (1 - np.nan_to_num(yt)) * np.log(1 - p))
                losses[(k, t)] += float((ll * mt).sum())
    del knn_proba  # the run-time rule above is the same: knn_proba on the sorted top k
    best = min(losses, key=lambda kt: (round(losses[kt] / count, 9), kt[0], kt[1]))
    return {"k": best[0], "temp": best[1], "loss": round(losses[best] / count, 6),
            "grid": {f"k={k},temp={t}": round(v / count, 6) for (k, t), v in losses.items()}}


def _fit_knn(E: np.ndarray, Y: np.ndarray, hp: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    prior = float(hp["prior"])
    info: dict[str, Any] = {}
    k, temp = hp["k"], hp["temp"]
    if k == "auto" or temp == "auto":
        chosen = knn_select(E, Y, ks=KNN_K_GRID if k == "auto" else (int(k),),
                            temps=KNN_TEMP_GRID if temp == "auto" else (float(temp),), prior=prior)
        k, temp = chosen["k"], chosen["temp"]
        info = {"k_chosen": k, "temp_chosen": temp, "loo_log_loss": chosen["loss"]}
    k = int(min(max(1, int(k)), E.shape[0]))
    arrays = _knn_arrays(E, Y)
    arrays["knn_hp"] = np.array([k, float(temp), prior], dtype=np.float64)
    return arrays, info


def _embedding_block(X: Any, featurizer: Featurizer) -> np.ndarray:
    start, stop = featurizer.layout()["embedding"]
    return np.asarray(X[:, start:stop].toarray(), dtype=np.float32)


# -- entry points ----------------------------------------------------------------------


def _hyper(kind: str, hyper: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if kind not in KINDS:
        raise RouterError(f"unknown router kind {kind!r}; choose one of {', '.join(KINDS)}")
    allowed = {**FEATURE_DEFAULTS, **DEFAULTS[kind]}
    unknown = sorted(set(hyper) - set(allowed))
    if unknown:
        raise RouterError(f"unknown {kind} hyper-parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    merged = {**allowed, **hyper}
    return ({k: merged[k] for k in FEATURE_DEFAULTS}, {k: merged[k] for k in DEFAULTS[kind]})


@contextmanager
def _thread_limit(threads: int | None) -> Iterator[None]:
    """Cap BLAS / OpenMP threads (scikit-learn's and torch's) while fitting. On a shared
    machine OpenMP workers spin-wait for busy cores, which made a 600-row
    HistGradientBoostingClassifier fit take 30 s instead of 0.4 s; one thread avoids it."""
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(int(threads))
    except ImportError:
        torch = None  # type: ignore[assignment]
    try:
        with threadpool_limits(limits=int(threads)):
            yield
    finally:
        if torch is not None and torch_threads is not None:
            torch.set_num_threads(torch_threads)


def fit_router(table: OutcomeTable, kind: str, *, embeddings: bool = False, seed: int = 0,
               threads: int | None = 1, **hyper: Any) -> FittedRouter:
    """Fit a router of ``kind`` (one of :data:`KINDS`) on every prompt of ``table``.

    ``hyper`` takes the featurizer's ``max_words``, ``max_chars``, ``min_df`` and the
    kind's entries of :data:`DEFAULTS`. ``threads`` caps the BLAS/OpenMP/torch threads
    while fitting (``None``: the libraries' defaults). Raises :class:`RouterError` for an
    unknown kind or hyper-parameter, an empty table, or a missing training dependency.
    """
    feat_hp, hp = _hyper(kind, hyper)
    if len(table) == 0 or not table.arms:
        raise RouterError("cannot fit a router on an empty outcome table")
    with _thread_limit(threads):
        return _fit(table, kind, embeddings, seed, feat_hp, hp)


def _fit(table: OutcomeTable, kind: str, embeddings: bool, seed: int, feat_hp: dict[str, Any],
         hp: dict[str, Any]) -> FittedRouter:
    started = time.perf_counter()
    if kind == "knn":  # neighbours in the sentence-embedding space only
        featurizer = Featurizer(max_words=0, max_chars=0, hand=False, embeddings=True)
    else:
        featurizer = Featurizer(embeddings=embeddings or kind == "ensemble", **feat_hp)
    X = featurizer.fit_transform(table.prompts)
    Y = np.asarray(table.correct, dtype=np.float64)
    if np.any(np.isfinite(Y) & ((Y < 0) | (Y > 1))):
        raise RouterError("outcome labels must lie in [0, 1] (NaN where unknown)")
    sk_model = None
    info: dict[str, Any] = {}
    if kind == "logistic":
        arrays, info = _fit_logistic(X, Y, hp, seed)
    elif kind == "knn":
        arrays, info = _fit_knn(_embedding_block(X, featurizer), Y, hp)
    elif kind == "ensemble":
        arrays, info = _fit_logistic(X, Y, hp, seed)
        knn_arrays, knn_info = _fit_knn(_embedding_block(X, featurizer), Y, hp)
        weight = float(hp["weight"])
        if not 0.0 <= weight <= 1.0:
            raise RouterError(f"ensemble weight must be in [0, 1] (the logistic member's share), got {weight}")
        arrays.update(knn_arrays, ens_w=np.array([weight, 1.0 - weight]))
        info.update(knn_info)
    elif kind == "gbm":
        arrays, sk_model = _fit_gbm(X, Y, featurizer, hp, seed)
    else:
        arrays = _train_torch(kind, X, Y, hp, seed)
    _, base, const = _arm_labels(Y)
    training = {
        "data_sha256": table.sha256(),
        "n_prompts": len(table),
        "n_rows": int(np.isfinite(Y).sum()),
        "source": table.source,
        "seed": seed,
        "hyper": {**feat_hp, **hp, **info},
        "constant_arms": [a for a, c in zip(table.arms, const) if c],
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    return FittedRouter(kind, list(table.arms), featurizer, arrays, sk_model, training)


def fit_predict(kind: str, **kw: Any) -> Callable[[OutcomeTable], Callable[[Sequence[str]], np.ndarray]]:
    """``fit(table) -> predict(prompts) -> (n × arms)`` for cross-validation; ``kw`` goes to
    :func:`fit_router` (``embeddings``, ``seed``, hyper-parameters)."""
    _hyper(kind, {k: v for k, v in kw.items() if k not in ("embeddings", "seed", "threads")})

    def fit(table: OutcomeTable) -> Callable[[Sequence[str]], np.ndarray]:
        return fit_router(table, kind, **kw).predict

    return fit
