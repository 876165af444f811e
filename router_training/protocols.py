"""Evaluation protocols for routers: which prompts a router is fitted on, which it is scored on.

A router's APGR means little without saying what it was tested on. Three protocols:

* :func:`kfold` — k folds of prompts (a table's rows are unique prompts, so no prompt
  is ever on both sides); measures how well the router generalises to new prompts
  *of the same kind*.
* :func:`holdout_groups` — k folds of whole groups of a metadata column (``subject``,
  ``category``, ``split``, …; :attr:`~effreason_agents.evaluation.outcomes.OutcomeTable.groups`),
  so no group value is on both sides of a fold; measures transfer to subjects the
  router has never seen.
* :func:`train_test` — fit on one table, predict another (the test side loses the
  prompts the training side also has); measures transfer to another benchmark.

:func:`evaluate_protocol` runs one of them with a router model kind and scores the
held-out predictions with :func:`router_training.evaluate.prediction_report` (RouteLLM's
two-arm metrics and RouterBench's many-arm view), adding a bootstrap interval for
APGR (:func:`effreason_agents.evaluation.metrics.bootstrap_apgr`). The interval
resamples the scored prompts, so it is the sampling error of the test set for these
predictions; the model is not refitted per resample.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effreason_agents.errors import EvaluationError
from effreason_agents.evaluation.metrics import bootstrap_apgr
from effreason_agents.evaluation.outcomes import OutcomeTable, select_arms

from .evaluate import Fit, costs_for, oof_predictions, pair_scores, prediction_report, prompt_folds, resolve_pair

__all__ = [
    "PROTOCOLS",
    "Heldout",
    "bootstrap_report",
    "evaluate_protocol",
    "group_values",
    "holdout_groups",
    "kfold",
    "train_test",
]

#: Protocol names, as reported under ``result["protocol"]["name"]``.
PROTOCOLS = ("kfold", "groups", "train_test")


@dataclass
class Heldout:
    """Held-out predictions of one protocol: ``probs`` (prompts × arms of ``table``) were
    made by models that never saw those prompts; ``protocol`` describes the split."""

    table: OutcomeTable
    probs: np.ndarray
    protocol: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# -- splits -------------------------------------------------------------------------------


def kfold(table: OutcomeTable, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id (0..k−1) of each prompt: :func:`router_training.evaluate.prompt_folds` — a seeded
    permutation dealt round-robin, folds differing in size by at most one."""
    return prompt_folds(len(table), k, seed)


def _where(table: OutcomeTable) -> str:
    return table.source.split(" (", 1)[0] if table.source else "the data"


def _available(table: OutcomeTable) -> str:
    if not table.groups:
        return ("none: this data has no metadata columns (a wide CSV keeps its non-model columns such as "
                "'subject'; a long file its subject/category/split/... columns; the store suite/difficulty)")
    return ", ".join(f"{c} ({len(set(v))} values)" for c, v in table.groups.items())


def group_values(table: OutcomeTable, column: str) -> tuple[str, list[str | None]]:
    """``(column name, value per prompt)`` of the metadata ``column`` (exact name, else the one
    column matching it case-insensitively). Raises :class:`EvaluationError` naming the
    columns available when there is no such column."""
    if column in table.groups:
        return column, list(table.groups[column])
    folded = [c for c in table.groups if c.lower() == column.strip().lower()]
    if len(folded) == 1:
        return folded[0], list(table.groups[folded[0]])
    raise EvaluationError(
        f"{_where(table)}: no column {column!r} to split by; columns available: {_available(table)}"
    )


def _sort_key(value: str | None) -> tuple[bool, str]:
    return (value is None, value or "")


