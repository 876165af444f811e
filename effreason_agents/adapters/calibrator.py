"""Calibrated confidence at run time: uncertainty signals → P(correct).

A calibrator is fitted offline per (tier, strategy) from logged outcomes by
:mod:`router_training.calibration` and saved as a JSON artifact::

    {"format": "effreason-calibrator", "version": 1,
     "tier": "small", "strategy": "direct",
     "kind": "logistic" | "isotonic",
     "features": ["answer_min_logprob", ...],
     "params": {...},
     "training": {"n", "positives", "data_sha256", "created_at"},
     "metrics": {"auroc", "brier", "ece", ...},
     "model": "SmolLM2-135M-Instruct",      # optional: the tier's model it was fitted on
     "threshold": 0.42}                     # optional: the escalation threshold picked for a target

``logistic`` params: ``mean``, ``scale``, ``weights`` (one per feature) and
``intercept``; a feature is standardized as ``(x - mean) / scale`` and
``p = sigmoid(weights · z + intercept)``.

``isotonic`` params: ``x`` (ascending thresholds of the single feature),
``y`` (P(correct) at those thresholds; monotone, increasing or decreasing) and
``mean``; ``p = np.interp(x_value, x, y)`` (clamped at both ends).

A missing feature value (``None``, not a number, NaN or infinite) is imputed
with the training mean. When *none* of the calibrator's features is present
(e.g. a tier without logprobs) :meth:`CalibratorSet.confidence` returns
``(None, reason)`` so the caller falls back to the heuristic.

This module needs numpy only (no scikit-learn at run time).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.core.numeric import sigmoid
from effreason_agents.errors import CalibratorError

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_VERSION",
    "KINDS",
    "Calibrator",
    "CalibratorError",
    "CalibratorSet",
    "CalibratorWarning",
    "builtin_dir",
    "feature_value",
    "load_calibrators",
]

ARTIFACT_FORMAT = "effreason-calibrator"
ARTIFACT_VERSION = 1
KINDS = ("logistic", "isotonic")
ANY_STRATEGY = "*"


class CalibratorWarning(UserWarning):
    """A calibrator artifact was skipped; confidence falls back to the heuristic."""


def feature_value(value: Any) -> float | None:
    """A signal value as a finite float, or ``None`` when missing/not a finite number."""
    if value is None or isinstance(value, str):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _finite_list(params: Mapping[str, Any], key: str, n: int | None, where: str) -> list[float]:
    raw = params.get(key)
    if not isinstance(raw, list) or (n is not None and len(raw) != n):
        want = f"a list of {n} numbers" if n is not None else "a list of numbers"
        raise CalibratorError(f"{where}: params.{key} must be {want}; refit the calibrator")
    out = []
    for v in raw:
        f = feature_value(v)
        if f is None or isinstance(v, bool):
            raise CalibratorError(f"{where}: params.{key} holds a non-finite value {v!r}; refit the calibrator")
        out.append(f)
    return out


def _finite_number(params: Mapping[str, Any], key: str, where: str) -> float:
    v = params.get(key)
    f = feature_value(v)
    if f is None or isinstance(v, bool):
        raise CalibratorError(f"{where}: params.{key} must be a finite number, got {v!r}; refit the calibrator")
    return f


class Calibrator:
    """One fitted calibrator for a (tier, strategy): :meth:`predict` maps signals to P(correct)."""

    def __init__(self, artifact: Mapping[str, Any], *, source: str = "<artifact>") -> None:
        self.source = source
        if not isinstance(artifact, Mapping):
            raise CalibratorError(f"{source}: a calibrator artifact must be a JSON object")
        fmt = artifact.get("format")
        if fmt != ARTIFACT_FORMAT:
            raise CalibratorError(
                f"{source}: not a calibrator artifact (format {fmt!r}, expected {ARTIFACT_FORMAT!r})"
            )
        version = artifact.get("version")
        if version != ARTIFACT_VERSION or isinstance(version, bool):
            raise CalibratorError(
                f"{source}: calibrator artifact version {version!r} is not supported "
                f"(this library reads version {ARTIFACT_VERSION}); refit with this version"
            )
        for key in ("tier", "strategy"):
            if not isinstance(artifact.get(key), str) or not artifact.get(key):
                raise CalibratorError(f"{source}: {key!r} must be a non-empty string")
        kind = artifact.get("kind")
        if kind not in KINDS:
            raise CalibratorError(f"{source}: unknown calibrator kind {kind!r} (expected one of {KINDS})")
        features = artifact.get("features")
        if (
            not isinstance(features, list)
            or not features
            or not all(isinstance(f, str) and f for f in features)
            or len(set(features)) != len(features)
        ):
            raise CalibratorError(f"{source}: 'features' must be a non-empty list of distinct names")
        params = artifact.get("params")
        if not isinstance(params, Mapping):
            raise CalibratorError(f"{source}: 'params' must be an object")

        self.tier: str = artifact["tier"]
        self.strategy: str = artifact["strategy"]
        self.kind: str = kind
        self.features: tuple[str, ...] = tuple(features)
        model = artifact.get("model")
        if model is not None and not isinstance(model, str):
            raise CalibratorError(f"{source}: 'model' must be a string")
        self.model: str | None = model
        threshold = artifact.get("threshold")
        if threshold is not None:
            t = feature_value(threshold)
            if t is None or isinstance(threshold, bool) or not 0.0 <= t <= 1.0:
                raise CalibratorError(f"{source}: 'threshold' must be a number in [0, 1], got {threshold!r}")
            threshold = t
        self.threshold: float | None = threshold
        self.training: dict[str, Any] = dict(artifact.get("training") or {})
        self.metrics: dict[str, Any] = dict(artifact.get("metrics") or {})
        n = len(self.features)
        if kind == "logistic":
            self._mean = np.array(_finite_list(params, "mean", n, source))
            self._scale = np.array(_finite_list(params, "scale", n, source))
            if np.any(self._scale <= 0):
                raise CalibratorError(f"{source}: params.scale must be positive")
            self._weights = np.array(_finite_list(params, "weights", n, source))
            self._intercept = _finite_number(params, "intercept", source)
        else:
            if n != 1:
                raise CalibratorError(f"{source}: an isotonic calibrator uses exactly one feature, got {n}")
            x = _finite_list(params, "x", None, source)
            y = _finite_list(params, "y", len(x), source)
            if not x:
                raise CalibratorError(f"{source}: params.x must not be empty")
            if any(b < a for a, b in zip(x, x[1:])):
                raise CalibratorError(f"{source}: params.x must be ascending")
            if any(not 0.0 <= v <= 1.0 for v in y):
                raise CalibratorError(f"{source}: params.y must lie in [0, 1]")
            self._x = np.array(x)
            self._y = np.array(y)
            self._mean = np.array([_finite_number(params, "mean", source)])

    # -- loading -----------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> "Calibrator":
        """Read and validate an artifact; :class:`CalibratorError` when it is unusable."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise CalibratorError(f"{p}: cannot read calibrator artifact ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise CalibratorError(f"{p}: calibrator artifact is not UTF-8 text (corrupted?)") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibratorError(f"{p}: calibrator artifact is not valid JSON (corrupted?): {exc}") from exc
        return cls(data, source=str(p))

    # -- use ---------------------------------------------------------------------

    def describe(self) -> str:
        n = len(self.features)
        if self.kind == "logistic":
            return f"calibrated: logistic on {n} feature{'s' if n != 1 else ''}"
        return f"calibrated: isotonic on {self.features[0]}"

    def present_features(self, signals: Mapping[str, Any]) -> list[str]:
        """The calibrator's features that ``signals`` holds as finite numbers."""
        return [f for f in self.features if feature_value(signals.get(f)) is not None]

    def check_features(self, available: Iterable[str]) -> None:
        """Raise :class:`CalibratorError` when the artifact needs features the tier cannot provide."""
        have = set(available)
        missing = [f for f in self.features if f not in have]
        if missing:
            raise CalibratorError(
                f"calibrator for tier {self.tier!r} / strategy {self.strategy!r} ({self.source}) needs "
                f"features {missing} that the tier does not provide (no logprobs?); "
                "refit it on this tier's signals or remove it"
            )

    def _vector(self, signals: Mapping[str, Any]) -> np.ndarray:
        vals = [feature_value(signals.get(f)) for f in self.features]
        return np.array([m if v is None else v for v, m in zip(vals, self._mean)], dtype=float)

    def predict(self, signals: Mapping[str, Any]) -> float:
        """P(correct) in [0, 1]; missing feature values take the training mean."""
        x = self._vector(signals)
        if self.kind == "logistic":
            z = (x - self._mean) / self._scale
            logit = float(np.dot(self._weights, z) + self._intercept)
            p = sigmoid(logit)
        else:
            p = float(np.interp(x[0], self._x, self._y))
        return min(1.0, max(0.0, p))


