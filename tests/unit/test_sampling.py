"""Adaptive sampling: stopping rules, per-choice token counts, the sampling loop against a scripted server."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from effreason_agents.config import TierConfig
from effreason_agents.errors import TierError
from effreason_agents.engine.sampling import (
    beta_posterior_majority,
    beta_stop,
    default_batch,
    esc_window_stop,
    majority,
    per_choice_usage,
    per_choice_usage_with_method,
    regularized_beta_int,
    representative_index,
    sample_until_settled,
    settled,
)
from effreason_agents.adapters.tiers import TierClient, estimate_tokens
from effreason_agents.core.records import TokenLogprob

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


def test_settled_dispatches_on_rule() -> None:
    assert settled("beta", ["5"] * 4) is True
    assert settled("beta", ["5", None, "5", "5"]) is False  # None answers do not count
    assert settled("beta", ["5", "6", "5", "5", "5", "5", "5"]) is True  # {5: 6, 6: 1}: 0.965
    assert settled("esc", ["1", "1", "1"], window=3) is True
    assert settled("esc", ["1", "1", "1"], window=4) is False
    assert settled("fixed", ["5"] * 64) is False
    with pytest.raises(ValueError):
        settled("vote", ["5"])  # type: ignore[arg-type]


def test_representative_index_is_first_majority_sample() -> None:
    answers = [None, "17", "5", "17", "5", "5"]
    assert representative_index(answers, majority(answers)[0]) == 2
    assert representative_index(answers, None) is None
    assert representative_index(answers, "99") is None
    assert representative_index([], None) is None


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

Script = str | dict[str, Any]  # a text, or {"text", "finish_reason", "status", "delay"}


class _Scripted:
    """A tiny chat-completions server. Each choice takes the next entry of ``script``: a text,
    or a dict that can also set its ``finish_reason``, make the whole request fail with
    ``status``, or ``delay`` the response. Usage reports the first choice only, like
    llama.cpp. Logprob tokens are named ``r<request>.<choice>.<position>``, with
    ``top_logprobs`` alternatives when asked. ``barrier`` (if set) makes every request wait
    for that many requests in flight at once; ``max_in_flight`` records the peak."""

    def __init__(
        self, script: Iterator[Script], tokens_per_text: Callable[[str], int], logprobs: bool = True, barrier: int = 0
    ) -> None:
        self.script = script
        self.tokens = tokens_per_text
        self.logprobs = logprobs
        self.barrier = threading.Barrier(barrier, timeout=5) if barrier else None
        self.requests: list[dict[str, Any]] = []
        self.responded = 0
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with scripted.lock:
                    number = len(scripted.requests)
                    scripted.requests.append(body)
                    entries = [next(scripted.script) for _ in range(int(body.get("n") or 1))]
                    scripted.in_flight += 1
                    scripted.max_in_flight = max(scripted.max_in_flight, scripted.in_flight)
                try:
                    if scripted.barrier is not None:
                        scripted.barrier.wait()
                    self._answer(body, number, [e if isinstance(e, dict) else {"text": e} for e in entries])
                finally:
                    with scripted.lock:
                        scripted.in_flight -= 1
                        scripted.responded += 1

            def _answer(self, body: dict[str, Any], number: int, entries: list[dict[str, Any]]) -> None:
                time.sleep(max(e.get("delay", 0.0) for e in entries))
                status = next((e["status"] for e in entries if "status" in e), 200)
                if status != 200:
                    payload: dict[str, Any] = {"error": {"message": "scripted failure", "type": "server_error"}}
                else:
                    payload = scripted.completion(body, number, entries)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def completion(self, body: dict[str, Any], number: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
        top = int(body.get("top_logprobs") or 0)
        choices = []
        for i, e in enumerate(entries):
            ch: dict[str, Any] = {
                "index": i,
                "finish_reason": e.get("finish_reason", "stop"),
                "message": {"role": "assistant", "content": e["text"]},
            }
            if self.logprobs and body.get("logprobs"):
                ch["logprobs"] = {
                    "content": [
                        {
                            "token": f"r{number}.{i}.{j}",
                            "logprob": -0.1,
                            "top_logprobs": [{"token": f"alt{a}", "logprob": -0.1 - a} for a in range(top)],
                        }
                        for j in range(self.tokens(e["text"]))
                    ]
                }
            choices.append(ch)
        first = self.tokens(entries[0]["text"])
        return {
            "id": f"r{number}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": 20, "completion_tokens": first, "total_tokens": 20 + first},
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def scripted() -> Iterator[Callable[..., _Scripted]]:
    made: list[_Scripted] = []

    def make(script: Iterator[Script], tokens: Callable[[str], int] = len, logprobs: bool = True, barrier: int = 0) -> _Scripted:
        s = _Scripted(script, tokens, logprobs, barrier)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _client(base_url: str, *, n: bool = True, logprobs: bool = True, top_logprobs: int = 0, prefill: bool = False) -> TierClient:
    tier = TierConfig(
        engine="openai-compatible",
        model="scripted",
        base_url=base_url,
        price_input_per_1m=Decimal("1"),
        price_output_per_1m=Decimal("2"),
        max_retries=0,
        timeout_s=10,
        capabilities={"logprobs": logprobs, "top_logprobs": top_logprobs, "n": n, "assistant_prefill": prefill},
    )
    return TierClient("fake", tier)


MSGS = [{"role": "user", "content": "What is 2+3?"}]


def test_stops_early_when_unanimous(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.repeat("#### 5"))  # len("#### 5") = 6 tokens per choice
    client = _client(srv.base_url)
    assert default_batch(client) == 2
    r = sample_until_settled(client, MSGS, max_tokens=32, cap=16)
    # beta rule: {5: 4} → 1 - 1/32 ≥ 0.95 after two requests of n=2
    assert r.stopped_by == "rule" and r.rule == "beta"
    assert r.samples_drawn == 4 and r.answers == ["5"] * 4
    assert (r.answer, r.share, r.distinct) == ("5", 1.0, 1)
    assert r.requests == 2 and [q.get("n") for q in srv.requests] == [2, 2]
    assert all(q.get("logprobs") is True and "top_logprobs" not in q for q in srv.requests)
    assert r.per_choice_tokens == [6] * 4
    assert r.output_tokens == 24  # per choice, not usage (which reported 6 per request)
    assert r.reported_output_tokens == 12
    assert r.input_tokens == 40  # prompt once per request
    assert r.cost_usd == (Decimal(40) * 1 + Decimal(24) * 2) / Decimal(1_000_000)
    assert r.token_count_method == "logprobs"
    assert r.finish_reasons == ["stop"] * 4 and r.truncated_share == 0.0
    assert r.representative_index == 0 and r.prefill == ""


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


def test_fixed_rule_draws_every_sample(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.repeat("#### 5"))
    r = sample_until_settled(_client(srv.base_url), MSGS, max_tokens=32, cap=6, rule="fixed")
    # unanimous from the start, which would stop "beta" after 4 and "esc" after 5
    assert r.rule == "fixed" and r.stopped_by == "cap"
    assert r.samples_drawn == 6 and r.requests == 3 and r.answers == ["5"] * 6
    assert r.output_tokens == 36


def test_representative_sample_and_its_logprobs(scripted: Callable[..., _Scripted]) -> None:
    script = iter(["#### 17", {"text": "so #### 5", "finish_reason": "length"}, "#### 5", "#### 5", ""])
    srv = scripted(itertools.chain(script, itertools.repeat("#### 9")))
    r = sample_until_settled(_client(srv.base_url, top_logprobs=3), MSGS, max_tokens=32, cap=5, rule="fixed")
    assert all(q["top_logprobs"] == 3 and q["logprobs"] is True for q in srv.requests)
    assert r.answers == ["17", "5", "5", "5", None]
    assert r.answer == "5" and r.representative_index == 1 and r.representative_text == "so #### 5"
    lps = r.representative_logprobs
    assert lps is not None and len(lps) == r.per_choice_tokens[1] == len("so #### 5")
    assert all(isinstance(t, TokenLogprob) for t in lps)
    # the second choice of the first request (n=2), with its 3 alternatives per token
    assert lps[0].token == "r0.1.0" and lps[0].logprob == pytest.approx(-0.1)
    assert lps[0].top == [("alt0", pytest.approx(-0.1)), ("alt1", pytest.approx(-1.1)), ("alt2", pytest.approx(-2.1))]
    assert r.finish_reasons == ["stop", "length", "stop", "stop", "stop"]
    assert r.truncated_share == pytest.approx(1 / 5)


def test_no_answer_has_no_representative(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.repeat({"text": "", "finish_reason": "length"}))
    r = sample_until_settled(_client(srv.base_url), MSGS, max_tokens=4, cap=3)
    assert r.answer is None and r.stopped_by == "cap"
    assert r.representative_index is None and r.representative_logprobs is None and r.representative_text is None
    assert r.truncated_share == 1.0


def test_no_logprobs_on_tiers_without_them(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.repeat("#### 5"), logprobs=False)
    r = sample_until_settled(_client(srv.base_url, logprobs=False, top_logprobs=5), MSGS, max_tokens=8, cap=2)
    assert all("logprobs" not in q and "top_logprobs" not in q for q in srv.requests)
    assert r.representative_index == 0 and r.representative_logprobs is None


def test_prefill_is_prepended_and_reported(scripted: Callable[..., _Scripted]) -> None:
    msgs = [SystemMessage("Answer briefly."), HumanMessage("What is 2+3?"), AIMessage("The answer is")]
    srv = scripted(itertools.repeat(" 5"))
    r = sample_until_settled(_client(srv.base_url, prefill=True), msgs, max_tokens=8, cap=2, rule="fixed", stop=["\n"])
    assert srv.requests[0]["messages"][-1] == {"role": "assistant", "content": "The answer is"}
    assert srv.requests[0]["stop"] == ["\n"]
    assert r.prefill == "The answer is" and r.texts == ["The answer is 5"] * 2 and r.answer == "5"
    # logprobs cover the generated text only
    assert r.representative_logprobs is not None and len(r.representative_logprobs) == len(" 5")

    srv2 = scripted(itertools.repeat("#### 5"))
    r2 = sample_until_settled(_client(srv2.base_url, prefill=False), msgs, max_tokens=8, cap=2, rule="fixed")
    assert [m["role"] for m in srv2.requests[0]["messages"]] == ["system", "user"]  # prefill dropped
    assert r2.prefill == "" and r2.texts == ["#### 5"] * 2


def test_concurrent_requests_without_n(scripted: Callable[..., _Scripted]) -> None:
    # every request waits at a 2-party barrier: sequential requests would time out there
    srv = scripted(itertools.cycle(["#### 5", "#### 17"]), barrier=2)
    client = _client(srv.base_url, n=False)
    assert default_batch(client) == 2
    r = sample_until_settled(client, MSGS, max_tokens=16, cap=6, rule="fixed")
    assert r.samples_drawn == 6 and r.requests == 6 and srv.max_in_flight == 2
    assert all("n" not in q for q in srv.requests)
    # each round of two concurrent requests got one of each answer, in either order
    assert all(sorted(r.answers[i : i + 2]) == ["17", "5"] for i in range(0, 6, 2))
    # accounting: prompt and reported usage per request, output tokens per choice
    assert r.input_tokens == 6 * 20 and r.output_tokens == r.reported_output_tokens == 3 * 6 + 3 * 7
    assert r.cost_usd == (Decimal(120) * 1 + Decimal(39) * 2) / Decimal(1_000_000)
    assert len(r.finish_reasons) == len(r.per_choice_tokens) == len(r.texts) == 6
    assert r.representative_index is not None and r.answers[r.representative_index] == r.answer


def test_concurrent_rounds_apply_the_rule_after_each_round(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.repeat("#### 4"), barrier=3)
    r = sample_until_settled(_client(srv.base_url, n=False), MSGS, max_tokens=16, cap=10, batch=3)
    # beta needs 4 unanimous answers; checked after rounds of 3 → stops at 6
    assert r.stopped_by == "rule" and r.samples_drawn == 6 and r.requests == 6 and srv.max_in_flight == 3


def test_esc_rule_one_at_a_time_with_batch_1(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(iter(["#### 1", "#### 2", "#### 3", "#### 4", "#### 4", "#### 4", "#### 9"]))
    client = _client(srv.base_url, n=False)
    r = sample_until_settled(client, MSGS, max_tokens=16, cap=10, batch=1, rule="esc", window=3)
    assert r.stopped_by == "rule" and r.samples_drawn == 6 and r.answer == "4"
    assert all("n" not in q for q in srv.requests) and r.requests == 6 and srv.max_in_flight == 1
    assert r.representative_index == 3


def test_failed_request_in_a_round_raises_after_the_round(scripted: Callable[..., _Scripted]) -> None:
    # the failing request answers at once, the other one slowly; both must have finished
    # by the time the TierError is raised
    srv = scripted(iter([{"text": "x", "status": 500}, {"text": "#### 5", "delay": 0.3}, "#### 5", "#### 5"]))
    with pytest.raises(TierError) as info:
        sample_until_settled(_client(srv.base_url, n=False), MSGS, max_tokens=16, cap=4, rule="fixed")
    assert info.value.kind == "server_error"
    assert len(srv.requests) == 2 and srv.responded == 2  # no second round


def test_tokenizer_fallback_without_logprobs(scripted: Callable[..., _Scripted]) -> None:
    srv = scripted(itertools.repeat("The answer is 5. #### 5"), logprobs=False)
    r = sample_until_settled(_client(srv.base_url, logprobs=False), MSGS, max_tokens=16, cap=4)
    assert all("logprobs" not in q for q in srv.requests)
    assert r.token_count_method == "tokenizer"
    assert r.output_tokens == r.samples_drawn * estimate_tokens("The answer is 5. #### 5")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cap": 0},
        {"max_tokens": 0},
        {"rule": "vote"},
        {"batch": 0},
        {"rule": "beta", "confidence": 0.0},
        {"rule": "beta", "confidence": 1.5},
        {"rule": "esc", "window": 0},
    ],
)
def test_rejects_bad_arguments_before_any_request(scripted: Callable[..., _Scripted], kwargs: dict[str, Any]) -> None:
    srv = scripted(itertools.repeat("#### 5"))
    args: dict[str, Any] = {"max_tokens": 8, **kwargs}
    with pytest.raises(ValueError):
        sample_until_settled(_client(srv.base_url), MSGS, **args)
    assert srv.requests == []


def test_unreachable_tier_raises_tier_error() -> None:
    with pytest.raises(TierError) as info:
        sample_until_settled(_client("http://127.0.0.1:9/v1"), MSGS, max_tokens=8, cap=2)
    assert info.value.kind == "unreachable"
    with pytest.raises(TierError) as info:
        sample_until_settled(_client("http://127.0.0.1:9/v1", n=False), MSGS, max_tokens=8, cap=2)
    assert info.value.kind == "unreachable"
