"""Adaptive sampling: draw answers from a tier until the majority is settled.

Samples vote by the normal form of their answers (:func:`~effreason_agents.evaluation.tasks.answer_key`:
"5", "5." and "5 apples" are one vote; "No, it is not" and "no" are one vote).

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

``"fixed"`` draws every sample (no early stop): the plain self-consistency
baseline, and the way to record a full sample sequence on which the adaptive
rules can be replayed offline (``benchmarks/sc.py``).

:func:`sample_until_settled` draws samples from a :class:`~effreason_agents.adapters.tiers.TierClient`
in rounds until the chosen rule fires or ``cap`` samples are drawn, checking the
rule after each round. A round is one request with the chat-completions ``n``
parameter where the tier supports it, otherwise up to ``batch`` single-choice
requests sent concurrently (threads). Its :class:`SampleResult` carries what a
graph node needs to record the whole run as one attempt: the majority answer,
the *representative* sample (the first one that gave the majority answer, with
its logprobs), every sample's finish reason, and the summed usage and cost.

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

import logging
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Literal, Mapping, Sequence

from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages

from effreason_agents.core.prompts import parse_answer
from effreason_agents.core.answers import answer_key
from effreason_agents.adapters.tiers import MESSAGE_OVERHEAD_TOKENS, TierClient, cost_usd, parse_logprobs
from effreason_agents.core.records import Completion, TokenLogprob

Rule = Literal["beta", "esc", "fixed"]
RULES: tuple[Rule, ...] = ("beta", "esc", "fixed")

log = logging.getLogger(__name__)

__all__ = [
    "CONTINUATION_OVERHEAD_TOKENS",
    "CONTINUATION_SLACK",
    "RULES",
    "BonCandidate",
    "BonResult",
    "Rule",
    "SampleResult",
    "best_of_n",
    "beta_posterior_majority",
    "beta_stop",
    "bon_arm",
    "bon_candidate_input_bound",
    "bon_input_bound",
    "bon_rounds",
    "default_batch",
    "esc_window_stop",
    "majority",
    "mean_logprob",
    "per_choice_usage",
    "per_choice_usage_with_method",
    "regularized_beta_int",
    "reject_count",
    "representative_index",
    "sample_arm",
    "sample_until_settled",
    "settled",
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


def settled(rule: Rule, answers: Sequence[str | None], confidence: float = 0.95, window: int = 5) -> bool:
    """Whether ``rule`` stops after ``answers`` (in the order drawn): ``"beta"`` is
    :func:`beta_stop` on the non-``None`` answers at ``confidence``, ``"esc"`` is
    :func:`esc_window_stop` with ``window``, ``"fixed"`` never stops early."""
    if rule == "beta":
        return beta_stop(Counter(a for a in answers if a is not None), confidence)
    if rule == "esc":
        return esc_window_stop(answers, window)
    if rule == "fixed":
        return False
    raise ValueError(f"unknown rule {rule!r} ({', '.join(RULES)})")


def representative_index(answers: Sequence[str | None], answer: str | None) -> int | None:
    """Index of the first of ``answers`` equal to ``answer`` (the majority); ``None`` when
    ``answer`` is ``None`` or absent."""
    if answer is None:
        return None
    return next((i for i, a in enumerate(answers) if a == answer), None)


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
    """What :func:`sample_until_settled` drew: every sample, the majority, and the run's
    usage summed over all samples and requests.

    ``answers``, ``texts`` (with the prefill prepended), ``finish_reasons`` and
    ``per_choice_tokens`` hold one entry per sample in the order drawn. The
    *representative* sample is the first whose answer is the majority ``answer``
    (``representative_index``; ``None`` when no sample gave an answer); its logprobs
    (``representative_logprobs``, over the generated text after ``prefill``, with the top
    alternatives the tier returns) stand for the run when it is recorded as one attempt.
    ``truncated_share`` is the share of samples cut by ``max_tokens`` (finish reason
    ``"length"``)."""

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
    rule: Rule = "beta"
    texts: list[str] = field(default_factory=list)
    per_choice_tokens: list[int] = field(default_factory=list)
    reported_output_tokens: int = 0  # sum of usage.completion_tokens as the engine reported it
    latency_s: float = 0.0  # wall time of the rounds (concurrent requests overlap)
    representative_index: int | None = None
    representative_logprobs: list[TokenLogprob] | None = None
    prefill: str = ""
    finish_reasons: list[str | None] = field(default_factory=list)
    truncated_share: float = 0.0
    usage_reported: bool = True  # every request reported readable usage
    cached_input_tokens: int = 0

    @property
    def representative_text(self) -> str | None:
        """The representative sample's text (``None`` when there is none)."""
        i = self.representative_index
        return self.texts[i] if i is not None and i < len(self.texts) else None