class CalibratorSet(dict):
    """Calibrators keyed by ``(tier, strategy)``; strategy ``"*"`` applies to every strategy of a tier."""

    def add(self, calibrator: Calibrator) -> None:
        self[(calibrator.tier, calibrator.strategy)] = calibrator

    @classmethod
    def load_dir(cls, path: str | Path) -> "CalibratorSet":
        """Load every ``*.json`` artifact in ``path`` (sorted by name).

        A broken artifact (unreadable, corrupted, foreign, other version) is skipped
        with a :class:`CalibratorWarning`, as is a second artifact for a key already
        loaded; a missing directory yields an empty set with a warning. Nothing here
        raises: the caller falls back to the heuristic confidence.
        """
        out = cls()
        d = Path(path)
        if not d.is_dir():
            warnings.warn(
                f"calibrator directory {d} does not exist; using the heuristic confidence",
                CalibratorWarning,
                stacklevel=2,
            )
            return out
        for file in sorted(d.glob("*.json")):
            try:
                cal = Calibrator.load(file)
            except CalibratorError as exc:
                warnings.warn(f"skipping calibrator: {exc}", CalibratorWarning, stacklevel=2)
                continue
            key = (cal.tier, cal.strategy)
            if key in out:
                warnings.warn(
                    f"skipping calibrator {file}: {key} already loaded from {out[key].source}",
                    CalibratorWarning,
                    stacklevel=2,
                )
                continue
            out[key] = cal
        return out

    def find(self, tier: str, strategy: str) -> Calibrator | None:
        return self.get((tier, strategy)) or self.get((tier, ANY_STRATEGY))

    def confidence(self, tier: str, strategy: str, signals: Mapping[str, Any] | None) -> tuple[float | None, str]:
        """``(p, "calibrated: ...")``, or ``(None, reason)`` when no calibrator applies."""
        cal = self.find(tier, strategy)
        if cal is None:
            return None, f"no calibrator for tier {tier!r} / strategy {strategy!r}"
        signals = signals or {}
        if not cal.present_features(signals):
            return None, f"no calibrator features present in the signals ({', '.join(cal.features)})"
        return cal.predict(signals), cal.describe()


