"""The router's learning loop: ``router status`` on logged traffic, the ``target_share``
rolling threshold under shifting traffic, and ``router retrain`` (challenger vs champion
on the same held-out prompts, atomic swap only when better)."""

from __future__ import annotations

import json
import math
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from effreason_agents.adapters.router import Router
from effreason_agents.adapters.router_target import (
    ShareTracker,
    TargetedRouter,
    artifact_id,
    parse_since,
    router_score,
    seed_scores,
    targeted,
    traffic_summary,
)
from effreason_agents.adapters.store import BenchResult, BenchRun, OutcomeStore, RequestRecord
from effreason_agents.cli.app import app
from effreason_agents.engine import policy
from effreason_agents.errors import ConfigError, RouterError, RouterTrainError
from effreason_agents.evaluation.outcomes import OutcomeTable, load_store
from router_training import retrain as retrain_mod
from router_training.models import fit_router
from router_training.retrain import HOLDOUT_SALT, holdout_mask, retrain, target_from_card

from helpers import large_reply, make_config, small_reply

ARMS = ["small:direct", "large:cot"]
COSTS = {"small:direct": 0.00001, "large:cot": 0.001}
NOW = datetime.now(timezone.utc)


def _ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).isoformat(timespec="milliseconds")


# -- synthetic outcomes ----------------------------------------------------------------------


