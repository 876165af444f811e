"""Shared fixtures for the integration tests, which run the real embedded llama.cpp server.

Every test under this folder is marked ``integration`` (``-m "not integration"``
skips them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from effreason_agents.config import EmbeddedConfig
from effreason_agents.embedded import EmbeddedServer, get_embedded_server, shutdown_embedded_servers

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
