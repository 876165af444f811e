"""Tiers: one client path for every engine.

Every tier — the embedded llama.cpp server, a vLLM fleet, OpenAI, any
OpenAI-compatible endpoint — is spoken to with the OpenAI chat-completions
protocol through ``langchain-openai``'s :class:`ChatOpenAI`, so LangChain
callbacks and tracing see every call. A call returns a :class:`Completion`:
answer text, usage, finish reason, per-token logprobs with top alternatives
(when the tier supports them), latency and the exact cost.

Failures (no key, unreachable, 429/5xx, timeouts) are retried with backoff by
the OpenAI client (``max_retries`` per tier) and then raised as
:class:`~effreason_agents.errors.TierError`, which the graph records on the
attempt row before moving down the ladder.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

from effreason_agents.config import Config, TierConfig
from effreason_agents.core.budget import cost_usd
from effreason_agents.core.messages import message_text
from effreason_agents.core.records import Completion, ErrorKind, TokenLogprob
from effreason_agents.core.text import redact
from effreason_agents.errors import EffReasonError, TierError
from effreason_agents.core.prompts import SEPARATOR

__all__ = [
    "BYTES_METHOD",
    "MESSAGE_OVERHEAD_TOKENS",
    "O200K_METHOD",
    "STOP_THINKING",
    "TierClient",
    "clients_for",
    "cost_usd",
    "error_kind",
    "estimate_tokens",
    "message_usage",
    "parse_logprobs",
    "readable_usage",
    "token_count_method",
]

STOP_THINKING = f"Stop thinking and give the final answer after {SEPARATOR}."


def parse_logprobs(raw: Mapping[str, Any] | None) -> list[TokenLogprob] | None:
    if not raw or not raw.get("content"):
        return None
    out: list[TokenLogprob] = []
    for item in raw["content"]:
        lp = item.get("logprob")
        if lp is None:
            continue
        top = [(t.get("token", ""), float(t["logprob"])) for t in item.get("top_logprobs") or [] if t.get("logprob") is not None]
        out.append(TokenLogprob(token=item.get("token", ""), logprob=float(lp), top=top))
    return out or None


def error_kind(exc: BaseException) -> tuple[str, str]:
    """The :class:`~effreason_agents.core.records.ErrorKind` of a client failure and a short
    description (the provider's own message included; callers redact it)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ErrorKind.TIMEOUT, "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return ErrorKind.UNREACHABLE, f"cannot connect ({exc.__cause__ or exc})"
    if isinstance(exc, openai.AuthenticationError):
        return ErrorKind.AUTH, "the API key was refused (401)"
    if isinstance(exc, openai.RateLimitError):
        return ErrorKind.RATE_LIMITED, "rate-limited (429)"
    if isinstance(exc, openai.APIStatusError):
        kind = ErrorKind.SERVER_ERROR if exc.status_code >= 500 else ErrorKind.BAD_REQUEST
        return kind, f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, (ValueError, KeyError, TypeError)):  # a reply the client could not parse
        return ErrorKind.BAD_RESPONSE, f"unreadable response ({type(exc).__name__}: {exc})"
    return ErrorKind.ERROR, f"{type(exc).__name__}: {exc}"


def _usage_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def readable_usage(usage: Any) -> dict[str, int] | None:
    """``{"input", "output", "cached", "reasoning"}`` token counts from a chat-completions
    ``usage`` object, or ``None`` when it is missing or cannot be read (absent, negative,
    not integers): such a call is settled at its hold, never at zero."""
    if not isinstance(usage, Mapping):
        return None
    i, o = _usage_int(usage.get("prompt_tokens")), _usage_int(usage.get("completion_tokens"))
    if i is None or o is None:
        return None
    cached = _usage_int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0) or 0
    reasoning = _usage_int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0) or 0
    return {"input": i, "output": o, "cached": min(cached, i), "reasoning": reasoning}