def _rows(n: int, seed: int = 0) -> list[tuple[str, bool, bool]]:
    """(prompt, small right, large right): the small arm is right on sums and wrong on dates,
    the large arm right on both, with a little noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            q = f"What is {int(rng.integers(1, 99))} plus {int(rng.integers(1, 99))}? sum item {seed}-{i}"
            out.append((q, bool(rng.random() < 0.92), bool(rng.random() < 0.95)))
        else:
            q = (f"Which date comes {int(rng.integers(1, 30))} days after March {int(rng.integers(1, 28))}? "
                 f"calendar item {seed}-{i}")
            out.append((q, bool(rng.random() < 0.08), bool(rng.random() < 0.92)))
    return out


def _table(rows: list[tuple[str, bool, bool]], shuffle: bool = False) -> OutcomeTable:
    labels = np.array([[w, s] for _, w, s in rows], dtype=float)
    if shuffle:  # the prompts keep their text, the labels lose any relation to it
        labels = labels[np.random.default_rng(7).permutation(len(labels))]
    return OutcomeTable([q for q, _, _ in rows], ARMS, labels, cost=np.tile([COSTS[a] for a in ARMS], (len(rows), 1)),
                        source="synthetic")


def _write_store(path: Path, rows: list[tuple[str, bool, bool]], *, run: str = "r1", when: str | None = None) -> Path:
    """Benchmark results of both arms on every prompt, recorded at ``when``."""
    with OutcomeStore(path) as store:
        store.open_bench_run(BenchRun(run_id=run, out_dir="out", suite="synthetic", config_version="v", arms=ARMS))
        for i, (q, w, s) in enumerate(rows):
            for arm, ok in zip(ARMS, (w, s)):
                rid = f"{run}-{i}-{arm}"
                stamp = when or _ago(hours=1)
                store.record(
                    RequestRecord(request_id=rid, question=q, status="answered", graph_version="g",
                                  config_version="c", started_at=stamp, finished_at=stamp),
                    [],
                    BenchResult(run_id=run, item_id=f"i{i}", arm=arm, request_id=rid, question=q, gold="1",
                                answer_type="number", correct=ok, cost_usd=str(COSTS[arm]), output_tokens=10,
                                created_at=stamp),
                )
    return path


def _champion(path: Path, rows: list[tuple[str, bool, bool]], *, shuffle: bool) -> Path:
    fitted = fit_router(_table(rows, shuffle=shuffle), "logistic", seed=0)
    return fitted.save(path, {"policy": {"kind": "threshold", "tau": 0.6, "costs": COSTS,
                                         "target": "at most 30% of calls to tier 'large', most accurate"}})


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def _strays(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, bool, bool]]:
    return _rows(400)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, bool, bool]]) -> Path:
    return _write_store(tmp_path_factory.mktemp("logs") / "outcomes.sqlite", rows)


# -- the rolling threshold -------------------------------------------------------------------


def test_realized_share_returns_to_the_target_after_the_traffic_shifts() -> None:
    rng = np.random.default_rng(0)
    tracker = ShareTracker(0.2, window=500)
    before = rng.normal(0.0, 1.0, 4000)
    after = rng.normal(2.0, 0.3, 4000)  # much harder traffic: every score is now far above the old threshold
    ups = [tracker.decide(float(x))[0] for x in before]
    old_threshold = tracker.threshold()
    assert old_threshold is not None
    assert abs(np.mean(ups[-2000:]) - 0.2) < 0.03
    ups_after = [tracker.decide(float(x))[0] for x in after]
    # a fixed threshold would now send almost everything up ...
    assert np.mean(after > old_threshold) > 0.95
    assert np.mean(ups_after[:100]) > 0.9
    # ... the rolling one brings the share back within about one window
    assert abs(np.mean(ups_after[-2000:]) - 0.2) < 0.03
    assert abs(tracker.realized_share() - 0.2) < 0.05  # type: ignore[operator]
    assert tracker.threshold() > 1.5  # type: ignore[operator]
    # and back again when the traffic gets easier
    ups_back = [tracker.decide(float(x))[0] for x in rng.normal(-1.0, 0.5, 4000)]
    assert np.mean(ups_back[:100]) < 0.05
    assert abs(np.mean(ups_back[-2000:]) - 0.2) < 0.03


def test_warm_up_ties_and_the_extreme_targets() -> None:
    t = ShareTracker(0.3, window=100, min_scores=10)
    for i in range(10):
        assert t.decide(float(i)) == (None, None)  # the artifact's policy decides meanwhile
    assert t.threshold() is not None
    # a router with one distinct score: ties go up with the probability that meets the target
    tied = ShareTracker(0.3, window=200, min_scores=10, seed=1)
    tied.extend([0.5] * 200)
    ups = [tied.decide(0.5)[0] for _ in range(4000)]
    assert abs(np.mean(ups) - 0.3) < 0.03
    never, always = ShareTracker(0.0, window=50, min_scores=5), ShareTracker(1.0, window=50, min_scores=5)
    for tr in (never, always):
        tr.extend(np.linspace(-1, 1, 50).tolist())
    assert not any(never.decide(x)[0] for x in (5.0, 0.0, -5.0))
    assert all(always.decide(x)[0] for x in (5.0, 0.0, -5.0))
    # NaN is judged (never up) but not buffered
    assert t.decide(math.nan)[0] is False and len(t) == 10
    with pytest.raises(RouterError, match="target_share"):
        ShareTracker(1.5)


def test_the_tracker_is_thread_safe() -> None:
    t = ShareTracker(0.25, window=300, min_scores=20)
    rng = np.random.default_rng(3)
    streams = [rng.normal(size=2000).tolist() for _ in range(6)]
    errors: list[BaseException] = []
    ups: list[bool | None] = []
    lock = threading.Lock()

    def work(xs: list[float]) -> None:
        try:
            got = [t.decide(x)[0] for x in xs]
            with lock:
                ups.extend(got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in streams]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(t) == 300 and len(ups) == 12000
    assert t._sorted == sorted(t._scores)  # the sorted copy matches the ring buffer
    assert abs(np.mean([u for u in ups if u is not None]) - 0.25) < 0.03


def test_router_score_is_strong_minus_weak_and_the_cheapest_versus_the_rest() -> None:
    score, cheap, rest = router_score({"a": 0.9, "b": 0.6}, {"a": 1.0, "b": 0.1}, ["a", "b"])
    assert (round(score, 6), cheap, rest) == (0.3, "b", ["a"])
    score, cheap, rest = router_score({"s": 0.2, "m": 0.5, "l": 0.7}, {"s": 0, "m": 1, "l": 5}, ["s", "m", "l"])
    assert (round(score, 6), cheap, rest) == (0.5, "s", ["m", "l"])
    with pytest.raises(RouterError, match="two candidate"):
        router_score({"a": 0.1}, {}, ["a"])


# -- the router with a target share ------------------------------------------------------------


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, bool, bool]]) -> Path:
    return _champion(tmp_path_factory.mktemp("router") / "r", rows, shuffle=False)


def _routed(store: OutcomeStore, rid: str, question: str, info: dict[str, Any], *, started: str, cost: str = "0.001",
            escalated: bool = False) -> None:
    store.record(RequestRecord(request_id=rid, question=question, status="answered", graph_version="g",
                               config_version="c", started_at=started, finished_at=started, total_cost_usd=cost,
                               escalated=escalated, extra={"features": {"type": "math", "router": info}}), [])


def test_router_choice_keeps_the_share_on_target_and_logs_its_score(router_dir: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path / "none.sqlite", router={"artifact": str(router_dir), "target_share": 0.1})
    router = Router.load(router_dir)
    wrapped = TargetedRouter(router, ShareTracker(0.1, window=200, min_scores=20))
    questions = [q for q, _, _ in _rows(300, seed=5)]
    # a stationary stream (the synthetic item numbers grow, and the scores of dates with them)
    questions = [questions[i] for i in np.random.default_rng(0).permutation(len(questions))]
    picks = [policy.router_choice(wrapped, q, ARMS, {}, config) for q in questions]
    infos = [info for _, info in picks]
    assert all(i["artifact"] == artifact_id(router.card) and i["target_share"] == 0.1 for i in infos)
    assert infos[0]["threshold"] is None and "warming up" in infos[0]["reason"]
    tracked = [(arm, i) for arm, i in picks[20:]]
    share = np.mean([arm == "large:cot" for arm, _ in tracked])
    # the card's tau 0.6 would send every date question (half the traffic) to the large arm
    assert abs(share - 0.1) < 0.05
    for arm, i in tracked:
        assert (arm == "large:cot") == (i["score"] > i["threshold"])
    plain = policy.router_choice(router, questions[1], ARMS, {}, config.model_copy(
        update={"router": config.router.model_copy(update={"target_share": None})}))
    assert plain is not None and "score" not in plain[1]


def test_seeding_reuses_logged_scores_of_the_same_artifact_and_rescores_others(router_dir: Path,
                                                                               tmp_path: Path) -> None:
    router = Router.load(router_dir)
    me = artifact_id(router.card)
    path = tmp_path / "outcomes.sqlite"
    with OutcomeStore(path) as store:
        for i in range(30):
            _routed(store, f"same-{i}", f"What is {i} plus 1?", {"choice": "small:direct", "score": 0.01 * i,
                                                                  "artifact": me}, started=_ago(minutes=60 - i))
        _routed(store, "old-artifact", "Which date comes 3 days after March 4?",
                {"choice": "large:cot", "score": 99.0, "artifact": "someoneelse"}, started=_ago(minutes=5))
        store.record(RequestRecord(request_id="unrouted", question="hi", status="answered", graph_version="g",
                                   config_version="c", started_at=_ago(minutes=1)), [])
    got = seed_scores(router, path, window=500, ladder=ARMS)
    assert len(got) == 31
    assert got[:30] == pytest.approx([0.01 * i for i in range(30)])  # oldest first
    probs = router.predict_one("Which date comes 3 days after March 4?")
    assert got[30] == pytest.approx(probs["large:cot"] - probs["small:direct"])  # scored again, not 99
    assert seed_scores(router, path, window=10, ladder=ARMS)[-1] == got[-1]
    assert seed_scores(router, tmp_path / "missing.sqlite", window=10) == []
    config = make_config(path, router={"artifact": str(router_dir), "target_share": 0.2, "target_window": 100})
    wrapped = targeted(router, config)
    assert len(wrapped.target) == 31 and wrapped.target.threshold() is not None


def test_the_graph_routes_by_the_target_and_a_restart_remembers(make_graph: Any, router_dir: Path,
                                                                tmp_path: Path) -> None:
    router = Router.load(router_dir)
    me = artifact_id(router.card)
    with OutcomeStore(tmp_path / "outcomes0.sqlite") as store:  # the first make_graph's store
        for i in range(100):  # recent scores: all between 0 and 0.99, so the 90% quantile is about 0.9
            _routed(store, f"seed-{i}", f"q{i}", {"choice": "small:direct", "score": i / 100, "artifact": me},
                    started=_ago(minutes=200 - i))
    h = make_graph(small=[small_reply("5", 0.9)], large=[large_reply("2024-03-09", 0.95)],
                   router={"artifact": str(router_dir), "target_share": 0.1})
    assert isinstance(h.services.router, TargetedRouter) and len(h.services.router.target) == 100
    r = h.ask("What is 2 + 3?")
    info = h.store().get_request(r["request_id"]).extra["features"]["router"]
    assert info["threshold"] == pytest.approx(0.9, abs=0.011) and info["artifact"] == me
    assert (info["choice"] == "large:cot") == (info["score"] > info["threshold"])
    with pytest.raises(ConfigError, match="target_share"):
        make_config(tmp_path / "x.sqlite", router={"artifact": str(router_dir), "target_share": 0.1, "tau": 0.5})


# -- status ----------------------------------------------------------------------------------


@pytest.fixture
def traffic(tmp_path: Path, router_dir: Path) -> Path:
    """A store with 10 routed requests in the last day (3 graded), 1 unrouted one and 5 routed
    ones two weeks ago."""
    path = tmp_path / "traffic.sqlite"
    me = artifact_id(Router.load(router_dir).card)
    with OutcomeStore(path) as store:
        store.open_bench_run(BenchRun(run_id="b", out_dir="o", suite="s", config_version="v", arms=["graph"]))
        for i in range(10):
            arm = "large:cot" if i < 3 else "small:direct"
            cost = "0.002" if arm == "large:cot" else "0.0001"
            _routed(store, f"r{i}", f"question {i}", {"choice": arm, "p_correct": {}, "score": 0.1 * i,
                                                      "threshold": 0.35 + 0.01 * i, "artifact": me},
                    started=_ago(hours=20 - i), cost=cost, escalated=i == 9)
        for i in range(3):
            store.record(RequestRecord(request_id=f"g{i}", question=f"graded {i}", status="answered",
                                       graph_version="g", config_version="c", started_at=_ago(hours=2),
                                       extra={"features": {"router": {"choice": "small:direct"}}}), [],
                         BenchResult(run_id="b", item_id=f"i{i}", arm="graph", request_id=f"g{i}",
                                     question=f"graded {i}", gold="1", answer_type="number", correct=i != 0))
        store.record(RequestRecord(request_id="plain", question="hello", status="answered", graph_version="g",
                                   config_version="c", started_at=_ago(hours=1)), [])
        for i in range(5):
            _routed(store, f"old{i}", f"old {i}", {"choice": "large:cot"}, started=_ago(days=14))
    return path


def test_status_reports_realized_shares_cost_and_accuracy_against_the_card(traffic: Path, router_dir: Path) -> None:
    card = json.loads((router_dir / "card.json").read_text())
    r = traffic_summary(card, traffic, since=timedelta(days=7), now=NOW, tiers={"small:direct": "small",
                                                                                "large:cot": "large"},
                        target_share=0.2)
    assert r["requests"] == 14 and r["routed"] == 13
    assert r["share"] == pytest.approx({"small:direct": 10 / 13, "large:cot": 3 / 13})
    assert r["tier_share"] == pytest.approx({"small": 10 / 13, "large": 3 / 13})
    assert r["cheapest"] == "small:direct" and r["above_cheapest"] == pytest.approx(3 / 13)
    assert float(r["mean_cost_usd"]) == pytest.approx((3 * 0.002 + 7 * 0.0001) / 13)  # the graded ones cost 0
    assert r["escalated"] == pytest.approx(1 / 13)
    assert r["graded"] == 3 and r["accuracy"] == pytest.approx(2 / 3)
    assert r["threshold"] == pytest.approx(0.44)  # the newest logged one
    assert r["expected"]["share"] == {} and r["policy"]["target"].startswith("at most 30%")
    card["policy"].update(cost_unit="usd", expected={"share": {"small:direct": 0.75, "large:cot": 0.25},
                                                     "accuracy": 0.9, "mean_cost": 0.0003})
    r = traffic_summary(card, traffic, since=timedelta(days=7), now=NOW)
    assert r["expected"]["tier_share"] == {"small": 0.75, "large": 0.25} and r["expected"]["above_cheapest"] == 0.25
    assert r["expected"]["accuracy"] == 0.9 and r["expected"]["mean_cost"] == 0.0003
    assert any("include escalations" in n for n in r["notes"])
    wide = traffic_summary(card, traffic, since=timedelta(days=30), now=NOW)
    assert wide["routed"] == 18
    empty = traffic_summary(card, traffic, since=timedelta(minutes=30), now=NOW)
    assert empty["routed"] == 0 and "no routed traffic in the last 30m" in empty["notes"][0]
    with pytest.raises(RouterError, match="no outcome store"):
        traffic_summary(card, traffic.with_name("nowhere.sqlite"), since=timedelta(days=1))


def _config_file(tmp_path: Path, store: Path, artifact: Path | None) -> Path:
    text = f'[store]\npath = "{store}"\n'
    if artifact is not None:
        text += f'[router]\nartifact = "{artifact}"\ntarget_share = 0.25\n'
    p = tmp_path / "effreason.toml"
    p.write_text(text)
    return p


def test_router_status_command(traffic: Path, router_dir: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("EFFREASON")]:
        monkeypatch.delenv(var)
    cfg = _config_file(tmp_path, traffic, router_dir)
    runner = CliRunner()
    r = runner.invoke(app, ["router", "status", "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["routed"] == 13 and doc["target_share"] == 0.25 and doc["artifact"] == str(router_dir)
    r = runner.invoke(app, ["router", "status", "--config", str(cfg)])
    assert r.exit_code == 0 and "13 routed" in r.stdout and "accuracy" in r.stdout
    r = runner.invoke(app, ["router", "status", "--config", str(cfg), "--since", "1m"])
    assert r.exit_code == 0 and "no routed traffic in the last 1m" in r.stdout
    for bad in ("7x", "-3d", "0h", "week"):
        r = runner.invoke(app, ["router", "status", "--config", str(cfg), "--since", bad])
        assert r.exit_code == 1 and "--since must be" in r.stderr and "7d" in r.stderr
    r = runner.invoke(app, ["router", "status", "--config", str(_config_file(tmp_path, traffic, None))])
    assert r.exit_code == 1 and "no router artifact" in r.stderr
    r = runner.invoke(app, ["router", "status", "--config", str(cfg), "--artifact", str(tmp_path)])
    assert r.exit_code == 1 and "no card.json" in r.stderr


def test_parse_since() -> None:
    assert parse_since("30m") == timedelta(minutes=30)
    assert parse_since(" 12h ") == timedelta(hours=12)
    assert parse_since("7d") == timedelta(days=7) and parse_since("2W") == timedelta(weeks=2)
    assert parse_since("1.5h") == timedelta(minutes=90)
    for bad in ("", "7", "d", "7 days", "-1d", "0s", "1y"):
        with pytest.raises(RouterError, match="--since must be"):
            parse_since(bad)
    with pytest.raises(RouterError, match="more than 100 years"):
        parse_since("99999999999999999999w")


# -- retrain ---------------------------------------------------------------------------------


def test_holdout_is_a_stable_share_by_prompt() -> None:
    prompts = [f"prompt {i}" for i in range(5000)]
    mask = holdout_mask(prompts)
    assert abs(mask.mean() - 0.2) < 0.02
    assert (holdout_mask(prompts[:100] + ["new one"])[:100] == mask[:100]).all()  # per prompt, not per table
    assert not (holdout_mask(prompts, salt="other") == mask).all()
    with pytest.raises(RouterTrainError):
        holdout_mask(prompts, 1.0)


def test_target_from_card() -> None:
    assert target_from_card({"policy": {"target": "at most 20% of calls to tier 'large', most accurate"}})[
        "max_share"] == ("large", 0.2)
    assert target_from_card({"policy": {"target": "mean cost per query at most 0.0005, most accurate"}})[
        "max_mean_cost"] == 0.0005
    assert target_from_card({"policy": {"target": "accuracy at least 0.85, cheapest"}})["min_accuracy"] == 0.85
    assert target_from_card({"policy": {"target": "the most accurate, cheapest on ties"}}) == {
        "max_share": None, "max_mean_cost": None, "min_accuracy": None}
    spec = {"policy": {"target": "at most 12% of calls to tier 'large'", "target_spec": {"max_share": ["large", 0.125]}}}
    assert target_from_card(spec)["max_share"] == ("large", 0.125)


def test_load_store_since_keeps_only_recent_results(tmp_path: Path) -> None:
    path = _write_store(tmp_path / "o.sqlite", _rows(20, seed=1), run="old", when=_ago(days=30))
    _write_store(path, _rows(10, seed=2), run="new", when=_ago(hours=2))
    assert len(load_store(path)) == 30
    recent = load_store(path, since=NOW - timedelta(days=7))
    assert len(recent) == 10 and "results since" in recent.source
    with pytest.raises(Exception, match="no benchmark results"):
        load_store(path, since=NOW - timedelta(minutes=5))


def test_a_better_challenger_replaces_a_shuffled_champion_atomically(tmp_path: Path, store_path: Path,
                                                                     rows: list[tuple[str, bool, bool]]) -> None:
    root = _champion(tmp_path / "router", rows, shuffle=True)
    old = _files(root)
    (tmp_path / "router.prev").mkdir()
    (tmp_path / "router.prev" / "stale").write_text("an older previous router")
    r = retrain(store_path, root, kinds=["logistic"], k=3, min_prompts=100, n_boot=300)
    assert r["decision"] == "replaced", r
    c = r["comparison"]
    assert r["metric"] == "apgr" and c["diff_low"] > 0 and c["diff"] > 0.1
    assert r["challenger"]["apgr"] > r["champion"]["apgr"]
    assert r["holdout"]["champion_may_have_seen"] is True and r["holdout"]["n"] == holdout_mask(
        [q for q, _, _ in rows]).sum()
    assert r["challenger"]["policy"]["target"].startswith("at most 30% of calls to tier 'large'")  # kept the target
    # the previous artifact is complete and loads; the older one is gone
    prev = tmp_path / "router.prev"
    assert r["previous"] == str(prev) and _files(prev) == old
    Router.load(prev)
    new = Router.load(root)
    assert new.card["training"]["holdout"] == {"salt": HOLDOUT_SALT, "share": 0.2}
    assert new.card["retrain"]["decision"] == "replaced" and new.card["policy"]["target_spec"]["max_share"] == [
        "large", 0.3]
    held = {q for q, m in zip([q for q, _, _ in rows], holdout_mask([q for q, _, _ in rows])) if m}
    assert new.card["training"]["n_prompts"] == len(rows) - len(held)  # trained without the held-out prompts
    assert not _strays(tmp_path)


def test_an_equal_challenger_keeps_the_champion(tmp_path: Path, store_path: Path) -> None:
    root = tmp_path / "router"
    root.mkdir()
    first = retrain(store_path, root, kinds=["logistic"], k=3, min_prompts=100, n_boot=200)
    assert first["decision"] == "installed" and first["comparison"] is None and first["previous"] is None
    installed = _files(root)
    again = retrain(store_path, root, kinds=["logistic"], k=3, min_prompts=100, n_boot=200)
    # the same logs fit the same router: no difference, so no swap
    assert again["decision"] == "kept", again
    assert again["comparison"]["diff"] == pytest.approx(0.0) and not again["comparison"]["diff_low"] > 0
    assert again["holdout"]["champion_may_have_seen"] is False
    assert _files(root) == installed and not (tmp_path / "router.prev").exists()
    assert not _strays(tmp_path)


def test_a_failure_mid_write_leaves_the_champion_intact(tmp_path: Path, store_path: Path,
                                                        rows: list[tuple[str, bool, bool]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = _champion(tmp_path / "router", rows, shuffle=True)
    (tmp_path / "router.prev").mkdir()
    (tmp_path / "router.prev" / "card.json").write_text("{}")
    old, old_prev = _files(root), _files(tmp_path / "router.prev")

    def broken_card(*a: Any, **kw: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(retrain_mod, "write_json", broken_card)
    with pytest.raises(OSError, match="No space"):
        retrain(store_path, root, kinds=["logistic"], k=3, min_prompts=100, n_boot=100)
    assert _files(root) == old and _files(tmp_path / "router.prev") == old_prev and not _strays(tmp_path)
    monkeypatch.undo()

    real_replace = os.replace

    def failing_last_rename(src: Any, dst: Any) -> None:
        if ".challenger." in str(src):
            raise OSError(5, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(retrain_mod.os, "replace", failing_last_rename)
    with pytest.raises(OSError, match="I/O error"):
        retrain(store_path, root, kinds=["logistic"], k=3, min_prompts=100, n_boot=100)
    monkeypatch.undo()
    assert _files(root) == old and _files(tmp_path / "router.prev") == old_prev and not _strays(tmp_path)
    Router.load(root)


def test_retrain_refuses_with_clear_errors_and_replaces_nothing(tmp_path: Path, store_path: Path,
                                                                rows: list[tuple[str, bool, bool]]) -> None:
    with pytest.raises(RouterTrainError, match="does not exist; create it"):
        retrain(store_path, tmp_path / "nowhere", kinds=["logistic"])
    assert not (tmp_path / "nowhere").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "card.json").write_text("{not json")
    (bad / "weights.npz").write_bytes(b"junk")
    with pytest.raises(RouterTrainError, match="cannot be loaded.*Nothing was replaced"):
        retrain(store_path, bad, kinds=["logistic"])
    assert (bad / "card.json").read_text() == "{not json"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RouterTrainError, match="holds no router artifact"):
        retrain(store_path, other, kinds=["logistic"])
    root = _champion(tmp_path / "router", rows, shuffle=True)
    old = _files(root)
    with pytest.raises(RouterTrainError, match="only 400 prompts.*--min-prompts 1000"):
        retrain(store_path, root, kinds=["logistic"], min_prompts=1000)
    with pytest.raises(RouterTrainError, match="no benchmark results"):
        retrain(store_path, root, kinds=["logistic"], since=NOW)
    wide = tmp_path / "w.csv"
    wide.write_text("prompt,a,b\nq1,1,0\n")
    with pytest.raises(RouterTrainError, match="--since filters the outcome store"):
        retrain(wide, root, since=NOW - timedelta(days=1))
    assert _files(root) == old and not _strays(tmp_path)


def test_router_retrain_command_prints_the_comparison(tmp_path: Path, store_path: Path,
                                                      rows: list[tuple[str, bool, bool]]) -> None:
    root = _champion(tmp_path / "router", rows, shuffle=True)
    runner = CliRunner()
    r = runner.invoke(app, ["router", "retrain", "--data", str(store_path), "--artifact", str(root), "--model",
                            "logistic", "--cv", "3", "--min-prompts", "100", "--n-boot", "200", "--since", "7d"])
    assert r.exit_code == 0, r.output
    assert "challenger - champion (APGR)" in r.stdout and "replaced:" in r.stdout
    assert f"previous router kept in {tmp_path / 'router.prev'}" in r.stdout.replace("\n", "")
    r = runner.invoke(app, ["router", "retrain", "--data", str(store_path), "--artifact", str(root), "--model",
                            "logistic", "--since", "soon"])
    assert r.exit_code == 1 and "--since must be" in r.stderr
    r = runner.invoke(app, ["router", "retrain", "--data", str(store_path), "--artifact", str(tmp_path / "x"),
                            "--json"])
    assert r.exit_code == 1 and "does not exist" in r.stderr


def _three_arm_file(path: Path, n: int, seed: int = 0) -> Path:
    """A long JSONL file: small is right on sums, medium on sums and some dates, large on
    everything, each with its cost."""
    rng = np.random.default_rng(seed)
    lines = []
    for q, w, s in _rows(n, seed):
        date = "calendar" in q
        medium = bool(rng.random() < (0.5 if date else 0.95))
        for arm, ok, cost in (("small:direct", w, 0.00001), ("medium:cot", medium, 0.0002),
                              ("large:cot", s, 0.001)):
            lines.append(json.dumps({"prompt": q, "arm": arm, "correct": ok, "cost_usd": cost}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_hull_matches_the_many_arm_report(tmp_path: Path) -> None:
    from effreason_agents.evaluation.outcomes import load_long
    from router_training.evaluate import costs_for, many_arm_report
    from router_training.retrain import compare_hull

    table = load_long(_three_arm_file(tmp_path / "t.jsonl", 120))
    costs, _ = costs_for(table)
    rng = np.random.default_rng(0)
    good = np.clip(table.correct * 0.8 + 0.1 + rng.normal(0, 0.05, table.correct.shape), 0, 1)
    noise = rng.random(table.correct.shape)
    c = compare_hull(table, good, noise, costs, n_boot=200)
    assert c["hull_area"] == pytest.approx(many_arm_report(table, good, costs)["policy"]["hull_area"])
    assert c["baseline_hull_area"] == pytest.approx(many_arm_report(table, noise, costs)["policy"]["hull_area"])
    assert c["diff_low"] > 0 and c["p_better"] > 0.95
    same = compare_hull(table, good, good, costs, kind="lambda", n_boot=50)
    assert same["diff"] == same["diff_low"] == same["diff_high"] == 0.0 and same["p_better"] == 0.0


def test_many_arms_are_compared_by_hull_area(tmp_path: Path) -> None:
    from effreason_agents.evaluation.outcomes import load_long

    data = _three_arm_file(tmp_path / "logs.jsonl", 800)
    table = load_long(data)
    root = fit_router(_table_like(table, shuffle=True), "logistic", seed=0).save(
        tmp_path / "router", {"policy": {"kind": "threshold", "tau": 0.6, "costs": {a: 0.0 for a in table.arms}}})
    r = retrain(data, root, kinds=["logistic"], k=3, min_prompts=100, n_boot=300)
    assert r["metric"] == "hull_area" and r["decision"] == "replaced", r
    assert r["comparison"]["diff_low"] > 0 and r["challenger"]["hull_area"] > r["champion"]["hull_area"]
    assert Router.load(root).arms == table.arms and (tmp_path / "router.prev" / "card.json").is_file()


def _table_like(table: OutcomeTable, shuffle: bool) -> OutcomeTable:
    labels = table.correct[np.random.default_rng(7).permutation(len(table))] if shuffle else table.correct
    return OutcomeTable(list(table.prompts), list(table.arms), labels, source="shuffled")
