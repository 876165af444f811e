"""The policy: every decision of every front end, as functions of plain data.

Where on the ladder to start (heuristic classifier or trained router), which arms
fit the budget, the confidence of an attempt (calibrated where a calibrator applies),
the threshold in force, whether to escalate, and which answer is final. The graph's
nodes, :class:`~effreason_agents.langchain.middleware.CostAwareMiddleware` and
:class:`~effreason_agents.langchain.chat_model.ChatCostAware` all call these; they see
only plain data (and the loaded calibrators and router), so they are unit-tested
without any model. Statuses and decisions are the enums of
:mod:`effreason_agents.core.records`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping, Sequence

from effreason_agents.config import DEFAULT_CONFIDENCE_THRESHOLD, BudgetConfig, Config, Difficulty, LimitConfig
from effreason_agents.core.budget import Spend, fits
from effreason_agents.core.confidence import HEURISTIC_METHOD, HEURISTIC_SC_METHOD, heuristic_confidence
from effreason_agents.core.records import TIER_DOWN_KINDS, Scope, Status

__all__ = [
    "TIER_DOWN_KINDS",
    "arm_fits",
    "binding_scope",
    "budget_scopes",
    "confidence",
    "escalation_decision",
    "final_choice",
    "pick_arm",
    "resolve_threshold",
    "router_choice",
    "start_rung",
]


def resolve_threshold(run_value: float | None, config: Config, calibrator: Any = None) -> float:
    """The escalation threshold in force: the run's own (context, constructor argument),
    else the configuration's ``escalation.confidence_threshold``, else the calibrator's
    fitted threshold, else :data:`~effreason_agents.config.DEFAULT_CONFIDENCE_THRESHOLD`."""
    if run_value is not None:
        return float(run_value)
    if config.escalation.confidence_threshold is not None:
        return float(config.escalation.confidence_threshold)
    if calibrator is not None and getattr(calibrator, "threshold", None) is not None:
        return float(calibrator.threshold)
    return DEFAULT_CONFIDENCE_THRESHOLD


def confidence(
    calibrators: Any, tier: str, strategy: str, signals: Mapping[str, Any], *, has_answer: bool, answer_method: str = ""
) -> tuple[float | None, str, Any]:
    """An attempt's confidence, how it was computed and the calibrator used (or ``None``):
    a calibrator's P(correct) where one applies to the tier and strategy, else the
    documented heuristic; ``None`` confidence when the tier gave nothing to judge by."""
    conf, method = heuristic_confidence(signals, has_answer=has_answer, answer_method=answer_method)
    if calibrators is not None and (method in (HEURISTIC_METHOD, HEURISTIC_SC_METHOD) or conf is None):
        p, how = calibrators.confidence(tier, strategy, signals)
        if p is not None:
            return float(p), how, calibrators.find(tier, strategy)
        if conf is not None:
            method = f"{method} ({how})"
    return conf, method, None


def budget_scopes(
    config: Config, request_id: str, request_limits: LimitConfig | BudgetConfig | None,
    thread_id: str | None = None, user_id: str | None = None,
) -> tuple[list[Scope], dict[Scope, LimitConfig]]:
    """The scopes every call of a request is held against (the request, its thread and its
    user when known) and their configured limits, for the ledger to set where a scope has
    none yet (a chatbot may have given a thread its own budget)."""
    req = Scope("request", request_id)
    base = request_limits if request_limits is not None else config.budget
    limits: dict[Scope, LimitConfig] = {req: LimitConfig(
        max_output_tokens=base.max_output_tokens, max_total_tokens=base.max_total_tokens,
        max_cost_usd=base.max_cost_usd)}
    scopes = [req]
    for kind, key, lim in (("thread", thread_id, config.budget.thread), ("user", user_id, config.budget.user)):
        if key:
            scope = Scope(kind, str(key))  # type: ignore[arg-type]
            scopes.append(scope)
            limits[scope] = lim
    return scopes, limits


def router_choice(
    router: Any, question: str, candidates: Sequence[str], costs: Mapping[str, float], config: Config
) -> tuple[str, dict[str, Any]] | None:
    """The trained router's arm among ``candidates`` (the arms it knows), with what it
    predicted; ``None`` without a router or when it knows none of them."""
    if router is None:
        return None
    names = [n for n in candidates if n in router.arms]
    if not names:
        return None
    probs = router.predict_one(question)
    card_costs = (router.card.get("policy") or {}).get("costs") or {}
    use = {n: float(card_costs[n]) if card_costs.get(n) is not None else float(costs.get(n, 0.0)) for n in names}
    arm, why = router.choose(probs, use, candidates=names, tau=config.router.tau, lam=config.router.lam)
    return arm, {"p_correct": {k: round(float(v), 4) for k, v in probs.items()}, "choice": arm, "reason": why}


def start_rung(difficulty: Difficulty, start_arm: Mapping[str, str], arms: Sequence[Mapping[str, Any]]) -> int:
    """The position of the arm the classifier picks for ``difficulty``; the bottom of the
    ladder when that arm is not among the usable ``arms``."""
    if not arms:
        raise ValueError("the ladder is empty")
    wanted = start_arm.get(difficulty)
    for i, arm in enumerate(arms):
        if arm["name"] == wanted:
            return i
    return 0


def _fit(arm: Mapping[str, Any], limits: Any, used: Spend) -> str | None:
    samples = int(arm.get("samples") or 1)  # an sc arm may draw this many samples, each with the prompt
    return fits(limits, used, int(arm["prompt_tokens"]) * samples, int(arm["max_tokens"]) * samples,
                Decimal(arm["worst_case_cost_usd"]))


def arm_fits(
    arm: Mapping[str, Any], budget: BudgetConfig, spent: Spend, extra: Sequence[tuple[Any, ...]] = ()
) -> str | None:
    """``None`` when the planned arm's worst case fits the budget (and every ``extra``
    (limits, spent[, scope kind]) entry, e.g. what is left of the thread's and the user's
    budgets), otherwise why not."""
    for limits, used, *_ in ((budget, spent), *extra):
        why = _fit(arm, limits, used)
        if why is not None:
            return why
    return None


def binding_scope(
    arms: Sequence[Mapping[str, Any]], budget: BudgetConfig, spent: Spend, extra: Sequence[tuple[Any, ...]] = ()
) -> str | None:
    """The scope kind (``"request"``, ``"thread"``, ``"user"``) whose budget none of ``arms``
    fits, checked in that order; ``None`` when some arm fits every scope."""
    for limits, used, *kind in ((budget, spent, "request"), *extra):
        if arms and all(_fit(a, limits, used) is not None for a in arms):
            return str(kind[0]) if kind else "request"
    return None


def pick_arm(
    arms: Sequence[Mapping[str, Any]],
    start: int,
    budget: BudgetConfig,
    spent: Spend,
    down_tiers: frozenset[str] | set[str] = frozenset(),
    *,
    allow_below: bool = True,
    exclude: frozenset[int] | set[int] = frozenset(),
    extra: Sequence[tuple[Any, ...]] = (),
    below_first: bool = False,
) -> tuple[int | None, list[str]]:
    """The first arm at or above ``start`` that is not on a failed tier, not in ``exclude``
    (arms already tried) and fits the budget; failing that (when ``allow_below``), the
    nearest such arm below ``start`` (with ``below_first``, the arms below are tried
    right after ``start``, before those above: as the budget shrinks, cheaper
    strategies win). Returns its index (or ``None``) and why each skipped arm was skipped."""
    skipped: list[str] = []
    above = list(range(start, len(arms)))
    below = list(range(min(start, len(arms)) - 1, -1, -1)) if allow_below else []
    # below_first: when the start arm does not fit, the cheaper arms below it come before costlier ones above
    order = above[:1] + below + above[1:] if below_first else above + below
    for i in order:
        if i in exclude:
            continue
        arm = arms[i]
        if arm["tier"] in down_tiers:
            skipped.append(f"{arm['name']}: tier {arm['tier']!r} failed earlier in this request")
            continue
        why = arm_fits(arm, budget, spent, extra)
        if why is not None:
            skipped.append(f"{arm['name']}: over budget ({why})")
            continue
        return i, skipped
    return None, skipped


def escalation_decision(attempt: Mapping[str, Any], threshold: float) -> tuple[bool, str]:
    """Whether to try a stronger arm after ``attempt``, and why. The attempt's own
    ``threshold`` (set by ``assess``, e.g. from its calibrator) wins over ``threshold``."""
    if attempt.get("threshold") is not None:
        threshold = float(attempt["threshold"])
    if attempt.get("error"):
        return True, f"tier error: {attempt['error']}"
    if attempt.get("answer") is None:
        return True, "no answer could be parsed"
    if attempt.get("truncated"):
        return True, f"the reply was cut at its {attempt.get('max_tokens')}-token cap"
    conf = attempt.get("confidence")
    if conf is None:
        return False, "accepted: the tier returns no logprobs, so no confidence to act on"
    if conf < threshold:
        return True, f"confidence {conf:.2f} below threshold {threshold:.2f}"
    return False, f"confidence {conf:.2f} meets threshold {threshold:.2f}"


def final_choice(attempts: Sequence[Mapping[str, Any]], threshold: float) -> tuple[int | None, Status]:
    """Which attempt's answer the request returns, and the request status.

    The last complete attempt that meets the threshold (or has no confidence
    signal) is ``answered``; otherwise the most confident attempt with an answer
    (complete replies before truncated ones, later arms win ties) is returned as
    ``low_confidence``; with no answer at all the status is ``failed``. A reply
    cut by its token cap is never ``answered``.
    """
    for i in range(len(attempts) - 1, -1, -1):
        esc, _ = escalation_decision(attempts[i], threshold)
        if not esc:
            return i, Status.ANSWERED
    best: int | None = None

    def rank(a: Mapping[str, Any]) -> tuple[bool, float]:  # complete replies first, then confidence
        return (not a.get("truncated"), a.get("confidence") or 0.0)

    for i, a in enumerate(attempts):
        if a.get("error") or a.get("answer") is None:
            continue
        if best is None or rank(a) >= rank(attempts[best]):
            best = i
    return (best, Status.LOW_CONFIDENCE) if best is not None else (None, Status.FAILED)