BUILTIN = "builtin"
OFF = "off"


def builtin_dir() -> Path:
    """The calibrators shipped with the package (fitted on the embedded model, built-in suite)."""
    return Path(__file__).resolve().parent.parent / "calibrators"


def load_calibrators(config: Any, environ: Mapping[str, str] | None = None) -> CalibratorSet:
    """The calibrators ``config.escalation.calibrators`` names, keeping only those that fit
    the configuration: a known tier, the same model, features the tier can provide.

    Anything unusable is skipped with a :class:`CalibratorWarning` (the graph then uses the
    heuristic confidence for that tier and strategy); nothing here raises. Shipped
    (``builtin``) calibrators fitted on another model are skipped quietly: they only
    apply to the embedded default.
    """
    from effreason_agents.core.confidence import available_signals

    where = config.escalation.calibrators
    if where is None or str(where).strip().lower() in (OFF, "none", ""):
        return CalibratorSet()
    builtin = str(where).strip().lower() == BUILTIN
    path = builtin_dir() if builtin else Path(str(where)).expanduser()
    if builtin and not path.is_dir():
        return CalibratorSet()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = CalibratorSet.load_dir(path)
    for w in caught:
        warnings.warn(str(w.message), CalibratorWarning, stacklevel=2)
    out = CalibratorSet()
    for key, cal in found.items():
        tier = config.tiers.get(cal.tier)
        if tier is None:
            if not builtin:
                warnings.warn(f"skipping calibrator {cal.source}: no tier {cal.tier!r} in the configuration",
                              CalibratorWarning, stacklevel=2)
            continue
        if cal.model is not None and cal.model != tier.model:
            if not builtin:
                warnings.warn(
                    f"skipping calibrator {cal.source}: fitted on model {cal.model!r}, tier {cal.tier!r} "
                    f"serves {tier.model!r}; refit it with 'effreason calibrate'",
                    CalibratorWarning, stacklevel=2)
            continue
        strategy = config.strategies.get(cal.strategy)
        sc = strategy is not None and strategy.kind == "sc"
        try:
            cal.check_features(available_signals(tier.capabilities.logprobs, tier.capabilities.top_logprobs, sc,
                                                 config.escalation.self_verify))
        except CalibratorError as exc:
            warnings.warn(f"skipping calibrator: {exc}", CalibratorWarning, stacklevel=2)
            continue
        out[key] = cal
    return out
