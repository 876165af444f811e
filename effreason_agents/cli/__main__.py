"""``python -m effreason_agents.cli``: the ``effreason`` command."""

from __future__ import annotations

from effreason_agents.cli import main

__all__: list[str] = []

main()
