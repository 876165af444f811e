"""CLI helpers that need no model: rendering, the package's shape, the command listing."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

CLI_DIR = Path(__file__).resolve().parents[2] / "effreason_agents" / "cli"
LONG_ARM = "very-long-tier-name-for-a-hosted-model:concise-cot"


def render(renderable: Any, width: int = 80) -> list[str]:
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False).print(renderable)
    return buffer.getvalue().splitlines()


def test_demo_states_the_threshold_in_use() -> None:
    from effreason_agents.cli.demo import threshold_text
    from effreason_agents.config import config_from_data, default_config_data

    data = default_config_data()
    assert "calibrated" in threshold_text(config_from_data(data, source="t")) and "0.5" in threshold_text(
        config_from_data(data, source="t"))
    data.setdefault("escalation", {})["confidence_threshold"] = 0.4
    assert threshold_text(config_from_data(data, source="t")) == "0.4"


@pytest.mark.parametrize("amount", ["0", "0.000123", "0.004", Decimal("1.5"), 0.25, None])
def test_money_is_the_one_formatter(amount: Any) -> None:
    from effreason_agents.cli.render import money
    from effreason_agents.core.money import format_usd

    assert money(amount) == format_usd(amount, symbol=True)


def test_chat_budget_line_shows_cost_and_what_is_left() -> None:
    from effreason_agents.cli.chat import chat_budget_line

    meta = {"cost_usd": "0.004", "output_tokens": 12, "status": "answered",
            "remaining": {"thread": {"max_cost_usd": {"limit": "0.005", "remaining": "0.001"}}}}
    assert chat_budget_line(meta, Decimal("0.004")) == "cost $0.0040 · 12 output tokens · thread remaining $0.0010 of $0.0050"
    line = chat_budget_line({"cost_usd": "0", "status": "budget_exhausted"}, Decimal("0.0123"))
    assert line == "cost $0 · 0 output tokens · thread total $0.0123 · status budget_exhausted"


def attempt(arm: str, answer: str, cost: str) -> dict[str, Any]:
    return {"arm": arm, "tier": arm.split(":")[0], "model": "m", "strategy": arm.split(":")[1], "input_tokens": 3000,
            "output_tokens": 1200, "cost_usd": cost, "latency_s": 12.1, "confidence": 0.93, "finish_reason": "length",
            "answer": answer}


def test_attempts_table_stays_readable_at_80_columns_with_long_names() -> None:
    from effreason_agents.cli.render import attempts_table

    result = {"final_attempt": 1, "attempts": [attempt("small:direct", "5", "0"),
                                               attempt(LONG_ARM, "the answer is a long sentence", "0.000123")]}
    lines = render(attempts_table(result))
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "small:direct" in text and "3000/1200" in text and "$0.000123" in text and "12.10s" in text
    assert "…" not in text  # nothing cut: long names wrap
    assert any(line.lstrip().startswith("1*") for line in lines)


def test_comparison_table_keeps_numbers_whole_at_80_columns() -> None:
    from effreason_agents.cli.render import comparison_table

    results = {"kind": "live", "baselines": {}, "arms": {
        LONG_ARM: {"accuracy": 0.9, "mean_output_tokens": 1234.4, "p90_output_tokens": 2000, "mean_cost_usd": 0.000123,
                   "p50_latency_s": 12.2, "tokens_per_correct": 1400, "escalation_rate": 0.25},
        "small:direct": {"accuracy": 0.5, "mean_output_tokens": 3, "mean_cost_usd": 0.0}}}
    lines = render(comparison_table(results, title="live · s · 2 items"))
    assert max(len(line) for line in lines) <= 80
    row = next(line for line in lines if "0.90" in line)
    assert row.split()[1:] == ["0.90", "1234.4", "2000", "$0.000123", "12.20", "1400", "25%"]
    assert "…" not in "\n".join(lines)


def test_requests_table_fits_80_columns() -> None:
    from effreason_agents.adapters.store import RequestRecord
    from effreason_agents.cli.render import requests_table

    row = RequestRecord(request_id="r", question="What is the sum of 1234 and 5678 when multiplied by three?",
                        final_answer="20736000000", status="budget_exhausted", arms_tried=["small:direct", "large:cot"],
                        escalated=True, total_output_tokens=12345, total_cost_usd="0.000123", graph_version="g",
                        config_version="c", started_at="2025-01-01T10:00:00Z", finished_at="2025-01-01T10:00:05Z")
    lines = render(requests_table([row], "last 1 requests"))
    assert max(len(line) for line in lines) <= 80
    data = next(line for line in lines if "10:00" in line)
    assert data.split()[-4:] == ["budget_exhausted", "2↑", "12345", "$0.000123"]
    assert "What is the sum" in data


def test_result_json_has_float_costs() -> None:
    from effreason_agents.cli.render import result_json

    result = {"answer": "5", "status": "answered", "escalated": False, "difficulty": "easy", "total_cost_usd": "0.000123",
              "total_input_tokens": 3000, "total_output_tokens": 1200, "request_id": "r",
              "attempts": [attempt("small:cot", "5", "0.000123")]}
    doc = result_json(result)
    assert doc["total_cost_usd"] == 0.000123 and doc["attempts"][0]["cost_usd"] == 0.000123
    assert doc["attempts"][0]["truncated"] is False and doc["attempts"][0]["error"] is None


def cli_modules() -> list[Path]:
    return sorted(p for p in CLI_DIR.glob("*.py"))


@pytest.mark.parametrize("path", cli_modules(), ids=lambda p: p.name)
def test_cli_modules_declare_all_and_import_no_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    names = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    assert "__all__" in names, f"{path.name} declares no __all__"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("effreason_agents"):
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            assert not private, f"{path.name} imports private {private} from {node.module}"


def test_the_package_exports_app_and_main() -> None:
    import effreason_agents.cli as cli
    from effreason_agents.cli.app import app, main

    assert cli.__all__ == ["app", "main"] and cli.app is app and cli.main is main


def test_every_command_is_listed() -> None:
    from effreason_agents.cli import app

    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0, r.output
    for command in ("ask", "chat", "demo", "bench", "report", "calibrate", "serve-local", "budget", "log", "router"):
        assert f"│ {command} " in r.output, command
    r = CliRunner().invoke(app, ["budget", "--help"])
    assert all(f"│ {c} " in r.output for c in ("show", "release-stale", "fit")), r.output


def test_python_m_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "effreason_agents.cli", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("effreason-agents ")


def test_help_paragraphs_are_not_broken_by_hard_line_breaks() -> None:
    """The help renderer keeps newlines: a command's help is one line per paragraph, or
    ``--help`` shows lines cut in the middle at 80 columns."""
    import typer

    from effreason_agents.cli import app

    def walk(command: Any, name: str) -> list[tuple[str, Any]]:
        found = [(name, command)]
        if hasattr(command, "commands"):  # a group
            for sub_name, sub in command.commands.items():
                found += walk(sub, f"{name} {sub_name}")
        return found

    commands = walk(typer.main.get_command(app), "effreason")
    assert len(commands) >= 17
    for name, command in commands:
        help_text = (command.help or "").strip()
        assert help_text, f"{name} has no help"
        for paragraph in help_text.split("\n\n"):
            assert "\n" not in paragraph.strip(), f"{name}: {paragraph!r}"
