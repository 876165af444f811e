"""Cascade scorers at run time: (question, the cheap arm's reply, its signals) → P(right).

A cascade (FrugalGPT, AutoMix) always runs the cheap arm first and pays the strong
arm only when the cheap answer looks wrong. A cascade scorer judges that answer from
everything known once it is in: the reply's features
(:mod:`effreason_agents.core.answer_features`: the answer's form, hedging, the reply's
own arithmetic checked), the question's features, a TF-IDF of the reply's words and,
when the logged attempts had them, the tier's uncertainty signals. It is fitted
offline by :mod:`router_training.cascade` (``effreason router cascade --out DIR``) and
saved as an *artifact directory*::

    card.json      {"format": "effreason-cascade-scorer", "version": 1,
                    "kind": "logistic",
                    "arm": "small:cot",             # the cheap arm it was fitted on
                    "strong": "large:cot",          # the arm its escalations go to
                    "applies_to": ["small:cot"],    # arm, tier or model names it judges
                    "features": {"version": 1, "dense": [...names...],
                                 "signals": [...signal names among dense...],
                                 "text": {"terms": 4123, "weight": 3.0}},
                    "threshold": 0.42 | null,       # P(right) below which to escalate
                    "training": {...}, "cv": {...}}
    weights.npz    mean, scale, w_dense (one per dense feature), intercept (1,),
                   vocab (unicode), idf, w_text (one per term)

The score is ``p = σ(w_dense · z + weight · w_text · t + intercept)`` with ``z`` the
dense features standardized by ``(x − mean) / scale`` (a missing signal imputed with
its training mean, i.e. ``z = 0``) and ``t`` the reply's L2-normalized TF-IDF
(:class:`AnswerText`). Nothing is pickled: ``np.load(allow_pickle=False)``; the card is
plain JSON. A missing or corrupted artifact raises :class:`ScorerError` (a
:class:`CalibratorError`) saying
what to do.

How it enters the confidence (``[escalation] scorer_mode``, see :func:`combine`):
``replace`` — the scorer's P(right) is the attempt's confidence; ``combine`` — the
mean, in logit space, of the scorer's P(right) and the calibrated confidence (the
scorer's alone where the attempt has no other confidence). The attempt's signals keep
both: :data:`SCORER_SIGNAL` and :data:`CALIBRATED_SIGNAL`.

This module needs numpy only.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.adapters.atomic import jsonable, write_dir, write_json, write_with
from effreason_agents.core.answer_features import FEATURES_VERSION, feature_names, feature_vector
from effreason_agents.core.numeric import sigmoid
from effreason_agents.errors import CalibratorError, ScorerError

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_VERSION",
    "CALIBRATED_SIGNAL",
    "CARD_FILE",
    "MODES",
    "SCORER_SIGNAL",
    "WEIGHTS_FILE",
    "AnswerText",
    "CalibratorError",
    "CascadeScorer",
    "ScorerError",
    "combine",
    "reply_terms",
    "save_scorer",
]

ARTIFACT_FORMAT = "effreason-cascade-scorer"
ARTIFACT_VERSION = 1
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.npz"
#: How the scorer's P(right) becomes the attempt's confidence (``[escalation] scorer_mode``).
MODES = ("replace", "combine")
#: The attempt signal holding the cascade scorer's P(right).
SCORER_SIGNAL = "scorer_confidence"
#: The attempt signal holding the confidence the calibrator (or the heuristic) gave.
CALIBRATED_SIGNAL = "calibrated_confidence"

_FIT_HINT = "fit one with `effreason router cascade --data FILE --out DIR`"
_EPS = 1e-6
_JSON = {"sort_keys": True, "ensure_ascii": False, "allow_nan": False}
_ARRAYS = ("mean", "scale", "w_dense", "intercept", "vocab", "idf", "w_text")
_WORD = re.compile(r"\b\w+\b")


def reply_terms(text: str) -> list[str]:
    """Lowercased word unigrams and bigrams (``"a b"``) of a reply."""
    toks = _WORD.findall(text.lower())
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


# -- the reply's words ---------------------------------------------------------------------


class AnswerText:
    """TF-IDF of a reply's words: lowercased word unigrams and bigrams
    (:func:`reply_terms`), sublinear tf (``1 + ln tf``),
    the idf fitted on the training replies, L2-normalized."""

    def __init__(self, vocab: Sequence[str], idf: np.ndarray) -> None:
        self.vocab = list(vocab)
        self.idf = np.asarray(idf, dtype=np.float64)
        if len(self.vocab) != len(self.idf):
            raise ScorerError(f"the reply vocabulary has {len(self.vocab)} terms but {len(self.idf)} idf values; "
                                  f"the artifact is inconsistent, {_FIT_HINT}")
        self.index = {t: i for i, t in enumerate(self.vocab)}

    @classmethod
    def fit(cls, texts: Sequence[str], *, min_df: int = 2, max_terms: int = 20000) -> "AnswerText":
        """The terms found in at least ``min_df`` of ``texts`` (the ``max_terms`` most frequent,
        ties by term) and their smooth idf ``ln((1 + n) / (1 + df)) + 1``."""
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(reply_terms(text or "")))
        kept = [(c, t) for t, c in df.items() if c >= min_df]
        kept.sort(key=lambda ct: (-ct[0], ct[1]))
        vocab = sorted(t for _, t in kept[:max_terms])
        n = len(texts)
        idf = np.asarray([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocab], dtype=np.float64)
        return cls(vocab, idf)

    def __len__(self) -> int:
        return len(self.vocab)

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The reply's nonzero columns (ascending) and values."""
        ids = [self.index[t] for t in reply_terms(text or "") if t in self.index]
        if not ids:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        idx, tf = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
        vals = (1.0 + np.log(tf)) * self.idf[idx]
        return idx, vals / np.sqrt(np.dot(vals, vals))

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """Dense ``(len(texts), terms)`` matrix (for fitting; the run time uses :meth:`row`)."""
        out = np.zeros((len(texts), len(self.vocab)))
        for i, text in enumerate(texts):
            idx, vals = self.row(text)
            out[i, idx] = vals
        return out


