"""langchain-tests' standard integration suite as this project runs it against the embedded
SmolLM2-135M tier: the feature flags and expected failures shared by every chat model under
test (``ChatCostAware`` itself, and ``ChatOpenAI`` pointed at ``effreason serve``)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

__all__ = ["SmolLM2IntegrationTests", "mark_async_tests"]


def mark_async_tests(cls: type) -> type:
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


class SmolLM2IntegrationTests(ChatModelIntegrationTests):
    """The suite with what SmolLM2-135M cannot do switched off or marked ``xfail``; subclasses
    give ``chat_model_class`` and ``chat_model_params``."""

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
