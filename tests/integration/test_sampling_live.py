"""Adaptive sampling against the real embedded llama.cpp server: n = 2 choices per request,
and two concurrent single-choice requests per round when the tier is configured without ``n``.

Run these under the embedded-model lock (2 cores: concurrent model runs thrash):
``flock /tmp/effreason-embedded.lock .venv/bin/python -m pytest tests/integration/test_sampling_live.py``."""

from __future__ import annotations

import openai

from effreason_agents.config import (
    EmbeddedConfig,
    StrategyConfig,
    config_from_data,
    default_config_data,
)
from effreason_agents.adapters.embedded import EmbeddedServer
from effreason_agents.engine.sampling import (
    SampleResult,
    per_choice_usage,
    per_choice_usage_with_method,
    sample_until_settled,
)
from effreason_agents.core.prompts import DIRECT_PREFIX, build_prompt
from effreason_agents.adapters.tiers import TierClient, cost_usd
from effreason_agents.core.records import TokenLogprob

PROMPT = [{"role": "user", "content": "What is 2 + 3? Give the final answer after ####."}]


def _small_client(settings: EmbeddedConfig, *, n: bool = True) -> TierClient:
    data = default_config_data({})
    data["embedded"] = settings.model_dump()
    data["tiers"]["small"]["capabilities"]["n"] = n
    config = config_from_data(data)
    return TierClient("small", config.tiers["small"], config, environ={})


def _check_representative(r: SampleResult, top_logprobs: int) -> None:
    """The representative fields agree with the samples."""
    assert len(r.finish_reasons) == len(r.texts) == len(r.answers) == r.samples_drawn
    assert all(f in ("stop", "length") for f in r.finish_reasons)
    assert r.truncated_share == sum(f == "length" for f in r.finish_reasons) / r.samples_drawn
    if r.answer is None:
        assert r.representative_index is None and r.representative_logprobs is None
        return
    i = r.representative_index
    assert i is not None and r.answers[i] == r.answer and r.answer not in r.answers[:i]
    lps = r.representative_logprobs
    assert lps is not None and all(isinstance(t, TokenLogprob) for t in lps)
    assert len(lps) == r.per_choice_tokens[i]  # one entry per generated token of that sample
    assert "".join(t.token for t in lps) == r.texts[i][len(r.prefill) :]
    assert all(0 < len(t.top) <= top_logprobs for t in lps)


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
    _check_representative(r, client.tier.capabilities.top_logprobs)


def test_fixed_rule_with_prefilled_direct_prompt_live(embedded_server: EmbeddedServer, embedded_settings: EmbeddedConfig) -> None:
    client = _small_client(embedded_settings)
    prompt = build_prompt(StrategyConfig(kind="direct", max_tokens=16), "What is 2 + 3?", client.tier.capabilities)
    r = sample_until_settled(
        client, prompt.messages, max_tokens=16, temperature=0.7, cap=5, rule="fixed", stop=prompt.stop
    )
    assert r.rule == "fixed" and r.stopped_by == "cap"
    assert r.samples_drawn == 5 and r.requests == 3  # n = 2, 2, 1
    assert r.prefill == DIRECT_PREFIX and all(t.startswith(DIRECT_PREFIX) for t in r.texts)
    assert r.output_tokens == sum(r.per_choice_tokens)
    _check_representative(r, client.tier.capabilities.top_logprobs)


def test_concurrent_requests_without_n_live(embedded_server: EmbeddedServer, embedded_settings: EmbeddedConfig) -> None:
    client = _small_client(embedded_settings, n=False)
    assert client.base_url() == embedded_server.base_url
    r = sample_until_settled(client, PROMPT, max_tokens=30, temperature=0.8, cap=4, rule="fixed")
    assert r.samples_drawn == 4 and r.requests == 4  # two rounds of two concurrent requests
    assert r.token_count_method == "logprobs"
    # one choice per response: the server's own usage matches the per-choice counts
    assert r.output_tokens == sum(r.per_choice_tokens) == r.reported_output_tokens
    assert r.cost_usd == cost_usd(client.tier, r.input_tokens, r.output_tokens)
    _check_representative(r, client.tier.capabilities.top_logprobs)


def test_per_choice_usage_tokenizer_method_live(embedded_server: EmbeddedServer) -> None:
    api = openai.OpenAI(base_url=embedded_server.base_url, api_key="not-needed")
    raw = api.chat.completions.create(
        model=embedded_server.model_name, messages=PROMPT, n=2, max_tokens=30, temperature=0.8
    ).model_dump()
    counts, method = per_choice_usage_with_method(raw, embedded_server.count_tokens)
    assert method == "tokenizer" and len(counts) == 2
    assert counts == per_choice_usage(raw, embedded_server.count_tokens)
