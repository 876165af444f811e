"""Adaptive sampling: stopping rules, per-choice token counts, the sampling loop against a scripted server."""

from __future__ import annotations

import itertools
import json
import math
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from effreason_agents.config import TierConfig
from effreason_agents.sampling import (
    beta_posterior_majority,
    beta_stop,
    default_batch,
    esc_window_stop,
    majority,
    per_choice_usage,
    per_choice_usage_with_method,
    regularized_beta_int,
    sample_until_settled,
)
from effreason_agents.tiers import TierClient, estimate_tokens

# -- beta_stop ----------------------------------------------------------------------------


def test_beta_stop_hand_checked_cases() -> None:
    # {a: 5}: Beta(6, 1), P(p > 0.5) = 1 - 0.5^6 = 0.984375
    assert beta_posterior_majority(5, 0) == pytest.approx(1 - 0.5**6)
    assert beta_stop({"a": 5}) is True
    # {a: 3, b: 1}: Beta(4, 2), P(p > 0.5) = (1 + 5 + 10 + 10) / 32 = 0.8125
    assert beta_posterior_majority(3, 1) == pytest.approx(0.8125)
    assert beta_stop({"a": 3, "b": 1}) is False
    assert beta_stop({"a": 3, "b": 1}, confidence=0.8) is True
    # {a: 4}: 1 - 1/32 = 0.96875 stops; {a: 3}: 1 - 1/16 = 0.9375 does not
    assert beta_stop({"a": 4}) is True
    assert beta_stop({"a": 3}) is False
    # a tie is 0.5 however many samples
    assert beta_posterior_majority(7, 7) == pytest.approx(0.5)
    assert beta_stop({"a": 7, "b": 7, "c": 1}) is False
    # only the two most frequent count; order of the mapping is irrelevant
    assert beta_stop({"c": 1, "b": 1, "a": 9}) == beta_stop({"a": 9, "b": 1})
    assert beta_stop({}) is False
    assert beta_stop({"a": 0}) is False
    with pytest.raises(ValueError):
        beta_stop({"a": 1}, confidence=0)


def _beta_cdf_numeric(x: float, alpha: int, beta: int, steps: int = 20000) -> float:
    """Simpson's rule on the Beta(α, β) pdf over [0, x]."""
    norm = math.gamma(alpha + beta) / (math.gamma(alpha) * math.gamma(beta))
    f = lambda t: norm * t ** (alpha - 1) * (1 - t) ** (beta - 1)  # noqa: E731
    h = x / steps
    s = f(0.0) + f(x) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return s * h / 3


@pytest.mark.parametrize("alpha,beta", [(1, 1), (2, 1), (1, 3), (4, 2), (6, 1), (5, 5), (9, 3), (3, 12)])
@pytest.mark.parametrize("x", [0.2, 0.5, 0.73])
def test_binomial_identity_matches_numeric_integration(alpha: int, beta: int, x: float) -> None:
    assert regularized_beta_int(x, alpha, beta) == pytest.approx(_beta_cdf_numeric(x, alpha, beta), abs=1e-9)


@pytest.mark.parametrize("a,b", [(0, 0), (1, 0), (3, 1), (5, 0), (6, 4), (10, 2)])
def test_posterior_majority_is_one_minus_beta_cdf_at_half(a: int, b: int) -> None:
    assert beta_posterior_majority(a, b) == pytest.approx(1 - regularized_beta_int(0.5, a + 1, b + 1), abs=1e-12)


def test_regularized_beta_rejects_non_integers() -> None:
    with pytest.raises(ValueError):
        regularized_beta_int(0.5, 0, 1)
    with pytest.raises(ValueError):
        regularized_beta_int(1.5, 1, 1)


# -- esc window, majority ---------------------------------------------------------------------


