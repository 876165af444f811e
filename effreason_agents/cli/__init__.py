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

from effreason_agents.config import Config, load_config
from effreason_agents.errors import EffReasonError, InvalidQuestionError


def _version(value: bool) -> None:
    if value:
        from effreason_agents import __version__

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
LimitOpt = typer.Option(None, "--limit", min=1, help="Only the first N items.")
ConcurrencyOpt = typer.Option(2, "--concurrency", "-j", min=1, help="Items in flight at once.")
ForceOpt = typer.Option(False, "--force", help="Continue a run in --out even though the config changed.")
OnErrorOpt = typer.Option("skip", "--on-error", help="Malformed dataset lines: skip (reported) or refuse.")


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
    from effreason_agents.graph.builder import ask as run_ask
    from effreason_agents.graph.state import ReasoningContext

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
    for line in confidence_lines(result):
        out.print(Text(line, style="dim"))


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


@log_app.command("tail")
def log_tail(
    n: int = typer.Option(10, "-n", "--limit", min=1, help="How many requests."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Show the most recent requests in the outcome store."""
    from effreason_agents.adapters.store import OutcomeStore

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
    from effreason_agents.adapters.embedded import serve_local

    try:
        cfg = _load(config)
        settings = cfg.embedded
        if engine == "embedded" and model:
            settings = settings.model_copy(update={"model_path": model})
        serve_local(engine=engine, model=model, host=host, port=port, settings=settings, echo=lambda s: print(s, flush=True))
    except EffReasonError as exc:
        _fail(exc)


def comparison_table(results: dict[str, Any], title: str | None = None) -> Table:
    """Arms, the graph and the baselines side by side."""
    from effreason_agents.evaluation.bench import comparison_rows

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("arm", "acc", "out tok", "p90", "$/query", "p50 s", "tok/ok", "esc"):
        table.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    for r in comparison_rows(results):
        def fmt(key: str, spec: str) -> str:
            v = r.get(key)
            return "-" if v is None else format(v, spec)

        table.add_row(
            Text(r["name"]), fmt("accuracy", ".2f"), fmt("mean_output_tokens", ".1f"), fmt("p90_output_tokens", ".0f"),
            _money(Decimal(str(r.get("mean_cost_usd") or 0))), fmt("p50_latency_s", ".2f"), fmt("tokens_per_correct", ".0f"),
            fmt("escalation_rate", ".0%"),
        )
    return table


def _describe_tiers(cfg: Config) -> None:
    enabled = cfg.enabled_tiers()
    for name, tier in cfg.tiers.items():
        state = "enabled" if name in enabled else "disabled (set OPENAI_API_KEY to enable)" if tier.api_key_env else "disabled"
        where = "embedded llama.cpp server on 127.0.0.1" if tier.engine == "embedded" else tier.base_url
        out.print(f"  tier [cyan]{name}[/]: {escape(tier.model)} via {tier.engine} ({where}) — {state}", highlight=False)


def _load_items(suite: Optional[str], data: Optional[Path], seed: int, limit: Optional[int], on_error: str) -> tuple[list[Any], str]:
    """Graded items from a built-in suite or a dataset file, and the run's name for them."""
    from effreason_agents.evaluation.tasks import load_dataset, load_suite

    if on_error not in ("skip", "refuse"):
        raise EffReasonError("--on-error must be 'skip' or 'refuse'")
    if suite is not None:
        return load_suite(suite, seed=seed, limit=limit), suite
    assert data is not None
    items = load_dataset(data, on_error=on_error, warn=lambda m: err.print(f"[yellow]warning:[/] {escape(m)}"))  # type: ignore[arg-type]
    return (items[:limit] if limit else items), data.name


def _progress(json_out: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=json_out,
    )


def _run_bench(bench_obj: Any, json_out: bool) -> dict[str, Any]:
    from effreason_agents.evaluation.bench import write_run_file
    from effreason_agents.evaluation.report import write_report

    write_run_file(bench_obj)
    with _progress(json_out) as progress:
        task = progress.add_task("benchmark", total=None)

        def on_progress(done: int, total: int, res: Any) -> None:
            progress.update(task, completed=done, total=total, description=f"{res.arm:<14}")

        results = bench_obj.run(on_progress)
    results["meta"]["command"] = " ".join(["effreason", *sys.argv[1:]])
    paths = write_report(results, bench_obj.out_dir)
    results["_paths"] = {k: str(v) for k, v in paths.items()}
    return results


@app.command()
def bench(
    arm_args: Optional[list[str]] = typer.Argument(None, metavar="[ARM]...", help="More arms after --arms (tier:strategy)."),
    suite: Optional[str] = typer.Option(None, "--suite", help="A built-in suite: builtin, arithmetic, decimal, coin, letters, dates, word, choice."),
    data: Optional[Path] = typer.Option(None, "--data", help="Your items: GSM8K-style JSONL, multiple-choice JSONL/CSV, or generic JSONL."),
    replay: Optional[str] = typer.Option(None, "--replay", help="Offline: a RouteLLM-style wide CSV, or 'store' for the newest benchmark run in the outcome store."),
    weak: Optional[str] = typer.Option(None, "--weak", help="Replay: the weak model / arm."),
    strong: Optional[str] = typer.Option(None, "--strong", help="Replay: the strong model / arm."),
    arms: Optional[list[str]] = typer.Option(None, "--arms", help="Fixed arms to run, e.g. --arms small:direct small:cot."),
    graph: bool = typer.Option(False, "--graph", help="Also run the full cost-aware graph."),
    limit: Optional[int] = LimitOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the built-in generator."),
    concurrency: int = ConcurrencyOpt,
    out_dir: Path = typer.Option(Path("out/bench"), "--out", help="Directory for results.json, report.md and the plots."),
    force: bool = ForceOpt,
    on_error: str = OnErrorOpt,
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Measure arms and the graph on graded items (live), or a routing policy on logged outcomes (--replay).

    Live runs are resumable: rerun the same command and only unfinished items run.
    Without --arms/--graph, the usable escalation ladder and the graph are run.
    """
    from effreason_agents.evaluation.bench import Bench, resolve_arms

    try:
        cfg = _load(config)
        if replay is not None:
            _replay(cfg, replay, weak, strong, out_dir, json_out)
            return
        if (suite is None) == (data is None):
            raise EffReasonError("give exactly one of --suite NAME, --data FILE or --replay FILE")
        items, name = _load_items(suite, data, seed, limit, on_error)
        arm_names = list(arms or []) + list(arm_args or [])
        run_graph = graph or not arm_names
        if not arm_names and not graph:
            arm_names = [a.name for a in cfg.usable_ladder()]
        b = Bench(cfg, items, resolve_arms(cfg, arm_names), graph=run_graph, suite=name, out_dir=out_dir,
                  concurrency=concurrency, force=force)
        results = _run_bench(b, json_out)
    except EffReasonError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        err.print("interrupted: finished items are stored; run the same command again to resume")
        raise typer.Exit(130)
    _print_results(results, json_out)


def _replay(cfg: Config, source: str, weak: Optional[str], strong: Optional[str], out_dir: Path, json_out: bool) -> None:
    from effreason_agents.evaluation.replay import load_store_table, load_wide_csv, replay
    from effreason_agents.evaluation.report import write_report

    table = load_store_table(cfg.store.resolved_path()) if source == "store" else load_wide_csv(Path(source))
    if not weak or not strong:
        raise EffReasonError(f"--replay needs --weak and --strong; models in {table.source}: {', '.join(table.models)}")
    results = replay(table, weak, strong, config=cfg)
    results["meta"]["command"] = " ".join(["effreason", *sys.argv[1:]])
    paths = write_report(results, out_dir)
    results["_paths"] = {k: str(v) for k, v in paths.items()}
    _print_results(results, json_out)


def _print_results(results: dict[str, Any], json_out: bool) -> None:
    paths = results.pop("_paths", {})
    if json_out:
        print(json.dumps(results, indent=2))
        return
    meta = results.get("meta", {})
    out.print(comparison_table(results, title=f"{results['kind']} · {meta.get('suite')} · {meta.get('n_items')} items"))
    if "two_arm" in results:
        two = results["two_arm"]
        t = Table(title=f"routing {two['weak']} → {two['strong']} (share of calls to the strong arm)",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
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


@app.command()
def report(out_dir: Path = typer.Argument(..., help="A benchmark directory holding results.json.")) -> None:
    """Re-render report.md and the plots of a benchmark directory from its results.json."""
    from effreason_agents.evaluation.report import render_report

    try:
        paths = render_report(out_dir)
    except (EffReasonError, ValueError, OSError) as exc:
        _fail(exc)
        return
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", highlight=False)



def _threshold_text(cfg: Any) -> str:
    """The escalation threshold as configured: a number, or each calibrator's own (else 0.5)."""
    t = cfg.escalation.confidence_threshold
    if t is not None:
        return str(t)
    from effreason_agents.config import DEFAULT_CONFIDENCE_THRESHOLD

    return f"each calibrated arm's fitted threshold ({DEFAULT_CONFIDENCE_THRESHOLD} for heuristic arms)"

@app.command()
def demo(
    limit: int = typer.Option(30, "--limit", min=1, help="Items of the built-in suite."),
    out_dir: Path = typer.Option(Path("out/demo"), "--out", help="Where the report goes."),
    concurrency: int = typer.Option(2, "--concurrency", "-j", min=1),
    config: Optional[Path] = ConfigOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The main job: the graph and the fixed arms it chooses between, over a slice of the built-in suite."""
    from effreason_agents.evaluation.bench import Bench
    from effreason_agents.evaluation.tasks import load_suite

    try:
        cfg = _load(config)
        ladder = cfg.usable_ladder()
        if not json_out:
            out.print(f"[bold]effreason demo[/] · config: {escape(cfg.source)} · outcome store: {cfg.store.resolved_path()}", highlight=False)
            _describe_tiers(cfg)
            out.print(f"  ladder: {' → '.join(a.name for a in ladder)}; the graph starts by difficulty and escalates "
                      f"while confidence < {_threshold_text(cfg)}", highlight=False)
            out.print(f"  running the built-in suite ({limit} items) through each ladder arm and the graph…", highlight=False)
        b = Bench(cfg, load_suite("builtin", limit=limit), list(ladder), graph=True, suite=f"builtin[:{limit}]",
                  out_dir=out_dir, concurrency=concurrency, fresh=True)
        results = _run_bench(b, json_out)
    except EffReasonError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        err.print("interrupted: finished items are stored in the outcome store")
        raise typer.Exit(130)
    _print_results(results, json_out)


def _chat_budget_line(meta: dict[str, Any], thread_total: Decimal) -> str:
    from effreason_agents.graph.chat import cost_limit

    parts = [f"cost {_money(meta.get('cost_usd') or '0')}", f"{meta.get('output_tokens', 0)} output tokens"]
    remaining = meta.get("remaining") or {}
    shown = False
    for kind in ("thread", "user"):
        entry = cost_limit(remaining, kind)
        if entry is not None:
            left = max(Decimal(str(entry["remaining"])), Decimal(0))
            parts.append(f"{kind} remaining {_money_short(left)} of {_money_short(entry['limit'])}")
            shown = True
    if not shown:
        parts.append(f"thread total {_money(thread_total)}")
    if meta.get("status") not in (None, "answered"):
        parts.append(f"status {meta['status']}")
    return " · ".join(parts)


def _money_short(value: Any) -> str:
    d = Decimal(str(value))
    return f"${d:.4f}" if d == 0 or d >= Decimal("0.0001") else f"${d:.6f}"


@app.command()
def chat(
    thread: Optional[str] = typer.Option(None, "--thread", "-t", help="Thread to continue (default: a new one, printed at start)."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Charge this user's budget too."),
    budget_usd: Optional[str] = typer.Option(None, "--budget-usd", help="Set the thread's dollar limit."),
    max_cost: Optional[str] = typer.Option(None, "--max-cost-usd", help="Dollar limit for each question."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per turn instead of text."),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Chat in a terminal: one question per line, answered by the cost-aware graph.

    Threads are stored in checkpoints.sqlite beside the outcome store, so `--thread ID` resumes one later. Commands: /history, /budget, /quit (or end of input).
    """
    import uuid
    from contextlib import nullcontext

    from langchain_core.messages import AIMessage, HumanMessage

    from effreason_agents.graph.chat import ChatContext, build_chat_graph, close_chat_graph, open_checkpointer, thread_budget, validate_context

    try:
        cfg = _load(config)
        ctx = ChatContext(user_id=user, budget_usd=budget_usd, max_cost_usd=max_cost)
        validate_context(ctx)  # bad amounts fail before anything starts
        graph = build_chat_graph(cfg, checkpointer=open_checkpointer(cfg))
    except EffReasonError as exc:
        _fail(exc, 2)
        return
    thread_id = thread or uuid.uuid4().hex[:12]
    run_cfg: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    tty = sys.stdin.isatty()

    def show(text: str, style: str = "") -> None:
        if not json_out:
            out.print(Text(text, style=style), soft_wrap=True)

    def history() -> list[Any]:
        return list(graph.get_state(run_cfg).values.get("messages") or [])

    try:
        earlier = history()
        show(f"effreason chat · thread {thread_id}" + (f" · user {user}" if user else "")
             + (f" · budget {_money_short(budget_usd)}" if budget_usd else "") + " · /history /budget /quit", "bold")
        if earlier:
            show(f"resuming thread {thread_id}: {len(earlier)} earlier messages (/history shows them)", "dim")
        else:
            show(f"resume later with: effreason chat --thread {thread_id}", "dim")
        while True:
            try:
                line = input("you> " if tty and not json_out else "")
            except EOFError:
                break
            line = line.strip()
            if not line:
                continue
            if not tty:
                show(f"you> {line}", "cyan")
            if line in ("/quit", "/exit", "/q"):
                break
            if line == "/history":
                msgs = history()
                if json_out:
                    print(json.dumps([{"role": m.type, "content": m.content, **({"status": m.response_metadata.get("status"),
                                       "cost_usd": m.response_metadata.get("cost_usd")} if isinstance(m, AIMessage) else {})}
                                      for m in msgs]), flush=True)
                for m in msgs:
                    if isinstance(m, HumanMessage):
                        show(f"  you: {m.content}")
                    elif isinstance(m, AIMessage):
                        meta = m.response_metadata
                        show(f"  bot: {m.content}  [{meta.get('status')}, {_money(meta.get('cost_usd') or '0')}]")
                if not msgs:
                    show("  (no messages yet)", "dim")
                continue
            if line == "/budget":
                remaining = thread_budget(cfg, thread_id, user)
                if json_out:
                    print(json.dumps(remaining), flush=True)
                for kind, limits in remaining.items():
                    for name, entry in limits.items():
                        show(f"  {kind} {name}: {json.dumps(entry)}")
                if not remaining:
                    show("  no budget recorded for this thread yet", "dim")
                continue
            if line.startswith("/"):
                show("commands: /history, /budget, /quit", "dim")
                continue
            try:
                with err.status("thinking…", spinner="dots") if tty else nullcontext():
                    state = graph.invoke({"messages": [HumanMessage(line)]}, run_cfg, context=ctx)
            except EffReasonError as exc:
                err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
                continue
            reply = state["messages"][-1]
            meta = dict(reply.response_metadata)
            total = sum((Decimal(t.get("cost_usd") or "0") for t in state.get("turns") or []), Decimal(0))
            if json_out:
                print(json.dumps({"thread_id": thread_id, "answer": reply.content, **meta}), flush=True)
            else:
                show(str(reply.content), "bold")
                show(_chat_budget_line(meta, total), "dim")
    except KeyboardInterrupt:
        err.print(f"interrupted: the thread is saved; resume with effreason chat --thread {thread_id}")
        raise typer.Exit(130)
    finally:
        close_chat_graph(graph)
    show(f"bye · resume with: effreason chat --thread {thread_id}", "dim")


@app.command()
def calibrate(
    suite: Optional[str] = typer.Option(None, "--suite", help="A built-in suite (e.g. builtin) to calibrate on."),
    data: Optional[Path] = typer.Option(None, "--data", help="Or your graded items: GSM8K-style JSONL, multiple-choice JSONL/CSV, generic JSONL."),
    tier: str = typer.Option("small", "--tier", help="The tier whose confidence is calibrated."),
    strategies: Optional[list[str]] = typer.Option(None, "--strategy", help="Strategies to calibrate (repeatable); default: the tier's strategies on the ladder."),
    strong: Optional[str] = typer.Option(None, "--strong", help="The arm the cascade escalates to; default: the top of the ladder on another tier (else the top arm)."),
    max_escalation_rate: Optional[float] = typer.Option(None, "--max-escalation-rate", help="Target: escalate at most this share of queries."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Target: the cheapest threshold reaching this accuracy."),
    holdout: float = typer.Option(0.3, "--holdout", help="Share of items held out for scoring (split by item)."),
    limit: Optional[int] = LimitOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the built-in generator and of the split."),
    concurrency: int = ConcurrencyOpt,
    out_dir: Path = typer.Option(Path("out/calibrate"), "--out", help="Directory for the artifacts and the report."),
    force: bool = ForceOpt,
    on_error: str = OnErrorOpt,
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Fit calibrated confidence for a tier: run its arms on graded items, fit P(correct) from the uncertainty signals, and print AUROC/ECE per signal and combined on held-out items, with the threshold trade-off curve (escalation rate, accuracy, cost) of the cascade.

    The artifacts go to OUT/calibrators/; to use them, set the escalation.calibrators setting to that directory. Without a target the most accurate threshold is picked (the cheapest on ties). Runs resume like `effreason bench`.
    """
    from router_training.calibration_run import CalibrationPlan, calibrate as run_calibration, render_markdown

    try:
        cfg = _load(config)
        if (suite is None) == (data is None):
            raise EffReasonError("give exactly one of --suite NAME or --data FILE")
        if max_escalation_rate is not None and min_accuracy is not None:
            raise EffReasonError("give at most one target: --max-escalation-rate or --min-accuracy")
        items, name = _load_items(suite, data, seed, limit, on_error)
        plan = CalibrationPlan(cfg, items, tier, list(strategies or []), strong, out_dir, suite=name, holdout=holdout,
                               seed=seed, max_escalation_rate=max_escalation_rate, min_accuracy=min_accuracy,
                               concurrency=concurrency, force=force)
        with _progress(json_out) as progress:
            task = progress.add_task("calibration runs", total=None)
            report_ = run_calibration(
                plan, lambda done, total, res: progress.update(task, completed=done, total=total, description=f"{res.arm:<14}"))
    except EffReasonError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        err.print("interrupted: finished items are stored; run the same command again to resume")
        raise typer.Exit(130)
    if json_out:
        print(json.dumps(report_, indent=2))
        return
    from rich.markdown import Markdown

    out.print(Markdown(render_markdown(report_)))
    out.print(f"report: {out_dir / 'calibration.md'}", highlight=False)


router_app = typer.Typer(help="Routers trained on logged outcomes: train, evaluate, tune the policy.", no_args_is_help=True)
app.add_typer(router_app, name="router")

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


def _share_target(max_share: Optional[str]) -> Optional[tuple[str, float]]:
    if max_share is None:
        return None
    tier, sep, value = max_share.partition("=")
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not sep or not tier or not 0.0 <= share <= 1.0:
        raise EffReasonError(f"--max-share must look like TIER=SHARE with SHARE in [0, 1], e.g. large=0.2; got {max_share!r}")
    return tier, share


def _targets(max_share: Optional[str], max_mean_cost: Optional[float], min_accuracy: Optional[float]) -> dict[str, Any]:
    given = [x for x in (max_share, max_mean_cost, min_accuracy) if x is not None]
    if len(given) > 1:
        raise EffReasonError("give at most one target: --max-share, --max-mean-cost or --min-accuracy")
    return {"max_share": _share_target(max_share), "max_mean_cost": max_mean_cost, "min_accuracy": min_accuracy}


def _two_arm_lines(r: dict[str, Any]) -> list[str]:
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
    model: list[str] = typer.Option(["auto"], "--model", help="auto (logistic, mf, gbm, mlp; the best by cross-validation) or one or more of those."),
    embeddings: bool = typer.Option(False, "--embeddings", help="Add all-MiniLM-L6-v2 sentence embeddings to the TF-IDF and hand features (train extra)."),
    cv: int = typer.Option(5, "--cv", min=2, help="Folds (by prompt) for model selection."),
    seed: int = typer.Option(0, "--seed"),
    policy: str = typer.Option("threshold", "--policy", help="threshold (cheapest arm with P >= tau) or lambda (max P - lambda * cost)."),
    max_share: Optional[str] = typer.Option(None, "--max-share", help="Target: at most this share of calls to a tier, e.g. large=0.2."),
    max_mean_cost: Optional[float] = typer.Option(None, "--max-mean-cost", help="Target: mean cost per query at most this (USD, or tokens when the logs are free)."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Target: the cheapest policy reaching this accuracy."),
    out_dir: Path = typer.Option(..., "--out", help="Directory for the router artifact."),
    json_out: bool = JsonOpt,
) -> None:
    """Train a router on logged outcomes: pick the model by cross-validation (folds by prompt), fit it on every prompt, choose the policy for the target and save the artifact. Use it with `router.artifact = "DIR"` in the configuration."""
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
        _fail(exc)
        return
    if json_out:
        print(json.dumps(result, indent=2, default=str))
        return
    out.print(f"router: {result['model']} on {result['n']} prompts, arms {', '.join(result['arms'])}", highlight=False)
    for kind, r in result["cv"].items():
        out.print(f"  cv {kind:<8} APGR {r.get('apgr') if r.get('apgr') is None else round(r['apgr'], 3)}"
                  f" · AUC {r.get('auc') if r.get('auc') is None else round(r['auc'], 3)} · {r.get('seconds')} s", highlight=False)
    pol = result["policy"]
    value = pol.get("tau", pol.get("lambda"))
    out.print(f"policy: {pol['kind']} {value} ({pol['target']}); expected {pol.get('expected')}", highlight=False)
    out.print(f"artifact: {result['artifact']}", highlight=False)


@router_app.command("eval")
def router_eval(
    data: str = DataOpt, fmt: Optional[str] = FormatOpt, weak: Optional[str] = WeakOpt, strong: Optional[str] = StrongOpt,
    arms: Optional[list[str]] = ArmsOpt,
    model: str = typer.Option("logistic", "--model", help="logistic, mf, gbm or mlp."),
    embeddings: bool = typer.Option(False, "--embeddings", help="Add MiniLM sentence embeddings (train extra)."),
    cv: int = typer.Option(5, "--cv", min=2, help="Folds, split by prompt."),
    seed: int = typer.Option(0, "--seed"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Also write eval.json and pgr.png here."),
    json_out: bool = JsonOpt,
) -> None:
    """Cross-validated RouteLLM metrics of a router model on logged outcomes: APGR, CPT(50%), CPT(80%), AUC, with random and oracle baselines; and for many arms the cost/accuracy hull of its policy."""
    from router_training.train import evaluate

    try:
        table = _router_table(data, fmt, weak, strong, arms)
        r = evaluate(table, model, k=cv, seed=seed, weak=weak, strong=strong, embeddings=embeddings)
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
        _fail(exc)
        return
    if json_out:
        keep = ("apgr", "cpt50", "cpt80", "auc", "n", "baselines", "weak", "strong", "k", "arms", "model", "cost_unit",
                "many_arm", "seconds")
        doc = {k: r[k] for k in keep if k in r}
        doc["baselines"] = {name: {k: v for k, v in b.items() if k != "curve"} if isinstance(b, dict) else b
                            for name, b in (r.get("baselines") or {}).items()}  # curves: eval.json with --out
        if isinstance(doc.get("many_arm"), dict):
            doc["many_arm"] = {k: v for k, v in doc["many_arm"].items() if k != "points"}
        print(json.dumps(doc, indent=2, default=str))
        return
    out.print(f"{model} router, {cv}-fold cross-validation by prompt, n = {r.get('n')}"
              f" (weak {r.get('weak')}, strong {r.get('strong')}):", highlight=False)
    for line in _two_arm_lines(r):
        out.print(line, highlight=False)
    if r.get("auc") is not None:
        out.print(f"AUC {r['auc']:.3f}", highlight=False)


@router_app.command("calibrate")
def router_calibrate(
    router_dir: Path = typer.Option(..., "--router", help="A router artifact directory (effreason router train)."),
    data: str = DataOpt, fmt: Optional[str] = FormatOpt, arms: Optional[list[str]] = ArmsOpt,
    cv: int = typer.Option(5, "--cv", min=2, help="Folds for the out-of-fold predictions the policy is tuned on."),
    seed: int = typer.Option(0, "--seed"),
    policy: str = typer.Option("threshold", "--policy", help="threshold (tau) or lambda."),
    max_share: Optional[str] = typer.Option(None, "--max-share", help="Target: at most this share of calls to a tier, e.g. large=0.2."),
    max_mean_cost: Optional[float] = typer.Option(None, "--max-mean-cost", help="Target: mean cost per query at most this."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Target: the cheapest policy reaching this accuracy."),
    json_out: bool = JsonOpt,
) -> None:
    """Tune a router's policy for a target from logged outcomes: tau for the threshold policy or lambda for the cost-penalized one, chosen on out-of-fold predictions, written into the artifact's card."""
    from router_training.train import calibrate_policy

    try:
        if policy not in ("threshold", "lambda"):
            raise EffReasonError("--policy must be 'threshold' or 'lambda'")
        table = _router_table(data, fmt, None, None, arms)
        r = calibrate_policy(router_dir, table, k=cv, seed=seed, policy=policy,
                             **_targets(max_share, max_mean_cost, min_accuracy))
    except EffReasonError as exc:
        _fail(exc)
        return
    if json_out:
        print(json.dumps(r, indent=2, default=str))
        return
    print(f"{'value':>8} {'accuracy':>9} {'mean cost':>10}  share of calls")
    for pt in r["curve"]:
        share = ", ".join(f"{a} {s:.0%}" for a, s in (pt.get("share") or {}).items() if s)
        mark = "  <- chosen" if pt.get("value") == r["chosen"].get("value") else ""
        print(f"{pt['value']:>8.3g} {pt['accuracy']:>9.3f} {pt['mean_cost']:>10.4g}  {share}{mark}")
    out.print(f"policy written to {router_dir / 'card.json'}: {r['policy']['kind']} "
              f"{r['policy'].get('tau', r['policy'].get('lambda'))} ({r['policy']['target']})", highlight=False)


budget_app = typer.Typer(help="Token budgets: fit the budget-cot estimator on logged outcomes.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")


@budget_app.command("fit")
def budget_fit(
    out_file: Path = typer.Option(..., "--out", help="Where to write the fitted regressor (JSON)."),
    run: Optional[str] = typer.Option(None, "--run", help="Only this benchmark run (default: every run)."),
    arm: Optional[str] = typer.Option(None, "--arm", help="Only this arm's answers, e.g. small:cot."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Fit the budget regressor (output tokens of correct answers vs question features) on the
    graded results in the outcome store; use it with budget.estimator = "regressor"."""
    from effreason_agents.engine.estimator import BudgetRegressor, rows_from_store

    try:
        cfg = _load(config)
        rows = rows_from_store(cfg.store.resolved_path(), run_id=run, arm=arm)
        model = BudgetRegressor().fit(rows)
        path = model.save(out_file)
    except EffReasonError as exc:
        _fail(exc)
        return
    summary = {"path": str(path), "rows": len(rows), "correct_rows_used": model.n_rows}
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    out.print(f"fitted on {model.n_rows} correct answers (of {len(rows)} graded rows) → {path}", highlight=False)
    out.print(escape(f'use it: [budget] estimator = "regressor", regressor_path = "{path}"'), highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
