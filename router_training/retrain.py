"""``effreason router retrain``: refit a router on recent logs and deploy it only when it is
measurably better than the one in service.

The learning loop, one call of :func:`retrain`:

1. **Data**: the graded outcomes (the outcome store's benchmark results, optionally
   only those of the last ``since``; or a long/wide file), restricted to the deployed
   router's arms so the challenger is a drop-in replacement for the same ladder.
2. **Hold-out**: a deterministic share of the prompts (20% by default) is held out by
   a hash of the prompt text (:func:`holdout_mask`: ``sha256(salt, prompt)`` below
   the share). The partition depends on the prompt alone, so it is the same in every
   retrain: a champion that was itself installed by :func:`retrain` with the same salt
   and share never trained on any held-out prompt, and the comparison is clean. A
   champion trained otherwise (``effreason router train`` fits every prompt) may have
   seen some held-out prompts; its held-out score is then optimistic, which can only
   make a swap *harder* (the bias favours keeping the champion). The result says
   which case applies (``holdout.champion_may_have_seen``).
3. **Challenger**: :func:`router_training.train.train` on the other prompts (model
   kind by cross-validation among ``kinds``, the policy picked for the champion's
   target unless another target is given), written into a hidden sibling directory
   of the artifact.
4. **Comparison** on the same held-out prompts: two arms — APGR of each router's
   score ``P(strong right) − P(weak right)``, and the paired bootstrap of the
   difference (:func:`effreason_agents.evaluation.metrics.bootstrap_apgr`); more than
   two arms, or two equally accurate ones — the area under the cost/accuracy hull of
   the policy's operating points (:func:`compare_hull`, paired bootstrap over the
   same resamples of prompts). The challenger wins only when the lower end of the
   interval of ``challenger − champion`` is above zero.
5. **Swap**: a winner (or the first router, when the directory holds none yet) is
   installed atomically: the previous artifact is renamed to ``DIR.prev`` (an older
   ``DIR.prev`` is dropped), then the challenger's directory is renamed to ``DIR``;
   if that rename fails, the previous one is renamed back. A loser's directory is
   deleted. Any error before the swap leaves ``DIR`` untouched. The installed router
   is the one that was evaluated (trained without the held-out prompts), so what is
   deployed is what was measured, and the next retrain's comparison stays clean.

Run one retrain at a time per artifact directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.adapters.atomic import write_json
from effreason_agents.adapters.router import Router, RouterError
from effreason_agents.errors import EffReasonError, OutcomeDataError, RouterTrainError
from effreason_agents.evaluation.metrics import PGRUndefinedError, bootstrap_apgr, hull_area
from effreason_agents.evaluation.outcomes import OutcomeTable, infer_format, load_long, load_store, load_wide, select_arms

__all__ = [
    "HOLDOUT_SALT",
    "HOLDOUT_SHARE",
    "MIN_HOLDOUT",
    "compare_hull",
    "holdout_mask",
    "retrain",
    "target_from_card",
]

#: Share of prompts held out for the champion/challenger comparison.
HOLDOUT_SHARE = 0.2
#: Salt of the hold-out hash; changing it changes which prompts are held out.
HOLDOUT_SALT = "effreason-retrain-holdout-v1"
#: The fewest held-out prompts a comparison is made on.
MIN_HOLDOUT = 20

_Progress = Callable[[str], None]
_NAMES = {"apgr": "APGR", "hull_area": "policy hull area"}


# -- hold-out --------------------------------------------------------------------------


def holdout_mask(prompts: Sequence[str], share: float = HOLDOUT_SHARE, salt: str = HOLDOUT_SALT) -> np.ndarray:
    """``True`` for the prompts held out: the first 8 bytes of ``sha256(salt NUL prompt)``,
    read as a fraction of 2⁶⁴, below ``share``. Deterministic, per prompt, stable as the
    table grows."""
    share = float(share)
    if not 0.0 < share < 1.0:
        raise RouterTrainError(f"the held-out share must lie strictly between 0 and 1, got {share}")
    cut = share * 2.0**64
    return np.fromiter(
        (int.from_bytes(hashlib.sha256(f"{salt}\0{p}".encode()).digest()[:8], "big") < cut for p in prompts),
        dtype=bool, count=len(prompts))


# -- targets ---------------------------------------------------------------------------

_SHARE_TEXT = re.compile(r"^at most (\d+(?:\.\d+)?)% of calls to tier (['\"])(.*)\2")
_COST_TEXT = re.compile(r"^mean cost per query at most ([^,\s]+)")
_ACC_TEXT = re.compile(r"^accuracy at least ([^,\s]+)")


def target_from_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """The target a router's policy was picked for, as :func:`~router_training.train.train`'s
    keyword arguments (``max_share``, ``max_mean_cost``, ``min_accuracy``): the card's
    ``policy.target_spec`` (written by :func:`retrain`), else read back from its
    ``policy.target`` text (written by ``router train`` / ``calibrate``, where a share is
    rounded to a whole percent); all ``None`` for "the most accurate"."""
    policy = card.get("policy") or {}
    out: dict[str, Any] = {"max_share": None, "max_mean_cost": None, "min_accuracy": None}
    spec = policy.get("target_spec")
    if isinstance(spec, Mapping):
        share = spec.get("max_share")
        if isinstance(share, (list, tuple)) and len(share) == 2:
            out["max_share"] = (str(share[0]), float(share[1]))
        for key in ("max_mean_cost", "min_accuracy"):
            if isinstance(spec.get(key), (int, float)):
                out[key] = float(spec[key])
        return out
    text = str(policy.get("target") or "")
    try:
        if m := _SHARE_TEXT.match(text):
            out["max_share"] = (m.group(3), float(m.group(1)) / 100.0)
        elif m := _COST_TEXT.match(text):
            out["max_mean_cost"] = float(m.group(1))
        elif m := _ACC_TEXT.match(text):
            out["min_accuracy"] = float(m.group(1))
    except ValueError:  # a card's free-text target that does not parse: no target, the default policy
        return out
    return out


def _target_spec(target: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in target.items() if v is not None}


# -- comparing -------------------------------------------------------------------------


def _pair(table: OutcomeTable, probs: np.ndarray, weak: str, strong: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weak right, strong right, router score) over the prompts where both arms have a label."""
    iw, js = table.arms.index(weak), table.arms.index(strong)
    both = np.isfinite(table.correct[:, iw]) & np.isfinite(table.correct[:, js])
    return table.correct[both, iw] >= 0.5, table.correct[both, js] >= 0.5, probs[both, js] - probs[both, iw]


