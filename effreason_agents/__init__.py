"""effreason-agents: cost-aware reasoning for LangGraph and LangChain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ChatCostAware", "__version__"]

if TYPE_CHECKING:
    from effreason_agents.langchain.chat_model import ChatCostAware


def __getattr__(name: str) -> Any:
    # Lazy, so ``import effreason_agents`` stays light (no LangChain import).
    if name == "ChatCostAware":
        from effreason_agents.langchain.chat_model import ChatCostAware

        return ChatCostAware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
