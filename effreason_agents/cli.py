"""The ``effreason`` command line."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .config import Config, load_config
from .errors import EffReasonError, InvalidQuestionError


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"effreason-agents {__version__}")
        raise typer.Exit()


app = typer.Typer(
    help="Cost-aware reasoning: answer each question with the cheapest arm that is confident enough, "
    "escalating to stronger tiers only when needed. Every attempt is logged with its tokens, cost and confidence.",
    no_args_is_help=True,
    add_completion=False,
)
log_app = typer.Typer(help="Read the outcome store.", no_args_is_help=True)
app.add_typer(log_app, name="log")


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Cost-aware reasoning for LangGraph and LangChain."""

out = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (default: $EFFREASON_CONFIG, then ./effreason.toml).")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _load(config: Optional[Path]) -> Config:
    return load_config(config)


def _money(value: str | Decimal) -> str:
    d = Decimal(value)
    return f"${d:.6f}" if d else "$0"


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
                "finish_reason": a.get("finish_reason"),
                "answer": a.get("answer"),
                "error": a.get("error"),
            }
            for a in result["attempts"]
        ],
    }


def attempts_table(result: dict[str, Any], title: str | None = None) -> Table:
    """One row per attempt; ``*`` marks the attempt whose answer was returned."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col, just in (("#", "right"), ("arm", "left"), ("tokens in/out", "right"), ("cost", "right"),
                      ("latency", "right"), ("conf", "right"), ("finish", "left"), ("answer", "left")):
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    final = result.get("final_attempt")
    for i, a in enumerate(result["attempts"]):
        conf = a.get("confidence")
        table.add_row(
            f"{i}{'*' if i == final else ''}",
            a["arm"],
            f"{a['input_tokens']}/{a['output_tokens']}",
            _money(a["cost_usd"]),
            f"{a['latency_s']:.2f}s",
            "-" if conf is None else f"{conf:.2f}",
            a.get("finish_reason") or "-",
            Text(a.get("error") or (a.get("answer") or "-")),
        )
    return table


def _models_line(result: dict[str, Any]) -> str:
    seen: dict[str, str] = {}
    for a in result["attempts"]:
        seen.setdefault(a["tier"], f"{a['model']} ({a['engine']})" if a.get("engine") else a["model"])
    return " · ".join(f"{tier} = {model}" for tier, model in seen.items())


def _fail(exc: BaseException, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code)


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Escalate while confidence is below this."),
    max_cost: Optional[str] = typer.Option(None, "--max-cost-usd", help="Dollar limit for this request."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not record the request in the outcome store."),
) -> None:
    """Answer QUESTION through the cost-aware reasoning graph and show every attempt."""
    from .graph import ask as run_ask
    from .state import ReasoningContext

    try:
        cfg = _load(config)
        ctx = ReasoningContext(confidence_threshold=threshold, max_cost_usd=max_cost, log=not no_log)
        with err.status("thinking…", spinner="dots"):
            result = run_ask(question, cfg, context=ctx)
    except InvalidQuestionError as exc:
        _fail(exc, 2)
        return
    except EffReasonError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        err.print("interrupted: nothing was logged for this request")
        raise typer.Exit(130)
    if json_out:
        print(json.dumps(result_json(result), indent=2))
        return
    out.print(f"[bold]{escape(result['answer']) if result['answer'] is not None else '(no answer)'}[/]", highlight=False)
    out.print(attempts_table(result))
    out.print(f"[dim]{_models_line(result)}[/]", highlight=False)
    out.print(
        f"status {result['status']} · difficulty {result['difficulty']} · escalated {'yes' if result['escalated'] else 'no'}"
        f" · {result['total_output_tokens']} output tokens · {_money(result['total_cost_usd'])}",
        highlight=False,
    )
    if result.get("reason"):
        out.print(f"[dim]{escape(result['reason'])}[/]", highlight=False)


@log_app.command("tail")
def log_tail(
    n: int = typer.Option(10, "-n", "--limit", min=1, help="How many requests."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Show the most recent requests in the outcome store."""
    from .outcomes import OutcomeStore

    try:
        cfg = _load(config)
        path = cfg.store.resolved_path()
        if not path.exists():
            _fail(EffReasonError(f"no outcome store at {path} yet: run `effreason ask` first"), 1)
        with OutcomeStore(path, read_only=True) as store:
            rows = store.recent_requests(n)
    except EffReasonError as exc:
        _fail(exc)
        return
    if json_out:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    table = Table(title=f"last {len(rows)} requests · {path}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("UTC", "question", "answer", "status", "n", "out", "cost"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        q = " ".join(r.question.split())
        q = q if len(q) <= 24 else q[:23] + "…"
        a = r.final_answer or "-"
        a = a if len(a) <= 10 else a[:9] + "…"
        table.add_row(r.finished_at[11:16], Text(q), Text(a), r.status,
                      f"{len(r.arms_tried)}{'↑' if r.escalated else ''}", str(r.total_output_tokens), _money(r.total_cost_usd))
    out.print(table)


@app.command("serve-local")
def serve_local_cmd(
    port: int = typer.Option(0, "--port", "-p", min=0, max=65535, help="Port to listen on (0: a free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    engine: str = typer.Option("embedded", "--engine", help="embedded (llama.cpp, CPU) or vllm (GPU)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to serve (vllm: required; embedded: a GGUF path)."),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Run a local OpenAI-compatible model server in the foreground for other processes (Ctrl-C stops it)."""
    from .embedded import serve_local

    try:
        cfg = _load(config)
        settings = cfg.embedded
        if engine == "embedded" and model:
            settings = settings.model_copy(update={"model_path": model})
        serve_local(engine=engine, model=model, host=host, port=port, settings=settings, echo=lambda s: print(s, flush=True))
    except EffReasonError as exc:
        _fail(exc)


DEMO_QUESTIONS = [
    "What is 2 + 3?",
    "What is 7 * 8?",
    "Which is larger, 0.9 or 0.11?",
    "What is 347 * 29?",
    "Tom has 3 apples. He buys 5 more, then gives half of them to Ann. How many apples does Tom have left?",
    "What is the capital of France?",
]


@app.command()
def demo(config: Optional[Path] = ConfigOpt, json_out: bool = JsonOpt) -> None:
    """Run questions of different difficulty through the graph and show arms, tokens, cost and confidence."""
    from .graph import build_reasoning_graph
    from .state import ReasoningContext

    try:
        cfg = _load(config)
        enabled = cfg.enabled_tiers()
        graph = build_reasoning_graph(cfg)
    except EffReasonError as exc:
        _fail(exc)
        return
    if not json_out:
        out.print(f"[bold]effreason demo[/] · config: {cfg.source} · outcome store: {cfg.store.resolved_path()}", highlight=False)
        for name, tier in cfg.tiers.items():
            state = "enabled" if name in enabled else "disabled (set OPENAI_API_KEY to enable)" if tier.api_key_env else "disabled"
            where = "embedded llama.cpp server on 127.0.0.1" if tier.engine == "embedded" else tier.base_url
            out.print(f"  tier [cyan]{name}[/]: {tier.model} via {tier.engine} ({where}) — {state}", highlight=False)
        out.print(f"  ladder: {' → '.join(a.name for a in cfg.usable_ladder())}", highlight=False)
    results = []
    try:
        for i, q in enumerate(DEMO_QUESTIONS, 1):
            with err.status(f"question {i}/{len(DEMO_QUESTIONS)}: {escape(q)}", spinner="dots"):
                res = graph.invoke({"question": q}, context=ReasoningContext())["result"]
            results.append(res)
            if not json_out:
                out.print()
                out.print(attempts_table(res, title=escape(f"{q}  [{res['difficulty']}]")))
                out.print(
                    f"→ answer [bold]{escape(str(res['answer']))}[/] · {res['status']} · {res['total_output_tokens']} output tokens"
                    f" · {_money(res['total_cost_usd'])}",
                    highlight=False,
                )
    except EffReasonError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: completed requests are logged, the current one is not")
        raise typer.Exit(130)
    total_cost = sum((Decimal(r["total_cost_usd"]) for r in results), Decimal(0))
    totals = {
        "questions": len(results),
        "attempts": sum(len(r["attempts"]) for r in results),
        "escalated": sum(1 for r in results if r["escalated"]),
        "total_output_tokens": sum(r["total_output_tokens"] for r in results),
        "total_input_tokens": sum(r["total_input_tokens"] for r in results),
        "total_cost_usd": float(total_cost),
    }
    if json_out:
        print(json.dumps({"results": [result_json(r) for r in results], "totals": totals}, indent=2))
        return
    out.print()
    out.print(
        f"[bold]totals[/]: {totals['questions']} questions · {totals['attempts']} attempts · {totals['escalated']} escalated · "
        f"{totals['total_input_tokens']} input + {totals['total_output_tokens']} output tokens · {_money(total_cost)}",
        highlight=False,
    )
    out.print("[dim]see them again with: effreason log tail[/]")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
