"""``ChatCostAware``: the cost-aware reasoning graph as a LangChain chat model.

::

    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from effreason_agents import ChatCostAware

    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | ChatCostAware() | StrOutputParser()
    chain.invoke({"q": "What is 2 + 3?"})

Each call runs :func:`~effreason_agents.graph.build_reasoning_graph` on the last human
message (earlier answered turns become context, system messages become instructions),
and returns an :class:`~langchain_core.messages.AIMessage` with the final answer,
``usage_metadata`` summed over every attempt and ``response_metadata`` naming the model
of the tier that answered, the arms tried, confidence, cost and status.

Tool calling (:meth:`ChatCostAware.bind_tools`) and structured output
(:meth:`ChatCostAware.with_structured_output`) bypass the graph: they are passed to one
tier's ``ChatOpenAI`` (``tools_tier``, default the tier of the first usable arm on the
ladder), so they are neither escalated nor logged in the outcome store.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from .config import Config, config_from_data, default_config_data, load_config
from .errors import ConfigError, InvalidQuestionError

__all__ = ["ChatCostAware", "check_tool_messages", "messages_to_question"]

LLM_TYPE = "effreason-cost-aware"
PROVIDER = "effreason"
STREAM_CHUNK_CHARS = 16
TEXT_BLOCK_TYPES = {"text"}


# -- input checks (pure, before any model call) ------------------------------------------


def _block_text(content: Any, where: str, strict: bool = True) -> str:
    """The text of a message's content; :class:`ValueError` for non-text content blocks
    (``strict=False``, for earlier AI replies: reasoning and tool-call blocks are skipped)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping):
            kind = block.get("type")
            if kind not in TEXT_BLOCK_TYPES:
                if not strict:
                    continue
                raise ValueError(
                    f"{where} has a {kind!r} content block; ChatCostAware accepts text only "
                    "(send images, audio and files to a multimodal chat model)"
                )
            parts.append(str(block.get("text", "")))
        else:
            raise ValueError(f"{where} has unsupported content of type {type(block).__name__}; send text")
    return "".join(parts)


def check_tool_messages(messages: Sequence[BaseMessage]) -> None:
    """:class:`ValueError` for a :class:`ToolMessage` whose call no earlier :class:`AIMessage` made
    (what an OpenAI-compatible server would refuse, caught before any model call)."""
    seen: set[str] = set()
    for i, m in enumerate(messages):
        if isinstance(m, AIMessage):
            seen.update(str(tc.get("id")) for tc in m.tool_calls or [] if tc.get("id"))
        elif isinstance(m, ToolMessage) and str(m.tool_call_id) not in seen:
            raise ValueError(
                f"messages[{i}] is a ToolMessage for tool_call_id {m.tool_call_id!r}, which no earlier "
                "AIMessage's tool_calls contains; send the AIMessage that made the call before its result"
            )


def messages_to_question(messages: Sequence[BaseMessage]) -> str:
    """The question the reasoning graph answers for a chat: the last human message, with
    earlier answered turns (:func:`~effreason_agents.chat.question_with_history`), system
    messages as instructions before it, and tool results that follow it after it.

    Raises :class:`ValueError` (an :class:`InvalidQuestionError` where it is about the
    question) for input no tier can answer, before any model is called."""
    from .chat import question_with_history

    if not messages:
        raise InvalidQuestionError("no messages: send at least one human message")
    texts = [
        _block_text(m.content, f"messages[{i}] ({m.type})", strict=not isinstance(m, AIMessage))
        for i, m in enumerate(messages)
    ]
    check_tool_messages(messages)
    last = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=None)
    if last is None:
        raise InvalidQuestionError("no human message to answer: add a HumanMessage (role 'user') with the question")
    question = texts[last].strip()
    if not question:
        raise InvalidQuestionError("the last human message is empty: ask a question")
    history = [m for m in messages[:last] if not isinstance(m, SystemMessage)]
    text = question_with_history(history, question)
    system = "\n".join(texts[i].strip() for i, m in enumerate(messages) if isinstance(m, SystemMessage) and texts[i].strip())
    if system:
        text = f"Instructions: {system}\n\n{text}"
    after = [
        f"Tool result ({getattr(m, 'name', None) or 'tool'}): {texts[last + 1 + j].strip()}"
        for j, m in enumerate(messages[last + 1 :])
        if isinstance(m, ToolMessage) and texts[last + 1 + j].strip()
    ]
    if after:
        text += "\n\n" + "\n".join(after)
    return text


# -- a ChatOpenAI whose endpoint is resolved on first call ----------------------------------


@functools.lru_cache(maxsize=1)
def _deferred_chat_openai() -> type:
    """A :class:`ChatOpenAI` subclass whose ``base_url`` is resolved at the first call, so binding
    tools to the embedded tier does not start the llama.cpp server."""
    from langchain_openai import ChatOpenAI

    class DeferredEndpointChatOpenAI(ChatOpenAI):
        _resolve_base_url: Any = PrivateAttr(default=None)
        _endpoint_lock: Any = PrivateAttr(default_factory=threading.Lock)

        def _ensure_endpoint(self) -> None:
            if self._resolve_base_url is None:
                return
            with self._endpoint_lock:
                resolve = self._resolve_base_url
                if resolve is None:
                    return
                url = resolve()
                self.openai_api_base = url
                for client in (self.root_client, self.root_async_client):
                    if client is not None:
                        client.base_url = url
                self._resolve_base_url = None

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            self._ensure_endpoint()
            return super()._generate(*args, **kwargs)

        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            import asyncio

            await asyncio.to_thread(self._ensure_endpoint)
            return await super()._agenerate(*args, **kwargs)

        def _stream(self, *args: Any, **kwargs: Any) -> Any:
            self._ensure_endpoint()
            yield from super()._stream(*args, **kwargs)

        async def _astream(self, *args: Any, **kwargs: Any) -> Any:
            import asyncio

            await asyncio.to_thread(self._ensure_endpoint)
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk

    return DeferredEndpointChatOpenAI


