"""The policy: every decision of every front end, as functions of plain data.

Where on the ladder to start (heuristic classifier or trained router), which arms
fit the budget, the confidence of an attempt (calibrated where a calibrator applies),
the threshold in force, whether to escalate and where to (the next rung, or with
``escalation.next = "value"`` the arm with the best predicted gain in P(correct) per
expected cost: :func:`value_escalation`), and which answer is final. The graph's
nodes, :class:`~effreason_agents.langchain.middleware.CostAwareMiddleware` and
:class:`~effreason_agents.langchain.chat_model.ChatCostAware` all call these; they see
only plain data (and the loaded calibrators and router), so they are unit-tested
without any model. Statuses and decisions are the enums of
:mod:`effreason_agents.core.records`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping, Sequence

from effreason_agents.config import DEFAULT_CONFIDENCE_THRESHOLD, BudgetConfig, Config, Difficulty, LimitConfig
from effreason_agents.core.budget import Spend, cost_usd, fits
from effreason_agents.core.confidence import HEURISTIC_METHOD, HEURISTIC_SC_METHOD, heuristic_confidence
from effreason_agents.core.records import TIER_DOWN_KINDS, Scope, Status

__all__ = [
    "BUILTIN_ARM_PRIORS",
    "GENERIC_PRIORS",
    "TIER_DOWN_KINDS",
    "VALUE_UNITS",
    "ArmEstimate",
    "ValueChoice",
    "answer_in_hand",
    "arm_fits",
    "arm_input_bound",
    "arm_prior",
    "arm_token_bounds",
    "best_answer",
    "binding_scope",
    "budget_scopes",
    "confidence",
    "escalation_decision",
    "estimate_arms",
    "final_choice",
    "next_arm_by_value",
    "pick_arm",
    "resolve_threshold",
    "router_choice",
    "router_predictions",
    "same_tier_estimates",
    "scored_confidence",
    "start_rung",
    "value_escalation",
    "value_reason",
    "value_unit",
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


def scored_confidence(
    conf: float | None, method: str, calibrator: Any, scorer: Any, scorer_p: float, mode: str = "replace"
) -> tuple[float, str, Any]:
    """:func:`confidence`'s result with a cascade scorer's P(right) for the answer
    (:class:`~effreason_agents.adapters.scorer.CascadeScorer`): ``"replace"`` — the scorer's
    value, judged by the scorer's fitted threshold (it is returned in the calibrator's place);
    ``"combine"`` — the mean of the two in logit space
    (:func:`~effreason_agents.adapters.scorer.combine`), judged by the calibrator's threshold."""
    from effreason_agents.adapters.scorer import combine

    p, how = combine(scorer_p, conf, mode)
    if mode == "replace":
        return p, how, scorer
    return p, f"{how}; {method}" if conf is not None else how, calibrator


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
    predicted; ``None`` without a router or when it knows none of them. A
    :class:`~effreason_agents.adapters.router_target.TargetedRouter` (``[router]
    target_share``) decides between the cheapest arm and the rest by its rolling
    threshold and adds its ``score``, ``threshold``, ``target_share`` and ``artifact``."""
    if router is None:
        return None
    names = [n for n in candidates if n in router.arms]
    if not names:
        return None
    probs = router.predict_one(question)
    card_costs = (router.card.get("policy") or {}).get("costs") or {}
    use = {n: float(card_costs[n]) if card_costs.get(n) is not None else float(costs.get(n, 0.0)) for n in names}
    from effreason_agents.adapters.router_target import TargetedRouter

    tracked: dict[str, Any] = {}
    if isinstance(router, TargetedRouter):  # [router] target_share: a rolling threshold keeps the share on target
        arm, why, tracked = router.route(probs, use, names)
    else:
        arm, why = router.choose(probs, use, candidates=names, tau=config.router.tau, lam=config.router.lam)
    return arm, {"p_correct": {k: round(float(v), 4) for k, v in probs.items()}, "choice": arm, "reason": why,
                 **tracked}


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


def arm_input_bound(arm: Mapping[str, Any]) -> int:
    """The most input tokens a planned arm can be billed: its ``input_tokens_bound`` when the
    plan set one (a bon arm re-sends its prompt every round), else prompt bound × samples."""
    if arm.get("input_tokens_bound") is not None:
        return int(arm["input_tokens_bound"])
    return int(arm["prompt_tokens"]) * int(arm.get("samples") or 1)


def arm_token_bounds(strategy: Any, prompt_tokens: int, max_tokens: int) -> tuple[int, int, int]:
    """(samples, input bound, output bound) of an arm of ``strategy``: an sc arm may draw
    ``samples`` samples, each with the prompt; a bon arm generates ``samples`` candidates whose
    continuation rounds re-send the prompt and partial text
    (:func:`~effreason_agents.engine.sampling.bon_input_bound`); other arms call once."""
    if strategy.kind == "bon":
        from effreason_agents.engine.sampling import bon_input_bound

        n = int(strategy.samples)
        return n, bon_input_bound(prompt_tokens, max_tokens, int(strategy.round_tokens), n), max_tokens * n
    n = int(strategy.samples) if strategy.kind == "sc" else 1
    return n, prompt_tokens * n, max_tokens * n


def _fit(arm: Mapping[str, Any], limits: Any, used: Spend) -> str | None:
    samples = int(arm.get("samples") or 1)  # an sc arm may draw this many samples, each with the prompt
    return fits(limits, used, arm_input_bound(arm), int(arm["max_tokens"]) * samples,
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


# -- escalation by value ---------------------------------------------------------------

VALUE_UNITS = ("tokens", "usd")
"""What value escalation divides the gain by: expected output tokens, or expected dollars."""

GENERIC_PRIORS: dict[str, tuple[float, float, float]] = {
    "direct": (0.80, 0.60, 0.40),
    "cod": (0.85, 0.70, 0.50),
    "concise-cot": (0.87, 0.72, 0.55),
    "budget-cot": (0.87, 0.72, 0.55),
    "cot": (0.90, 0.75, 0.60),
}
"""P(correct) on (easy, medium, hard) questions by strategy kind, assumed for a model with no
measured prior: a capable instruction-tuned model on short reasoning questions. These are
assumptions, not measurements; give your arms measured ones in ``[escalation.value_priors]``
or train a router. An ``sc`` arm is assumed 0.05 above its sample prompt's kind."""

