"""Graph builders.

:func:`build_reasoning_graph` compiles the cost-aware reasoning graph::

    question ─▶ classify ─▶ solve ─▶ assess ─┬─▶ finalize ─▶ log ─▶ result
                              ▲              │
                              └── escalate ◀─┘  (next arm, if ladder and budget allow)

Use it as any compiled LangGraph graph — ``invoke``/``stream``, or as a node
inside your own graph::

    from effreason_agents.graph.builder import build_reasoning_graph
    graph = build_reasoning_graph()               # built-in default config
    out = graph.invoke({"question": "What is 2 + 3?"})
    out["result"]["answer"], out["result"]["total_cost_usd"]

Per-run settings go through ``context=`` (see :class:`~effreason_agents.graph.state.ReasoningContext`).
"""

from __future__ import annotations

from typing import Any, Mapping

from langchain_core.runnables import RunnableConfig

from langgraph.graph import END, START, StateGraph

from effreason_agents.config import Config, load_config
from effreason_agents.errors import InvalidQuestionError
from effreason_agents.graph.nodes import ReasoningNodes, Services
from effreason_agents.graph.state import ReasoningContext, ReasoningInput, ReasoningState

__all__ = [
    "add_cost_aware_reasoning",
    "ask",
    "build_chat_graph",
    "build_reasoning_graph",
]


def build_reasoning_graph(config: Config | None = None, *, services: Services | None = None, checkpointer: Any = None) -> Any:
    """Compile the reasoning graph for ``config`` (default: :func:`load_config`)."""
    if services is None:
        services = Services(config or load_config())
    nodes = ReasoningNodes(services)
    g = StateGraph(ReasoningState, context_schema=ReasoningContext, input_schema=ReasoningInput)
    g.add_node("classify", nodes.classify)
    g.add_node("solve", nodes.solve)
    g.add_node("assess", nodes.assess)
    g.add_node("escalate", nodes.escalate)
    g.add_node("finalize", nodes.finalize)
    g.add_node("log", nodes.log)
    g.add_edge(START, "classify")
    g.add_conditional_edges("classify", nodes.after_classify, ["solve", "finalize"])
    g.add_conditional_edges("solve", nodes.after_solve, ["assess", "finalize"])
    g.add_conditional_edges("assess", nodes.after_assess, ["escalate", "finalize"])
    g.add_conditional_edges("escalate", nodes.after_escalate, ["solve", "finalize"])
    g.add_edge("finalize", "log")
    g.add_edge("log", END)
    compiled = g.compile(checkpointer=checkpointer, name="effreason-reasoner")
    compiled.services = services  # type: ignore[attr-defined]
    return compiled


def ask(question: str, config: Config | None = None, *, context: ReasoningContext | None = None, graph: Any = None) -> dict[str, Any]:
    """Run one question through the reasoning graph and return its ``result`` dict."""
    graph = graph or build_reasoning_graph(config)
    out = graph.invoke({"question": question}, context=context or ReasoningContext())
    return out["result"]


def build_chat_graph(config: Config | None = None, **kwargs: Any) -> Any:
    """The budget-capped chatbot: a messages graph with the reasoning graph as a subgraph,
    a SQLite checkpointer and per-thread / per-user budgets (see :mod:`effreason_agents.graph.chat`)."""
    from effreason_agents.graph.chat import build_chat_graph as _build

    return _build(config, **kwargs)


def add_cost_aware_reasoning(
    builder: Any,
    *,
    name: str = "cost_aware_reasoning",
    config: Config | None = None,
    services: Services | None = None,
    question_key: str = "question",
    answer_key: str = "answer",
    result_key: str | None = "reasoning",
    context: Mapping[str, Any] | None = None,
) -> str:
    """Add the reasoning graph to your ``StateGraph`` ``builder`` as the node ``name``.

    The node reads ``state[question_key]``, runs the compiled reasoning graph as a
    subgraph (its progress events reach your ``stream_mode="custom"`` stream, and
    ``subgraphs=True`` shows its steps), and writes ``answer_key`` (the answer) and,
    unless ``result_key`` is ``None``, ``result_key`` (the whole ``result`` dict: status,
    arms tried, confidence, cost). Your state needs those keys. Per-run settings come from
    ``context`` (a :class:`~effreason_agents.graph.state.ReasoningContext` mapping); the
    ``thread_id`` of your run's config is used as the budget thread unless given.
    Returns ``name``; add the edges to and from it yourself.
    """
    graph = build_reasoning_graph(config, services=services)
    base = dict(context or {})

    def run(state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        if question_key not in state:
            raise InvalidQuestionError(f"the state has no {question_key!r} key for the reasoning node {name!r}")
        ctx = dict(base)
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        if thread is not None and "thread_id" not in ctx:
            ctx["thread_id"] = str(thread)
        out = graph.invoke({"question": state[question_key]}, config=config, context=ReasoningContext(**ctx))
        update: dict[str, Any] = {answer_key: out["result"]["answer"]}
        if result_key is not None:
            update[result_key] = out["result"]
        return update

    builder.add_node(name, run)
    return name
