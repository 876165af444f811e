"""``effreason router``: train routers on logged outcomes, evaluate them with RouteLLM's
metrics, and tune the policy that turns their predictions into a choice of arm."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from effreason_agents.cli.options import JsonOpt, share_target
from effreason_agents.cli.render import fail, out, print_json
from effreason_agents.errors import EffReasonError

__all__ = ["router_app", "router_calibrate", "router_eval", "router_train", "two_arm_lines"]

router_app = typer.Typer(
    help="Routers learned from logged outcomes: which arm to start a query on. "
    "Train, evaluate, tune the policy.",
    no_args_is_help=True,
)

DataOpt = typer.Option(..., "--data", help="Logged outcomes: the outcome store ('store' or a .sqlite path), a long JSONL/CSV (prompt, arm|model, correct|score), or a RouteLLM wide CSV.")
FormatOpt = typer.Option(None, "--format", help="wide | long | store (default: from the file).")
WeakOpt = typer.Option(None, "--weak", help="The weak arm / model id (two-arm metrics; with --strong, trains on these two).")
StrongOpt = typer.Option(None, "--strong", help="The strong arm / model id.")
ArmsOpt = typer.Option(None, "--arms", help="Only these arms / model ids (repeatable).")


def _router_table(data: str, fmt: Optional[str], weak: Optional[str], strong: Optional[str], arms: Optional[list[str]]) -> Any:
    from router_training.data import load_table

    if (weak is None) != (strong is None):
        raise EffReasonError("give --weak and --strong together")
    chosen = list(arms or [])
    if weak and strong:
        chosen = list(dict.fromkeys([weak, strong, *chosen]))
    return load_table(data, fmt, arms=chosen or None)


def _targets(max_share: Optional[str], max_mean_cost: Optional[float], min_accuracy: Optional[float]) -> dict[str, Any]:
    given = [x for x in (max_share, max_mean_cost, min_accuracy) if x is not None]
    if len(given) > 1:
        raise EffReasonError("give at most one target: --max-share, --max-mean-cost or --min-accuracy")
    return {"max_share": share_target(max_share), "max_mean_cost": max_mean_cost, "min_accuracy": min_accuracy}


def two_arm_lines(r: dict[str, Any]) -> list[str]:
    """APGR, CPT(50%) and CPT(80%) of the router and its baselines, as aligned text lines."""
    def f(x: Any, pct: bool = False) -> str:
        if not isinstance(x, (int, float)):
            return "–"
        return f"{x:.1%}" if pct else f"{x:.3f}"

    lines = [f"{'policy':<10} {'APGR':>7} {'CPT(50%)':>9} {'CPT(80%)':>9}",
             f"{'router':<10} {f(r.get('apgr')):>7} {f(r.get('cpt50'), True):>9} {f(r.get('cpt80'), True):>9}"]
    for name, b in (r.get("baselines") or {}).items():
        if isinstance(b, dict) and "apgr" in b:
            lines.append(f"{name:<10} {f(b.get('apgr')):>7} {f(b.get('cpt50'), True):>9} {f(b.get('cpt80'), True):>9}")
    return lines


@router_app.command("train")
def router_train(
    data: str = DataOpt, fmt: Optional[str] = FormatOpt, weak: Optional[str] = WeakOpt, strong: Optional[str] = StrongOpt,
    arms: Optional[list[str]] = ArmsOpt,
    model: list[str] = typer.Option(["auto"], "--model", help="auto (logistic, mf, gbm, mlp, knn, ensemble; the best by cross-validation) or one or more of those."),
    embeddings: bool = typer.Option(False, "--embeddings", help="Add all-MiniLM-L6-v2 sentence embeddings to the TF-IDF and hand features (train extra)."),
    cv: int = typer.Option(5, "--cv", min=2, help="Folds (by prompt) for model selection."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds and the models."),
    policy: str = typer.Option("threshold", "--policy", help="threshold (cheapest arm with P >= tau) or lambda (max P - lambda * cost)."),
    max_share: Optional[str] = typer.Option(None, "--max-share", help="Target: at most this share of calls to a tier, e.g. large=0.2."),
    max_mean_cost: Optional[float] = typer.Option(None, "--max-mean-cost", help="Target: mean cost per query at most this (USD, or tokens when the logs are free)."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Target: the cheapest policy reaching this accuracy."),
    out_dir: Path = typer.Option(..., "--out", help="Directory for the router artifact."),
    json_out: bool = JsonOpt,
) -> None:
    """Train a router on logged outcomes and save it as an artifact.

    Picks the model by cross-validation (folds by prompt), fits it on every prompt, chooses the policy for the target and saves the artifact. Use it with `router.artifact = "DIR"` in the configuration.
    """
    from router_training.models import KINDS
    from router_training.train import AUTO_KINDS, train

    try:
        if policy not in ("threshold", "lambda"):
            raise EffReasonError("--policy must be 'threshold' or 'lambda'")
        kinds = list(AUTO_KINDS) if model == ["auto"] else model
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise EffReasonError(f"unknown --model {unknown}; choose from auto, {', '.join(KINDS)}")
        table = _router_table(data, fmt, weak, strong, arms)
        result = train(table, out_dir, kinds=kinds, k=cv, seed=seed, weak=weak, strong=strong, embeddings=embeddings,
                       policy=policy, **_targets(max_share, max_mean_cost, min_accuracy))
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        print_json(result)
        return
    out.print(f"router: {result['model']} on {result['n']} prompts, arms {', '.join(result['arms'])}", highlight=False)
    for kind, r in result["cv"].items():
        out.print(f"  cv {kind:<8} APGR {r.get('apgr') if r.get('apgr') is None else round(r['apgr'], 3)}"
                  f" · AUC {r.get('auc') if r.get('auc') is None else round(r['auc'], 3)} · {r.get('seconds')} s", highlight=False)
    pol = result["policy"]
    value = pol.get("tau", pol.get("lambda"))
    out.print(f"policy: {pol['kind']} {value} ({pol['target']}); expected {pol.get('expected')}", highlight=False)
    out.print(f"artifact: {result['artifact']}", highlight=False)


def _interval_text(boot: Any) -> str:
    if not isinstance(boot, dict) or not isinstance(boot.get("low"), (int, float)):
        return ""
    return f"[{boot['low']:.3f}, {boot['high']:.3f}]"


def _eval_lines(r: dict[str, Any]) -> list[str]:
    """``two_arm_lines`` with the bootstrap interval of the router's APGR after its value."""
    boot = r.get("bootstrap")
    if not isinstance(boot, dict):
        return two_arm_lines(r)

    def f(x: Any, pct: bool = False) -> str:
        if not isinstance(x, (int, float)):
            return "–"
        return f"{x:.1%}" if pct else f"{x:.3f}"

    label = f"{boot.get('level', 0.95):.0%} interval"
    rows = [("router", r, _interval_text(boot))]
    rows += [(name, b, "") for name, b in (r.get("baselines") or {}).items() if isinstance(b, dict) and "apgr" in b]
    lines = [f"{'policy':<10} {'APGR':>7} {label:<16} {'CPT(50%)':>9} {'CPT(80%)':>9}"]
    for name, m, interval in rows:
        lines.append(f"{name:<10} {f(m.get('apgr')):>7} {interval:<16} {f(m.get('cpt50'), True):>9} "
                     f"{f(m.get('cpt80'), True):>9}")
    return lines


