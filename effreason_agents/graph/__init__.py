"""The cost-aware reasoning graph and the budget-capped chatbot, as LangGraph graphs.

::

    from effreason_agents.graph import build_reasoning_graph
    graph = build_reasoning_graph()               # built-in default config
    out = graph.invoke({"question": "What is 2 + 3?"})
    out["result"]["answer"], out["result"]["total_cost_usd"]
"""

from __future__ import annotations

from effreason_agents.graph.builder import add_cost_aware_reasoning, ask, build_chat_graph, build_reasoning_graph
from effreason_agents.graph.state import ReasoningContext, ReasoningInput, ReasoningState

__all__ = [
    "ReasoningContext",
    "ReasoningInput",
    "ReasoningState",
    "add_cost_aware_reasoning",
    "ask",
    "build_chat_graph",
    "build_reasoning_graph",
]