def test_esc_window_stop() -> None:
    assert esc_window_stop(["1"] * 4, window=5) is False  # no complete window yet
    assert esc_window_stop(["1"] * 5, window=5) is True
    assert esc_window_stop(["1", "1", "2", "1", "1"], window=5) is False
    # the last *complete* window decides; a trailing partial window is ignored
    assert esc_window_stop(["1", "2", "1", "1", "1", "3", "3", "3"], window=3) is False
    assert esc_window_stop(["1", "2", "1", "3", "3", "3", "9"], window=3) is True
    assert esc_window_stop([None, None, None], window=3) is False
    with pytest.raises(ValueError):
        esc_window_stop(["1"], window=0)


def test_majority_ignores_none() -> None:
    assert majority(["5", None, "5", "7", None]) == ("5", pytest.approx(2 / 3), 2)
    assert majority([None, None]) == (None, 0.0, 0)
    assert majority([]) == (None, 0.0, 0)
    assert majority(["a", "b"])[0] == "a"  # ties: first seen


# -- per_choice_usage -------------------------------------------------------------------------


def _lp(n: int) -> dict[str, Any]:
    return {"content": [{"token": f"t{i}", "logprob": -0.1, "top_logprobs": []} for i in range(n)]}


def test_per_choice_usage_counts_logprobs_not_usage() -> None:
    # llama.cpp-style: usage covers the first choice only (7), the second had 30 tokens
    raw = {
        "object": "chat.completion",
        "choices": [
            {"index": 1, "message": {"role": "assistant", "content": "long"}, "logprobs": _lp(30)},
            {"index": 0, "message": {"role": "assistant", "content": "short"}, "logprobs": _lp(7)},
        ],
        "usage": {"prompt_tokens": 41, "completion_tokens": 7, "total_tokens": 48},
    }
    assert per_choice_usage(raw) == [7, 30]
    assert per_choice_usage_with_method(raw) == ([7, 30], "logprobs")
    assert sum(per_choice_usage(raw)) != raw["usage"]["completion_tokens"]


def test_per_choice_usage_fallbacks() -> None:
    raw = {
        "choices": [
            {"index": 0, "message": {"content": "one two three"}, "logprobs": None},
            {"index": 1, "message": {"content": "four"}},
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 9},
    }
    words = lambda t: len(t.split())  # noqa: E731
    assert per_choice_usage_with_method(raw, words) == ([3, 1], "tokenizer")
    assert per_choice_usage_with_method(raw) == ([5, 4], "usage-split")
    single = {"choices": [{"index": 0, "message": {"content": "x"}}], "usage": {"completion_tokens": 12}}
    assert per_choice_usage_with_method(single) == ([12], "usage")
    mixed = {"choices": [raw["choices"][0] | {"logprobs": _lp(4)}, raw["choices"][1]], "usage": {"completion_tokens": 4}}
    assert per_choice_usage_with_method(mixed, words) == ([4, 1], "logprobs+tokenizer")


# -- sample_until_settled against a scripted server -----------------------------------------------


