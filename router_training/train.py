"""``effreason router train | eval | calibrate``: fit, evaluate and tune routers on logged outcomes.

* :func:`train` — cross-validate each candidate model kind by prompt, keep the best
  (two-arm APGR when the table has a weak/strong pair, else the policy's cost/accuracy
  hull area), refit it on every prompt, pick the policy for the target, and save the
  artifact with its card (arms, features, training data hash and size, CV metrics).
* :func:`evaluate` — k-fold cross-validated RouteLLM metrics for one model kind.
* :func:`calibrate_policy` — choose τ (threshold policy) or λ (cost-penalized policy)
  from out-of-fold predictions for a target (share of calls to a tier, mean cost per
  query, or accuracy) and write it into an existing artifact's card.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from effreason_agents.adapters.atomic import write_json
from effreason_agents.errors import RouterTrainError

from effreason_agents.evaluation.outcomes import OutcomeTable

__all__ = ["AUTO_KINDS", "RouterTrainError", "calibrate_policy", "evaluate", "train"]

#: ``--model auto`` cross-validates these and keeps the best.
AUTO_KINDS = ("logistic", "mf", "gbm", "mlp", "knn", "ensemble")


def evaluate(table: OutcomeTable, kind: str = "logistic", *, k: int = 5, seed: int = 0, weak: str | None = None,
             strong: str | None = None, embeddings: bool = False) -> dict[str, Any]:
    """Cross-validated metrics of one model kind (folds by prompt)."""
    return _evaluate(table, kind, k=k, seed=seed, weak=weak, strong=strong, embeddings=embeddings)[0]


def _evaluate(table: OutcomeTable, kind: str, *, k: int, seed: int, weak: str | None, strong: str | None,
              embeddings: bool) -> tuple[dict[str, Any], Any]:
    """:func:`evaluate` and the out-of-fold predictions it scored (the policy is tuned on them)."""
    from .evaluate import costs_for, oof_predictions, prediction_report, resolve_pair
    from .models import fit_predict

    costs, unit = costs_for(table)
    weak, strong = resolve_pair(table, costs, weak, strong)
    started = time.perf_counter()
    probs = oof_predictions(table, fit_predict(kind, embeddings=embeddings, seed=seed), k=k, seed=seed)
    result = prediction_report(table, probs, weak=weak, strong=strong, costs=costs, cost_unit=unit)
    result.update({"k": int(k), "seed": int(seed), "model": kind, "seconds": round(time.perf_counter() - started, 2)})
    return result, probs


def _score(result: Mapping[str, Any]) -> float:
    apgr = result.get("apgr")
    if isinstance(apgr, (int, float)):
        return float(apgr)
    area = ((result.get("many_arm") or {}).get("policy") or {}).get("hull_area")
    return float(area) if isinstance(area, (int, float)) else float("-inf")


def _target_kwargs(max_share: tuple[str, float] | None, max_mean_cost: float | None,
                   min_accuracy: float | None) -> dict[str, Any]:
    return {"max_share": max_share, "max_mean_cost": max_mean_cost, "min_accuracy": min_accuracy}


def train(table: OutcomeTable, out_dir: str | Path, *, kinds: Sequence[str] = ("logistic",), k: int = 5, seed: int = 0,
          weak: str | None = None, strong: str | None = None, embeddings: bool = False, policy: str = "threshold",
          max_share: tuple[str, float] | None = None, max_mean_cost: float | None = None,
          min_accuracy: float | None = None) -> dict[str, Any]:
    """Select a model kind by cross-validation, refit it on all prompts, pick the policy and save."""
    from .evaluate import costs_for, pick_policy, policy_curve
    from .models import fit_router

    if k > len(table):
        raise RouterTrainError(f"fewer prompts ({len(table)}) than folds ({k}); lower --cv or log more outcomes")
    candidates: dict[str, dict[str, Any]] = {}
    oof: dict[str, Any] = {}
    for kind in kinds:
        candidates[kind], oof[kind] = _evaluate(table, kind, k=k, seed=seed, weak=weak, strong=strong,
                                                embeddings=embeddings)
    best = max(candidates, key=lambda kd: _score(candidates[kd]))
    costs, unit = costs_for(table)
    probs = oof[best]
    curve = policy_curve(table, probs, costs, kind=policy)
    chosen = pick_policy(curve, **_target_kwargs(max_share, max_mean_cost, min_accuracy))
    started = time.perf_counter()
    fitted = fit_router(table, best, embeddings=embeddings, seed=seed)
    fit_s = time.perf_counter() - started
    policy_card = {"kind": policy, ("tau" if policy == "threshold" else "lambda"): chosen["value"], "costs": costs,
                   "cost_unit": unit, "target": _target_text(max_share, max_mean_cost, min_accuracy),
                   "expected": {k2: chosen[k2] for k2 in ("accuracy", "mean_cost", "share") if k2 in chosen}}
    card_extra = {
        "cv": {kd: _summary(r) for kd, r in candidates.items()},
        "selected_by": "cv apgr" if isinstance(candidates[best].get("apgr"), (int, float)) else "cv hull area",
        "policy": policy_card,
        "training": {"source": table.source, "n_prompts": len(table),
                     "n_rows": int((~_isnan(table)).sum()), "data_sha256": table.sha256(), "fit_seconds": round(fit_s, 2)},
    }
    path = fitted.save(out_dir, card_extra)
    return {"artifact": str(path), "model": best, "cv": card_extra["cv"], "policy": policy_card,
            "n": len(table), "arms": list(table.arms), "fit_seconds": round(fit_s, 2)}


def _isnan(table: OutcomeTable) -> Any:
    import numpy as np

    return np.isnan(table.correct)


def _summary(result: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("apgr", "cpt50", "cpt80", "auc", "n", "baselines", "seconds", "cost_unit")
    out = {k: result.get(k) for k in keys if k in result}
    many = result.get("many_arm") or {}
    if many:
        out["many_arm"] = {k: v for k, v in many.items() if k != "points"}
    return out


def _target_text(max_share: tuple[str, float] | None, max_mean_cost: float | None, min_accuracy: float | None) -> str:
    if max_share is not None:
        return f"at most {max_share[1]:.0%} of calls to tier {max_share[0]!r}, most accurate"
    if max_mean_cost is not None:
        return f"mean cost per query at most {max_mean_cost:g}, most accurate"
    if min_accuracy is not None:
        return f"accuracy at least {min_accuracy:.2f}, cheapest"
    return "the most accurate, cheapest on ties"


def calibrate_policy(router_dir: str | Path, table: OutcomeTable, *, k: int = 5, seed: int = 0, policy: str = "threshold",
                     max_share: tuple[str, float] | None = None, max_mean_cost: float | None = None,
                     min_accuracy: float | None = None) -> dict[str, Any]:
    """Pick τ or λ for a target from out-of-fold predictions of the artifact's model kind on
    ``table``, and write the policy into the artifact's card (atomically). Returns the curve
    and the chosen point."""
    from effreason_agents.adapters.router import Router

    from .evaluate import costs_for, oof_predictions, pick_policy, policy_curve
    from .models import fit_predict

    router = Router.load(router_dir, arms=table.arms if set(table.arms) != set() else None)
    kind = router.card["kind"]
    embeddings = bool((router.card.get("features") or {}).get("embeddings"))
    costs, unit = costs_for(table)
    probs = oof_predictions(table, fit_predict(kind, embeddings=embeddings, seed=seed), k=k, seed=seed)
    curve = policy_curve(table, probs, costs, kind=policy)
    chosen = pick_policy(curve, **_target_kwargs(max_share, max_mean_cost, min_accuracy))
    card_path = Path(router_dir) / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["policy"] = {"kind": policy, ("tau" if policy == "threshold" else "lambda"): chosen["value"], "costs": costs,
                      "cost_unit": unit, "target": _target_text(max_share, max_mean_cost, min_accuracy),
                      "expected": {k2: chosen[k2] for k2 in ("accuracy", "mean_cost", "share") if k2 in chosen}}
    write_json(card_path, card, sort_keys=True)
    return {"policy": card["policy"], "curve": curve, "chosen": chosen, "artifact": str(router_dir)}


