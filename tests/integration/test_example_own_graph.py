"""examples/own_graph.py runs offline on the embedded model: the reasoning node inside a
user graph with a SQLite checkpointer, and progress events on the custom stream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_graph.py"


def test_own_graph_example(tmp_path: Path, cli_env) -> None:  # noqa: ANN001
    p = subprocess.run([sys.executable, str(EXAMPLE), "What is 2 + 3?"], env=cli_env(), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "progress: {'event': 'arm_chosen'" in out and "progress: {'event': 'done'" in out
    assert out.index("step: prepare") < out.index("step: reason") < out.index("step: report")
    assert "reply: " in out and "checkpointed steps: " in out
