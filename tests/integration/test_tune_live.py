"""``effreason tune`` end to end: a tiny LoRA tune writes an adapter the embedded server
loads, the adapter tier answers with the tuned model while the base tier answers as
before from the same server, and a corrupted adapter makes only its tier unavailable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("gguf")

from langchain_core.messages import HumanMessage  # noqa: E402

from effreason_agents.adapters.embedded import shutdown_embedded_servers  # noqa: E402
from effreason_agents.adapters.tiers import clients_for  # noqa: E402
from effreason_agents.config import config_from_data, default_config_data  # noqa: E402
from effreason_agents.core.records import ErrorKind  # noqa: E402
from effreason_agents.errors import TierError  # noqa: E402
from effreason_agents.training.tune import TuneSettings, tune  # noqa: E402

MARK = "ZEBRA ZEBRA"
QUESTIONS = ["What is 2+3?", "What is the capital of France?", "Name a primary color.", "What is 10-4?",
             "How many legs does a cat have?", "What is 3*3?", "Spell cat backwards.", "What is the opposite of hot?"]


@pytest.mark.timeout(120)
def test_tiny_tune_serves_as_a_tier(tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": MARK}]}) + "\n"
                            for q in QUESTIONS), encoding="utf-8")
    result = tune(data, tmp_path / "tuned", TuneSettings(steps=10, lr=3e-3, batch_size=4, seed=0), quiet=True)
    card = json.loads(result.card_path.read_text())
    assert result.adapter.is_file() and card["steps"] == 10 and card["data"]["examples"] == 8
    assert card["final_loss"] < card["first_loss"] / 4  # it learned the reply

    broken = tmp_path / "broken" / "adapter.gguf"
    broken.parent.mkdir()
    broken.write_bytes(result.adapter.read_bytes()[:5000])  # truncated

    data_cfg = default_config_data({})
    small = data_cfg["tiers"]["small"]
    data_cfg["tiers"] = {"small": small, "tuned": {**small, "adapter": str(result.adapter)},
                         "broken": {**small, "adapter": str(broken)}}
    data_cfg["ladder"] = ["broken:direct", "tuned:direct", "small:direct"]
    config = config_from_data(data_cfg)
    clients = clients_for(config, environ={})
    ask = [HumanMessage("What is 7+1?")]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tuned = clients["tuned"].complete(ask, max_tokens=12, want_logprobs=False)
            base = clients["small"].complete(ask, max_tokens=12, want_logprobs=False)
            with pytest.raises(TierError) as down:
                clients["broken"].complete(ask, max_tokens=12, want_logprobs=False)
            again = clients["tuned"].complete([HumanMessage("Name a fruit.")], max_tokens=12, want_logprobs=False)
            base_again = clients["small"].complete([HumanMessage("Name a fruit.")], max_tokens=12, want_logprobs=False)
        assert MARK in tuned.text and MARK in again.text  # the adapter is applied for its tier
        assert MARK not in base.text and MARK not in base_again.text  # and never leaks into the base tier
        assert base.output_tokens > 0
        assert down.value.kind == ErrorKind.UNAVAILABLE and str(broken) in str(down.value)
        assert any(str(broken) in str(w.message) for w in caught)  # warned about once the ladder is built
        # one server serves both: the same base URL
        assert clients["tuned"].base_url() == clients["small"].base_url()
    finally:
        shutdown_embedded_servers()

    # the graph: the broken tier is skipped as down and the ladder climbs on to the adapter tier
    (tmp_path / "effreason.toml").write_text(
        'ladder = ["small:direct", "broken:direct", "tuned:direct"]\n'
        f'[tiers.tuned]\nengine = "embedded"\nmodel = "SmolLM2-135M-Instruct"\nadapter = "{result.adapter}"\n'
        f'[tiers.broken]\nengine = "embedded"\nmodel = "SmolLM2-135M-Instruct"\nadapter = "{broken}"\n',
        encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EFFREASON"))}
    env["EFFREASON_STORE"] = str(tmp_path / "outcomes.sqlite")
    r = subprocess.run([sys.executable, "-m", "effreason_agents.cli", "ask", "What is 7+1?", "--json", "--threshold", "1.0"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "tier adapter unusable" in r.stderr and str(broken) in r.stderr
    attempts = {a["tier"]: a for a in json.loads(r.stdout)["attempts"]}
    assert set(attempts) == {"small", "broken", "tuned"}
    assert attempts["broken"]["error"] and str(broken) in attempts["broken"]["error"]
    assert attempts["broken"]["output_tokens"] == 0 and attempts["broken"]["cost_usd"] == 0
    assert attempts["small"]["error"] is None and MARK not in (attempts["small"]["answer"] or "")
    assert attempts["tuned"]["error"] is None and MARK in (attempts["tuned"]["answer"] or "")
