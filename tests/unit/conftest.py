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


# -- databases: SQLite files and a real PostgreSQL ------------------------------------
#
# ``pg_server``
#     a PostgreSQL 16 server (the ``pgserver`` wheel) in a temporary directory, for the
#     whole session: ``pg_server.create_database()`` returns the URL of a fresh, empty
#     database; ``pg_server.url(name)`` the URL of a database. Tuned for tests (fsync off).
# ``pg_url``
#     the URL of a fresh, empty database for one test (dropped afterwards, its leftover
#     connections closed).
# ``db_target``
#     parametrized over both backends: a SQLite file path in ``tmp_path`` (a str), or a
#     fresh PostgreSQL database URL. Tests ids end in ``[sqlite]`` / ``[postgresql]``.
# ``make_db_target``
#     more targets of the same backend as ``db_target`` (a second ledger, a second store).
# ``db_rows``
#     ``db_rows(target, sql, params=())``: the rows of one statement as tuples (``[]`` for one
#     that returns none), run without the library and committed (sqlite3 or psycopg; ``?``
#     placeholders on both).
# ``pg_data_dir``
#     an empty directory for a PostgreSQL server of a test's own (removed afterwards).
#
# PostgreSQL's data directories live outside pytest's temporary directory: pgserver runs the
# server as another user when the tests run as root, and every pytest session (other
# engineers' included) resets /tmp/pytest-of-<user> to mode 0700.


def _new_pg_data_dir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="effreason-pg-")) / "data"


def _remove_pg_data_dir(data: Path) -> None:
    import shutil

    shutil.rmtree(data.parent, ignore_errors=True)


class PgTestServer:
    """A pgserver-started PostgreSQL and an admin connection that creates and drops
    the tests' databases."""

    def __init__(self, handle: Any) -> None:
        import psycopg

        self.handle = handle
        self.uri = handle.get_uri()
        self._admin = psycopg.connect(self.uri, autocommit=True)
        self._made: list[str] = []

    def url(self, database: str) -> str:
        return self.handle.get_uri(database=database)

    def create_database(self) -> str:
        import uuid

        name = f"t_{uuid.uuid4().hex[:16]}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self._made.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self._admin.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgTestServer]:
    pgserver = pytest.importorskip("pgserver", reason="the PostgreSQL tests need the pgserver wheel (test extra)")
    import psycopg

    data = _new_pg_data_dir()
    handle = pgserver.get_server(data, cleanup_mode="stop")
    with psycopg.connect(handle.get_uri(), autocommit=True) as conn:
        for name, value in (("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off"),
                            ("max_connections", "300")):
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    handle.cleanup()  # stop, so that max_connections applies at the next start
    handle = pgserver.get_server(data, cleanup_mode="stop")
    server = PgTestServer(handle)
    try:
        yield server
    finally:
        server.close()
        handle.cleanup()
        _remove_pg_data_dir(data)


@pytest.fixture()
def pg_data_dir() -> Iterator[Path]:
    data = _new_pg_data_dir()
    yield data
    _remove_pg_data_dir(data)


@pytest.fixture()
def pg_url(pg_server: PgTestServer) -> Iterator[str]:
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def make_db_target(db_dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    made: list[str] = []
    server: PgTestServer | None = request.getfixturevalue("pg_server") if db_dialect == "postgresql" else None

    def make() -> str:
        if server is None:
            target = str(tmp_path / f"db{len(made)}.sqlite")
        else:
            target = server.create_database()
        made.append(target)
        return target

    yield make
    if server is not None:
        for url in made:
            server.drop_database(url)


@pytest.fixture()
def db_target(make_db_target: Callable[[], str]) -> str:
    return make_db_target()


@pytest.fixture()
def db_rows() -> Callable[..., list[tuple[Any, ...]]]:
    import sqlite3

    def rows(target: str | Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if str(target).startswith(("postgresql://", "postgres://")):
            import psycopg

            with psycopg.connect(str(target), autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), tuple(params))
                return [tuple(r) for r in cursor.fetchall()] if cursor.description else []
        conn = sqlite3.connect(str(target), timeout=30, isolation_level=None)
        try:
            return [tuple(r) for r in conn.execute(sql, tuple(params)).fetchall()]
        finally:
            conn.close()

    return rows
