"""The reasoning graph's nodes: classify, solve, assess, escalate, finalize, log.

Each node is a plain function of ``(state, runtime)`` returning a state update;
the decisions they apply live in :mod:`~effreason_agents.engine.policy`,
:mod:`~effreason_agents.core.budget`, :mod:`~effreason_agents.core.features` and
:mod:`~effreason_agents.core.confidence`. :class:`Services` holds what the nodes
share: the configuration, one client per tier, the outcome store and the ledger.

Use them in your own graph
--------------------------
:func:`add_cost_aware_reasoning` adds the whole graph to your ``StateGraph`` as one
node (a subgraph) that reads your question key and writes your answer key::

    from effreason_agents.graph import add_cost_aware_reasoning
    builder = StateGraph(MyState)
    builder.add_node("prepare", prepare)
    add_cost_aware_reasoning(builder, name="reason", question_key="question", answer_key="answer")
    builder.add_edge("prepare", "reason")

Or wire the nodes yourself: the module-level :func:`classify`, :func:`solve`,
:func:`assess`, :func:`escalate`, :func:`finalize` and :func:`log` run on the default
configuration (:func:`~effreason_agents.config.load_config`, loaded once);
:meth:`ReasoningNodes` binds them to yours. Their state contract is :data:`NODE_CONTRACT`
(the keys of :class:`~effreason_agents.graph.state.ReasoningState` each node reads and writes),
and the edges between them are the ``after_*`` functions of :class:`ReasoningNodes`.

Progress events: with ``stream_mode="custom"`` every run emits ``{"event": ...}`` dicts:
``arm_chosen`` (arm, difficulty, by classifier/router), ``attempt`` (arm, answer,
confidence, cost so far, whether it escalates), ``escalation`` (to, after) and ``done``
(status, answer, total cost and tokens, arms tried).
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from decimal import Decimal
from typing import Any, Mapping

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from effreason_agents import __version__
from effreason_agents.core.budget import Spend, effective_budget, worst_case_cost
from effreason_agents.adapters.calibrator import Calibrator, CalibratorSet, load_calibrators
from effreason_agents.langchain.callbacks import attempt_config
from effreason_agents.core.features import answer_type_of, classify_difficulty
from effreason_agents.config import DEFAULT_CONFIDENCE_THRESHOLD, Config, LimitConfig
from effreason_agents.errors import ConfigError, EffReasonError, InvalidQuestionError, StoreError, TierError
from effreason_agents.adapters.store import AttemptRecord, OutcomeStore, RequestRecord, utc_now
from effreason_agents.engine.policy import TIER_DOWN_KINDS, arm_fits, escalation_decision, final_choice, pick_arm, start_rung
from effreason_agents.graph.state import ReasoningContext, ReasoningState
from effreason_agents.core.prompts import build_prompt, output_cap, parse_answer
from effreason_agents.adapters.ledger import BudgetExhausted, BudgetLedger, Scope, Usage
from effreason_agents.adapters.tiers import Completion, TierClient, clients_for, cost_usd, estimate_tokens, format_usd
from effreason_agents.core.confidence import (
    HEURISTIC_METHOD,
    HEURISTIC_SC_METHOD,
    compute_signals,
    heuristic_confidence,
    p_yes,
    question_signals,
)

logger = logging.getLogger(__name__)

GRAPH_VERSION = f"reasoner/{__version__}"
MAX_QUESTION_CHARS = 100_000
PROMPT_OVERHEAD_TOKENS = 96  # system prompt + chat template, all strategies


@dataclass
class Services:
    """What the nodes share. Build one per configuration; it is safe to share across threads."""

    config: Config
    environ: Mapping[str, str] | None = None
    clients: dict[str, TierClient] = field(default_factory=dict)
    _store: OutcomeStore | None = None
    _ledger: BudgetLedger | None = None
    _calibrators: CalibratorSet | None = None
    _router: Any = None
    _router_loaded: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.clients:
            self.clients = clients_for(self.config, self.environ)

    @property
    def store(self) -> OutcomeStore:
        with self._lock:
            if self._store is None:
                self._store = OutcomeStore(self.config.store.resolved_path())
            return self._store

    @property
    def ledger(self) -> BudgetLedger:
        with self._lock:
            if self._ledger is None:
                self._ledger = BudgetLedger(self.config.ledger_path())
            return self._ledger

    @property
    def calibrators(self) -> CalibratorSet:
        """The configured calibrators that fit this configuration (loaded once; unusable
        artifacts are skipped with a warning and their arms use the heuristic)."""
        with self._lock:
            if self._calibrators is None:
                import warnings

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    self._calibrators = load_calibrators(self.config, self.environ)
                for w in caught:
                    logger.warning("%s", w.message)
                    warnings.warn(w.message, stacklevel=3)
            return self._calibrators

    @property
    def router(self) -> Any:
        """The configured router artifact (:class:`~effreason_agents.adapters.router.Router`), or ``None``
        for the heuristic classifier. An artifact that cannot be used (missing, corrupted, another
        version, trained on other arms than the ladder's) is refused with a warning, and requests
        start from the heuristic instead of failing."""
        with self._lock:
            if not self._router_loaded:
                self._router_loaded = True
                path = self.config.router.artifact
                if path:
                    from effreason_agents.adapters.router import Router, RouterError

                    arms = [a.name for a in self.config.ladder]
                    try:
                        self._router = Router.load(path, arms=arms)
                    except RouterError as exc:
                        import warnings

                        logger.warning("router not used: %s", exc)
                        warnings.warn(f"router not used: {exc}", stacklevel=3)
            return self._router

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None


def _ctx(runtime: Runtime[ReasoningContext] | None) -> ReasoningContext:
    """The run's context, validated (a :class:`ConfigError` before any model call)."""
    ctx = getattr(runtime, "context", None)
    if ctx is None:
        return ReasoningContext()
    if isinstance(ctx, Mapping):
        known = set(ReasoningContext.__dataclass_fields__)
        unknown = sorted(set(ctx) - known)
        if unknown:
            raise ConfigError(f"unknown context keys {unknown}; known: {sorted(known)}")
        ctx = ReasoningContext(**ctx)
    t = ctx.confidence_threshold
    if t is not None:
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise ConfigError(f"confidence_threshold must be a number in [0, 1], got {t!r}") from None
        if not 0.0 <= t <= 1.0:
            raise ConfigError(f"confidence_threshold must be in [0, 1], got {t}")
        ctx.confidence_threshold = t
    return ctx


def emit(runtime: Runtime[ReasoningContext] | None, event: str, **data: Any) -> None:
    """Send a progress event to ``stream_mode="custom"`` consumers (a no-op elsewhere):
    ``{"event": "arm_chosen" | "attempt" | "escalation" | "done", ...}``."""
    writer = getattr(runtime, "stream_writer", None)
    if writer is None:
        return
    try:
        writer({"event": event, **data})
    except Exception:  # noqa: BLE001 - progress events never break a request
        logger.debug("stream writer failed", exc_info=True)


def validate_question(question: Any) -> str:
    """The question stripped, or :class:`InvalidQuestionError` before any model is called."""
    if not isinstance(question, str):
        raise InvalidQuestionError(f"the question must be a string, got {type(question).__name__}")
    q = question.strip()
    if not q:
        raise InvalidQuestionError("the question is empty: ask something")
    if len(q) > MAX_QUESTION_CHARS:
        raise InvalidQuestionError(f"the question is {len(q)} characters; the limit is {MAX_QUESTION_CHARS}")
    return q


def _spent(attempts: list[dict[str, Any]]) -> Spend:
    s = Spend()
    for a in attempts:
        s = s.add(a["input_tokens"], a["output_tokens"], a["cost_usd"])
    return s


def outcome_records(
    state: Mapping[str, Any], config: Config, ctx: ReasoningContext | None = None
) -> tuple[RequestRecord, list[AttemptRecord]]:
    """The outcome-store rows for a finished run's state (what the ``log`` node writes)."""
    ctx = ctx or ReasoningContext()
    result = state["result"]
    attempts = [AttemptRecord(**a) for a in state.get("attempts") or []]
    request = RequestRecord(
        request_id=state["request_id"],
        question=state["question"],
        final_answer=result["answer"],
        final_attempt_index=result["final_attempt"],
        status=result["status"],
        difficulty=state.get("difficulty"),
        arms_tried=result["arms_tried"],
        escalated=result["escalated"],
        total_input_tokens=result["total_input_tokens"],
        total_output_tokens=result["total_output_tokens"],
        total_cost_usd=result["total_cost_usd"],
        graph_version=GRAPH_VERSION,
        config_version=config.version(),
        thread_id=ctx.thread_id,
        user_id=ctx.user_id,
        started_at=state["started_at"],
        extra={"features": state.get("features") or {}, "skipped": result["skipped"]},
    )
    return request, attempts


class ReasoningNodes:
    """The node functions, bound to :class:`Services`."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config

    def _threshold(self, runtime: Runtime[ReasoningContext] | None, calibrator: Calibrator | None = None) -> float:
        """The run's threshold, else the configured one, else the calibrator's fitted one,
        else the heuristic default."""
        t = _ctx(runtime).confidence_threshold
        if t is not None:
            return float(t)
        if self.config.escalation.confidence_threshold is not None:
            return self.config.escalation.confidence_threshold
        if calibrator is not None and calibrator.threshold is not None:
            return calibrator.threshold
        return DEFAULT_CONFIDENCE_THRESHOLD

    def _budget(self, runtime: Runtime[ReasoningContext] | None):  # noqa: ANN202
        return effective_budget(self.config.budget, _ctx(runtime).max_cost_usd)

    # -- budgets ----------------------------------------------------------------------
    def _open_scopes(self, request_id: str, ctx: ReasoningContext, budget: Any) -> list[list[str]]:
        """Register the request's scopes in the ledger: the request with this run's limits;
        the thread and user with the configured limits unless they already have their own
        (a chatbot may have set a thread's budget)."""
        ledger = self.services.ledger
        ledger.set_limits(Scope("request", request_id), LimitConfig(
            max_output_tokens=budget.max_output_tokens, max_total_tokens=budget.max_total_tokens,
            max_cost_usd=budget.max_cost_usd))
        scopes = [["request", request_id]]
        for kind, key, limits in (("thread", ctx.thread_id, self.config.budget.thread),
                                  ("user", ctx.user_id, self.config.budget.user)):
            if key:
                if ledger.limits(Scope(kind, key)) is None:
                    ledger.set_limits(Scope(kind, key), limits)
                scopes.append([kind, key])
        return scopes

    def _shared_left(self, scopes: list[list[str]]) -> list[tuple[Any, Spend]]:
        """What is left of the thread's and user's budgets, as (limits, spent) pairs for routing."""
        out: list[tuple[Any, Spend]] = []
        for kind, key in scopes:
            if kind == "request":
                continue
            left = self.services.ledger.remaining(Scope(kind, key))  # type: ignore[arg-type]

            def value(name: str, money: bool = False) -> Any:
                r = left.get(name, {}).get("remaining")
                if r is None:
                    return None
                return Decimal(str(r)) if money else int(r)

            out.append((SimpleNamespace(max_output_tokens=value("max_output_tokens"),
                                        max_total_tokens=value("max_total_tokens"),
                                        max_cost_usd=value("max_cost_usd", True)), Spend()))
        return out

    def _check_minimum(self, budget: Any, arms: list[dict[str, Any]]) -> None:
        """A request budget smaller than the cheapest prompt can never answer: say so before any call."""
        cheapest = min(cost_usd(self.config.tiers[a["tier"]], a["prompt_tokens"], 1) for a in arms)
        if budget.max_cost_usd is not None and budget.max_cost_usd < cheapest:
            raise ConfigError(
                f"the request budget ${budget.max_cost_usd} is smaller than the cheapest arm's prompt cost "
                f"${format_usd(cheapest)}; raise max_cost_usd"
            )
        fewest = min(a["prompt_tokens"] for a in arms) + 1
        if budget.max_total_tokens is not None and budget.max_total_tokens < fewest:
            raise ConfigError(
                f"the request budget of {budget.max_total_tokens} total tokens is smaller than the shortest "
                f"prompt ({fewest - 1} tokens) plus one output token; raise max_total_tokens"
            )

    # -- classify ---------------------------------------------------------------------
    def _prompt_tokens(self, client: TierClient, strategy_name: str, question: str, answer_type: str) -> int:
        """Tokens of the whole prompt an arm sends (few-shot examples included), as the tier
        counts them, plus a per-message allowance for the chat template."""
        strategy = _prompting(self.config.strategies[strategy_name])
        try:
            prompt = build_prompt(strategy, question, client.tier.capabilities, answer_type=answer_type,
                                  budget_tokens=strategy.budget_tokens or strategy.max_tokens)
            text = "\n".join(str(m.content) for m in prompt.messages)
            return client.count_tokens(text) + 8 * len(prompt.messages)
        except EffReasonError:
            return 0  # the question-based estimate stands

    def plan_arms(self, question: str, answer_type: str = "number") -> list[dict[str, Any]]:
        """The usable ladder for ``question``: enabled tiers whose context fits it."""
        ladder = self.config.usable_ladder(self.services.environ)
        if not ladder:
            raise ConfigError("no enabled tier on the escalation ladder: enable a tier or set its API key")
        counts: dict[str, int] = {}
        arms: list[dict[str, Any]] = []
        largest = 0
        for arm in ladder:
            tier = self.config.tiers[arm.tier]
            client = self.services.clients[arm.tier]
            if arm.tier not in counts:
                try:
                    q_tokens = client.count_tokens(question)
                except EffReasonError as exc:  # the tier's tokenizer is unavailable: estimate, and let solve report it
                    logger.warning("counting tokens on tier %r failed (%s); using an estimate", arm.tier, exc)
                    q_tokens = estimate_tokens(question)
                counts[arm.tier] = q_tokens + PROMPT_OVERHEAD_TOKENS
            prompt_tokens = max(counts[arm.tier], self._prompt_tokens(client, arm.strategy, question, answer_type))
            max_tokens = self.config.arm_max_tokens(arm)
            strategy = self.config.strategies[arm.strategy]
            samples = strategy.samples if strategy.kind == "sc" else 1
            window = self.config.context_window(arm.tier)
            largest = max(largest, window)
            if prompt_tokens + max_tokens > window:
                continue
            arms.append(
                {
                    "name": arm.name,
                    "tier": arm.tier,
                    "model": tier.model,
                    "engine": tier.engine,
                    "strategy": arm.strategy,
                    "max_tokens": max_tokens,
                    "prompt_tokens": prompt_tokens,
                    "samples": samples,
                    "worst_case_cost_usd": format_usd(worst_case_cost(tier, prompt_tokens * samples, max_tokens * samples)),
                }
            )
        if not arms:
            q_tokens = min(counts.values()) - PROMPT_OVERHEAD_TOKENS
            raise InvalidQuestionError(
                f"the question is too long: about {q_tokens} tokens, and no enabled tier's context "
                f"(largest: {largest} tokens) holds it with its prompt and answer; shorten it"
            )
        return arms

    def classify(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        question = validate_question(state.get("question"))
        budget = self._budget(runtime)  # validates the run's context before any model call
        self._threshold(runtime)
        difficulty, features = classify_difficulty(question)
        arms = self.plan_arms(question, answer_type_of(features.get("type")))
        self._check_minimum(budget, arms)
        request_id = state.get("request_id") or uuid.uuid4().hex
        scopes = self._open_scopes(request_id, _ctx(runtime), budget)
        start = start_rung(difficulty, self.config.escalation.start_arm, arms)
        routed = self._route(question, arms, budget)
        if routed is not None:
            start, features = routed[0], {**features, "router": routed[1]}
        rung, skipped = pick_arm(arms, start, budget, Spend(), extra=self._shared_left(scopes), below_first=True)
        if rung is not None:
            emit(runtime, "arm_chosen", arm=arms[rung]["name"], difficulty=difficulty,
                 by="router" if routed is not None else "classifier")
        return {
            "question": question,
            "request_id": request_id,
            "scopes": scopes,
            "retry": None,
            "started_at": utc_now(),
            "difficulty": difficulty,
            "features": features,
            "arms": arms,
            "rung": rung,
            "skipped": skipped,
            "attempts": [],
            "down_tiers": [],
            "decision": "solve" if rung is not None else "stop",
            "decision_reason": (f"router: start at {arms[rung]['name']}" if routed is not None
                                else f"{difficulty} question: start at {arms[rung]['name']}")
            if rung is not None
            else "budget exhausted: no arm fits what is left of the budget",
        }

    def _route(self, question: str, arms: list[dict[str, Any]], budget: Any) -> tuple[int, dict[str, Any]] | None:
        """The trained router's start arm among the planned arms, and what it predicted;
        ``None`` without a router (the heuristic start applies)."""
        router = self.services.router
        if router is None:
            return None
        names = [a["name"] for a in arms if a["name"] in router.arms]
        if not names:
            return None
        probs = router.predict_one(question)
        card_costs = ((router.card.get("policy") or {}).get("costs") or {})
        costs = {}
        for a in arms:
            if a["name"] in names:
                c = card_costs.get(a["name"])
                costs[a["name"]] = float(c) if c is not None else float(a["worst_case_cost_usd"])
        rc = self.config.router
        arm, why = router.choose(probs, costs, candidates=names, tau=rc.tau, lam=rc.lam)
        index = next(i for i, a in enumerate(arms) if a["name"] == arm)
        return index, {"p_correct": {k: round(float(v), 4) for k, v in probs.items()}, "choice": arm, "reason": why}

    # -- solve ------------------------------------------------------------------------
    def solve(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        arms, rung = state["arms"], state["rung"]
        assert rung is not None
        arm = arms[rung]
        attempts = list(state.get("attempts") or [])
        tier = self.config.tiers[arm["tier"]]
        strategy = self.config.strategies[arm["strategy"]]
        retry = state.get("retry") or {}
        max_tokens = int(retry.get("max_tokens") or arm["max_tokens"])
        budget_tokens, budget_method = None, None
        if strategy.kind == "budget-cot":
            budget_tokens, budget_method = self._budget_tokens(state["question"], strategy)
            max_tokens = max(max_tokens, output_cap(strategy, budget_tokens)) if retry else output_cap(strategy, budget_tokens)
        prompt = build_prompt(
            _prompting(strategy), state["question"], tier.capabilities,
            answer_type=answer_type_of((state.get("features") or {}).get("type")), budget_tokens=budget_tokens,
        )
        attempt: dict[str, Any] = AttemptRecord(
            attempt_id=uuid.uuid4().hex,
            request_id=state["request_id"],
            index=len(attempts),
            arm=arm["name"],
            tier=arm["tier"],
            model=tier.model,
            engine=tier.engine,
            strategy=arm["strategy"],
            max_tokens=max_tokens,
            retry_of=retry.get("of"),
            budget_tokens=budget_tokens,
            budget_method=budget_method,
        ).model_dump()
        # Hold the worst case against every scope before the call; the key makes a re-executed
        # node (retry, resumed interrupt) find its hold instead of charging twice.
        ledger = self.services.ledger
        key = f"{state['request_id']}:{attempt['index']}"
        scopes = [Scope(k, v) for k, v in state.get("scopes") or [["request", state["request_id"]]]]  # type: ignore[arg-type]
        samples = int(arm.get("samples") or 1)
        worst = worst_case_cost(tier, arm["prompt_tokens"] * samples, max_tokens * samples)
        try:
            ledger.reserve(key, scopes, Usage.from_usd(
                max_tokens * samples, (arm["prompt_tokens"] + max_tokens) * samples, worst))
        except BudgetExhausted as exc:
            return {"decision": "stop", "decision_reason": f"budget exhausted: {exc}", "retry": None}
        client = self.services.clients[arm["tier"]]
        try:
            if strategy.kind == "sc":
                c, drawn = _sample(client, strategy, prompt, max_tokens)
            else:
                drawn = None
                c = client.complete(
                    prompt.messages,
                    max_tokens=max_tokens,
                    temperature=strategy.temperature,
                    stop=prompt.stop,
                    reasoning_effort=strategy.reasoning_effort,
                    thinking_budget=strategy.thinking_budget,
                    config=attempt_config(arm, difficulty=state.get("difficulty"), attempt=len(attempts)),
                )
        except TierError as exc:
            ledger.release(key)
            attempt.update(error=str(exc), error_kind=exc.kind, confidence_method=f"error: {exc.kind}")
            return {"attempts": attempts + [attempt], "retry": None}
        except BaseException:
            ledger.release(key)
            raise
        ledger.commit(key, Usage.from_usd(c.output_tokens, c.input_tokens + c.output_tokens, c.cost_usd))
        parsed = parse_answer(c.text)
        verify = None
        if self.config.escalation.self_verify and parsed.answer is not None:
            verify = self._self_verify(client, state["question"], parsed.answer, f"{key}:verify", scopes)
        signals = compute_signals(
            c.logprobs, len(c.prefill), parsed.span, c.finish_reason,
            output_tokens=c.output_tokens if drawn is None else None, max_tokens=max_tokens,
            answer_method=parsed.method, samples=None if drawn is None else drawn.answers,
        )
        signals.update(question_signals(state.get("features"), parsed.answer))
        if verify is not None:
            signals["self_verify"] = verify.pop("p_yes")
            c.input_tokens += verify["input_tokens"]
            c.output_tokens += verify["output_tokens"]
            c.cost_usd += verify["cost_usd"]
        if drawn is not None:
            attempt.update(samples=drawn.answers, samples_cap=drawn.cap)
            signals["length_ratio"] = c.output_tokens / (max_tokens * max(1, drawn.samples_drawn))
        attempt.update(
            model=c.model,
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            cost_usd=format_usd(c.cost_usd),
            latency_s=round(c.latency_s, 4),
            finish_reason=c.finish_reason,
            signals=signals,
            answer=parsed.answer,
            answer_method=parsed.method,
            raw_text=c.text,
            logprobs=[t.to_json() for t in c.logprobs] if c.logprobs else None,
            truncated=c.finish_reason == "length",
        )
        return {"attempts": attempts + [attempt], "retry": None}

    def _self_verify(self, client: TierClient, question: str, answer: str, key: str, scopes: list[Scope]) -> dict[str, Any] | None:
        """AutoMix-style self-verification: ask the tier whether ``answer`` is right, held in the
        ledger like any call. ``None`` when it does not fit the budget or the tier fails (the
        attempt keeps its other signals)."""
        messages = [
            SystemMessage("You check answers. Reply with one word: yes or no."),
            HumanMessage(f"Question: {question}\nProposed answer: {answer}\nIs the proposed answer correct?"),
        ]
        prompt_tokens = client.count_tokens("\n".join(str(m.content) for m in messages)) + 16
        worst = worst_case_cost(client.tier, prompt_tokens, 1)
        ledger = self.services.ledger
        try:
            ledger.reserve(key, scopes, Usage.from_usd(1, prompt_tokens + 1, worst))
        except BudgetExhausted:
            return None
        try:
            v = client.complete(messages, max_tokens=1, temperature=0.0)
        except TierError as exc:
            ledger.release(key)
            logger.warning("self-verification on tier %r failed: %s", client.name, exc)
            return None
        except BaseException:
            ledger.release(key)
            raise
        ledger.commit(key, Usage.from_usd(v.output_tokens, v.input_tokens + v.output_tokens, v.cost_usd))
        return {"p_yes": p_yes(v.logprobs, v.text), "input_tokens": v.input_tokens,
                "output_tokens": v.output_tokens, "cost_usd": v.cost_usd}

    def _budget_tokens(self, question: str, strategy: Any) -> tuple[int, str]:
        """budget-cot's N: fixed in the strategy, else from the configured estimator."""
        if strategy.budget_tokens:
            return int(strategy.budget_tokens), "fixed (strategy.budget_tokens)"
        from effreason_agents.engine.estimator import estimate_budget

        ladder = self.config.usable_ladder(self.services.environ)
        cheapest = self.services.clients.get(ladder[0].tier) if ladder else None
        est = estimate_budget(question, self.config.budget, client=cheapest)
        return int(est.tokens), est.method

    # -- assess -----------------------------------------------------------------------
    def assess(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        attempts = list(state["attempts"])
        last = dict(attempts[-1])
        calibrator = None
        if not last.get("error"):
            conf, method = heuristic_confidence(
                last["signals"], has_answer=last.get("answer") is not None, answer_method=last.get("answer_method", "")
            )
            if method in (HEURISTIC_METHOD, HEURISTIC_SC_METHOD) or conf is None:
                # an answer to judge: the calibrated P(correct) when a calibrator applies
                calibrator = self.services.calibrators.find(last["tier"], last["strategy"])
                p, how = self.services.calibrators.confidence(last["tier"], last["strategy"], last["signals"])
                if p is not None:
                    conf, method = p, how
                else:
                    calibrator = None
                    if conf is not None:
                        method = f"{method} ({how})"
            last["confidence"] = None if conf is None else round(conf, 6)
            last["confidence_method"] = method
        last["threshold"] = self._threshold(runtime, calibrator)
        attempts[-1] = last
        escalate, why = escalation_decision(last, last["threshold"])
        spent = _spent(attempts)
        emit(runtime, "attempt", arm=last["arm"], answer=last.get("answer"), confidence=last.get("confidence"),
             cost_usd=last.get("cost_usd"), total_cost_usd=format_usd(spent.cost_usd),
             total_output_tokens=spent.output_tokens, escalate=escalate, reason=why)
        return {"attempts": attempts, "decision": "escalate" if escalate else "accept", "decision_reason": why}

    # -- escalate ---------------------------------------------------------------------
    def escalate(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        attempts = state["attempts"]
        down = set(state.get("down_tiers") or [])
        last = attempts[-1]
        if last.get("error") and last.get("error_kind") in TIER_DOWN_KINDS:
            down.add(last["tier"])
        current = state["rung"] or 0
        retry = self._truncation_retry(state, runtime)
        if retry is not None:
            return {
                "down_tiers": sorted(down), "retry": retry, "rung": current, "decision": "solve",
                "decision_reason": f"retrying {state['arms'][current]['name']} with {retry['max_tokens']} tokens after truncation",
            }
        # Escalate upwards; while nothing has answered yet (tiers failing), also fall back
        # to untried arms below, so the request still answers from what works.
        answered = any(not a.get("error") and a.get("answer") is not None for a in attempts)
        tried = {i for i, arm in enumerate(state["arms"]) if any(a["arm"] == arm["name"] for a in attempts)}
        rung, skipped = pick_arm(
            state["arms"], current + 1, self._budget(runtime), _spent(attempts), down,
            allow_below=not answered, exclude=tried, extra=self._shared_left(state.get("scopes") or []),
        )
        out: dict[str, Any] = {"down_tiers": sorted(down), "skipped": list(state.get("skipped") or []) + skipped}
        if rung is None:
            over_budget = any("over budget" in s for s in skipped)
            out.update(
                rung=current,
                decision="stop",
                decision_reason=(
                    "budget exhausted: the next arm does not fit the request budget"
                    if over_budget
                    else "the escalation ladder is exhausted"
                ),
            )
        else:
            out.update(rung=rung, decision="solve", decision_reason=f"escalating to {state['arms'][rung]['name']}")
            emit(runtime, "escalation", to=state["arms"][rung]["name"], after=last["arm"])
        return out

    def _truncation_retry(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any] | None:
        """With ``on_truncation = "retry"``: the same arm once more with a larger cap, when the
        last reply was cut off, was not itself a retry, and the larger call fits context and budget."""
        last = state["attempts"][-1]
        if self.config.budget.on_truncation != "retry" or not last.get("truncated") or last.get("retry_of") is not None:
            return None
        if last.get("samples_cap"):  # an sc arm: its samples were cut; escalate instead
            return None
        arm = state["arms"][state["rung"] or 0]
        if arm["name"] != last["arm"]:
            return None
        window = self.config.context_window(arm["tier"])
        grown = min(int(last["max_tokens"] * self.config.budget.truncation_growth), window - arm["prompt_tokens"])
        if grown <= last["max_tokens"]:
            return None
        tier = self.config.tiers[arm["tier"]]
        bigger = {**arm, "max_tokens": grown, "worst_case_cost_usd": format_usd(worst_case_cost(tier, arm["prompt_tokens"], grown))}
        if arm_fits(bigger, self._budget(runtime), _spent(state["attempts"]), self._shared_left(state.get("scopes") or [])):
            return None
        return {"max_tokens": grown, "of": last["index"]}

    # -- finalize ---------------------------------------------------------------------
    def finalize(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        attempts = state.get("attempts") or []
        idx, status = final_choice(attempts, self._threshold(runtime))
        if status != "answered" and "budget exhausted" in state.get("decision_reason", ""):
            status = "budget_exhausted"
        spent = _spent(attempts)
        final = attempts[idx] if idx is not None else None
        result = {
            "request_id": state["request_id"],
            "answer": final["answer"] if final else None,
            "status": status,
            "final_attempt": idx,
            "final_tier": final["tier"] if final else None,
            "confidence": final.get("confidence") if final else None,
            "truncated": bool(final.get("truncated")) if final else False,
            "difficulty": state.get("difficulty"),
            "escalated": len(attempts) > 1,
            "arms_tried": [a["arm"] for a in attempts],
            "total_input_tokens": spent.input_tokens,
            "total_output_tokens": spent.output_tokens,
            "total_cost_usd": format_usd(spent.cost_usd),
            "reason": state.get("decision_reason"),
            "skipped": state.get("skipped") or [],
            "attempts": attempts,
        }
        emit(runtime, "done", status=status, answer=result["answer"], total_cost_usd=result["total_cost_usd"],
             total_output_tokens=spent.output_tokens, arms_tried=result["arms_tried"])
        return {"result": result}

    # -- log --------------------------------------------------------------------------
    def log(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        ctx = _ctx(runtime)
        if not ctx.log:
            return {"logged": False}
        request, attempts = outcome_records(state, self.config, ctx)
        try:
            self.services.store.record(request, attempts)
        except StoreError as exc:
            logger.error("outcome not logged: %s", exc)
            return {"logged": False}
        return {"logged": True}

    # -- edges ------------------------------------------------------------------------
    @staticmethod
    def after_classify(state: ReasoningState) -> str:
        return "solve" if state.get("rung") is not None else "finalize"

    @staticmethod
    def after_solve(state: ReasoningState) -> str:
        return "finalize" if state.get("decision") == "stop" else "assess"

    @staticmethod
    def after_assess(state: ReasoningState) -> str:
        return "escalate" if state.get("decision") == "escalate" else "finalize"

    @staticmethod
    def after_escalate(state: ReasoningState) -> str:
        return "solve" if state.get("decision") == "solve" else "finalize"


def _prompting(strategy: Any) -> Any:
    """The strategy whose prompt an arm sends: an sc strategy prompts each sample with its
    ``sample_prompt`` family."""
    if strategy.kind == "sc":
        return strategy.model_copy(update={"kind": strategy.sample_prompt})
    return strategy


def _sample(client: TierClient, strategy: Any, prompt: Any, max_tokens: int) -> tuple[Completion, Any]:
    """Run an sc arm: samples until the strategy's stopping rule settles the majority.
    Returns the attempt as one :class:`Completion` (the representative sample's text and
    logprobs — the first that gave the majority answer — with every sample's tokens and
    cost) and the :class:`~effreason_agents.engine.sampling.SampleResult`."""
    from effreason_agents.engine.sampling import sample_until_settled

    r = sample_until_settled(
        client, prompt.messages, max_tokens=max_tokens, temperature=strategy.temperature, cap=strategy.samples,
        rule=strategy.stop_rule, confidence=strategy.stop_confidence, window=strategy.esc_window, stop=prompt.stop,
    )
    i = r.representative_index if r.representative_index is not None else 0
    text = r.texts[i] if r.texts else ""
    finish = r.finish_reasons[i] if r.finish_reasons else None
    c = Completion(
        text=text, input_tokens=r.input_tokens, output_tokens=r.output_tokens, finish_reason=finish,
        latency_s=r.latency_s, model=client.tier.model, cost_usd=r.cost_usd,
        logprobs=r.representative_logprobs, prefill=r.prefill,
    )
    return c, r


NODE_CONTRACT: dict[str, dict[str, tuple[str, ...]]] = {
    "classify": {"reads": ("question", "request_id"),
                 "writes": ("question", "request_id", "scopes", "retry", "started_at", "difficulty", "features",
                            "arms", "rung", "skipped", "attempts", "down_tiers", "decision", "decision_reason")},
    "solve": {"reads": ("question", "arms", "rung", "attempts", "retry", "features", "scopes", "request_id"),
              "writes": ("attempts", "retry", "decision", "decision_reason")},
    "assess": {"reads": ("attempts",), "writes": ("attempts", "decision", "decision_reason")},
    "escalate": {"reads": ("attempts", "arms", "rung", "down_tiers", "skipped", "scopes"),
                 "writes": ("down_tiers", "skipped", "retry", "rung", "decision", "decision_reason")},
    "finalize": {"reads": ("attempts", "request_id", "difficulty", "decision_reason", "skipped"), "writes": ("result",)},
    "log": {"reads": ("result", "request_id", "question", "difficulty", "features", "attempts", "started_at"),
            "writes": ("logged",)},
}
"""The :class:`~effreason_agents.graph.state.ReasoningState` keys each node reads and writes."""

_default_nodes: ReasoningNodes | None = None
_default_lock = threading.Lock()


def default_nodes() -> ReasoningNodes:
    """The nodes bound to the default configuration (built once, shared)."""
    global _default_nodes
    with _default_lock:
        if _default_nodes is None:
            from effreason_agents.config import load_config

            _default_nodes = ReasoningNodes(Services(load_config()))
        return _default_nodes


def classify(state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
    """Validate the question, plan the usable arms, open the budget scopes, pick the start arm."""
    return default_nodes().classify(state, runtime)


def solve(state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
    """Run the current arm (held in the budget ledger) and record the attempt with its signals."""
    return default_nodes().solve(state, runtime)


def assess(state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
    """Confidence for the last attempt (calibrated or heuristic), and whether to escalate."""
    return default_nodes().assess(state, runtime)


def escalate(state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
    """The next arm that fits the budget (or a larger-cap retry), or stop."""
    return default_nodes().escalate(state, runtime)


def finalize(state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
    """The answer to return, the status and the totals (``result``)."""
    return default_nodes().finalize(state, runtime)


def log(state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
    """Write the request and its attempts to the outcome store in one transaction."""
    return default_nodes().log(state, runtime)


def total_cost(attempts: list[dict[str, Any]]) -> Decimal:
    return _spent(attempts).cost_usd
