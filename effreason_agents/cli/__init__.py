"""The ``effreason`` command line: ``app`` (the typer application) and ``main`` (the
console-script entry point; ``python -m effreason_agents.cli`` runs it too)."""

from __future__ import annotations

from effreason_agents.cli.app import app, main

__all__ = ["app", "main"]