SC_GENERIC_BONUS = 0.05

BUILTIN_ARM_PRIORS: dict[str, dict[str, dict[str, float]]] = {
    "SmolLM2-135M-Instruct": {
        "direct": {"easy": 0.30, "medium": 0.20, "hard": 0.20, "output_tokens": 10.7},
        "cot": {"easy": 0.27, "medium": 0.07, "hard": 0.12, "output_tokens": 132.3},
        "sc": {"easy": 0.26, "medium": 0.19, "hard": 0.19, "output_tokens": 90.4},
        "cod": {"easy": 0.13, "medium": 0.13, "hard": 0.13, "output_tokens": 44.2},
        "cod-fewshot": {"easy": 0.20, "medium": 0.20, "hard": 0.20, "output_tokens": 34.9},
        "concise-cot": {"easy": 0.17, "medium": 0.17, "hard": 0.17, "output_tokens": 48.5},
        "budget-cot": {"easy": 0.13, "medium": 0.13, "hard": 0.13, "output_tokens": 122.1},
    },
}
"""Measured priors by model id, then strategy name: ``easy``/``medium``/``hard`` P(correct) (by
the heuristic classifier's label) and ``output_tokens`` (mean per attempt). The
SmolLM2-135M-Instruct entries are the embedded default's (Q4_1, the default strategies) on
the built-in suite: ``direct``, ``cot`` and ``sc`` fitted on all 210 items of seed 0
(``benchmarks/escalation.py --fit-priors``: per difficulty, shrunk toward the arm's overall
accuracy by 10 pseudo-items); the other strategies are one accuracy for every difficulty,
from the 30-item strategies run (benchmarks/README.md, "Strategies on the embedded model")."""


