"""Live benchmarks: fixed arms and the cost-aware graph over graded task items.

Each (item, arm) pair runs once: a fixed arm is the graph with its ladder cut
to that one arm and no escalation; ``graph`` is the full reasoning graph. Every
run goes to the outcome store — the request, its attempts and the graded
result in one transaction — so an interrupted benchmark resumes where it
stopped and never counts an item twice. The run is keyed by its output
directory; resuming it under a changed configuration is refused unless forced.
"""

from __future__ import annotations

import csv
import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from effreason_agents.adapters.atomic import atomic_open, write_json
from effreason_agents.core.features import classify_difficulty
from effreason_agents.config import ArmConfig, Config, RouterConfig
from effreason_agents.errors import BenchError, EffReasonError
from effreason_agents.graph.builder import build_reasoning_graph
from effreason_agents.graph.nodes import Services, outcome_records
from effreason_agents.adapters.store import BenchResult, BenchRun, OutcomeStore, utc_now
from effreason_agents.evaluation.outcomes import GRAPH_ARM
from effreason_agents.graph.state import ReasoningContext
from effreason_agents.evaluation.tasks import TaskItem, check_answer

__all__ = [
    "WIDE_CSV",
    "Bench",
    "BenchError",
    "comparison_rows",
    "confidence_quality",
    "resolve_arms",
    "run_id_for",
    "single_arm_config",
    "valid_arm_names",
    "write_run_file",
]


WIDE_CSV = "outcomes_wide.csv"


def valid_arm_names(config: Config) -> list[str]:
    """Every ``tier:strategy`` the configuration can run (enabled tiers only)."""
    return [f"{t}:{s}" for t in config.enabled_tiers() for s in config.strategies]


def resolve_arms(config: Config, names: Sequence[str]) -> list[ArmConfig]:
    """The arms named ``tier:strategy[:max_tokens]``; an unknown one lists the valid names."""
    valid = valid_arm_names(config)
    arms: list[ArmConfig] = []
    for name in names:
        try:
            arm = ArmConfig.model_validate(name)
        except ValueError:
            arm = None
        if arm is None or f"{arm.tier}:{arm.strategy}" not in valid:
            raise BenchError(f"unknown arm {name!r}; valid arms: {', '.join(valid)}")
        if arm.name not in [a.name for a in arms]:
            arms.append(arm)
    return arms


def single_arm_config(config: Config, arm: ArmConfig) -> Config:
    """The configuration whose ladder is just ``arm``: the graph runs it once, no escalation
    and no router."""
    return config.model_copy(update={"ladder": [arm], "router": RouterConfig()})


def run_id_for(out_dir: Path) -> str:
    return hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:16]


