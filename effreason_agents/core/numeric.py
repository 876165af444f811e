"""Small numeric functions shared by the router, the calibrators and their fitters."""

from __future__ import annotations

import math
from typing import overload

import numpy as np

__all__ = ["sigmoid"]


@overload
def sigmoid(x: float) -> float: ...


@overload
def sigmoid(x: np.ndarray) -> np.ndarray: ...


def sigmoid(x: float | np.ndarray) -> float | np.ndarray:
    """The logistic function ``1 / (1 + exp(-x))``, without overflow for any finite input.

    A Python or numpy scalar gives a ``float``; an array (any shape) gives a float64
    array of the same shape. Large negative inputs keep their tiny probabilities
    (``sigmoid(-40) ≈ 4.2e-18``, not 0); ``NaN`` stays ``NaN``.
    """
    if not isinstance(x, np.ndarray):
        t = float(x)
        if t >= 0:
            return 1.0 / (1.0 + math.exp(-t))
        e = math.exp(t)
        return e / (1.0 + e)
    a = np.asarray(x, dtype=np.float64)
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-a[pos]))
    e = np.exp(a[~pos])
    out[~pos] = e / (1.0 + e)
    return out
