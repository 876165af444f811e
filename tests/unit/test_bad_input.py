"""Bad input is refused before any model is called or any budget is held, and a provider's
error message that quotes the API key never ends up in what the library stores or prints.

* Questions with nothing to answer — only NUL bytes, zero-width spaces, a byte-order mark,
  whitespace and control characters — raise ``InvalidQuestionError`` through the graph,
  ``ChatCostAware`` and ``CostAwareMiddleware``, with no call and no hold.
* A configuration file that is not UTF-8, or not TOML, raises ``ConfigError`` naming the file.
* A provider that echoes the bearer key in its error (``Incorrect API key provided: sk-…``):
  the key appears in neither the outcome store's files, the graph's result, nor the output
  of ``effreason ask --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from budget_helpers import fake_tier, hold_counts, make_config
from fake_openai import FakeOpenAI

from effreason_agents.config import load_config
from effreason_agents.errors import ConfigError, InvalidQuestionError
from effreason_agents.graph import ReasoningContext, build_reasoning_graph
from effreason_agents.langchain.chat_model import ChatCostAware
from effreason_agents.langchain.middleware import CostAwareMiddleware

EMPTY_QUESTIONS = {
    "nul": "\x00\x00\x00",
    "zero-width": "\u200b\u200b\u200b",
    "bom": "\ufeff",
    "controls": " \t\x01\x02\x7f\n\r\x0b\x0c \x1b ",
    "mixed": "\ufeff\u200b \x00\u200c\u200d\u2060\t\x00",
}
SECRET = "sk-test-SECRET1234567890abcdef"
KEY_ENV = "EFFREASON_TEST_PROVIDER_KEY"


def config_for(tmp_path: Path, server: FakeOpenAI, **tier: Any) -> Any:
    return make_config(tmp_path, {"fast": fake_tier(server.base_url, **tier)}, ["fast:direct"],
                       budget={"max_cost_usd": "0.01", "thread": {"max_cost_usd": "0.05"}})


def assert_untouched(server: FakeOpenAI, ledger_path: Path) -> None:
    assert server.received == 0, "a model was called for a question with nothing to answer"
    counts = hold_counts(ledger_path)
    assert sum(counts.values()) == 0, f"a hold was written for a refused question: {counts}"


# -- questions with nothing to answer -----------------------------------------------------


@pytest.mark.parametrize("question", list(EMPTY_QUESTIONS.values()), ids=list(EMPTY_QUESTIONS))
def test_graph_refuses_a_question_with_nothing_to_answer(tmp_path: Path, fake_openai: FakeOpenAI, question: str) -> None:
    config = config_for(tmp_path, fake_openai)
    graph = build_reasoning_graph(config)
    try:
        with pytest.raises(InvalidQuestionError):
            graph.invoke({"question": question}, context=ReasoningContext(thread_id="t", user_id="ann"))
    finally:
        graph.services.close()
    assert_untouched(fake_openai, config.ledger_path())


@pytest.mark.parametrize("question", list(EMPTY_QUESTIONS.values()), ids=list(EMPTY_QUESTIONS))
def test_chat_model_refuses_a_question_with_nothing_to_answer(
    tmp_path: Path, fake_openai: FakeOpenAI, question: str
) -> None:
    config = config_for(tmp_path, fake_openai)
    model = ChatCostAware(config=config, thread_id="t", user_id="ann")
    try:
        with pytest.raises(InvalidQuestionError):
            model.invoke([HumanMessage(question)])
    finally:
        model.close()
    assert_untouched(fake_openai, config.ledger_path())


@pytest.mark.parametrize("question", list(EMPTY_QUESTIONS.values()), ids=list(EMPTY_QUESTIONS))
def test_middleware_refuses_a_question_with_nothing_to_answer(
    tmp_path: Path, fake_openai: FakeOpenAI, question: str
) -> None:
    config = config_for(tmp_path, fake_openai)
    mw = CostAwareMiddleware(config, max_tokens=24)
    agent = create_agent(model=mw.base_model(), tools=[], middleware=[mw])
    try:
        with pytest.raises(InvalidQuestionError):
            agent.invoke({"messages": [HumanMessage(question)]}, {"configurable": {"thread_id": "t"}},
                         context={"user_id": "ann"})
    finally:
        mw.services.close()
    assert_untouched(fake_openai, config.ledger_path())


# -- configuration files --------------------------------------------------------------------


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "effreason.toml"
    path.write_bytes(b"\xff\xfe[tiers]")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


def test_config_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "effreason.toml"
    path.write_text("[tiers\nthis is = = not toml\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


# -- a provider error that quotes the API key ----------------------------------------------


def files_containing(root: Path, secret: str) -> list[str]:
    """Files under ``root`` (SQLite databases with their -wal/-shm files included) whose bytes
    contain ``secret``."""
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture()
def keyed_server(make_fake_openai: Callable[..., FakeOpenAI], monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return make_fake_openai("error_with_key")


def test_provider_error_quoting_the_key_is_not_stored(tmp_path: Path, keyed_server: FakeOpenAI) -> None:
    data = tmp_path / "data"
    config = config_for(data, keyed_server, api_key_env=KEY_ENV)
    graph = build_reasoning_graph(config)
    try:
        result = graph.invoke({"question": "What is 2 + 3?"}, context=ReasoningContext(thread_id="t"))["result"]
    finally:
        graph.services.close()
    assert keyed_server.authorization == [f"Bearer {SECRET}"]  # the provider did see the key
    assert result["status"] == "failed"
    assert result["attempts"][0]["error"], "the failed attempt should say what went wrong"
    assert SECRET not in json.dumps(result, default=str)
    assert files_containing(data, SECRET) == []


def test_cli_never_prints_a_key_the_provider_quoted(tmp_path: Path, keyed_server: FakeOpenAI) -> None:
    data = tmp_path / "data"
    config_file = tmp_path / "effreason.toml"
    config_file.write_text(
        f"""ladder = ["fast:direct"]

[tiers.fast]
engine = "openai-compatible"
model = "fake"
base_url = "{keyed_server.base_url}"
api_key_env = "{KEY_ENV}"
price_input_per_1m = "1.0"
price_output_per_1m = "4.0"
timeout_s = 10.0
max_retries = 0
capabilities = {{ logprobs = true, top_logprobs = 2 }}

[escalation]
calibrators = "off"
start_arm = {{ easy = "fast:direct", medium = "fast:direct", hard = "fast:direct" }}

[budget]
ledger_path = "{data / 'ledger.sqlite'}"

[store]
path = "{data / 'outcomes.sqlite'}"
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EFFREASON"))}
    env[KEY_ENV] = SECRET
    proc = subprocess.run(
        [sys.executable, "-m", "effreason_agents.cli", "ask", "--json", "--config", str(config_file), "What is 2 + 3?"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert keyed_server.received == 1, f"the CLI did not reach the provider:\n{proc.stdout}\n{proc.stderr}"
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "failed"
    assert files_containing(data, SECRET) == []
