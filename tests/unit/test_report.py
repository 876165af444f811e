"""Benchmark reports: results.json, report.md and the plots, written atomically and re-rendered."""

from __future__ import annotations

import copy
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from effreason_agents.errors import EffReasonError
from effreason_agents.core.money import format_usd
from effreason_agents.evaluation.report import ReportError, pareto_front, render_report, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def arm(acc: float, tokens: float, cost: float, tier: str, strategy: str, **extra: Any) -> dict[str, Any]:
    return {
        "accuracy": acc,
        "mean_output_tokens": tokens,
        "p90_output_tokens": tokens * 1.5,
        "mean_cost_usd": cost,
        "p50_latency_s": 0.05 if tier == "small" else 0.8,
        "p90_latency_s": 0.09 if tier == "small" else 1.6,
        "tokens_per_correct": tokens / acc if acc else None,
        "n": 20,
        "tier": tier,
        "strategy": strategy,
        **extra,
    }


def live_results(*, free: bool = False) -> dict[str, Any]:
    k = 0.0 if free else 1.0
    return {
        "kind": "live",
        "meta": {
            "suite": "builtin",
            "n_items": 20,
            "created_at": "2025-06-01T12:00:00Z",
            "config_version": "abc123",
            "command": "effreason bench --suite builtin --limit 20",
            "token_count_method": "usage reported by each tier",
            "notes": ["2 items are not finished for every arm yet"],
        },
        "arms": {
            "small:direct": arm(0.55, 6.2, 0.0, "small", "direct"),
            "small:cot": arm(0.45, 71.0, 0.0, "small", "cot"),  # dominated: dearer in tokens, worse
            "large:cod": arm(0.85, 40.0, k * 0.000123, "large", "cod"),
            "large:cot": arm(0.95, 190.0, k * 0.000456, "large", "cot", p50_latency_s=float("nan")),
        },
        "graph": arm(0.9, 30.0, k * 0.0000612, "ladder", "graph",
                     escalation_rate=0.35, large_call_share=0.3, mean_attempts=1.4),
        "baselines": {
            "oracle": {"accuracy": 0.97, "mean_cost_usd": k * 0.00005, "mean_output_tokens": 20.0,
                       "apgr": 0.83, "cpt50": 0.2, "cpt80": 0.35},
            "random": {"accuracy": 0.7, "mean_cost_usd": k * 0.0002, "mean_output_tokens": 77.0,
                       "apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8},
        },
        "router": {"name": "heuristic-difficulty", "apgr": 0.61, "cpt50": 0.31, "cpt80": None},
        "two_arm": {
            "weak": "small:direct", "strong": "large:cot", "acc_weak": 0.55, "acc_strong": 0.95,
            "curves": {
                "random": [[c / 10, c / 10] for c in range(11)],
                "oracle": [[c / 10, min(1.0, c / 10 * 2.5)] for c in range(11)],
                "router": [[c / 10, min(1.0, (c / 10) ** 0.6)] for c in range(11)],
            },
        },
        "hull": {"points": [[0.0, 0.55], [0.0000612, 0.9], [0.000456, 0.95]], "area": 0.8123},
        "distributions": {"output_tokens": {
            "small:direct": [5, 6, 6, 7, 8] * 4,
            "small:cot": [60, 70, 71, 80, 74] * 4,
            "large:cod": [30, 40, 45, 38, 47] * 4,
            "large:cot": [150, 190, 200, 220, 190] * 4,
            "graph": [6, 6, 40, 45, 53] * 4,
        }},
    }


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, (path, len(data))


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


# -- write_report -----------------------------------------------------------------------


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "run1"  # created on demand
    paths = write_report(live_results(), out)
    assert set(paths) == {"results", "report", "frontier", "tokens", "pgr"}
    for key, name in [("results", "results.json"), ("report", "report.md"), ("frontier", "frontier.png"),
                      ("tokens", "tokens.png"), ("pgr", "pgr.png")]:
        assert paths[key] == out / name
        assert paths[key].is_file()
    for key in ("frontier", "tokens", "pgr"):
        assert_png(paths[key])
    assert leftovers(out) == []


def test_results_json_round_trips_with_nan_as_null(tmp_path: Path) -> None:
    results = live_results()
    results["arms"]["small:direct"]["tokens_per_correct"] = float("inf")
    results["arms"]["large:cod"]["mean_cost_usd"] = Decimal("0.000123")
    before = copy.deepcopy(results)
    write_report(results, tmp_path)

    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["arms"]["large:cot"]["p50_latency_s"] is None
    assert data["arms"]["small:direct"]["tokens_per_correct"] is None
    assert data["arms"]["large:cod"]["mean_cost_usd"] == pytest.approx(0.000123)
    assert data["two_arm"]["curves"]["router"][3] == [0.3, pytest.approx(0.3**0.6)]
    assert data["kind"] == "live" and data["meta"]["suite"] == "builtin"
    # the caller's dict is left alone
    assert math.isnan(results["arms"]["large:cot"]["p50_latency_s"])
    assert results["arms"]["large:cod"]["mean_cost_usd"] == before["arms"]["large:cod"]["mean_cost_usd"]


def test_report_md_contents(tmp_path: Path) -> None:
    write_report(live_results(), tmp_path)
    md = (tmp_path / "report.md").read_text()
    first = md.splitlines()[0]
    assert first.startswith("# Live benchmark") and "builtin" in first and "20 items" in first
    assert "2025-06-01T12:00:00Z" in first
    for name in ("small:direct", "small:cot", "large:cod", "large:cot", "graph", "oracle", "random"):
        assert name in md
    for acc in ("55.0%", "45.0%", "85.0%", "95.0%", "90.0%", "97.0%", "70.0%"):
        assert acc in md
    # dollars by the one formatter (core.money.format_usd(symbol=True)): micro-dollar resolution
    assert "$0.000123" in md and "$0.000456" in md and "$0.000061" in md
    assert "35.0%" in md and "30.0%" in md  # escalation rate, large-tier call share
    # the routing table: APGR and CPT as a share of strong calls, — when never reached
    assert "| policy | APGR | CPT(50%) | CPT(80%) |" in md
    assert "| random | 0.500 | 50.0% | 80.0% |" in md
    assert "| oracle | 0.830 | 20.0% | 35.0% |" in md
    assert "| router `heuristic-difficulty` | 0.610 | 31.0% | — |" in md
    assert "0.812" in md  # hull area
    assert "usage reported by each tier" in md
    assert "2 items are not finished" in md
    assert "effreason bench --suite builtin --limit 20" in md
    for image in ("frontier.png", "tokens.png", "pgr.png"):
        assert f"]({image})" in md  # relative links
    # the dominated arm is not on the Pareto front summary line
    front_line = next(line for line in md.splitlines() if "Pareto front" in line)
    assert "`small:cot`" not in front_line and "`graph`" in front_line
    # every table row has the header's number of columns
    header = next(line for line in md.splitlines() if line.startswith("| arm |"))
    rows = [line for line in md.splitlines() if line.startswith("| `") or line.startswith("| **") or line.startswith("| *")]
    assert rows and all(r.count(" | ") == header.count(" | ") for r in rows)


def test_zero_cost_falls_back_to_output_tokens(tmp_path: Path) -> None:
    results = live_results(free=True)
    results.pop("hull")
    write_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "mean output tokens instead of cost" in md
    assert "![Accuracy vs output tokens](frontier.png)" in md
    assert "output tokens–accuracy Pareto front" in md
    assert_png(tmp_path / "frontier.png")

    from effreason_agents.evaluation.report import _View

    view = _View(json.loads((tmp_path / "results.json").read_text()))
    assert view.x_metric == "mean_output_tokens" and view.x_fallback
    assert "tokens stand in for cost" in view.x_label()
    assert "tokens" in view.x_label() and "USD" not in view.x_label()
    assert _View(live_results()).x_label() == "mean cost per query (USD)"


def test_no_distributions_skips_histogram_with_a_note(tmp_path: Path) -> None:
    results = live_results()
    write_report(results, tmp_path)
    assert (tmp_path / "tokens.png").exists()
    del results["distributions"]
    del results["two_arm"]
    paths = write_report(results, tmp_path)
    assert "tokens" not in paths and "pgr" not in paths
    assert not (tmp_path / "tokens.png").exists()  # a stale plot from the earlier run is not left behind
    assert not (tmp_path / "pgr.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "tokens.png" not in md and "pgr.png" not in md
    assert "no histogram" in md
    # routing figures without curves still get their table
    assert "| router `heuristic-difficulty` | 0.610 |" in md


def test_minimal_replay_results(tmp_path: Path) -> None:
    results = {
        "kind": "replay",
        "arms": {},
        "baselines": {"random": {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8},
                      "oracle": {"apgr": 0.9, "cpt50": 0.1, "cpt80": None}},
        "router": {"name": "mf", "apgr": 0.62, "cpt50": 0.336, "cpt80": 0.7},
        "two_arm": {"weak": "mixtral", "strong": "gpt-4", "acc_weak": 0.6, "acc_strong": 0.9,
                    "curves": {"random": [[0, 0], [1, 1]], "router": [[0, 0], [0.5, 0.7], [1, 1]]}},
    }
    paths = write_report(results, tmp_path)
    assert set(paths) == {"results", "report", "pgr"}  # nothing to put on a frontier
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Replay of logged outcomes")
    assert "| router `mf` | 0.620 | 33.6% | 70.0% |" in md
    assert "| oracle | 0.900 | 10.0% | — |" in md
    assert "No arm was measured." in md
    assert_png(paths["pgr"])


def test_empty_arms_with_accuracy_baselines(tmp_path: Path) -> None:
    results = {"kind": "live", "arms": {}, "baselines": {"oracle": {"accuracy": 0.5, "mean_cost_usd": 0.001,
                                                                   "mean_output_tokens": 10}}}
    paths = write_report(results, tmp_path)
    assert "frontier" in paths
    assert "*oracle* (baseline)" in (tmp_path / "report.md").read_text()


# -- render_report ----------------------------------------------------------------------


def test_render_report_recreates_from_results_json_alone(tmp_path: Path) -> None:
    write_report(live_results(), tmp_path)
    original = (tmp_path / "report.md").read_text()
    for name in ("report.md", "frontier.png", "tokens.png", "pgr.png"):
        (tmp_path / name).unlink()

    paths = render_report(tmp_path)
    assert set(paths) == {"results", "report", "frontier", "tokens", "pgr"}
    assert (tmp_path / "report.md").read_text() == original
    for key in ("frontier", "tokens", "pgr"):
        assert_png(paths[key])
    assert leftovers(tmp_path) == []


def test_render_report_accepts_str_path(tmp_path: Path) -> None:
    write_report(live_results(), tmp_path)
    assert render_report(str(tmp_path))["report"] == tmp_path / "report.md"


def test_render_report_missing_results_json(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="results.json") as info:
        render_report(tmp_path)
    assert str(tmp_path / "results.json") in str(info.value)
    assert isinstance(info.value, EffReasonError) and isinstance(info.value, ValueError)
    with pytest.raises(ReportError, match="results.json"):
        render_report(tmp_path / "does-not-exist")


def test_render_report_invalid_results_json(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"kind": "live", "arms": {')
    with pytest.raises(ReportError) as info:
        render_report(tmp_path)
    assert str(path) in str(info.value) and "not a readable results file" in str(info.value)

    path.write_text(json.dumps({"kind": "live", "arms": {}}))
    with pytest.raises(ReportError, match="baselines") as info:
        render_report(tmp_path)
    assert str(path) in str(info.value)
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("missing", ["kind", "arms", "baselines"])
def test_write_report_missing_required_key(tmp_path: Path, missing: str) -> None:
    results = live_results()
    del results[missing]
    with pytest.raises(ReportError, match=f"missing required key '{missing}'"):
        write_report(results, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"kind": "offline"}, "'kind' must be one of"),
        ({"arms": []}, "'arms' must be a dict"),
        ({"arms": {"small:direct": 0.5}}, r"arms\['small:direct'\] must be a dict"),
        ({"graph": [1, 2]}, "'graph' must be a dict"),
    ],
)
def test_write_report_bad_shapes(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_report({**live_results(), **patch}, tmp_path)


def test_write_report_refuses_a_file_as_out_dir(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ReportError, match="not a directory"):
        write_report(live_results(), target)


# -- atomicity --------------------------------------------------------------------------


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import effreason_agents.adapters.atomic as atomic

    write_report(live_results(), tmp_path)
    before = (tmp_path / "report.md").read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)  # every atomic write goes through it
    changed = live_results()
    changed["meta"]["suite"] = "other"
    with pytest.raises(OSError, match="disk full"):
        write_report(changed, tmp_path)
    assert (tmp_path / "report.md").read_bytes() == before
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["suite"] == "builtin"
    assert leftovers(tmp_path) == []


def test_rewrite_leaves_no_temp_files(tmp_path: Path) -> None:
    for _ in range(2):
        write_report(live_results(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "frontier.png", "pgr.png", "report.md", "results.json", "tokens.png"]


# -- pure helpers -----------------------------------------------------------------------


def test_pareto_front_basic() -> None:
    pts = [("a", 0.0, 0.5), ("b", 1.0, 0.4), ("c", 2.0, 0.9), ("d", 1.5, 0.7), ("e", 3.0, 0.9)]
    assert pareto_front(pts) == [("a", 0.0, 0.5), ("d", 1.5, 0.7), ("c", 2.0, 0.9)]


def test_pareto_front_edge_cases() -> None:
    assert pareto_front([]) == []
    assert pareto_front([("only", 1.0, 0.2)]) == [("only", 1.0, 0.2)]
    # same cost: only the more accurate; same accuracy: only the cheaper
    assert pareto_front([("x", 1.0, 0.5), ("y", 1.0, 0.6)]) == [("y", 1.0, 0.6)]
    assert pareto_front([("x", 1.0, 0.6), ("y", 2.0, 0.6)]) == [("x", 1.0, 0.6)]
    # identical points do not dominate each other
    assert pareto_front([("p", 1.0, 0.6), ("q", 1.0, 0.6)]) == [("p", 1.0, 0.6), ("q", 1.0, 0.6)]
    # unsorted input, non-finite values ignored
    pts = [("z", 5.0, 1.0), ("nan", float("nan"), 0.99), ("w", 0.1, 0.1), ("none", None, 1.0)]
    assert pareto_front(pts) == [("w", 0.1, 0.1), ("z", 5.0, 1.0)]  # type: ignore[list-item]
    # the cheapest-and-best point dominates everything
    assert pareto_front([("best", 0.0, 1.0), ("a", 1.0, 0.9), ("b", 0.0, 0.5)]) == [("best", 0.0, 1.0)]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "$0"),
        (0.0, "$0"),
        (0.000123, "$0.000123"),
        (0.0000612, "$0.000061"),
        (0.0123, "$0.0123"),
        (0.5, "$0.5000"),
        (1.5, "$1.50"),
        (1234.5, "$1,234.50"),
        (Decimal("0.00042"), "$0.00042"),
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_report_dollars_use_the_one_formatter(value: Any, text: str) -> None:
    """The report shows dollars as core.money.format_usd(symbol=True) does (it has no formatter of its own)."""
    import effreason_agents.evaluation.report as report

    assert format_usd(value, symbol=True) == text
    assert report.format_usd is format_usd and "format_usd" not in report.__all__
