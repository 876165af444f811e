"""A router whose share of costlier calls stays on target when traffic shifts, and what a
router did on recent traffic.

A router's policy is calibrated offline (``effreason router calibrate``): τ or λ chosen so
that, on the logged prompts, a target share of calls goes to the costlier arms. When the
traffic changes (harder questions, another user population) the same τ sends a
different share. ``[router] target_share = 0.2`` keeps the *share* instead of τ:

* **the score** of a query is ``max(P(correct) of the arms above the cheapest) −
  P(correct) of the cheapest arm`` (:func:`router_score`). With two arms this is
  RouteLLM's ``P(strong right) − P(weak right)``; with more arms it scores the choice
  between the cheapest arm and the rest. The cheapest arm is the candidate with the
  lowest cost (the card's ``policy.costs``, else the caller's; ties: ladder order).
* **the threshold** is the ``(1 − target_share)`` quantile of the last
  ``target_window`` scores (:class:`ShareTracker`, a thread-safe ring buffer kept in
  the process). A query whose score is above it goes to the arms above the cheapest
  one (the artifact's policy then picks among those), any other to the cheapest arm;
  a score equal to the threshold goes up with the probability that brings the
  expected share to the target (ties only matter for routers with few distinct
  scores). The threshold is taken over the scores *before* the query's own, which
  then joins the buffer, so after a shift the share returns to the target within
  about one window.
* **warm-up and restarts**: until :data:`MIN_SCORES` scores are buffered the
  artifact's own policy decides. At start the buffer is seeded from the newest routed
  requests in the outcome store (:func:`seed_scores`): a logged score is reused when
  it came from the same artifact (:func:`artifact_id`), any other routed question is
  scored again by the loaded router, so a restart (or a retrained artifact) does not
  start from nothing. Each process keeps its own buffer; replicas sharing one store
  seed from the same traffic.

:class:`TargetedRouter` wraps a loaded :class:`~effreason_agents.adapters.router.Router`
with its tracker; :func:`effreason_agents.engine.policy.router_choice` routes through
it and logs ``score``, ``threshold``, ``target_share`` and ``artifact`` in the
request's ``features.router``.

:func:`traffic_summary` is what ``effreason router status`` reports: over the routed
requests of a recent window, the share of calls to each arm and tier the router chose,
the mean cost per request and the accuracy where requests were graded, next to the
figures the artifact's card expects.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import random
import re
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from effreason_agents.adapters.store import OutcomeStore, RequestRecord
from effreason_agents.config import Config
from effreason_agents.core.money import format_usd
from effreason_agents.core.text import is_postgres_url, redact_url
from effreason_agents.errors import EffReasonError, RouterError

__all__ = [
    "MIN_SCORES",
    "ShareTracker",
    "TargetedRouter",
    "artifact_id",
    "parse_since",
    "read_card",
    "recent_requests",
    "router_info",
    "router_score",
    "seed_scores",
    "targeted",
    "traffic_summary",
]

logger = logging.getLogger(__name__)

#: Scores buffered before the rolling threshold takes over from the artifact's policy.
MIN_SCORES = 20

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# -- the rolling quantile ------------------------------------------------------------------


class ShareTracker:
    """The last ``window`` router scores and the threshold that sends ``target_share`` of
    them up (to the arms above the cheapest one). Thread-safe.

    :meth:`decide` judges one score against the threshold of the scores seen *before*
    it, then adds it. The threshold is the ``(1 − target_share)`` quantile: with ``n``
    buffered scores and ``k = target_share · n``, the value with ``⌊k⌋`` scores above
    it; a new score above it goes up, one equal to it goes up with probability
    ``(k − above) / equal`` (seeded, so a run is reproducible). ``target_share`` 0 never
    sends a query up, 1 always does.
    """

    def __init__(self, target_share: float, window: int = 500, *, min_scores: int = MIN_SCORES, seed: int = 0) -> None:
        share = float(target_share)
        if not 0.0 <= share <= 1.0 or not math.isfinite(share):
            raise RouterError(f"target_share must lie in [0, 1], got {target_share!r}")
        if int(window) < 1 or int(min_scores) < 1:
            raise RouterError(f"window and min_scores must be at least 1 (got {window!r}, {min_scores!r})")
        self.target_share = share
        self.window = int(window)
        self.min_scores = min(int(min_scores), self.window)
        self._scores: deque[float] = deque()
        self._sorted: list[float] = []
        self._decisions: deque[bool] = deque(maxlen=self.window)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._scores)

    def __repr__(self) -> str:
        return f"ShareTracker(target_share={self.target_share}, window={self.window}, scores={len(self)})"

    def _push(self, score: float) -> None:
        if len(self._scores) == self.window:
            old = self._scores.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._scores.append(score)
        bisect.insort(self._sorted, score)

    def _threshold(self) -> tuple[float, float] | None:
        """(threshold, probability that a score equal to it goes up), or ``None`` while warming up."""
        s = self._sorted
        n = len(s)
        if n < self.min_scores:
            return None
        if self.target_share <= 0.0:
            return math.inf, 0.0
        if self.target_share >= 1.0:
            return -math.inf, 1.0
        k = self.target_share * n
        above = int(math.floor(k))
        if above >= n:
            return -math.inf, 1.0
        t = s[n - above - 1]
        lo, hi = bisect.bisect_left(s, t), bisect.bisect_right(s, t)
        n_above, n_equal = n - hi, hi - lo
        return t, min(1.0, max(0.0, (k - n_above) / n_equal))

    def extend(self, scores: Sequence[float]) -> int:
        """Add past scores (oldest first), e.g. from the outcome store; non-finite ones are
        skipped. Returns how many were added."""
        added = 0
        with self._lock:
            for x in scores:
                x = float(x)
                if math.isfinite(x):
                    self._push(x)
                    added += 1
        return added

    def threshold(self) -> float | None:
        """The threshold the next score is judged by (``None`` while warming up)."""
        with self._lock:
            got = self._threshold()
        return None if got is None else got[0]

    def decide(self, score: float) -> tuple[bool | None, float | None]:
        """Whether ``score`` goes up (``None`` while warming up: the caller's fallback
        decides) and the threshold it was judged by; then ``score`` joins the buffer. A
        non-finite score is judged (it cannot go up) but not buffered."""
        x = float(score)
        with self._lock:
            got = self._threshold()
            if got is None:
                up: bool | None = None
            else:
                t, p_tie = got
                up = bool(x > t or (x == t and p_tie > 0.0 and self._rng.random() < p_tie))
                self._decisions.append(up)
            if math.isfinite(x):
                self._push(x)
        return up, None if got is None else got[0]

    def realized_share(self) -> float | None:
        """The share of the last ``window`` tracked decisions that went up (``None`` before any)."""
        with self._lock:
            if not self._decisions:
                return None
            return sum(self._decisions) / len(self._decisions)

    def snapshot(self) -> dict[str, Any]:
        """``{"target_share", "window", "scores", "threshold", "realized_share"}`` (JSON-plain)."""
        t = self.threshold()
        return {"target_share": self.target_share, "window": self.window, "scores": len(self),
                "threshold": t if t is not None and math.isfinite(t) else None,
                "realized_share": self.realized_share()}


# -- scores --------------------------------------------------------------------------------


def router_score(probs: Mapping[str, float], costs: Mapping[str, float], candidates: Sequence[str]
                 ) -> tuple[float, str, list[str]]:
    """``(score, cheapest arm, the other arms)`` of a query among ``candidates`` (at least
    two): the score is the best P(correct) of the other arms minus the cheapest arm's.
    The cheapest arm has the lowest cost (a missing cost counts as 0; ties: candidate order)."""
    names = list(candidates)
    if len(names) < 2:
        raise RouterError("a router score needs at least two candidate arms")
    missing = [a for a in names if a not in probs]
    if missing:
        raise RouterError(f"no predicted P(correct) for arm{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    order = {a: i for i, a in enumerate(names)}
    cheap = min(names, key=lambda a: (float(costs.get(a) or 0.0), order[a]))
    rest = [a for a in names if a != cheap]
    return max(float(probs[a]) for a in rest) - float(probs[cheap]), cheap, rest


def artifact_id(card: Mapping[str, Any]) -> str:
    """A short id of a router artifact's model (kind, arms, features and training record;
    not its policy, which does not change the scores): 12 hex digits."""
    blob = json.dumps({k: card.get(k) for k in ("kind", "arms", "features", "training")}, sort_keys=True,
                      default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class TargetedRouter:
    """A loaded router with a :class:`ShareTracker`: :meth:`route` sends ``target_share``
    of queries to the arms above the cheapest one. Prediction, the card and
    :meth:`choose` are the wrapped router's."""

    def __init__(self, router: Any, tracker: ShareTracker) -> None:
        self.router = router
        self.target = tracker
        self.artifact = artifact_id(router.card)

    def __repr__(self) -> str:
        return f"TargetedRouter({self.router!r}, {self.target!r})"

    @property
    def arms(self) -> list[str]:
        return list(self.router.arms)

    @property
    def card(self) -> dict[str, Any]:
        return self.router.card

    @property
    def policy(self) -> dict[str, Any]:
        return self.router.policy

    @property
    def kind(self) -> str:
        return self.router.kind

    @property
    def path(self) -> Path | None:
        return self.router.path

    def predict_one(self, text: str) -> dict[str, float]:
        return self.router.predict_one(text)

    def predict(self, prompts: Sequence[str]) -> Any:
        return self.router.predict(prompts)

    def choose(self, probs: Mapping[str, float], costs: Mapping[str, float] | None = None, **kw: Any) -> tuple[str, str]:
        return self.router.choose(probs, costs, **kw)

    def route(self, probs: Mapping[str, float], costs: Mapping[str, float], candidates: Sequence[str]
              ) -> tuple[str, str, dict[str, Any]]:
        """``(arm, reason, logged)``: the arm for a query with predictions ``probs`` among
        ``candidates``, and what to log with it (``score``, ``threshold``,
        ``target_share``, ``artifact``). With one candidate there is nothing to track."""
        names = list(candidates)
        if len(names) < 2:
            arm, why = self.router.choose(probs, costs, candidates=names)
            return arm, why, {}
        score, cheap, rest = router_score(probs, costs, names)
        up, t = self.target.decide(score)
        share = self.target.target_share
        logged = {"score": round(score, 6), "threshold": round(t, 6) if t is not None and math.isfinite(t) else None,
                  "target_share": share, "artifact": self.artifact}
        if up is None:
            arm, why = self.router.choose(probs, costs, candidates=names)
            return arm, (f"target share {share:.0%} warming up ({len(self.target)} of {self.target.min_scores} "
                         f"scores), the artifact's policy: {why}"), logged
        where = "above" if up else "not above"
        shown = f"{t:+.3f}" if t is not None and math.isfinite(t) else str(t)
        head = f"score {score:+.3f} {where} the rolling threshold {shown} (target {share:.0%} above {cheap})"
        if not up:
            return cheap, f"{head}: the cheapest arm {cheap}", logged
        if len(rest) == 1:
            return rest[0], f"{head}: {rest[0]}", logged
        arm, why = self.router.choose(probs, costs, candidates=rest)
        return arm, f"{head}: {why}", logged