def _group_names(groups: list[Any], limit: int = 4) -> str:
    names = ["(no value)" if g is None else str(g) for g in groups]
    if len(names) <= limit + 1:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", … ({len(names) - limit} more)"


@router_app.command("eval")
def router_eval(
    data: Optional[str] = typer.Option(None, "--data", help="Logged outcomes to cross-validate on: the outcome store ('store' or a .sqlite path), a long JSONL/CSV (prompt, arm|model, correct|score), or a RouteLLM wide CSV."),
    train_file: Optional[str] = typer.Option(None, "--train", help="Train on these outcomes (with --test, instead of --data)."),
    test_file: Optional[str] = typer.Option(None, "--test", help="Evaluate on these outcomes; prompts also in --train are left out. Same arms as --train."),
    fmt: Optional[str] = FormatOpt, weak: Optional[str] = WeakOpt, strong: Optional[str] = StrongOpt,
    arms: Optional[list[str]] = ArmsOpt,
    split_by: Optional[str] = typer.Option(None, "--split-by", help="With --data: hold out whole groups of this metadata column (e.g. subject) — --cv folds of groups, no group on both sides of a fold."),
    model: str = typer.Option("logistic", "--model", help="Router model kind: logistic, knn, ensemble (logistic + knn), mf, gbm or mlp."),
    embeddings: bool = typer.Option(False, "--embeddings", help="Add MiniLM sentence embeddings (train extra)."),
    cv: int = typer.Option(5, "--cv", min=2, help="Folds: of prompts, or of groups with --split-by."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds, the model and the bootstrap."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the 95% interval of APGR (0: no interval)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Also write eval.json and pgr.png here."),
    json_out: bool = JsonOpt,
) -> None:
    """Held-out RouteLLM metrics of a router model on logged outcomes.

    Protocols: k-fold cross-validation by prompt (--data), whole groups held out (--data --split-by subject), or train on one file and test on another (--train --test). Reports APGR with a bootstrap 95% interval, CPT(50%), CPT(80%) and AUC, with random and oracle baselines; for many arms, the cost/accuracy hull of its policy.
    """
    from router_training.models import KINDS
    from router_training.protocols import evaluate_protocol

    try:
        if model not in KINDS:
            raise EffReasonError(f"unknown --model {model!r}; choose one of {', '.join(KINDS)}")
        if data is not None and (train_file is not None or test_file is not None):
            raise EffReasonError("give either --data (k folds, or --split-by COLUMN) or --train and --test, not both")
        if (train_file is None) != (test_file is None):
            raise EffReasonError("give --train and --test together: the router is fitted on --train and scored on --test")
        if data is None and train_file is None:
            raise EffReasonError("no data: give --data FILE (k-fold, or --split-by COLUMN), or --train FILE --test FILE")
        if split_by is not None and data is None:
            raise EffReasonError("--split-by holds out groups of --data; with --train/--test the test file is already held out")
        if data is not None:
            r = evaluate_protocol(_router_table(data, fmt, weak, strong, arms), model, k=cv, seed=seed,
                                  column=split_by, weak=weak, strong=strong, embeddings=embeddings, n_boot=bootstrap)
        else:
            r = evaluate_protocol(None, model, seed=seed, train=_router_table(str(train_file), fmt, weak, strong, arms),
                                  test=_router_table(str(test_file), fmt, weak, strong, arms), weak=weak,
                                  strong=strong, embeddings=embeddings, n_boot=bootstrap)
        if out_dir is not None:
            from effreason_agents.adapters.atomic import write_json
            from router_training.evaluate import plot_pgr

            out_dir.mkdir(parents=True, exist_ok=True)
            write_json(out_dir / "eval.json", r, default=str)
            curves = {"router": r.get("curve")} if r.get("curve") else {}
            for name, b in (r.get("baselines") or {}).items():
                if isinstance(b, dict) and b.get("curve"):
                    curves[name] = b["curve"]
            if curves:
                plot_pgr(curves, out_dir / "pgr.png", weak=r.get("weak"), strong=r.get("strong"))
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        keep = ("apgr", "cpt50", "cpt80", "auc", "n", "bootstrap", "baselines", "weak", "strong", "protocol", "k",
                "seed", "arms", "model", "cost_unit", "many_arm", "seconds", "notes")
        doc = {k: r[k] for k in keep if k in r}
        doc["baselines"] = {name: {k: v for k, v in b.items() if k != "curve"} if isinstance(b, dict) else b
                            for name, b in (r.get("baselines") or {}).items()}  # curves: eval.json with --out
        if isinstance(doc.get("many_arm"), dict):
            doc["many_arm"] = {k: v for k, v in doc["many_arm"].items() if k != "points"}
        print_json(doc)
        return
    protocol = r.get("protocol") or {}
    out.print(f"{model} router, {protocol.get('description')}, n = {r.get('n')}"
              f" (weak {r.get('weak')}, strong {r.get('strong')}):", highlight=False)
    for fold in protocol.get("folds") or []:
        groups = fold.get("groups") or []
        out.print(f"  fold {fold['fold'] + 1}: {fold['n_test']} test prompts, {len(groups)} group"
                  f"{'s' if len(groups) != 1 else ''}: {_group_names(groups)}", highlight=False)
    for line in _eval_lines(r):
        out.print(line, highlight=False)
    if r.get("auc") is not None:
        out.print(f"AUC {r['auc']:.3f}", highlight=False)
    boot = r.get("bootstrap")
    if isinstance(boot, dict):
        skipped = f"; {boot['skipped']} without a performance gap skipped" if boot.get("skipped") else ""
        out.print(f"interval: percentile bootstrap over the {r.get('n')} scored prompts, {boot['n_boot']} resamples"
                  f" (seed {r.get('seed')}{skipped})", highlight=False)
    for note in r.get("notes") or []:
        out.print(f"note: {note}", highlight=False)