@dataclass(frozen=True)
class ArmEstimate:
    """What value escalation predicts for one planned arm on one question."""

    p_correct: float
    """P(the arm's answer is correct): the router's where it knows the arm, else ``prior``."""
    prior: float
    """The arm's prior P(correct) (:func:`arm_prior`), router or not."""
    source: str
    """Where ``p_correct`` came from: ``router``, ``config`` (``escalation.value_priors``),
    ``builtin`` (measured for the model) or ``generic`` (assumed for the strategy kind)."""
    output_tokens: float
    """Expected output tokens: the prior's mean when it has one, else the worst case."""
    cost_usd: float
    """Expected dollars: the prompt (times samples) and ``output_tokens``, at the tier's prices."""


def _difficulty_key(difficulty: str | None) -> str:
    return difficulty if difficulty in ("easy", "medium", "hard") else "medium"


def arm_prior(arm: Mapping[str, Any], difficulty: str | None, config: Config) -> tuple[float, float | None, str]:
    """(P(correct), mean output tokens or ``None``, source) of a planned ``arm`` on a question of
    ``difficulty`` without a router: ``escalation.value_priors`` (by the arm's full name, then
    ``tier:strategy``), else the built-in prior measured for the tier's model and the strategy
    (:data:`BUILTIN_ARM_PRIORS`), else the generic assumption for the strategy's kind
    (:data:`GENERIC_PRIORS`)."""
    level = _difficulty_key(difficulty)
    configured = config.escalation.value_priors
    for key in (arm["name"], f"{arm['tier']}:{arm['strategy']}"):
        if key in configured:
            prior = configured[key]
            return float(getattr(prior, level)), prior.output_tokens, "config"
    measured = BUILTIN_ARM_PRIORS.get(str(arm.get("model")), {}).get(str(arm["strategy"]))
    if measured is not None:
        return float(measured[level]), measured.get("output_tokens"), "builtin"
    strategy = config.strategies[arm["strategy"]]
    kind = strategy.sample_prompt if strategy.kind in ("sc", "bon") else strategy.kind
    p = GENERIC_PRIORS[kind][("easy", "medium", "hard").index(level)]
    if strategy.kind == "sc":
        p = min(0.99, p + SC_GENERIC_BONUS)
    return p, None, "generic"


def router_predictions(router: Any, question: str) -> dict[str, float]:
    """The trained router's ``{arm: P(correct)}`` for ``question`` (``{}`` without a router)."""
    if router is None:
        return {}
    return {str(k): float(v) for k, v in router.predict_one(question).items()}


def estimate_arms(
    arms: Sequence[Mapping[str, Any]], difficulty: str | None, config: Config,
    router_p: Mapping[str, float] | None = None,
) -> dict[str, ArmEstimate]:
    """Each planned arm's :class:`ArmEstimate`: P(correct) from ``router_p`` (the router's
    predictions for this question) for the arms it knows, else :func:`arm_prior`; expected output
    tokens from the prior's logged mean, else the worst case (the arm's cap × its samples)."""
    router_p = router_p or {}
    out: dict[str, ArmEstimate] = {}
    for arm in arms:
        prior, tokens, source = arm_prior(arm, difficulty, config)
        p = prior
        if arm["name"] in router_p:
            p, source = float(router_p[arm["name"]]), "router"
        samples = int(arm.get("samples") or 1)
        worst = int(arm["max_tokens"]) * samples
        expected = min(float(tokens), float(worst)) if tokens else float(worst)
        tier = config.tiers[arm["tier"]]
        usd = float(cost_usd(tier, arm_input_bound(arm), int(round(expected))))
        out[arm["name"]] = ArmEstimate(p_correct=min(max(p, 0.0), 1.0), prior=prior, source=source,
                                       output_tokens=expected, cost_usd=usd)
    return out


def value_unit(estimates: Mapping[str, ArmEstimate], names: Sequence[str]) -> str:
    """``"usd"`` when every one of ``names`` has a positive expected dollar cost (a ladder of
    priced remote tiers), else ``"tokens"`` (a free local tier's dollars say nothing of its cost)."""
    costs = [estimates[n].cost_usd for n in names if n in estimates]
    return "usd" if costs and all(c > 0 for c in costs) else "tokens"