# -- reading routed traffic ----------------------------------------------------------------


def parse_since(text: str) -> timedelta:
    """A window such as ``30m``, ``12h``, ``7d`` (units ``s``, ``m``, ``h``, ``d``, ``w``) as a
    :class:`~datetime.timedelta`; :class:`RouterError` for anything else."""
    m = _SINCE.match(str(text))
    value = float(m.group(1)) if m else 0.0
    if m is None or value <= 0:
        raise RouterError(f"--since must be a positive number and a unit: s, m, h, d or w (e.g. 30m, 12h, 7d); "
                          f"got {text!r}")
    try:
        window = timedelta(**{_UNITS[m.group(2).lower()]: value})
    except OverflowError:
        window = timedelta.max
    if window > timedelta(days=36525):
        raise RouterError(f"--since {text!r} reaches back more than 100 years; give a shorter window such as 30d")
    return window


def _when(stamp: str) -> datetime:
    """A logged ISO timestamp as an aware datetime (a naive one is UTC)."""
    t = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def router_info(request: RequestRecord) -> dict[str, Any] | None:
    """What the router logged for a request (``features.router``: ``p_correct``, ``choice``,
    ``reason`` and, with ``target_share``, ``score``, ``threshold``, ``artifact``), or
    ``None`` when the router did not choose its start arm."""
    features = (request.extra or {}).get("features")
    info = features.get("router") if isinstance(features, Mapping) else None
    return dict(info) if isinstance(info, Mapping) and isinstance(info.get("choice"), str) else None


