"""langgraph.json points `langgraph dev` / LangGraph Server at importable graphs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _graphs() -> dict[str, str]:
    return json.loads((ROOT / "langgraph.json").read_text())["graphs"]


@pytest.mark.parametrize("name", sorted(_graphs()))
def test_langgraph_json_graphs_import_without_starting_anything(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no effreason.toml here: the built-in default config
    monkeypatch.delenv("EFFREASON_CONFIG", raising=False)
    from effreason_agents.adapters import embedded

    before = dict(embedded._servers)
    file, attr = _graphs()[name].split(":")
    spec = importlib.util.spec_from_file_location(f"graph_{name}", ROOT / file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    graph = getattr(module, attr)
    expected = {"reasoner": {"classify", "solve", "assess", "escalate", "finalize", "log"}, "chatbot": {"respond"}}
    assert expected.get(name, set()) <= set(graph.get_graph().nodes)
    assert embedded._servers == before, "importing a graph must not start the embedded server"
