"""``effreason ask``: answer one question through the cost-aware reasoning graph."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.text import Text

from effreason_agents.cli.options import ConfigOpt, JsonOpt, load
from effreason_agents.cli.render import (
    attempts_table,
    confidence_lines,
    err,
    fail,
    models_line,
    money,
    out,
    print_json,
    result_json,
)
from effreason_agents.errors import EffReasonError, InvalidQuestionError

__all__ = ["ask"]


def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Escalate while confidence is below this."),
    max_cost: Optional[str] = typer.Option(None, "--max-cost-usd", help="Dollar limit for this request."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not record the request in the outcome store."),
) -> None:
    """Answer QUESTION with the cheapest arm that is confident enough, and show every attempt.

    Each attempt is shown with its tokens, cost, latency and confidence; `*` marks the one whose answer was returned.
    """
    from effreason_agents.graph.builder import ask as run_ask
    from effreason_agents.graph.state import ReasoningContext

    try:
        cfg = load(config)
        ctx = ReasoningContext(confidence_threshold=threshold, max_cost_usd=max_cost, log=not no_log)
        with err.status("thinking…", spinner="dots"):
            result = run_ask(question, cfg, context=ctx)
    except InvalidQuestionError as exc:
        fail(exc, 2)
    except EffReasonError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: nothing was logged for this request")
        raise typer.Exit(130)
    if json_out:
        print_json(result_json(result))
        return
    out.print(f"[bold]{escape(result['answer']) if result['answer'] is not None else '(no answer)'}[/]", highlight=False)
    out.print(attempts_table(result))
    out.print(f"[dim]{models_line(result)}[/]", highlight=False)
    out.print(
        f"status {result['status']} · difficulty {result['difficulty']} · escalated {'yes' if result['escalated'] else 'no'}"
        f" · {result['total_output_tokens']} output tokens · {money(result['total_cost_usd'])}",
        highlight=False,
    )
    if result.get("reason"):
        out.print(f"[dim]{escape(result['reason'])}[/]", highlight=False)
    for line in confidence_lines(result):
        out.print(Text(line, style="dim"))
