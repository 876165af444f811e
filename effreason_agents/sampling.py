"""Adaptive sampling: draw answers from a tier until the majority is settled.

Two published stopping rules, both pure functions of the answers seen so far:

``beta_stop`` — Adaptive-Consistency (Aggarwal et al. 2023)
    With the two most frequent answers counted ``a`` and ``b``, stop when
    ``P(p1 > 0.5 | p1 ~ Beta(a+1, b+1)) >= confidence`` (0.95 in the paper).
    For integer parameters the regularized incomplete Beta function has the
    exact binomial-sum form ``I_x(α, β) = P(Binomial(α+β−1, x) ≥ α)``, so with
    ``n = a+b+1``: ``P(p1 > 0.5) = 1 − I_0.5(a+1, b+1) = Σ_{k=0}^{a} C(n,k) / 2^n``
    (no scipy; computed with exact integers).
``esc_window_stop`` — Early-Stopping Self-Consistency (Li et al. 2024)
    Answers fall into consecutive windows of ``window`` samples; stop when the
    last complete window is unanimous (and its answer is not ``None``).

:func:`sample_until_settled` draws samples from a :class:`~effreason_agents.tiers.TierClient`
until the chosen rule fires or ``cap`` samples are drawn, batching them with
the chat-completions ``n`` parameter where the tier supports it.

Token accounting for ``n > 1``. The usage block is not trustworthy per choice:
llama.cpp's server (the embedded tier) reports ``usage.completion_tokens`` for
*one* choice only (verified on the raw JSON: two choices with 7 and 30
logprob entries came back with ``completion_tokens = 7``), and LangChain's
``ChatOpenAI`` double-counts usage for ``n > 1``. So this module calls the
endpoint with the ``openai`` client directly, reads the raw ``chat.completion``
JSON, and counts output tokens per choice (:func:`per_choice_usage`):

1. ``"logprobs"``: the length of the choice's ``logprobs.content`` — one entry
   per generated token, exact (it matches the server's own count for n = 1);
2. ``"tokenizer"``: when a choice has no logprobs, its text counted with the
   tier's tokenizer (``TierClient.count_tokens``: the embedded server's own
   tokenizer, otherwise the o200k BPE estimate);
3. ``"usage"``: with neither, a single-choice response's
   ``usage.completion_tokens``; ``"usage-split"``: for several choices, that total
   split evenly across them (right for engines whose usage covers all choices,
   e.g. OpenAI; an undercount on llama.cpp — hence (2) is always preferred).

The prompt is charged once per request (``usage.prompt_tokens``), as the
engines prefill it once for all ``n`` choices.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Literal, Mapping, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from .errors import TierError
from .strategies import parse_answer
from .tiers import TierClient, _error_kind, cost_usd

Rule = Literal["beta", "esc"]

__all__ = [
    "SampleResult",
    "beta_posterior_majority",
    "beta_stop",
    "esc_window_stop",
    "majority",
    "per_choice_usage",
    "per_choice_usage_with_method",
    "regularized_beta_int",
    "sample_until_settled",
]


# -- stopping rules -------------------------------------------------------------------


def regularized_beta_int(x: float, alpha: int, beta: int) -> float:
    """``I_x(α, β)``, the Beta(α, β) CDF at ``x``, for positive integers α, β, by the
    exact identity ``I_x(α, β) = P(Binomial(α+β−1, x) ≥ α)``."""
    if alpha < 1 or beta < 1 or int(alpha) != alpha or int(beta) != beta:
        raise ValueError("alpha and beta must be positive integers")
    if not 0.0 <= x <= 1.0:
        raise ValueError("x must lie in [0, 1]")
    n = alpha + beta - 1
    return math.fsum(math.comb(n, k) * x**k * (1.0 - x) ** (n - k) for k in range(alpha, n + 1))


def beta_posterior_majority(a: int, b: int) -> float:
    """``P(p1 > 0.5 | p1 ~ Beta(a+1, b+1))`` exactly: ``Σ_{k=0}^{a} C(a+b+1, k) / 2^(a+b+1)``."""
    if a < 0 or b < 0:
        raise ValueError("counts cannot be negative")
    n = a + b + 1
    return sum(math.comb(n, k) for k in range(a + 1)) / 2**n


def beta_stop(counts: Mapping[str, int], confidence: float = 0.95) -> bool:
    """Adaptive-Consistency: stop when the leading answer's posterior probability of being
    the majority, against the runner-up, reaches ``confidence``. ``counts`` maps answers
    to how often they were seen; no answers → never stop."""
    if not 0.0 < confidence <= 1.0:
        raise ValueError("confidence must lie in (0, 1]")
    top = sorted((int(c) for c in counts.values() if c > 0), reverse=True)
    if not top:
        return False
    a = top[0]
    b = top[1] if len(top) > 1 else 0
    return beta_posterior_majority(a, b) >= confidence


def esc_window_stop(answers: Sequence[str | None], window: int = 5) -> bool:
    """Early-Stopping Self-Consistency: stop when the last complete window of ``window``
    consecutive samples (windows ``[0:w]``, ``[w:2w]``, …) holds one non-``None`` answer."""
    if window < 1:
        raise ValueError("window must be at least 1")
    complete = len(answers) // window
    if complete == 0:
        return False
    last = answers[(complete - 1) * window : complete * window]
    return last[0] is not None and all(x == last[0] for x in last)


def majority(answers: Sequence[str | None]) -> tuple[str | None, float, int]:
    """``(answer, share, distinct)``: the most frequent non-``None`` answer (ties: the one
    seen first), its share of the non-``None`` answers, and how many distinct non-``None``
    answers there are. No answers → ``(None, 0.0, 0)``."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0, 0
    answer, n = counts.most_common(1)[0]
    return answer, n / sum(counts.values()), len(counts)