def _choices(probs: np.ndarray, cost: np.ndarray, kind: str, value: float) -> np.ndarray:
    """The arm each prompt goes to under the policy (cheapest first on ties), as
    :func:`router_training.evaluate.policy_curve` routes them."""
    order = np.argsort(cost, kind="stable")
    p = probs[:, order]
    if kind == "threshold":
        ok = p >= value - 1e-9
        pick = np.where(ok.any(axis=1), ok.argmax(axis=1), p.argmax(axis=1))
    else:
        pick = (p - value * cost[order][None, :]).argmax(axis=1)
    return order[pick]


def _hull_of(acc: np.ndarray, cost: np.ndarray, hi: float) -> float:
    """Hull area of one policy's operating points, held flat up to the dearest arm's cost
    (as :func:`router_training.evaluate.many_arm_report` measures it)."""
    pts = list(zip(cost.tolist(), acc.tolist()))
    if hi > max(x for x, _ in pts):
        pts.append((hi, min(y for _, y in pts)))
    return hull_area(pts)


def compare_hull(table: OutcomeTable, probs: np.ndarray, baseline: np.ndarray, costs: Mapping[str, float], *,
                 kind: str = "threshold", n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Paired bootstrap of the hull-area difference between two routers' policies.

    Over the prompts with a label for every arm, each router's policy (``kind``:
    ``threshold`` over :data:`~router_training.evaluate.TAU_GRID`, ``lambda`` over
    :func:`~router_training.evaluate.lambda_grid`) routes every prompt at every grid
    value; the area under the cost/accuracy hull of those operating points is its score
    (equal to :func:`~router_training.evaluate.many_arm_report`'s). Each of ``n_boot``
    resamples draws the prompts with replacement (seeded) and rescores both routers on
    it. Returns ``{"hull_area", "baseline_hull_area", "diff", "diff_low", "diff_high",
    "p_better", "n", "n_boot", "level"}`` (the interval: percentiles ``(1 ∓ level)/2``).
    """
    from .evaluate import TAU_GRID, lambda_grid

    rows = np.isfinite(table.correct).all(axis=1)
    n = int(rows.sum())
    if n == 0:
        raise RouterTrainError("no held-out prompt has a label for every arm, so the policies' hulls cannot be "
                               "compared; log every arm on the same prompts")
    right = table.correct[rows] >= 0.5
    cost = np.asarray([float(costs[a]) for a in table.arms])
    values = list(TAU_GRID) if kind == "threshold" else lambda_grid(cost)
    hi = float(cost.max())

    def grid(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit = np.empty((len(values), n))
        spend = np.empty((len(values), n))
        for v, value in enumerate(values):
            chosen = _choices(p[rows], cost, kind, value)
            hit[v] = right[np.arange(n), chosen]
            spend[v] = cost[chosen]
        return hit, spend

    mine, theirs = grid(np.asarray(probs, float)), grid(np.asarray(baseline, float))

    def area(g: tuple[np.ndarray, np.ndarray], weights: np.ndarray) -> float:
        return _hull_of(g[0] @ weights, g[1] @ weights, hi)

    flat = np.full(n, 1.0 / n)
    point, base = area(mine, flat), area(theirs, flat)
    rng = np.random.default_rng(seed)
    diffs = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        w = np.bincount(rng.integers(0, n, size=n), minlength=n) / n
        diffs[b] = area(mine, w) - area(theirs, w)
    lo, hi_q = np.percentile(diffs, [50 * (1 - level), 50 * (1 + level)])
    return {"hull_area": point, "baseline_hull_area": base, "diff": point - base, "diff_low": float(lo),
            "diff_high": float(hi_q), "p_better": float((diffs > 1e-12).mean()), "n": n, "n_boot": int(n_boot),
            "level": float(level)}


def _scores(table: OutcomeTable, probs: np.ndarray, weak: str, strong: str, costs: Mapping[str, float],
            kind: str) -> dict[str, Any]:
    """APGR / CPT (two arms) and hull area (every arm) of one router on the held-out table."""
    from .evaluate import many_arm_report, two_arm_report

    out: dict[str, Any] = {"apgr": None, "cpt50": None, "cpt80": None, "hull_area": None}
    try:
        r = two_arm_report(table, probs, weak, strong)
        out.update({k: r[k] for k in ("apgr", "cpt50", "cpt80")})
    except (PGRUndefinedError, EffReasonError):
        pass  # equally accurate arms or no prompt with both labels: no two-arm figures, the hull decides
    if np.isfinite(table.correct).all(axis=1).any():
        many = many_arm_report(table, probs, costs)
        out["hull_area"] = many["policy" if kind == "threshold" else "lambda"]["hull_area"]
    return out


def _predict(router: Router, table: OutcomeTable) -> np.ndarray:
    """P(correct) of ``router`` on the table's prompts, columns in the table's arm order."""
    p = np.asarray(router.predict(table.prompts), dtype=float)
    cols = [router.arms.index(a) for a in table.arms]
    return np.clip(p[:, cols], 0.0, 1.0)


# -- the champion ----------------------------------------------------------------------


def _champion(root: Path) -> Router | None:
    """The deployed router in ``root`` (``None`` for an empty directory); clear errors for a
    missing path, a file, a directory of something else or a corrupted artifact."""
    if not root.exists():
        raise RouterTrainError(f"artifact directory {root} does not exist; create it (mkdir -p {root}) to install a "
                               "first router there, or give the directory of the deployed router")
    if not root.is_dir():
        raise RouterTrainError(f"{root} is not a directory; --artifact takes a router artifact directory")
    if not any(root.iterdir()):
        return None
    if not (root / "card.json").is_file():
        raise RouterTrainError(f"{root} is not empty and holds no router artifact (no card.json); give the "
                               "directory of the deployed router, or an empty one for a first install")
    try:
        return Router.load(root)
    except RouterError as exc:
        raise RouterTrainError(f"the deployed router in {root} cannot be loaded, so it cannot be compared: {exc}. "
                               f"Nothing was replaced; restore it (a previous one may be in {root}.prev) or empty "
                               "the directory to install a new router") from exc


def _load(data: str | Path, fmt: str | None, since: datetime | None) -> OutcomeTable:
    fmt = (fmt or infer_format(data)).strip().lower()
    if fmt == "store":
        return load_store(data, since=since)
    if since is not None:
        raise RouterTrainError(f"--since filters the outcome store by time; {data} is a {fmt} file without "
                               "timestamps (drop --since, or use --data store)")
    if fmt == "long":
        return load_long(data)
    if fmt == "wide":
        return load_wide(data)
    raise RouterTrainError(f"unknown data format {fmt!r}; use store, long or wide")


# -- installing ------------------------------------------------------------------------


def _install(tmp: Path, root: Path) -> Path | None:
    """Make ``tmp`` the artifact ``root``, keeping the current one as ``ROOT.prev``; returns
    that path (``None`` when ``root`` held nothing). Renames only: on failure the previous
    artifact is put back."""
    prev = root.with_name(root.name + ".prev")
    if not any(root.iterdir()):
        os.replace(tmp, root)  # an empty directory is replaced by the rename
        return None
    trash: Path | None = None
    if prev.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{prev.name}.", suffix=".old", dir=root.parent))
        os.rmdir(trash)
        os.replace(prev, trash)
    os.replace(root, prev)
    try:
        os.replace(tmp, root)
    except BaseException:
        os.replace(prev, root)
        if trash is not None:
            os.replace(trash, prev)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return prev


# -- the loop --------------------------------------------------------------------------


def retrain(
    data: str | Path,
    artifact: str | Path,
    *,
    fmt: str | None = None,
    since: datetime | None = None,
    kinds: Sequence[str] | None = None,
    min_prompts: int = 200,
    holdout: float = HOLDOUT_SHARE,
    k: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    policy: str | None = None,
    max_share: tuple[str, float] | None = None,
    max_mean_cost: float | None = None,
    min_accuracy: float | None = None,
    embeddings: bool | None = None,
    progress: _Progress | None = None,
) -> dict[str, Any]:
    """Fit a challenger on recent graded outcomes, compare it with the router deployed in
    ``artifact`` on the same held-out prompts, and install it only when it is better by
    more than the bootstrap interval (see the module docstring).

    ``kinds``: candidate model kinds (default :data:`router_training.train.AUTO_KINDS`);
    ``policy``, ``max_share``/``max_mean_cost``/``min_accuracy`` and ``embeddings``
    default to the champion's (:func:`target_from_card`; threshold, most accurate and no
    embeddings without one). ``progress`` is called with a line per stage.

    Returns ``{"artifact", "decision" ("installed" | "replaced" | "kept"), "reason",
    "previous", "metric" ("apgr" | "hull_area"), "weak", "strong", "data", "holdout",
    "champion", "challenger", "comparison", "seconds"}``. Raises
    :class:`~effreason_agents.errors.RouterTrainError` with
    nothing replaced for a missing artifact directory, a corrupted champion, too few
    prompts, or data without the champion's arms.
    """
    from .evaluate import costs_for, default_pair
    from .train import AUTO_KINDS, train

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    root = Path(artifact).expanduser().absolute()
    champion = _champion(root)
    if int(min_prompts) < 1:
        raise RouterTrainError(f"--min-prompts must be at least 1 (got {min_prompts})")

    say("reading the logged outcomes")
    try:
        table = _load(data, fmt, since)
    except OutcomeDataError as exc:
        raise RouterTrainError(f"{exc}. Nothing was replaced") from exc
    notes = list(table.notes)
    if champion is not None:
        missing = [a for a in champion.arms if a not in table.arms]
        if missing:
            raise RouterTrainError(
                f"the logs ({table.source}) have no results for the deployed router's arm"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}; a challenger must route between the same "
                f"arms (logged: {', '.join(table.arms)}). Nothing was replaced")
        if list(table.arms) != list(champion.arms):
            table = select_arms(table, champion.arms)
            notes = list(table.notes)
    if len(table.arms) < 2:
        raise RouterTrainError(f"the logs have results for {len(table.arms)} arm; a router needs at least two")
    if len(table) < int(min_prompts):
        raise RouterTrainError(
            f"only {len(table)} prompts in {table.source}; retraining needs at least --min-prompts {min_prompts}. "
            "Log more outcomes, widen --since, or lower --min-prompts. Nothing was replaced")

    mask = holdout_mask(table.prompts, holdout)
    test, fit_on = table.subset(mask), table.subset(~mask)
    if len(test) < MIN_HOLDOUT:
        raise RouterTrainError(
            f"only {len(test)} of {len(table)} prompts fall in the {holdout:.0%} hold-out; a comparison needs at "
            f"least {MIN_HOLDOUT}. Log more outcomes or raise --holdout. Nothing was replaced")
    if len(fit_on) < max(int(k), 2):
        raise RouterTrainError(f"only {len(fit_on)} prompts left to train on; log more outcomes. Nothing was replaced")

    card = champion.card if champion is not None else {}
    given = {"max_share": max_share, "max_mean_cost": max_mean_cost, "min_accuracy": min_accuracy}
    target = given if any(v is not None for v in given.values()) else target_from_card(card)
    policy_kind = policy or str((card.get("policy") or {}).get("kind") or "threshold")
    if policy_kind not in ("threshold", "lambda"):
        raise RouterTrainError(f"policy must be 'threshold' or 'lambda', got {policy_kind!r}")
    if embeddings is None:
        embeddings = bool((card.get("features") or {}).get("embeddings"))
    costs, unit = costs_for(table)
    weak, strong = default_pair(table, costs)
    seen = champion is not None and (card.get("training") or {}).get("holdout") != {
        "salt": HOLDOUT_SALT, "share": float(holdout)}

    parent = root.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.challenger.", suffix=".tmp", dir=parent))
    try:
        say(f"training the challenger on {len(fit_on)} prompts ({', '.join(kinds or AUTO_KINDS)})")
        trained = train(fit_on, tmp, kinds=list(kinds or AUTO_KINDS), k=k, seed=seed, embeddings=bool(embeddings),
                        policy=policy_kind, **target)
        challenger = Router.load(tmp)

        say(f"scoring both routers on {len(test)} held-out prompts")
        p_new = _predict(challenger, test)
        p_old = _predict(champion, test) if champion is not None else None
        new_scores = _scores(test, p_new, weak, strong, costs, policy_kind)
        old_scores = _scores(test, p_old, weak, strong, costs, policy_kind) if p_old is not None else None
        metric = "apgr" if len(table.arms) == 2 and new_scores["apgr"] is not None else "hull_area"
        comparison: dict[str, Any] | None = None
        if p_old is not None:
            if metric == "apgr":
                w, s, sc_new = _pair(test, p_new, weak, strong)
                sc_old = _pair(test, p_old, weak, strong)[2]
                try:
                    boot = bootstrap_apgr(w.tolist(), s.tolist(), sc_new.tolist(), n_boot=n_boot, seed=seed,
                                          level=level, baseline_scores=sc_old.tolist())
                    comparison = {k2: boot.get(k2) for k2 in ("diff", "diff_low", "diff_high", "p_better")}
                    comparison.update({"n": int(len(w)), "n_boot": int(n_boot), "level": float(level),
                                       "skipped": boot.get("skipped")})
                except PGRUndefinedError:
                    metric = "hull_area"
            if metric == "hull_area":
                if new_scores["hull_area"] is None:
                    raise RouterTrainError(
                        f"the held-out prompts have no label for every arm and {weak} and {strong} are equally "
                        "accurate there, so neither APGR nor the hull area can compare the routers; log every arm "
                        "on the same prompts. Nothing was replaced")
                comparison = compare_hull(test, p_new, p_old, costs, kind=policy_kind, n_boot=n_boot, seed=seed,
                                          level=level)
        if champion is None:
            decision, reason = "installed", f"no router in {root} yet: the challenger is installed"
        elif comparison is not None and comparison["diff_low"] is not None and comparison["diff_low"] > 0:
            decision = "replaced"
            reason = (f"the challenger's {_NAMES[metric]} beats the champion's by {comparison['diff']:+.4f}, and the "
                      f"{level:.0%} bootstrap interval of the difference ({comparison['diff_low']:+.4f} … "
                      f"{comparison['diff_high']:+.4f}) lies above zero")
        else:
            decision = "kept"
            if comparison is None or comparison["diff_low"] is None:
                reason = f"the bootstrap could not bound the {_NAMES[metric]} difference; the champion stays"
            else:
                reason = (f"the challenger's {_NAMES[metric]} differs from the champion's by "
                          f"{comparison['diff']:+.4f}, and the {level:.0%} bootstrap interval of the difference "
                          f"({comparison['diff_low']:+.4f} … {comparison['diff_high']:+.4f}) does not lie above "
                          "zero; the champion stays")

        result: dict[str, Any] = {
            "artifact": str(root),
            "decision": decision,
            "reason": reason,
            "previous": None,
            "metric": metric,
            "weak": weak,
            "strong": strong,
            "data": {"source": table.source, "since": None if since is None else since.isoformat(timespec="seconds"),
                     "n_prompts": len(table), "n_train": len(fit_on), "arms": list(table.arms), "cost_unit": unit,
                     "notes": notes},
            "holdout": {"share": float(holdout), "salt": HOLDOUT_SALT, "n": len(test),
                        "champion_may_have_seen": bool(seen),
                        "note": ("the champion may have trained on some held-out prompts (it was not installed by "
                                 "retrain with this hold-out), so its score is optimistic and a swap is harder"
                                 if seen else "the champion never trained on a held-out prompt"
                                 if champion is not None else None)},
            "champion": None if champion is None else {
                **(old_scores or {}), "kind": champion.kind,
                "created_at": (card.get("training") or {}).get("created_at")},
            "challenger": {**new_scores, "kind": trained["model"], "cv": trained["cv"], "policy": trained["policy"]},
            "comparison": comparison,
        }
        if decision == "kept":
            return {**result, "seconds": round(time.perf_counter() - started, 2)}

        say("installing the challenger")
        new_card = json.loads((tmp / "card.json").read_text(encoding="utf-8"))
        new_card.setdefault("training", {})["holdout"] = {"salt": HOLDOUT_SALT, "share": float(holdout)}
        new_card["policy"]["target_spec"] = _target_spec(target)
        new_card["retrain"] = {k2: result[k2] for k2 in ("decision", "metric", "weak", "strong", "comparison")}
        new_card["retrain"]["champion"] = result["champion"]
        new_card["retrain"]["challenger"] = {k2: new_scores[k2] for k2 in new_scores}
        write_json(tmp / "card.json", json.loads(json.dumps(new_card, default=str)), sort_keys=True,
                   ensure_ascii=False)
        Router.load(tmp)  # the card still reads back
        result["previous"] = None if (prev := _install(tmp, root)) is None else str(prev)
        return {**result, "seconds": round(time.perf_counter() - started, 2)}
    except RouterTrainError:
        raise
    except EffReasonError as exc:  # unreadable data, an unreachable target, a router that cannot be saved
        raise RouterTrainError(f"{exc}. Nothing was replaced") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
