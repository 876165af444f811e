"""Fixtures shared by the unit tests.

``make_graph``
    builds reasoning graphs on scripted tiers (:mod:`helpers`): ``make_graph(small=[...],
    large=[...], **config)`` returns a :class:`helpers.Harness`; each is closed after the test.
``fake_openai``
    a started loopback OpenAI-compatible server (:class:`fake_openai.FakeOpenAI`) in mode
    ``ok``; set ``fake_openai.mode`` to change how it answers.
``make_fake_openai``
    starts more of them: ``make_fake_openai("error_500")``; all are closed after the test.
``serve_app``
    runs an ASGI app (the OpenAI-compatible server) under uvicorn on a free loopback port in
    a thread: ``base_url = serve_app(app)`` (``http://127.0.0.1:PORT``); stopped after the test.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # tests/fake_openai.py is shared by every test folder
    sys.path.insert(0, str(_TESTS))

from fake_openai import FakeOpenAI  # noqa: E402
from helpers import ENVIRON, FakeTierClient, Harness, make_config  # noqa: E402

from effreason_agents.graph.builder import build_reasoning_graph  # noqa: E402
from effreason_agents.graph.nodes import Services  # noqa: E402


@pytest.fixture()
def make_graph(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(
        small: Sequence[AIMessage | BaseException] = (),
        large: Sequence[AIMessage | BaseException] = (),
        **config_kw: Any,
    ) -> Harness:
        store_path = tmp_path / f"outcomes{len(made)}.sqlite"
        config = make_config(store_path, **config_kw)
        clients = {
            "small": FakeTierClient("small", config, list(small)),
            "large": FakeTierClient("large", config, list(large)),
        }
        services = Services(config, environ=ENVIRON, clients=clients)
        graph = build_reasoning_graph(config, services=services)
        h = Harness(config, clients["small"], clients["large"], services, graph, store_path)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture()
def make_fake_openai() -> Iterator[Callable[..., FakeOpenAI]]:
    started: list[FakeOpenAI] = []

    def make(mode: str = "ok", **kwargs: Any) -> FakeOpenAI:
        server = FakeOpenAI(mode, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture()
def fake_openai(make_fake_openai: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return make_fake_openai("ok")


@pytest.fixture()
def serve_app() -> Iterator[Callable[[Any], str]]:
    import socket
    import threading
    import time

    import uvicorn

    running: list[tuple[Any, threading.Thread]] = []

    def serve(app: Any) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        running.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield serve
    for server, thread in running:
        server.should_exit = True
        thread.join(30)
