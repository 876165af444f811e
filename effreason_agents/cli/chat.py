"""``effreason chat``: a terminal chat answered by the cost-aware chat graph, with
per-thread and per-user dollar budgets."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.text import Text

from effreason_agents.cli.options import ConfigOpt, load
from effreason_agents.cli.render import err, fail, money, out, print_json
from effreason_agents.errors import EffReasonError

__all__ = ["chat", "chat_budget_line"]


def chat_budget_line(meta: dict[str, Any], thread_total: Decimal) -> str:
    """The line under each answer: its cost and output tokens, then what is left of the
    thread's and the user's dollar limits (else the thread's total spend) and any status
    other than answered."""
    from effreason_agents.graph.chat import cost_limit

    parts = [f"cost {money(meta.get('cost_usd') or '0')}", f"{meta.get('output_tokens', 0)} output tokens"]
    remaining = meta.get("remaining") or {}
    shown = False
    for kind in ("thread", "user"):
        entry = cost_limit(remaining, kind)
        if entry is not None:
            left = max(Decimal(str(entry["remaining"])), Decimal(0))
            parts.append(f"{kind} remaining {money(left)} of {money(entry['limit'])}")
            shown = True
    if not shown:
        parts.append(f"thread total {money(thread_total)}")
    if meta.get("status") not in (None, "answered"):
        parts.append(f"status {meta['status']}")
    return " · ".join(parts)


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

    from effreason_agents.graph.chat import (
        ChatContext,
        build_chat_graph,
        close_chat_graph,
        open_checkpointer,
        thread_budget,
        validate_context,
    )

    try:
        cfg = load(config)
        ctx = ChatContext(user_id=user, budget_usd=budget_usd, max_cost_usd=max_cost)
        validate_context(ctx)  # bad amounts fail before anything starts
        graph = build_chat_graph(cfg, checkpointer=open_checkpointer(cfg))
    except EffReasonError as exc:
        fail(exc, 2)
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
             + (f" · budget {money(budget_usd)}" if budget_usd else "") + " · /history /budget /quit", "bold")
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
                    print_json([{"role": m.type, "content": m.content,
                                 **({"status": m.response_metadata.get("status"),
                                     "cost_usd": m.response_metadata.get("cost_usd")} if isinstance(m, AIMessage) else {})}
                                for m in msgs], indent=None, flush=True)
                for m in msgs:
                    if isinstance(m, HumanMessage):
                        show(f"  you: {m.content}")
                    elif isinstance(m, AIMessage):
                        meta = m.response_metadata
                        show(f"  bot: {m.content}  [{meta.get('status')}, {money(meta.get('cost_usd') or '0')}]")
                if not msgs:
                    show("  (no messages yet)", "dim")
                continue
            if line == "/budget":
                remaining = thread_budget(cfg, thread_id, user)
                if json_out:
                    print_json(remaining, indent=None, flush=True)
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
                print_json({"thread_id": thread_id, "answer": reply.content, **meta}, indent=None, flush=True)
            else:
                show(str(reply.content), "bold")
                show(chat_budget_line(meta, total), "dim")
    except KeyboardInterrupt:
        err.print(f"interrupted: the thread is saved; resume with effreason chat --thread {thread_id}")
        raise typer.Exit(130)
    finally:
        close_chat_graph(graph)
    show(f"bye · resume with: effreason chat --thread {thread_id}", "dim")