def recent_requests(store: OutcomeStore, *, since: datetime | None = None, routed: int | None = None,
                    max_scan: int = 1_000_000) -> list[RequestRecord]:
    """The newest requests first: every one started at or after ``since``, or (``routed``)
    enough to hold that many routed requests; at most ``max_scan``."""
    limit = 1024
    while True:
        limit = min(limit, max_scan)
        rows = store.recent_requests(limit)
        done = len(rows) < limit or limit >= max_scan
        if since is not None and rows and _when(rows[-1].started_at) < since:
            done = True
        if routed is not None and sum(router_info(r) is not None for r in rows) >= routed:
            done = True
        if done:
            break
        limit *= 4
    if since is not None:
        rows = [r for r in rows if _when(r.started_at) >= since]
    return rows


def _open(target: str | Path) -> OutcomeStore:
    if isinstance(target, str) and not is_postgres_url(target):
        target = Path(target).expanduser()
    return OutcomeStore(target, read_only=True)


def _scoring_arms(router: Any, ladder: Sequence[str] | None) -> tuple[list[str], dict[str, float]]:
    """The arms a query is scored over when re-scoring logged questions, and their costs:
    the router's arms on the ladder (ladder order), costs from the card, else the ladder
    position (the ladder lists arms cheapest first)."""
    names = [a for a in (ladder or router.arms) if a in router.arms]
    card_costs = (router.card.get("policy") or {}).get("costs") or {}
    costs = {a: float(card_costs[a]) if card_costs.get(a) is not None else float(i) for i, a in enumerate(names)}
    return names, costs


