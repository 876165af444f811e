"""Offline policy evaluation: replay a routing policy on logged outcomes, no model calls.

Logged outcomes come as an :class:`~effreason_agents.evaluation.outcomes.OutcomeTable`
(one row per prompt, one column per model or arm), read by the shared readers of
:mod:`effreason_agents.evaluation.outcomes` with ``complete=True`` — replay's metrics
need a right-or-wrong label for every model on every prompt:

* RouteLLM's published "wide" CSV (:func:`load_wide_csv`): a ``prompt`` column,
  one True/False column per model id and optional ``<model id>_response``
  columns with the raw text; or
* the outcome store's ``bench_results`` table (:func:`load_store_table`), one
  model per benchmarked arm.

:func:`replay` then measures every model, the random and oracle routers, the
configured routing policy (today the heuristic difficulty classifier, scored by
:func:`router_scores`) between a weak and a strong model, and the
cost/accuracy hull, and returns the results dict the report writer renders.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from effreason_agents.adapters.store import utc_now
from effreason_agents.adapters.tiers import BYTES_METHOD, O200K_METHOD, cost_usd, estimate_tokens, token_count_method
from effreason_agents.config import Config, TierConfig
from effreason_agents.core.features import classify_difficulty
from effreason_agents.evaluation.metrics import (
    PGRUndefinedError,
    cost_accuracy_hull,
    hull_area,
    many_arm_baselines,
    summarize,
    two_arm_summary,
)
from effreason_agents.evaluation.outcomes import GRAPH_ARM, TOKENS_LOGGED, OutcomeDataError, OutcomeTable, load_store, load_wide

__all__ = [
    "ReplayError",
    "load_wide_csv",
    "load_store_table",
    "router_scores",
    "replay",
    "GRAPH_ARM",
    "TOKENS_LOGGED",
    "TOKENS_O200K",
    "TOKENS_BYTES",
    "TOKENS_NONE",
]

TOKENS_O200K = O200K_METHOD
TOKENS_BYTES = BYTES_METHOD
TOKENS_NONE = "none: no responses"

#: What replay raises: logged outcomes that cannot be loaded or replayed (the message
#: says where and why). The same class as the outcome readers' error.
ReplayError = OutcomeDataError


def load_wide_csv(path: str | Path) -> OutcomeTable:
    """Load RouteLLM's wide CSV for replay (:func:`~effreason_agents.evaluation.outcomes.load_wide`
    with ``complete=True``).

    Columns: ``prompt`` (required); one correctness column per model id, holding
    booleans (True/False, true/false, 1/0, 1.0/0.0, yes/no); optional
    ``<model id>_response`` columns with the raw text. Ignored (a note names them):
    index and metadata columns, ``_response`` columns of no model, and any other
    column whose values are mostly not labels.

    Errors (:class:`ReplayError`) name the file, the data row (1 = first row after the
    header), its line and the column: no ``prompt`` column, fewer than two model
    columns, a correctness value that is not a boolean (or is empty), an empty
    prompt. Repeated prompts (compared after stripping) keep their first row; a note
    says which rows were dropped.
    """
    return load_wide(path, complete=True)


def load_store_table(store_path: str | Path, run_id: str | None = None) -> OutcomeTable:
    """Load one benchmark run from the outcome store's ``bench_results`` for replay
    (:func:`~effreason_agents.evaluation.outcomes.load_store` with ``complete=True``).

    Opens the store read-only. ``run_id`` defaults to the newest run (by
    ``created_at``). Models are the run's arms without the full graph (``graph``);
    arms with no result at all are dropped with a note. Prompts are the questions
    with a result for every remaining arm, in the order they were first stored (the
    first result of a repeated question stands). Logged token counts, costs and
    latencies are kept; there are no raw responses.
    """
    return load_store(store_path, run_id=run_id, latest=run_id is None, complete=True)


# -- the policy -------------------------------------------------------------------------


def router_scores(prompts: Sequence[str], config: Config | None = None) -> list[float]:
    """Scores of the configured routing policy, one per prompt; higher = send to the strong model.

    Today that is the heuristic difficulty classifier's ``score`` (the policy the
    ``classify`` node uses until a trained router is configured); ``config`` is
    accepted for when the policy becomes configurable.
    """
    return [float(classify_difficulty(q)[1]["score"]) for q in prompts]


def _tier_for(model: str, config: Config | None) -> tuple[str, TierConfig | None, str]:
    """(tier name, tier, strategy) for a model id or an arm name ``tier:strategy[:cap]``."""
    if config is None:
        return "", None, ""
    if model in config.tiers:
        return model, config.tiers[model], ""
    for name, t in config.tiers.items():
        if t.model == model:
            return name, t, ""
    head, _, rest = model.partition(":")
    if rest and head in config.tiers:
        return head, config.tiers[head], rest
    return "", None, ""


def _column(m: np.ndarray | None, j: int, n: int) -> list[float | None]:
    """Column ``j`` of an optional outcome matrix as floats, ``None`` where unknown."""
    if m is None:
        return [None] * n
    return [float(v) if math.isfinite(v) else None for v in m[:, j]]


def _right_or_wrong(table: OutcomeTable) -> dict[str, list[bool]]:
    """Each model's labels as booleans; :class:`ReplayError` when one is missing or a score."""
    out: dict[str, list[bool]] = {}
    bad: list[str] = []
    for j, m in enumerate(table.arms):
        col = table.correct[:, j]
        wrong = int((~((col == 0.0) | (col == 1.0))).sum())
        if wrong:
            bad.append(f"{m} ({wrong} of {len(col)})")
        out[m] = [bool(v == 1.0) for v in col]
    if bad:
        raise ReplayError(
            f"{table.source}: replay needs a right-or-wrong label for every model on every prompt; "
            f"missing or fractional labels: {', '.join(bad)}. Load the outcomes with load_wide_csv or "
            "load_store_table (complete=True), or select the arms and prompts that have them"
        )
    return out


