"""``effreason calibrate``: run a tier's arms on graded items, fit and evaluate calibrators.

The pipeline, from one command:

1. run the tier's arms (and a stronger arm, for the cascade) on the items through the
   benchmark harness (:class:`~effreason_agents.evaluation.bench.Bench`), so every attempt lands in
   the outcome store with its uncertainty signals and its grade; the run resumes like
   ``effreason bench``;
2. split the items into training and held-out sets by a seeded hash of the item id
   (never by row: an item is in one set only);
3. per strategy, fit a calibrator on the training items
   (:func:`router_training.calibration.fit_calibrator`: logistic or isotonic, chosen by
   cross-validated Brier score), and, for comparison, one calibrator per single signal;
4. on the held-out items, measure AUROC against correctness, Brier score and ECE
   (10 bins) for every single signal and for the combination;
5. pick the escalation threshold on the training items for the target (a maximum
   escalation rate or a minimum accuracy) and report the two-step cascade
   (this arm, escalating to the strong arm below the threshold) on the held-out items
   at that threshold, next to always-this-arm and always-strong;
6. write each artifact to ``OUT/calibrators/<tier>-<strategy>.json`` (with the model,
   the threshold and the held-out metrics) and the report to ``OUT/calibration.json``
   and ``OUT/calibration.md``.

Only attempts the ``assess`` node would calibrate are used to fit and score the
calibrator: a reply with no parsed answer, or one truncated before its answer,
gets confidence 0 by rule. In the cascade those items always escalate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import numpy as np

from effreason_agents.adapters.calibrator import CalibratorError
from effreason_agents.core.features import classify_difficulty
from effreason_agents.core.money import format_usd
from effreason_agents.config import ArmConfig, Config
from effreason_agents.errors import ConfigError
from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.adapters.atomic import write_bytes, write_json
from effreason_agents.evaluation.tasks import TaskItem
from effreason_agents.core.confidence import question_signals

from .calibration import (
    auroc,
    brier,
    ece,
    fit_calibrator,
    pick_threshold,
    predict_proba,
    save_artifact,
    threshold_curve,
)

__all__ = ["CalibrationPlan", "calibrate", "calibrated_rows", "heldout_ids", "render_markdown"]

CURVE_STEPS = [round(0.1 * i, 1) for i in range(11)]
NO_ANSWER_METHODS = ("last-number", "text")


@dataclass
class CalibrationPlan:
    """What ``effreason calibrate`` runs: the tier's strategies, the strong arm, the split, the target."""

    config: Config
    items: list[TaskItem]
    tier: str
    strategies: list[str]
    strong: str | None
    out_dir: Path
    suite: str = "custom"
    holdout: float = 0.3
    seed: int = 0
    folds: int = 5
    max_escalation_rate: float | None = None
    min_accuracy: float | None = None
    concurrency: int = 2
    force: bool = False
    arms: list[ArmConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = self.config
        if self.tier not in cfg.tiers:
            raise ConfigError(f"unknown tier {self.tier!r} (known: {', '.join(sorted(cfg.tiers))})")
        if self.tier not in cfg.enabled_tiers():
            raise ConfigError(f"tier {self.tier!r} is not enabled (set its API key or enable it)")
        if not self.strategies:
            self.strategies = list(dict.fromkeys(a.strategy for a in cfg.usable_ladder() if a.tier == self.tier))
            if not self.strategies:
                raise ConfigError(f"no arm of tier {self.tier!r} is on the ladder: name one with --strategy")
        for s in self.strategies:
            if s not in cfg.strategies:
                raise ConfigError(f"unknown strategy {s!r} (known: {', '.join(sorted(cfg.strategies))})")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"--holdout must be between 0 and 1, got {self.holdout}")
        if self.max_escalation_rate is not None and not 0.0 <= self.max_escalation_rate <= 1.0:
            raise ConfigError("--max-escalation-rate must be in [0, 1]")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError("--min-accuracy must be in [0, 1]")
        own = [ArmConfig(tier=self.tier, strategy=s) for s in self.strategies]
        if self.strong is None:
            self.strong = default_strong_arm(cfg, self.tier, own)
        if self.strong is not None:
            from effreason_agents.evaluation.bench import resolve_arms

            strong = resolve_arms(cfg, [self.strong])[0]
            self.strong = strong.name
            if strong.name not in [a.name for a in own]:
                own.append(strong)
        self.arms = own

    def arm_name(self, strategy: str) -> str:
        return ArmConfig(tier=self.tier, strategy=strategy).name


