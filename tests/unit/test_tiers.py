"""Tiers: exact cost arithmetic, logprob parsing, the ChatOpenAI client settings, and
``complete()`` against a real HTTP server on loopback (no mocks of the OpenAI client)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from effreason_agents.config import Capabilities, TierConfig, config_from_data, default_config_data
from effreason_agents.errors import TierError
from effreason_agents.adapters.tiers import TierClient, clients_for, cost_usd, error_kind, estimate_tokens, parse_logprobs
from effreason_agents.core.money import format_usd
from effreason_agents.core.records import TokenLogprob

pytestmark = pytest.mark.timeout(60)


def tier(**overrides: Any) -> TierConfig:
    fields: dict[str, Any] = {
        "engine": "openai-compatible",
        "model": "test-model",
        "base_url": "http://127.0.0.1:9/v1",
        "max_retries": 0,
        "timeout_s": 10.0,
    }
    fields.update(overrides)
    return TierConfig.model_validate(fields)


# -- cost -------------------------------------------------------------------------------


def test_cost_is_exact_decimal() -> None:
    t = tier(price_input_per_1m="0.15", price_output_per_1m="0.60")
    cost = cost_usd(t, 1234, 567)
    assert isinstance(cost, Decimal)
    assert cost == Decimal("0.0005253")
    assert format_usd(cost) == "0.0005253"


def test_cost_has_no_float_rounding() -> None:
    t = tier(price_input_per_1m="0.1", price_output_per_1m="0.2")
    # 0.1 + 0.2 != 0.3 in floats; in Decimal it is exact
    assert cost_usd(t, 1_000_000, 1_000_000) == Decimal("0.3")
    assert sum((cost_usd(t, 1, 0) for _ in range(10)), Decimal(0)) == Decimal("0.000001")


def test_cost_of_a_free_tier_is_zero() -> None:
    assert cost_usd(tier(), 10_000, 10_000) == 0


@pytest.mark.parametrize(("inp", "out"), [(-1, 0), (0, -1)])
def test_negative_tokens_rejected(inp: int, out: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        cost_usd(tier(price_input_per_1m="1"), inp, out)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0"), "0"),
        (Decimal("0E-12"), "0"),
        (Decimal("1E-9"), "0.000000001"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0.000525300"), "0.0005253"),
        ("0.10", "0.1"),
        ("12.5", "12.5"),
    ],
)
def test_format_usd_is_plain(amount: Decimal | str, text: str) -> None:
    assert format_usd(amount) == text
    assert "E" not in format_usd(amount).upper()


# -- logprobs and error kinds -----------------------------------------------------------


def test_parse_openai_logprobs() -> None:
    raw = {
        "content": [
            {
                "token": " 4",
                "logprob": -0.25,
                "bytes": [32, 52],
                "top_logprobs": [{"token": " 4", "logprob": -0.25}, {"token": " 5", "logprob": -1.75}],
            },
            {"token": "2", "logprob": -0.5, "top_logprobs": None},
        ]
    }
    assert parse_logprobs(raw) == [
        TokenLogprob(" 4", -0.25, [(" 4", -0.25), (" 5", -1.75)]),
        TokenLogprob("2", -0.5, []),
    ]


@pytest.mark.parametrize("raw", [None, {}, {"content": None}, {"content": []}])
def test_parse_missing_logprobs(raw: Any) -> None:
    assert parse_logprobs(raw) is None


def test_token_logprob_json() -> None:
    assert TokenLogprob("a", -1.0, [("a", -1.0)]).to_json() == {"token": "a", "logprob": -1.0, "top": [["a", -1.0]]}


REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def _status_error(cls: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    return cls("boom", response=httpx.Response(status, request=REQUEST), body=None)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (openai.APITimeoutError(request=REQUEST), "timeout"),
        (openai.APIConnectionError(request=REQUEST), "unreachable"),
        (_status_error(openai.AuthenticationError, 401), "auth"),
        (_status_error(openai.RateLimitError, 429), "rate_limited"),
        (_status_error(openai.InternalServerError, 503), "server_error"),
        (_status_error(openai.BadRequestError, 400), "bad_request"),
        (RuntimeError("odd"), "error"),
    ],
)
def test_error_kind(exc: BaseException, kind: str) -> None:
    assert error_kind(exc)[0] == kind


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello world") == 2
    assert estimate_tokens("word " * 200) >= 200
    assert tier().engine != "embedded" and TierClient("t", tier()).count_tokens("hello world") == 2


# -- chat_model settings ----------------------------------------------------------------


def test_chat_model_settings() -> None:
    t = tier(max_retries=3, timeout_s=7.5, capabilities={"logprobs": True, "top_logprobs": 4})
    llm = TierClient("t", t, environ={}).chat_model(max_tokens=33, temperature=0.4, stop=["\n"])
    assert llm.model_name == "test-model"
    assert llm.openai_api_base == "http://127.0.0.1:9/v1"
    assert llm.max_retries == 3
    assert llm.request_timeout == 7.5
    assert llm.max_tokens == 33
    assert llm.temperature == 0.4
    assert llm.stop == ["\n"]
    assert llm.logprobs is True and llm.top_logprobs == 4
    assert llm.extra_body is None


def test_chat_model_without_logprob_capability() -> None:
    llm = TierClient("t", tier(), environ={}).chat_model(max_tokens=8)
    assert not llm.logprobs and llm.top_logprobs is None


def test_chat_model_logprobs_not_wanted() -> None:
    t = tier(capabilities={"logprobs": True, "top_logprobs": 4})
    llm = TierClient("t", t, environ={}).chat_model(max_tokens=8, want_logprobs=False)
    assert not llm.logprobs and llm.top_logprobs is None


def test_chat_model_logprobs_without_alternatives() -> None:
    llm = TierClient("t", tier(capabilities={"logprobs": True}), environ={}).chat_model(max_tokens=8)
    assert llm.logprobs is True and llm.top_logprobs is None


def test_chat_model_sends_extra_body_for_vllm() -> None:
    t = tier(engine="vllm", extra_body={"top_k": 20, "guided_choice": ["yes", "no"]})
    llm = TierClient("t", t, environ={}).chat_model(max_tokens=8)
    assert llm.extra_body == {"top_k": 20, "guided_choice": ["yes", "no"]}


def test_chat_model_uses_the_key_from_environ() -> None:
    t = tier(api_key_env="MY_KEY")
    llm = TierClient("t", t, environ={"MY_KEY": "sk-secret"}).chat_model(max_tokens=8)
    assert llm.openai_api_key.get_secret_value() == "sk-secret"


# -- api keys ---------------------------------------------------------------------------


def test_openai_engine_without_key_variable_set() -> None:
    client = TierClient("big", tier(engine="openai", base_url=None, api_key_env="MY_KEY"), environ={})
    with pytest.raises(TierError) as err:
        client.api_key()
    assert err.value.kind == "no_key" and err.value.tier == "big"
    assert "MY_KEY" in str(err.value)


def test_openai_engine_without_key_variable_configured() -> None:
    with pytest.raises(TierError) as err:
        TierClient("big", tier(engine="openai", base_url=None), environ={}).api_key()
    assert err.value.kind == "no_key"


def test_openai_engine_default_base_url() -> None:
    client = TierClient("big", tier(engine="openai", base_url=None, api_key_env="K"), environ={"K": "x"})
    assert client.base_url() == "https://api.openai.com/v1"
    assert client.api_key() == "x"


def test_compatible_engine_without_key_variable_needs_no_key() -> None:
    assert TierClient("t", tier(api_key_env=None), environ={}).api_key() == "not-needed"


def test_named_key_variable_unset_is_no_key() -> None:
    with pytest.raises(TierError) as err:
        TierClient("t", tier(api_key_env="MY_KEY"), environ={}).api_key()
    assert err.value.kind == "no_key" and "MY_KEY" in str(err.value)


def test_clients_for_enabled_tiers_only() -> None:
    data = default_config_data({})
    data["tiers"]["small"] = {"engine": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    cfg = config_from_data(data)
    assert set(clients_for(cfg, {})) == {"small"}
    assert set(clients_for(cfg, {"OPENAI_API_KEY": "k"})) == {"small", "large"}


# -- complete() against loopback --------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeOpenAIServer:
    """A chat-completions endpoint on 127.0.0.1 that answers the queued replies in order
    (the last one repeats) and records every request body."""

    base_url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def next_reply(self) -> Reply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def chat_completion(
    content: str,
    *,
    prompt_tokens: int = 11,
    completion_tokens: int = 3,
    finish_reason: str = "stop",
    logprobs: list[dict[str, Any]] | None = None,
    model: str = "served-model",
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
                "logprobs": {"content": logprobs} if logprobs is not None else None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@pytest.fixture()
def server() -> Iterator[FakeOpenAIServer]:
    state: FakeOpenAIServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "json": json.loads(self.rfile.read(length) or b"{}"),
                }
            )
            reply = state.next_reply()
            payload = json.dumps(reply.body or {"error": {"message": "boom", "type": "server_error"}}).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = FakeOpenAIServer(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


QUESTION = [SystemMessage("Answer with the final answer only."), HumanMessage("What is 40 + 2?")]
LOGPROBS = [
    {
        "token": " 4",
        "logprob": -0.25,
        "top_logprobs": [{"token": " 4", "logprob": -0.25}, {"token": " 5", "logprob": -1.75}],
    },
    {"token": "2", "logprob": -0.5, "top_logprobs": [{"token": "2", "logprob": -0.5}]},
]


def test_unreachable_endpoint() -> None:
    client = TierClient("small", tier(base_url=f"http://127.0.0.1:{closed_port()}/v1"), environ={})
    with pytest.raises(TierError) as err:
        client.complete(QUESTION, max_tokens=8)
    assert err.value.kind == "unreachable" and err.value.tier == "small"
    assert "after 0 retries" in str(err.value)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, "server_error"), (503, "server_error"), (429, "rate_limited"), (401, "auth"), (400, "bad_request")],
)
def test_http_errors_become_tier_errors(server: FakeOpenAIServer, status: int, kind: str) -> None:
    server.replies = [Reply(status=status)]
    client = TierClient("small", tier(base_url=server.base_url), environ={})
    with pytest.raises(TierError) as err:
        client.complete(QUESTION, max_tokens=8)
    assert err.value.kind == kind
    assert len(server.requests) == 1  # max_retries = 0: no retry


def test_retries_then_succeeds(server: FakeOpenAIServer) -> None:
    server.replies = [
        Reply(status=429, headers={"retry-after-ms": "1"}),
        Reply(body=chat_completion(" 42")),
    ]
    client = TierClient("small", tier(base_url=server.base_url, max_retries=1), environ={})
    assert client.complete(QUESTION, max_tokens=8).text == " 42"
    assert len(server.requests) == 2


def test_retries_exhausted(server: FakeOpenAIServer) -> None:
    server.replies = [Reply(status=500, headers={"retry-after-ms": "1"})]
    client = TierClient("small", tier(base_url=server.base_url, max_retries=1), environ={})
    with pytest.raises(TierError) as err:
        client.complete(QUESTION, max_tokens=8)
    assert err.value.kind == "server_error" and "after 1 retries" in str(err.value)
    assert len(server.requests) == 2


def test_successful_completion(server: FakeOpenAIServer) -> None:
    server.replies = [Reply(body=chat_completion(" 42", prompt_tokens=1234, completion_tokens=567, logprobs=LOGPROBS))]
    t = tier(
        base_url=server.base_url,
        price_input_per_1m="0.15",
        price_output_per_1m="0.60",
        capabilities={"logprobs": True, "top_logprobs": 2},
    )
    c = TierClient("large", t, environ={}).complete(QUESTION, max_tokens=7, temperature=0.0, stop=["\n"])
    assert c.text == " 42" and c.generated_text == " 42" and c.prefill == ""
    assert (c.input_tokens, c.output_tokens) == (1234, 567)
    assert c.cost_usd == Decimal("0.0005253")
    assert c.finish_reason == "stop"
    assert c.model == "served-model"
    assert c.latency_s >= 0
    assert c.logprobs == [
        TokenLogprob(" 4", -0.25, [(" 4", -0.25), (" 5", -1.75)]),
        TokenLogprob("2", -0.5, [("2", -0.5)]),
    ]
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    body = req["json"]
    assert body["model"] == "test-model"
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["stop"] == ["\n"]
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 7
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_request_without_logprob_capability(server: FakeOpenAIServer) -> None:
    server.replies = [Reply(body=chat_completion("#### 42", finish_reason="length"))]
    c = TierClient("small", tier(base_url=server.base_url), environ={}).complete(QUESTION, max_tokens=7)
    assert c.logprobs is None and c.finish_reason == "length"
    body = server.requests[0]["json"]
    assert "logprobs" not in body and "top_logprobs" not in body


def test_vllm_extra_body_reaches_the_server(server: FakeOpenAIServer) -> None:
    server.replies = [Reply(body=chat_completion("yes"))]
    t = tier(engine="vllm", base_url=server.base_url, extra_body={"top_k": 20})
    TierClient("fleet", t, environ={}).complete(QUESTION, max_tokens=4)
    assert server.requests[0]["json"]["top_k"] == 20


def test_api_key_is_sent(server: FakeOpenAIServer) -> None:
    server.replies = [Reply(body=chat_completion("ok"))]
    t = tier(base_url=server.base_url, api_key_env="MY_KEY")
    TierClient("t", t, environ={"MY_KEY": "sk-loopback"}).complete(QUESTION, max_tokens=4)
    assert server.requests[0]["authorization"] == "Bearer sk-loopback"


PREFILLED = [*QUESTION, AIMessage("The answer is")]


def test_prefill_sent_to_tiers_that_continue_it(server: FakeOpenAIServer) -> None:
    server.replies = [Reply(body=chat_completion(" 42"))]
    t = tier(base_url=server.base_url, capabilities=Capabilities(assistant_prefill=True))
    c = TierClient("small", t, environ={}).complete(PREFILLED, max_tokens=4)
    messages = server.requests[0]["json"]["messages"]
    assert messages[-1] == {"role": "assistant", "content": "The answer is"}
    assert c.prefill == "The answer is"
    assert c.text == "The answer is 42"
    assert c.generated_text == " 42"


def test_prefill_echoed_by_the_engine_is_not_doubled(server: FakeOpenAIServer) -> None:
    server.replies = [Reply(body=chat_completion("The answer is 42"))]
    t = tier(base_url=server.base_url, capabilities=Capabilities(assistant_prefill=True))
    c = TierClient("small", t, environ={}).complete(PREFILLED, max_tokens=4)
    assert c.text == "The answer is 42" and c.generated_text == " 42"


def test_prefill_dropped_for_other_tiers(server: FakeOpenAIServer) -> None:
    server.replies = [Reply(body=chat_completion("#### 42"))]
    c = TierClient("large", tier(base_url=server.base_url), environ={}).complete(PREFILLED, max_tokens=4)
    messages = server.requests[0]["json"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert c.prefill == "" and c.text == "#### 42"


def test_embedded_tier_that_cannot_start_is_an_unavailable_tier_error(tmp_path: Path) -> None:
    data = default_config_data({})
    data["embedded"] = {"model_path": str(tmp_path / "missing.gguf")}
    cfg = config_from_data(data)
    client = TierClient("small", cfg.tiers["small"], cfg, environ={})
    with pytest.raises(TierError) as err:
        client.complete([HumanMessage("What is 2 + 3?")], max_tokens=4)
    assert err.value.kind == "unavailable" and "missing.gguf" in str(err.value)