def best_answer(attempts: Sequence[Mapping[str, Any]]) -> int | None:
    """The index of the answer in hand: the one :func:`final_choice` would return if the
    request stopped now without an accepted answer, i.e. the most confident attempt with an
    answer, complete replies before those cut at their cap, later attempts winning ties;
    ``None`` when no attempt has an answer."""

    def rank(a: Mapping[str, Any]) -> tuple[bool, float]:
        return (not a.get("truncated"), float(a.get("confidence") or 0.0))

    best: int | None = None
    for i, a in enumerate(attempts):
        if a.get("error") or a.get("answer") is None:
            continue
        if best is None or rank(a) >= rank(attempts[best]):
            best = i
    return best


def answer_in_hand(attempts: Sequence[Mapping[str, Any]]) -> float:
    """P(correct) of the answer in hand (:func:`best_answer`): its confidence, 0 without one."""
    i = best_answer(attempts)
    return 0.0 if i is None else float(attempts[i].get("confidence") or 0.0)


def next_arm_by_value(
    arms: Sequence[Mapping[str, Any]],
    p_now: float,
    p_correct: Mapping[str, float],
    cost: Mapping[str, float],
    budget: BudgetConfig,
    spent: Spend,
    down_tiers: frozenset[str] | set[str] = frozenset(),
    *,
    exclude: frozenset[int] | set[int] = frozenset(),
    extra: Sequence[tuple[Any, ...]] = (),
    unit: str = "tokens",
    min_gain: float = 0.0,
) -> tuple[int | None, list[dict[str, Any]]]:
    """The arm with the best predicted gain in P(correct) per unit of expected cost, among the
    arms not in ``exclude`` (tried), not on a failed tier and fitting the budget (:func:`arm_fits`
    with ``extra`` as there); ``None`` when no such arm has a positive gain.

    gain = ``p_correct[arm]`` − ``p_now`` (P(correct) of the answer in hand); value = gain /
    ``cost[arm]`` (expected output tokens, or dollars with ``unit="usd"``). Only arms whose gain
    is positive and at least ``min_gain`` are chosen; equal values go to the cheaper arm, then
    to the one earlier in ``arms``. An arm without a ``p_correct`` entry is not chosen.

    Returns the chosen index and the ranking: one JSON-plain dict per untried arm (``arm``,
    ``index``, ``p_correct``, ``gain``, ``cost``, ``value``, ``skipped``: ``None`` or why it was
    passed over), the chosen arm first, then the other candidates by value, then the rest."""
    if unit not in VALUE_UNITS:
        raise ValueError(f"unit must be one of {', '.join(VALUE_UNITS)}, got {unit!r}")
    rows: list[dict[str, Any]] = []
    for i, arm in enumerate(arms):
        if i in exclude:
            continue
        name = arm["name"]
        p = p_correct.get(name)
        c = float(cost.get(name, 0.0))
        gain = None if p is None else float(p) - float(p_now)
        value = None
        if gain is not None:
            value = float("inf") if c <= 0 else gain / c
        row = {"arm": name, "index": i, "p_correct": None if p is None else round(float(p), 4),
               "gain": None if gain is None else round(gain, 4), "cost": round(c, 9 if unit == "usd" else 1),
               "value": value, "skipped": None}
        if arm["tier"] in down_tiers:
            row["skipped"] = f"tier {arm['tier']!r} failed earlier in this request"
        elif p is None:
            row["skipped"] = "no P(correct) estimate"
        elif gain is not None and gain <= 0:
            row["skipped"] = f"no gain: P(correct) {p:.2f} does not beat {p_now:.2f} in hand"
        elif gain is not None and gain < min_gain:
            row["skipped"] = f"gain +{gain:.3f} below the {min_gain:.2f} worth a call"
        rows.append(row)

    def order(r: dict[str, Any]) -> tuple[float, float, int]:  # values equal to 12 places tie
        v = r["value"]
        return (float("inf") if v is None else -round(v, 12) if v != float("inf") else float("-inf"),
                r["cost"], r["index"])

    chosen: int | None = None
    for r in sorted((r for r in rows if r["skipped"] is None), key=order):
        why = arm_fits(arms[r["index"]], budget, spent, extra)
        if why is not None:
            r["skipped"] = f"over budget ({why})"
            continue
        chosen = r["index"]
        break
    head = [r for r in rows if r["index"] == chosen]
    rest = sorted((r for r in rows if r["index"] != chosen), key=lambda r: (r["gain"] is None or r["gain"] <= 0, order(r)))
    ranking = head + rest
    for r in ranking:  # JSON-plain: gain per 1k tokens or per dollar (None: unknown, or a free arm)
        v = r["value"]
        if v is None or v == float("inf"):
            r["value"] = None
        else:
            r["value"] = round(v * 1000, 4) if unit == "tokens" else round(v, 4)
    return chosen, ranking


