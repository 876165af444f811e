"""Shared fixtures for the integration tests, which run the real embedded llama.cpp server.

Every test under this folder is marked ``integration`` (``-m "not integration"``
skips them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from effreason_agents.config import EmbeddedConfig
from effreason_agents.adapters.embedded import EmbeddedServer, get_embedded_server, shutdown_embedded_servers

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def embedded_settings() -> EmbeddedConfig:
    """The embedded server settings the tests share (the defaults: n_ctx 4096, 2 parallel slots)."""
    return EmbeddedConfig(n_ctx=4096, n_parallel=2)


@pytest.fixture(scope="session")
def embedded_server(embedded_settings: EmbeddedConfig) -> Iterator[EmbeddedServer]:
    """A started embedded server (SmolLM2-135M-Instruct), shared by the whole session.

    It is the registry's server, so library code calling ``get_embedded_server``
    with equal settings reuses it instead of loading the model again.
    """
    server = get_embedded_server(embedded_settings)
    try:
        yield server
    finally:
        shutdown_embedded_servers()


EFFREASON_CLI = [sys.executable, "-m", "effreason_agents.cli"]


@pytest.fixture()
def cli_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Build the environment for an ``effreason`` subprocess: no OPENAI_*/EFFREASON* variables
    from the caller, the outcome store in ``tmp_path``, plus ``extra``."""

    def make(**extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EFFREASON"))}
        env["EFFREASON_STORE"] = str(tmp_path / "outcomes.sqlite")
        env.update(extra)
        return env

    return make
