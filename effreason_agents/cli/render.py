"""Output helpers of the ``effreason`` command: consoles, money, JSON, errors, progress
bars and the tables shared by several commands.

Everything a command prints for people goes through :data:`out` (stdout) or :data:`err`
(stderr: errors, warnings, progress), so ``--json`` output on stdout stays parseable.
Dollar amounts are formatted by :func:`effreason_agents.core.money.format_usd` only.
"""

from __future__ import annotations

import json
from decimal import Decimal
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from effreason_agents.core.money import format_usd

__all__ = [
    "attempts_table",
    "comparison_table",
    "confidence_lines",
    "err",
    "fail",
    "models_line",
    "money",
    "out",
    "print_json",
    "print_results",
    "progress",
    "requests_table",
    "result_json",
    "table",
]

out = Console()
err = Console(stderr=True)


def money(amount: Any) -> str:
    """A dollar amount for people (``$0``, ``$0.000123``, ``$0.0040``, ``$1.50``)."""
    return format_usd(amount, symbol=True)


def print_json(doc: Any, *, indent: int | None = 2, flush: bool = False) -> None:
    """Print ``doc`` as JSON on stdout (values JSON does not know, such as paths, as strings)."""
    print(json.dumps(doc, indent=indent, default=str), flush=flush)


def fail(exc: BaseException | str, code: int = 1) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr (no traceback; the terminal wraps it, so paths in
    it can be copied) and exit with ``code``."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # paths stay whole
    raise typer.Exit(code)


def table(title: str | None = None) -> Table:
    """An empty table in the commands' style: a header rule, one space between columns,
    so that tables fit 80 columns."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)


def progress(json_out: bool) -> Progress:
    """A progress bar on stderr (counted items, elapsed time); it clears itself under ``--json``."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=json_out,
    )


# -- one answered question (ask) --------------------------------------------


def result_json(result: dict[str, Any]) -> dict[str, Any]:
    """The ``ask --json`` document for a graph result."""
    return {
        "answer": result["answer"],
        "status": result["status"],
        "escalated": result["escalated"],
        "difficulty": result["difficulty"],
        "total_cost_usd": float(Decimal(result["total_cost_usd"])),
        "total_input_tokens": result["total_input_tokens"],
        "total_output_tokens": result["total_output_tokens"],
        "request_id": result["request_id"],
        "attempts": [
            {
                "arm": a["arm"],
                "tier": a["tier"],
                "model": a["model"],
                "strategy": a["strategy"],
                "input_tokens": a["input_tokens"],
                "output_tokens": a["output_tokens"],
                "cost_usd": float(Decimal(a["cost_usd"])),
                "latency_s": a["latency_s"],
                "confidence": a.get("confidence"),
                "confidence_method": a.get("confidence_method"),
                "threshold": a.get("threshold"),
                "samples": a.get("samples"),
                "samples_cap": a.get("samples_cap"),
                "finish_reason": a.get("finish_reason"),
                "answer": a.get("answer"),
                "truncated": a.get("truncated", False),
                "budget_tokens": a.get("budget_tokens"),
                "budget_method": a.get("budget_method"),
                "error": a.get("error"),
            }
            for a in result["attempts"]
        ],
    }


