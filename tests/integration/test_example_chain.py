"""examples/chain.py (prompt | ChatCostAware() | StrOutputParser()) runs offline on the embedded model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chain.py"


def test_chain_example(tmp_path: Path, cli_env) -> None:  # noqa: ANN001
    p = subprocess.run([sys.executable, str(EXAMPLE), "What is 2 + 3?"], env=cli_env(), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "question: What is 2 + 3?"
    assert lines[1].startswith("answer: ") and len(lines[1]) > len("answer: ")
    assert lines[2].startswith("cost: $") and "arms small:" in lines[2] and "answered by " in lines[2]
    assert lines[3].startswith("chain.invoke -> '")
    assert (tmp_path / "outcomes.sqlite").exists()  # both calls were logged in the outcome store