# -- combining with the calibrated confidence ------------------------------------------------


def _logit(p: float) -> float:
    p = min(max(float(p), _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def combine(scorer_p: float, other: float | None, mode: str) -> tuple[float, str]:
    """The attempt's confidence from the scorer's P(right) and the ``other`` confidence
    (calibrated or heuristic; ``None`` when the attempt has none), and how it was made.

    ``replace``: the scorer's value. ``combine``: ``σ((logit(p_scorer) + logit(p_other)) / 2)``
    — the geometric mean of the two odds, which a confident and an unsure judge pull
    towards each other symmetrically (probabilities clipped to [1e-6, 1 − 1e-6] first);
    the scorer's value alone when ``other`` is ``None``.
    """
    if mode not in MODES:
        raise ScorerError(f"unknown scorer mode {mode!r}; use one of {', '.join(MODES)}")
    p = min(1.0, max(0.0, float(scorer_p)))
    if mode == "replace":
        return p, "cascade scorer"
    if other is None:
        return p, "cascade scorer (no other confidence to combine with)"
    q = sigmoid((_logit(p) + _logit(other)) / 2.0)
    return min(1.0, max(0.0, q)), "cascade scorer combined with the calibrated confidence (mean logit)"


# -- the scorer ------------------------------------------------------------------------------


def _names(value: Any, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value) or len(set(value)) != len(value):
        raise ScorerError(f"{where}: {what} must be a list of distinct names; the artifact is corrupted, {_FIT_HINT}")
    return list(value)


def _finite(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ScorerError(f"{where}: {what} must be a finite number, got {value!r}; {_FIT_HINT}")
    return float(value)


class CascadeScorer:
    """A fitted cascade scorer: :meth:`predict` gives P(the cheap arm's answer is right)."""

    def __init__(self, card: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, source: str = "<artifact>") -> None:
        where = source
        if not isinstance(card, Mapping):
            raise ScorerError(f"{where}: the card must be a JSON object; {_FIT_HINT}")
        if card.get("format") != ARTIFACT_FORMAT:
            raise ScorerError(f"{where}: not a cascade scorer card (format {card.get('format')!r}, expected "
                                  f"{ARTIFACT_FORMAT!r}); {_FIT_HINT}")
        if card.get("version") != ARTIFACT_VERSION or isinstance(card.get("version"), bool):
            raise ScorerError(f"{where}: cascade scorer version {card.get('version')!r}, this effreason-agents "
                                  f"reads version {ARTIFACT_VERSION}; refit it ({_FIT_HINT})")
        if card.get("kind") != "logistic":
            raise ScorerError(f"{where}: unknown cascade scorer kind {card.get('kind')!r} (known: logistic)")
        arm = card.get("arm")
        if not isinstance(arm, str) or not arm:
            raise ScorerError(f"{where}: 'arm' (the cheap arm it judges) must be a non-empty string")
        feats = card.get("features")
        if not isinstance(feats, Mapping):
            raise ScorerError(f"{where}: 'features' is missing; the artifact is corrupted, {_FIT_HINT}")
        if feats.get("version") != FEATURES_VERSION:
            raise ScorerError(f"{where}: answer features version {feats.get('version')!r}, this effreason-agents "
                                  f"computes version {FEATURES_VERSION}; refit it ({_FIT_HINT})")
        dense = _names(feats.get("dense"), "features.dense", where)
        signals = _names(feats.get("signals", []), "features.signals", where)
        known = set(feature_names(signals))
        unknown = [f for f in dense if f not in known]
        if unknown:
            raise ScorerError(f"{where}: unknown features {unknown}; the artifact was made by another version, "
                                  f"refit it ({_FIT_HINT})")
        text = feats.get("text") or {}
        if not isinstance(text, Mapping):
            raise ScorerError(f"{where}: features.text must be an object")
        self.text_weight = _finite(text.get("weight", 0.0), "features.text.weight", where)
        missing = [k for k in _ARRAYS if k not in arrays]
        if missing:
            raise ScorerError(f"{where}: {WEIGHTS_FILE} lacks arrays {missing}; the artifact is corrupted, "
                                  f"{_FIT_HINT}")
        d = len(dense)
        shapes = {"mean": (d,), "scale": (d,), "w_dense": (d,), "intercept": (1,)}
        for name, shape in shapes.items():
            if np.asarray(arrays[name]).shape != shape:
                raise ScorerError(f"{where}: {name} has shape {np.asarray(arrays[name]).shape}, the card's "
                                      f"{d} features need {shape}; the artifact is inconsistent, {_FIT_HINT}")
        v = np.asarray(arrays["vocab"])
        if v.ndim != 1 or (v.size and v.dtype.kind != "U"):
            raise ScorerError(f"{where}: vocab must be a 1-d array of strings; the artifact is corrupted, {_FIT_HINT}")
        for name in ("idf", "w_text"):
            if np.asarray(arrays[name]).shape != v.shape:
                raise ScorerError(f"{where}: {name} has shape {np.asarray(arrays[name]).shape} for "
                                      f"{v.size} vocabulary terms; the artifact is inconsistent, {_FIT_HINT}")
        numeric = {k: np.asarray(arrays[k], dtype=np.float64) for k in _ARRAYS if k != "vocab"}
        bad = [k for k, a in numeric.items() if not np.all(np.isfinite(a))]
        if bad:
            raise ScorerError(f"{where}: non-finite values in {bad}; the artifact is corrupted, {_FIT_HINT}")
        if np.any(numeric["scale"] <= 0):
            raise ScorerError(f"{where}: scale must be positive; the artifact is corrupted, {_FIT_HINT}")
        threshold = card.get("threshold")
        if threshold is not None:
            threshold = _finite(threshold, "threshold", where)
            if not 0.0 <= threshold <= 1.0:
                raise ScorerError(f"{where}: threshold must lie in [0, 1], got {threshold}")
        applies = card.get("applies_to", [arm])
        self.applies_to: list[str] = _names(applies, "applies_to", where) if applies else [arm]

        self.card: dict[str, Any] = dict(card)
        self.source = source
        self.arm: str = arm
        self.strong: str | None = card.get("strong") if isinstance(card.get("strong"), str) else None
        self.features: list[str] = dense
        self.signals: list[str] = signals
        self.threshold: float | None = threshold
        self._all = feature_names(signals)
        self.feature_index = np.asarray([self._all.index(f) for f in dense], dtype=np.int64)
        self._mean, self._scale = numeric["mean"], numeric["scale"]
        self._w, self._b = numeric["w_dense"], float(numeric["intercept"][0])
        self._w_text = numeric["w_text"]
        self.text = AnswerText([str(t) for t in v.tolist()], numeric["idf"])

    def __repr__(self) -> str:
        return f"CascadeScorer(arm={self.arm!r}, features={len(self.features)}, terms={len(self.text)}, source={self.source!r})"

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "CascadeScorer":
        """Read and check an artifact directory; :class:`CalibratorError` saying what to do
        when it is missing, corrupted or of another version."""
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ScorerError(f"cascade scorer {str(root)!r} not found (expected a directory with {CARD_FILE} "
                                  f"and {WEIGHTS_FILE}); {_FIT_HINT}")
        card_path = root / CARD_FILE
        if not card_path.is_file():
            raise ScorerError(f"cascade scorer {str(root)!r} has no {CARD_FILE}; {_FIT_HINT}")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ScorerError(f"corrupted cascade scorer card {card_path}: {exc}; {_FIT_HINT}") from exc
        weights = root / WEIGHTS_FILE
        if not weights.is_file():
            raise ScorerError(f"cascade scorer {str(root)!r} has no {WEIGHTS_FILE}; {_FIT_HINT}")
        try:
            with np.load(weights, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # BadZipFile, ValueError (object arrays), OSError, EOFError, ...
            raise ScorerError(f"corrupted cascade scorer weights {weights}: {type(exc).__name__}: {exc}; "
                                  f"{_FIT_HINT}") from exc
        return cls(card, arrays, source=str(root))

    # -- use -------------------------------------------------------------------------------
    def applies(self, arm: str, tier: str | None = None, model: str | None = None) -> bool:
        """Whether this scorer judges attempts of ``arm`` (by arm name, tier name or the
        tier's model id, as listed in the card's ``applies_to``)."""
        names = {arm, tier, model} - {None}
        return any(n in names for n in self.applies_to)

    def vector(self, question: str, answer_text: str, signals: Mapping[str, Any] | None = None, *,
               answer_type: str | None = None) -> np.ndarray:
        """The dense features (the card's, in its order); ``NaN`` for a missing signal."""
        full = feature_vector(question, answer_text, signals, answer_type=answer_type, signal_names=self.signals)
        return full[self.feature_index]

    def logit(self, dense: np.ndarray, answer_text: str) -> float:
        """The score's logit from the dense features (:meth:`vector`) and the reply."""
        z = (dense - self._mean) / self._scale
        z = np.where(np.isfinite(z), z, 0.0)
        s = float(np.dot(self._w, z)) + self._b
        if self.text_weight and len(self.text):
            idx, vals = self.text.row(answer_text)
            s += self.text_weight * float(np.dot(self._w_text[idx], vals))
        return s

    def predict(self, question: str, answer_text: str, signals: Mapping[str, Any] | None = None, *,
                answer_type: str | None = None) -> float:
        """P(the answer in ``answer_text`` — the cheap arm's full reply — to ``question`` is
        right), in [0, 1]. ``signals`` are the attempt's uncertainty signals (those the
        scorer was fitted with are used; a missing one takes its training mean);
        ``answer_type`` is the expected answer type (``number``, ``choice``, ``yesno``,
        ``date``, ``text``; default ``number``)."""
        text = answer_text or ""
        return float(min(1.0, max(0.0, sigmoid(self.logit(self.vector(question, text, signals,
                                                                        answer_type=answer_type), text)))))

    def predict_many(self, questions: Sequence[str], answer_texts: Sequence[str],
                     signals: Sequence[Mapping[str, Any] | None] | None = None,
                     answer_types: Sequence[str | None] | None = None) -> np.ndarray:
        """:meth:`predict` for many (question, reply) pairs."""
        sig = signals if signals is not None else [None] * len(questions)
        types = answer_types if answer_types is not None else [None] * len(questions)
        return np.asarray([self.predict(q, a, s, answer_type=t)
                           for q, a, s, t in zip(questions, answer_texts, sig, types)], dtype=np.float64)

    def describe(self) -> str:
        return f"cascade scorer for {self.arm} ({len(self.features)} features, {len(self.text)} reply terms)"


# -- saving ------------------------------------------------------------------------------------


def save_scorer(path: str | os.PathLike[str], card: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write a cascade scorer artifact directory and return its path.

    ``card`` gets ``format``, ``version`` and ``training.created_at`` filled in; it and
    ``arrays`` are checked by loading them as a :class:`CascadeScorer` first. The files
    are written into a fresh temporary directory beside ``path`` (each atomically) which
    then replaces ``path`` by renames, so a failed save leaves neither a partial artifact
    nor a changed old one. An existing non-empty ``path`` that is not a scorer artifact
    is refused.
    """
    full = jsonable({**card, "format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION})
    full.setdefault("training", {})
    full["training"].setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    arrs = {k: np.asarray(v) for k, v in arrays.items()}
    if any(a.dtype == object for a in arrs.values()):
        raise ScorerError("cascade scorer arrays must be numbers or strings, not objects")
    CascadeScorer(full, arrs, source=str(path))  # refuse to write what could not be loaded
    def fill(tmp: Path) -> None:
        write_with(tmp / WEIGHTS_FILE, lambda fh: np.savez(fh, **arrs))
        write_json(tmp / CARD_FILE, full, **_JSON)

    return write_dir(path, fill, marker=CARD_FILE, what="scorer artifact", error=ScorerError)
