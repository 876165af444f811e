"""langchain-tests' standard integration suite for ChatCostAware against the embedded
SmolLM2-135M tier, plus a few checks of its own. Small token caps keep it to a few minutes.

What the tiny model cannot do is switched off with the suite's own flags (tool calling;
the remote-model features) or marked ``xfail`` below, and listed in the README section."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from effreason_agents.langchain.chat_model import ChatCostAware
from smollm_suite import SmolLM2IntegrationTests, mark_async_tests  

_STORE = Path(tempfile.mkdtemp(prefix="effreason-chat-model-")) / "outcomes.sqlite"

LIVE_CONFIG: dict[str, Any] = {
    # the embedded tier only (no remote key needed), two short arms
    "tiers": {"large": {"enabled": False}},
    "ladder": ["small:direct", "small:concise-cot"],
    "store": {"path": str(_STORE)},
}


@pytest.fixture(autouse=True, scope="module")
def _server(embedded_server: Any) -> Iterator[Any]:
    """Start the shared embedded server once (and shut it down after the session)."""
    yield embedded_server


@mark_async_tests
class TestChatCostAwareLive(SmolLM2IntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatCostAware]:
        return ChatCostAware

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"config": LIVE_CONFIG, "max_tokens": 48}


def test_live_answer_metadata() -> None:
    m = ChatCostAware(config=LIVE_CONFIG, max_tokens=48)
    msg = m.invoke([HumanMessage("What is 2 + 3?")])
    assert isinstance(msg, AIMessage) and msg.content
    meta = msg.response_metadata
    assert meta["model_provider"] == "effreason" and meta["model_name"]
    assert meta["arms_tried"][0] == "small:direct"
    usage = msg.usage_metadata
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