def holdout_groups(table: OutcomeTable, column: str, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id (0..k−1) of each prompt such that every prompt of one ``column`` value is in
    the same fold — no group is ever on both the training and the test side.

    Like scikit-learn's ``GroupKFold``, balanced by prompt count: groups are shuffled
    (seeded by ``seed``), ordered largest first (the shuffle breaks ties), and each goes
    to the fold with the fewest prompts so far (ties between folds in a seeded order).
    Prompts without a value (``None``) form one group of their own. Deterministic for a
    given ``seed``. Raises :class:`EvaluationError` for a missing column (naming the
    columns available), ``k < 2``, or fewer groups than folds.
    """
    k = int(k)
    if k < 2:
        raise EvaluationError(f"holding out groups needs at least 2 folds (got {k})")
    name, values = group_values(table, column)
    sizes = Counter(values)
    if len(sizes) < k:
        shown = ", ".join("(no value)" if g is None else str(g) for g in sorted(sizes, key=_sort_key)[:10])
        more = ", …" if len(sizes) > 10 else ""
        fix = f"use at most {len(sizes)} folds (--cv {len(sizes)})" if len(sizes) >= 2 else "hold out another column"
        raise EvaluationError(
            f"{_where(table)}: column {name!r} has {len(sizes)} group{'s' if len(sizes) != 1 else ''} "
            f"({shown}{more}), fewer than the {k} folds; {fix}, or split by another column"
        )
    rng = np.random.default_rng(seed)
    keys = sorted(sizes, key=_sort_key)
    shuffled = [keys[i] for i in rng.permutation(len(keys))]
    ordered = sorted(shuffled, key=lambda g: -sizes[g])  # stable: the shuffle breaks ties
    preference = rng.permutation(k)
    load = np.zeros(k, dtype=np.int64)
    fold_of: dict[str | None, int] = {}
    for g in ordered:
        f = min(range(k), key=lambda j: (int(load[j]), int(preference[j])))
        fold_of[g] = f
        load[f] += sizes[g]
    return np.asarray([fold_of[v] for v in values], dtype=np.int64)


def _aligned_test(train: OutcomeTable, test: OutcomeTable) -> tuple[OutcomeTable, int]:
    """``test`` with ``train``'s arms in ``train``'s order and without the prompts ``train``
    also has; and how many prompts were removed."""
    if set(train.arms) != set(test.arms):
        raise EvaluationError(
            "the training and test data must have the same arms: "
            f"training ({_where(train)}): {', '.join(train.arms)}; test ({_where(test)}): {', '.join(test.arms)}; "
            "pick the shared ones with --arms (or --weak and --strong)"
        )
    aligned = test if test.arms == train.arms else select_arms(test, train.arms)
    seen = set(train.prompts)
    overlap = np.asarray([p in seen for p in aligned.prompts], dtype=bool)
    if overlap.all():
        raise EvaluationError(
            f"every test prompt ({len(aligned)}) is also in the training data, so nothing is left to test on; "
            "test on a file of other prompts"
        )
    if overlap.any():
        aligned = aligned.subset(~overlap)
    return aligned, int(overlap.sum())


def train_test(train: OutcomeTable, test: OutcomeTable, fit: Fit) -> Heldout:
    """Fit on ``train``, predict ``test``.

    The arms must be the same set (an error lists both); the test side takes the
    training side's arm order, and prompts present in both tables are removed from
    the test side (with a note), so the router is never scored on a prompt it was
    trained on.
    """
    aligned, removed = _aligned_test(train, test)
    notes = []
    if removed:
        notes.append(f"{removed} test prompt{'s' if removed != 1 else ''} also in the training data "
                     "left out of the test side")
    probs = _predict(fit(train), aligned)
    protocol = {
        "name": "train_test", "train": train.source, "test": test.source, "n_train": len(train),
        "n_test": len(aligned), "overlap_removed": removed,
        "description": f"trained on {_where(train)} ({len(train)} prompts), tested on {_where(test)} "
                       f"({len(aligned)} prompts" + (f"; {removed} also in training left out)" if removed else ")"),
    }
    return Heldout(aligned, probs, protocol, notes)


def _predict(predict: Any, table: OutcomeTable) -> np.ndarray:
    pred = np.asarray(predict(list(table.prompts)), dtype=float)
    if pred.shape != (len(table), len(table.arms)):
        raise EvaluationError(f"the predictor returned shape {pred.shape} for {len(table)} prompts; "
                              f"expected {(len(table), len(table.arms))}")
    return pred


def _kfold_heldout(table: OutcomeTable, fit: Fit, k: int, seed: int) -> Heldout:
    probs = oof_predictions(table, fit, folds=kfold(table, k, seed))
    protocol = {"name": "kfold", "k": int(k), "seed": int(seed),
                "description": f"{k}-fold cross-validation by prompt"}
    return Heldout(table, probs, protocol)


def _groups_heldout(table: OutcomeTable, fit: Fit, column: str, k: int, seed: int) -> Heldout:
    folds = holdout_groups(table, column, k, seed)
    name, values = group_values(table, column)
    probs = oof_predictions(table, fit, folds=folds)
    described = []
    for f in range(int(k)):
        rows = folds == f
        groups = sorted({values[i] for i in np.flatnonzero(rows)}, key=_sort_key)
        described.append({"fold": f, "groups": groups, "n_test": int(rows.sum()), "n_train": int((~rows).sum())})
    n_groups = len(set(values))
    protocol = {"name": "groups", "column": name, "k": int(k), "seed": int(seed), "n_groups": n_groups,
                "folds": described,
                "description": f"{k} folds over whole groups of {name!r} ({n_groups} groups; "
                               "no group on both sides of a fold)"}
    notes = []
    missing = sum(v is None for v in values)
    if missing:
        notes.append(f"{missing} prompts without a {name!r} value form one group of their own")
    return Heldout(table, probs, protocol, notes)


# -- scoring ------------------------------------------------------------------------------


def bootstrap_report(table: OutcomeTable, probs: Any, weak: str, strong: str, *, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """:func:`~effreason_agents.evaluation.metrics.bootstrap_apgr` of the router score
    ``P(strong right) − P(weak right)`` over the prompts :func:`~router_training.evaluate.two_arm_report`
    scores; its ``apgr`` equals that report's."""
    _, w, s, pw, ps = pair_scores(table, probs, weak, strong)
    return bootstrap_apgr(w.tolist(), s.tolist(), (ps - pw).tolist(), n_boot=n_boot, seed=seed, level=level)


def evaluate_protocol(
    table: OutcomeTable | None = None,
    kind: str = "logistic",
    *,
    k: int = 5,
    seed: int = 0,
    column: str | None = None,
    train: OutcomeTable | None = None,
    test: OutcomeTable | None = None,
    weak: str | None = None,
    strong: str | None = None,
    embeddings: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
    fit: Fit | None = None,
) -> dict[str, Any]:
    """Evaluate a router model kind under one protocol and score its held-out predictions.

    The protocol follows from the arguments: ``train`` and ``test`` (no ``table``) —
    :func:`train_test`; ``table`` with ``column`` — ``k`` folds of :func:`holdout_groups`;
    ``table`` alone — :func:`kfold`. ``fit`` (``table -> predict``) defaults to
    :func:`router_training.models.fit_predict` of ``kind`` (``embeddings``, ``seed``).

    Returns :func:`~router_training.evaluate.prediction_report` of the scored prompts
    (weak/strong defaulting as in :func:`~router_training.evaluate.default_pair`, costs from
    :func:`~router_training.evaluate.costs_for`) plus ``"protocol"`` (``name`` — one of
    :data:`PROTOCOLS` — ``description`` and the split: ``k``/``seed``; ``column``,
    ``n_groups`` and per-fold ``folds`` ``[{"fold", "groups", "n_test", "n_train"}]``;
    ``train``/``test`` sources, ``n_train``, ``n_test``, ``overlap_removed``),
    ``"bootstrap"`` (:func:`bootstrap_report`, ``None`` when ``n_boot`` is 0 or APGR is
    undefined), ``"model"``, ``"seed"``, ``"k"`` (``None`` for train/test) and
    ``"seconds"``.
    """
    if train is not None or test is not None:
        if train is None or test is None:
            raise EvaluationError(
                "train-on-one/test-on-another needs both a training and a test table (--train and --test)")
        if table is not None or column is not None:
            raise EvaluationError(
                "give either one table (k folds, or --split-by COLUMN) or --train and --test, not both")
    elif table is None:
        raise EvaluationError("no data: give a table (--data) or a training and a test table (--train and --test)")
    if int(n_boot) < 0:
        raise EvaluationError(f"the number of bootstrap resamples must be 0 (off) or more (got {n_boot})")
    if fit is None:
        from .models import fit_predict

        fit = fit_predict(kind, embeddings=embeddings, seed=seed)
    started = time.perf_counter()
    scored = table if table is not None else _aligned_test(train, test)[0]  # type: ignore[arg-type]
    costs, unit = costs_for(scored)
    weak, strong = resolve_pair(scored, costs, weak, strong)  # fail before any fitting
    if table is None:
        held = train_test(train, test, fit)  # type: ignore[arg-type]
    elif column is not None:
        held = _groups_heldout(table, fit, column, k, seed)
    else:
        held = _kfold_heldout(table, fit, k, seed)
    result = prediction_report(held.table, held.probs, weak=weak, strong=strong, costs=costs, cost_unit=unit)
    result["notes"] = [*held.notes, *result["notes"]]
    result["bootstrap"] = None
    if n_boot and result.get("apgr") is not None:
        result["bootstrap"] = bootstrap_report(held.table, held.probs, weak, strong, n_boot=n_boot, seed=seed,
                                               level=level)
    result.update({"protocol": held.protocol, "model": kind, "seed": int(seed),
                   "k": held.protocol.get("k"), "seconds": round(time.perf_counter() - started, 2)})
    return result