def _safe_chat_openai() -> type:
    """``ChatOpenAI`` that reads usage defensively: a reply whose ``usage`` is missing or
    malformed keeps its text and is flagged (``response_metadata["usage_unreadable"]``)
    instead of failing the whole call."""
    global _SAFE_CLS
    if _SAFE_CLS is not None:
        return _SAFE_CLS
    import openai
    from langchain_openai import ChatOpenAI

    class SafeUsageChatOpenAI(ChatOpenAI):
        def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> Any:
            data = response
            if isinstance(response, openai.BaseModel):
                data = response.model_dump(exclude={"choices": {"__all__": {"message": {"parsed"}}}}, warnings=False)
            usage = data.get("usage") if isinstance(data, dict) else None
            read = readable_usage(usage)
            if isinstance(data, dict) and usage is not None and read is None:
                data = {**data, "usage": None}
            result = super()._create_chat_result(data, generation_info)
            for gen in result.generations:
                meta = gen.message.response_metadata
                meta["usage_unreadable"] = read is None
                if read is not None:
                    meta["usage_read"] = read
            return result

    _SAFE_CLS = SafeUsageChatOpenAI
    return _SAFE_CLS


_SAFE_CLS: type | None = None
MESSAGE_OVERHEAD_TOKENS = 8
"""Chat-template tokens allowed per message (role markers and separators) plus the reply priming."""
_OPENAI_O200K = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_OPENAI_CL100K = ("gpt-4", "gpt-3.5")


def message_usage(message: Any) -> dict[str, int] | None:
    """The usage of a model's reply as :func:`readable_usage` reads it: from the tier's own
    client when it read the raw usage, else from LangChain's ``usage_metadata``; ``None``
    when it is missing or unreadable."""
    meta = getattr(message, "response_metadata", None) or {}
    if "usage_read" in meta or meta.get("usage_unreadable"):
        return meta.get("usage_read")
    um = getattr(message, "usage_metadata", None)
    if not um:
        return None
    i, o = _usage_int(um.get("input_tokens")), _usage_int(um.get("output_tokens"))
    if i is None or o is None:
        return None
    details_in, details_out = um.get("input_token_details") or {}, um.get("output_token_details") or {}
    return {"input": i, "output": o, "cached": min(_usage_int(details_in.get("cache_read") or 0) or 0, i),
            "reasoning": _usage_int(details_out.get("reasoning") or 0) or 0}


