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
confidence, cost so far, whether it escalates), ``escalation`` (to, after; with
``escalation.next = "value"`` also ``by`` and the ``ranking`` of the arms weighed) and ``done``
(status, answer, total cost and tokens, arms tried).
"""

from __future__ import annotations

import logging
import threading
import uuid
from decimal import Decimal
from typing import Any, Mapping

from langgraph.runtime import Runtime

from effreason_agents import __version__
from effreason_agents.adapters.store import AttemptRecord, RequestRecord, utc_now
from effreason_agents.adapters.tiers import TierClient, estimate_tokens
from effreason_agents.config import Config, LimitConfig
from effreason_agents.core.budget import Spend, effective_budget, worst_case_cost
from effreason_agents.core.features import answer_type_of, classify_difficulty
from effreason_agents.core.money import format_usd
from effreason_agents.core.prompts import build_prompt
from effreason_agents.core.records import TIER_DOWN_KINDS, Decision, Scope, Status, StopReason
from effreason_agents.core.text import MAX_QUESTION_CHARS, validate_question
from effreason_agents.engine import policy
from effreason_agents.engine.runner import AttemptRunner, prompting
from effreason_agents.engine.services import Services
from effreason_agents.errors import BudgetExhausted, ConfigError, EffReasonError, InvalidQuestionError, StoreError
from effreason_agents.graph.state import ReasoningContext, ReasoningState, context_of

__all__ = [
    "GRAPH_VERSION",
    "MAX_QUESTION_CHARS",
    "NODE_CONTRACT",
    "ReasoningNodes",
    "Services",
    "assess",
    "classify",
    "default_nodes",
    "emit",
    "escalate",
    "finalize",
    "log",
    "outcome_records",
    "solve",
    "total_cost",
    "validate_question",
]

logger = logging.getLogger(__name__)

GRAPH_VERSION = f"reasoner/{__version__}"
PROMPT_OVERHEAD_TOKENS = 96  # system prompt + chat template, all strategies


def _ctx(runtime: Runtime[ReasoningContext] | None) -> ReasoningContext:
    """The run's context, validated (a :class:`ConfigError` before any model call)."""
    ctx = context_of(ReasoningContext, getattr(runtime, "context", None))
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


def _spent(attempts: list[dict[str, Any]]) -> Spend:
    s = Spend()
    for a in attempts:
        s = s.add(a["input_tokens"], a["output_tokens"], a["cost_usd"])
    return s


def outcome_records(
    state: Mapping[str, Any], config: Config, ctx: ReasoningContext | None = None, *, config_version: str | None = None
) -> tuple[RequestRecord, list[AttemptRecord]]:
    """The outcome-store rows for a finished run's state (what the ``log`` node writes)."""
    ctx = ctx or ReasoningContext()
    result = state["result"]
    known = set(AttemptRecord.model_fields)
    attempts = [AttemptRecord(**{k: v for k, v in a.items() if k in known}) for a in state.get("attempts") or []]
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
        config_version=config_version or config.version(),
        thread_id=ctx.thread_id,
        user_id=ctx.user_id,
        started_at=state["started_at"],
        extra={"features": state.get("features") or {}, "skipped": result["skipped"]},
    )
    return request, attempts


def _scopes(state: Mapping[str, Any]) -> list[Scope]:
    return [Scope(k, v) for k, v in state.get("scopes") or [["request", state["request_id"]]]]  # type: ignore[arg-type]