def _price(row: Mapping[str, Any], unit: str) -> str:
    if unit == "usd":
        per = "" if row["value"] is None else f" ({row['value']:.0f} per $)"
        return f"${row['cost']:.6f}{per}"
    per = "" if row["value"] is None else f" ({row['value']:.2f} per 1k)"
    return f"{row['cost']:.0f} tokens{per}"


def value_reason(chosen: int | None, ranking: Sequence[Mapping[str, Any]], p_now: float, unit: str = "tokens") -> str:
    """A one-line account of a :func:`next_arm_by_value` decision, for ``decision_reason``."""

    def why(r: Mapping[str, Any]) -> str:
        return str(r["skipped"] or "")

    if chosen is None:
        over = [r for r in ranking if why(r).startswith("over budget")]
        if over:
            r = over[0]
            need = why(r).removeprefix("over budget (").removesuffix(")")
            return f"budget exhausted: value: {r['arm']} (+{r['gain']:.2f} P(correct)) does not fit: {need}"
        small = [r for r in ranking if why(r).startswith("gain +")]
        if small:
            r = max(small, key=lambda r: r["gain"])
            return (f"value: no arm gains enough over the answer in hand (P(correct) {p_now:.2f}): best "
                    f"{r['arm']} {why(r)}")
        known = [r for r in ranking if r["p_correct"] is not None and not why(r).startswith("tier ")]
        if not known:
            return "value: no untried arm left to escalate to"
        best = max(known, key=lambda r: r["p_correct"])
        return (f"value: no untried arm is predicted to beat the answer in hand (P(correct) {p_now:.2f}; "
                f"best {best['arm']} {best['p_correct']:.2f})")
    top = ranking[0]
    text = f"value: {top['arm']} +{top['gain']:.2f} P(correct) for {_price(top, unit)}"
    runner_up = next((r for r in ranking[1:] if r["skipped"] is None), None)
    if runner_up is None:
        return text + "; no other arm that fits is predicted to gain enough"
    return f"{text} beats {runner_up['arm']} +{runner_up['gain']:.2f} for {_price(runner_up, unit)}"


@dataclass
class ValueChoice:
    """A value-escalation decision: the chosen index (or ``None``), the ranking of
    :func:`next_arm_by_value`, the P(correct) in hand, the unit and the one-line reason."""

    index: int | None
    ranking: list[dict[str, Any]]
    p_now: float
    unit: str
    reason: str

    @property
    def over_budget(self) -> list[str]:
        """Arms predicted to gain that were passed over because they do not fit the budget."""
        return [r["arm"] for r in self.ranking if str(r["skipped"] or "").startswith("over budget")]

    def skipped(self) -> list[str]:
        """``"arm: why"`` for each arm passed over for its tier or the budget (the ``skipped`` log)."""
        out = []
        for r in self.ranking:
            why = str(r["skipped"] or "")
            if why.startswith("over budget") or why.startswith("tier "):
                out.append(f"{r['arm']}: {why}")
        return out


