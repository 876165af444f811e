"""The cost-aware reasoning graph, for ``langgraph dev`` / LangGraph Server.

The configuration is loaded the usual way (``$EFFREASON_CONFIG``, then
``./effreason.toml``, then the built-in default); nothing starts until the
first question arrives.
"""

from effreason_agents.config import load_config
from effreason_agents.graph import build_reasoning_graph

graph = build_reasoning_graph(load_config())
