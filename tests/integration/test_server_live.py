"""``effreason serve`` as users start it (a subprocess on a free loopback port) against the
embedded SmolLM2-135M tier: the official ``openai`` client (sync, async, streaming with
usage), ``ChatOpenAI(base_url=...)`` through langchain-tests' standard integration suite
(the same feature flags as ``ChatCostAware``), and key create/list/revoke from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from serve_process import ServeProcess, write_toml  # noqa: E402
from smollm_suite import SmolLM2IntegrationTests, mark_async_tests  # noqa: E402

_DIR = Path(tempfile.mkdtemp(prefix="effreason-serve-live-"))
CONFIG = write_toml(_DIR / "effreason.toml", {
    # the embedded tier only (no remote key needed), two short arms
    "tiers": {"large": {"enabled": False}},
    "ladder": ["small:direct", "small:concise-cot"],
    "store": {"path": str(_DIR / "outcomes.sqlite")},
    "budget": {"ledger_path": str(_DIR / "ledger.sqlite")},
})
Q = [{"role": "user", "content": "What is 2 + 3?"}]


def keys_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "effreason_agents.cli", "keys", *args, "--config", str(CONFIG)],
                          capture_output=True, text=True, timeout=60)


def create_key(name: str, *extra: str) -> str:
    done = keys_cli("create", "--name", name, "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["key"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with ServeProcess(CONFIG, workers=1) as s:
        yield s


@pytest.fixture(scope="module")
def secret(server: ServeProcess) -> str:
    return create_key("live", "--budget-usd", "5")


def test_openai_client_graph_pinned_and_usage(server: ServeProcess, secret: str) -> None:
    client = openai.OpenAI(base_url=server.api_base, api_key=secret, max_retries=0)
    r = client.chat.completions.create(model="effreason", messages=Q, max_tokens=32)  # type: ignore[arg-type]
    info = r.model_extra["effreason"]
    assert r.choices[0].message.content and info["arms_tried"][0] == "small:direct"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    r = client.chat.completions.create(model="effreason/small", messages=Q, max_tokens=16)  # type: ignore[arg-type]
    assert r.choices[0].message.content and r.model_extra["effreason"]["arms_tried"] == ["small:pinned"]
    assert r.usage.completion_tokens <= 16
    assert [m.id for m in client.models.list()] == ["effreason", "effreason/small"]


def test_openai_client_streams_pinned_tokens_with_usage(server: ServeProcess, secret: str) -> None:
    client = openai.OpenAI(base_url=server.api_base, api_key=secret, max_retries=0)
    chunks = list(client.chat.completions.create(model="effreason/small", messages=Q, max_tokens=24, stream=True,
                                                 stream_options={"include_usage": True}))  # type: ignore[arg-type]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= len(pieces) - 1
    chunks = list(client.chat.completions.create(model="effreason", messages=Q, max_tokens=24, stream=True,
                                                 stream_options={"include_usage": True}))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.total_tokens > 0


@pytest.mark.asyncio
async def test_async_openai_client(server: ServeProcess, secret: str) -> None:
    client = openai.AsyncOpenAI(base_url=server.api_base, api_key=secret, max_retries=0)
    r = await client.chat.completions.create(model="effreason/small", messages=Q, max_tokens=8)  # type: ignore[arg-type]
    assert r.choices[0].message.content
    stream = await client.chat.completions.create(model="effreason/small", messages=Q, max_tokens=8, stream=True)  # type: ignore[arg-type]
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.close()


def test_keys_create_list_revoke_and_errors(server: ServeProcess) -> None:
    key = create_key("short-lived", "--budget-usd", "0.5", "--rpm", "100")
    listed = keys_cli("list", "--json")
    assert listed.returncode == 0 and key not in listed.stdout
    assert "short-lived" in [k["name"] for k in json.loads(listed.stdout)["keys"]]
    url = server.api_base + "/chat/completions"
    headers = {"authorization": f"Bearer {key}"}
    assert httpx.post(url, json={"model": "effreason/small", "messages": Q, "max_tokens": 4}, headers=headers,
                      timeout=60).status_code == 200
    assert httpx.post(url, json={"model": "nope", "messages": Q}, headers=headers).status_code == 404
    assert httpx.post(url, json={"model": "effreason", "messages": Q, "n": 3}, headers=headers).status_code == 400
    assert keys_cli("revoke", "short-lived").returncode == 0
    r = httpx.post(url, json={"model": "effreason/small", "messages": Q}, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    health = httpx.get(server.base_url + "/health").json()
    assert health["status"] == "ok" and health["tiers"]["small"]["usable"] and not health["tiers"]["large"]["usable"]


# -- ChatOpenAI(base_url=...) through the standard suite ----------------------------------

_SUITE: dict[str, Any] = {}
"""The running server's address and key, for the suite's ``chat_model_params``."""


@mark_async_tests
class TestChatOpenAIThroughServer(SmolLM2IntegrationTests):
    @pytest.fixture(autouse=True)
    def _started(self, server: ServeProcess, secret: str) -> None:
        _SUITE.update(base_url=server.api_base, api_key=secret)

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # a fresh async HTTP client per model: langchain-openai otherwise shares one across
        # tests, bound to the event loop of the first async test
        return {"model": "effreason", "base_url": _SUITE.get("base_url"), "api_key": _SUITE.get("api_key"),
                "max_tokens": 48, "stream_usage": True, "max_retries": 0, "timeout": 120,
                "http_async_client": httpx.AsyncClient(timeout=120)}
