"""effreason-agents: cost-aware reasoning for LangGraph and LangChain.

The public face, imported lazily so ``import effreason_agents`` stays light::

    from effreason_agents import ChatCostAware, CostAwareMiddleware, build_reasoning_graph
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ChatCostAware": "effreason_agents.langchain.chat_model",
    "CostAwareMiddleware": "effreason_agents.langchain.middleware",
    "CostCallbackHandler": "effreason_agents.langchain.callbacks",
    "ReasoningContext": "effreason_agents.graph.state",
    "add_cost_aware_reasoning": "effreason_agents.graph.builder",
    "build_chat_graph": "effreason_agents.graph.builder",
    "build_reasoning_graph": "effreason_agents.graph.builder",
    "load_config": "effreason_agents.config",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from effreason_agents.config import load_config
    from effreason_agents.graph.builder import add_cost_aware_reasoning, build_chat_graph, build_reasoning_graph
    from effreason_agents.graph.state import ReasoningContext
    from effreason_agents.langchain.callbacks import CostCallbackHandler
    from effreason_agents.langchain.chat_model import ChatCostAware
    from effreason_agents.langchain.middleware import CostAwareMiddleware


def __getattr__(name: str) -> Any:
    # Lazy, so ``import effreason_agents`` stays light (no LangChain import).
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
