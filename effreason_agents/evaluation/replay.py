"""Offline policy evaluation: replay a routing policy on logged outcomes, no model calls.

Logged outcomes come as a :class:`WideTable` — one row per prompt, one
correctness column per model (or arm) — loaded from

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

import csv
import json
import re
import sqlite3
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence

from effreason_agents.core.features import classify_difficulty
from effreason_agents.config import Config, TierConfig
from effreason_agents.errors import EffReasonError
from effreason_agents.evaluation.metrics import PGRUndefinedError, cost_accuracy_hull, hull_area, many_arm_baselines, summarize, two_arm_summary
from effreason_agents.adapters.store import utc_now
from effreason_agents.adapters.tiers import BYTES_METHOD, O200K_METHOD, cost_usd, estimate_tokens, token_count_method

__all__ = [
    "ReplayError",
    "WideTable",
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

GRAPH_ARM = "graph"
TOKENS_LOGGED = "logged usage"
TOKENS_O200K = O200K_METHOD
TOKENS_BYTES = BYTES_METHOD
TOKENS_NONE = "none: no responses"

_TRUE = frozenset({"true", "1", "1.0"})
_FALSE = frozenset({"false", "0", "0.0"})
_RESPONSE_SUFFIX = "_response"
# Columns that are never a model: pandas' index column and RouteLLM's few-shot column.
_IGNORED_NAMES = re.compile(r"^(?:|unnamed: ?\d+|index|examples)$", re.I)


class ReplayError(EffReasonError, ValueError):
    """Logged outcomes cannot be loaded or replayed; the message says where and why."""


@dataclass
class WideTable:
    """Graded outcomes of several models on the same prompts, column per model.

    Every per-model list is aligned with ``prompts``. ``None`` marks a value that
    was not logged. ``responses`` may be empty (no raw texts).
    """

    prompts: list[str]
    models: list[str]
    correct: dict[str, list[bool]]
    responses: dict[str, list[str | None]]
    output_tokens: dict[str, list[int | None]]
    input_tokens: dict[str, list[int | None]]
    cost_usd: dict[str, list[Decimal | float | None]]
    source: str
    latency_s: dict[str, list[float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    config_version: str | None = None
    run_id: str | None = None


# -- the wide CSV -----------------------------------------------------------------------


def _parse_bool(raw: str) -> bool | None:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def load_wide_csv(path: str | Path) -> WideTable:
    """Load RouteLLM's wide CSV.

    Columns: ``prompt`` (required); one correctness column per model id, holding
    True/False (also ``true``/``false``, ``1``/``0``, ``1.0``/``0.0``); optional
    ``<model id>_response`` columns with the raw text. Ignored: an unnamed or
    ``Unnamed: N`` index column, ``index``, ``examples``, ``_response`` columns
    of no model, and any other column whose values are mostly not booleans (a
    note names them). A column counts as a model's when at least half of its
    non-empty values are booleans; then every value must be one.

    Errors (:class:`ReplayError`) name the file, the data row (1 = first row
    after the header), its line and the column: no ``prompt`` column, fewer than
    two model columns, a correctness value that is not a boolean (or is empty),
    an empty prompt. Repeated prompts keep their first row; a note says which
    rows were dropped.
    """
    p = Path(path)
    if not p.is_file():
        raise ReplayError(f"{p}: no such file")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise ReplayError(f"{p}: the file is empty; expected a header with a 'prompt' column") from None
            rows: list[tuple[int, list[str]]] = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{p}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise ReplayError(f"{p}: not a valid CSV file ({exc})") from None

    header = [h.strip() for h in header]
    if "prompt" not in header:
        raise ReplayError(f"{p}: no 'prompt' column (columns: {', '.join(repr(h) for h in header)})")
    for i, h in enumerate(header):
        if h and header.index(h) != i:
            raise ReplayError(f"{p}: column {h!r} appears twice in the header")
    col = {h: i for i, h in enumerate(header)}
    notes: list[str] = []

    def cell(row: list[str], i: int) -> str:
        return row[i] if i < len(row) else ""

    candidates = [h for h in header if h != "prompt" and not _IGNORED_NAMES.match(h) and not h.endswith(_RESPONSE_SUFFIX)]
    models: list[str] = []
    skipped: list[str] = []
    for h in candidates:
        values = [cell(r, col[h]).strip() for _, r in rows]
        filled = [v for v in values if v]
        n_bool = sum(_parse_bool(v) is not None for v in filled)
        if filled and 2 * n_bool >= len(filled):
            models.append(h)
        else:
            skipped.append(h)
    if skipped:
        notes.append(f"ignored columns without True/False values: {', '.join(skipped)}")
    if len(models) < 2:
        found = ", ".join(repr(m) for m in models) or "none"
        raise ReplayError(
            f"{p}: need at least two model columns of True/False values, found {found} "
            f"(columns: {', '.join(repr(h) for h in header)})"
        )
    stray = [h for h in header if h.endswith(_RESPONSE_SUFFIX) and h[: -len(_RESPONSE_SUFFIX)] not in models]
    if stray:
        notes.append(f"ignored response columns of no model column: {', '.join(stray)}")
    with_responses = [m for m in models if m + _RESPONSE_SUFFIX in col]

    prompts: list[str] = []
    correct: dict[str, list[bool]] = {m: [] for m in models}
    responses: dict[str, list[str | None]] = {m: [] for m in with_responses}
    seen: dict[str, int] = {}
    dupes: list[str] = []
    for data_row, (line, r) in enumerate(rows, start=1):
        prompt = cell(r, col["prompt"])
        if not prompt.strip():
            raise ReplayError(f"{p}: row {data_row} (line {line}), column 'prompt': the prompt is empty")
        values: dict[str, bool] = {}
        for m in models:
            raw = cell(r, col[m])
            b = _parse_bool(raw)
            if b is None:
                raise ReplayError(
                    f"{p}: row {data_row} (line {line}), column {m!r}: {raw!r} is not a correctness value "
                    "(expected True/False, true/false, 1/0 or 1.0/0.0)"
                )
            values[m] = b
        if prompt in seen:
            dupes.append(f"{data_row} (same as row {seen[prompt]})")
            continue
        seen[prompt] = data_row
        prompts.append(prompt)
        for m in models:
            correct[m].append(values[m])
        for m in with_responses:
            text = cell(r, col[m + _RESPONSE_SUFFIX])
            responses[m].append(text if text != "" else None)
    if not prompts:
        raise ReplayError(f"{p}: no data rows after the header")
    if dupes:
        shown = ", ".join(dupes[:10]) + (f", … ({len(dupes)} in all)" if len(dupes) > 10 else "")
        notes.append(f"{len(dupes)} repeated prompts dropped, keeping the first occurrence: rows {shown}")
    n = len(prompts)
    return WideTable(
        prompts=prompts,
        models=models,
        correct=correct,
        responses=responses,
        output_tokens={m: [None] * n for m in models},
        input_tokens={m: [None] * n for m in models},
        cost_usd={m: [None] * n for m in models},
        source=str(p),
        notes=notes,
    )


# -- the outcome store ------------------------------------------------------------------


def load_store_table(store_path: str | Path, run_id: str | None = None) -> WideTable:
    """Load one benchmark run from the outcome store's ``bench_results`` table.

    Opens the SQLite file read-only. ``run_id`` defaults to the newest run (by
    ``created_at``). Models are the run's arms (the ``arms`` list of
    ``bench_runs``, else those with results), without the full graph (``graph``);
    arms with no result at all are dropped with a note. Prompts are the
    questions of the items that have a result for every remaining arm, in the
    order they were first stored. Logged token counts, costs (exact decimals)
    and latencies are kept; there are no raw responses.
    """
    p = Path(store_path)
    if not p.is_file():
        raise ReplayError(f"no outcome store at {p}: run `effreason bench` first, or pass a wide CSV to --replay")
    try:
        # as_uri() percent-escapes characters such as "?" and "#" that would end a bare "file:" path
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ReplayError(f"{p}: cannot open the outcome store read-only ({exc})") from None
    try:
        conn.row_factory = sqlite3.Row
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise ReplayError(f"{p}: not an SQLite outcome store ({exc})") from None
        if not {"bench_runs", "bench_results"} <= tables:
            raise ReplayError(f"{p}: the outcome store has no benchmark results yet: run `effreason bench` first")
        if run_id is None:
            run = conn.execute("SELECT * FROM bench_runs ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
            if run is None:
                raise ReplayError(f"{p}: the outcome store has no benchmark runs: run `effreason bench` first")
        else:
            run = conn.execute("SELECT * FROM bench_runs WHERE run_id = ?", (run_id,)).fetchone()
            if run is None:
                known = [r[0] for r in conn.execute("SELECT run_id FROM bench_runs ORDER BY created_at DESC LIMIT 20")]
                raise ReplayError(f"{p}: no benchmark run {run_id!r} (newest runs: {', '.join(known) or 'none'})")
        rid = str(run["run_id"])
        results = conn.execute(
            "SELECT * FROM bench_results WHERE run_id = ? ORDER BY created_at, rowid", (rid,)
        ).fetchall()
    finally:
        conn.close()

    notes: list[str] = []
    try:
        listed = [str(a) for a in json.loads(run["arms"] or "[]")]
    except (json.JSONDecodeError, TypeError):
        listed = []
    have = list(dict.fromkeys(str(r["arm"]) for r in results))
    arms = [a for a in (listed or have) if a != GRAPH_ARM]
    empty = [a for a in arms if a not in have]
    if empty:
        notes.append(f"arms with no results, left out: {', '.join(empty)}")
        arms = [a for a in arms if a in have]
    extra = [a for a in have if a not in arms and a != GRAPH_ARM]
    if listed and extra:
        notes.append(f"results of arms not listed for the run, left out: {', '.join(extra)}")
    if len(arms) < 2:
        raise ReplayError(
            f"{p}: run {rid} has results for {len(arms)} arm(s) ({', '.join(arms) or 'none'}, not counting the graph); "
            "replay needs at least two"
        )

    by_item: dict[str, dict[str, sqlite3.Row]] = {}
    for r in results:
        if r["arm"] in arms:
            by_item.setdefault(str(r["item_id"]), {}).setdefault(str(r["arm"]), r)
    items = [i for i, per_arm in by_item.items() if all(a in per_arm for a in arms)]
    if len(items) < len(by_item):
        notes.append(f"{len(by_item) - len(items)} items without a result for every arm left out")
    if not items:
        raise ReplayError(f"{p}: run {rid} has no item with a result for every arm ({', '.join(arms)})")

    def money(v: Any) -> Decimal | None:
        if v is None or v == "":
            return None
        try:
            return Decimal(str(v))
        except Exception:  # noqa: BLE001
            return None

    def opt_int(v: Any) -> int | None:
        return None if v is None else int(v)

    def opt_float(v: Any) -> float | None:
        return None if v is None else float(v)

    prompts: list[str] = []
    seen: dict[str, str] = {}
    keep: list[str] = []
    for i in items:
        q = str(by_item[i][arms[0]]["question"])
        if q in seen:
            continue  # two item ids with the same question: the first stands for both
        seen[q] = i
        keep.append(i)
        prompts.append(q)
    if len(keep) < len(items):
        notes.append(f"{len(items) - len(keep)} items repeating an earlier question left out")
    suite = run["suite"]
    return WideTable(
        prompts=prompts,
        models=arms,
        correct={a: [bool(by_item[i][a]["correct"]) for i in keep] for a in arms},
        responses={},
        output_tokens={a: [opt_int(by_item[i][a]["output_tokens"]) for i in keep] for a in arms},
        input_tokens={a: [opt_int(by_item[i][a]["input_tokens"]) for i in keep] for a in arms},
        cost_usd={a: [money(by_item[i][a]["cost_usd"]) for i in keep] for a in arms},
        latency_s={a: [opt_float(by_item[i][a]["latency_s"]) for i in keep] for a in arms},
        source=f"{p} run {rid} (suite {suite})",
        notes=notes,
        config_version=run["config_version"],
        run_id=rid,
    )


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
    table: WideTable,
    weak: str,
    strong: str,
    *,
    config: Config | None = None,
    scores: Sequence[float] | None = None,
    router_name: str = "heuristic-difficulty",
) -> dict[str, Any]:
    """Evaluate a routing policy between ``weak`` and ``strong`` on logged outcomes.

    * Tokens: logged counts where present; otherwise the ``<model>_response``
      texts counted with the o200k BPE (:func:`~effreason_agents.adapters.tiers.estimate_tokens`).
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
        if name not in table.models:
            raise ReplayError(f"unknown {role} model {name!r}; models in {table.source}: {', '.join(table.models)}")
    if weak == strong:
        raise ReplayError(f"the weak and strong models are both {weak!r}; pick two different models")
    n = len(table.prompts)
    if n == 0:
        raise ReplayError(f"{table.source}: no prompts to replay")
    notes = list(table.notes)
    models = list(table.models)

    # Tokens.
    methods: set[str] = set()
    out_tokens: dict[str, list[int | None]] = {}
    counter: tuple[Callable[[str], int], str] | None = None
    no_counts: list[str] = []
    for m in models:
        logged = table.output_tokens.get(m) or [None] * n
        texts = table.responses.get(m) or [None] * n
        col: list[int | None] = []
        for i in range(n):
            if logged[i] is not None:
                col.append(int(logged[i]))  # type: ignore[arg-type]
                methods.add(TOKENS_LOGGED)
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
    ordered = [x for x in (TOKENS_LOGGED, TOKENS_O200K, TOKENS_BYTES) if x in methods]
    token_method = " + ".join(ordered) if ordered else TOKENS_NONE

    # Costs.
    costs: dict[str, list[Decimal]] = {}
    tiers: dict[str, tuple[str, str]] = {}
    prompt_tokens: list[int] | None = None
    any_cost = False
    for m in models:
        tier_name, tier, strategy = _tier_for(m, config)
        tiers[m] = (tier_name, strategy)
        logged_cost = table.cost_usd.get(m) or [None] * n
        logged_in = table.input_tokens.get(m) or [None] * n
        col_cost: list[Decimal] = []
        unpriced = 0
        input_only = 0
        for i in range(n):
            c = logged_cost[i]
            if c is not None:
                col_cost.append(Decimal(str(c)) if not isinstance(c, Decimal) else c)
                continue
            if tier is None:
                col_cost.append(Decimal(0))
                unpriced += 1
                continue
            if logged_in[i] is not None:
                tin = int(logged_in[i])  # type: ignore[arg-type]
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
        lat = table.latency_s.get(m) or [None] * n
        rows = [
            {"correct": table.correct[m][i], "output_tokens": out_tokens[m][i], "cost_usd": costs[m][i], "latency_s": lat[i]}
            for i in range(n)
        ]
        tier_name, strategy = tiers[m]
        arms[m] = {**summarize(rows), "tier": tier_name, "strategy": strategy}

    # Many arms.
    have_tokens = all(v is not None for m in models for v in out_tokens[m])
    baselines = many_arm_baselines(
        {m: table.correct[m] for m in models},
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
        two = two_arm_summary(table.correct[weak], table.correct[strong], scores)
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
