"""The attempt runner: the only code that calls a tier.

Every model call — an arm's answer, its self-consistency samples, a TALE budget
estimate, a self-verification question, the middleware's and the chat model's
tool calls — goes through :meth:`AttemptRunner.call` (or :meth:`AttemptRunner.acall`),
which applies the budget protocol of DESIGN.md:

1. **hold** the call's true worst case (:meth:`AttemptRunner.worst_case`: the tier's
   prompt bound times samples, plus every allowed output token, priced) against every
   scope, with a deadline (the tier's timeout × attempts plus a margin) after which an
   unsettled hold is released automatically;
2. **call** the provider (``max_tokens`` is always sent);
3. **settle** from the reported usage (cached input priced as the provider prices it);
   a reply without readable usage is settled at the hold and flagged; a failed call
   releases its hold;
4. **exactly once**: the hold key is (request, attempt, part). When a re-executed step
   finds its key settled, the stored completion is returned and the provider is not
   called again.

:meth:`AttemptRunner.run_arm` builds one graph attempt on top: prompt, held call(s),
answer parsing, signals, confidence and the threshold in force.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from effreason_agents.adapters.tiers import TierClient, cost_usd
from effreason_agents.config import Config, LimitConfig
from effreason_agents.core.confidence import compute_signals, p_yes, question_signals
from effreason_agents.core.features import answer_type_of
from effreason_agents.core.money import format_usd
from effreason_agents.core.prompts import build_prompt, output_cap, parse_answer
from effreason_agents.core.records import Completion, Scope, Usage
from effreason_agents.engine import policy
from effreason_agents.engine.tracing import attempt_config
from effreason_agents.errors import BudgetExhausted, LedgerError, TierError

__all__ = [
    "HOLD_MARGIN_S",
    "SETTLEMENTS",
    "SETTLE_RETRY_S",
    "AttemptRunner",
    "Held",
    "PendingSettlements",
    "attempt_id",
    "prompting",
]

log = logging.getLogger(__name__)

HOLD_MARGIN_S = 5.0
"""Seconds a hold outlives the longest its call can take before it expires."""

VERIFY_SYSTEM = "You check answers. Reply with one word: yes or no."


@dataclass
class Held:
    """A settled model call: its completion (tokens and cost as settled), the settled usage,
    whether it was returned from the ledger instead of calling the provider again (a
    re-executed step), and whether it was settled at the hold for want of readable usage."""

    completion: Completion
    usage: Usage
    replayed: bool = False

    @property
    def usage_missing(self) -> bool:
        return not self.completion.usage_reported


def attempt_id(key: str) -> str:
    """A stable id for the attempt held under ``key`` (the same on a re-executed step)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"effreason:{key}").hex


def prompting(strategy: Any) -> Any:
    """The strategy whose prompt an arm sends: an sc or bon strategy prompts each sample with
    its ``sample_prompt`` family."""
    if strategy.kind in ("sc", "bon"):
        return strategy.model_copy(update={"kind": strategy.sample_prompt})
    return strategy


