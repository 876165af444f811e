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
import logging
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage

from effreason_agents.core.messages import check_tool_messages, last_human_text, message_text
from effreason_agents.core.text import validate_question
from effreason_agents.core.features import classify_difficulty
from effreason_agents.config import Config, load_config
from effreason_agents.errors import BudgetExhausted, ConfigError, TierError
from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.core.prompts import parse_answer
from effreason_agents.adapters.tiers import TierClient, parse_logprobs
from effreason_agents.core.money import format_usd
from effreason_agents.core.records import TIER_DOWN_KINDS, Completion, Status
from effreason_agents.engine import policy
from effreason_agents.engine.runner import AttemptRunner
from effreason_agents.core.confidence import compute_signals, question_signals

__all__ = ["CostAwareMiddleware", "DifficultySelector", "TierSelector", "last_human_text"]

log = logging.getLogger(__name__)

TierSelector = Callable[[ModelRequest], str]
"""``select(request) -> tier name``: the decision function of :class:`CostAwareMiddleware`."""

DEFAULT_MAX_TOKENS = 256
MESSAGE_OVERHEAD_TOKENS = 8  # chat-template tokens per message
PROMPT_SLACK_TOKENS = 16


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
        if question:
            names = [a.name for a in self.config.ladder if a.tier in self.tiers]
            routed = policy.router_choice(self.router, question, names, {}, self.config)
            if routed is not None:
                arm_name, selected_by = routed[0], f"router ({routed[1]['reason']})"
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
    failed: list[str] = field(default_factory=list)
    usage_missing: bool = False
    last_refused: bool = False


