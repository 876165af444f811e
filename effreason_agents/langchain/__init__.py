"""LangChain front ends: the chat model, the agent middleware and cost callbacks."""

from __future__ import annotations

from effreason_agents.langchain.callbacks import CostCallbackHandler, cost_callback
from effreason_agents.langchain.chat_model import ChatCostAware
from effreason_agents.langchain.middleware import CostAwareMiddleware, DifficultySelector

__all__ = ["ChatCostAware", "CostAwareMiddleware", "CostCallbackHandler", "DifficultySelector", "cost_callback"]
