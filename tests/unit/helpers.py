"""Scripted tiers for the unit tests: plain helpers shared by several test modules.

A :class:`FakeTierClient` is the real ``TierClient`` (prefill handling, usage, cost,
logprob parsing, error mapping) around a :class:`ScriptedChat` that returns scripted
``AIMessage``s with OpenAI-shaped logprobs, so a test controls each reply's confidence.
:func:`make_config` is the two-tier (``small``/``large``) configuration they run under and
:class:`Harness` one reasoning graph built on them; the ``make_graph`` fixture in
``conftest.py`` builds harnesses and closes them after the test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.adapters.tiers import TierClient
from effreason_agents.config import Config, config_from_data
from effreason_agents.graph.nodes import Services

__all__ = [
    "EASY",
    "ENVIRON",
    "LARGE_COST",
    "REQUEST",
    "SMALL_COST",
    "FakeTierClient",
    "Harness",
    "ScriptedChat",
    "large_reply",
    "make_config",
    "reply",
    "small_reply",
    "unreachable",
]

ENVIRON = {"LARGE_KEY": "sk-test"}
EASY = "What is 2 + 3?"  # 5 words: prompt_tokens = 5 + 96 with FakeTierClient.count_tokens
REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


# -- scripted models --------------------------------------------------------------------


def reply(
    answer: str,
    p: float,
    *,
    input_tokens: int,
    output_tokens: int,
    finish_reason: str = "stop",
    model: str = "served",
    prefix: str = "#### ",
) -> AIMessage:
    """A reply ``prefix + answer`` whose answer token has probability ``p``."""
    tokens = [(prefix, 0.99), (answer, p)] if prefix else [(answer, p)]
    return AIMessage(
        content=prefix + answer,
        usage_metadata={
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        response_metadata={
            "finish_reason": finish_reason,
            "model_name": model,
            "logprobs": {
                "content": [
                    {
                        "token": t,
                        "logprob": math.log(q),
                        "top_logprobs": [
                            {"token": t, "logprob": math.log(q)},
                            {"token": "x", "logprob": math.log((1 - q) / 2)},
                        ],
                    }
                    for t, q in tokens
                ]
            },
        },
    )


def small_reply(answer: str, p: float) -> AIMessage:
    return reply(answer, p, input_tokens=50, output_tokens=3, model="small-served")


def large_reply(answer: str, p: float) -> AIMessage:
    return reply(answer, p, input_tokens=100, output_tokens=20, model="large-served")


SMALL_COST = Decimal("0.0000056")  # 50 * 0.10 + 3 * 0.20 per 1M
LARGE_COST = Decimal("0.0002")  # 100 * 1.50 + 20 * 2.50 per 1M


def unreachable() -> openai.APIConnectionError:
    return openai.APIConnectionError(request=REQUEST)


class ScriptedChat(BaseChatModel):
    """Returns (or raises) the next item of its client's script."""

    client: Any
    defaults: dict[str, Any] = {}
    """The settings the tier's client built the model with; each call's own override them."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kw: Any) -> "ScriptedChat":
        """Records the tool names (an agent binds them) and answers from the script as before."""
        self.client.bound_tools.append([getattr(t, "name", t) for t in tools])
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.client.calls.append(list(messages))
        self.client.call_kwargs.append(dict(kw, stop=stop))
        self.client.settings.append({**self.defaults, **kw, "stop": stop if stop is not None else self.defaults.get("stop")})
        if not self.client.script:
            raise AssertionError(f"tier {self.client.name!r} called more often than scripted")
        item = self.client.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return ChatResult(generations=[ChatGeneration(message=item)])


class FakeTierClient(TierClient):
    def __init__(self, name: str, config: Config, script: list[AIMessage | BaseException]) -> None:
        super().__init__(name, config.tiers[name], config, ENVIRON)
        self.script = list(script)
        self.calls: list[list[BaseMessage]] = []
        self.settings: list[dict[str, Any]] = []
        self.bound_tools: list[list[str]] = []
        self.call_kwargs: list[dict[str, Any]] = []

    def chat_model(self, **kwargs: Any) -> ScriptedChat:
        return ScriptedChat(client=self, defaults=kwargs)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


# -- harness ----------------------------------------------------------------------------


def make_config(
    store: Path,
    *,
    ladder: tuple[str, ...] = ("small:direct", "large:cot"),
    budget: dict[str, Any] | None = None,
    small_tier: dict[str, Any] | None = None,
    large_tier: dict[str, Any] | None = None,
    escalation: dict[str, Any] | None = None,
    router: dict[str, Any] | None = None,
) -> Config:
    common = {"engine": "openai-compatible", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    logprobs = {"logprobs": True, "top_logprobs": 2}
    return config_from_data(
        {
            "tiers": {
                "small": {
                    **common,
                    "model": "small-model",
                    "price_input_per_1m": "0.10",
                    "price_output_per_1m": "0.20",
                    "capabilities": logprobs,
                    **(small_tier or {}),
                },
                "large": {
                    **common,
                    "model": "large-model",
                    "api_key_env": "LARGE_KEY",
                    "price_input_per_1m": "1.50",
                    "price_output_per_1m": "2.50",
                    "context_window": 100_000,
                    "capabilities": logprobs,
                    **(large_tier or {}),
                },
            },
            "strategies": {
                "direct": {"kind": "direct", "max_tokens": 24},
                "cot": {"kind": "cot", "max_tokens": 256},
            },
            "ladder": list(ladder),
            "budget": budget or {},
            "escalation": escalation or {},
            "router": router or {},
            "store": {"path": str(store)},
        },
        source="test",
    )


@dataclass
class Harness:
    config: Config
    small: FakeTierClient
    large: FakeTierClient
    services: Services
    graph: Any
    store_path: Path
    _stores: list[OutcomeStore] = field(default_factory=list)

    def ask(self, question: Any = EASY, context: Any = None) -> dict[str, Any]:
        out = self.graph.invoke({"question": question}, context=context)
        return out["result"]

    def store(self) -> OutcomeStore:
        s = OutcomeStore(self.store_path)
        self._stores.append(s)
        return s

    def close(self) -> None:
        self.services.close()
        for s in self._stores:
            s.close()
