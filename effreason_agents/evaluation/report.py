"""Benchmark reports: ``results.json``, ``report.md`` and the plots, from a results dict.

A benchmark (live arms + graph, or a replay of logged outcomes) produces one
results dict; :func:`write_report` validates it, stores it as
``DIR/results.json`` and renders ``DIR/report.md`` with ``frontier.png``
(accuracy vs cost), ``tokens.png`` (output-token histograms) and ``pgr.png``
(PGR vs share of strong calls, two-arm routing only). :func:`render_report`
re-renders everything but ``results.json`` from that file alone
(``effreason report DIR``).

Every file is written to a temporary file in ``DIR`` and moved into place with
``os.replace``, so an interrupted run leaves either the old file or the new
one, never half of one. Plots use matplotlib's Agg canvas directly: no display
and no global pyplot state.

The results dict (every key not marked required is optional)::

    kind        "live" | "replay"                               (required)
    meta        suite, n_items, created_at, config_version, command,
                token_count_method, notes
    arms        {name: {accuracy, mean_output_tokens, p90_output_tokens,
                 mean_cost_usd, p50_latency_s, p90_latency_s,
                 tokens_per_correct, n, tier, strategy}}      (required, may be {})
    graph       same keys as an arm + escalation_rate, large_call_share, mean_attempts
    baselines   {"oracle"|"random": {accuracy, mean_cost_usd, mean_output_tokens,
                 apgr, cpt50, cpt80}}                          (required, may be {})
    router      {name, apgr, cpt50, cpt80}
    two_arm     {weak, strong, acc_weak, acc_strong, curves: {policy: [[c, pgr], ...]}}
    hull        {points: [[x, accuracy], ...], area, x}
    distributions {output_tokens: {name: [int, ...]}}
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from effreason_agents.adapters.atomic import write_bytes
from effreason_agents.core.money import format_usd
from effreason_agents.errors import ReportError

__all__ = [
    "ReportError",
    "pareto_front",
    "render_report",
    "write_report",
]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
FRONTIER_FILE = "frontier.png"
TOKENS_FILE = "tokens.png"
PGR_FILE = "pgr.png"

GRAPH_NAME = "graph"
_KINDS = ("live", "replay")
_POLICY_COLORS = {"random": "#888888", "oracle": "#2ca02c", "router": "#1f77b4"}


# -- public helpers ---------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The non-dominated ``(name, cost, accuracy)`` points, sorted by cost (then name).

    A point is dominated when another costs no more and is at least as accurate,
    and is strictly better in one of the two. Identical points do not dominate
    each other, so both stay. Points whose cost or accuracy is missing or not
    finite are ignored.
    """
    valid = [(str(n), float(c), float(a)) for n, c, a in points if _finite(c) and _finite(a)]
    front = [
        p for p in valid
        if not any(q[1] <= p[1] and q[2] >= p[2] and (q[1] < p[1] or q[2] > p[2]) for q in valid)
    ]
    return sorted(front, key=lambda p: (p[1], -p[2], p[0]))


# -- entry points -----------------------------------------------------------------------


