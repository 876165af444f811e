"""Adaptive sampling against the real embedded llama.cpp server (n = 2 choices per request)."""

from __future__ import annotations

import openai

from effreason_agents.config import EmbeddedConfig, config_from_data, default_config_data
from effreason_agents.embedded import EmbeddedServer
from effreason_agents.sampling import per_choice_usage, per_choice_usage_with_method, sample_until_settled
from effreason_agents.tiers import TierClient, cost_usd

PROMPT = [{"role": "user", "content": "What is 2 + 3? Give the final answer after ####."}]


def _small_client(settings: EmbeddedConfig) -> TierClient:
    data = default_config_data({})
    data["embedded"] = settings.model_dump()
    config = config_from_data(data)
    return TierClient("small", config.tiers["small"], config, environ={})


def test_llamacpp_usage_covers_one_choice_only(embedded_server: EmbeddedServer) -> None:
    api = openai.OpenAI(base_url=embedded_server.base_url, api_key="not-needed")
    raw = api.chat.completions.create(
        model=embedded_server.model_name, messages=PROMPT, n=2, logprobs=True, max_tokens=40, temperature=0.8, seed=7
    ).model_dump()
    assert len(raw["choices"]) == 2
    counts, method = per_choice_usage_with_method(raw)
    assert method == "logprobs" and all(c > 0 for c in counts)
    reported = raw["usage"]["completion_tokens"]
    # llama.cpp's usage is one choice's count, not the sum over both
    assert reported in counts
    assert sum(counts) > reported


def test_sample_until_settled_live(embedded_server: EmbeddedServer, embedded_settings: EmbeddedConfig) -> None:
    client = _small_client(embedded_settings)
    assert client.base_url() == embedded_server.base_url  # reuses the session's server
    r = sample_until_settled(client, PROMPT, max_tokens=40, temperature=0.8, cap=6)
    assert 1 <= r.samples_drawn <= r.cap == 6
    assert r.stopped_by in ("rule", "cap")
    assert r.requests == -(-r.samples_drawn // 2)  # two choices per request (n_parallel = 2)
    assert r.token_count_method == "logprobs"
    assert len(r.per_choice_tokens) == r.samples_drawn
    assert r.output_tokens == sum(r.per_choice_tokens)
    assert r.output_tokens > r.reported_output_tokens  # usage covered one choice per request
    assert r.input_tokens > 0
    assert r.cost_usd == cost_usd(client.tier, r.input_tokens, r.output_tokens)
    # the logprob counts agree with re-tokenizing the text, up to the EOS token and merges
    for text, n in zip(r.texts, r.per_choice_tokens):
        assert abs(client.count_tokens(text) - n) <= max(2, n // 10)


def test_per_choice_usage_tokenizer_method_live(embedded_server: EmbeddedServer) -> None:
    api = openai.OpenAI(base_url=embedded_server.base_url, api_key="not-needed")
    raw = api.chat.completions.create(
        model=embedded_server.model_name, messages=PROMPT, n=2, max_tokens=30, temperature=0.8
    ).model_dump()
    counts, method = per_choice_usage_with_method(raw, embedded_server.count_tokens)
    assert method == "tokenizer" and len(counts) == 2
    assert counts == per_choice_usage(raw, embedded_server.count_tokens)