def seed_scores(router: Any, store_target: str | Path, *, window: int, ladder: Sequence[str] | None = None
                ) -> list[float]:
    """The router scores of the newest ``window`` routed requests in the outcome store,
    oldest first: the logged ``score`` where the same artifact logged it, else the
    question scored again by ``router``. Empty when the store does not exist yet."""
    if not is_postgres_url(str(store_target)) and not Path(store_target).expanduser().is_file():
        return []
    with _open(store_target) as store:
        rows = recent_requests(store, routed=window, max_scan=max(50 * window, 10_000))
    me = artifact_id(router.card)
    picked = [(r, info) for r in rows if (info := router_info(r)) is not None][:window]
    scores: list[float | None] = []
    again: list[tuple[int, str]] = []
    for i, (r, info) in enumerate(picked):
        score = info.get("score")
        if info.get("artifact") == me and isinstance(score, (int, float)) and math.isfinite(score):
            scores.append(float(score))
        else:
            scores.append(None)
            again.append((i, r.question))
    if again:
        names, costs = _scoring_arms(router, ladder)
        if len(names) >= 2:
            probs = router.predict([q for _, q in again])
            cols = [list(router.arms).index(a) for a in names]
            for (i, _), row in zip(again, probs):
                scores[i] = router_score({a: float(row[j]) for a, j in zip(names, cols)}, costs, names)[0]
    return [s for s in reversed(scores) if s is not None]