def write_report(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Validate ``results``, write ``results.json`` and render the report files into ``out_dir``.

    NaN and infinite numbers become ``null``; ``Decimal`` and numpy numbers become
    plain JSON numbers. The input is not modified. Returns the paths written, keyed
    ``results``, ``report``, ``frontier``, ``tokens``, ``pgr`` (the last three only
    when there is something to plot).
    """
    clean = _sanitize(results)
    _validate(clean, where="results")
    out = _prepare_dir(out_dir)
    text = json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    results_path = out / RESULTS_FILE
    write_bytes(results_path, text.encode("utf-8"), shared=True)
    return {"results": results_path, **_render(clean, out)}


def render_report(out_dir: str | Path) -> dict[str, Path]:
    """Re-render ``report.md`` and the plots of ``out_dir`` from its ``results.json``.

    Raises :class:`ReportError` naming the path when ``results.json`` is missing,
    is not valid JSON, or lacks a required key.
    """
    out = Path(out_dir)
    path = out / RESULTS_FILE
    if not path.is_file():
        raise ReportError(
            f"no {RESULTS_FILE} at {path}: run `effreason bench --out {out}` first, "
            "or point `effreason report` at a benchmark directory"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path} is not a readable results file ({exc}); re-run the benchmark to recreate it") from exc
    _validate(data, where=str(path))
    return {"results": path, **_render(_sanitize(data), out)}


# -- validation and cleaning ------------------------------------------------------------


def _validate(results: Any, *, where: str) -> None:
    if not isinstance(results, Mapping):
        raise ReportError(f"{where}: expected a results dict (JSON object), got {type(results).__name__}")
    if "kind" not in results:
        raise ReportError(f"{where}: missing required key 'kind' (one of {', '.join(map(repr, _KINDS))})")
    if results["kind"] not in _KINDS:
        raise ReportError(f"{where}: 'kind' must be one of {', '.join(map(repr, _KINDS))}, got {results['kind']!r}")
    for key, what in (("arms", "arm name → metrics"), ("baselines", "baseline name → metrics")):
        if key not in results:
            raise ReportError(f"{where}: missing required key {key!r} (a dict of {what}; may be empty)")
        if not isinstance(results[key], Mapping):
            raise ReportError(f"{where}: {key!r} must be a dict of {what}, got {type(results[key]).__name__}")
        for name, metrics in results[key].items():
            if not isinstance(metrics, Mapping):
                raise ReportError(f"{where}: {key}[{name!r}] must be a dict of metrics, got {type(metrics).__name__}")
    for key in ("meta", "graph", "router", "two_arm", "hull", "distributions"):
        if results.get(key) is not None and not isinstance(results[key], Mapping):
            raise ReportError(f"{where}: {key!r} must be a dict, got {type(results[key]).__name__}")


def _sanitize(obj: Any) -> Any:
    """A JSON-plain deep copy: non-finite numbers → None, Decimal/numpy → numbers, tuples → lists."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, Decimal):
        return float(obj) if obj.is_finite() else None
    if isinstance(obj, Mapping):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_sanitize(v) for v in items]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return _sanitize(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    return str(obj)


def _finite(x: Any) -> bool:
    if x is None or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# -- files ------------------------------------------------------------------------------


def _prepare_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} exists and is not a directory: choose another output directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create the report directory {out}: {exc}") from exc
    return out