def _items_hash(items: Sequence[TaskItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.id}\x00{it.question}\x00{it.answer}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class Bench:
    """One benchmark: items × (fixed arms + optionally the graph), stored under ``run_id``."""

    config: Config
    items: list[TaskItem]
    arms: list[ArmConfig]
    graph: bool = True
    suite: str = "custom"
    out_dir: Path = Path("out")
    concurrency: int = 2
    force: bool = False
    fresh: bool = False
    run_id: str = ""
    _graphs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.items:
            raise BenchError("the suite is empty: nothing to benchmark")
        if not self.arms and not self.graph:
            raise BenchError("nothing to run: give --arms and/or --graph")
        if self.concurrency < 1:
            raise BenchError("concurrency must be >= 1")
        self.out_dir = Path(self.out_dir)
        self.run_id = self.run_id or (uuid.uuid4().hex[:16] if self.fresh else run_id_for(self.out_dir))

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms] + ([GRAPH_ARM] if self.graph else [])

    # -- setup --------------------------------------------------------------------------
    def _graph_for(self, name: str) -> tuple[Any, Config]:
        if name not in self._graphs:
            if name == GRAPH_ARM:
                cfg = self.config
            else:
                cfg = single_arm_config(self.config, next(a for a in self.arms if a.name == name))
            self._graphs[name] = (build_reasoning_graph(cfg, services=Services(cfg)), cfg)
        return self._graphs[name]

    def open_run(self, store: OutcomeStore) -> BenchRun:
        """Register the run, or check a resumed one was made under the same configuration."""
        run = BenchRun(
            run_id=self.run_id,
            out_dir=str(self.out_dir.resolve()),
            suite=self.suite,
            arms=self.arm_names,
            config_version=self.config.version(),
            meta={"items_hash": _items_hash(self.items), "n_items": len(self.items)},
        )
        existing = store.open_bench_run(run)
        if existing.config_version != run.config_version:
            if not self.force:
                raise BenchError(
                    f"{self.out_dir} holds a run made under another configuration "
                    f"(version {existing.config_version}, now {run.config_version}); "
                    "use another --out directory, or --force to continue it anyway"
                )
            store.update_bench_run(run.model_copy(update={"created_at": existing.created_at}))
        return existing

    # -- running ------------------------------------------------------------------------
    def pending(self, store: OutcomeStore) -> list[tuple[TaskItem, str]]:
        done = {(r.item_id, r.arm) for r in store.bench_results(self.run_id)}
        return [(it, arm) for it in self.items for arm in self.arm_names if (it.id, arm) not in done]

    def run_one(self, store: OutcomeStore, item: TaskItem, arm: str) -> BenchResult:
        graph, cfg = self._graph_for(arm)
        ctx = ReasoningContext(log=False, confidence_threshold=None if arm == GRAPH_ARM else 0.0)
        state = graph.invoke({"question": item.question}, context=ctx)
        result = state["result"]
        small_tier = cfg.ladder[0].tier if arm == GRAPH_ARM else None
        bench = BenchResult(
            run_id=self.run_id,
            item_id=item.id,
            arm=arm,
            request_id=state["request_id"],
            question=item.question,
            gold=item.answer,
            answer_type=item.type,
            difficulty=item.difficulty,
            predicted=result["answer"],
            correct=check_answer(result["answer"], item),
            input_tokens=result["total_input_tokens"],
            output_tokens=result["total_output_tokens"],
            cost_usd=result["total_cost_usd"],
            latency_s=round(sum(a["latency_s"] for a in result["attempts"]), 4),
            attempts=len(result["attempts"]),
            escalated=result["escalated"],
            large_calls=sum(1 for a in result["attempts"] if small_tier and a["tier"] != small_tier),
        )
        request, attempts = outcome_records(state, cfg, ctx)
        store.record(request, attempts, bench)
        return bench

    def run(self, on_progress: Callable[[int, int, BenchResult], None] | None = None) -> dict[str, Any]:
        """Run what is pending (in ``concurrency`` threads) and return the results dict."""
        store = OutcomeStore(self.config.store.target())
        try:
            self.open_run(store)
            todo = self.pending(store)
            total, done = len(todo), 0
            lock = threading.Lock()
            for arm in self.arm_names:  # build graphs up front, not in racing threads
                self._graph_for(arm)
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                futures = [pool.submit(self.run_one, store, it, arm) for it, arm in todo]
                try:
                    for fut in as_completed(futures):
                        res = fut.result()
                        with lock:
                            done += 1
                        if on_progress:
                            on_progress(done, total, res)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
            rows = store.bench_results(self.run_id)
            self.export_wide_csv(store, rows, self.out_dir / WIDE_CSV)
            firsts = self.first_attempts(store, rows)
        finally:
            store.close()
        return self.results(rows, firsts)

    def first_attempts(self, store: OutcomeStore, rows: Sequence[BenchResult]) -> dict[tuple[str, str], Any]:
        """(item, fixed arm) → the arm's attempt (its confidence, how it was computed, samples drawn)."""
        fixed = {a.name for a in self.arms}
        out: dict[tuple[str, str], Any] = {}
        for r in rows:
            if r.arm in fixed and r.request_id:
                attempts = store.attempts_for(r.request_id)
                if attempts:
                    out[(r.item_id, r.arm)] = attempts[0]
        return out

    def export_wide_csv(self, store: OutcomeStore, rows: Sequence[BenchResult], path: Path) -> int:
        """The fixed arms' graded results as RouteLLM's wide CSV (``prompt``, one True/False
        column per arm, ``<arm>_response`` with the raw reply), ready for ``bench --replay``.
        Only items finished by every fixed arm are written. Returns the number of rows."""
        fixed = [a.name for a in self.arms]
        if not fixed:
            return 0
        by_key = {(r.item_id, r.arm): r for r in rows}
        lines = []
        for it in self.items:
            if not all((it.id, a) in by_key for a in fixed):
                continue
            line: dict[str, Any] = {"prompt": it.question}
            for a in fixed:
                r = by_key[(it.id, a)]
                attempts = store.attempts_for(r.request_id) if r.request_id else []
                line[a] = "True" if r.correct else "False"
                line[f"{a}_response"] = attempts[-1].raw_text if attempts else ""
            lines.append(line)
        with atomic_open(path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["prompt", *fixed, *(f"{a}_response" for a in fixed)])
            writer.writeheader()
            writer.writerows(lines)
        return len(lines)

    # -- results ------------------------------------------------------------------------
    def results(self, rows: Sequence[BenchResult], firsts: Mapping[tuple[str, str], Any] | None = None) -> dict[str, Any]:
        from effreason_agents.evaluation.metrics import cost_accuracy_hull, hull_area, many_arm_baselines, summarize, two_arm_summary

        ids = [it.id for it in self.items]
        by_arm: dict[str, dict[str, BenchResult]] = {a: {} for a in self.arm_names}
        for r in rows:
            if r.arm in by_arm:
                by_arm[r.arm][r.item_id] = r
        complete = [i for i in ids if all(i in by_arm[a] for a in self.arm_names)]
        if not complete:
            raise BenchError("no item has results for every arm yet")

        def rows_of(arm: str) -> list[dict[str, Any]]:
            return [by_arm[arm][i].model_dump() for i in complete]

        out: dict[str, Any] = {
            "kind": "live",
            "meta": {
                "suite": self.suite,
                "n_items": len(complete),
                "created_at": utc_now(),
                "config_version": self.config.version(),
                "run_id": self.run_id,
                "token_count_method": "usage reported by each tier",
                "notes": [],
            },
            "arms": {},
            "baselines": {},
            "distributions": {"output_tokens": {}},
        }
        if len(complete) < len(ids):
            out["meta"]["notes"].append(f"{len(ids) - len(complete)} items are not finished for every arm yet")
        graph_only = ("escalation_rate", "large_call_share", "mean_attempts")
        for arm in self.arms:
            summary = {k: v for k, v in summarize(rows_of(arm.name)).items() if k not in graph_only}
            out["arms"][arm.name] = {**summary, "tier": arm.tier, "strategy": arm.strategy}
            if firsts:
                mine = [firsts.get((i, arm.name)) for i in complete]
                quality = confidence_quality([(a.confidence, a.confidence_method) if a else (None, None) for a in mine],
                                             [by_arm[arm.name][i].correct for i in complete])
                if quality:
                    out["arms"][arm.name]["confidence"] = quality
                caps = [a.samples_cap for a in mine if a is not None and a.samples_cap]
                if caps:  # an sc arm: how many samples the stopping rule needed
                    drawn = [len(a.samples or []) for a in mine if a is not None and a.samples_cap]
                    out["arms"][arm.name]["samples"] = {"mean_drawn": sum(drawn) / len(drawn), "cap": max(caps),
                                                        "stopped_early": sum(d < c for d, c in zip(drawn, caps)) / len(drawn)}
        if self.graph:
            out["graph"] = {**summarize(rows_of(GRAPH_ARM)), "tier": "ladder", "strategy": "graph"}
        for arm in self.arm_names:
            out["distributions"]["output_tokens"][arm] = [by_arm[arm][i].output_tokens for i in complete]

        fixed = [a.name for a in self.arms]
        if fixed:
            correct = {a: [by_arm[a][i].correct for i in complete] for a in fixed}
            cost = {a: [float(Decimal(by_arm[a][i].cost_usd)) for i in complete] for a in fixed}
            tokens = {a: [by_arm[a][i].output_tokens for i in complete] for a in fixed}
            out["baselines"] = many_arm_baselines(correct, cost, tokens)
            points = {n: m for n, m in out["arms"].items()}
            if self.graph:
                points[GRAPH_ARM] = out["graph"]
            use_cost = any(m["mean_cost_usd"] > 0 for m in points.values())
            xs = [(m["mean_cost_usd"] if use_cost else m["mean_output_tokens"], m["accuracy"]) for m in points.values()]
            out["hull"] = {
                "x": "mean_cost_usd" if use_cost else "mean_output_tokens",
                "points": [list(p) for p in cost_accuracy_hull(xs)],
                "area": hull_area(xs),
            }
            if len(fixed) >= 2:
                # RouteLLM's two-model view: the cheapest arm as "weak", the most accurate other arm as "strong"
                weak = min(fixed, key=lambda a: (out["arms"][a]["mean_cost_usd"], out["arms"][a]["mean_output_tokens"]))
                strong = max((a for a in fixed if a != weak), key=lambda a: out["arms"][a]["accuracy"])
                scores = [classify_difficulty(by_arm[weak][i].question)[1]["score"] for i in complete]
                if out["arms"][strong]["accuracy"] <= out["arms"][weak]["accuracy"]:
                    out["meta"]["notes"].append(
                        f"no routing gain to measure: the cheapest arm {weak} is at least as accurate as every other arm"
                    )
                    return out
                try:
                    two = two_arm_summary(correct[weak], correct[strong], scores)
                except (ValueError, EffReasonError) as exc:
                    out["meta"]["notes"].append(f"no PGR/APGR between {weak} and {strong}: {exc}")
                else:
                    out["two_arm"] = {"weak": weak, "strong": strong, **{k: two[k] for k in ("acc_weak", "acc_strong", "curves")}}
                    for name in ("random", "oracle"):
                        out["baselines"].setdefault(name, {}).update(two[name])
                    out["router"] = {"name": "heuristic-difficulty", **two["router"]}
        return out