PLACEHOLDER_BASE_URL = "http://127.0.0.1:9/v1"


def deferred_tier_chat_model(client: Any, **settings: Any) -> Any:
    """``client.chat_model(**settings)`` (a :class:`~effreason_agents.tiers.TierClient`), but for
    the embedded engine the server is started only when the model is first called."""
    from .tiers import TierClient

    if client.tier.engine != "embedded":
        return client.chat_model(**settings)
    proxy = SimpleNamespace(tier=client.tier, name=client.name, api_key=client.api_key, base_url=lambda: PLACEHOLDER_BASE_URL)
    plain = TierClient.chat_model(proxy, **settings)  # type: ignore[arg-type]
    skip = {"client", "async_client", "root_client", "root_async_client", "http_client", "http_async_client"}
    fields = {k: getattr(plain, k) for k in plain.model_fields_set if k not in skip}
    model = _deferred_chat_openai()(**fields, stream_usage=True)
    model._resolve_base_url = client.base_url
    return model


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
    """The tier that answers :meth:`bind_tools` / :meth:`with_structured_output` (default: the
    tier of the first usable arm on the ladder)."""
    graph: Any = Field(default=None, exclude=True, repr=False)
    """A prebuilt reasoning graph (tests); it must carry ``.services`` like
    :func:`~effreason_agents.graph.build_reasoning_graph`'s."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _graph: Any = PrivateAttr(default=None)
    _config: Config | None = PrivateAttr(default=None)

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
            from .config import _deep_merge

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
            if self.temperature is not None and s.get("kind") != "sc":
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
                from .graph import build_reasoning_graph
                from .nodes import Services

                services = Services(config, environ=self._environ(config))
                self._graph = build_reasoning_graph(config, services=services)
            return self._graph

    def close(self) -> None:
        """Close the outcome store and budget ledger of the graph this model built (a later
        call reopens them). A graph passed in as ``graph`` is left to its owner."""
        with self._lock:
            graph, self._graph = self._graph, None
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
        from .state import ReasoningContext

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
        unknown = sorted(set(kwargs) - {"stream"})
        if unknown:
            raise ValueError(
                f"ChatCostAware does not take per-call arguments {unknown}: the graph picks the model and "
                "its settings; set fields on the model instead (or use bind_tools / with_structured_output)"
            )
        question = messages_to_question(messages)
        config = {"callbacks": _child_callbacks(run_manager)} if run_manager is not None else None
        out = self.reasoning_graph().invoke({"question": question}, config=config, context=self._context())
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

    # -- tools and structured output (bypass the graph) ----------------------------
    def tool_chat_model(self) -> Any:
        """The tier's ``ChatOpenAI`` that tool calling and structured output are sent to."""
        config = self.effective_config()
        environ = self._environ(config)
        name = self.tools_tier
        if name is None:
            ladder = config.usable_ladder(environ)
            if not ladder:
                raise ConfigError("no enabled tier on the escalation ladder: enable a tier or set its API key")
            name = ladder[0].tier
        if name not in config.tiers:
            raise ConfigError(f"tools_tier {name!r} is not a configured tier (known: {', '.join(sorted(config.tiers))})")
        from .tiers import TierClient

        client = TierClient(name, config.tiers[name], config, environ)
        caps = [config.arm_max_tokens(a) for a in config.ladder if a.tier == name]
        max_tokens = self.max_tokens or max(caps or [config.strategies[config.ladder[0].strategy].max_tokens])
        return deferred_tier_chat_model(
            client, max_tokens=max_tokens, temperature=self.temperature or 0.0, stop=self.stop or None, want_logprobs=False
        )

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """Tools bound to :meth:`tool_chat_model` (one tier; no escalation, not logged)."""
        return self.tool_chat_model().bind_tools(tools, tool_choice=tool_choice, **kwargs)

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Any:
        """Structured output from :meth:`tool_chat_model` (one tier; no escalation, not logged)."""
        return self.tool_chat_model().with_structured_output(schema, include_raw=include_raw, **kwargs)


def _child_callbacks(run_manager: CallbackManagerForLLMRun) -> Any:
    """Callbacks for the graph run inside this chat-model run (LLM run managers have no
    ``get_child``): the inheritable handlers, tags and metadata, parented to this run."""
    from langchain_core.callbacks import CallbackManager

    manager = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


# -- result → message (pure) -------------------------------------------------------------


def _cut(text: str, stop: Sequence[str] | None) -> str:
    cuts = [text.find(s) for s in stop or [] if s and s in text]
    return text[: min(cuts)] if cuts else text


def result_message(result: Mapping[str, Any], stop: Sequence[str] | None = None) -> AIMessage:
    """The :class:`AIMessage` for the reasoning graph's ``result``."""
    from .chat import refusal_text

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
        "finish_reason": chosen.get("finish_reason") or "stop",
    }
    return AIMessage(
        content=content,
        response_metadata=meta,
        usage_metadata={"input_tokens": in_tok, "output_tokens": out_tok, "total_tokens": in_tok + out_tok},
    )