def attempts_table(result: dict[str, Any], title: str | None = None) -> Table:
    """One row per attempt; ``*`` marks the attempt whose answer was returned."""
    t = table(title)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("arm", overflow="fold", min_width=12)  # long tier names wrap; numbers never do
    for col in ("tok in/out", "cost", "latency", "conf"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("finish", no_wrap=True)
    t.add_column("answer", overflow="fold", min_width=10)
    final = result.get("final_attempt")
    for i, a in enumerate(result["attempts"]):
        conf = a.get("confidence")
        t.add_row(
            f"{i}{'*' if i == final else ''}",
            a["arm"],
            f"{a['input_tokens']}/{a['output_tokens']}",
            money(a["cost_usd"]),
            f"{a['latency_s']:.2f}s",
            "-" if conf is None else f"{conf:.2f}",
            a.get("finish_reason") or "-",
            Text(a.get("error") or (a.get("answer") or "-")),
        )
    return t


def models_line(result: dict[str, Any]) -> str:
    """``tier = model (engine)`` for each tier the attempts used, in order of first use."""
    seen: dict[str, str] = {}
    for a in result["attempts"]:
        seen.setdefault(a["tier"], f"{a['model']} ({a['engine']})" if a.get("engine") else a["model"])
    return " · ".join(f"{tier} = {model}" for tier, model in seen.items())


def confidence_lines(result: dict[str, Any]) -> list[str]:
    """How each attempt's confidence was computed, and what an sc arm drew."""
    lines = []
    for i, a in enumerate(result["attempts"]):
        if a.get("confidence_method"):
            t = a.get("threshold")
            lines.append(f"#{i} confidence: {a['confidence_method']}" + (f" · threshold {t:.2f}" if t is not None else ""))
        if a.get("samples_cap"):
            lines.append(f"#{i} samples: {len(a.get('samples') or [])} drawn of at most {a['samples_cap']}")
    return lines


# -- the outcome store (log) ------------------------------------------------


def requests_table(rows: Sequence[Any], title: str | None = None) -> Table:
    """Logged requests (``RequestRecord``), newest first: time (UTC), question and answer
    (shortened), status, arms tried (``↑``: escalated), output tokens and cost."""
    t = table(title)
    for col in ("UTC", "question", "answer", "status", "n", "out", "cost"):
        # question and answer give up width first (cut with "…"); the other columns never do
        t.add_column(col, no_wrap=col not in ("question", "answer"), justify="right" if col in ("n", "out", "cost") else "left")
    for r in rows:
        q = " ".join(r.question.split())
        q = q if len(q) <= 24 else q[:23] + "…"
        a = r.final_answer or "-"
        a = a if len(a) <= 10 else a[:9] + "…"
        t.add_row(r.finished_at[11:16], Text(q, no_wrap=True, overflow="ellipsis"),
                  Text(a, no_wrap=True, overflow="ellipsis"), r.status,
                  f"{len(r.arms_tried)}{'↑' if r.escalated else ''}", str(r.total_output_tokens), money(r.total_cost_usd))
    return t


# -- benchmark results (bench, demo) ----------------------------------------


def comparison_table(results: dict[str, Any], title: str | None = None) -> Table:
    """Arms, the graph and the baselines side by side."""
    from effreason_agents.evaluation.bench import comparison_rows

    t = table(title)
    for col in ("arm", "acc", "out tok", "p90", "$/query", "p50 s", "tok/ok", "esc"):
        if col == "arm":  # long tier names wrap; numbers never do
            t.add_column(col, overflow="fold", min_width=12)
        else:
            t.add_column(col, justify="right", no_wrap=True)
    for r in comparison_rows(results):
        def fmt(key: str, spec: str) -> str:
            v = r.get(key)
            return "-" if v is None else format(v, spec)

        t.add_row(
            Text(r["name"]), fmt("accuracy", ".2f"), fmt("mean_output_tokens", ".1f"), fmt("p90_output_tokens", ".0f"),
            money(r.get("mean_cost_usd") or 0), fmt("p50_latency_s", ".2f"), fmt("tokens_per_correct", ".0f"),
            fmt("escalation_rate", ".0%"),
        )
    return t


def print_results(results: dict[str, Any], json_out: bool) -> None:
    """Print a benchmark or replay result: JSON, or the comparison table, the two-arm routing
    metrics, the notes and the paths of the files written (``results["_paths"]``)."""
    paths = results.pop("_paths", {})
    if json_out:
        print_json(results)
        return
    meta = results.get("meta", {})
    out.print(comparison_table(results, title=f"{results['kind']} · {meta.get('suite')} · {meta.get('n_items')} items"))
    if "two_arm" in results:
        two = results["two_arm"]
        t = table(f"routing {two['weak']} → {two['strong']} (share of calls to the strong arm)")
        for col in ("policy", "APGR", "CPT(50%)", "CPT(80%)"):
            t.add_column(col, justify="left" if col == "policy" else "right")
        policies = {"random": results["baselines"].get("random", {}), "oracle": results["baselines"].get("oracle", {})}
        if "router" in results:
            policies[results["router"].get("name", "router")] = results["router"]
        for name, m in policies.items():
            def pct(v: Any) -> str:
                return "—" if v is None else f"{v:.1%}"

            apgr = m.get("apgr")
            t.add_row(Text(name), "—" if apgr is None else f"{apgr:.3f}", pct(m.get("cpt50")), pct(m.get("cpt80")))
        out.print(t)
    for note in meta.get("notes", []):
        out.print(f"[dim]note: {escape(note)}[/]", highlight=False)
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", highlight=False)