def default_batch(client: TierClient) -> int:
    """Samples per round: 2. On tiers with ``n`` that is the choices per request, at most the
    tier's ``n`` limit (the embedded server's ``n_parallel`` slots, which llama.cpp enforces
    as the upper bound of ``n``); on other tiers, the concurrent single-choice requests."""
    if not client.tier.capabilities.n:
        return 2
    return min(2, _n_limit(client))


def _n_limit(client: TierClient) -> int:
    if not client.tier.capabilities.n:
        return 1
    if client.tier.engine == "embedded":
        cfg = getattr(client, "_config", None)
        from effreason_agents.config import EmbeddedConfig

        return (cfg.embedded if cfg is not None else EmbeddedConfig()).n_parallel
    return 128  # OpenAI's documented maximum of n


def _create(client: TierClient, messages: Sequence[BaseMessage], n: int, opts: Mapping[str, Any]) -> dict[str, Any]:
    """One sampling request through the tier's client path; failures are :class:`TierError`."""
    return client.sample(messages, n=n, **opts)


def _concurrently(
    pool: ThreadPoolExecutor, client: TierClient, messages: Sequence[BaseMessage], opts: Mapping[str, Any], k: int
) -> list[dict[str, Any]]:
    """``k`` identical requests at once, in submission order. When any fails, the others are
    still awaited, then the first failure (in submission order) is raised."""
    futures = [pool.submit(_create, client, messages, 1, opts) for _ in range(k)]
    wait(futures)
    for f in futures:
        exc = f.exception()
        if exc is not None:
            raise exc
    return [f.result() for f in futures]


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
    """Sample answers until ``rule`` says the majority is settled, or ``cap`` samples are
    drawn: ``"beta"`` is :func:`beta_stop` at ``confidence``, ``"esc"`` is
    :func:`esc_window_stop` with ``window``, ``"fixed"`` always draws ``cap`` samples.

    Samples are drawn in rounds of ``min(remaining, batch)`` (``batch`` defaults to
    :func:`default_batch`) and the rule is checked after each round. On tiers with
    ``capabilities.n`` a round is one request for that many choices (``batch`` clipped to
    the tier's ``n`` limit — the embedded server's ``n_parallel``); on other tiers it is that
    many single-choice requests sent concurrently. Logprobs (with
    ``capabilities.top_logprobs`` alternatives per token) are requested where the tier
    supports them.

    A trailing :class:`AIMessage` is an assistant prefill on tiers that declare
    ``assistant_prefill`` (dropped elsewhere); it is prepended to each text before parsing
    and reported as ``SampleResult.prefill``.

    Bad arguments raise :class:`ValueError` before any request. A failed request raises
    :class:`~effreason_agents.errors.TierError` (in a concurrent round, once the round's
    other requests have finished)."""
    if cap < 1:
        raise ValueError("cap must be at least 1")
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} ({', '.join(RULES)})")
    if batch is not None and batch < 1:
        raise ValueError("batch must be at least 1")
    if rule == "beta" and not 0.0 < confidence <= 1.0:
        raise ValueError("confidence must lie in (0, 1]")
    if rule == "esc" and window < 1:
        raise ValueError("window must be at least 1")
    caps = client.tier.capabilities
    size = batch if batch is not None else default_batch(client)
    if caps.n:
        size = max(1, min(size, _n_limit(client)))

    msgs = convert_to_messages(list(messages))
    prefill = ""
    if msgs and isinstance(msgs[-1], AIMessage):
        if caps.assistant_prefill:
            prefill = str(msgs[-1].content)
        else:
            msgs = msgs[:-1]
    from langchain_core.runnables.config import ensure_config

    opts: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "stop": list(stop) if stop else None,
                            "config": ensure_config()}

    answers: list[str | None] = []
    texts: list[str] = []
    finish: list[str | None] = []
    raw_logprobs: list[Mapping[str, Any] | None] = []
    per_choice: list[int] = []
    methods: list[str] = []
    input_tokens = reported = requests = dropped_tokens = cached_tokens = 0
    usage_missing = False
    latency = 0.0
    stopped_by: Literal["rule", "cap"] = "cap"
    pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sample") if not caps.n and size > 1 else None
    try:
        while len(answers) < cap:
            k = min(cap - len(answers), size)
            start = time.perf_counter()
            if caps.n:
                responses = [_create(client, msgs, k, opts)]
            elif pool is not None and k > 1:
                responses = _concurrently(pool, client, msgs, opts, k)
            else:
                responses = [_create(client, msgs, 1, opts)]
            latency += time.perf_counter() - start
            for raw in responses:
                requests += 1
                choices = sorted(raw["choices"], key=lambda c: c.get("index", 0))
                counts, method = per_choice_usage_with_method(raw, client.count_tokens)
                usage = raw.get("usage")
                if usage is None:
                    usage_missing = True
                usage = usage or {}
                input_tokens += int(usage.get("prompt_tokens") or 0)
                cached_tokens += int(usage.get("cached_tokens") or 0)
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
                    answers.append(answer_key(parse_answer(text).answer))
                    finish.append(ch.get("finish_reason"))
                    raw_logprobs.append(ch.get("logprobs"))
                    per_choice.append(n_tok)
            if settled(rule, answers, confidence, window):
                stopped_by = "rule"
                break
    finally:
        if pool is not None:
            pool.shutdown(wait=True)

    answer, share, distinct = majority(answers)
    rep = representative_index(answers, answer)
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
        cost_usd=cost_usd(client.tier, input_tokens, output_tokens, cached_tokens),
        usage_reported=not usage_missing,
        cached_input_tokens=cached_tokens,
        requests=requests,
        token_count_method="+".join(dict.fromkeys(m for ms in methods for m in ms.split("+"))),
        stopped_by=stopped_by,
        rule=rule,
        texts=texts,
        per_choice_tokens=per_choice,
        reported_output_tokens=reported,
        latency_s=latency,
        representative_index=rep,
        representative_logprobs=parse_logprobs(raw_logprobs[rep]) if rep is not None else None,
        prefill=prefill,
        finish_reasons=finish,
        truncated_share=sum(1 for f in finish if f == "length") / len(finish) if finish else 0.0,
    )


