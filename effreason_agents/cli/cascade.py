"""``effreason router cascade``: how well a cascade scorer (judging the cheap arm's answer
after it is in) recovers the strong arm's accuracy, next to pre-routing (deciding from
the question alone), and the scorer artifact that ``escalation.scorer`` loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from effreason_agents.cli.options import JsonOpt
from effreason_agents.cli.render import fail, out, print_json, progress
from effreason_agents.errors import EffReasonError

__all__ = ["cascade_lines", "router_cascade"]


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) else "–"


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "–"


def _interval(m: dict[str, Any]) -> str:
    iv = m.get("interval") or {}
    if not isinstance(iv.get("low"), (int, float)):
        return ""
    return f"[{iv['low']:.3f}, {iv['high']:.3f}]"


def _prices(values: list[str]) -> dict[str, float]:
    prices: dict[str, float] = {}
    for v in values:
        arm, sep, num = v.rpartition("=")
        try:
            price = float(num)
        except ValueError:
            price = -1.0
        if not sep or not arm or price < 0:
            raise EffReasonError(f"--price must look like ARM=USD_PER_1M_OUTPUT_TOKENS, e.g. small:cot=0.6; got {v!r}")
        prices[arm] = price
    return prices


def cascade_lines(r: dict[str, Any]) -> list[str]:
    """The report of :func:`router_training.cascade.cascade_report` as text lines (80 columns)."""
    cas, pre = r["cascade"], r["pre_routing"]
    level = (cas.get("interval") or {}).get("level", 0.95)
    lines = [
        f"weak   {r['weak']} ({_pct(r.get('acc_weak'))} right)",
        f"strong {r['strong']} ({_pct(r.get('acc_strong'))} right)",
        "",
        f"{'policy':<12} {'APGR':>6}  {f'{level:.0%} interval':<16} {'CPT(50%)':>8} {'CPT(80%)':>8} {'AUC':>6}",
    ]
    for name, m in (("cascade", cas), ("pre-routing", pre)):
        lines.append(f"{name:<12} {_num(m.get('apgr')):>6}  {_interval(m):<16} {_pct(m.get('cpt50')):>8} "
                     f"{_pct(m.get('cpt80')):>8} {_num(m.get('auc')):>6}")
    for name, b in (r.get("baselines") or {}).items():
        lines.append(f"{name:<12} {_num(b.get('apgr')):>6}  {'':<16} {_pct(b.get('cpt50')):>8} {_pct(b.get('cpt80')):>8}")
    vs = cas.get("vs_pre_routing")
    if isinstance(vs, dict) and isinstance(vs.get("diff_low"), (int, float)):
        lines.append(f"cascade - pre-routing: APGR {vs['diff']:+.3f} [{vs['diff_low']:+.3f}, {vs['diff_high']:+.3f}], "
                     f"better in {vs['p_better']:.0%} of resamples")
    if r.get("cost_unit"):
        lines.append("")
        lines.append(f"cost as a share of always-strong ({r['cost_unit']}); always-weak {_pct(r.get('always_weak_cost'))}:")
        for name, m in (("cascade", cas), ("pre-routing", pre)):
            c = m.get("cost") or {}
            lines.append(f"  {name:<12} {_pct(c.get('at_cpt50'))} at CPT(50%), {_pct(c.get('at_cpt80'))} at CPT(80%)")
        lines.append("  (the cascade pays every cheap call, plus the strong calls it escalates)")
    folds = r.get("folds") or []
    if folds:
        picks = [f"C {f['C']:g}/text {f['text_weight']:g}" if f.get("C") is not None else "constant" for f in folds]
        lines.append("scorer per fold (C / text weight):")
        for i in range(0, len(picks), 4):
            lines.append("  " + ", ".join(picks[i:i + 4]))
    return lines


def router_cascade(
    data: str = typer.Option(..., "--data", help="Graded outcomes with the cheap arm's replies: a RouteLLM wide CSV with '<model>_response' columns, or the outcome store ('store' or a .sqlite path)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="wide | long | store (default: from the file)."),
    weak: Optional[str] = typer.Option(None, "--weak", help="The cheap arm / model id whose answers are judged (default: the cheapest)."),
    strong: Optional[str] = typer.Option(None, "--strong", help="The arm escalations go to (default: the most accurate other one)."),
    cv: int = typer.Option(5, "--cv", min=2, help="Folds, split by prompt."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds, the models and the bootstrap."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals of APGR (0: none)."),
    price: Optional[list[str]] = typer.Option(None, "--price", help="USD per 1M output tokens of an arm, ARM=PRICE (repeatable; both arms): costs in dollars instead of tokens."),
    applies_to: Optional[list[str]] = typer.Option(None, "--applies-to", help="With --out: the arm, tier or model names the scorer judges at run time (repeatable; default: the weak arm)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Also fit the scorer on every prompt and write the artifact here."),
    json_out: bool = JsonOpt,
) -> None:
    """Cross-validated cascade scorer vs pre-routing, with bootstrap intervals.

    The scorer predicts whether the cheap arm's answer is right from the question and the reply (answer form, hedging, the reply's own arithmetic checked, its words); the cascade escalates the least likely first. Pre-routing is the question-only logistic router on the same folds. With --out, the fitted scorer is saved; use it with escalation.scorer = "DIR" in the configuration.
    """
    from router_training.cascade import cascade_report, load_cascade_data, train_scorer, with_prices

    try:
        cdata = load_cascade_data(data, fmt, weak=weak, strong=strong)
        if price:
            cdata = with_prices(cdata, _prices(price))
        with progress(json_out) as bar:
            task = bar.add_task("cascade", total=2 * cv)
            report = cascade_report(
                cdata, k=cv, seed=seed, n_boot=bootstrap,
                on_progress=lambda what, done, total: bar.update(task, completed=done, total=total, description=what))
            artifact = None
            if out_dir is not None:
                bar.update(task, description="fitting the scorer on every prompt")
                artifact = train_scorer(cdata, out_dir, report=report, seed=seed, applies_to=applies_to)
    except EffReasonError as exc:
        fail(exc)
    if json_out:
        doc = {k: v for k, v in report.items() if k != "oof"}
        for name in ("cascade", "pre_routing"):
            m = dict(doc[name])
            m.pop("curve", None)
            if isinstance(m.get("cost"), dict):
                m["cost"] = {k: v for k, v in m["cost"].items() if k != "curve"}
            doc[name] = m
        doc["baselines"] = {n: {k: v for k, v in b.items() if k != "curve"} for n, b in doc["baselines"].items()}
        doc["artifact"] = None if artifact is None else str(artifact)
        print_json(doc)
        return
    out.print(f"cascade scorer vs pre-routing, {cv}-fold CV by prompt, n = {report['n']} ({report['seconds']:.0f} s)",
              highlight=False)
    for line in cascade_lines(report):
        out.print(line, highlight=False)
    if report["cascade"].get("interval"):
        out.print(f"intervals: percentile bootstrap, {bootstrap} resamples of the {report['n']} prompts "
                  f"(seed {seed});", highlight=False)
        out.print("the difference is paired (both orderings scored on each resample)", highlight=False)
    for note in report.get("notes") or []:
        out.print(f"note: {note}", highlight=False)
    if artifact is not None:
        out.print(f"artifact: {artifact}", highlight=False)
        out.print("use it: escalation.scorer = that directory (scorer_mode: replace | combine)",
                  highlight=False)
