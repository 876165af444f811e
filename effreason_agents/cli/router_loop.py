"""``effreason router status`` and ``effreason router retrain``: watch a deployed router on
live traffic, and refit it on recent logs, replacing it only when the new one is better.

``status`` reads the outcome store: the share of routed requests sent to each arm and
tier, the mean cost per request and the accuracy where requests were graded, next to
what the artifact's card expects (:func:`effreason_agents.adapters.router_target.traffic_summary`).
``retrain`` is :func:`router_training.retrain.retrain`: challenger vs champion on the
same held-out prompts, atomic swap only when the challenger wins by more than the
bootstrap interval.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer

from effreason_agents.cli.options import ConfigOpt, JsonOpt, load, share_target
from effreason_agents.cli.render import err, fail, money, out, print_json
from effreason_agents.errors import EffReasonError

__all__ = ["comparison_lines", "router_retrain", "router_status"]

_METRICS = {"apgr": "APGR", "hull_area": "policy hull area"}


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) else "–"


def _num(x: Any, signed: bool = False) -> str:
    if not isinstance(x, (int, float)):
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def router_status(
    artifact: Optional[Path] = typer.Option(None, "--artifact", help="Router artifact directory (default: [router] artifact of the configuration)."),
    since: str = typer.Option("7d", "--since", help="How far back: 30m, 12h, 7d, 2w, ..."),
    config: Optional[Path] = ConfigOpt,
    json_out: bool = JsonOpt,
) -> None:
    """How the deployed router routed recent traffic, against what its card expects.

    Share of routed requests per arm and tier, the share sent above the cheapest arm (what [router] target_share keeps), mean cost per request and accuracy where requests were graded.
    """
    from effreason_agents.adapters.router_target import parse_since, read_card, traffic_summary

    try:
        window = parse_since(since)
        cfg = load(config)
        path = artifact if artifact is not None else cfg.router.artifact
        if not path:
            raise EffReasonError("no router artifact: pass --artifact DIR, or set [router] artifact in the configuration")
        card = read_card(path)
        tiers = {a.name: a.tier for a in cfg.ladder}
        r = traffic_summary(card, cfg.store.target(), since=window, tiers=tiers, target_share=cfg.router.target_share)
    except EffReasonError as exc:
        fail(exc)
    r = {"artifact": str(path), "kind": card.get("kind"), **r}
    if json_out:
        print_json(r)
        return
    out.print(f"router {r['artifact']} ({r['kind']}, {r['artifact_id']}), last {r['since']}: "
              f"{r['requests']} request{'' if r['requests'] == 1 else 's'}, {r['routed']} routed", highlight=False)
    pol = r["policy"]
    if pol.get("kind"):
        out.print(f"policy: {pol['kind']} {pol.get('value')}" + (f" ({pol['target']})" if pol.get("target") else ""),
                  highlight=False)
    if r["routed"] == 0:
        for note in r["notes"]:
            out.print(note, highlight=False)
        return
    exp = r["expected"]
    lines = [f"{'':<22} {'realized':>10} {'expected':>10}"]
    for arm in dict.fromkeys([*r["share"], *exp["share"]]):
        lines.append(f"{arm[:22]:<22} {_pct(r['share'].get(arm, 0.0)):>10} {_pct(exp['share'].get(arm)):>10}")
    for tier in dict.fromkeys([*r["tier_share"], *exp["tier_share"]]):
        lines.append(f"{('tier ' + tier)[:22]:<22} {_pct(r['tier_share'].get(tier, 0.0)):>10} "
                     f"{_pct(exp['tier_share'].get(tier)):>10}")
    target = r["target_share"]
    lines.append(f"{'above ' + str(r['cheapest'])[:16]:<22} {_pct(r['above_cheapest']):>10} "
                 + (f"{_pct(target):>10}  (target_share)" if target is not None
                    else f"{_pct(exp.get('above_cheapest')):>10}"))
    unit = exp.get("cost_unit")
    exp_cost = exp.get("mean_cost")
    shown_cost = (money(exp_cost) if unit == "usd" and isinstance(exp_cost, (int, float))
                  else f"{exp_cost:.4g} {unit}" if isinstance(exp_cost, (int, float)) else "–")
    lines.append(f"{'mean cost / request':<22} {money(r['mean_cost_usd']):>10} {shown_cost:>10}")
    lines.append(f"{'accuracy':<22} {_num(r['accuracy']):>10} {_num(exp.get('accuracy')):>10}"
                 f"  ({r['graded']} graded)")
    lines.append(f"{'escalated':<22} {_pct(r['escalated']):>10}")
    if r["threshold"] is not None:
        lines.append(f"{'rolling threshold':<22} {_num(r['threshold'], True):>10}")
    for line in lines:
        out.print(line, highlight=False)
    for note in r["notes"]:
        out.print(f"note: {note}", highlight=False)


def router_retrain(
    data: str = typer.Option(..., "--data", help="Logged outcomes: the outcome store ('store' or a .sqlite path), or a long/wide file."),
    fmt: Optional[str] = typer.Option(None, "--format", help="wide | long | store (default: from the path)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only outcomes logged in the last 30m, 12h, 7d, ... (the outcome store)."),
    artifact: Path = typer.Option(..., "--artifact", help="The deployed router's directory (an empty one for a first install); the previous router is kept as DIR.prev."),
    min_prompts: int = typer.Option(200, "--min-prompts", min=1, help="Refuse to retrain on fewer prompts than this."),
    model: list[str] = typer.Option(["auto"], "--model", help="auto (every kind, the best by cross-validation) or one or more of logistic, mf, gbm, mlp, knn, ensemble."),
    holdout: float = typer.Option(0.2, "--holdout", min=0.01, max=0.9, help="Share of prompts held out (by a hash of the prompt) to compare the two routers."),
    cv: int = typer.Option(5, "--cv", min=2, help="Folds for the challenger's model selection."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds, the models and the bootstrap."),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples of the held-out prompts."),
    max_share: Optional[str] = typer.Option(None, "--max-share", help="Policy target, e.g. large=0.2 (default: the deployed router's target)."),
    max_mean_cost: Optional[float] = typer.Option(None, "--max-mean-cost", help="Policy target: mean cost per query at most this."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Policy target: the cheapest policy reaching this accuracy."),
    json_out: bool = JsonOpt,
) -> None:
    """Refit the router on recent logs and replace it only when the new one is better.

    The challenger trains on the recent prompts except a held-out share, both routers are scored on those held-out prompts, and the artifact is swapped atomically only when the challenger's APGR (or, for more than two arms, policy hull area) beats the deployed router's by more than the 95% bootstrap interval.
    """
    from effreason_agents.adapters.router_target import parse_since
    from router_training.models import KINDS
    from router_training.retrain import retrain
    from router_training.train import AUTO_KINDS

    try:
        cutoff = None if since is None else datetime.now(timezone.utc) - parse_since(since)
        kinds = list(AUTO_KINDS) if model == ["auto"] else list(model)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise EffReasonError(f"unknown --model {', '.join(unknown)}; choose auto or from {', '.join(KINDS)}")
        given = [x for x in (max_share, max_mean_cost, min_accuracy) if x is not None]
        if len(given) > 1:
            raise EffReasonError("give at most one target: --max-share, --max-mean-cost or --min-accuracy")
        with (err.status("retraining the router", spinner="dots") if not json_out else _Quiet()) as status:
            r = retrain(data, artifact, fmt=fmt, since=cutoff, kinds=kinds, min_prompts=min_prompts, holdout=holdout,
                        k=cv, seed=seed, n_boot=n_boot, max_share=share_target(max_share),
                        max_mean_cost=max_mean_cost, min_accuracy=min_accuracy, progress=status.update)
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        print_json(r)
        return
    for line in comparison_lines(r):
        out.print(line, highlight=False)


class _Quiet:
    """A stand-in for a spinner under --json."""

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _status: str) -> None:
        return None


def comparison_lines(r: dict[str, Any]) -> list[str]:
    """The retrain result for people: data, hold-out, both routers' scores, the interval and the decision."""
    d, h = r["data"], r["holdout"]
    lines = [f"data: {d['n_prompts']} prompts from {d['source']}; challenger trained on {d['n_train']}, "
             f"compared on {h['n']} held out ({h['share']:.0%} by prompt hash)",
             f"weak {r['weak']}, strong {r['strong']}; decided by {_METRICS.get(r['metric'], r['metric'])}"]
    rows = [("challenger", r["challenger"])] + ([("champion", r["champion"])] if r.get("champion") else [])
    lines.append(f"{'':<11} {'kind':<9} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9} {'hull':>6}")
    for name, m in rows:
        lines.append(f"{name:<11} {str(m.get('kind'))[:9]:<9} {_num(m.get('apgr')):>6} {_pct(m.get('cpt50')):>9} "
                     f"{_pct(m.get('cpt80')):>9} {_num(m.get('hull_area')):>6}")
    c = r.get("comparison")
    if c:
        lines.append(f"challenger - champion ({_METRICS.get(r['metric'], r['metric'])}): {_num(c.get('diff'), True)}, "
                     f"{c.get('level', 0.95):.0%} interval [{_num(c.get('diff_low'), True)}, "
                     f"{_num(c.get('diff_high'), True)}], P(better) {_num(c.get('p_better'))}")
    if h.get("note"):
        lines.append(f"note: {h['note']}")
    lines.append(f"{r['decision']}: {r['reason']}")
    if r.get("previous"):
        lines.append(f"previous router kept in {r['previous']}")
    return lines