def _save_figure(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    write_bytes(path, buf.getvalue(), shared=True)


def _render(results: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Plots first, then ``report.md`` linking only the plots that exist; stale plots are removed."""
    out = _prepare_dir(out)
    view = _View(results)
    paths: dict[str, Path] = {}
    plots = (
        ("frontier", FRONTIER_FILE, _plot_frontier),
        ("tokens", TOKENS_FILE, _plot_tokens),
        ("pgr", PGR_FILE, _plot_pgr),
    )
    for key, name, plot in plots:
        target = out / name
        fig = plot(view)
        if fig is None:
            if target.exists():  # from an earlier render; report.md will not link it
                target.unlink()
            continue
        _save_figure(fig, target)
        paths[key] = target
    report = out / REPORT_FILE
    write_bytes(report, _markdown(view, paths).encode("utf-8"), shared=True)
    return {"report": report, **paths}


# -- a read-only view of the results ----------------------------------------------------


class _View:
    """Helpers over a validated, sanitized results dict."""

    def __init__(self, results: Mapping[str, Any]) -> None:
        self.r = results
        self.meta: Mapping[str, Any] = results.get("meta") or {}
        self.arms: Mapping[str, Mapping[str, Any]] = results.get("arms") or {}
        self.graph: Mapping[str, Any] | None = results.get("graph") or None
        self.baselines: Mapping[str, Mapping[str, Any]] = results.get("baselines") or {}
        self.two_arm: Mapping[str, Any] | None = results.get("two_arm") or None
        self.router: Mapping[str, Any] | None = results.get("router") or None
        self.hull: Mapping[str, Any] | None = results.get("hull") or None
        self.x_metric, self.x_fallback = self._choose_x()

    def measured(self) -> list[tuple[str, Mapping[str, Any]]]:
        """Fixed arms, then the graph."""
        rows = list(self.arms.items())
        if self.graph is not None:
            rows.append((GRAPH_NAME, self.graph))
        return rows

    def baseline_rows(self) -> list[tuple[str, Mapping[str, Any]]]:
        return [(n, m) for n, m in self.baselines.items() if _finite(m.get("accuracy"))]

    def _choose_x(self) -> tuple[str, bool]:
        """``mean_cost_usd`` unless no measured point has a positive cost; then mean output tokens."""
        rows = self.measured()
        if any(_finite(m.get("mean_cost_usd")) and float(m["mean_cost_usd"]) > 0 for _, m in rows):
            return "mean_cost_usd", False
        if any(_finite(m.get("mean_output_tokens")) for _, m in rows):
            return "mean_output_tokens", True
        return "mean_cost_usd", False

    def points(self) -> list[tuple[str, float, float]]:
        """``(name, x, accuracy)`` of the measured arms and the graph on the chosen x axis."""
        return [
            (n, float(m[self.x_metric]), float(m["accuracy"]))
            for n, m in self.measured()
            if _finite(m.get(self.x_metric)) and _finite(m.get("accuracy"))
        ]

    def x_label(self) -> str:
        if self.x_metric == "mean_cost_usd":
            return "mean cost per query (USD)"
        return "mean output tokens per query (every arm costs $0, so tokens stand in for cost)"

    def n_items(self) -> Any:
        n = self.meta.get("n_items")
        if n is None:
            ns = [m.get("n") for _, m in self.measured() if isinstance(m.get("n"), int)]
            n = max(ns) if ns else None
        return n

    def routing_policies(self) -> list[tuple[str, Mapping[str, Any]]]:
        """Random, oracle and the router, for those that carry APGR / CPT figures."""
        keys = ("apgr", "cpt50", "cpt80")
        rows = [(n, self.baselines.get(n) or {}) for n in ("random", "oracle")]
        rows = [(n, m) for n, m in rows if any(k in m for k in keys)]
        if self.router is not None:
            rows.append(("router", self.router))
        return rows

    def curves(self) -> dict[str, list[tuple[float, float]]]:
        raw = (self.two_arm or {}).get("curves") or {}
        curves: dict[str, list[tuple[float, float]]] = {}
        if not isinstance(raw, Mapping):
            return curves
        for name, pts in raw.items():
            if not isinstance(pts, Sequence):
                continue
            clean = [
                (float(p[0]), float(p[1]))
                for p in pts
                if isinstance(p, Sequence) and len(p) >= 2 and _finite(p[0]) and _finite(p[1])
            ]
            if clean:
                curves[str(name)] = sorted(clean)
        return curves

    def distributions(self) -> list[tuple[str, list[float]]]:
        raw = ((self.r.get("distributions") or {}).get("output_tokens")) or {}
        if not isinstance(raw, Mapping):
            return []
        order = [n for n, _ in self.measured()]
        names = [n for n in order if n in raw] + [n for n in raw if n not in order]
        out = []
        for name in names:
            vals = raw[name]
            if isinstance(vals, Sequence) and not isinstance(vals, str):
                nums = [float(v) for v in vals if _finite(v)]
                if nums:
                    out.append((name, nums))
        return out


# -- formatting -------------------------------------------------------------------------


def _pct(x: Any, digits: int = 1) -> str:
    return f"{float(x) * 100:.{digits}f}%" if _finite(x) else "—"


def _num(x: Any, digits: int = 1) -> str:
    if not _finite(x):
        return "—"
    x = float(x)
    return f"{x:,.0f}" if x.is_integer() and digits <= 1 and abs(x) >= 1000 else f"{x:,.{digits}f}"


def _secs(x: Any) -> str:
    if not _finite(x):
        return "—"
    x = float(x)
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def _int(x: Any) -> str:
    return str(int(x)) if _finite(x) else "—"


def _code(name: Any) -> str:
    """An arm name as inline code, safe inside a table cell."""
    s = str(name).replace("|", "\\|").replace("`", "'")
    return f"`{s}`"


def _text(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _x_value(view: _View, m: Mapping[str, Any]) -> str:
    v = m.get(view.x_metric)
    return format_usd(v, symbol=True) if view.x_metric == "mean_cost_usd" else f"{_num(v)} tokens"


# -- report.md --------------------------------------------------------------------------


def _markdown(view: _View, plots: Mapping[str, Path]) -> str:
    meta = view.meta
    kind = view.r["kind"]
    suite = meta.get("suite")
    n = view.n_items()
    title_bits = [("Live benchmark" if kind == "live" else "Replay of logged outcomes")]
    if suite:
        title_bits.append(f"`{_text(suite)}`")
    if n is not None:
        title_bits.append(f"{n} items")
    if meta.get("created_at"):
        title_bits.append(_text(meta["created_at"]))
    lines = [f"# {' · '.join(title_bits)}", ""]

    facts = []
    if meta.get("config_version"):
        facts.append(f"config `{_text(meta['config_version'])}`")
    if meta.get("token_count_method"):
        facts.append(f"tokens: {_text(meta['token_count_method'])}")
    if facts:
        lines += [" · ".join(facts), ""]

    lines += _arms_section(view, plots)
    lines += _graph_section(view)
    lines += _routing_section(view, plots)
    lines += _hull_section(view)
    lines += _confidence_section(view)
    lines += _tokens_section(view, plots)
    lines += _notes_section(view, plots)

    if meta.get("command"):
        lines += ["## Reproduce", "", "```sh", str(meta["command"]), "```", ""]
    lines += [f"<sub>Written by effreason-agents from `{RESULTS_FILE}`; "
              f"re-render with `effreason report DIR`.</sub>", ""]
    return "\n".join(lines)


def _arms_section(view: _View, plots: Mapping[str, Path]) -> list[str]:
    lines = ["## Arms and the graph", ""]
    rows = view.measured()
    baselines = view.baseline_rows()
    if not rows and not baselines:
        return lines + ["No arm was measured.", ""]
    header = ["arm", "tier", "strategy", "accuracy", "mean out tokens", "p90 out tokens",
              "mean cost / query", "p50 latency", "p90 latency", "tokens / correct", "n"]
    lines += ["| " + " | ".join(header) + " |",
              "| :-- | :-- | :-- | " + " | ".join(["--:"] * (len(header) - 3)) + " |"]

    def row(label: str, m: Mapping[str, Any]) -> str:
        cells = [
            label, _text(m.get("tier") or "—"), _text(m.get("strategy") or "—"),
            _pct(m.get("accuracy")), _num(m.get("mean_output_tokens")), _num(m.get("p90_output_tokens"), 0),
            format_usd(m.get("mean_cost_usd"), symbol=True), _secs(m.get("p50_latency_s")), _secs(m.get("p90_latency_s")),
            _num(m.get("tokens_per_correct")), _int(m.get("n")),
        ]
        return "| " + " | ".join(cells) + " |"

    for name, m in rows:
        label = f"**{_code(name)}** (cost-aware)" if (name == GRAPH_NAME and m is view.graph) else _code(name)
        lines.append(row(label, m))
    for name, m in baselines:
        lines.append(row(f"*{_text(name)}* (baseline)", {**m, "tier": None, "strategy": None}))
    lines.append("")
    explain = []
    if any(n == "oracle" for n, _ in baselines):
        explain.append("*oracle* answers each item with the cheapest arm that got it right")
    if any(n == "random" for n, _ in baselines):
        explain.append("*random* picks an arm at random per item")
    if explain:
        lines += ["Baselines: " + "; ".join(explain) + ".", ""]

    front = pareto_front(view.points())
    if front:
        names = ", ".join(_code(n) for n, _, _ in front)
        axis = "cost" if view.x_metric == "mean_cost_usd" else "output tokens"
        lines += [f"On the {axis}–accuracy Pareto front (nothing else is both cheaper and more accurate): {names}.", ""]
    if "frontier" in plots:
        lines += [f"![Accuracy vs {'cost' if view.x_metric == 'mean_cost_usd' else 'output tokens'}]({FRONTIER_FILE})", ""]
        if view.x_fallback:
            lines += ["Every arm costs $0 here (the embedded local model is free), so the plot puts accuracy "
                      "against mean output tokens instead of cost.", ""]
    return lines


def _graph_section(view: _View) -> list[str]:
    g = view.graph
    if g is None:
        return []
    lines = ["## The cost-aware graph", ""]
    if "escalation_rate" in g:
        lines.append(f"- escalation rate: **{_pct(g.get('escalation_rate'))}** of queries went past their first arm")
    if "large_call_share" in g:
        lines.append(f"- large-tier call share: **{_pct(g.get('large_call_share'))}** of model calls went to the large tier")
    if "mean_attempts" in g:
        lines.append(f"- mean attempts per query: **{_num(g.get('mean_attempts'), 2)}**")
    best = [(n, m) for n, m in view.arms.items() if _finite(m.get("accuracy"))]
    if best and _finite(g.get("accuracy")):
        bname, bm = max(best, key=lambda nm: (float(nm[1]["accuracy"]), -float(nm[1].get(view.x_metric) or 0)))
        gx, bx = g.get(view.x_metric), bm.get(view.x_metric)
        sentence = (f"- against the most accurate fixed arm {_code(bname)} ({_pct(bm['accuracy'])}): "
                    f"the graph reaches {_pct(g['accuracy'])}")
        if _finite(gx) and _finite(bx) and float(bx) > 0:
            what = "its mean cost" if view.x_metric == "mean_cost_usd" else "its mean output tokens"
            sentence += f" at {float(gx) / float(bx):.0%} of {what}"
        lines.append(sentence)
    return lines + [""]


def _routing_section(view: _View, plots: Mapping[str, Path]) -> list[str]:
    policies = view.routing_policies()
    two = view.two_arm
    if not policies and two is None:
        return []
    lines = ["## Routing between two arms", ""]
    if two is not None:
        weak, strong = two.get("weak", "weak"), two.get("strong", "strong")
        lines += [f"Weak arm {_code(weak)} (accuracy {_pct(two.get('acc_weak'))}) → strong arm {_code(strong)} "
                  f"(accuracy {_pct(two.get('acc_strong'))}).", ""]
    lines += ["PGR (performance gap recovered) = (accuracy − weak accuracy) / (strong accuracy − weak accuracy) "
              "at a given share of calls sent to the strong arm. APGR is the area under PGR over that share "
              "(random routing: 0.5); CPT(x%) is the smallest share of strong calls that reaches PGR x% "
              "(lower is better).", ""]
    if policies:
        lines += ["| policy | APGR | CPT(50%) | CPT(80%) |", "| :-- | --: | --: | --: |"]
        for name, m in policies:
            label = f"router {_code(m['name'])}" if name == "router" and m.get("name") else _text(name)
            apgr = f"{float(m['apgr']):.3f}" if _finite(m.get("apgr")) else "—"
            lines.append(f"| {label} | {apgr} | {_pct(m.get('cpt50'))} | {_pct(m.get('cpt80'))} |")
        lines += ["", "CPT is a percentage of calls sent to the strong arm; — means the policy never reaches it.", ""]
    if "pgr" in plots:
        lines += [f"![PGR vs share of strong calls]({PGR_FILE})", ""]
    return lines


def _hull_section(view: _View) -> list[str]:
    h = view.hull
    if h is None or not _finite(h.get("area")):
        return []
    x = h.get("x") or "mean_cost_usd"
    axis = "mean cost per query" if x == "mean_cost_usd" else "mean output tokens" if x == "mean_output_tokens" else str(x)
    lines = ["## Cost–accuracy hull", "",
             f"Area under the non-decreasing convex hull of (x, accuracy) over the arms, divided by the x range "
             f"(RouterBench's AIQ; x = {axis}): **{float(h['area']):.3f}**.", ""]
    pts = h.get("points") or []
    pts = [p for p in pts if isinstance(p, Sequence) and len(p) >= 2 and _finite(p[0]) and _finite(p[1])]
    if pts:
        fmt = (lambda v: format_usd(v, symbol=True)) if x == "mean_cost_usd" else (lambda v: f"{_num(v)} tokens")
        lines += ["Hull points: " + ", ".join(f"({fmt(p[0])}, {_pct(p[1])})" for p in pts) + ".", ""]
    return lines


def _confidence_section(view: _View) -> list[str]:
    rows = [(name, m["confidence"]) for name, m in view.r["arms"].items() if isinstance(m.get("confidence"), Mapping)]
    if not rows:
        return []
    lines = ["## Confidence", "",
             "How well each arm's confidence separates right from wrong answers (what the graph escalates on): "
             "AUROC against correctness, Brier score, expected calibration error (10 bins).", "",
             "| arm | answers with a confidence | AUROC | Brier | ECE | confidence |", "|---|---|---|---|---|---|"]
    for name, c in rows:
        methods = ", ".join(_text(m) for m in c.get("methods") or []) or "–"
        lines.append(f"| {_code(name)} | {_int(c.get('n'))} | {_num(c.get('auroc'), 3)} | {_num(c.get('brier'), 3)} | "
                     f"{_num(c.get('ece'), 3)} | {methods} |")
    sc = [(name, m["samples"]) for name, m in view.r["arms"].items() if isinstance(m.get("samples"), Mapping)]
    if sc:
        lines += ["", "Self-consistency arms (samples drawn until the majority settled):", "",
                  "| arm | mean samples drawn | cap | stopped before the cap |", "|---|---|---|---|"]
        for name, smp in sc:
            lines.append(f"| {_code(name)} | {_num(smp.get('mean_drawn'), 2)} | {_int(smp.get('cap'))} | "
                         f"{_pct(smp.get('stopped_early'))} |")
    return lines + [""]


def _tokens_section(view: _View, plots: Mapping[str, Path]) -> list[str]:
    lines = ["## Output tokens per item", ""]
    if "tokens" in plots:
        return lines + [f"![Output tokens per item]({TOKENS_FILE})", ""]
    return lines + ["No per-item token counts in the results (`distributions.output_tokens`), so no histogram.", ""]


def _notes_section(view: _View, plots: Mapping[str, Path]) -> list[str]:
    notes = [str(n) for n in (view.meta.get("notes") or []) if str(n).strip()]
    if view.meta.get("token_count_method"):
        notes.append(f"Output tokens are counted as: {view.meta['token_count_method']}.")
    if view.x_fallback and "frontier" in plots:
        notes.append("All costs are $0, so the frontier uses mean output tokens on the x axis.")
    if "frontier" not in plots:
        notes.append("No arm has both an accuracy and a cost or token figure, so there is no frontier plot.")
    if not notes:
        return []
    return ["## Notes", "", *[f"- {_text(n)}" for n in notes], ""]


# -- plots ------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _plot_frontier(view: _View) -> Any:
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    pts = view.points()
    base = [
        (n, float(m[view.x_metric]), float(m["accuracy"]))
        for n, m in view.baseline_rows()
        if _finite(m.get(view.x_metric))
    ]
    if not pts and not base:
        return None
    fig = _new_figure(8, 5.2)
    ax = fig.add_subplot()
    arms = [p for p in pts if not (p[0] == GRAPH_NAME and view.graph is not None)]
    graph = [p for p in pts if p[0] == GRAPH_NAME and view.graph is not None]

    front = pareto_front(pts)
    all_x = [p[1] for p in pts + base]
    x_max = max(all_x)
    if len(front) >= 1:
        xs = [p[1] for p in front] + [max(x_max, front[-1][1])]
        ys = [p[2] for p in front] + [front[-1][2]]
        ax.step(xs, ys, where="post", color="#ff7f0e", lw=1.8, alpha=0.8, zorder=1, label="Pareto front")
    if arms:
        ax.scatter([p[1] for p in arms], [p[2] for p in arms], s=55, color="#1f77b4", zorder=3, label="fixed arm")
    if graph:
        ax.scatter([p[1] for p in graph], [p[2] for p in graph], s=260, marker="*", color="#d62728",
                   edgecolor="black", linewidth=0.6, zorder=4, label="cost-aware graph")
    styles = {"oracle": dict(marker="D", facecolor="none", edgecolor="#2ca02c", s=70, linewidth=1.6),
              "random": dict(marker="X", color="#888888", s=60)}
    for n, x, y in base:
        style = styles.get(n, dict(marker="P", color="#9467bd", s=60))
        ax.scatter([x], [y], zorder=3, label=n if n != "oracle" else "oracle (cheapest right arm per item)", **style)

    labelled = sorted(pts + base, key=lambda p: (p[1], p[2]))
    for i, (n, x, y) in enumerate(labelled):
        dy = 9 if i % 2 == 0 else -14
        ax.annotate(n, (x, y), xytext=(6, dy), textcoords="offset points", fontsize=8.5,
                    fontweight="bold" if n == GRAPH_NAME else "normal", zorder=5)

    accs = [p[2] for p in pts + base]
    lo, hi = min(accs), max(accs)
    ax.set_ylim(max(0.0, lo - 0.1) if lo > 0.1 else -0.03, min(1.0, hi + 0.1) + 0.03)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if view.x_metric == "mean_cost_usd":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_usd(v, symbol=True) if v >= 0 else ""))
    x_lo = min(0.0, min(all_x))
    span = (x_max - x_lo) or (abs(x_max) or 1.0)
    ax.set_xlim(x_lo - 0.04 * span, x_max + 0.2 * span)  # room on the right for labels
    ax.set_xlabel(view.x_label())
    ax.set_ylabel("accuracy")
    suite = view.meta.get("suite")
    ax.set_title(f"Accuracy vs {'cost' if view.x_metric == 'mean_cost_usd' else 'output tokens'}"
                 + (f" — {suite}" if suite else "") + (f" ({view.n_items()} items)" if view.n_items() else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8.5, framealpha=0.9)
    return fig


def _plot_tokens(view: _View) -> Any:
    import numpy as np

    series = view.distributions()
    if not series:
        return None
    values = [v for _, vals in series for v in vals]
    lo, hi = min(values), max(values)
    if hi - lo <= 60:
        bins = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5, max(1, math.ceil((hi - lo + 1) / 30)))
    else:
        bins = np.linspace(lo, hi, 41)
    fig = _new_figure(8, 1.2 + 1.45 * len(series))
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, vals) in zip(axes, series):
        is_graph = name == GRAPH_NAME and view.graph is not None
        color = "#d62728" if is_graph else "#1f77b4"
        ax.hist(vals, bins=bins, color=color, alpha=0.85, edgecolor="white", linewidth=0.4)
        mean = float(np.mean(vals))
        p90 = float(np.percentile(vals, 90))
        ax.axvline(mean, color="black", lw=1, ls="--")
        ax.set_title(f"{name} — mean {mean:.1f}, p90 {p90:.0f}, n {len(vals)}", loc="left", fontsize=9,
                     fontweight="bold" if is_graph else "normal")
        ax.set_ylabel("items", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1].set_xlabel("output tokens per item (dashed: mean)")
    fig.suptitle("Output tokens per item", fontsize=11)
    return fig


def _plot_pgr(view: _View) -> Any:
    from matplotlib.ticker import PercentFormatter

    curves = view.curves()
    if not curves:
        return None
    fig = _new_figure(7, 4.8)
    ax = fig.add_subplot()
    metrics = dict(view.routing_policies())
    router_name = (view.router or {}).get("name")
    for name, pts in curves.items():
        label = f"router {router_name}" if name == "router" and router_name else name
        apgr = (metrics.get(name) or {}).get("apgr")
        if _finite(apgr):
            label += f" (APGR {float(apgr):.3f})"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label,
                color=_POLICY_COLORS.get(name), lw=2 if name == "router" else 1.6,
                ls="--" if name == "random" else "-", marker="o" if len(pts) <= 25 else None, ms=3)
    for level in (0.5, 0.8):
        ax.axhline(level, color="#bbbbbb", lw=0.8, ls=":", zorder=0)
        ax.annotate(f"PGR {level:.0%}", (0.0, level), xytext=(2, 2), textcoords="offset points",
                    fontsize=7.5, color="#777777")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, 1)
    two = view.two_arm or {}
    ax.set_xlabel(f"share of calls sent to the strong arm ({two.get('strong', 'strong')})")
    ax.set_ylabel("PGR (performance gap recovered)")
    ax.set_title(f"Routing {two.get('weak', 'weak')} → {two.get('strong', 'strong')}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8.5)
    return fig