def sample_arm(client: TierClient, strategy: Any, prompt: Any, max_tokens: int) -> Completion:
    """Run an sc arm: samples until the strategy's stopping rule settles the majority.
    Returns the attempt as one :class:`Completion`: the representative sample's text and
    logprobs (the first that gave the majority answer), every sample's tokens and cost,
    and every sample's answer in ``samples``."""
    r = sample_until_settled(
        client, prompt.messages, max_tokens=max_tokens, temperature=strategy.temperature, cap=strategy.samples,
        rule=strategy.stop_rule, confidence=strategy.stop_confidence, window=strategy.esc_window, stop=prompt.stop,
    )
    i = r.representative_index if r.representative_index is not None else 0
    return Completion(
        text=r.texts[i] if r.texts else "", input_tokens=r.input_tokens, output_tokens=r.output_tokens,
        finish_reason=r.finish_reasons[i] if r.finish_reasons else None, latency_s=r.latency_s,
        model=client.tier.model, cost_usd=r.cost_usd, logprobs=r.representative_logprobs, prefill=r.prefill,
        cached_input_tokens=r.cached_input_tokens, usage_reported=r.usage_reported, samples=r.answers,
    )


# -- Best-of-N with early rejection (the bon strategy) ------------------------------------

CONTINUATION_SLACK = 1.1
"""A continuation re-sends the partial text as an assistant prefill; its re-tokenised length is
bounded by the tokens generated so far times this factor (re-tokenising a model's own output
gives about as many tokens; the 10% covers merges that split differently)."""

CONTINUATION_OVERHEAD_TOKENS = MESSAGE_OVERHEAD_TOKENS + 2
"""Chat-template tokens a continuation adds for the prefilled assistant turn (and its separator)."""


def bon_rounds(max_tokens: int, round_tokens: int) -> int:
    """Requests one candidate can need: ``ceil(max_tokens / round_tokens)`` (at least 1)."""
    if max_tokens < 1 or round_tokens < 1:
        raise ValueError("max_tokens and round_tokens must be at least 1")
    return max(1, math.ceil(max_tokens / round_tokens))