def default_strong_arm(config: Config, tier: str, own: Sequence[ArmConfig]) -> str | None:
    """The top usable ladder arm on another tier; else the top usable arm that is not the first calibrated one."""
    ladder = config.usable_ladder()
    other = [a for a in ladder if a.tier != tier]
    if other:
        return other[-1].name
    first = own[0].name if own else None
    rest = [a for a in ladder if a.name != first]
    return rest[-1].name if rest else None


def heldout_ids(ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """Items in the held-out set: a seeded hash of the id below ``fraction`` (stable as items are added)."""
    out = set()
    for i in ids:
        h = int.from_bytes(hashlib.sha256(f"{seed}\x00{i}".encode()).digest()[:8], "big") / 2**64
        if h < fraction:
            out.add(i)
    return out


def _judged(attempt: Any) -> bool:
    """Whether ``assess`` would consult a calibrator for this attempt."""
    if attempt.error or attempt.answer is None:
        return False
    return not (attempt.truncated and attempt.answer_method in NO_ANSWER_METHODS)


def calibrated_rows(store: OutcomeStore, run_id: str, arm: str) -> dict[str, dict[str, Any]]:
    """Per item id, the arm's first attempt in a benchmark run: signals, grade, cost, tokens, and
    whether the calibrator judges it (``judged``)."""
    out: dict[str, dict[str, Any]] = {}
    for r in store.bench_results(run_id):
        if r.arm != arm or not r.request_id:
            continue
        attempts = store.attempts_for(r.request_id)
        first = attempts[0] if attempts else None
        signals: dict[str, Any] = {}
        if first is not None:
            # question signals are recomputed when an older log lacks them
            signals = question_signals(classify_difficulty(r.question)[1], first.answer)
            signals.update({k: v for k, v in first.signals.items() if v is not None or k not in signals})
        out[r.item_id] = {
            "item_id": r.item_id,
            "question": r.question,
            "signals": signals,
            "correct": bool(r.correct),
            "judged": bool(first is not None and _judged(first)),
            "cost_usd": float(Decimal(r.cost_usd)),
            "output_tokens": int(r.output_tokens),
            "tier": first.tier if first else None,
            "strategy": first.strategy if first else None,
        }
    return out


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _scores(p: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    if len(y) == 0:
        return {"auroc": None, "ece": None, "brier": None}
    return {"auroc": _num(auroc(p, y)), "ece": _num(ece(p, y)), "brier": _num(brier(p, y))}


def _evaluate_strategy(plan: CalibrationPlan, rows: Mapping[str, dict], strong_rows: Mapping[str, dict] | None,
                       held: set[str], strategy: str) -> tuple[dict[str, Any], dict[str, Any]]:
    tier = plan.tier
    train = [r for i, r in rows.items() if i not in held and r["judged"]]
    test = [r for i, r in rows.items() if i in held and r["judged"]]
    if not test:
        raise CalibratorError(f"no held-out item has a judged answer from {tier}:{strategy}; use more items or a larger --holdout")
    artifact = fit_calibrator(train, tier, strategy, folds=plan.folds, seed=plan.seed)
    y = np.array([r["correct"] for r in test], dtype=bool)
    p = predict_proba(artifact, [r["signals"] for r in test])
    combined = _scores(p, y)

    signals: dict[str, dict[str, float | None]] = {}
    for name in artifact["training"]["candidate_features"]:
        try:
            single = fit_calibrator(train, tier, strategy, features=[name], folds=plan.folds, seed=plan.seed)
        except CalibratorError:
            continue
        signals[name] = _scores(predict_proba(single, [r["signals"] for r in test]), y)
    best_single = max((s["auroc"] for s in signals.values() if s["auroc"] is not None), default=None)

    # the threshold: chosen on the training items, reported on the held-out items
    section: dict[str, Any] = {
        "arm": plan.arm_name(strategy),
        "strategy": strategy,
        "kind": artifact["kind"],
        "features": artifact["features"],
        "n": len(test),
        "n_train": len(train),
        "positives_heldout": int(y.sum()),
        "signals": signals,
        "combined": combined,
        "best_single_auroc": best_single,
        "threshold": None,
        "escalation_rate": None,
    }
    if strong_rows is not None and plan.strong != plan.arm_name(strategy):
        target = {"max_escalation_rate": plan.max_escalation_rate, "min_accuracy": plan.min_accuracy}
        fit_ids = [i for i in rows if i not in held and i in strong_rows]
        eval_ids = [i for i in rows if i in held and i in strong_rows]
        if fit_ids and eval_ids:
            fit_curve = _curve(artifact, rows, strong_rows, fit_ids, None)
            chosen = pick_threshold(fit_curve, max_escalation_rate=plan.max_escalation_rate,
                                    min_accuracy=plan.min_accuracy)
            t = chosen["threshold"]
            heldout_curve = _curve(artifact, rows, strong_rows, eval_ids, sorted(set(CURVE_STEPS) | {t}))
            at = next(pt for pt in heldout_curve if pt["threshold"] == t)
            section.update(
                threshold=t,
                escalation_rate=at["escalation_rate"],
                target={k: v for k, v in target.items() if v is not None} or {"most_accurate": True},
                target_text=_target_text(plan),
                cascade={
                    "strong_arm": plan.strong,
                    "n": len(eval_ids),
                    "at_threshold": at,
                    "always_small": _always(rows, eval_ids),
                    "always_strong": _always(strong_rows, eval_ids),
                    "curve": [pt for pt in heldout_curve if pt["threshold"] in CURVE_STEPS],
                },
            )
            artifact["threshold"] = t
            artifact["target"] = section["target"]
    artifact["model"] = plan.config.tiers[tier].model
    artifact["metrics"]["heldout"] = {"n": len(test), **combined, "signals": signals}
    return section, artifact


def _target_text(plan: CalibrationPlan) -> str:
    if plan.max_escalation_rate is not None:
        return f"escalate at most {plan.max_escalation_rate:.0%} of queries, most accurate"
    if plan.min_accuracy is not None:
        return f"accuracy at least {plan.min_accuracy:.2f}, cheapest"
    return "the most accurate, cheapest on ties"


def _always(rows: Mapping[str, dict], ids: Sequence[str]) -> dict[str, float]:
    sel = [rows[i] for i in ids]
    return {
        "accuracy": float(np.mean([r["correct"] for r in sel])),
        "cost": float(np.mean([r["cost_usd"] for r in sel])),
        "output_tokens": float(np.mean([r["output_tokens"] for r in sel])),
    }


def _curve(artifact: Mapping[str, Any], rows: Mapping[str, dict], strong: Mapping[str, dict], ids: Sequence[str],
           thresholds: Sequence[float] | None) -> list[dict[str, float]]:
    p_raw = predict_proba(artifact, [rows[i]["signals"] for i in ids])
    p = [float(v) if rows[i]["judged"] else None for v, i in zip(p_raw, ids)]  # unjudged: always escalate
    cs = [rows[i]["correct"] for i in ids]
    cl = [strong[i]["correct"] for i in ids]
    usd = threshold_curve(p, cs, cl, [rows[i]["cost_usd"] for i in ids], [strong[i]["cost_usd"] for i in ids], thresholds)
    tok = threshold_curve(p, cs, cl, [rows[i]["output_tokens"] for i in ids],
                          [strong[i]["output_tokens"] for i in ids], thresholds)
    for a, b in zip(usd, tok):
        a["output_tokens"] = b["cost"]
    return usd


def calibrate(plan: CalibrationPlan, on_progress: Callable[[int, int, Any], None] | None = None) -> dict[str, Any]:
    """Run the plan (see the module docstring); returns the report dict and writes the files."""
    from effreason_agents.evaluation.bench import Bench

    bench = Bench(plan.config, plan.items, plan.arms, graph=False, suite=plan.suite,
                  out_dir=plan.out_dir, concurrency=plan.concurrency, force=plan.force)
    bench.run(on_progress)
    store = OutcomeStore(plan.config.store.target())
    try:
        strong_rows = calibrated_rows(store, bench.run_id, plan.strong) if plan.strong else None
        per_strategy = {s: calibrated_rows(store, bench.run_id, plan.arm_name(s)) for s in plan.strategies}
    finally:
        store.close()
    held = heldout_ids([it.id for it in plan.items], plan.holdout, plan.seed)
    sections: list[dict[str, Any]] = []
    artifacts: list[Path] = []
    for s in plan.strategies:
        section, artifact = _evaluate_strategy(plan, per_strategy[s], strong_rows, held, s)
        path = save_artifact(artifact, plan.out_dir / "calibrators" / f"{plan.tier}-{s}.json")
        section["artifact"] = str(path)
        sections.append(section)
        artifacts.append(path)
    first = sections[0]
    report = {
        "suite": plan.suite,
        "tier": plan.tier,
        "model": plan.config.tiers[plan.tier].model,
        "items": len(plan.items),
        "holdout": plan.holdout,
        "seed": plan.seed,
        "strong_arm": plan.strong,
        # the first strategy's figures at the top level
        "n": first["n"],
        "signals": {k: {"auroc": v["auroc"], "ece": v["ece"]} for k, v in first["signals"].items()},
        "combined": first["combined"],
        "threshold": first["threshold"],
        "escalation_rate": first["escalation_rate"],
        "calibrators": sections,
        "artifacts_dir": str(plan.out_dir / "calibrators"),
    }
    write_json(plan.out_dir / "calibration.json", report, allow_nan=False, shared=True)
    write_bytes(plan.out_dir / "calibration.md", render_markdown(report).encode(), shared=True)
    return report


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """The calibration report as markdown (what ``effreason calibrate`` prints)."""
    lines = [f"# Calibration: tier `{report['tier']}` ({report['model']}), suite {report['suite']}", ""]
    lines.append(f"{report['items']} items; held out {report['holdout']:.0%} by item (seed {report['seed']}); "
                 f"strong arm for the cascade: `{report['strong_arm']}`.")
    for sec in report["calibrators"]:
        lines += ["", f"## `{sec['arm']}`: {sec['kind']} on {len(sec['features'])} feature(s)", "",
                  f"Fitted on {sec['n_train']} training attempts; scored on {sec['n']} held-out attempts "
                  f"({sec['positives_heldout']} correct).", "",
                  "| signal | AUROC | ECE | Brier |", "|---|---|---|---|"]
        for name, m in sorted(sec["signals"].items(), key=lambda kv: -(kv[1]["auroc"] or 0)):
            lines.append(f"| {name} | {_f(m['auroc'])} | {_f(m['ece'])} | {_f(m['brier'])} |")
        c = sec["combined"]
        lines.append(f"| **combined** | **{_f(c['auroc'])}** | **{_f(c['ece'])}** | **{_f(c['brier'])}** |")
        cas = sec.get("cascade")
        if cas:
            at = cas["at_threshold"]
            lines += ["", f"Threshold {sec['threshold']:.2f} (target: "
                      f"{sec['target_text']}; chosen on the training items). "
                      f"Cascade to `{cas['strong_arm']}` on {cas['n']} held-out items:", "",
                      "| policy | escalation rate | accuracy | mean cost | mean output tokens |",
                      "|---|---|---|---|---|",
                      f"| always `{sec['arm']}` | 0% | {_f(cas['always_small']['accuracy'], 2)} | "
                      f"{format_usd(cas['always_small']['cost'], symbol=True)} | {_f(cas['always_small']['output_tokens'], 1)} |",
                      f"| cascade at {sec['threshold']:.2f} | {at['escalation_rate']:.0%} | {_f(at['accuracy'], 2)} | "
                      f"{format_usd(at['cost'], symbol=True)} | {_f(at['output_tokens'], 1)} |",
                      f"| always `{cas['strong_arm']}` | 100% | {_f(cas['always_strong']['accuracy'], 2)} | "
                      f"{format_usd(cas['always_strong']['cost'], symbol=True)} | {_f(cas['always_strong']['output_tokens'], 1)} |",
                      "", "Trade-off (held-out): threshold → escalation rate, accuracy, cost", "",
                      "| threshold | escalation rate | accuracy | mean cost | mean output tokens |",
                      "|---|---|---|---|---|"]
            for pt in cas["curve"]:
                lines.append(f"| {pt['threshold']:.1f} | {pt['escalation_rate']:.0%} | {pt['accuracy']:.2f} | "
                             f"{format_usd(pt['cost'], symbol=True)} | {pt['output_tokens']:.1f} |")
        lines += ["", f"Artifact: `{sec['artifact']}`"]
    lines += ["", "Use these calibrators: set `calibrators = \"" + report["artifacts_dir"] + "\"` under `[escalation]`.", ""]
    return "\n".join(lines)
