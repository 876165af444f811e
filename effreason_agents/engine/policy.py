"""Pure routing decisions: where on the ladder to start, whether to escalate, what next.

These functions see only plain data (the planned arms, what was spent, the
attempts so far), so they are unit-tested without any model.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping, Sequence

from effreason_agents.core.budget import Spend, fits
from effreason_agents.config import BudgetConfig, Difficulty

# Errors after which the tier is skipped for the rest of the request.
TIER_DOWN_KINDS = frozenset(
    {"unreachable", "unavailable", "timeout", "no_key", "auth", "rate_limited", "server_error"}
)


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


def arm_fits(
    arm: Mapping[str, Any], budget: BudgetConfig, spent: Spend, extra: Sequence[tuple[Any, Spend]] = ()
) -> str | None:
    """``None`` when the planned arm's worst case fits the budget (and every ``extra``
    (limits, spent) pair, e.g. what is left of the thread's and the user's budgets),
    otherwise why not."""
    samples = int(arm.get("samples") or 1)  # an sc arm may draw this many samples, each with the prompt
    for limits, used in ((budget, spent), *extra):
        why = fits(limits, used, int(arm["prompt_tokens"]) * samples, int(arm["max_tokens"]) * samples,
                   Decimal(arm["worst_case_cost_usd"]))
        if why is not None:
            return why
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
    extra: Sequence[tuple[Any, Spend]] = (),
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


def final_choice(attempts: Sequence[Mapping[str, Any]], threshold: float) -> tuple[int | None, str]:
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
            return i, "answered"
    best: int | None = None

    def rank(a: Mapping[str, Any]) -> tuple[bool, float]:  # complete replies first, then confidence
        return (not a.get("truncated"), a.get("confidence") or 0.0)

    for i, a in enumerate(attempts):
        if a.get("error") or a.get("answer") is None:
            continue
        if best is None or rank(a) >= rank(attempts[best]):
            best = i
    return (best, "low_confidence") if best is not None else (None, "failed")