def value_escalation(
    arms: Sequence[Mapping[str, Any]],
    attempts: Sequence[Mapping[str, Any]],
    difficulty: str | None,
    config: Config,
    budget: BudgetConfig,
    spent: Spend,
    down_tiers: frozenset[str] | set[str] = frozenset(),
    *,
    tried: frozenset[int] | set[int] = frozenset(),
    extra: Sequence[tuple[Any, ...]] = (),
    router_p: Mapping[str, float] | None = None,
) -> ValueChoice:
    """Where ``escalation.next = "value"`` escalates after ``attempts``.

    The fixed ladder goes to the next rung whatever it costs and however little it is likely
    to add; value escalation goes to the untried arm (the ladder's and
    ``escalation.value_arms``) with the best predicted gain in P(correct) per unit of expected
    cost, and stops when no arm is predicted to gain at least ``escalation.value_min_gain``
    over the answer in hand:

    - P(answer in hand correct): :func:`answer_in_hand`, the calibrated confidence of the
      answer the request would return now (0 when no attempt has an answer);
    - P(arm correct): the trained router's prediction for this question where a router is
      configured and knows the arm (``router_p``), else the arm's prior for the classifier's
      difficulty label (:func:`arm_prior`: ``escalation.value_priors``, else the priors
      measured for the embedded model, else generic assumptions per strategy kind); for arms
      on the tier of the answer in hand, scaled by that answer's confidence
      (:func:`same_tier_estimates`);
    - expected cost: the prior's logged mean output tokens, else the worst case (the arm's cap
      × its samples); in dollars (:func:`value_unit`) only when every untried arm is priced.

    Then :func:`next_arm_by_value` over the arms that are untried, not on a failed tier and fit
    the budget. The result carries the ranking (each row with the ``source`` of its P(correct))
    and a one-line reason for ``decision_reason``."""
    estimates = estimate_arms(arms, difficulty, config, router_p)
    p_correct = {n: e.p_correct for n, e in estimates.items()}
    sources = {n: e.source for n, e in estimates.items()}
    hand = best_answer(attempts)
    p_now = answer_in_hand(attempts)
    if hand is not None:
        scaled = same_tier_estimates(arms, estimates, attempts[hand], p_now)
        p_correct.update(scaled)
        for n in scaled:
            sources[n] += f", scaled by the {attempts[hand]['arm']} answer's confidence"
    open_names = [a["name"] for i, a in enumerate(arms) if i not in tried and a["tier"] not in down_tiers]
    unit = value_unit(estimates, open_names)
    cost = {n: (e.cost_usd if unit == "usd" else e.output_tokens) for n, e in estimates.items()}
    index, ranking = next_arm_by_value(
        arms, p_now, p_correct, cost, budget, spent, down_tiers,
        exclude=tried, extra=extra, unit=unit, min_gain=config.escalation.value_min_gain,
    )
    for r in ranking:
        r["source"] = sources[r["arm"]]
    return ValueChoice(index, ranking, p_now, unit, value_reason(index, ranking, p_now, unit))


def same_tier_estimates(
    arms: Sequence[Mapping[str, Any]], estimates: Mapping[str, ArmEstimate], hand: Mapping[str, Any], p_now: float
) -> dict[str, float]:
    """P(correct) of the arms on the tier of the answer in hand (``hand``, an attempt) given that
    answer's calibrated confidence ``p_now``: ``p_now`` × P(arm) / P(hand's arm), at most 1, with
    both P from the router where it knows both arms, else both from their priors.

    One model's answers to one question stand or fall together: when its answer in hand is
    unsure, its other prompts are about as unsure, scaled by how much better the arm does on
    average. The arm's unconditioned P(correct) would promise a gain that the same model rarely
    delivers on a question it has just shown it does not know. Arms on other tiers (other
    models) keep their unconditioned P(correct). Returns ``{arm: P(correct)}`` for the arms scaled."""
    base = estimates.get(str(hand.get("arm")))
    if base is None:
        return {}
    out: dict[str, float] = {}
    for arm in arms:
        name = arm["name"]
        e = estimates.get(name)
        if e is None or arm["tier"] != hand.get("tier") or name == hand.get("arm"):
            continue
        both_routed = e.source == "router" and base.source == "router"
        num, den = (e.p_correct, base.p_correct) if both_routed else (e.prior, base.prior)
        if den > 0:
            out[name] = min(1.0, p_now * num / den)
    return out
