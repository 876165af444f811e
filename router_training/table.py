"""The training data of a router: one row per unique prompt, one column per arm."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["OutcomeTable"]


@dataclass
class OutcomeTable:
    """Graded outcomes of several arms on the same prompts.

    ``correct[i, j]`` is arm ``j``'s correctness on prompt ``i`` in [0, 1] (1/0 for a
    boolean label, the mean when a prompt was graded several times, a score in [0, 1]
    for score columns); ``NaN`` where that arm has no result for that prompt.
    ``cost`` (USD per call) and ``tokens`` (output tokens per call) are optional,
    same shape, ``NaN`` where unknown. Prompts are unique (de-duplicated by exact
    text after stripping), so folds over rows are folds by prompt.
    """

    prompts: list[str]
    arms: list[str]
    correct: np.ndarray
    cost: np.ndarray | None = None
    tokens: np.ndarray | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n, a = len(self.prompts), len(self.arms)
        self.correct = np.asarray(self.correct, dtype=float)
        if self.correct.shape != (n, a):
            raise ValueError(f"correct has shape {self.correct.shape}, expected {(n, a)}")
        for name in ("cost", "tokens"):
            m = getattr(self, name)
            if m is not None:
                m = np.asarray(m, dtype=float)
                if m.shape != (n, a):
                    raise ValueError(f"{name} has shape {m.shape}, expected {(n, a)}")
                setattr(self, name, m)
        if len(set(self.prompts)) != n:
            raise ValueError("prompts must be unique")
        if len(set(self.arms)) != a:
            raise ValueError("arms must be unique")

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, rows: np.ndarray | list[int]) -> "OutcomeTable":
        """The table restricted to ``rows`` (indices or a boolean mask)."""
        idx = np.arange(len(self.prompts))[rows]
        pick = lambda m: None if m is None else m[idx]  # noqa: E731
        return OutcomeTable([self.prompts[i] for i in idx], list(self.arms), self.correct[idx], pick(self.cost),
                            pick(self.tokens), self.source, list(self.notes))

    def mean_cost(self) -> dict[str, float | None]:
        """Mean cost per call of each arm over the prompts where it is known."""
        return _col_means(self.arms, self.cost)

    def mean_tokens(self) -> dict[str, float | None]:
        return _col_means(self.arms, self.tokens)

    def sha256(self) -> str:
        """A hash of the training data (prompts, arms, labels), for the artifact card."""
        blob = json.dumps(
            {"prompts": self.prompts, "arms": self.arms,
             "correct": [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in self.correct]},
            sort_keys=True, separators=(",", ":"),
        ).encode()
        return hashlib.sha256(blob).hexdigest()


def _col_means(arms: list[str], m: np.ndarray | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for j, arm in enumerate(arms):
        if m is None:
            out[arm] = None
            continue
        col = m[:, j]
        col = col[np.isfinite(col)]
        out[arm] = float(col.mean()) if col.size else None
    return out