def bon_candidate_input_bound(prompt_tokens: int, max_tokens: int, round_tokens: int) -> int:
    """The most input tokens one candidate can be billed: every round re-sends the prompt
    (``prompt_tokens``, a bound), and round ``r ≥ 1`` also its partial text of at most
    ``min(r·round_tokens, max_tokens)`` generated tokens (times :data:`CONTINUATION_SLACK`,
    plus :data:`CONTINUATION_OVERHEAD_TOKENS`). :func:`best_of_n` never sends a request that
    would take a candidate past this bound (it checks each continuation's own prompt bound)."""
    rounds = bon_rounds(max_tokens, round_tokens)
    total = prompt_tokens * rounds
    for r in range(1, rounds):
        partial = min(r * round_tokens, max_tokens)
        total += math.ceil(partial * CONTINUATION_SLACK) + CONTINUATION_OVERHEAD_TOKENS
    return total


def bon_input_bound(prompt_tokens: int, max_tokens: int, round_tokens: int, samples: int) -> int:
    """The most input tokens a bon arm of ``samples`` candidates can be billed (all of them
    running every round): ``samples ×`` :func:`bon_candidate_input_bound`."""
    return samples * bon_candidate_input_bound(prompt_tokens, max_tokens, round_tokens)


def reject_count(running: int, fraction: float) -> int:
    """How many of ``running`` candidates a round drops: ``floor(fraction × running)``, never
    all of them (at least one keeps running)."""
    if running <= 1 or fraction <= 0:
        return 0
    return min(running - 1, math.floor(fraction * running + 1e-9))


def mean_logprob(logprobs: Sequence[TokenLogprob] | None) -> float | None:
    """The model's own certainty in a text: the mean logprob of its tokens (``None`` without any)."""
    if not logprobs:
        return None
    return math.fsum(t.logprob for t in logprobs) / len(logprobs)


@dataclass
class BonCandidate:
    """One of the N generations of a :func:`best_of_n` run.

    ``text`` is what the model generated (after any prefill of the prompt); ``logprobs`` cover
    it, round after round. ``state`` is ``"running"``, ``"done"`` (it stopped by itself or
    reached ``max_tokens``), ``"rejected"`` (dropped after round ``rejected_round``, 1-based),
    ``"budget"`` (its next continuation would have passed its input bound) or ``"failed"``
    (a request failed: ``error``)."""

    index: int
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    requests: int = 0
    input_bound: int = 0
    finish_reason: str | None = None
    state: Literal["running", "done", "rejected", "budget", "failed"] = "running"
    rejected_round: int | None = None
    score: float | None = None
    answer: str | None = None
    error: str | None = None

    @property
    def complete(self) -> bool:
        """It ended by itself (a stop sequence or end of text), not cut by a token cap."""
        return self.state == "done" and self.finish_reason not in (None, "length")


@dataclass
class BonResult:
    """What :func:`best_of_n` did: every candidate, what each round dropped, the winner, and
    the usage summed over every request (rejected partials and re-sent prompts included)."""

    candidates: list[BonCandidate]
    rejected_per_round: list[list[int]]
    rounds: int
    winner: int | None
    winner_score: float | None
    scored_by: str
    prefill: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: Decimal
    requests: int
    latency_s: float
    usage_reported: bool
    input_bound: int

    @property
    def winner_text(self) -> str:
        """The winning reply (with the prompt's prefill), ``""`` when there is none."""
        if self.winner is None:
            return ""
        return self.prefill + self.candidates[self.winner].text

    @property
    def answers(self) -> list[str | None]:
        """Each candidate's answer read from its (possibly partial) text, by candidate."""
        return [c.answer for c in self.candidates]

    @property
    def tokens_per_candidate(self) -> list[int]:
        """Output tokens each candidate generated (rejected ones up to their rejection)."""
        return [c.output_tokens for c in self.candidates]

    def record(self) -> dict[str, float]:
        """The run as flat numeric attempt signals: ``bon_candidates``, ``bon_rounds``,
        ``bon_score`` (the winner's), ``bon_rejected_r<k>`` (dropped after round k) and
        ``bon_tokens_c<i>`` (output tokens of candidate i)."""
        out: dict[str, float] = {"bon_candidates": float(len(self.candidates)), "bon_rounds": float(self.rounds)}
        if self.winner_score is not None:
            out["bon_score"] = float(self.winner_score)
        for r, dropped in enumerate(self.rejected_per_round, start=1):
            out[f"bon_rejected_r{r}"] = float(len(dropped))
        for c in self.candidates:
            out[f"bon_tokens_c{c.index}"] = float(c.output_tokens)
        return out


