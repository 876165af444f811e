"""A LangChain ``create_agent`` agent with one calculator tool, routed and budgeted by
:class:`~effreason_agents.langchain.middleware.CostAwareMiddleware`.

Runs offline on the embedded default (SmolLM2-135M-Instruct served by llama.cpp)::

    python examples/agent.py
    python examples/agent.py "What is 17 * 23?" --thread demo --budget-usd 0.01

It prints what the model did (tool calls, tool results), the answer, the tier that
answered and the cost. A 135M model often calls the tool wrongly or not at all: the
example still runs to completion and prints what happened.
"""

from __future__ import annotations

import argparse
import ast
import operator
import sys
from decimal import Decimal
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.errors import GraphRecursionError

from effreason_agents.langchain.callbacks import cost_callback
from effreason_agents.config import LimitConfig, load_config
from effreason_agents.adapters.ledger import Scope
from effreason_agents.langchain.middleware import CostAwareMiddleware

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Mod: operator.mod}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand))
    raise ValueError("only numbers and + - * / % ** are allowed")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '17 * 23' and return the result."""
    try:
        value = _eval(ast.parse(str(expression), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError) as exc:
        return f"error: {exc}"
    return str(int(value)) if float(value).is_integer() else str(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("question", nargs="?", default="What is 17 * 23? Use the calculator.")
    p.add_argument("--thread", default="example-agent", help="thread id: its calls are held in the budget ledger")
    p.add_argument("--user", default=None, help="user id: charge the user's budget too")
    p.add_argument("--budget-usd", default=None, help="set the thread's dollar limit")
    p.add_argument("--max-tokens", type=int, default=96, help="output-token cap per model call")
    args = p.parse_args(argv)

    config = load_config()
    middleware = CostAwareMiddleware(config, max_tokens=args.max_tokens)
    if args.budget_usd:
        middleware.ledger.set_limits(Scope("thread", args.thread), LimitConfig(max_cost_usd=Decimal(args.budget_usd)))
    agent = create_agent(
        model=middleware.base_model(),
        tools=[calculator],
        middleware=[middleware],
        system_prompt="You are a helpful assistant. Use the calculator tool for arithmetic, then give the answer.",
    )
    run_config: dict[str, Any] = {"configurable": {"thread_id": args.thread}, "recursion_limit": 8}
    print(f"question: {args.question}")
    messages: list[Any] = []
    note = None
    with cost_callback(config) as cb:
        try:
            for update in agent.stream({"messages": [("user", args.question)]}, run_config,
                                       context={"user_id": args.user} if args.user else None,
                                       stream_mode="updates"):
                for node_update in update.values():
                    for m in (node_update or {}).get("messages", []) if isinstance(node_update, dict) else []:
                        messages.append(m)
                        _show(m)
        except GraphRecursionError:
            note = "stopped: the model kept calling tools (recursion limit reached)"
        except Exception as exc:  # noqa: BLE001 - an example: say what happened and finish
            note = f"stopped: {type(exc).__name__}: {exc}"
    if note:
        print(note)
    final = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    info = (final.response_metadata.get("effreason") if final is not None else None) or {}
    answer = final.text.strip() if final is not None and not final.tool_calls else None
    print(f"answer: {answer if answer else '(no final answer)'}")
    print(f"status: {info.get('status', 'n/a')}")
    print(f"tier: {info.get('tier') or 'n/a'} (selected {info.get('selected_tier')}, {info.get('selected_by')}; "
          f"tried {info.get('tiers_tried')})")
    print(f"confidence: {info.get('confidence')} ({info.get('confidence_method')})")
    s = cb.summary()
    print(f"cost: ${s['total_cost_usd']} for {s['input_tokens']} input + {s['output_tokens']} output tokens "
          f"in {sum(m['calls'] for m in s['models'].values())} model calls")
    print(f"thread budget left: {middleware.ledger.remaining(Scope('thread', args.thread))['max_cost_usd']['remaining'] or 'unlimited'}")
    middleware.services.close()
    return 0


def _show(m: Any) -> None:
    if isinstance(m, AIMessage):
        if m.tool_calls:
            for c in m.tool_calls:
                print(f"model called tool {c['name']}({c['args']})")
        elif m.text.strip():
            tier = (m.response_metadata.get("effreason") or {}).get("tier")
            print(f"model ({tier}) said: {m.text.strip()[:300]}")
    elif isinstance(m, ToolMessage):
        print(f"tool returned: {str(m.content)[:200]}")


if __name__ == "__main__":
    sys.exit(main())
