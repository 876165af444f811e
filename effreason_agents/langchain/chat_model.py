"""``ChatCostAware``: the cost-aware reasoning graph as a LangChain chat model.

::

    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from effreason_agents import ChatCostAware

    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | ChatCostAware() | StrOutputParser()
    chain.invoke({"q": "What is 2 + 3?"})

Each call runs :func:`~effreason_agents.graph.builder.build_reasoning_graph` on the last human
message (earlier answered turns become context, system messages become instructions),
and returns an :class:`~langchain_core.messages.AIMessage` with the final answer,
``usage_metadata`` summed over every attempt and ``response_metadata`` naming the model
of the tier that answered, the arms tried, confidence, cost and status.

Calls with tools (:meth:`ChatCostAware.bind_tools`) or structured output
(:meth:`ChatCostAware.with_structured_output`) do not run the reasoning strategies: they go
to the tier :class:`~effreason_agents.langchain.middleware.CostAwareMiddleware` picks for the question
(or ``tools_tier``), held in the same budget ledger and escalated once on a low-confidence
reply without tool calls. They are not written to the outcome store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from effreason_agents.config import Config, config_from_data, default_config_data, load_config
from effreason_agents.core.messages import block_text, check_tool_messages, messages_to_question
from effreason_agents.errors import ConfigError

__all__ = ["ChatCostAware", "check_tool_messages", "messages_to_question"]

LLM_TYPE = "effreason-cost-aware"
PROVIDER = "effreason"
STREAM_CHUNK_CHARS = 16
TIER_CALL_KWARGS = {"tools", "tool_choice", "parallel_tool_calls", "response_format"}
"""Per-call arguments (set by :meth:`ChatCostAware.bind_tools` / :meth:`~ChatCostAware.with_structured_output`)
that send the call to one tier instead of the reasoning graph."""


# -- the chat model ----------------------------------------------------------------------


class ChatCostAware(BaseChatModel):
    """The cost-aware reasoning graph as a LangChain chat model (see the module docstring).

    Every field is optional: ``ChatCostAware()`` uses :func:`~effreason_agents.config.load_config`
    (the embedded SmolLM2-135M tier by default). The standard chat-model parameters change the
    configuration: ``max_tokens`` caps every arm's output tokens, ``temperature`` sets the
    non-sampling strategies' temperature, ``timeout`` / ``max_retries`` apply to every tier,
    ``api_key`` is the key of the tiers that read one from ``api_key_env``, and ``stop``
    sequences cut the final answer text.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    config: Config | str | Path | dict[str, Any] | None = None
    """An effreason :class:`Config`, a path to a TOML file, a dict merged over the built-in
    default, or ``None`` for :func:`load_config`."""
    thread_id: str | None = None
    """Charge calls to this conversation thread's budget too."""
    user_id: str | None = None
    """Charge calls to this user's budget too."""
    max_cost_usd: str | float | None = None
    """A dollar limit per request (the smaller of this and the config's wins)."""
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Escalate while confidence is below this (default: the config's)."""
    log: bool = True
    """Record every request and its attempts in the outcome store."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    stop: list[str] | None = None
    api_key: SecretStr | None = None
    streaming: bool = False
    """``invoke`` streams (through :meth:`_stream`) when true."""
    tools_tier: str | None = None
    """Send every call with bound tools or structured output to this tier (default: the tier
    picked per request from the question's difficulty, or the router)."""
    graph: Any = Field(default=None, exclude=True, repr=False)
    """A prebuilt reasoning graph (tests); it must carry ``.services`` like
    :func:`~effreason_agents.graph.builder.build_reasoning_graph`'s."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _graph: Any = PrivateAttr(default=None)
    _config: Config | None = PrivateAttr(default=None)
    _middleware: Any = PrivateAttr(default=None)

    # -- construction --------------------------------------------------------------
    @classmethod
    def from_config(cls, path_or_dict: str | os.PathLike[str] | Mapping[str, Any] | Config, **kwargs: Any) -> "ChatCostAware":
        """Build from a TOML file path, a dict (merged over the built-in default, like a file)
        or a :class:`Config`; ``kwargs`` are the other fields. The configuration is checked
        now (:class:`~effreason_agents.errors.ConfigError`), no model is started."""
        model = cls(config=path_or_dict if isinstance(path_or_dict, (Config, Mapping)) else Path(path_or_dict), **kwargs)
        model.effective_config()
        return model

    def _base_config(self) -> Config:
        if self.graph is not None and getattr(self.graph, "services", None) is not None:
            return self.graph.services.config
        c = self.config
        if isinstance(c, Config):
            return c
        if isinstance(c, Mapping):
            from effreason_agents.config import _deep_merge

            return config_from_data(_deep_merge(default_config_data(), dict(c)), source="ChatCostAware(config=dict)")
        return load_config(c)

    def effective_config(self) -> Config:
        """The configuration the graph runs with: ``config`` with the standard parameters applied."""
        with self._lock:
            if self._config is None:
                self._config = self._apply_params(self._base_config())
            return self._config

    def _apply_params(self, config: Config) -> Config:
        if self.graph is not None or all(
            v is None for v in (self.max_tokens, self.temperature, self.timeout, self.max_retries)
        ):
            return config
        data = config.model_dump(mode="python", exclude={"source"}, exclude_unset=True)
        for s in data["strategies"].values():
            if self.max_tokens is not None:
                s["max_tokens"] = min(int(s["max_tokens"]), self.max_tokens)
            if self.temperature is not None and s.get("kind") not in ("sc", "bon"):  # samplers keep theirs
                s["temperature"] = self.temperature
        if self.max_tokens is not None:
            for arm in data["ladder"]:
                if arm.get("max_tokens"):
                    arm["max_tokens"] = min(int(arm["max_tokens"]), self.max_tokens)
        for t in data["tiers"].values():
            if self.timeout is not None:
                t["timeout_s"] = float(self.timeout)
            if self.max_retries is not None:
                t["max_retries"] = self.max_retries
        return config_from_data(data, source=f"{config.source} + ChatCostAware parameters")

    def _environ(self, config: Config) -> dict[str, str] | None:
        if self.api_key is None:
            return None
        env = dict(os.environ)
        key = self.api_key.get_secret_value()
        for tier in config.tiers.values():
            if tier.api_key_env:
                env[tier.api_key_env] = key
        return env

    def reasoning_graph(self) -> Any:
        """The reasoning graph this model runs, built once (thread-safe) on first use."""
        if self.graph is not None:
            return self.graph
        config = self.effective_config()
        with self._lock:
            if self._graph is None:
                from effreason_agents.graph.builder import build_reasoning_graph
                from effreason_agents.graph.nodes import Services

                services = Services(config, environ=self._environ(config))
                self._graph = build_reasoning_graph(config, services=services)
            return self._graph

    def close(self) -> None:
        """Close the outcome store and budget ledger of the graph this model built (a later
        call reopens them). A graph passed in as ``graph`` is left to its owner."""
        with self._lock:
            graph, self._graph, self._middleware = self._graph, None, None
        services = getattr(graph, "services", None)
        if services is not None:
            services.close()

    # -- LangChain plumbing --------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return LLM_TYPE

    @property
    def _identifying_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "config": str(self.config) if isinstance(self.config, (str, Path)) else None,
            "thread_id": self.thread_id,
            "user_id": self.user_id,
            "max_cost_usd": None if self.max_cost_usd is None else str(self.max_cost_usd),
            "confidence_threshold": self.confidence_threshold,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        return {k: v for k, v in params.items() if v is not None}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(
            ls_provider=PROVIDER,
            ls_model_name=str(kwargs.get("model") or LLM_TYPE),
            ls_model_type="chat",
            ls_temperature=self.temperature,
        )
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        return params

    # -- calls ---------------------------------------------------------------------
    def _context(self) -> Any:
        from effreason_agents.graph.state import ReasoningContext

        return ReasoningContext(
            confidence_threshold=self.confidence_threshold,
            max_cost_usd=self.max_cost_usd,
            log=self.log,
            thread_id=self.thread_id,
            user_id=self.user_id,
        )

    def _answer(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: Mapping[str, Any],
    ) -> AIMessage:
        unknown = sorted(set(kwargs) - {"stream"} - TIER_CALL_KWARGS)
        if unknown:
            raise ValueError(
                f"ChatCostAware does not take per-call arguments {unknown}: the graph picks the model and "
                "its settings; set fields on the model instead (or use bind_tools / with_structured_output)"
            )
        if any(kwargs.get(k) for k in TIER_CALL_KWARGS):
            return self._tier_call(messages, stop, run_manager, kwargs)
        question = messages_to_question(messages)
        config = {"callbacks": _child_callbacks(run_manager)} if run_manager is not None else None
        graph = self.reasoning_graph()
        out = _without_counting_hooks(graph.invoke, {"question": question}, config=config, context=self._context())
        return result_message(out["result"], stop=stop if stop is not None else self.stop)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self._answer(messages, stop, run_manager, kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Runs the graph, then yields the final answer in pieces; ``usage_metadata`` and
        ``response_metadata`` come on the last chunk only (so summing chunks counts once)."""
        message = self._answer(messages, stop, run_manager, kwargs)
        if message.tool_calls or not isinstance(message.content, str):
            generation = ChatGenerationChunk(message=_whole_chunk(message))
            if run_manager is not None:
                run_manager.on_llm_new_token(str(message.text), chunk=generation)
            yield generation
            return
        text = str(message.content)
        pieces = [text[i : i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)] or [""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            chunk = AIMessageChunk(
                content=piece,
                id=message.id,
                usage_metadata=message.usage_metadata if last else None,
                response_metadata=dict(message.response_metadata) if last else {},
                chunk_position="last" if last else None,
            )
            generation = ChatGenerationChunk(message=chunk)
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=generation)
            yield generation

    # -- tools and structured output (one tier per call, through CostAwareMiddleware) ----
    def tool_middleware(self) -> Any:
        """The :class:`~effreason_agents.langchain.middleware.CostAwareMiddleware` that answers calls with
        bound tools or a response format, sharing this model's tier clients and budget ledger."""
        graph = self.reasoning_graph()
        with self._lock:
            if self._middleware is None:
                from effreason_agents.langchain.middleware import DEFAULT_MAX_TOKENS, CostAwareMiddleware

                config = graph.services.config
                self._check_tools_tier(config)
                tier = self.tools_tier
                self._middleware = CostAwareMiddleware(
                    services=graph.services,
                    select=(lambda _request: tier) if tier else None,
                    max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS,
                    temperature=self.temperature or 0.0,
                    confidence_threshold=self.confidence_threshold,
                )
            return self._middleware

    def _check_tools_tier(self, config: Config) -> None:
        if self.tools_tier is not None and self.tools_tier not in config.tiers:
            raise ConfigError(
                f"tools_tier {self.tools_tier!r} is not a configured tier (known: {', '.join(sorted(config.tiers))})"
            )

    def _tier_call(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: Mapping[str, Any],
    ) -> AIMessage:
        """One model call with the bound tools / response format, on the tier the middleware picks
        (difficulty or router, or ``tools_tier``), held in the budget ledger, escalated once on a
        low-confidence reply without tool calls."""
        from langchain.agents.middleware import ModelRequest

        messages_to_question(messages)  # the same bad-input checks as a graph call
        middleware = self.tool_middleware()
        system = [str(block_text(m.content, "system message")).strip() for m in messages if isinstance(m, SystemMessage)]
        rest = [m for m in messages if not isinstance(m, SystemMessage)]
        request = ModelRequest(
            model=self,
            messages=rest,
            system_message=SystemMessage("\n".join(t for t in system if t)) if any(system) else None,
            tools=list(kwargs.get("tools") or []),
            tool_choice=kwargs.get("tool_choice"),
            state={"messages": rest},
            runtime=SimpleNamespace(context={"thread_id": self.thread_id, "user_id": self.user_id}),
        )
        config = {"callbacks": _child_callbacks(run_manager)} if run_manager is not None else {"callbacks": []}
        call_kwargs = {k: v for k, v in kwargs.items() if k in TIER_CALL_KWARGS}

        def handler(req: Any) -> AIMessage:
            sent = ([req.system_message] if req.system_message is not None else []) + list(req.messages)
            return req.model.invoke(sent, config=config, stop=stop if stop is not None else self.stop, **call_kwargs)

        reply = _without_counting_hooks(middleware.wrap_model_call, request, handler)
        info = dict(reply.response_metadata.get("effreason") or {})
        meta = {
            **reply.response_metadata,
            "model_name": info.get("model") or reply.response_metadata.get("model_name"),
            "model_provider": PROVIDER,
            "tier": info.get("tier"),
            "arms_tried": [f"{t}:tools" for t in info.get("tiers_tried") or []],
            "escalated": bool(info.get("escalated")),
            "confidence": info.get("confidence"),
            "cost_usd": info.get("cost_usd", "0"),
            "status": info.get("status"),
            "answered": info.get("status") != "budget_exhausted",
        }
        i, o = int(info.get("input_tokens") or 0), int(info.get("output_tokens") or 0)
        return reply.model_copy(
            update={"response_metadata": meta, "usage_metadata": {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}}
        )

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (anything :func:`~langchain_core.utils.function_calling.convert_to_openai_tool`
        accepts). Each call then goes to one tier, picked per request like
        :class:`~effreason_agents.langchain.middleware.CostAwareMiddleware` does (or ``tools_tier``), with its
        worst case held in the budget ledger; a reply without tool calls and with low confidence
        is retried once on the next tier. ``tool_choice``: a tool name, ``"auto"``, ``"none"``,
        ``"any"``/``"required"``/``True``, or an OpenAI tool-choice dict."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        self._check_tools_tier(self.effective_config())
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        names = {t["function"]["name"] for t in formatted if "function" in t}
        if tool_choice is not None and tool_choice is not False:
            if tool_choice is True or tool_choice == "any":
                tool_choice = "required"
            elif isinstance(tool_choice, str) and tool_choice in names:
                tool_choice = {"type": "function", "function": {"name": tool_choice}}
            elif not isinstance(tool_choice, (str, dict)):
                raise ValueError(f"tool_choice must be a tool name, 'auto', 'none', 'any', True or a dict, got {tool_choice!r}")
            kwargs["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: Any = None,
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Output parsed into ``schema`` (a pydantic model, TypedDict or JSON schema), from one
        tier per call as for :meth:`bind_tools`. ``method``: ``"json_schema"`` (the server
        constrains the output to the schema; llama.cpp and vLLM do), ``"function_calling"`` or
        ``"json_mode"``. With ``include_raw=True`` the result is ``{"raw", "parsed",
        "parsing_error"}``."""
        from operator import itemgetter

        from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
        from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
        from langchain_core.runnables import RunnableMap, RunnablePassthrough
        from langchain_core.utils.function_calling import convert_to_openai_tool
        from langchain_core.utils.pydantic import is_basemodel_subclass

        if method not in ("json_schema", "function_calling", "json_mode"):
            raise ValueError(f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}")
        if schema is None and method != "json_mode":
            raise ValueError(f"schema is required with method={method!r}")
        if strict is not None and method == "json_mode":
            raise ValueError("strict is not supported with method='json_mode'")
        pydantic_v2 = isinstance(schema, type) and is_basemodel_subclass(schema) and hasattr(schema, "model_validate")
        pydantic_any = isinstance(schema, type) and (pydantic_v2 or hasattr(schema, "parse_obj"))
        if method == "json_schema" and pydantic_any and not pydantic_v2:
            method = "function_calling"  # a pydantic v1 model has no JSON schema for response_format
        ls_format = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name, strict=strict, ls_structured_output_format=ls_format, **kwargs)
            parser: Runnable = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic_any
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        else:
            if method == "json_mode":
                response_format: dict[str, Any] = {"type": "json_object"}
            else:
                fn = convert_to_openai_tool(schema, strict=strict)["function"]
                spec = {"name": fn["name"], "schema": fn["parameters"]}
                if fn.get("description"):
                    spec["description"] = fn["description"]
                if strict is not None:
                    spec["strict"] = strict
                response_format = {"type": "json_schema", "json_schema": spec}
            llm = self.bind(response_format=response_format, ls_structured_output_format=ls_format, **kwargs)
            parser = PydanticOutputParser(pydantic_object=schema) if pydantic_v2 else JsonOutputParser()
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")

def _child_callbacks(run_manager: CallbackManagerForLLMRun) -> Any:
    """Callbacks for the graph run inside this chat-model run (LLM run managers have no
    ``get_child``): the inheritable tags and metadata, and the inheritable *tracers* (LangSmith,
    console, event streams), parented to this run, so traces show every tier call nested under it.

    Other handlers see this chat-model run only: its message already carries the usage summed
    over every attempt, and counting the tier calls as well would count them twice (as
    ``get_usage_metadata_callback`` would)."""
    from langchain_core.callbacks import CallbackManager
    from langchain_core.tracers.base import BaseTracer

    manager = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers([h for h in run_manager.inheritable_handlers if isinstance(h, BaseTracer)])
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def _without_counting_hooks(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a copy of the current context where the callback handlers
    that LangChain adds to every run from a context variable (``get_usage_metadata_callback()``
    and the like) are unset, unless they are tracers: the inner tier calls would otherwise be
    counted as well as this run, whose message carries their summed usage."""
    import contextvars

    def run() -> Any:
        try:
            from langchain_core.tracers.base import BaseTracer
            from langchain_core.tracers.context import _configure_hooks
        except ImportError:  # another langchain-core layout: nothing to unset
            return fn(*args, **kwargs)
        for var, *_ in _configure_hooks:
            value = var.get()
            if value is not None and not isinstance(value, BaseTracer) and not isinstance(value, bool):
                var.set(None)
        return fn(*args, **kwargs)

    return contextvars.copy_context().run(run)


def _whole_chunk(message: AIMessage) -> AIMessageChunk:
    """``message`` as one stream chunk (tool calls as tool-call chunks), the last of its stream."""
    import json

    from langchain_core.messages.tool import tool_call_chunk

    return AIMessageChunk(
        content=message.content,
        id=message.id,
        tool_call_chunks=[
            tool_call_chunk(name=tc["name"], args=json.dumps(tc["args"]), id=tc.get("id"), index=i)
            for i, tc in enumerate(message.tool_calls)
        ],
        usage_metadata=message.usage_metadata,
        response_metadata=dict(message.response_metadata),
        additional_kwargs=dict(message.additional_kwargs),
        chunk_position="last",
    )


# -- result → message (pure) -------------------------------------------------------------


def _cut(text: str, stop: Sequence[str] | None) -> str:
    cuts = [text.find(s) for s in stop or [] if s and s in text]
    return text[: min(cuts)] if cuts else text


def result_message(result: Mapping[str, Any], stop: Sequence[str] | None = None) -> AIMessage:
    """The :class:`AIMessage` for the reasoning graph's ``result``."""
    from effreason_agents.graph.chat import refusal_text

    attempts = list(result.get("attempts") or [])
    final = result.get("final_attempt")
    chosen = attempts[final] if isinstance(final, int) and 0 <= final < len(attempts) else (attempts[-1] if attempts else {})
    answer = result.get("answer")
    status = result.get("status")
    if answer is not None:
        content = str(answer)
    elif status == "budget_exhausted":
        content = refusal_text({}, result.get("reason"))
    else:
        content = f"I couldn't find an answer: {result.get('reason') or 'no arm answered'}."
    content = _cut(content, stop)
    in_tok = sum(int(a.get("input_tokens") or 0) for a in attempts)
    out_tok = sum(int(a.get("output_tokens") or 0) for a in attempts)
    meta = {
        "model_name": chosen.get("model"),
        "model_provider": PROVIDER,
        "tier": chosen.get("tier"),
        "arms_tried": list(result.get("arms_tried") or [a.get("arm") for a in attempts]),
        "escalated": bool(result.get("escalated")),
        "confidence": result.get("confidence"),
        "cost_usd": str(result.get("total_cost_usd") or "0"),
        "status": status,
        "answered": answer is not None,
        "request_id": result.get("request_id"),
        "budget_scope": result.get("budget_scope"),
        "finish_reason": chosen.get("finish_reason") or "stop",
    }
    return AIMessage(
        content=content,
        response_metadata=meta,
        usage_metadata={"input_tokens": in_tok, "output_tokens": out_tok, "total_tokens": in_tok + out_tok},
    )
