"""langchain-tests' standard unit suite for ChatCostAware (construction, standard params,
tools, structured output). None of these tests calls a model, and binding tools to the
embedded tier does not start its server (the endpoint is resolved on the first call)."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from effreason_agents.langchain.chat_model import ChatCostAware


class TestChatCostAwareStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatCostAware]:
        return ChatCostAware

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"log": False}

    @property
    def has_tool_calling(self) -> bool:
        return True  # passed through to one tier's ChatOpenAI (no escalation)

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True  # passed through like tools

    @property
    def supports_model_override(self) -> bool:
        return False  # the graph picks the model; a per-call model= is refused