class TierClient:
    """Calls one tier. ``base_url`` may be resolved lazily (the embedded server starts on first use)."""

    def __init__(self, name: str, tier: TierConfig, config: Config | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.tier = tier
        self._config = config
        self._environ = environ
        self._llm: Any = None
        self._lock = threading.Lock()

    # -- endpoint -----------------------------------------------------------------
    def _embedded_settings(self) -> Any:
        from effreason_agents.config import EmbeddedConfig

        return self._config.embedded if self._config else EmbeddedConfig()

    def _adapters(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """The usable LoRA adapters of the config's embedded tiers (one server loads them all
        and serves the base model too) and ``{path: why}`` for the broken ones."""
        paths = [t.adapter for t in (self._config.tiers.values() if self._config else ())
                 if t.engine == "embedded" and t.adapter]
        if self.tier.adapter and self.tier.adapter not in paths:
            paths.append(self.tier.adapter)
        if not paths:
            return (), {}
        from effreason_agents.adapters.embedded import resolve_model_path
        from effreason_agents.adapters.lora import usable_adapters

        return usable_adapters(resolve_model_path(self._embedded_settings().model_path), paths)

    def _embedded_server(self) -> Any:
        from effreason_agents.adapters.embedded import get_embedded_server

        return get_embedded_server(self._embedded_settings(), self._adapters()[0])

    def adapter_id(self) -> int | None:
        """The embedded server's id of this tier's LoRA adapter (``None`` for a tier without
        one). Raises :class:`TierError` (``unavailable``) when the adapter is missing or
        broken: only this tier is down."""
        if not self.tier.adapter:
            return None
        from pathlib import Path

        ok, bad = self._adapters()
        path = str(Path(self.tier.adapter).expanduser().resolve())
        if path not in ok:
            raise self.error(bad.get(path) or f"adapter {self.tier.adapter!r} is not usable", ErrorKind.UNAVAILABLE)
        return ok.index(path)

    def base_url(self) -> str:
        if self.tier.engine == "embedded":
            self.adapter_id()  # a broken adapter: this tier is unavailable, before any model call
            return self._embedded_server().base_url
        if self.tier.base_url:
            return self.tier.base_url
        from effreason_agents.config import OPENAI_DEFAULT_BASE_URL

        return OPENAI_DEFAULT_BASE_URL

    def api_key(self) -> str:
        """The tier's key from its ``api_key_env`` variable; tiers that name no variable
        (a local server without auth) send a placeholder."""
        env = os.environ if self._environ is None else self._environ
        if self.tier.api_key_env:
            key = env.get(self.tier.api_key_env)
            if key:
                return key
            raise TierError(self.name, f"no API key: set {self.tier.api_key_env}", kind=ErrorKind.NO_KEY)
        if self.tier.engine == "openai":
            raise TierError(self.name, "no API key: set api_key_env for this tier", kind=ErrorKind.NO_KEY)
        return "not-needed"

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as this tier counts them where its tokenizer is known (the
        embedded server's own tokenizer; OpenAI's BPE for OpenAI models), otherwise the
        o200k BPE as an estimate. For holds use :meth:`prompt_bound`."""
        if self.tier.engine == "embedded":
            return int(self._embedded_server().count_tokens(text))
        return estimate_tokens(text)

    def tokenizer(self) -> str:
        """How :meth:`prompt_bound` counts: ``"server"`` (the engine's own tokenizer: the
        embedded llama.cpp server, a vLLM server's ``/tokenize``), ``"o200k"``/``"cl100k"``
        (OpenAI models), or ``"bytes"`` (an unknown tokenizer: UTF-8 bytes, a bound no
        byte-level tokenizer can beat)."""
        if self.tier.engine in ("embedded", "vllm"):
            return "server"
        model = self.tier.model.lower().rsplit("/", 1)[-1]
        if self.tier.engine == "openai":
            if model.startswith(_OPENAI_O200K):
                return "o200k"
            if model.startswith(_OPENAI_CL100K):
                return "cl100k"
        return "bytes"

    def text_bound(self, text: str) -> int:
        """An upper bound of the tokens of ``text`` on this tier (see :meth:`tokenizer`)."""
        how = self.tokenizer()
        if how == "server" and self.tier.engine == "embedded":
            return int(self._embedded_server().count_tokens(text))
        if how == "server":
            n = self._vllm_tokenize(text)
            if n is not None:
                return n
        elif how in ("o200k", "cl100k"):
            enc = _encoding(f"{how}_base")
            if enc is not None:
                return len(enc.encode(text))
        return len(text.encode("utf-8"))

    def _vllm_tokenize(self, text: str) -> int | None:
        """vLLM's ``POST /tokenize`` (served beside ``/v1``); ``None`` when it fails."""
        import httpx

        root = self.base_url().rstrip("/").removesuffix("/v1")
        try:
            r = httpx.post(root + "/tokenize", json={"model": self.tier.model, "prompt": text,
                                                    "add_special_tokens": False}, timeout=5.0)
            r.raise_for_status()
            return int(r.json()["count"])
        except Exception:  # noqa: BLE001 - fall back to the bytes bound
            return None

    def prompt_bound(self, messages: Sequence[Any], tools: Sequence[Any] = ()) -> int:
        """An upper bound of the prompt tokens the tier bills for ``messages`` (and tool
        schemas): each text counted exactly where the tokenizer is known, else as its UTF-8
        bytes, plus :data:`MESSAGE_OVERHEAD_TOKENS` per message for the chat template."""
        texts = [message_text(m) for m in messages]
        for t in tools:
            texts.append(_tool_text(t))
        body = "\n".join(x for x in texts if x)
        return self.text_bound(body) + MESSAGE_OVERHEAD_TOKENS * (len(texts) + 1)

    def secrets(self) -> list[str]:
        """The tier's API key, when it has one (redacted from every error message)."""
        if not self.tier.api_key_env:
            return []
        env = os.environ if self._environ is None else self._environ
        key = env.get(self.tier.api_key_env)
        return [key] if key else []

    def error(self, message: str, kind: str = ErrorKind.ERROR) -> TierError:
        """A :class:`TierError` for this tier with its key (and anything key-shaped) redacted."""
        return TierError(self.name, redact(message, self.secrets()), kind=kind)

    # -- calls --------------------------------------------------------------------
    def call_settings(
        self,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        want_logprobs: bool = True,
        reasoning_effort: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        n: int = 1,
    ) -> dict[str, Any]:
        """The request fields of one call on this tier: logprobs (with the tier's number of
        alternatives) only where it returns them, ``reasoning_effort`` only where it is
        accepted, ``extra_body`` (vLLM-only fields, merged over the tier's own) only on
        engine ``vllm``, ``n`` only above 1."""
        caps = self.tier.capabilities
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        if n > 1:
            kwargs["n"] = n
        if stop:
            kwargs["stop"] = list(stop)
        if want_logprobs and caps.logprobs:
            kwargs["logprobs"] = True
            if caps.top_logprobs:
                kwargs["top_logprobs"] = caps.top_logprobs
        if reasoning_effort and caps.reasoning_effort:
            kwargs["reasoning_effort"] = reasoning_effort
        if self.tier.engine == "vllm":
            body = {**self.tier.extra_body, **(extra_body or {})}
            if body:
                kwargs["extra_body"] = body
        elif self.tier.engine == "embedded":
            lora = self.lora_request()
            if lora is not None:
                kwargs["extra_body"] = {"lora": lora}
        return kwargs

    def lora_request(self) -> list[dict[str, Any]] | None:
        """The ``lora`` request field for an embedded server that loaded adapters: this tier's
        adapter at scale 1 and every other at 0 (the base model: all at 0). llama.cpp keeps a
        slot's last adapter for a request that names none, so every request names them all.
        ``None`` when the server holds no adapters (or this tier's adapter is broken:
        :meth:`base_url` then reports the tier unavailable)."""
        ok, _ = self._adapters()
        if not ok:
            return None
        try:
            mine = self.adapter_id()
        except TierError:
            return None
        return [{"id": i, "scale": 1.0 if i == mine else 0.0} for i in range(len(ok))]

    def failure(self, exc: BaseException) -> BaseException:
        """What a client failure becomes: a :class:`TierError` (key redacted) with its
        :class:`~effreason_agents.core.records.ErrorKind`; a :class:`TierError` unchanged."""
        if isinstance(exc, TierError):
            return exc
        if isinstance(exc, EffReasonError):  # e.g. the embedded server could not start
            return self.error(str(exc), ErrorKind.UNAVAILABLE)
        kind, why = error_kind(exc)
        return self.error(f"{why} after {self.tier.max_retries} retries", kind)

    def chat_model(
        self,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        want_logprobs: bool = True,
        reasoning_effort: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Any:
        """The :class:`ChatOpenAI` configured for this tier and call (see :meth:`call_settings`)."""
        kwargs: dict[str, Any] = {
            "model": self.tier.model,
            "base_url": self.base_url(),
            "api_key": self.api_key(),
            "timeout": self.tier.timeout_s,
            "max_retries": self.tier.max_retries,
            **self.call_settings(max_tokens=max_tokens, temperature=temperature, stop=stop,
                                 want_logprobs=want_logprobs, reasoning_effort=reasoning_effort,
                                 extra_body=extra_body),
        }
        return _safe_chat_openai()(**kwargs)

    def complete(
        self,
        messages: Sequence[BaseMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        want_logprobs: bool = True,
        config: RunnableConfig | None = None,
        reasoning_effort: str | None = None,
        thinking_budget: int | None = None,
    ) -> Completion:
        """One chat completion. A trailing :class:`AIMessage` is an assistant prefill, sent
        only to tiers that declare ``assistant_prefill`` (others get it dropped).

        ``reasoning_effort`` goes to tiers that accept it. ``thinking_budget`` (tokens a
        reasoning model may think) applies to tiers with ``capabilities.thinking``: vLLM
        tiers with ``thinking_token_budget`` get it as a request field, others are run in
        two phases (see :meth:`_two_phase`)."""
        opts: dict[str, Any] = dict(
            temperature=temperature, want_logprobs=want_logprobs, config=config, reasoning_effort=reasoning_effort
        )
        caps = self.tier.capabilities
        if thinking_budget and caps.thinking:
            if caps.thinking_token_budget and self.tier.engine == "vllm":
                extra = {"thinking_token_budget": int(thinking_budget)}
                return self._once(messages, max_tokens=max_tokens, stop=stop, extra_body=extra, **opts)
            return self._two_phase(messages, budget=int(thinking_budget), max_tokens=max_tokens, stop=stop, **opts)
        return self._once(messages, max_tokens=max_tokens, stop=stop, **opts)

    def _two_phase(
        self, messages: Sequence[BaseMessage], *, budget: int, max_tokens: int, stop: Sequence[str] | None, **opts: Any
    ) -> Completion:
        """Thinking budget without engine support: phase 1 thinks for at most ``budget``
        tokens (stopped at the thinking end marker); unless it already holds the answer,
        phase 2 continues after ``<phase-1 text><end marker>\\n`` (an assistant prefill, or
        on tiers without prefill that turn plus a user message asking for the answer) with
        the remaining ``max_tokens``. The merged :class:`Completion` has the full text, the
        summed usage, cost and latency, and phase 2's logprobs and finish reason; its
        ``prefill`` is the text before phase 2's output (what the logprobs do not cover)."""
        caps = self.tier.capabilities
        end = caps.thinking_end
        first = self._once(messages, max_tokens=max(1, min(budget, max_tokens)), stop=[end], **opts)
        if first.finish_reason != "length" and SEPARATOR in first.generated_text:
            return first
        remaining = max_tokens - first.output_tokens
        if remaining <= 0:
            return first
        base = list(messages)
        if base and isinstance(base[-1], AIMessage):
            base = base[:-1]  # the caller's prefill is already at the start of first.text
        thought = first.text + end + "\n"
        if caps.assistant_prefill:
            follow = [*base, AIMessage(thought)]
        else:
            follow = [*base, AIMessage(thought), HumanMessage(STOP_THINKING)]
        second = self._once(follow, max_tokens=remaining, stop=stop, **opts)
        text = second.text if caps.assistant_prefill else thought + second.text
        return Completion(
            text=text,
            input_tokens=first.input_tokens + second.input_tokens,
            output_tokens=first.output_tokens + second.output_tokens,
            finish_reason=second.finish_reason,
            latency_s=first.latency_s + second.latency_s,
            model=second.model,
            cost_usd=first.cost_usd + second.cost_usd,
            logprobs=second.logprobs,
            prefill=text[: len(text) - len(second.generated_text)],
        )

    def _once(
        self,
        messages: Sequence[BaseMessage],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] | None,
        want_logprobs: bool,
        config: RunnableConfig | None,
        reasoning_effort: str | None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Completion:
        msgs = list(messages)
        prefill = ""
        if msgs and isinstance(msgs[-1], AIMessage):
            if self.tier.capabilities.assistant_prefill:
                prefill = str(msgs[-1].content)
            else:
                msgs = msgs[:-1]
        kwargs = self.call_settings(max_tokens=max_tokens, temperature=temperature, stop=stop,
                                    want_logprobs=want_logprobs, reasoning_effort=reasoning_effort,
                                    extra_body=extra_body)
        start = time.perf_counter()
        try:
            msg = self._shared_model().invoke(msgs, config=config, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a TierError
            err = self.failure(exc)
            if err is exc:
                raise
            raise err from exc
        return self.completion(msg, prefill, time.perf_counter() - start)

    async def achat(
        self,
        messages: Sequence[BaseMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        response_format: Mapping[str, Any] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Completion:
        """One chat completion of a caller's own messages (the HTTP server's pinned-tier and
        tool calls), async, with OpenAI ``tools`` / ``tool_choice`` / ``response_format``
        passed through.

        With ``on_text`` the reply streams: ``on_text(piece)`` is called for every piece of
        content as the tier generates it, and usage comes from the stream's final usage
        chunk. When ``cancelled()`` turns true between pieces (the client went away) the
        stream is closed, which stops generation on llama.cpp and vLLM, and the
        :class:`Completion` returned holds the text generated so far with
        ``finish_reason="cancelled"`` and no reported usage (the caller prices what was
        generated)."""
        kwargs = self.call_settings(max_tokens=max_tokens, temperature=temperature, stop=stop, want_logprobs=False)
        if tools:
            kwargs["tools"] = [dict(t) for t in tools]
            if tool_choice is not None:
                kwargs["tool_choice"] = tool_choice
        if response_format is not None:
            kwargs["response_format"] = dict(response_format)
        model = self._shared_model()
        start = time.perf_counter()
        try:
            if on_text is None:
                msg = await model.ainvoke(list(messages), **kwargs)
                return self.completion(msg, "", time.perf_counter() - start)
            merged: Any = None
            stream = model.astream(list(messages), stream_usage=True, **kwargs)
            try:
                async for chunk in stream:
                    merged = chunk if merged is None else merged + chunk
                    piece = chunk.content if isinstance(chunk.content, str) else message_text(chunk)
                    if piece:
                        on_text(piece)
                    if cancelled is not None and cancelled():
                        c = self.completion(merged, "", time.perf_counter() - start)
                        c.finish_reason, c.usage_reported = "cancelled", False
                        return c
            finally:
                await stream.aclose()  # closes the HTTP stream: the engine stops generating
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a TierError
            err = self.failure(exc)
            if err is exc:
                raise
            raise err from exc
        if merged is None:
            raise self.error("the stream ended without a reply", ErrorKind.BAD_RESPONSE)
        return self.completion(merged, "", time.perf_counter() - start)

    def sample(
        self, messages: Sequence[BaseMessage], *, n: int, max_tokens: int, temperature: float,
        stop: Sequence[str] | None = None, config: RunnableConfig | None = None,
    ) -> dict[str, Any]:
        """``n`` sampled choices of one request (``n > 1`` only on tiers with
        ``capabilities.n``), through the same client path as :meth:`complete` (callbacks
        and traces see them). Returns the reply in chat-completions JSON shape:
        ``choices`` (message content, finish_reason, logprobs), ``usage`` as the tier
        reported it (``None`` when missing or unreadable) and ``model``."""
        from langchain_core.runnables.config import ensure_config

        kwargs = self.call_settings(max_tokens=max_tokens, temperature=temperature, stop=stop, n=n)
        cfg = ensure_config(config)
        try:
            out = self._shared_model().generate(
                [list(messages)], callbacks=cfg.get("callbacks"), tags=cfg.get("tags"),
                metadata=cfg.get("metadata"), **kwargs)
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a TierError
            err = self.failure(exc)
            if err is exc:
                raise
            raise err from exc
        gens = out.generations[0] if out.generations else []
        if not gens:
            raise self.error("the response held no choices", ErrorKind.BAD_RESPONSE)
        first = gens[0].message
        read = message_usage(first)
        choices = [
            {"index": i, "message": {"content": message_text(g.message)},
             "finish_reason": (g.generation_info or {}).get("finish_reason"),
             "logprobs": (g.generation_info or {}).get("logprobs")}
            for i, g in enumerate(gens)
        ]
        usage = None if read is None else {"prompt_tokens": read["input"], "completion_tokens": read["output"],
                                           "cached_tokens": read["cached"]}
        return {"choices": choices, "usage": usage,
                "model": (first.response_metadata or {}).get("model_name") or self.tier.model}

    def warm(self) -> None:
        """Build this tier's client now (starting the embedded server for an embedded tier)
        instead of on its first call."""
        self._shared_model()

    def _shared_model(self) -> Any:
        """One ``ChatOpenAI`` per tier, built on first use (the embedded server starts then);
        per-call settings travel as invoke arguments."""
        llm = self._llm
        if llm is None:
            with self._lock:
                if self._llm is None:
                    self._llm = self.chat_model(max_tokens=1, want_logprobs=False)
                llm = self._llm
        return llm

    def completion(self, msg: Any, prefill: str = "", latency: float = 0.0) -> Completion:
        """A :class:`Completion` from the tier's reply; ``usage_reported`` is ``False`` when its
        usage was missing or unreadable (the caller settles such a call at its hold)."""
        meta = msg.response_metadata or {}
        read = message_usage(msg)
        text = message_text(msg)
        if prefill and not text.startswith(prefill):
            text = prefill + text  # engines that do not echo the prefill
        i, o = (read["input"], read["output"]) if read else (0, 0)
        cached = read["cached"] if read else 0
        return Completion(
            text=text,
            input_tokens=i,
            output_tokens=o,
            finish_reason=meta.get("finish_reason"),
            latency_s=latency,
            model=str(meta.get("model_name") or self.tier.model),
            cost_usd=cost_usd(self.tier, i, o, cached),
            logprobs=parse_logprobs(meta.get("logprobs")),
            prefill=prefill,
            cached_input_tokens=cached,
            reasoning_tokens=read["reasoning"] if read else 0,
            usage_reported=read is not None,
            tool_calls=[dict(tc) for tc in getattr(msg, "tool_calls", None) or []],
        )


O200K_METHOD = "o200k_base via bpe-openai (tiktoken-compatible)"
BYTES_METHOD = "ceil(UTF-8 bytes / 3) estimate (bpe-openai is not installed)"


@functools.lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    try:
        from bpe_openai import get_encoding

        return get_encoding(name)
    except Exception:  # noqa: BLE001 - the estimate must never fail a request
        return None


def _o200k() -> Any:
    return _encoding("o200k_base")


def _tool_text(tool: Any) -> str:
    """A tool's schema as the text a provider renders into the prompt."""
    if isinstance(tool, Mapping):
        return json.dumps(tool, default=str)
    try:
        return json.dumps({"name": tool.name, "description": tool.description, "args": tool.args}, default=str)
    except Exception:  # noqa: BLE001 - any object: its text
        return str(tool)


def estimate_tokens(text: str) -> int:
    """Token count with OpenAI's o200k BPE (``bpe-openai``, loaded once); a bytes/3 bound if it is missing."""
    enc = _o200k()
    if enc is None:
        return math.ceil(len(text.encode("utf-8")) / 3)
    return len(enc.encode(text))


def token_count_method() -> str:
    """How :func:`estimate_tokens` counts, for reports."""
    return O200K_METHOD if _o200k() is not None else BYTES_METHOD


def clients_for(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, TierClient]:
    """A client for each enabled tier."""
    return {n: TierClient(n, t, config, environ) for n, t in config.enabled_tiers(environ).items()}
