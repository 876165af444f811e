"""examples/agent.py and CostAwareMiddleware against the real embedded server (SmolLM2-135M)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from langchain.agents import create_agent
from langchain_core.messages import AIMessage

from effreason_agents.langchain.callbacks import cost_callback
from effreason_agents.config import load_config
from effreason_agents.adapters.ledger import Scope
from effreason_agents.langchain.middleware import CostAwareMiddleware
from effreason_agents.graph.nodes import Services

ROOT = Path(__file__).resolve().parents[2]


def test_example_agent_runs_offline(cli_env: Callable[..., dict[str, str]]) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent.py"), "What is 6 * 7?", "--budget-usd", "0.01"],
        env=cli_env(), cwd=str(ROOT), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("answer: ") for line in lines), proc.stdout
    assert any(line.startswith("tier: small") for line in lines), proc.stdout
    assert any(line.startswith("cost: $0 for ") for line in lines), proc.stdout  # the embedded tier is free


def test_middleware_on_the_embedded_tier(embedded_server: Any, tmp_path: Path) -> None:
    config = load_config(environ={"EFFREASON_STORE": str(tmp_path / "outcomes.sqlite")})
    services = Services(config, environ={})
    try:
        mw = CostAwareMiddleware(services=services, max_tokens=32)
        agent = create_agent(model=mw.base_model(), tools=[], middleware=[mw])
        with cost_callback(config) as cb:
            out = agent.invoke({"messages": [("user", "What is 2 + 3?")]}, {"configurable": {"thread_id": "it"}},
                               context={"user_id": "ann"})
        final = out["messages"][-1]
        assert isinstance(final, AIMessage)
        info = final.response_metadata["effreason"]
        assert info["tier"] == "small" and info["difficulty"] == "easy" and info["cost_usd"] == "0"
        assert info["confidence"] is not None  # the embedded tier returns logprobs
        usage = final.usage_metadata
        assert usage["output_tokens"] <= 32
        for scope in (Scope("thread", "it"), Scope("user", "ann")):
            spent = services.ledger.spent(scope)
            assert (spent.output_tokens, spent.total_tokens) == (usage["output_tokens"], usage["total_tokens"])
            assert services.ledger.reserved(scope).total_tokens == 0
        assert cb.by_tier["small"]["total_tokens"] == usage["total_tokens"]
    finally:
        services.close()
