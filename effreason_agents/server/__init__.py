"""The OpenAI-compatible HTTP server (``effreason serve``): the cost-aware graph and each
tier behind ``/v1/chat/completions``, with virtual keys, per-key budgets and streaming."""

from __future__ import annotations

from effreason_agents.server.app import Server, create_app

__all__ = ["Server", "create_app"]