class PendingSettlements:
    """Settlements the ledger could not write when their call returned (its database was
    away). Each is retried in a background thread with backoff for :data:`SETTLE_RETRY_S`
    seconds: its hold keeps counting against every scope meanwhile, so nothing can be
    overspent, and a settlement that arrives after the hold expired is still recorded (the
    ledger records billed spend on a released hold). :meth:`wait` lets a process finish
    them before it exits."""

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def retry(self, ledger: Any, key: str, actual: Usage, result: Mapping[str, Any]) -> None:
        thread = threading.Thread(target=self._run, args=(ledger, key, actual, result), daemon=True,
                                  name=f"effreason-settle-{key}")
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, ledger: Any, key: str, actual: Usage, result: Mapping[str, Any]) -> None:
        deadline, delay = time.monotonic() + SETTLE_RETRY_S, 0.25
        try:
            while True:
                time.sleep(delay)
                try:
                    ledger.commit(key, actual, result=result)
                    log.warning("hold %r: settled after the ledger came back", key)
                    return
                except LedgerError as exc:
                    if time.monotonic() + delay > deadline:
                        log.error("hold %r: giving up recording %s tokens ($%s) billed by the provider: %s",
                                  key, actual.total_tokens, actual.cost_usd, exc)
                        return
                    delay = min(delay * 2, 5.0)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def pending(self) -> int:
        with self._lock:
            return len(self._threads)

    def wait(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for pending settlements; returns how many are still pending."""
        end = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < end:
            time.sleep(0.05)
        return self.pending()


SETTLE_RETRY_S = 600.0
"""How long a settlement the ledger could not write is retried in the background."""

SETTLEMENTS = PendingSettlements()
"""This process's pending settlements."""


class AttemptRunner:
    """Holds, calls, settles and judges model calls for one :class:`~effreason_agents.engine.services.Services`."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.config: Config = services.config

    # -- the budget protocol ------------------------------------------------------------
    @staticmethod
    def worst_case(
        client: TierClient, prompt_tokens: int, max_tokens: int, samples: int = 1, input_tokens: int | None = None,
    ) -> Usage:
        """The most a call can cost: ``samples`` × (prompt bound + every output token), priced.
        ``input_tokens`` replaces ``samples × prompt_tokens`` when the call re-sends its prompt
        more often (a bon arm's continuation rounds: :func:`~effreason_agents.engine.sampling.bon_input_bound`)."""
        tin = prompt_tokens * samples if input_tokens is None else int(input_tokens)
        tout = max_tokens * samples
        return Usage.from_usd(tout, tin + tout, cost_usd(client.tier, tin, tout))

    @staticmethod
    def ttl(client: TierClient, rounds: int = 1) -> float:
        """How long a hold lives: every round's timeout over all its retries, plus a margin."""
        tier = client.tier
        return float(tier.timeout_s) * (tier.max_retries + 1) * max(1, rounds) + HOLD_MARGIN_S

    def _open(
        self, key: str, scopes: Sequence[Scope], worst: Usage, ttl_s: float,
        limits: Mapping[Scope, LimitConfig] | None,
    ) -> Held | None:
        """Reserve ``worst``; the stored :class:`Held` when ``key`` was already settled.
        Raises :class:`~effreason_agents.errors.BudgetExhausted` writing nothing."""
        ledger = self.services.ledger
        status = ledger.reserve(key, scopes, worst, ttl_s=ttl_s, limits=limits)
        if status != "committed":
            return None
        stored = ledger.settled(key)
        result = (stored[1] or {}) if stored else {}
        if "completion" not in result:
            raise LedgerError(f"step {key!r} already ran and was paid for, but its result was not stored; "
                              "start a new request instead of re-running this one")
        return Held(Completion.from_json(result["completion"]), stored[0], replayed=True)

    def _settle(self, key: str, worst: Usage, c: Completion) -> Held:
        """Commit what the call cost: its reported usage, or the hold when it reported none."""
        if not c.usage_reported:
            log.warning("hold %r: the tier reported no readable usage; settling at the hold (%s tokens, $%s)",
                        key, worst.total_tokens, worst.cost_usd)
            c.input_tokens = worst.total_tokens - worst.output_tokens
            c.output_tokens = worst.output_tokens
            c.cost_usd = worst.cost_usd
            actual = worst
        else:
            actual = Usage.from_usd(c.output_tokens, c.input_tokens + c.output_tokens, c.cost_usd)
        result = {"completion": c.to_json()}
        try:
            self.services.ledger.commit(key, actual, result=result)
        except LedgerError as exc:  # the provider billed the call: keep trying to record it
            log.error("hold %r: the provider billed %s tokens ($%s) but the ledger could not record it (%s); "
                      "retrying in the background", key, actual.total_tokens, actual.cost_usd, exc)
            SETTLEMENTS.retry(self.services.ledger, key, actual, result)
        return Held(c, actual)

    def call(
        self, key: str, scopes: Sequence[Scope], client: TierClient, *, prompt_tokens: int, max_tokens: int,
        invoke: Callable[[], Completion], samples: int = 1, rounds: int = 1,
        limits: Mapping[Scope, LimitConfig] | None = None, input_tokens: int | None = None,
    ) -> Held:
        """Hold → ``invoke()`` → settle. ``invoke`` makes the provider call(s) and returns
        one :class:`Completion` (summed over samples). The hold is released when it raises.
        ``input_tokens``: the input bound when it is not ``samples × prompt_tokens``."""
        worst = self.worst_case(client, prompt_tokens, max_tokens, samples, input_tokens)
        done = self._open(key, scopes, worst, self.ttl(client, rounds), limits)
        if done is not None:
            return done
        try:
            c = invoke()
        except BaseException:
            self._release(key)
            raise
        return self._settle(key, worst, c)

    async def acall(
        self, key: str, scopes: Sequence[Scope], client: TierClient, *, prompt_tokens: int, max_tokens: int,
        invoke: Callable[[], Awaitable[Completion]], samples: int = 1,
        limits: Mapping[Scope, LimitConfig] | None = None,
    ) -> Held:
        """:meth:`call` for an async ``invoke``; ledger work runs in a worker thread."""
        worst = self.worst_case(client, prompt_tokens, max_tokens, samples)
        done = await asyncio.to_thread(self._open, key, scopes, worst, self.ttl(client), limits)
        if done is not None:
            return done
        try:
            c = await invoke()
        except BaseException:
            await asyncio.to_thread(self._release, key)
            raise
        return await asyncio.to_thread(self._settle, key, worst, c)

    def _release(self, key: str) -> None:
        try:
            self.services.ledger.release(key)
        except Exception:  # noqa: BLE001 - never mask the call's own error; the hold expires
            log.exception("could not release hold %r; it expires at its deadline", key)

    def complete(
        self, key: str, scopes: Sequence[Scope], client: TierClient, messages: Sequence[Any], *, max_tokens: int,
        limits: Mapping[Scope, LimitConfig] | None = None, **opts: Any,
    ) -> Held:
        """One held chat completion of ``messages`` on ``client`` (``opts`` as
        :meth:`~effreason_agents.adapters.tiers.TierClient.complete` takes them)."""
        prompt = client.prompt_bound(messages)
        return self.call(key, scopes, client, prompt_tokens=prompt, max_tokens=max_tokens, limits=limits,
                         invoke=lambda: client.complete(messages, max_tokens=max_tokens, **opts))

    async def achat(
        self, key: str, scopes: Sequence[Scope], client: TierClient, messages: Sequence[Any], *, max_tokens: int,
        limits: Mapping[Scope, LimitConfig] | None = None, tools: Sequence[Mapping[str, Any]] | None = None,
        **opts: Any,
    ) -> Held:
        """One held call of a caller's own ``messages`` (and OpenAI ``tools``) on ``client``:
        the HTTP server's pinned-tier calls. ``opts`` as :meth:`TierClient.achat
        <effreason_agents.adapters.tiers.TierClient.achat>` takes them (streaming included).

        A stream its client cancelled is settled for what was generated: the prompt's bound
        plus the bound of the text generated so far (never more than ``max_tokens``)."""
        prompt_tokens = await asyncio.to_thread(client.prompt_bound, messages, tools or ())

        async def invoke() -> Completion:
            c = await client.achat(messages, max_tokens=max_tokens, tools=tools, **opts)
            if c.finish_reason == "cancelled" and not c.usage_reported:
                out = min(max_tokens, await asyncio.to_thread(client.text_bound, c.text))
                c.input_tokens, c.output_tokens = prompt_tokens, out
                c.cost_usd, c.usage_reported = cost_usd(client.tier, prompt_tokens, out), True
            return c

        return await self.acall(key, scopes, client, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                                invoke=invoke, limits=limits)

    # -- one graph attempt --------------------------------------------------------------
    def run_arm(
        self, *, request_id: str, index: int, scopes: Sequence[Scope], arm: Mapping[str, Any], question: str,
        features: Mapping[str, Any] | None, difficulty: str | None = None, retry: Mapping[str, Any] | None = None,
        threshold: float | None = None, limits: Mapping[Scope, LimitConfig] | None = None,
    ) -> dict[str, Any]:
        """Run ``arm`` on ``question`` as attempt ``index`` of the request and return the
        attempt record (the fields of :class:`~effreason_agents.adapters.store.AttemptRecord`
        plus ``confidence``, ``confidence_method`` and ``threshold``). Raises
        :class:`~effreason_agents.errors.BudgetExhausted` when its worst case does not fit."""
        from effreason_agents.adapters.store import AttemptRecord

        services = self.services
        client = services.clients[arm["tier"]]
        tier = client.tier
        strategy = self.config.strategies[arm["strategy"]]
        retry = retry or {}
        key = f"{request_id}:{index}"
        max_tokens = int(retry.get("max_tokens") or arm["max_tokens"])
        extra = Completion("", 0, 0, None, 0.0, tier.model, Decimal(0))  # side calls charged to this attempt
        budget_tokens = budget_method = None
        if strategy.kind == "budget-cot":
            budget_tokens, budget_method = self._budget_tokens(question, strategy, f"{key}:estimate", scopes, limits, extra)
            cap = output_cap(strategy, budget_tokens)
            max_tokens = max(max_tokens, cap) if retry else cap
        prompt = build_prompt(prompting(strategy), question, tier.capabilities,
                              answer_type=answer_type_of((features or {}).get("type")), budget_tokens=budget_tokens)
        attempt = AttemptRecord(
            attempt_id=attempt_id(key), request_id=request_id, index=index, arm=arm["name"], tier=arm["tier"],
            model=tier.model, engine=tier.engine, strategy=arm["strategy"], max_tokens=max_tokens,
            retry_of=retry.get("of"), budget_tokens=budget_tokens, budget_method=budget_method,
        ).model_dump()
        samples = int(arm.get("samples") or 1)
        prompt_tokens = int(arm["prompt_tokens"])  # bounded when the arm was planned
        if budget_tokens is not None:  # budget-cot: the prompt names this request's N
            prompt_tokens = max(prompt_tokens, client.prompt_bound(prompt.messages))
        input_bound: int | None = None
        bon_run: dict[str, Any] = {}
        try:
            if strategy.kind == "bon":
                from effreason_agents.engine.sampling import bon_arm, bon_input_bound, bon_rounds

                samples = int(strategy.samples)
                # every round re-sends the prompt (and the partial text) for every candidate
                input_bound = bon_input_bound(prompt_tokens, max_tokens, strategy.round_tokens, samples)

                def invoke() -> Completion:
                    c, bon_run["result"] = bon_arm(client, strategy, prompt, max_tokens, question=question,
                                                   prompt_tokens=prompt_tokens)
                    return c

                rounds = bon_rounds(max_tokens, strategy.round_tokens) * samples
            elif strategy.kind == "sc":
                from effreason_agents.engine.sampling import sample_arm

                def invoke() -> Completion:
                    return sample_arm(client, strategy, prompt, max_tokens)

                rounds = samples
            else:
                run_cfg = attempt_config(arm, difficulty=difficulty, attempt=index)

                def invoke() -> Completion:
                    return client.complete(
                        prompt.messages, max_tokens=max_tokens, temperature=strategy.temperature, stop=prompt.stop,
                        reasoning_effort=strategy.reasoning_effort, thinking_budget=strategy.thinking_budget,
                        config=run_cfg,
                    )

                rounds = 2 if strategy.thinking_budget else 1
            held = self.call(key, scopes, client, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                             invoke=invoke, samples=samples, rounds=rounds, limits=limits,
                             input_tokens=input_bound)
        except TierError as exc:
            attempt.update(error=str(exc), error_kind=str(exc.kind), confidence_method=f"error: {exc.kind}",
                           input_tokens=extra.input_tokens, output_tokens=extra.output_tokens,
                           cost_usd=format_usd(extra.cost_usd))
            return attempt
        c = held.completion
        parsed = parse_answer(c.text)
        verify = None
        if self.config.escalation.self_verify and parsed.answer is not None:
            verify = self._self_verify(client, question, parsed.answer, f"{key}:verify", scopes, limits, extra)
        answers = c.samples
        signals = compute_signals(
            c.logprobs, len(c.prefill), parsed.span, c.finish_reason,
            output_tokens=c.output_tokens if strategy.kind not in ("sc", "bon") else None, max_tokens=max_tokens,
            # bon: the winner's own logprobs judge it; rejected partials are not votes
            answer_method=parsed.method, samples=answers if strategy.kind != "bon" else None,
        )
        signals.update(question_signals(features, parsed.answer))
        if verify is not None:
            signals["self_verify"] = verify
        if strategy.kind == "sc":
            attempt.update(samples=answers, samples_cap=strategy.samples)
            drawn_n = len(answers or []) or 1
            signals["length_ratio"] = c.output_tokens / (max_tokens * drawn_n)
        if strategy.kind == "bon":
            attempt.update(samples=answers, samples_cap=strategy.samples)
            result = bon_run.get("result")
            if result is not None:  # absent when the step was replayed from the ledger
                signals.update(result.record())
                winner = result.candidates[result.winner] if result.winner is not None else None
                signals["length_ratio"] = (winner.output_tokens if winner else 0) / max_tokens
        conf, method, calibrator = policy.confidence(
            services.calibrators, arm["tier"], arm["strategy"], signals,
            has_answer=parsed.answer is not None, answer_method=parsed.method,
        )
        scorer = services.scorer
        if scorer is not None and scorer.applies(arm["name"], arm["tier"], tier.model):
            # the cascade scorer judges the reply; the signals keep its value and the calibrated one apart
            from effreason_agents.adapters.scorer import CALIBRATED_SIGNAL, SCORER_SIGNAL

            p_right = scorer.predict(question, c.text, signals,
                                     answer_type=answer_type_of((features or {}).get("type")))
            signals[CALIBRATED_SIGNAL] = conf
            signals[SCORER_SIGNAL] = p_right
            # replace: the scorer's fitted threshold applies, unless the run or the config sets one
            conf, method, calibrator = policy.scored_confidence(conf, method, calibrator, scorer, p_right,
                                                                self.config.escalation.scorer_mode)
        attempt.update(
            model=c.model,
            input_tokens=c.input_tokens + extra.input_tokens,
            output_tokens=c.output_tokens + extra.output_tokens,
            cost_usd=format_usd(c.cost_usd + extra.cost_usd),
            latency_s=round(c.latency_s, 4),
            finish_reason=c.finish_reason,
            signals=signals,
            answer=parsed.answer,
            answer_method=parsed.method,
            raw_text=c.text,
            logprobs=[t.to_json() for t in c.logprobs] if c.logprobs else None,
            truncated=c.finish_reason == "length",
            usage_missing=held.usage_missing,
            confidence=None if conf is None else round(conf, 6),
            confidence_method=method,
            threshold=policy.resolve_threshold(threshold, self.config, calibrator),
        )
        return attempt

    def side_call(
        self, client: TierClient, key: str, scopes: Sequence[Scope], limits: Any, extra: Completion,
        messages: Sequence[Any], max_tokens: int,
    ) -> Completion | None:
        """A held helper call charged to the attempt (``extra``); ``None`` when it does not
        fit the budget or the tier fails (the attempt goes on without it)."""
        try:
            held = self.complete(key, scopes, client, messages, max_tokens=max_tokens, temperature=0.0, limits=limits)
        except BudgetExhausted as exc:
            log.info("%s skipped: %s", key, exc)
            return None
        except TierError as exc:
            log.warning("%s failed: %s", key, exc)
            return None
        c = held.completion
        extra.input_tokens += c.input_tokens
        extra.output_tokens += c.output_tokens
        extra.cost_usd += c.cost_usd
        return c

    def _self_verify(
        self, client: TierClient, question: str, answer: str, key: str, scopes: Sequence[Scope], limits: Any,
        extra: Completion,
    ) -> float | None:
        """AutoMix-style self-verification: P(yes) that ``answer`` is right, from the tier."""
        messages = [SystemMessage(VERIFY_SYSTEM),
                    HumanMessage(f"Question: {question}\nProposed answer: {answer}\nIs the proposed answer correct?")]
        c = self.side_call(client, key, scopes, limits, extra, messages, 1)
        return None if c is None else p_yes(c.logprobs, c.text)

    def _budget_tokens(
        self, question: str, strategy: Any, key: str, scopes: Sequence[Scope], limits: Any, extra: Completion,
    ) -> tuple[int, str]:
        """budget-cot's N: fixed in the strategy, else from the configured estimator (TALE's
        call held and charged to the attempt like any other)."""
        if strategy.budget_tokens:
            return int(strategy.budget_tokens), "fixed (strategy.budget_tokens)"
        from effreason_agents.engine.estimator import estimate_budget

        ladder = self.config.usable_ladder(self.services.environ)
        cheapest = self.services.clients.get(ladder[0].tier) if ladder else None
        held_client = None if cheapest is None else _ChargedClient(self, cheapest, key, scopes, limits, extra)
        est = estimate_budget(question, self.config.budget, client=held_client)
        return int(est.tokens), est.method


class _ChargedClient:
    """A tier as the budget estimator calls it (``complete(messages, max_tokens=...)``), every
    call held in the ledger and charged to the attempt it estimates for."""

    def __init__(self, runner: AttemptRunner, client: TierClient, key: str, scopes: Sequence[Scope],
                 limits: Any, extra: Completion) -> None:
        self.runner, self.client, self.key, self.scopes, self.limits, self.extra = runner, client, key, scopes, limits, extra

    def complete(self, messages: Sequence[Any], *, max_tokens: int, temperature: float = 0.0) -> Completion:
        c = self.runner.side_call(self.client, self.key, self.scopes, self.limits, self.extra, messages, max_tokens)
        if c is None:
            raise TierError(self.client.name, "the estimate did not fit the budget or the tier failed")
        return c
