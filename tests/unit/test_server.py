"""The OpenAI-compatible server over real HTTP (uvicorn on loopback) against a loopback fake
upstream: the wire format, keys, budgets, streaming, disconnects and every error status."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from budget_helpers import fake_tier, hold_counts, ledger_rows, make_config
from fake_openai import FakeOpenAI

from effreason_agents.adapters.keys import KeyStore
from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.core.records import Scope
from effreason_agents.server import create_app

Q = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture()
def setup(tmp_path: Path, make_fake_openai: Callable[..., FakeOpenAI], serve_app: Callable[[Any], str]) -> Any:
    """``setup(auth=True, **config)`` → (base_url, fake upstream, config)."""

    def make(auth: bool = True, mode: str = "ok", **kw: Any) -> tuple[str, FakeOpenAI, Any]:
        fake = make_fake_openai(mode)
        config = make_config(tmp_path, {"small": fake_tier(fake.base_url),
                                        "large": fake_tier(fake.base_url, price_in="10", price_out="40")},
                             ["small:direct", "large:direct"], **kw)
        return serve_app(create_app(config, auth=auth, max_body_bytes=20_000)), fake, config

    return make


def key(config: Any, name: str = "app", **kw: Any) -> str:
    with KeyStore(config.ledger_path()) as keys:
        return keys.create(name, **kw)[0]


def client(base: str, secret: str = "none", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=0, **kw)


def post(base: str, body: Any, secret: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {secret}"} if secret else {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(base + "/v1/chat/completions", content=content, headers=headers | kw.pop("headers", {}),
                      timeout=30, **kw)


def settled(config: Any) -> dict[str, int]:
    """Holds in the ledger by status (statuses with none left out)."""
    return {k: v for k, v in hold_counts(config.ledger_path()).items() if v}


# -- answers --------------------------------------------------------------------------


def test_graph_answers_with_usage_effreason_field_and_headers(setup: Any) -> None:
    base, fake, config = setup()
    secret = key(config, budget_usd="1")
    raw = client(base, secret).chat.completions.with_raw_response.create(model="effreason", messages=Q)  # type: ignore[arg-type]
    r = raw.parse()
    assert r.choices[0].message.content == "5" and r.choices[0].finish_reason == "stop"
    info = r.model_extra["effreason"]
    assert info["arms_tried"] == ["small:direct"] and info["escalated"] is False and info["status"] == "answered"
    assert Decimal(info["cost_usd"]) > 0 and Decimal(info["remaining_usd"]["user"]) == 1 - Decimal(info["cost_usd"])
    assert r.usage.completion_tokens == 10 and r.usage.total_tokens == r.usage.prompt_tokens + 10
    assert raw.headers["x-effreason-arms"] == "small:direct" and raw.headers["x-effreason-cost-usd"] == info["cost_usd"]
    assert raw.headers["x-effreason-remaining-user-usd"] == info["remaining_usd"]["user"]
    assert fake.calls == 1 and settled(config) == {"committed": 1}


def test_pinned_tier_is_one_call_on_that_tier_logged_in_the_store(setup: Any) -> None:
    base, fake, config = setup()
    secret = key(config)
    r = client(base, secret).chat.completions.create(
        model="effreason/large", messages=[{"role": "system", "content": "Be brief."}, *Q], max_tokens=4,
        temperature=0.3, stop=["\n"])  # type: ignore[arg-type]
    assert r.choices[0].message.content == "The answer is " and r.choices[0].finish_reason == "length"
    assert r.model_extra["effreason"]["arms_tried"] == ["large:pinned"]
    sent = fake.requests[-1]
    assert (sent.get("max_completion_tokens") or sent.get("max_tokens")) == 4 and sent["temperature"] == 0.3 and sent["stop"] == ["\n"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    time.sleep(0.3)  # the store write runs after the reply
    with OutcomeStore(config.store.resolved_path(), read_only=True) as store:
        req = store.get_request(r.model_extra["effreason"]["request_id"])
        assert req is not None and req.arms_tried == ["large:pinned"] and req.user_id.startswith("key:")
        assert req.total_output_tokens == 4


def test_models_lists_the_graph_and_each_usable_tier(setup: Any) -> None:
    base, _, config = setup()
    ids = [m.id for m in client(base, key(config)).models.list()]
    assert ids == ["effreason", "effreason/large", "effreason/small"]


def test_tools_and_response_format_are_passed_through(setup: Any) -> None:
    base, fake, config = setup()
    secret = key(config)
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
    client(base, secret).chat.completions.create(model="effreason/small", messages=Q, tools=[tool],
                                                 tool_choice="auto")  # type: ignore[arg-type, list-item]
    assert fake.requests[-1]["tools"] == [tool] and fake.requests[-1]["tool_choice"] == "auto"
    r = client(base, secret).chat.completions.create(model="effreason", messages=Q, tools=[tool])  # type: ignore[arg-type, list-item]
    assert fake.requests[-1]["tools"][0]["function"]["name"] == "add" and r.choices[0].message.content
    client(base, secret).chat.completions.create(model="effreason", messages=Q,
                                                 response_format={"type": "json_object"})  # type: ignore[arg-type]
    assert fake.requests[-1]["response_format"] == {"type": "json_object"}


def test_tool_round_trip_messages_are_accepted(setup: Any) -> None:
    base, fake, config = setup()
    messages = [*Q, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "5"}]
    r = client(base, key(config)).chat.completions.create(model="effreason/small", messages=messages)  # type: ignore[arg-type]
    assert r.choices[0].message.content
    sent = fake.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "add" and sent[2]["tool_call_id"] == "c1"


# -- streaming ------------------------------------------------------------------------


def test_pinned_stream_passes_tokens_through_with_usage_last(setup: Any) -> None:
    base, fake, config = setup()
    chunks = list(client(base, key(config)).chat.completions.create(
        model="effreason/small", messages=Q, stream=True, stream_options={"include_usage": True}))  # type: ignore[arg-type]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 10 and "".join(pieces) == "The answer is 5.\n#### 5"  # one chunk per upstream token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert fake.requests[-1]["stream"] is True and settled(config) == {"committed": 1}


def test_graph_stream_sends_the_settled_answer(setup: Any) -> None:
    base, fake, config = setup()
    chunks = list(client(base, key(config)).chat.completions.create(
        model="effreason", messages=Q, stream=True, stream_options={"include_usage": True}))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "5"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    assert finish.model_extra["effreason"]["arms_tried"] == ["small:direct"]
    assert chunks[-1].usage.completion_tokens == 10 and not fake.requests[-1].get("stream")


def test_disconnect_mid_stream_settles_what_was_generated(setup: Any) -> None:
    base, fake, config = setup()
    fake.stream_delay_s = 0.3
    with httpx.stream("POST", base + "/v1/chat/completions", json={"model": "effreason/small", "messages": Q,
                      "stream": True, "max_tokens": 50}, headers={"authorization": f"Bearer {key(config)}"}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(4)]  # role chunk, blank, first token, blank
        assert "The" in got[2]
    deadline = time.monotonic() + 10
    while settled(config).get("reserved") and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = [r for r in ledger_rows(config.ledger_path()) if r["status"] == "committed"]
    # settled for the text generated before the disconnect (its UTF-8 bytes: the fake tier's
    # tokenizer is unknown), not for the hold (50) nor the whole answer (23 bytes)
    assert len(rows) == 1 and 3 <= rows[0]["actual_output_tokens"] < len("The answer is 5.\n#### 5")
    while not fake.streams_cut and time.monotonic() < deadline:  # the upstream stream was closed too
        time.sleep(0.1)
    assert fake.streams_cut == 1


# -- budgets and keys -----------------------------------------------------------------


def test_key_budget_refuses_with_429_holding_nothing(setup: Any) -> None:
    base, fake, config = setup()
    secret = key(config, budget_usd="0.00001")
    r = post(base, {"model": "effreason", "messages": Q}, secret)
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_quota" and "user budget" in err["message"] and "remaining" in err["message"]
    r = post(base, {"model": "effreason/large", "messages": Q}, secret)
    assert r.status_code == 429 and r.json()["error"]["type"] == "insufficient_quota"
    assert fake.received == 0 and settled(config) == {}


def test_a_key_never_overspends_and_thread_budgets_are_per_key(setup: Any) -> None:
    base, fake, config = setup()
    secret = key(config, budget_usd="0.001", thread_budget_usd="0.0004")
    statuses = [post(base, {"model": "effreason", "messages": Q}, secret,
                     headers={"x-effreason-thread": "t1"}).status_code for _ in range(8)]
    assert 200 in statuses and statuses[-1] == 429
    with KeyStore(config.ledger_path()) as keys, BudgetLedger(config.ledger_path()) as ledger:
        k = keys.get("app")
        assert ledger.spent(k.thread_scope("t1")).cost_usd <= Decimal("0.0004")
        assert ledger.spent(k.scope).cost_usd <= Decimal("0.001")
    other = key(config, "other")
    assert post(base, {"model": "effreason", "messages": Q}, other, headers={"x-effreason-thread": "t1"}).status_code == 200
    assert settled(config).get("reserved", 0) == 0


def test_request_budget_from_extra_body(setup: Any) -> None:
    base, fake, config = setup()
    r = client(base, key(config)).chat.completions.create(
        model="effreason", messages=Q, extra_body={"effreason": {"max_cost_usd": "1", "confidence_threshold": 0.0,
                                                                  "thread_id": "x"}})  # type: ignore[arg-type]
    assert r.model_extra["effreason"]["status"] == "answered"
    assert post(base, {"model": "effreason", "messages": Q, "effreason": {"bogus": 1}},
                key(config, "k2")).json()["error"]["param"] == "effreason.bogus"


def test_rpm_limit_answers_429_with_retry_after(setup: Any) -> None:
    base, fake, config = setup()
    secret = key(config, rpm=2)
    codes = [post(base, {"model": "effreason/small", "messages": Q}, secret) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].json()["error"]["code"] == "rate_limit_exceeded" and int(codes[2].headers["retry-after"]) >= 1
    assert fake.calls == 2


def test_bad_revoked_and_missing_keys_are_401(setup: Any) -> None:
    base, fake, config = setup()
    secret = key(config)
    assert post(base, {"model": "effreason", "messages": Q}).status_code == 401
    assert post(base, {"model": "effreason", "messages": Q}, "sk-er-wrong").json()["error"]["code"] == "invalid_api_key"
    with KeyStore(config.ledger_path()) as keys:
        keys.revoke("app")
    r = post(base, {"model": "effreason", "messages": Q}, secret)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        client(base, secret).models.list()
    assert fake.received == 0


def test_no_auth_charges_the_named_user(setup: Any) -> None:
    base, fake, config = setup(auth=False, budget={"user": {"max_cost_usd": "0.001"}})
    codes = [post(base, {"model": "effreason", "messages": Q, "user": "alice"}).status_code for _ in range(20)]
    assert codes[0] == 200 and codes[-1] == 429
    with BudgetLedger(config.ledger_path()) as ledger:
        assert Decimal(0) < ledger.spent(Scope("user", "alice")).cost_usd <= Decimal("0.001")
    assert post(base, {"model": "effreason", "messages": Q, "user": "bob"}).status_code == 200


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{", 400, None),
        (b"[1]", 400, None),
        ({"model": "effreason", "messages": []}, 400, "messages"),
        ({"model": "effreason"}, 400, "messages"),
        ({"model": "effreason", "messages": Q, "max_tokens": "ten"}, 400, "max_tokens"),
        ({"model": "effreason", "messages": Q, "n": 2}, 400, "n"),
        ({"model": "effreason", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         400, "messages[0].content[0].type"),
        ({"model": "effreason", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
        ({"model": "effreason", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "5"}]}, 400, "messages"),
        ({"model": "effreason", "messages": [{"role": "user", "content": "\u200b"}]}, 400, "messages"),
        ({"model": "gpt-4o", "messages": Q}, 404, "model"),
        ({"model": "effreason/nope", "messages": Q}, 404, "model"),
        ({"model": "effreason", "messages": [{"role": "user", "content": "x" * 30_000}]}, 413, None),
    ],
)
def test_bad_requests_get_openai_errors_and_cost_nothing(setup: Any, body: Any, status: int, param: str | None) -> None:
    base, fake, config = setup()
    r = post(base, body, key(config))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"]
    assert fake.received == 0 and settled(config) == {}


def test_upstream_down_is_503_and_releases_the_hold(setup: Any) -> None:
    base, fake, config = setup(mode="error_500")
    secret = key(config)
    for model in ("effreason", "effreason/small"):
        r = post(base, {"model": model, "messages": Q}, secret)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "tier_unavailable"
    assert settled(config).get("committed", 0) == 0 and settled(config).get("reserved", 0) == 0


def test_health_and_metrics(setup: Any) -> None:
    base, fake, config = setup()
    secret = key(config, "metered")
    client(base, secret).chat.completions.create(model="effreason", messages=Q)  # type: ignore[arg-type]
    list(client(base, secret).chat.completions.create(model="effreason/large", messages=Q, stream=True))  # type: ignore[arg-type]
    post(base, {"model": "nope", "messages": Q}, secret)
    h = httpx.get(base + "/health").json()
    assert h["status"] == "ok" and h["ledger"]["ok"] and h["tiers"]["small"]["usable"]
    m = httpx.get(base + "/metrics").text
    assert 'effreason_requests_total{key="metered",model="effreason",status="200",tier="small"}' in m
    assert 'status="404"' in m and 'effreason_tokens_total{key="metered",kind="output",tier="small"} 10.0' in m
    assert 'effreason_tokens_total{key="metered",kind="output",tier="large"} 10.0' in m  # a live stream too
    assert 'effreason_cost_usd_total{key="metered",tier="large"}' in m
    assert secret not in m