# -- per-choice token counts ----------------------------------------------------------------


def per_choice_usage_with_method(
    response_json: Mapping[str, Any], count_tokens: Callable[[str], int] | None = None
) -> tuple[list[int], str]:
    """Output tokens of each choice (in ``index`` order) of a raw ``chat.completion`` JSON,
    and the method used (``logprobs``, ``tokenizer``, ``usage``, ``usage-split``; several
    joined with ``+`` when the choices differ). See the module docstring."""
    choices = sorted(response_json.get("choices") or [], key=lambda c: c.get("index", 0))
    usage = response_json.get("usage") or {}
    reported = int(usage.get("completion_tokens") or 0)
    counts: list[int] = []
    methods: list[str] = []
    for ch in choices:
        content = (ch.get("logprobs") or {}).get("content")
        if content:
            counts.append(len(content))
            methods.append("logprobs")
        elif count_tokens is not None:
            text = (ch.get("message") or {}).get("content") or ""
            counts.append(int(count_tokens(text)) if text else 0)
            methods.append("tokenizer")
        elif len(choices) == 1:
            counts.append(reported)
            methods.append("usage")
        else:
            counts.append(-1)  # filled below
            methods.append("usage-split")
    missing = [i for i, c in enumerate(counts) if c < 0]
    if missing:
        # Whatever usage reports beyond the choices already counted, split evenly.
        rest = max(0, reported - sum(c for c in counts if c >= 0))
        share, extra = divmod(rest, len(missing))
        for j, i in enumerate(missing):
            counts[i] = share + (1 if j < extra else 0)
    method = "+".join(dict.fromkeys(methods)) or "none"
    return counts, method


def per_choice_usage(response_json: Mapping[str, Any], count_tokens: Callable[[str], int] | None = None) -> list[int]:
    """Output tokens of each choice of a raw ``chat.completion`` JSON (see
    :func:`per_choice_usage_with_method`)."""
    return per_choice_usage_with_method(response_json, count_tokens)[0]


# -- sampling loop --------------------------------------------------------------------------


@dataclass
class SampleResult:
    """What :func:`sample_until_settled` drew."""

    answers: list[str | None]
    answer: str | None
    share: float
    distinct: int
    samples_drawn: int
    cap: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    requests: int
    token_count_method: str
    stopped_by: Literal["rule", "cap"]
    rule: str = "beta"
    texts: list[str] = field(default_factory=list)
    per_choice_tokens: list[int] = field(default_factory=list)
    reported_output_tokens: int = 0  # sum of usage.completion_tokens as the engine reported it
    latency_s: float = 0.0


