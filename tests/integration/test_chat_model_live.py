"""langchain-tests' standard integration suite for ChatCostAware against the embedded
SmolLM2-135M tier, plus a few checks of its own. Small token caps keep it to a few minutes.

What the tiny model cannot do is switched off with the suite's own flags (tool calling;
the remote-model features) or marked ``xfail`` below, and listed in the README section."""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests

from effreason_agents.langchain.chat_model import ChatCostAware

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


def _mark_async_tests(cls: type) -> type:
    """Mark the suite's ``async def`` tests for pytest-asyncio (a langchain-tests dependency;
    this project runs it in strict mode, langchain's own repos use ``asyncio_mode = "auto"``).

    The mark is added to the inherited function objects themselves: the suite's
    ``test_no_overrides_DO_NOT_OVERRIDE`` forbids replacing them. Any other subclass of
    ``ChatModelIntegrationTests`` in the same session needs the same mark, so this is benign."""
    for name in dir(cls):
        fn = getattr(cls, name)
        if name.startswith("test_") and inspect.iscoroutinefunction(fn):
            if not any(m.name == "asyncio" for m in getattr(fn, "pytestmark", [])):
                pytest.mark.asyncio(fn)
    return cls


@_mark_async_tests
class TestChatCostAwareLive(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatCostAware]:
        return ChatCostAware

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"config": LIVE_CONFIG, "max_tokens": 48}

    @property
    def has_tool_calling(self) -> bool:
        return False  # SmolLM2-135M does not make usable tool calls

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # the graph picks the model; a per-call model= is refused

    @pytest.mark.xfail(reason="a pydantic v1 schema falls back to function calling, which SmolLM2-135M cannot do",
                       strict=False)
    def test_structured_output_pydantic_2_v1(self, model: Any) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason="SmolLM2-135M fills the JSON grammar past the 48-token cap (LengthFinishReasonError)",
                       strict=False)
    def test_structured_output_optional_param(self, model: Any) -> None:
        super().test_structured_output_optional_param(model)


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