def _parallel(client: TierClient) -> int:
    """Requests a round sends at once: the embedded server's slots, else 8."""
    if client.tier.engine == "embedded":
        from effreason_agents.config import EmbeddedConfig

        cfg = getattr(client, "_config", None)
        return (cfg.embedded if cfg is not None else EmbeddedConfig()).n_parallel
    return 8


def best_of_n(
    client: TierClient,
    messages: Sequence[BaseMessage | Mapping[str, Any]],
    *,
    question: str,
    max_tokens: int,
    samples: int,
    round_tokens: int,
    reject_fraction: float,
    temperature: float = 0.7,
    stop: Sequence[str] | None = None,
    reward: Callable[[str, str], float] | None = None,
    prompt_tokens: int | None = None,
) -> BonResult:
    """Best-of-N with early rejection (Speculative Rejection, Sun et al. 2024).

    ``samples`` candidates answer ``messages`` in rounds of ``round_tokens`` tokens. After each
    round every still-running candidate is scored on its partial text and the lowest
    :func:`reject_count` of them (``reject_fraction`` of the running ones) is dropped; the rest
    continue: the prompt is re-sent with the partial text as an assistant prefill. Candidates
    run until they stop by themselves or reach ``max_tokens``. The winner is the best-scored
    complete candidate (or, when none completed, the best surviving one).

    The score is ``reward(question, text)`` when given, else the model's own certainty,
    :func:`mean_logprob` of the text. A reward that raises scores that candidate lowest (logged).
    ``reject_fraction = 0`` with ``round_tokens >= max_tokens`` is plain Best-of-N. On tiers
    without ``assistant_prefill`` a candidate cannot be continued, so there is one round of
    ``max_tokens`` (plain Best-of-N).

    Tokens: ``prompt_tokens`` is the bound of the prompt (:meth:`TierClient.prompt_bound` of
    ``messages`` when unset); no candidate is sent a request that takes its summed input
    bounds past :func:`bon_candidate_input_bound`, so the run's billed input never exceeds
    :func:`bon_input_bound`. Failed requests drop their candidate; when every first-round
    request fails the first failure is raised (a :class:`~effreason_agents.errors.TierError`)."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if max_tokens < 1 or round_tokens < 1:
        raise ValueError("max_tokens and round_tokens must be at least 1")
    if not 0.0 <= reject_fraction < 1.0:
        raise ValueError("reject_fraction must lie in [0, 1)")
    caps = client.tier.capabilities
    if reward is None and not caps.logprobs:
        from effreason_agents.errors import ConfigError

        raise ConfigError(f"tier {client.name!r} returns no logprobs, so a bon strategy cannot score by the "
                          "model's certainty; set the strategy's reward or reward_url")
    msgs = convert_to_messages(list(messages))
    prefill = ""
    if msgs and isinstance(msgs[-1], AIMessage):
        prefill = str(msgs[-1].content) if caps.assistant_prefill else ""
        msgs = msgs[:-1]
    bound0 = int(prompt_tokens) if prompt_tokens is not None else client.prompt_bound(messages)
    k = round_tokens if caps.assistant_prefill else max_tokens
    allowance = bon_candidate_input_bound(bound0, max_tokens, k)
    from langchain_core.runnables.config import ensure_config

    cfg = ensure_config()
    cands = [BonCandidate(i) for i in range(samples)]
    scored_by = "reward" if reward is not None else "mean_logprob"

    def score(c: BonCandidate) -> float | None:
        if reward is None:
            return mean_logprob(c.logprobs)
        try:
            return float(reward(question, prefill + c.text))
        except Exception as exc:  # noqa: BLE001 - a broken reward ranks the candidate last
            log.warning("bon: the reward failed on candidate %d (%s); it ranks last", c.index, exc)
            return None

    def step(c: BonCandidate) -> Completion:
        head = prefill + c.text
        send = [*msgs, AIMessage(head)] if head else list(msgs)
        return client.complete(send, max_tokens=min(k, max_tokens - c.output_tokens), temperature=temperature,
                               stop=list(stop) if stop else None, config=cfg)

    def rank(c: BonCandidate) -> tuple[float, int]:
        return (c.score if c.score is not None and math.isfinite(c.score) else -math.inf, -c.index)

    rejected: list[list[int]] = []
    rounds = requests = 0
    usage_missing = False
    latency = 0.0
    first_error: BaseException | None = None
    pool = ThreadPoolExecutor(max_workers=max(1, min(samples, _parallel(client))), thread_name_prefix="bon")
    try:
        while True:
            batch: list[BonCandidate] = []
            for c in cands:
                if c.state != "running":
                    continue
                bound = bound0 if c.requests == 0 else client.prompt_bound([*msgs, AIMessage(prefill + c.text)])
                if c.input_bound + bound > allowance:
                    c.state, c.finish_reason = "budget", "length"
                    continue
                c.input_bound += bound
                batch.append(c)
            if not batch:
                break
            start = time.perf_counter()
            sent = {c.index: min(k, max_tokens - c.output_tokens) for c in batch}
            futures = [pool.submit(step, c) for c in batch]
            wait(futures)
            latency += time.perf_counter() - start
            rounds += 1
            for c, f in zip(batch, futures):
                exc = f.exception()
                if exc is not None:
                    c.state, c.error = "failed", str(exc)
                    first_error = first_error or exc
                    continue
                out = f.result()
                requests += 1
                c.requests += 1
                usage_missing = usage_missing or not out.usage_reported
                c.input_tokens += out.input_tokens
                # without usage the call is settled at the hold; count it as its whole cap here
                c.output_tokens += out.output_tokens if out.usage_reported else \
                    (len(out.logprobs) if out.logprobs else sent[c.index])
                c.cached_input_tokens += out.cached_input_tokens
                c.text += out.generated_text
                c.logprobs.extend(out.logprobs or [])
                c.finish_reason = out.finish_reason
                if out.finish_reason != "length" or c.output_tokens >= max_tokens or not out.generated_text:
                    c.state = "done"
            if requests == 0 and first_error is not None:
                raise first_error
            running = [c for c in cands if c.state == "running"]
            drop = reject_count(len(running), reject_fraction)
            if running and reject_fraction > 0:
                for c in running:
                    c.score = score(c)
                gone = sorted(running, key=rank)[:drop]
                for c in gone:
                    c.state, c.rejected_round = "rejected", rounds
                rejected.append(sorted(c.index for c in gone))
            elif running:
                rejected.append([])
    finally:
        pool.shutdown(wait=True)

    for c in cands:
        c.answer = answer_key(parse_answer(prefill + c.text).answer) if c.text else None
    pool_ = [c for c in cands if c.complete] or [c for c in cands if c.state != "rejected" and c.text]
    for c in pool_:
        c.score = score(c)
    winner = max(pool_, key=rank) if pool_ else None
    tin = sum(c.input_tokens for c in cands)
    tout = sum(c.output_tokens for c in cands)
    cached = sum(c.cached_input_tokens for c in cands)
    return BonResult(
        candidates=cands, rejected_per_round=rejected, rounds=rounds,
        winner=None if winner is None else winner.index, winner_score=None if winner is None else winner.score,
        scored_by=scored_by, prefill=prefill, input_tokens=tin, output_tokens=tout, cached_input_tokens=cached,
        cost_usd=cost_usd(client.tier, tin, tout, cached), requests=requests, latency_s=latency,
        usage_reported=not usage_missing, input_bound=sum(c.input_bound for c in cands),
    )


def bon_arm(
    client: TierClient, strategy: Any, prompt: Any, max_tokens: int, *, question: str,
    prompt_tokens: int | None = None, reward: Callable[[str, str], float] | None = None,
) -> tuple[Completion, BonResult]:
    """Run a bon arm (:func:`best_of_n` with the strategy's ``samples``, ``round_tokens``,
    ``reject_fraction``, ``temperature`` and reward). Returns the attempt as one
    :class:`Completion` — the winner's text, logprobs and finish reason, every request's
    tokens and cost, every candidate's answer in ``samples`` — and the run's :class:`BonResult`."""
    if reward is None:
        from effreason_agents.adapters.reward import load_reward

        reward = load_reward(strategy)
    r = best_of_n(
        client, prompt.messages, question=question, max_tokens=max_tokens, samples=strategy.samples,
        round_tokens=strategy.round_tokens, reject_fraction=strategy.reject_fraction,
        temperature=strategy.temperature, stop=prompt.stop, reward=reward, prompt_tokens=prompt_tokens,
    )
    w = r.candidates[r.winner] if r.winner is not None else None
    c = Completion(
        text=r.winner_text, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
        finish_reason=w.finish_reason if w is not None else None, latency_s=r.latency_s, model=client.tier.model,
        cost_usd=r.cost_usd, logprobs=list(w.logprobs) if w is not None and w.logprobs else None, prefill=r.prefill,
        cached_input_tokens=r.cached_input_tokens, usage_reported=r.usage_reported, samples=r.answers,
    )
    return c, r
