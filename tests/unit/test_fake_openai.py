"""The loopback fake OpenAI server the budget tests rely on, spoken to with the OpenAI SDK:
each mode answers as documented, and ``calls`` counts only the HTTP 200 answers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import openai
import pytest

from fake_openai import ANSWER_TOKENS, FakeOpenAI, o200k_tokens

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "你好世界 1234567890"}]
O200K = sum(o200k_tokens(m["content"]) for m in MESSAGES)


def client(server: FakeOpenAI, key: str = "sk-local") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=10)


def ask(server: FakeOpenAI, **kw: Any) -> Any:
    return client(server).chat.completions.create(model="fake", messages=MESSAGES, **kw)  # type: ignore[arg-type]


def test_ok_answers_with_usage_and_logprobs(fake_openai: FakeOpenAI) -> None:
    r = ask(fake_openai, max_tokens=24, logprobs=True, top_logprobs=2)
    (choice,) = r.choices
    assert choice.message.content == "The answer is 5.\n#### 5" and choice.finish_reason == "stop"
    assert [t.token for t in choice.logprobs.content] == list(ANSWER_TOKENS)
    assert all(t.logprob == -0.01 and len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (O200K + 4 * len(MESSAGES), len(ANSWER_TOKENS))
    assert fake_openai.calls == 1 and fake_openai.requests[0]["max_tokens"] == 24


def test_max_tokens_cuts_the_reply_and_n_gives_choices(fake_openai: FakeOpenAI) -> None:
    r = ask(fake_openai, max_tokens=3, n=2)
    assert [c.message.content for c in r.choices] == ["The answer is"] * 2
    assert {c.finish_reason for c in r.choices} == {"length"}
    assert r.usage.completion_tokens == 6 and r.choices[0].logprobs is None


def test_over_report_counts_more_prompt_tokens_than_o200k(make_fake_openai: Callable[..., FakeOpenAI]) -> None:
    r = ask(make_fake_openai("over_report"))
    assert r.usage.prompt_tokens == math.ceil(1.4 * O200K) + 4 * len(MESSAGES)


def test_usage_missing_or_unreadable(make_fake_openai: Callable[..., FakeOpenAI]) -> None:
    assert ask(make_fake_openai("no_usage")).usage is None
    bad = make_fake_openai("bad_usage")
    first, second = ask(bad).usage, ask(bad).usage
    assert first.prompt_tokens < 0 and second.prompt_tokens == "many"
    assert bad.calls == 2


def test_errors_are_not_counted_as_calls(make_fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = make_fake_openai("error_500")
    with pytest.raises(openai.InternalServerError):
        ask(server)
    server.mode = "error_with_key"
    with pytest.raises(openai.BadRequestError, match="sk-quoted-key"):
        client(server, key="sk-quoted-key").chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]
    assert (server.calls, server.received) == (0, 2)
    assert server.authorization[1] == "Bearer sk-quoted-key"


def test_streams_one_token_per_chunk_with_usage_last(make_fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = make_fake_openai("ok")
    chunks = list(client(server).chat.completions.create(  # type: ignore[call-overload]
        model="fake", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, max_tokens=5))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is 5"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert server.calls == 1 and server.streamed_chunks == len(chunks)


def test_slow_answers_after_the_delay_and_times_a_client_out(make_fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = make_fake_openai("slow", slow_s=5)
    fast_client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        fast_client.chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]
    server.slow_s = 0.05
    assert ask(server).choices[0].message.content.endswith("#### 5")


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        FakeOpenAI("flaky")