@dataclass
class _Call:
    """One held model call of a step: its tier, the request sent through the agent's handler,
    the attempt runner's arguments, and the handler's response once it came."""

    tier: str
    client: TierClient
    request: ModelRequest
    held: dict[str, Any]
    response: Any = None

    def reply(self, response: Any, started: float) -> Completion:
        """Keep ``response``; its usage as a :class:`Completion` (none readable: settled at the hold)."""
        self.response = response
        message = _last_ai(response)
        latency = time.perf_counter() - started
        if message is None:
            return Completion("", 0, 0, None, latency, self.client.tier.model, Decimal(0), usage_reported=False)
        return self.client.completion(message, latency=latency)

    def failure(self, exc: Exception) -> BaseException:
        """A :class:`TierError` for a provider failure the step can fall back from (429, 5xx,
        timeout, unreachable, unreadable reply); any other exception unchanged."""
        err = self.client.failure(exc)
        return err if isinstance(err, TierError) and err.kind in TIER_DOWN_KINDS else exc


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
            from effreason_agents.engine.services import Services

            services = Services(config or load_config())
        self.services = services
        self.config: Config = services.config
        if max_tokens <= 0:
            raise ConfigError(f"max_tokens must be > 0, got {max_tokens}")
        if confidence_threshold is not None and not 0.0 <= float(confidence_threshold) <= 1.0:
            raise ConfigError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.threshold = policy.resolve_threshold(confidence_threshold, self.config)
        self.runner = AttemptRunner(services)
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
        if not request.messages:
            raise ValueError("no messages to send to the model: the agent's state has an empty message list")
        check_tool_messages(request.messages)
        thread_id, user_id = self._ids(request)
        question = last_human_text(request.messages)
        if any(isinstance(m, HumanMessage) for m in request.messages):
            question = validate_question(question)  # nothing visible to answer: refused before any call
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

    def confidence(self, tier: str, message: AIMessage, features: Mapping[str, Any] | None = None) -> tuple[float | None, str]:
        """The reply's confidence and how it was computed; ``None`` for a tool call or a tier
        that returned no logprobs (such replies are never escalated)."""
        if message.tool_calls:
            return None, "tool call"
        meta = message.response_metadata or {}
        logprobs = parse_logprobs(meta.get("logprobs"))
        if not logprobs:
            return None, "no logprobs from this tier"
        parsed = parse_answer(message_text(message))
        usage = message.usage_metadata or {}
        signals = compute_signals(logprobs, 0, parsed.span, meta.get("finish_reason"),
                                  output_tokens=usage.get("output_tokens"), max_tokens=self.max_tokens,
                                  answer_method=parsed.method)
        signals.update(question_signals(features, parsed.answer))
        conf, how, _ = policy.confidence(self.calibrators, tier, self.calibrator_strategy, signals,
                                         has_answer=parsed.answer is not None, answer_method=parsed.method)
        return conf, how

    def _call(self, step: _Step, request: ModelRequest, tier: str) -> _Call:
        """One call of this step on ``tier``: the request with its model replaced by the
        tier's, and what the attempt runner holds it as."""
        client = self.services.clients[tier]
        model = client.chat_model(max_tokens=self.max_tokens, temperature=self.temperature)
        _label(model, tier, step)
        messages = ([request.system_message] if request.system_message is not None else []) + list(request.messages)
        key = f"agent:{step.call_id}:{len(step.tiers_tried) + len(step.failed)}"
        scopes, limits = policy.budget_scopes(self.config, key, self.config.budget, step.thread_id, step.user_id)
        held = dict(key=key, scopes=scopes, client=client, prompt_tokens=client.prompt_bound(messages, request.tools),
                    max_tokens=self.max_tokens, limits=limits)
        return _Call(tier, client, request.override(model=model), held)

    def _attempt(self, step: _Step, request: ModelRequest, tier: str, handler: Callable[[ModelRequest], Any]) -> Any:
        """One held call on ``tier`` through ``handler``: its response, a :class:`BudgetExhausted`
        refusal (nothing called), or a :class:`TierError` (the hold released)."""
        call = self._call(step, request, tier)

        def invoke() -> Completion:
            started = time.perf_counter()
            try:
                return call.reply(handler(call.request), started)
            except Exception as exc:  # noqa: BLE001 - a provider failure: fall back to another tier
                err = call.failure(exc)
                if err is exc:
                    raise
                raise err from exc

        try:
            done = self.runner.call(invoke=invoke, **call.held)
        except (BudgetExhausted, TierError) as exc:
            return self._failed(step, tier, exc)
        return self._settled(step, call, done)

    async def _aattempt(self, step: _Step, request: ModelRequest, tier: str,
                        handler: Callable[[ModelRequest], Awaitable[Any]]) -> Any:
        """:meth:`_attempt` for an async handler."""
        call = self._call(step, request, tier)

        async def invoke() -> Completion:
            started = time.perf_counter()
            try:
                return call.reply(await handler(call.request), started)
            except Exception as exc:  # noqa: BLE001 - a provider failure: fall back to another tier
                err = call.failure(exc)
                if err is exc:
                    raise
                raise err from exc

        try:
            done = await self.runner.acall(invoke=invoke, **call.held)
        except (BudgetExhausted, TierError) as exc:
            return self._failed(step, tier, exc)
        return self._settled(step, call, done)

    @staticmethod
    def _failed(step: _Step, tier: str, exc: BaseException) -> BaseException:
        if isinstance(exc, TierError):
            log.warning("tier %r failed: %s", tier, exc)
            step.failed.append(tier)
        return exc

    @staticmethod
    def _settled(step: _Step, call: _Call, done: Any) -> Any:
        c = done.completion
        step.tiers_tried.append(call.tier)
        step.input_tokens += c.input_tokens
        step.output_tokens += c.output_tokens
        step.cost += c.cost_usd
        step.usage_missing = step.usage_missing or done.usage_missing
        return call.response

    def _order(self, selected: str) -> list[str]:
        """Where to try the call: the selected tier, then (when it fails) the tiers above it,
        then those below; after a budget refusal only cheaper tiers are tried."""
        i = self.tiers.index(selected)
        return [selected, *self.tiers[i + 1:], *reversed(self.tiers[:i])]

    def _next_tier(self, tier: str, failed: Sequence[str] = ()) -> str | None:
        i = self.tiers.index(tier)
        return next((t for t in self.tiers[i + 1:] if t not in failed), None)

    def _candidates(self, step: _Step) -> Iterator[str]:
        """The tiers to try, in :meth:`_order`; after a budget refusal only tiers cheaper than
        the refused one (a costlier call cannot fit either)."""
        ceiling = len(self.tiers)
        for tier in self._order(step.tier):
            i = self.tiers.index(tier)
            if i >= ceiling:
                continue
            yield tier
            if step.last_refused:
                ceiling, step.last_refused = min(ceiling, i), False

    # -- results ----------------------------------------------------------------------
    def _refusal(self, step: _Step, exc: BudgetExhausted) -> AIMessage:
        from effreason_agents.graph.chat import budget_remaining, refusal_text

        remaining = budget_remaining(self.ledger, step.thread_id, step.user_id)
        text = refusal_text(remaining, str(exc))
        info = self._info(step, None, status=Status.BUDGET_EXHAUSTED.value, reason=str(exc))
        info["remaining"] = remaining
        info["budget_scope"] = exc.scope.kind
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
            "usage_missing": step.usage_missing,
            "thread_id": step.thread_id,
            "user_id": step.user_id,
        }

    def _finish(self, step: _Step, response: Any, confidence: tuple[float | None, str]) -> Any:
        message = _last_ai(response)
        if message is None:
            return response
        conf = confidence[0]
        status = (Status.LOW_CONFIDENCE if conf is not None and conf < self.threshold else Status.ANSWERED).value
        model = (message.response_metadata or {}).get("model_name") or self.config.tiers[step.tiers_tried[-1]].model
        info = self._info(step, confidence, status=status, model=model)
        tagged = message.model_copy(update={"response_metadata": {**(message.response_metadata or {}),
                                                                  "effreason": info}})
        return _replace_ai(response, message, tagged)

    # -- the hooks ----------------------------------------------------------------------
    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        step = self._start(request)
        response, refusal, error = None, None, None
        for tier in self._candidates(step):
            response, refusal, error = self._tally(step, self._attempt(step, request, tier, handler), refusal, error)
            if response is not None:
                break
        if response is None:
            return self._no_reply(step, refusal, error)
        conf, nxt = self._judge(step, response, refusal, error)
        if nxt is not None:
            try:
                again = self._attempt(step, request, nxt, handler)
            except Exception as exc:  # noqa: BLE001 - the first reply still stands
                again = exc
            response, conf = self._after_escalation(step, nxt, again, response, conf)
        return self._finish(step, response, conf)

    async def awrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]) -> Any:
        step = await asyncio.to_thread(self._start, request)
        response, refusal, error = None, None, None
        for tier in self._candidates(step):
            out = await self._aattempt(step, request, tier, handler)
            response, refusal, error = self._tally(step, out, refusal, error)
            if response is not None:
                break
        if response is None:
            return await asyncio.to_thread(self._no_reply, step, refusal, error)
        conf, nxt = self._judge(step, response, refusal, error)
        if nxt is not None:
            try:
                again = await self._aattempt(step, request, nxt, handler)
            except Exception as exc:  # noqa: BLE001 - the first reply still stands
                again = exc
            response, conf = self._after_escalation(step, nxt, again, response, conf)
        return self._finish(step, response, conf)

    @staticmethod
    def _tally(step: _Step, out: Any, refusal: BudgetExhausted | None,
               error: TierError | None) -> tuple[Any, BudgetExhausted | None, TierError | None]:
        """``(response, first refusal, last tier error)`` after one try."""
        if isinstance(out, BudgetExhausted):
            step.last_refused = True
            return None, refusal or out, error
        if isinstance(out, TierError):
            return None, refusal, out
        return out, refusal, error

    def _no_reply(self, step: _Step, refusal: BudgetExhausted | None, error: TierError | None) -> Any:
        """No tier answered: the polite refusal when a budget stopped it, else the tier error."""
        if refusal is None:
            assert error is not None
            raise error
        return self._refusal(step, refusal)

    def _judge(self, step: _Step, response: Any, refusal: BudgetExhausted | None,
               error: TierError | None) -> tuple[tuple[float | None, str], str | None]:
        """The reply's confidence and the tier to ask again on low confidence (or ``None``)."""
        step.note = self._fallback_note(step, refusal, error)
        message = _last_ai(response)
        conf = (self.confidence(step.tiers_tried[-1], message, step.features) if message is not None
                else (None, "no AIMessage in the response"))
        return conf, self._escalation(step, conf)

    @staticmethod
    def _fallback_note(step: _Step, refusal: BudgetExhausted | None, error: TierError | None) -> str | None:
        used = step.tiers_tried[-1]
        if used == step.tier:
            return None
        if refusal is not None:
            return f"{step.tier} did not fit the budget ({refusal}); used {used}"
        return f"{step.tier} failed ({error}); used {used}"

    def _escalation(self, step: _Step, conf: tuple[float | None, str]) -> str | None:
        """The tier to ask again on low confidence, or ``None``."""
        if not self.escalate or conf[0] is None or conf[0] >= self.threshold:
            return None
        return self._next_tier(step.tiers_tried[-1], step.failed)

    def _after_escalation(self, step: _Step, tier: str, out: Any, response: Any,
                          conf: tuple[float | None, str]) -> tuple[Any, tuple[float | None, str]]:
        if isinstance(out, BudgetExhausted):
            step.note = f"not escalated: {out}"
            return response, conf
        if isinstance(out, Exception):
            log.warning("escalation to tier %r failed: %s", tier, out)
            step.note = f"escalation to {tier} failed: {out}"
            return response, conf
        message = _last_ai(out)
        return out, (self.confidence(tier, message, step.features) if message else (None, "no AIMessage in the response"))


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