class ReasoningNodes:
    """The node functions, bound to :class:`Services`: thin compositions of the policy
    (:mod:`effreason_agents.engine.policy`) and the attempt runner
    (:class:`~effreason_agents.engine.runner.AttemptRunner`)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config
        self.runner = AttemptRunner(services)

    def _budget(self, runtime: Runtime[ReasoningContext] | None):  # noqa: ANN202
        return effective_budget(self.config.budget, _ctx(runtime).max_cost_usd)

    def _limits(self, state: Mapping[str, Any], runtime: Runtime[ReasoningContext] | None) -> dict[Scope, LimitConfig]:
        ctx = _ctx(runtime)
        return policy.budget_scopes(self.config, state["request_id"], self._budget(runtime),
                                    ctx.thread_id, ctx.user_id)[1]

    def _shared_left(self, scopes: list[list[str]]) -> list[tuple[Any, Spend, str]]:
        """What is left of the thread's and user's budgets, as (limits, spent, scope kind) for
        routing; a scope the ledger has no limits for yet has the configured ones."""
        out: list[tuple[Any, Spend, str]] = []
        for kind, key in scopes:
            if kind == "request":
                continue
            scope = Scope(kind, key)  # type: ignore[arg-type]
            if self.services.ledger.limits(scope) is None:
                out.append((getattr(self.config.budget, kind), Spend(), kind))
                continue
            left = self.services.ledger.remaining(scope)

            def value(name: str, money: bool = False) -> Any:
                r = left.get(name, {}).get("remaining")
                if r is None:
                    return None
                return Decimal(str(r)) if money else int(r)

            out.append((LimitConfig.model_construct(max_output_tokens=value("max_output_tokens"),
                                                    max_total_tokens=value("max_total_tokens"),
                                                    max_cost_usd=value("max_cost_usd", True)), Spend(), kind))
        return out

    def _check_minimum(self, budget: Any, arms: list[dict[str, Any]]) -> None:
        """A request budget smaller than the cheapest prompt can never answer: say so before any call."""
        from effreason_agents.adapters.tiers import cost_usd

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
        """The bound of the whole prompt an arm sends (few-shot examples included)."""
        strategy = prompting(self.config.strategies[strategy_name])
        try:
            prompt = build_prompt(strategy, question, client.tier.capabilities, answer_type=answer_type,
                                  budget_tokens=strategy.budget_tokens or strategy.max_tokens)
            return client.prompt_bound(prompt.messages)
        except EffReasonError:
            return 0  # the question-based estimate stands

    @staticmethod
    def _question_tokens(client: TierClient, question: str) -> int:
        try:
            return client.count_tokens(question)
        except EffReasonError as exc:  # the tier's tokenizer is unavailable: estimate, and let solve report it
            logger.warning("counting tokens on tier %r failed (%s); using an estimate", client.name, exc)
            return estimate_tokens(question)

    def plan_arms(self, question: str, answer_type: str = "number") -> list[dict[str, Any]]:
        """The usable ladder for ``question``: enabled tiers whose context fits it, each arm
        with its prompt bound and priced worst case. With ``escalation.next = "value"`` the
        ``escalation.value_arms`` that are not on the ladder follow it (the ladder's order stays)."""
        ladder = self.config.usable_ladder(self.services.environ)
        if not ladder:
            raise ConfigError("no enabled tier on the escalation ladder: enable a tier or set its API key")
        planned = list(ladder)
        if self.config.escalation.next == "value":
            enabled = self.config.enabled_tiers(self.services.environ)
            for extra_arm in self.config.escalation.value_arms:
                if extra_arm.tier in enabled and extra_arm.name not in {a.name for a in planned}:
                    planned.append(extra_arm)
        arms: list[dict[str, Any]] = []
        largest = 0
        for arm in planned:
            tier = self.config.tiers[arm.tier]
            client = self.services.clients[arm.tier]
            # the bound of the prompt the arm sends; the question's count plus an allowance
            # when the prompt cannot be bounded (the tier's tokenizer is unavailable)
            prompt_tokens = self._prompt_tokens(client, arm.strategy, question, answer_type)
            if not prompt_tokens:
                prompt_tokens = self._question_tokens(client, question) + PROMPT_OVERHEAD_TOKENS
            max_tokens = self.config.arm_max_tokens(arm)
            strategy = self.config.strategies[arm.strategy]
            samples, input_bound, output_bound = policy.arm_token_bounds(strategy, prompt_tokens, max_tokens)
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
                    "input_tokens_bound": input_bound,
                    "worst_case_cost_usd": format_usd(worst_case_cost(tier, input_bound, output_bound)),
                }
            )
        if not arms:
            q_tokens = self._question_tokens(self.services.clients[ladder[0].tier], question)
            raise InvalidQuestionError(
                f"the question is too long: about {q_tokens} tokens, and no enabled tier's context "
                f"(largest: {largest} tokens) holds it with its prompt and answer; shorten it"
            )
        return arms

    def classify(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        question = validate_question(state.get("question"))
        ctx = _ctx(runtime)  # validates the run's context before any model call
        budget = self._budget(runtime)
        difficulty, features = classify_difficulty(question)
        arms = self.plan_arms(question, answer_type_of(features.get("type")))
        self._check_minimum(budget, arms)
        request_id = state.get("request_id") or uuid.uuid4().hex
        scopes, _ = policy.budget_scopes(self.config, request_id, budget, ctx.thread_id, ctx.user_id)
        plain_scopes = [[s.kind, s.key] for s in scopes]
        start = policy.start_rung(difficulty, self.config.escalation.start_arm, arms)
        routed = policy.router_choice(self.services.router, question, [a["name"] for a in arms],
                                      {a["name"]: float(a["worst_case_cost_usd"]) for a in arms}, self.config)
        if routed is not None:
            start = next(i for i, a in enumerate(arms) if a["name"] == routed[0])
            features = {**features, "router": routed[1]}
        shared = self._shared_left(plain_scopes)
        rung, skipped = policy.pick_arm(arms, start, budget, Spend(), extra=shared, below_first=True)
        if rung is not None:
            emit(runtime, "arm_chosen", arm=arms[rung]["name"], difficulty=difficulty,
                 by="router" if routed is not None else "classifier")
        return {
            "question": question,
            "request_id": request_id,
            "scopes": plain_scopes,
            "retry": None,
            "started_at": utc_now(),
            "difficulty": difficulty,
            "features": features,
            "arms": arms,
            "rung": rung,
            "skipped": skipped,
            "attempts": [],
            "down_tiers": [],
            "stop_reason": None if rung is not None else StopReason.BUDGET_EXHAUSTED.value,
            "budget_scope": None if rung is not None else policy.binding_scope(arms, budget, Spend(), shared),
            "decision": (Decision.SOLVE if rung is not None else Decision.STOP).value,
            "decision_reason": (f"router: start at {arms[rung]['name']}" if routed is not None
                                else f"{difficulty} question: start at {arms[rung]['name']}")
            if rung is not None
            else "no arm fits what is left of the budget",
        }

    # -- solve ------------------------------------------------------------------------
    def solve(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        arms, rung = state["arms"], state["rung"]
        assert rung is not None
        attempts = list(state.get("attempts") or [])
        try:
            attempt = self.runner.run_arm(
                request_id=state["request_id"], index=len(attempts), scopes=_scopes(state), arm=arms[rung],
                question=state["question"], features=state.get("features"), difficulty=state.get("difficulty"),
                retry=state.get("retry"), threshold=_ctx(runtime).confidence_threshold,
                limits=self._limits(state, runtime),
            )
        except BudgetExhausted as exc:
            return {"decision": Decision.STOP.value, "decision_reason": f"budget exhausted: {exc}",
                    "stop_reason": StopReason.BUDGET_EXHAUSTED.value, "budget_scope": exc.scope.kind,
                    "retry": None}
        return {"attempts": attempts + [attempt], "retry": None}

    # -- assess -----------------------------------------------------------------------
    def assess(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        attempts = state["attempts"]
        last = attempts[-1]
        threshold = last.get("threshold")
        if threshold is None:
            threshold = policy.resolve_threshold(_ctx(runtime).confidence_threshold, self.config)
        escalate, why = policy.escalation_decision(last, threshold)
        spent = _spent(attempts)
        emit(runtime, "attempt", arm=last["arm"], answer=last.get("answer"), confidence=last.get("confidence"),
             cost_usd=last.get("cost_usd"), total_cost_usd=format_usd(spent.cost_usd),
             total_output_tokens=spent.output_tokens, escalate=escalate, reason=why)
        return {"decision": (Decision.ESCALATE if escalate else Decision.ACCEPT).value, "decision_reason": why}

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
                "down_tiers": sorted(down), "retry": retry, "rung": current, "decision": Decision.SOLVE.value,
                "decision_reason": f"retrying {state['arms'][current]['name']} with {retry['max_tokens']} tokens after truncation",
            }
        tried = {i for i, arm in enumerate(state["arms"]) if any(a["arm"] == arm["name"] for a in attempts)}
        if self.config.escalation.next == "value":
            # the untried arm with the best predicted gain in P(correct) per expected cost, or stop
            shared = self._shared_left(state.get("scopes") or [])
            choice = policy.value_escalation(
                state["arms"], attempts, state.get("difficulty"), self.config, self._budget(runtime),
                _spent(attempts), down, tried=tried, extra=shared,
                router_p=policy.router_predictions(self.services.router, state["question"]),
            )
            valued: dict[str, Any] = {"down_tiers": sorted(down), "decision_reason": choice.reason,
                                      "skipped": list(state.get("skipped") or []) + choice.skipped()}
            if choice.index is None:
                over = [a for a in state["arms"] if a["name"] in choice.over_budget]
                scope = policy.binding_scope(over, self._budget(runtime), _spent(attempts), shared) if over else None
                stop = StopReason.BUDGET_EXHAUSTED if over else StopReason.LADDER_EXHAUSTED
                valued.update(rung=current, decision=Decision.STOP.value, stop_reason=stop.value, budget_scope=scope)
            else:
                valued.update(rung=choice.index, decision=Decision.SOLVE.value)
                emit(runtime, "escalation", to=state["arms"][choice.index]["name"], after=last["arm"], by="value",
                     ranking=choice.ranking)
            return valued
        # Escalate upwards; while nothing has answered yet (tiers failing), also fall back
        # to untried arms below, so the request still answers from what works.
        answered = any(not a.get("error") and a.get("answer") is not None for a in attempts)
        rung, skipped = policy.pick_arm(
            state["arms"], current + 1, self._budget(runtime), _spent(attempts), down,
            allow_below=not answered, exclude=tried, extra=self._shared_left(state.get("scopes") or []),
        )
        out: dict[str, Any] = {"down_tiers": sorted(down), "skipped": list(state.get("skipped") or []) + skipped}
        if rung is None:
            shared = self._shared_left(state.get("scopes") or [])
            left = [a for i, a in enumerate(state["arms"]) if i not in tried and a["tier"] not in down]
            scope = policy.binding_scope(left, self._budget(runtime), _spent(attempts), shared) if left else None
            over_budget = scope is not None
            reason = StopReason.BUDGET_EXHAUSTED if over_budget else StopReason.LADDER_EXHAUSTED
            out.update(
                rung=current,
                decision=Decision.STOP.value,
                stop_reason=reason.value,
                budget_scope=scope,
                decision_reason=(
                    "budget exhausted: the next arm does not fit the budget"
                    if over_budget
                    else "the escalation ladder is exhausted"
                ),
            )
        else:
            out.update(rung=rung, decision=Decision.SOLVE.value,
                       decision_reason=f"escalating to {state['arms'][rung]['name']}")
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
        if policy.arm_fits(bigger, self._budget(runtime), _spent(state["attempts"]), self._shared_left(state.get("scopes") or [])):
            return None
        return {"max_tokens": grown, "of": last["index"]}

    # -- finalize ---------------------------------------------------------------------
    def finalize(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        attempts = state.get("attempts") or []
        idx, status = policy.final_choice(attempts, policy.resolve_threshold(_ctx(runtime).confidence_threshold, self.config))
        if status != Status.ANSWERED and state.get("stop_reason") == StopReason.BUDGET_EXHAUSTED:
            status = Status.BUDGET_EXHAUSTED
        spent = _spent(attempts)
        final = attempts[idx] if idx is not None else None
        result = {
            "request_id": state["request_id"],
            "answer": final["answer"] if final else None,
            "status": status.value,
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
            "budget_scope": state.get("budget_scope") if status == Status.BUDGET_EXHAUSTED else None,
            "skipped": state.get("skipped") or [],
            "attempts": attempts,
        }
        emit(runtime, "done", status=status.value, answer=result["answer"], total_cost_usd=result["total_cost_usd"],
             total_output_tokens=spent.output_tokens, arms_tried=result["arms_tried"])
        return {"result": result}

    # -- log --------------------------------------------------------------------------
    def log(self, state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
        ctx = _ctx(runtime)
        if not ctx.log:
            return {"logged": False}
        request, attempts = outcome_records(state, self.config, ctx, config_version=self.services.config_version)
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
        return "finalize" if state.get("decision") == Decision.STOP else "assess"

    @staticmethod
    def after_assess(state: ReasoningState) -> str:
        return "escalate" if state.get("decision") == Decision.ESCALATE else "finalize"

    @staticmethod
    def after_escalate(state: ReasoningState) -> str:
        return "solve" if state.get("decision") == Decision.SOLVE else "finalize"


NODE_CONTRACT: dict[str, dict[str, tuple[str, ...]]] = {
    "classify": {"reads": ("question", "request_id"),
                 "writes": ("question", "request_id", "scopes", "retry", "started_at", "difficulty", "features",
                            "arms", "rung", "skipped", "attempts", "down_tiers", "decision", "decision_reason")},
    "solve": {"reads": ("question", "arms", "rung", "attempts", "retry", "features", "scopes", "request_id"),
              "writes": ("attempts", "retry", "decision", "decision_reason")},
    "assess": {"reads": ("attempts",), "writes": ("attempts", "decision", "decision_reason")},
    "escalate": {"reads": ("attempts", "arms", "rung", "down_tiers", "skipped", "scopes", "question", "difficulty"),
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
    """The next arm that fits the budget — the next rung, or with ``escalation.next = "value"``
    the best predicted gain in P(correct) per expected cost — (or a larger-cap retry), or stop."""
    return default_nodes().escalate(state, runtime)


def finalize(state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
    """The answer to return, the status and the totals (``result``)."""
    return default_nodes().finalize(state, runtime)


def log(state: ReasoningState, runtime: Runtime[ReasoningContext]) -> dict[str, Any]:
    """Write the request and its attempts to the outcome store in one transaction."""
    return default_nodes().log(state, runtime)


def total_cost(attempts: list[dict[str, Any]]) -> Decimal:
    """The dollars spent by ``attempts``."""
    return _spent(attempts).cost_usd
