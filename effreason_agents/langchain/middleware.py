"""Cost-aware model calls for LangChain agents: :class:`CostAwareMiddleware` for ``create_agent``.

::

    from langchain.agents import create_agent
    from effreason_agents.langchain.middleware import CostAwareMiddleware

    agent = create_agent(model=placeholder_model, tools=[...], middleware=[CostAwareMiddleware()])
    agent.invoke({"messages": [("user", "What is 17 * 23?")]},
                 {"configurable": {"thread_id": "t1"}}, context={"user_id": "ann"})

Per model call the middleware

1. **picks a tier** with ``select(request) -> tier name``. The default,
   :class:`DifficultySelector`, classifies the last human message
   (:func:`~effreason_agents.core.features.classify_difficulty`) and starts where
   ``escalation.start_arm`` says for that difficulty, or where the trained router
   (``router.artifact``) says when one is configured;
2. **replaces the request's model** with that tier's chat model
   (``request.override(model=...)``; ``create_agent`` binds the tools to it);
3. **holds the worst case** (prompt + ``max_tokens`` output, priced) in the budget
   ledger against the call, the thread (``configurable.thread_id``) and the user
   (``context.user_id``, ``configurable.user_id`` or ``metadata.user_id``), commits
   the actual usage from ``AIMessage.usage_metadata`` afterwards and releases the hold
   if the call fails. When a scope has no room it answers with a polite refusal
   (``response_metadata["effreason"]["status"] == "budget_exhausted"``) **without
   calling a model**;
4. **escalates once on low confidence**: a reply without tool calls, from a tier that
   returned logprobs, whose confidence (the heuristic ``exp(min answer-token logprob)``,
   or a calibrator's P(correct) when ``calibrators`` are given) is below the threshold
   is asked again on the next stronger tier of the ladder, when that fits the budget.

What happened is on the returned message: ``response_metadata["effreason"]`` holds
``tier``, ``model``, ``difficulty``, ``selected_by``, ``confidence``, ``threshold``,
``escalated``, ``tiers_tried``, ``input_tokens``, ``output_tokens`` and ``cost_usd``
(a decimal string covering every call of this step, including an escalated-away one)
and ``status`` (``answered`` / ``low_confidence`` / ``budget_exhausted``).

The decision interface is deliberately the shape of LangChain's model-router
middlewares (a decision function from the request to a model choice): any
``Callable[[ModelRequest], str]`` returning a tier name can be passed as ``select``,
so adapting a ``ModelRouterMiddleware``-style classifier is a few lines::

    def select(request):                       # e.g. wrap another router's decision
        choice = other_router.decide(request)  # -> "fast" / "powerful"
        return {"fast": "small", "powerful": "large"}[choice]

    CostAwareMiddleware(select=select)
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Awaitable, Callable, Mapping, Sequence

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from effreason_agents.graph.chat import message_text
from effreason_agents.core.features import classify_difficulty
from effreason_agents.config import DEFAULT_CONFIDENCE_THRESHOLD, Config, LimitConfig, load_config
from effreason_agents.errors import ConfigError, EffReasonError
from effreason_agents.adapters.ledger import BudgetExhausted, BudgetLedger, Scope, Usage
from effreason_agents.core.prompts import parse_answer
from effreason_agents.adapters.tiers import TierClient, _parse_logprobs, cost_usd, estimate_tokens, format_usd
from effreason_agents.core.confidence import HEURISTIC_METHOD, compute_signals, heuristic_confidence, question_signals

__all__ = ["CostAwareMiddleware", "DifficultySelector", "TierSelector", "last_human_text"]

log = logging.getLogger(__name__)

TierSelector = Callable[[ModelRequest], str]
"""``select(request) -> tier name``: the decision function of :class:`CostAwareMiddleware`."""

DEFAULT_MAX_TOKENS = 256
MESSAGE_OVERHEAD_TOKENS = 8  # chat-template tokens per message
PROMPT_SLACK_TOKENS = 16


def last_human_text(messages: Sequence[BaseMessage]) -> str:
    """The text of the last human message (``""`` when there is none)."""
    for m in reversed(messages):
        if isinstance(m, HumanMessage):
            return message_text(m).strip()
    return ""


class DifficultySelector:
    """The default ``select``: the tier of the arm the project would start at for the last
    human message — the trained router's choice when ``router`` is given, otherwise
    ``config.escalation.start_arm[difficulty]`` from the heuristic classifier. A tier that
    is not usable falls back to the cheapest usable one."""

    def __init__(self, config: Config, tiers: Sequence[str], router: Any = None) -> None:
        if not tiers:
            raise ConfigError("no usable tier: enable a tier on the escalation ladder or set its API key")
        self.config = config
        self.tiers = list(tiers)
        self.router = router

    def decide(self, question: str) -> dict[str, Any]:
        """``{"tier", "difficulty", "features", "selected_by"}`` for ``question``."""
        difficulty, features = classify_difficulty(question) if question else ("easy", {})
        arm_name = self.config.escalation.start_arm.get(difficulty)
        selected_by = f"classifier ({difficulty})"
        if self.router is not None and question:
            names = [a.name for a in self.config.ladder if a.tier in self.tiers and a.name in self.router.arms]
            if names:
                probs = self.router.predict_one(question)
                arm_name, why = self.router.choose(probs, candidates=names, tau=self.config.router.tau,
                                                   lam=self.config.router.lam)
                selected_by = f"router ({why})"
        tier = next((a.tier for a in self.config.ladder if a.name == arm_name), None)
        if tier not in self.tiers:
            tier = self.tiers[0]
        return {"tier": tier, "difficulty": difficulty, "features": features, "selected_by": selected_by}

    def __call__(self, request: ModelRequest) -> str:
        return self.decide(last_human_text(request.messages))["tier"]


@dataclass
class _Step:
    """One ``wrap_model_call``: what was decided and spent."""

    thread_id: str | None
    user_id: str | None
    tier: str
    difficulty: str | None
    features: dict[str, Any]
    selected_by: str
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tiers_tried: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    note: str | None = None


@dataclass
class _Call:
    key: str
    tier: str
    scopes: list[Scope]
    worst: Usage
    request: ModelRequest


class CostAwareMiddleware(AgentMiddleware):
    """Tier selection, budget holds and confidence-based escalation around each model call
    of a ``create_agent`` agent (see the module docstring).

    Args:
        config: the project configuration (default: :func:`~effreason_agents.config.load_config`).
        services: a :class:`~effreason_agents.graph.nodes.Services` to share clients, ledger, router
            and calibrators with a reasoning graph (default: one built from ``config``).
        select: ``select(request) -> tier name``; default :class:`DifficultySelector`.
        max_tokens: output-token cap of every call (what the worst case is held for).
        temperature: sampling temperature of every call.
        confidence_threshold: escalate below this (default: ``escalation.confidence_threshold``,
            else 0.5).
        escalate: set ``False`` to never retry on a stronger tier.
        calibrators: a :class:`~effreason_agents.adapters.calibrator.CalibratorSet` for calibrated
            confidence; default ``None``: the heuristic. The shipped calibrators were fitted on the
            reasoning graph's prompts, not an agent's: opt in knowingly.
        calibrator_strategy: the strategy name the calibrators are looked up under.
        thread_id_key: the key holding the thread id (in the run context, else ``configurable``).
        user_id_key: the context attribute / ``configurable`` / ``metadata`` key holding the user id.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        services: Any = None,
        select: TierSelector | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = 0.0,
        confidence_threshold: float | None = None,
        escalate: bool = True,
        calibrators: Any = None,
        calibrator_strategy: str = "*",
        thread_id_key: str = "thread_id",
        user_id_key: str = "user_id",
    ) -> None:
        super().__init__()
        if services is None:
            from effreason_agents.graph.nodes import Services

            services = Services(config or load_config())
        self.services = services
        self.config: Config = services.config
        if max_tokens <= 0:
            raise ConfigError(f"max_tokens must be > 0, got {max_tokens}")
        if confidence_threshold is not None and not 0.0 <= float(confidence_threshold) <= 1.0:
            raise ConfigError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.threshold = float(
            confidence_threshold if confidence_threshold is not None
            else self.config.escalation.confidence_threshold
            if self.config.escalation.confidence_threshold is not None
            else DEFAULT_CONFIDENCE_THRESHOLD
        )
        self.escalate = escalate
        self.calibrators = calibrators
        self.calibrator_strategy = calibrator_strategy
        self.thread_id_key = thread_id_key
        self.user_id_key = user_id_key
        clients: Mapping[str, TierClient] = services.clients
        ladder = self.config.usable_ladder(services.environ)
        self.tiers: list[str] = list(dict.fromkeys(a.tier for a in ladder if a.tier in clients))
        """The usable tiers, cheapest first (ladder order): escalation goes one step up."""
        self.default_selector = DifficultySelector(self.config, self.tiers, router=self._router())
        self.select: TierSelector = select or self.default_selector

    @property
    def name(self) -> str:
        return "CostAwareMiddleware"

    @property
    def ledger(self) -> BudgetLedger:
        return self.services.ledger

    def base_model(self) -> Any:
        """The cheapest usable tier's chat model: a natural ``model=`` for ``create_agent``
        (the middleware replaces it on every call anyway)."""
        return self.services.clients[self.tiers[0]].chat_model(max_tokens=self.max_tokens, temperature=self.temperature)

    def _router(self) -> Any:
        if not self.config.router.artifact:
            return None
        return self.services.router

    # -- ids --------------------------------------------------------------------------
    def _ids(self, request: ModelRequest) -> tuple[str | None, str | None]:
        try:
            from langgraph.config import get_config

            cfg = get_config()
        except Exception:  # noqa: BLE001 - outside a graph run there is no config
            cfg = {}
        configurable = cfg.get("configurable") or {}
        metadata = cfg.get("metadata") or {}
        ctx = getattr(request.runtime, "context", None)

        def from_context(key: str) -> Any:
            return ctx.get(key) if isinstance(ctx, Mapping) else getattr(ctx, key, None)

        thread = from_context(self.thread_id_key)
        if thread is None:
            thread = configurable.get(self.thread_id_key)
        user = from_context(self.user_id_key)
        if user is None:
            user = configurable.get(self.user_id_key, metadata.get(self.user_id_key))
        return (None if thread is None else str(thread)), (None if user is None else str(user))

    # -- decisions --------------------------------------------------------------------
    def _start(self, request: ModelRequest) -> _Step:
        from effreason_agents.langchain.chat_model import check_tool_messages

        if not request.messages:
            raise ValueError("no messages to send to the model: the agent's state has an empty message list")
        check_tool_messages(request.messages)
        thread_id, user_id = self._ids(request)
        question = last_human_text(request.messages)
        if self.select is self.default_selector:
            d = self.default_selector.decide(question)
        else:
            difficulty, features = classify_difficulty(question) if question else (None, {})
            d = {"tier": self.select(request), "difficulty": difficulty, "features": features, "selected_by": "select"}
        if d["tier"] not in self.tiers:
            raise ConfigError(f"select() chose tier {d['tier']!r}, which is not usable; usable tiers: {self.tiers}")
        if thread_id is not None or user_id is not None:
            from effreason_agents.graph.chat import ensure_limits

            ensure_limits(self.ledger, self.config, thread_id, user_id)
        return _Step(thread_id, user_id, d["tier"], d["difficulty"], d["features"], d["selected_by"])

    def _prompt_tokens(self, client: TierClient, request: ModelRequest) -> int:
        parts = [message_text(m) for m in request.messages]
        if request.system_message is not None:
            parts.append(message_text(request.system_message))
        for t in request.tools:
            try:
                schema = t if isinstance(t, dict) else {"name": t.name, "description": t.description,
                                                        "args": t.args}
                parts.append(json.dumps(schema, default=str))
            except Exception:  # noqa: BLE001 - an estimate
                parts.append(str(t))
        text = "\n".join(parts)
        try:
            n = client.count_tokens(text)
        except EffReasonError as exc:
            log.warning("counting tokens on tier %r failed (%s); using an estimate", client.name, exc)
            n = estimate_tokens(text)
        return int(n) + MESSAGE_OVERHEAD_TOKENS * (len(request.messages) + 1) + PROMPT_SLACK_TOKENS

    def _reserve(self, step: _Step, request: ModelRequest, tier: str, suffix: str = "") -> _Call | BudgetExhausted:
        """Hold the call's worst case against the call, thread and user scopes; the call's
        request, its model replaced by the tier's; or the :class:`BudgetExhausted` refusal."""
        client = self.services.clients[tier]
        tier_cfg = self.config.tiers[tier]
        key = f"agent:{step.call_id}{suffix}"
        prompt = self._prompt_tokens(client, request)
        worst = Usage.from_usd(self.max_tokens, prompt + self.max_tokens, cost_usd(tier_cfg, prompt, self.max_tokens))
        call_scope = Scope("request", key)
        b = self.config.budget
        if any(v is not None for v in (b.max_output_tokens, b.max_total_tokens, b.max_cost_usd)):
            self.ledger.set_limits(call_scope, LimitConfig(max_output_tokens=b.max_output_tokens,
                                                           max_total_tokens=b.max_total_tokens,
                                                           max_cost_usd=b.max_cost_usd))
        scopes = [call_scope]
        if step.thread_id is not None:
            scopes.append(Scope("thread", step.thread_id))
        if step.user_id is not None:
            scopes.append(Scope("user", step.user_id))
        try:
            self.ledger.reserve(key, scopes, worst)
        except BudgetExhausted as exc:
            return exc
        try:
            model = client.chat_model(max_tokens=self.max_tokens, temperature=self.temperature)
            _label(model, tier, step)
        except BaseException:
            self.ledger.release(key)
            raise
        return _Call(key, tier, scopes, worst, request.override(model=model))

    def _commit(self, step: _Step, call: _Call, message: AIMessage | None) -> None:
        usage = (message.usage_metadata if message is not None else None) or {}
        if usage:
            i, o = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
            cost = cost_usd(self.config.tiers[call.tier], i, o)
            actual = Usage.from_usd(o, i + o, cost)
        else:  # no usage reported: charge the worst case, never less than was spent
            log.warning("tier %r reported no usage; committing the worst case", call.tier)
            i = call.worst.total_tokens - call.worst.output_tokens
            o, cost, actual = call.worst.output_tokens, call.worst.cost_usd, call.worst
        self.ledger.commit(call.key, actual)
        step.tiers_tried.append(call.tier)
        step.input_tokens += i
        step.output_tokens += o
        step.cost += cost

    def confidence(self, tier: str, message: AIMessage, features: Mapping[str, Any] | None = None) -> tuple[float | None, str]:
        """The reply's confidence and how it was computed; ``None`` for a tool call or a tier
        that returned no logprobs (such replies are never escalated)."""
        if message.tool_calls:
            return None, "tool call"
        meta = message.response_metadata or {}
        logprobs = _parse_logprobs(meta.get("logprobs"))
        if not logprobs:
            return None, "no logprobs from this tier"
        text = message_text(message)
        parsed = parse_answer(text)
        usage = message.usage_metadata or {}
        signals = compute_signals(logprobs, 0, parsed.span, meta.get("finish_reason"),
                                  output_tokens=usage.get("output_tokens"), max_tokens=self.max_tokens,
                                  answer_method=parsed.method)
        signals.update(question_signals(features, parsed.answer))
        conf, method = heuristic_confidence(signals, has_answer=parsed.answer is not None, answer_method=parsed.method)
        if self.calibrators is not None and method == HEURISTIC_METHOD:
            p, how = self.calibrators.confidence(tier, self.calibrator_strategy, signals)
            if p is not None:
                return float(p), how
        return conf, method

    def _reserve_first(self, step: _Step, request: ModelRequest) -> _Call | BudgetExhausted:
        """The selected tier's call, else (its worst case does not fit) the nearest cheaper
        tier whose worst case fits; the selected tier's refusal when none does."""
        i = self.tiers.index(step.tier)
        first: BudgetExhausted | None = None
        for tier in reversed(self.tiers[: i + 1]):
            call = self._reserve(step, request, tier)
            if not isinstance(call, BudgetExhausted):
                if tier != step.tier:
                    step.note = f"{step.tier} did not fit the budget ({first}); used {tier}"
                return call
            first = first or call
        assert first is not None
        return first

    def _next_tier(self, tier: str) -> str | None:
        i = self.tiers.index(tier)
        return self.tiers[i + 1] if i + 1 < len(self.tiers) else None

    def _should_escalate(self, step: _Step, call: _Call, message: AIMessage | None) -> tuple[bool, float | None, str]:
        if message is None:
            return False, None, "no AIMessage in the response"
        conf, how = self.confidence(call.tier, message, step.features)
        if not self.escalate or conf is None or conf >= self.threshold:
            return False, conf, how
        return self._next_tier(call.tier) is not None, conf, how

    # -- results ----------------------------------------------------------------------
    def _refusal(self, step: _Step, exc: BudgetExhausted) -> AIMessage:
        from effreason_agents.graph.chat import budget_remaining, refusal_text

        remaining = budget_remaining(self.ledger, step.thread_id, step.user_id)
        text = refusal_text(remaining, str(exc))
        info = self._info(step, None, status="budget_exhausted", reason=str(exc))
        info["remaining"] = remaining
        return AIMessage(content=text, response_metadata={"effreason": info, "finish_reason": "budget_exhausted"},
                         usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})

    def _info(self, step: _Step, confidence: tuple[float | None, str] | None, *, status: str,
              reason: str | None = None, model: str | None = None) -> dict[str, Any]:
        conf, how = confidence or (None, None)
        return {
            "tier": step.tiers_tried[-1] if step.tiers_tried else None,
            "model": model,
            "difficulty": step.difficulty,
            "selected_by": step.selected_by,
            "selected_tier": step.tier,
            "confidence": None if conf is None else round(float(conf), 6),
            "confidence_method": how,
            "threshold": self.threshold,
            "escalated": len(step.tiers_tried) > 1,
            "tiers_tried": list(step.tiers_tried),
            "input_tokens": step.input_tokens,
            "output_tokens": step.output_tokens,
            "cost_usd": format_usd(step.cost),
            "status": status,
            "reason": reason or step.note,
            "thread_id": step.thread_id,
            "user_id": step.user_id,
        }

    def _finish(self, step: _Step, response: Any, confidence: tuple[float | None, str]) -> Any:
        message = _last_ai(response)
        if message is None:
            return response
        conf = confidence[0]
        status = "low_confidence" if conf is not None and conf < self.threshold else "answered"
        model = (message.response_metadata or {}).get("model_name") or self.config.tiers[step.tiers_tried[-1]].model
        info = self._info(step, confidence, status=status, model=model)
        tagged = message.model_copy(update={"response_metadata": {**(message.response_metadata or {}),
                                                                  "effreason": info}})
        return _replace_ai(response, message, tagged)

    # -- the hooks ----------------------------------------------------------------------
    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        step = self._start(request)
        call = self._reserve_first(step, request)
        if isinstance(call, BudgetExhausted):
            return self._refusal(step, call)
        response = self._run(step, call, handler)
        message = _last_ai(response)
        escalate, conf, how = self._should_escalate(step, call, message)
        if escalate:
            nxt = self._reserve(step, request, self._next_tier(call.tier), ":escalated")  # type: ignore[arg-type]
            if isinstance(nxt, BudgetExhausted):
                step.note = f"not escalated: {nxt}"
            else:
                try:
                    response2 = self._run(step, nxt, handler)
                except Exception as exc:  # noqa: BLE001 - the first reply still stands
                    log.warning("escalation to tier %r failed: %s", nxt.tier, exc)
                    step.note = f"escalation to {nxt.tier} failed: {exc}"
                else:
                    response, (conf, how) = response2, self._conf_of(step, nxt, response2)
        return self._finish(step, response, (conf, how))

    async def awrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]) -> Any:
        step = await asyncio.to_thread(self._start, request)
        call = await asyncio.to_thread(self._reserve_first, step, request)
        if isinstance(call, BudgetExhausted):
            return await asyncio.to_thread(self._refusal, step, call)
        response = await self._arun(step, call, handler)
        message = _last_ai(response)
        escalate, conf, how = self._should_escalate(step, call, message)
        if escalate:
            nxt = await asyncio.to_thread(self._reserve, step, request, self._next_tier(call.tier), ":escalated")  # type: ignore[arg-type]
            if isinstance(nxt, BudgetExhausted):
                step.note = f"not escalated: {nxt}"
            else:
                try:
                    response2 = await self._arun(step, nxt, handler)
                except Exception as exc:  # noqa: BLE001 - the first reply still stands
                    log.warning("escalation to tier %r failed: %s", nxt.tier, exc)
                    step.note = f"escalation to {nxt.tier} failed: {exc}"
                else:
                    response, (conf, how) = response2, self._conf_of(step, nxt, response2)
        return self._finish(step, response, (conf, how))

    def _conf_of(self, step: _Step, call: _Call, response: Any) -> tuple[float | None, str]:
        message = _last_ai(response)
        return (None, "no AIMessage in the response") if message is None else self.confidence(call.tier, message, step.features)

    def _run(self, step: _Step, call: _Call, handler: Callable[[ModelRequest], Any]) -> Any:
        try:
            response = handler(call.request)
        except BaseException:
            self.ledger.release(call.key)
            raise
        self._commit(step, call, _last_ai(response))
        return response

    async def _arun(self, step: _Step, call: _Call, handler: Callable[[ModelRequest], Awaitable[Any]]) -> Any:
        try:
            response = await handler(call.request)
        except BaseException:
            self.ledger.release(call.key)
            raise
        await asyncio.to_thread(self._commit, step, call, _last_ai(response))
        return response