@router_app.command("calibrate")
def router_calibrate(
    router_dir: Path = typer.Option(..., "--router", help="A router artifact directory (effreason router train)."),
    data: str = DataOpt, fmt: Optional[str] = FormatOpt, arms: Optional[list[str]] = ArmsOpt,
    cv: int = typer.Option(5, "--cv", min=2, help="Folds for the out-of-fold predictions the policy is tuned on."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds."),
    policy: str = typer.Option("threshold", "--policy", help="threshold (tau) or lambda."),
    max_share: Optional[str] = typer.Option(None, "--max-share", help="Target: at most this share of calls to a tier, e.g. large=0.2."),
    max_mean_cost: Optional[float] = typer.Option(None, "--max-mean-cost", help="Target: mean cost per query at most this."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Target: the cheapest policy reaching this accuracy."),
    json_out: bool = JsonOpt,
) -> None:
    """Tune a router's policy for a target from logged outcomes.

    Chooses tau for the threshold policy or lambda for the cost-penalized one on out-of-fold predictions, and writes it into the artifact's card.
    """
    from router_training.train import calibrate_policy

    try:
        if policy not in ("threshold", "lambda"):
            raise EffReasonError("--policy must be 'threshold' or 'lambda'")
        table = _router_table(data, fmt, None, None, arms)
        r = calibrate_policy(router_dir, table, k=cv, seed=seed, policy=policy,
                             **_targets(max_share, max_mean_cost, min_accuracy))
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        print_json(r)
        return
    print(f"{'value':>8} {'accuracy':>9} {'mean cost':>10}  share of calls")
    for pt in r["curve"]:
        share = ", ".join(f"{a} {s:.0%}" for a, s in (pt.get("share") or {}).items() if s)
        mark = "  <- chosen" if pt.get("value") == r["chosen"].get("value") else ""
        print(f"{pt['value']:>8.3g} {pt['accuracy']:>9.3f} {pt['mean_cost']:>10.4g}  {share}{mark}")
    out.print(f"policy written to {router_dir / 'card.json'}: {r['policy']['kind']} "
              f"{r['policy'].get('tau', r['policy'].get('lambda'))} ({r['policy']['target']})", highlight=False)


from effreason_agents.cli.router_loop import router_retrain, router_status  # noqa: E402  (they join router_app)

router_app.command("status")(router_status)
router_app.command("retrain")(router_retrain)

from effreason_agents.cli.cascade import router_cascade  # noqa: E402  (it joins router_app)

router_app.command("cascade")(router_cascade)