def _token_counter() -> tuple[Callable[[str], int], str]:
    """The token counter for logged responses without usage, and how it counts."""
    return estimate_tokens, token_count_method()


def _plain(x: Any) -> Any:
    """JSON-plain copy: numpy scalars/Decimals to float, tuples to lists."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or type(x) in (bool, int, float, str):
        return x
    if isinstance(x, Decimal):
        return float(x)
    if hasattr(x, "item"):  # numpy scalar
        return _plain(x.item())
    for t in (bool, int, float, str):  # subclasses (e.g. IntEnum) to the plain type
        if isinstance(x, t):
            return t(x)
    return x


def replay(
    table: OutcomeTable,
    weak: str,
    strong: str,
    *,
    config: Config | None = None,
    scores: Sequence[float] | None = None,
    router_name: str = "heuristic-difficulty",
) -> dict[str, Any]:
    """Evaluate a routing policy between ``weak`` and ``strong`` on logged outcomes.

    * Labels: every model needs a right-or-wrong label on every prompt (tables from
      :func:`load_wide_csv` and :func:`load_store_table` have them); otherwise
      :class:`ReplayError` names the models that lack them.
    * Tokens: the table's counts where present (logged usage, or the
      ``<model>_response`` texts counted when the file was read; the table's
      ``token_method`` says how), else the responses counted here with the o200k
      BPE (:func:`~effreason_agents.adapters.tiers.estimate_tokens`).
      ``meta.token_count_method`` says which.
    * Costs: logged costs where present; otherwise, for a model matching a tier
      of ``config`` (tier name, tier ``model`` id, or arm ``tier:strategy``), the
      exact :func:`~effreason_agents.adapters.tiers.cost_usd` of the (logged or counted)
      input and output tokens, input tokens counted from the prompt when not
      logged. A model with neither costs 0 and a note says so. ``config=None``
      prices nothing.
    * Routing: ``scores`` (higher = strong), default :func:`router_scores`.

    Returns ``{"kind": "replay", "meta", "arms", "baselines", "router",
    "two_arm", "hull", "distributions"}``; ``router``/``two_arm`` are left out
    (with a note) when the two models are equally accurate, since PGR is then
    undefined. Raises :class:`ReplayError` for unknown model names (listing the
    available ones) or scores of the wrong length.
    """
    for role, name in (("weak", weak), ("strong", strong)):
        if name not in table.arms:
            raise ReplayError(f"unknown {role} model {name!r}; models in {table.source}: {', '.join(table.arms)}")
    if weak == strong:
        raise ReplayError(f"the weak and strong models are both {weak!r}; pick two different models")
    n = len(table.prompts)
    if n == 0:
        raise ReplayError(f"{table.source}: no prompts to replay")
    notes = list(table.notes)
    models = list(table.arms)
    correct = _right_or_wrong(table)

    # Tokens.
    methods: set[str] = set()
    out_tokens: dict[str, list[int | None]] = {}
    counter: tuple[Callable[[str], int], str] | None = None
    no_counts: list[str] = []
    for m in models:
        logged = _column(table.tokens, table.arms.index(m), n)
        texts = table.responses.get(m) or [None] * n
        col: list[int | None] = []
        for i in range(n):
            if logged[i] is not None:
                col.append(int(round(logged[i])))  # type: ignore[arg-type]
                methods.add(table.token_method or TOKENS_LOGGED)
            elif texts[i] is not None:
                if counter is None:
                    counter = _token_counter()
                col.append(counter[0](texts[i]))  # type: ignore[arg-type]
                methods.add(counter[1])
            else:
                col.append(None)
        out_tokens[m] = col
        missing = sum(v is None for v in col)
        if missing == n:
            no_counts.append(m)
        elif missing:
            notes.append(f"{m}: no output token count for {missing} of {n} items (no logged usage or response)")
    if no_counts:
        notes.append(f"no output token counts (no logged usage or responses) for: {', '.join(no_counts)}")
    known = (TOKENS_LOGGED, TOKENS_O200K, TOKENS_BYTES)
    ordered = [x for x in known if x in methods] + sorted(methods - set(known))
    token_method = " + ".join(ordered) if ordered else TOKENS_NONE

    # Costs.
    costs: dict[str, list[Decimal]] = {}
    tiers: dict[str, tuple[str, str]] = {}
    prompt_tokens: list[int] | None = None
    any_cost = False
    for m in models:
        tier_name, tier, strategy = _tier_for(m, config)
        tiers[m] = (tier_name, strategy)
        logged_cost = table.costs_decimal(m)
        logged_in = _column(table.input_tokens, table.arms.index(m), n)
        col_cost: list[Decimal] = []
        unpriced = 0
        input_only = 0
        for i in range(n):
            c = logged_cost[i]
            if c is not None:
                col_cost.append(c)
                continue
            if tier is None:
                col_cost.append(Decimal(0))
                unpriced += 1
                continue
            if logged_in[i] is not None:
                tin = int(round(logged_in[i]))  # type: ignore[arg-type]
            else:
                if prompt_tokens is None:
                    if counter is None:
                        counter = _token_counter()
                    prompt_tokens = [counter[0](q) for q in table.prompts]
                tin = prompt_tokens[i]
            tout = out_tokens[m][i]
            if tout is None:
                input_only += 1
            col_cost.append(cost_usd(tier, tin, tout or 0))
        costs[m] = col_cost
        any_cost = any_cost or any(c != 0 for c in col_cost)
        if unpriced:
            notes.append(f"{m}: no logged cost and no configured tier with this name or model id; its cost counts as 0")
        if input_only:
            notes.append(f"{m}: cost covers input tokens only for {input_only} items without an output token count")

    if prompt_tokens is not None and counter is not None:
        notes.append(f"input tokens not logged: counted from the prompts ({counter[1]}) to price them")

    # Per-model summaries.
    arms: dict[str, Any] = {}
    for m in models:
        lat = _column(table.latency_s, table.arms.index(m), n)
        rows = [
            {"correct": correct[m][i], "output_tokens": out_tokens[m][i], "cost_usd": costs[m][i], "latency_s": lat[i]}
            for i in range(n)
        ]
        tier_name, strategy = tiers[m]
        arms[m] = {**summarize(rows), "tier": tier_name, "strategy": strategy}

    # Many arms.
    have_tokens = all(v is not None for m in models for v in out_tokens[m])
    baselines = many_arm_baselines(
        {m: correct[m] for m in models},
        {m: costs[m] for m in models},  # type: ignore[misc]
        {m: out_tokens[m] for m in models} if have_tokens else None,  # type: ignore[misc]
    )
    if len(models) > 2:
        notes.append(
            f"random/oracle accuracy, cost and tokens are over all {len(models)} models; "
            f"their APGR/CPT are between {weak} and {strong}"
        )
    hull: dict[str, Any] | None = None
    if any_cost or have_tokens:
        x = "mean_cost_usd" if any_cost else "mean_output_tokens"
        pts = [(float(arms[m][x]), float(arms[m]["accuracy"])) for m in models]
        hull = {"x": x, "points": [list(p) for p in cost_accuracy_hull(pts)], "area": hull_area(pts)}
        if not any_cost:
            notes.append("no costs are known: the hull is over mean output tokens instead of cost")

    # Two models.
    if scores is None:
        scores = router_scores(table.prompts, config)
    elif len(scores) != n:
        raise ReplayError(f"{len(scores)} router scores for {n} prompts")
    two: dict[str, Any] | None
    try:
        two = two_arm_summary(correct[weak], correct[strong], scores)
    except PGRUndefinedError as exc:
        two = None
        notes.append(f"no PGR/APGR between {weak} and {strong}: {exc}")

    results: dict[str, Any] = {
        "kind": "replay",
        "meta": {
            "suite": table.source,
            "n_items": n,
            "created_at": utc_now(),
            "config_version": table.config_version or (config.version() if config is not None else None),
            "command": "",
            "token_count_method": token_method,
            "notes": notes,
        },
        "arms": arms,
        "baselines": {name: dict(baselines[name]) for name in ("random", "oracle")},
        "distributions": {
            "output_tokens": {m: [int(v) for v in out_tokens[m] if v is not None] for m in models if any(v is not None for v in out_tokens[m])}
        },
    }
    if table.run_id is not None:
        results["meta"]["run_id"] = table.run_id
    if two is not None:
        for name in ("random", "oracle"):
            results["baselines"][name].update(two[name])
        results["router"] = {"name": router_name, **two["router"]}
        results["two_arm"] = {
            "weak": weak,
            "strong": strong,
            "acc_weak": two["acc_weak"],
            "acc_strong": two["acc_strong"],
            "curves": two["curves"],
        }
    if hull is not None:
        results["hull"] = hull
    return _plain(results)