def _label(model: Any, tier: str, step: _Step) -> None:
    """Tag the tier's chat model so its run (and LangSmith trace) shows the tier and
    difficulty, and :class:`~effreason_agents.langchain.callbacks.CostCallbackHandler` prices it by tier."""
    from effreason_agents.langchain.callbacks import run_metadata, run_tags

    try:
        model.metadata = {**(getattr(model, "metadata", None) or {}),
                          **run_metadata(tier=tier, difficulty=step.difficulty)}
        model.tags = [*(getattr(model, "tags", None) or []), *run_tags(tier=tier)]
    except (AttributeError, TypeError, ValueError):  # a model without these fields: labels are optional
        pass


def _last_ai(response: Any) -> AIMessage | None:
    if isinstance(response, AIMessage):
        return response
    inner = getattr(response, "model_response", None)  # ExtendedModelResponse
    if inner is not None:
        return _last_ai(inner)
    for m in reversed(getattr(response, "result", None) or []):
        if isinstance(m, AIMessage):
            return m
    return None


def _replace_ai(response: Any, old: AIMessage, new: AIMessage) -> Any:
    if isinstance(response, AIMessage):
        return new
    inner = getattr(response, "model_response", None)
    if inner is not None:
        from dataclasses import replace

        return replace(response, model_response=_replace_ai(inner, old, new))
    if isinstance(response, ModelResponse):
        return ModelResponse(result=[new if m is old else m for m in response.result],
                             structured_response=response.structured_response)
    return response
