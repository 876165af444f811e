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
import math
import os
import time
from decimal import Decimal
from typing import Any, Mapping, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

from effreason_agents.config import Config, TierConfig
from effreason_agents.core.money import call_cost, format_usd
from effreason_agents.core.records import Completion, TokenLogprob
from effreason_agents.errors import EffReasonError, TierError
from effreason_agents.core.prompts import SEPARATOR

STOP_THINKING = f"Stop thinking and give the final answer after {SEPARATOR}."


def cost_usd(tier: TierConfig, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> Decimal:
    """Exact cost of a call from its usage and the tier's prices per 1M tokens (cached input
    tokens at the tier's cached-input price when it has one)."""
    return call_cost(input_tokens, output_tokens, tier.price_input_per_1m, tier.price_output_per_1m,
                     cached_input_tokens=cached_input_tokens,
                     price_cached_input_per_1m=getattr(tier, "price_cached_input_per_1m", None))


def _parse_logprobs(raw: Mapping[str, Any] | None) -> list[TokenLogprob] | None:
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


def _error_kind(exc: BaseException) -> tuple[str, str]:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout", "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "unreachable", f"cannot connect ({exc.__cause__ or exc})"
    if isinstance(exc, openai.AuthenticationError):
        return "auth", "the API key was refused (401)"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited", "rate-limited (429)"
    if isinstance(exc, openai.APIStatusError):
        kind = "server_error" if exc.status_code >= 500 else "bad_request"
        return kind, f"HTTP {exc.status_code}: {exc.message}"
    return "error", f"{type(exc).__name__}: {exc}"


class TierClient:
    """Calls one tier. ``base_url`` may be resolved lazily (the embedded server starts on first use)."""

    def __init__(self, name: str, tier: TierConfig, config: Config | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.tier = tier
        self._config = config
        self._environ = environ

    # -- endpoint -----------------------------------------------------------------
    def _embedded_server(self) -> Any:
        from effreason_agents.config import EmbeddedConfig
        from effreason_agents.adapters.embedded import get_embedded_server

        return get_embedded_server(self._config.embedded if self._config else EmbeddedConfig())

    def base_url(self) -> str:
        if self.tier.engine == "embedded":
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
            raise TierError(self.name, f"no API key: set {self.tier.api_key_env}", kind="no_key")
        if self.tier.engine == "openai":
            raise TierError(self.name, "no API key: set api_key_env for this tier", kind="no_key")
        return "not-needed"

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as this tier counts them (the embedded server's own tokenizer,
        otherwise the o200k BPE as an estimate)."""
        if self.tier.engine == "embedded":
            return int(self._embedded_server().count_tokens(text))
        return estimate_tokens(text)

    # -- calls --------------------------------------------------------------------
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
        """The :class:`ChatOpenAI` configured for this tier and call. ``reasoning_effort`` is
        sent only to tiers whose capabilities accept it (dropped otherwise); ``extra_body``
        (vLLM-only fields) is merged over the tier's own, for engine ``vllm`` only."""
        from langchain_openai import ChatOpenAI

        caps = self.tier.capabilities
        kwargs: dict[str, Any] = {
            "model": self.tier.model,
            "base_url": self.base_url(),
            "api_key": self.api_key(),
            "timeout": self.tier.timeout_s,
            "max_retries": self.tier.max_retries,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
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
        return ChatOpenAI(**kwargs)

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
        start = time.perf_counter()
        try:
            llm = self.chat_model(
                max_tokens=max_tokens,
                temperature=temperature,
                stop=stop,
                want_logprobs=want_logprobs,
                **({"reasoning_effort": reasoning_effort} if reasoning_effort else {}),
                **({"extra_body": extra_body} if extra_body else {}),
            )
            msg = llm.invoke(msgs, config=config)
        except TierError:
            raise
        except EffReasonError as exc:  # e.g. the embedded server could not start
            raise TierError(self.name, str(exc), kind="unavailable") from exc
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a TierError
            kind, why = _error_kind(exc)
            raise TierError(self.name, f"{why} after {self.tier.max_retries} retries", kind=kind) from exc
        latency = time.perf_counter() - start
        meta = msg.response_metadata or {}
        usage = msg.usage_metadata or {}
        text = msg.content if isinstance(msg.content, str) else str(msg.content)
        if prefill and not text.startswith(prefill):
            text = prefill + text  # engines that do not echo the prefill
        in_tok = int(usage.get("input_tokens", 0))
        out_tok = int(usage.get("output_tokens", 0))
        return Completion(
            text=text,
            input_tokens=in_tok,
            output_tokens=out_tok,
            finish_reason=meta.get("finish_reason"),
            latency_s=latency,
            model=str(meta.get("model_name") or self.tier.model),
            cost_usd=cost_usd(self.tier, in_tok, out_tok),
            logprobs=_parse_logprobs(meta.get("logprobs")),
            prefill=prefill,
        )


O200K_METHOD = "o200k_base via bpe-openai (tiktoken-compatible)"
BYTES_METHOD = "ceil(UTF-8 bytes / 3) estimate (bpe-openai is not installed)"


@functools.lru_cache(maxsize=1)
def _o200k() -> Any:
    try:
        from bpe_openai import get_encoding

        return get_encoding("o200k_base")
    except Exception:  # noqa: BLE001 - the estimate must never fail a request
        return None


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