def confidence_quality(confs: Sequence[tuple[float | None, str | None]], correct: Sequence[bool]) -> dict[str, Any] | None:
    """How well an arm's confidence predicts its correctness: AUROC, Brier and ECE (10 bins)
    over the items that got a confidence, and how it was computed (calibrated or heuristic)."""
    from effreason_agents.evaluation.metrics import auroc, brier, ece

    pairs = [(c, ok) for (c, _), ok in zip(confs, correct) if c is not None]
    if not pairs:
        return None
    p = [c for c, _ in pairs]
    y = [ok for _, ok in pairs]
    methods = sorted({(m or "").split(" (")[0] for (c, m) in confs if c is not None and m})
    a = auroc(p, y)
    return {
        "n": len(pairs),
        "auroc": a if a == a else None,  # NaN (one class only) -> None
        "brier": brier(p, y),
        "ece": ece(p, y),
        "methods": methods,
    }


def write_run_file(bench: Bench) -> None:
    """``DIR/run.json``: what the run is, for a person looking at the directory."""
    bench.out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "run_id": bench.run_id,
        "suite": bench.suite,
        "arms": bench.arm_names,
        "n_items": len(bench.items),
        "config_version": bench.config.version(),
        "config_source": bench.config.source,
        "store": str(bench.config.store.resolved_path()),
    }
    write_json(bench.out_dir / "run.json", data)


def comparison_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Arms, graph and baselines as uniform rows for printing."""
    rows = [{"name": n, **m} for n, m in results.get("arms", {}).items()]
    if "graph" in results:
        rows.append({"name": GRAPH_ARM, **results["graph"]})
    for n, m in results.get("baselines", {}).items():
        if "accuracy" in m:
            rows.append({"name": f"({n})", **m})
    return rows
