"""CostCallbackHandler, cost_callback and the trace-label helpers, with LangChain's fake chat model."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from effreason_agents.langchain.callbacks import (
    CostCallbackHandler,
    attempt_config,
    cost_callback,
    run_metadata,
    run_tags,
    traced_config,
)
from effreason_agents.config import Config, config_from_data


def make_config(tmp: Path) -> Config:
    common = {"engine": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"}
    return config_from_data({
        "tiers": {
            "small": {**common, "model": "small-model", "price_input_per_1m": "0.10", "price_output_per_1m": "0.20"},
            "large": {**common, "model": "gpt-4o-mini", "price_input_per_1m": "0.15", "price_output_per_1m": "0.60"},
        },
        "strategies": {"direct": {"kind": "direct", "max_tokens": 24}},
        "ladder": ["small:direct", "large:direct"],
        "store": {"path": str(tmp / "outcomes.sqlite")},
    }, source="test")


def msg(model: str, i: int, o: int, text: str = "ok") -> AIMessage:
    return AIMessage(text, usage_metadata={"input_tokens": i, "output_tokens": o, "total_tokens": i + o},
                     response_metadata={"model_name": model})


def fake(*messages: AIMessage, **kw: Any) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(messages), **kw)


def test_prices_by_tier_and_by_table(tmp_path: Path) -> None:
    cb = CostCallbackHandler(make_config(tmp_path), prices={"other-model": ("1", "2")})
    cfg = {"callbacks": [cb]}
    fake(msg("small-model", 1000, 100)).invoke("q", cfg)
    fake(msg("gpt-4o-mini-2024-07-18", 1000, 100)).invoke("q", cfg)  # served name with a date suffix
    fake(msg("other-model", 1000, 1000)).invoke("q", cfg)
    fake(msg("mystery", 5, 5)).invoke("q", cfg)
    assert cb.cost_by_tier == {"small": Decimal("0.00012"), "large": Decimal("0.00021")}
    assert cb.cost_by_model["other-model"] == Decimal("0.003")
    assert cb.total_cost_usd == Decimal("0.00012") + Decimal("0.00021") + Decimal("0.003")
    assert cb.unpriced_models == {"mystery"}
    assert cb.by_tier["small"]["total_tokens"] == 1100
    s = cb.summary()
    assert s["total_cost_usd"] == "0.00333" and s["input_tokens"] == 3005 and s["output_tokens"] == 1205
    assert s["models"]["small-model"] == {"calls": 1, "input_tokens": 1000, "output_tokens": 100, "cost_usd": "0.00012"}
    assert s["tiers"]["large"]["cost_usd"] == "0.00021" and s["unpriced_models"] == ["mystery"]


def test_tier_label_in_run_metadata_wins(tmp_path: Path) -> None:
    cb = CostCallbackHandler(make_config(tmp_path))
    model = fake(msg("served-by-proxy", 1_000_000, 0), metadata=run_metadata(tier="large"))
    model.invoke("q", {"callbacks": [cb]})
    assert cb.cost_by_tier == {"large": Decimal("0.15")}


def test_usage_metadata_matches_get_usage_metadata_callback(tmp_path: Path) -> None:
    replies = [msg("small-model", 10, 2), msg("gpt-4o-mini", 30, 4), msg("small-model", 7, 1)]
    with get_usage_metadata_callback() as ucb, cost_callback(make_config(tmp_path)) as cb:
        for r in replies:
            fake(r).invoke("q")
    assert cb.usage_metadata == ucb.usage_metadata
    assert cb.usage_metadata["small-model"]["input_tokens"] == 17
    assert isinstance(cb, BaseCallbackHandler)


def test_cost_callback_counts_only_inside_its_block(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with cost_callback(config) as outer:
        fake(msg("small-model", 10, 0)).invoke("q")
        with cost_callback(config) as inner:
            fake(msg("small-model", 20, 0)).invoke("q")
    fake(msg("small-model", 40, 0)).invoke("q")
    assert inner.usage_metadata["small-model"]["input_tokens"] == 20
    assert outer.usage_metadata["small-model"]["input_tokens"] == 30
    assert outer.cost_by_tier["small"] == Decimal("0.000003")


def test_thread_safe_totals(tmp_path: Path) -> None:
    cb = CostCallbackHandler(make_config(tmp_path))

    def work() -> None:
        for _ in range(200):
            gen = ChatGeneration(message=msg("small-model", 1, 1))
            cb.on_llm_end(LLMResult(generations=[[gen]]), run_id=uuid.uuid4())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cb.usage_metadata["small-model"]["total_tokens"] == 3200
    assert cb.total_cost_usd == Decimal("0.0000003") * 1600
    assert cb.calls_by_model["small-model"] == 1600


def test_failed_calls_are_not_counted(tmp_path: Path) -> None:
    cb = CostCallbackHandler(make_config(tmp_path))
    with pytest.raises(Exception):
        GenericFakeChatModel(messages=iter([])).invoke("q", {"callbacks": [cb]})
    assert cb.total_cost_usd == 0 and cb.usage_metadata == {} and cb._runs == {}


def test_run_metadata_and_tags() -> None:
    md = run_metadata(arm="small:direct", tier="small", confidence=0.8, cost_usd=Decimal("0.00012"), strategy=None)
    assert md == {"effreason_arm": "small:direct", "effreason_tier": "small", "effreason_confidence": 0.8,
                  "effreason_cost_usd": "0.00012"}
    assert run_tags(arm="small:direct", tier="small") == ["effreason:arm=small:direct", "effreason:tier=small"]


def test_traced_config_merges_and_reaches_the_model_run(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    class Spy(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
            seen.append({"metadata": kw.get("metadata"), "tags": kw.get("tags")})

    base = {"configurable": {"thread_id": "t1"}, "metadata": {"app": "x"}, "tags": ["mine"], "callbacks": [Spy()]}
    cfg = traced_config(base, arm="small:direct", tier="small", difficulty="easy", tags=["extra"])
    assert cfg["configurable"] == {"thread_id": "t1"}
    assert cfg["metadata"]["app"] == "x" and cfg["metadata"]["effreason_difficulty"] == "easy"
    assert set(cfg["tags"]) >= {"mine", "extra", "effreason:tier=small", "effreason:arm=small:direct"}
    fake(msg("small-model", 1, 1)).invoke("q", cfg)
    assert seen[0]["metadata"]["effreason_arm"] == "small:direct" and "effreason:tier=small" in seen[0]["tags"]


def test_attempt_config_from_a_planned_arm() -> None:
    arm = {"name": "small:cot", "tier": "small", "strategy": "cot", "max_tokens": 256}
    cfg = attempt_config(arm, difficulty="medium", confidence=0.42)
    assert cfg["metadata"] == {"effreason_arm": "small:cot", "effreason_tier": "small", "effreason_strategy": "cot",
                               "effreason_difficulty": "medium", "effreason_confidence": 0.42}
    assert attempt_config({"arm": "large:cod", "tier": "large"})["metadata"]["effreason_arm"] == "large:cod"