def targeted(router: Any, config: Config) -> TargetedRouter:
    """``router`` with a :class:`ShareTracker` for ``config.router.target_share`` over
    ``config.router.target_window`` scores, seeded from the configured outcome store
    (a store that cannot be read is logged and the tracker starts empty)."""
    share = config.router.target_share
    if share is None:
        raise RouterError("targeted() needs [router] target_share in the configuration")
    tracker = ShareTracker(share, config.router.target_window)
    wrapped = TargetedRouter(router, tracker)
    try:
        seeded = seed_scores(router, config.store.target(), window=tracker.window,
                             ladder=[a.name for a in config.ladder])
    except (EffReasonError, OSError, ValueError) as exc:
        logger.warning("router target_share: not seeded from the outcome store (%s); starting empty", exc)
        seeded = []
    tracker.extend(seeded)
    logger.info("router target_share %.3g: %d recent scores seeded, threshold %s", share, len(seeded),
                tracker.threshold())
    return wrapped


# -- status --------------------------------------------------------------------------------


def read_card(path: str | Path) -> dict[str, Any]:
    """The ``card.json`` of a router artifact directory (without loading the model), with
    :class:`RouterError` saying what to do when it is missing or unreadable."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RouterError(f"router artifact {str(root)!r} not found; give the directory written by "
                          "effreason router train (or set [router] artifact)")
    card_path = root / "card.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RouterError(f"{root} holds no card.json, so it is not a router artifact; give the directory written "
                          "by effreason router train") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RouterError(f"corrupted router card {card_path}: {exc}; retrain with effreason router train") from None
    if not isinstance(card, dict) or card.get("format") != "effreason-router":
        raise RouterError(f"{card_path} is not an effreason router card (format must be 'effreason-router')")
    return card


def _tier(arm: str, tiers: Mapping[str, str]) -> str:
    return tiers.get(arm) or arm.split(":", 1)[0]


def _shares(counts: Mapping[str, int], n: int) -> dict[str, float]:
    return {k: v / n for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))} if n else {}


def _cheapest(card: Mapping[str, Any]) -> str | None:
    arms = list(card.get("arms") or [])
    costs = (card.get("policy") or {}).get("costs") or {}
    if not arms:
        return None
    order = {a: i for i, a in enumerate(arms)}
    return min(arms, key=lambda a: (float(costs[a]) if costs.get(a) is not None else math.inf, order[a]))


def traffic_summary(card: Mapping[str, Any], store_target: str | Path, *, since: timedelta,
                    now: datetime | None = None, tiers: Mapping[str, str] | None = None,
                    target_share: float | None = None) -> dict[str, Any]:
    """What the router did on the requests of the last ``since``, next to what its card expects.

    Over the routed requests (those whose ``features.router`` holds the router's choice):
    ``share`` of calls the router sent to each arm, ``tier_share`` per tier (``tiers``
    maps arm → tier, default the arm name's part before ``:``), ``above_cheapest`` (the
    share sent above the card's cheapest arm, the quantity ``target_share`` keeps),
    ``mean_cost_usd`` per request (every attempt, escalations included),
    ``escalated`` (share of requests that escalated), ``accuracy`` over the ``graded``
    requests (those with a benchmark grade). ``expected`` is the card's policy
    (``expected`` accuracy, mean cost in ``cost_unit``, share per arm and tier, all for
    the start arm alone, before escalation), ``threshold`` the newest logged rolling
    threshold. ``routed`` is 0 (with a note) when no request in the window was routed.
    Raises :class:`RouterError` when the store cannot be read.
    """
    now = now or datetime.now(timezone.utc)
    start = now - since
    tiers = dict(tiers or {})
    shown = redact_url(store_target) if isinstance(store_target, str) else str(store_target)
    if not is_postgres_url(str(store_target)) and not Path(store_target).expanduser().is_file():
        raise RouterError(f"no outcome store at {shown}; requests are logged there once the graph has answered "
                          "some (check [store] path in the configuration)")
    try:
        with _open(store_target) as store:
            rows = recent_requests(store, since=start)
            routed = [(r, info) for r in rows if (info := router_info(r)) is not None]
            ids = {r.request_id for r, _ in routed}
            graded = {b.request_id: bool(b.correct) for b in store.bench_results() if b.request_id in ids}
    except EffReasonError as exc:
        raise RouterError(f"cannot read the outcome store {shown}: {exc}") from exc
    policy = dict(card.get("policy") or {})
    expected = dict(policy.get("expected") or {})
    exp_share = {str(a): float(x) for a, x in (expected.get("share") or {}).items() if isinstance(x, (int, float))}
    exp_tier: dict[str, float] = {}
    for a, x in exp_share.items():
        exp_tier[_tier(a, tiers)] = exp_tier.get(_tier(a, tiers), 0.0) + x
    me = artifact_id(card)
    cheap = _cheapest(card)
    n = len(routed)
    arm_counts: dict[str, int] = {}
    tier_counts: dict[str, int] = {}
    total = Decimal(0)
    other = 0
    threshold = None
    for r, info in routed:
        arm = str(info["choice"])
        arm_counts[arm] = arm_counts.get(arm, 0) + 1
        tier_counts[_tier(arm, tiers)] = tier_counts.get(_tier(arm, tiers), 0) + 1
        try:
            total += Decimal(r.total_cost_usd)
        except InvalidOperation:
            raise RouterError(f"request {r.request_id}: total_cost_usd {r.total_cost_usd!r} is not a number") from None
        if info.get("artifact") not in (None, me):
            other += 1
        if threshold is None and isinstance(info.get("threshold"), (int, float)):
            threshold = float(info["threshold"])
    notes: list[str] = []
    if n == 0:
        notes.append(f"no routed traffic in the last {_human(since)}: {len(rows)} request"
                     f"{'' if len(rows) == 1 else 's'} logged, none started by the router"
                     + ("" if rows else " (nothing logged in the window)"))
    if other:
        notes.append(f"{other} routed request{'' if other == 1 else 's'} came from another router artifact")
    if expected and policy.get("cost_unit") not in (None, "usd"):
        notes.append(f"the card's expected mean cost is in {policy.get('cost_unit')}, not USD")
    if expected:
        notes.append("the card's expectations are for the start arm alone; realized cost and accuracy include "
                     "escalations")
    return {
        "artifact_id": me,
        "store": shown,
        "since": _human(since),
        "from": start.isoformat(timespec="seconds"),
        "until": now.isoformat(timespec="seconds"),
        "requests": len(rows),
        "routed": n,
        "other_artifact": other,
        "share": _shares(arm_counts, n),
        "tier_share": _shares(tier_counts, n),
        "cheapest": cheap,
        "above_cheapest": (n - arm_counts.get(cheap, 0)) / n if n and cheap is not None else None,
        "mean_cost_usd": format_usd(total / n) if n else None,
        "escalated": sum(r.escalated for r, _ in routed) / n if n else None,
        "graded": len(graded),
        "accuracy": sum(graded.values()) / len(graded) if graded else None,
        "target_share": target_share,
        "threshold": threshold,
        "policy": {"kind": policy.get("kind"), "value": policy.get("tau", policy.get("lambda")),
                   "target": policy.get("target")},
        "expected": {"share": exp_share, "tier_share": exp_tier,
                     "above_cheapest": 1.0 - exp_share.get(cheap, 0.0) if exp_share and cheap is not None else None,
                     "mean_cost": expected.get("mean_cost"),
                     "cost_unit": policy.get("cost_unit"), "accuracy": expected.get("accuracy")},
        "notes": notes,
    }


def _human(since: timedelta) -> str:
    secs = since.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size and secs % size == 0:
            return f"{int(secs // size)}{unit}"
    return f"{secs:g}s"