class _Scripted:
    """A tiny chat-completions server: each request gets ``n`` texts from ``answers``;
    usage reports the first choice only, like llama.cpp."""

    def __init__(self, answers: Iterator[str], tokens_per_text: Callable[[str], int], logprobs: bool = True) -> None:
        self.answers = answers
        self.tokens = tokens_per_text
        self.logprobs = logprobs
        self.requests: list[dict[str, Any]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                scripted.requests.append(body)
                n = int(body.get("n") or 1)
                choices = []
                for i in range(n):
                    text = next(scripted.answers)
                    ch: dict[str, Any] = {
                        "index": i,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                    if scripted.logprobs and body.get("logprobs"):
                        ch["logprobs"] = _lp(scripted.tokens(text))
                    choices.append(ch)
                first = scripted.tokens(choices[0]["message"]["content"])
                payload = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": choices,
                    "usage": {"prompt_tokens": 20, "completion_tokens": first, "total_tokens": 20 + first},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def scripted() -> Iterator[Callable[..., _Scripted]]:
    made: list[_Scripted] = []

    def make(answers: Iterator[str], tokens: Callable[[str], int] = len, logprobs: bool = True) -> _Scripted:
        s = _Scripted(answers, tokens, logprobs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _client(base_url: str, *, n: bool = True, logprobs: bool = True) -> TierClient:
    tier = TierConfig(
        engine="openai-compatible",
        model="scripted",
        base_url=base_url,
        price_input_per_1m=Decimal("1"),
        price_output_per_1m=Decimal("2"),
        max_retries=0,
        timeout_s=10,
        capabilities={"logprobs": logprobs, "n": n},
    )
    return TierClient("fake", tier)


MSGS = [{"role": "user", "content": "What is 2+3?"}]


def test_stops_early_when_unanimous(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.repeat("#### 5"))  # len("#### 5") = 6 tokens per choice
    client = _client(srv.base_url)
    assert default_batch(client) == 2
    r = sample_until_settled(client, MSGS, max_tokens=32, cap=16)
    # beta rule: {5: 4} → 1 - 1/32 ≥ 0.95 after two requests of n=2
    assert r.stopped_by == "rule"
    assert r.samples_drawn == 4 and r.answers == ["5"] * 4
    assert (r.answer, r.share, r.distinct) == ("5", 1.0, 1)
    assert r.requests == 2 and [q.get("n") for q in srv.requests] == [2, 2]
    assert all(q.get("logprobs") is True for q in srv.requests)
    assert r.per_choice_tokens == [6] * 4
    assert r.output_tokens == 24  # per choice, not usage (which reported 6 per request)
    assert r.reported_output_tokens == 12
    assert r.input_tokens == 40  # prompt once per request
    assert r.cost_usd == (Decimal(40) * 1 + Decimal(24) * 2) / Decimal(1_000_000)
    assert r.token_count_method == "logprobs"


def test_hits_cap_when_answers_alternate(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.cycle(["#### 5", "#### 17"]))
    r = sample_until_settled(_client(srv.base_url), MSGS, max_tokens=32, cap=7, batch=2)
    assert r.stopped_by == "cap"
    assert r.samples_drawn == 7 and r.cap == 7
    assert [q.get("n") for q in srv.requests] == [2, 2, 2, None]  # the last request asks for the 1 remaining
    assert r.requests == 4
    assert r.answers == ["5", "17"] * 3 + ["5"]
    assert r.per_choice_tokens == [6, 7] * 3 + [6]
    assert r.output_tokens == 6 * 4 + 7 * 3
    assert r.reported_output_tokens == 6 * 4
    assert r.distinct == 2 and r.answer == "5" and r.share == pytest.approx(4 / 7)


def test_esc_rule_and_one_at_a_time_without_n(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(iter(["#### 1", "#### 2", "#### 3", "#### 4", "#### 4", "#### 4", "#### 9"]))
    client = _client(srv.base_url, n=False)
    assert default_batch(client) == 1
    r = sample_until_settled(client, MSGS, max_tokens=16, cap=10, batch=4, rule="esc", window=3)
    assert r.stopped_by == "rule" and r.samples_drawn == 6 and r.answer == "4"
    assert all("n" not in q for q in srv.requests) and r.requests == 6


def test_tokenizer_fallback_without_logprobs(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.repeat("The answer is 5. #### 5"), logprobs=False)
    r = sample_until_settled(_client(srv.base_url, logprobs=False), MSGS, max_tokens=16, cap=4)
    assert all("logprobs" not in q for q in srv.requests)
    assert r.token_count_method == "tokenizer"
    assert r.output_tokens == r.samples_drawn * estimate_tokens("The answer is 5. #### 5")


def test_rejects_bad_arguments(scripted: Callable[..., _Scripted]) -> None:
    client = _client("http://127.0.0.1:9/v1")
    with pytest.raises(ValueError):
        sample_until_settled(client, MSGS, max_tokens=8, cap=0)
    with pytest.raises(ValueError):
        sample_until_settled(client, MSGS, max_tokens=8, rule="vote")  # type: ignore[arg-type]


def test_unreachable_tier_raises_tier_error() -> None:
    from effreason_agents.errors import TierError

    with pytest.raises(TierError) as info:
        sample_until_settled(_client("http://127.0.0.1:9/v1"), MSGS, max_tokens=8, cap=2)
    assert info.value.kind == "unreachable"