def _to_openai_messages(messages: Sequence[BaseMessage | Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, Mapping):
            out.append(dict(m))
        elif isinstance(m, SystemMessage):
            out.append({"role": "system", "content": m.content})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": m.content})
        elif isinstance(m, AIMessage):
            out.append({"role": "assistant", "content": m.content})
        else:
            raise TypeError(f"unsupported message type {type(m).__name__}")
    return out


def default_batch(client: TierClient) -> int:
    """Choices per request: 2 where the tier supports ``n`` (for the embedded server at most
    its ``n_parallel`` slots, which llama.cpp enforces as the upper bound of ``n``), else 1."""
    if not client.tier.capabilities.n:
        return 1
    return min(2, _n_limit(client))


def _n_limit(client: TierClient) -> int:
    if not client.tier.capabilities.n:
        return 1
    if client.tier.engine == "embedded":
        cfg = getattr(client, "_config", None)
        from .config import EmbeddedConfig

        return (cfg.embedded if cfg is not None else EmbeddedConfig()).n_parallel
    return 128  # OpenAI's documented maximum of n


def sample_until_settled(
    client: TierClient,
    messages: Sequence[BaseMessage | Mapping[str, Any]],
    *,
    max_tokens: int,
    temperature: float = 0.7,
    cap: int = 16,
    batch: int | None = None,
    rule: Rule = "beta",
    confidence: float = 0.95,
    window: int = 5,
    stop: Sequence[str] | None = None,
) -> SampleResult:
    """Sample answers until ``rule`` (``"beta"``: :func:`beta_stop` at ``confidence``;
    ``"esc"``: :func:`esc_window_stop` with ``window``) says the majority is settled, or
    ``cap`` samples are drawn. The rule is checked after every request.

    Tiers with ``capabilities.n`` get ``min(remaining, batch)`` choices per request
    (``batch`` defaults to :func:`default_batch` and is clipped to the tier's ``n`` limit —
    the embedded server's ``n_parallel``); other tiers get one request per sample. A
    trailing :class:`AIMessage` is an assistant prefill on tiers that declare
    ``assistant_prefill`` (dropped elsewhere); it is prepended to each text before parsing.
    Failures raise :class:`~effreason_agents.errors.TierError`."""
    import openai

    if cap < 1:
        raise ValueError("cap must be at least 1")
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if rule not in ("beta", "esc"):
        raise ValueError(f"unknown rule {rule!r} (beta or esc)")
    caps = client.tier.capabilities
    per_request = 1 if not caps.n else max(1, min(batch if batch is not None else default_batch(client), _n_limit(client)))

    msgs = list(messages)
    prefill = ""
    if msgs and isinstance(msgs[-1], AIMessage):
        if caps.assistant_prefill:
            prefill = str(msgs[-1].content)
        else:
            msgs = msgs[:-1]
    body = _to_openai_messages(msgs)

    try:
        api = openai.OpenAI(
            base_url=client.base_url(), api_key=client.api_key(), timeout=client.tier.timeout_s, max_retries=client.tier.max_retries
        )
    except TierError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the embedded server could not start
        raise TierError(client.name, str(exc), kind="unavailable") from exc

    answers: list[str | None] = []
    texts: list[str] = []
    per_choice: list[int] = []
    methods: list[str] = []
    input_tokens = reported = requests = dropped_tokens = 0
    latency = 0.0
    stopped_by: Literal["rule", "cap"] = "cap"
    while len(answers) < cap:
        k = min(cap - len(answers), per_request)
        kwargs: dict[str, Any] = {
            "model": client.tier.model,
            "messages": body,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if k > 1:
            kwargs["n"] = k
        if caps.logprobs:
            kwargs["logprobs"] = True
        if stop:
            kwargs["stop"] = list(stop)
        start = time.perf_counter()
        try:
            raw = api.chat.completions.create(**kwargs).model_dump()
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a TierError
            kind, why = _error_kind(exc)
            raise TierError(client.name, f"{why} after {client.tier.max_retries} retries", kind=kind) from exc
        latency += time.perf_counter() - start
        requests += 1
        choices = sorted(raw.get("choices") or [], key=lambda c: c.get("index", 0))
        if not choices:
            raise TierError(client.name, "the response held no choices", kind="bad_response")
        counts, method = per_choice_usage_with_method(raw, client.count_tokens)
        usage = raw.get("usage") or {}
        input_tokens += int(usage.get("prompt_tokens") or 0)
        reported += int(usage.get("completion_tokens") or 0)
        methods.append(method)
        for ch, n_tok in zip(choices, counts):
            if len(answers) >= cap:  # an engine that returned more choices than asked:
                dropped_tokens += n_tok  # keep the answers within the cap, but pay for them
                continue
            text = (ch.get("message") or {}).get("content") or ""
            if prefill and not text.startswith(prefill):
                text = prefill + text
            texts.append(text)
            answers.append(parse_answer(text).answer)
            per_choice.append(n_tok)
        if rule == "beta":
            settled = beta_stop(Counter(a for a in answers if a is not None), confidence)
        else:
            settled = esc_window_stop(answers, window)
        if settled:
            stopped_by = "rule"
            break

    answer, share, distinct = majority(answers)
    output_tokens = sum(per_choice) + dropped_tokens
    return SampleResult(
        answers=answers,
        answer=answer,
        share=share,
        distinct=distinct,
        samples_drawn=len(answers),
        cap=cap,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd(client.tier, input_tokens, output_tokens),
        requests=requests,
        token_count_method="+".join(dict.fromkeys(m for ms in methods for m in ms.split("+"))),
        stopped_by=stopped_by,
        rule=rule,
        texts=texts,
        per_choice_tokens=per_choice,
        reported_output_tokens=reported,
        latency_s=latency,
    )
