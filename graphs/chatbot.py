"""A multi-turn chat over the cost-aware reasoning graph, for ``langgraph dev`` / LangGraph Server.

Built without a checkpointer: the server supplies its own (Postgres, or its
in-memory one under ``langgraph dev``) and keys threads by ``thread_id``. Pass the
user and an optional thread budget in the run's context, e.g.
``{"user_id": "ann", "budget_usd": "0.05"}``. The configuration is loaded the
usual way (``$EFFREASON_CONFIG``, then ``./effreason.toml``, then the built-in
default); nothing starts until the first message arrives.
"""

from effreason_agents.graph.chat import build_chat_graph
from effreason_agents.config import load_config

graph = build_chat_graph(load_config(), checkpointer=False)
