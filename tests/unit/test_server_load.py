"""A bounded load test of ``effreason serve``: the real command, several worker processes,
against loopback fake OpenAI servers that answer at once, on both database backends.

``sqlite``
    one server with two worker processes sharing the ledger's SQLite file: 2,000 requests
    from 100 concurrent clients.
``postgresql``
    two servers ("replicas", as behind a load balancer) of two worker processes each, all
    four sharing one PostgreSQL database (the ledger, the virtual keys and the outcome
    store): 1,000 requests from 100 concurrent clients, alternating between the replicas,
    so every key is spent from both at once.

The requests go over five virtual keys, four of them with budgets small enough to run out
part-way: the cost-aware graph (``effreason``, some escalating, some under a per-request
budget, some in a key's thread with its own cap) and pinned tiers (``effreason/<tier>``),
three in ten streamed. Afterwards, read from the ledger's own tables (the SQLite file, or
the PostgreSQL database):

* every response is a valid ``chat.completion`` (or SSE stream of ``chat.completion.chunk``
  ending in ``[DONE]``) or a 429 ``insufficient_quota`` in OpenAI's error shape;
* no scope with a limit (key, key thread, request) spent more than its cap;
* no hold is left open after the servers stopped, and every settled hold was a true upper
  bound;
* the upstream calls answered equal the settled holds, and the ledger's spend equals what
  the fakes billed, in total and per key as the responses reported it.

Nothing here depends on how fast the machine is: no time is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from budget_helpers import (  # noqa: E402
    assert_budget_kept,
    billed_micro,
    config_data,
    fake_tier,
    hold_counts,
    ledger_rows,
)
from fake_openai import FakeOpenAI  # noqa: E402
from serve_process import ServeProcess, write_toml  # noqa: E402

from effreason_agents.adapters.keys import KeyStore  # noqa: E402
from effreason_agents.adapters.ledger import BudgetLedger  # noqa: E402
from effreason_agents.core.money import to_micro  # noqa: E402
from effreason_agents.core.records import Status  # noqa: E402

CLIENTS = 100
KEYS = 5
THREAD_KEY, THREAD_BUDGET = 2, "0.0005"
"""The key whose conversation threads are capped, and the cap of each thread."""


@dataclass(frozen=True)
class Backend:
    """One run of the scenario: where the ledger lives and how many servers share it."""

    name: str
    requests: int
    replicas: int
    workers: int
    key_budgets: tuple[str, ...]
    """Dollar budgets of the five keys: the first four run out part-way (their share of the
    requests would cost about $0.1 at 2,000 requests, $0.05 at 1,000), the last never does
    (it must see no 429)."""


BACKENDS = [
    Backend("sqlite", requests=2000, replicas=1, workers=2, key_budgets=("0.01", "0.02", "0.04", "0.06", "1")),
    Backend("postgresql", requests=1000, replicas=2, workers=2, key_budgets=("0.005", "0.01", "0.02", "0.03", "1")),
]
FAST = {"price_in": "1.0", "price_out": "4.0"}
STRONG = {"price_in": "10", "price_out": "40"}
KEEPALIVE_S = 5.0
"""How long the clients keep an idle connection for reuse: httpx's default, which the OpenAI
Python SDK uses. The server must keep idle connections open longer than that, or a client
now and then sends a request on a connection the server is closing, and gets no answer."""
ANSWER_STATUSES = {Status.ANSWERED, Status.LOW_CONFIDENCE, Status.BUDGET_EXHAUSTED}
"""How a request that answered may have ended (never ``failed``: the upstreams always answer)."""
INFO_FIELDS = {"request_id", "tier", "arms_tried", "escalated", "confidence", "status", "cost_usd", "remaining_usd"}


@dataclass
class Outcome:
    """One request and what came back."""

    i: int
    key: int
    replica: int
    model: str
    stream: bool
    include_usage: bool
    status: int
    headers: dict[str, str]
    text: str
    info: dict[str, Any] = field(default_factory=dict)


def plan(i: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Request ``i``: its key, body and extra headers (ten kinds, in turn for each key)."""
    key, kind = i % KEYS, (i // KEYS) % 10
    messages = [{"role": "user", "content": f"What is {i} + 3? Request {i}."}]
    body: dict[str, Any] = {"model": "effreason", "messages": messages}
    headers: dict[str, str] = {}
    if kind == 1:  # confidence below the threshold: escalates from the fast to the strong tier
        body["effreason"] = {"confidence_threshold": 0.999}
    elif kind == 2:  # one of the key's threads
        headers["x-effreason-thread"] = f"t{i % 3}"
    elif kind == 3:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    elif kind == 4:
        body |= {"model": "effreason/fast", "max_tokens": 16}
    elif kind == 5:
        body |= {"model": "effreason/strong", "max_completion_tokens": 16}
    elif kind == 6:  # no output cap: held at the pinned default (1,024 tokens)
        body |= {"model": "effreason/fast"}
    elif kind == 7:
        body |= {"model": "effreason/strong", "max_tokens": 16, "stream": True,
                 "stream_options": {"include_usage": True}}
    elif kind == 8:
        body |= {"model": "effreason/fast", "max_tokens": 16, "stream": True,
                 "effreason": {"thread_id": f"t{i % 3}"}}
    elif kind == 9:  # a request budget that covers the fast tier but never the strong one
        body["effreason"] = {"confidence_threshold": 0.999, "max_cost_usd": "0.0003"}
    return key, body, headers


async def run_load(api_bases: list[str], secrets: list[str], requests: int) -> list[Outcome]:
    """``requests`` requests from :data:`CLIENTS` clients at once; request ``i`` goes to
    replica ``i % len(api_bases)``."""
    todo = iter(range(requests))
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS, keepalive_expiry=KEEPALIVE_S)
    # a guard against a hung server, not a performance bound
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:

        async def one_client() -> None:
            for i in todo:
                key, body, headers = plan(i)
                replica = i % len(api_bases)
                headers["authorization"] = f"Bearer {secrets[key]}"
                try:
                    r = await client.post(api_bases[replica] + "/chat/completions", json=body, headers=headers)
                    status, got, text = r.status_code, dict(r.headers), r.text
                except httpx.TransportError as exc:  # the server dropped the connection: reported below
                    status, got, text = 0, {}, f"{type(exc).__name__}: {exc}"
                outcomes.append(Outcome(i, key, replica, body["model"], bool(body.get("stream")),
                                        bool((body.get("stream_options") or {}).get("include_usage")),
                                        status, got, text))

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return outcomes


def check_info(o: Outcome, info: Any) -> dict[str, Any]:
    where = f"request {o.i} ({o.model})"
    assert isinstance(info, dict) and INFO_FIELDS <= set(info), f"{where}: effreason field {info!r}"
    assert info["tier"] in ("fast", "strong"), f"{where}: tier {info['tier']!r}"
    assert info["arms_tried"] and all(isinstance(a, str) for a in info["arms_tried"]), f"{where}: {info}"
    if o.model != "effreason":
        assert info["tier"] == o.model.split("/", 1)[1] and info["arms_tried"] == [f"{info['tier']}:pinned"], info
    assert info["status"] in ANSWER_STATUSES, f"{where}: status {info['status']!r}"
    assert isinstance(info["escalated"], bool), info
    assert Decimal(info["cost_usd"]) > 0, f"{where}: an answered request cost {info['cost_usd']}"
    left = info["remaining_usd"]
    assert isinstance(left, dict) and Decimal(left["user"]) >= 0, f"{where}: remaining_usd {left!r}"
    return info


def check_completion(o: Outcome) -> None:
    body = json.loads(o.text)
    assert o.headers["content-type"].startswith("application/json"), o.headers
    assert body["object"] == "chat.completion" and body["model"] == o.model, body
    assert body["id"].startswith("chatcmpl-"), body
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str), body
    assert choice["message"]["content"], f"request {o.i}: an empty answer"
    assert choice["finish_reason"] in ("stop", "length"), body
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, body
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], body
    o.info = check_info(o, body["effreason"])
    assert o.headers["x-effreason-request-id"] == o.info["request_id"], o.headers
    assert o.headers["x-effreason-cost-usd"] == o.info["cost_usd"], o.headers
    assert o.headers["x-effreason-remaining-user-usd"] == o.info["remaining_usd"]["user"], o.headers
    if o.info["remaining_usd"].get("thread") is not None:
        assert o.headers["x-effreason-remaining-thread-usd"] == o.info["remaining_usd"]["thread"], o.headers


def check_stream(o: Outcome) -> None:
    assert o.headers["content-type"].startswith("text/event-stream"), o.headers
    events = [block for block in o.text.split("\n\n") if block.strip()]
    assert events and all(e.startswith("data: ") for e in events), f"request {o.i}: not SSE: {o.text[:300]!r}"
    assert events[-1] == "data: [DONE]", f"request {o.i}: the stream does not end in [DONE]: {events[-1]!r}"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert all("error" not in c for c in chunks), f"request {o.i}: an error in the stream: {chunks}"
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and all(c["object"] == "chat.completion.chunk" and c["model"] == o.model for c in chunks)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks[0]
    usage_chunks = [c for c in chunks if not c["choices"]]
    body = chunks[:-1] if o.include_usage else chunks
    assert len(usage_chunks) == (1 if o.include_usage else 0) and (not o.include_usage or chunks[-1]["usage"]), chunks
    finishes = [c for c in body if c["choices"][0]["finish_reason"] is not None]
    assert len(finishes) == 1 and finishes[0] is body[-1], f"request {o.i}: one finish chunk, last: {chunks}"
    assert finishes[0]["choices"][0]["finish_reason"] in ("stop", "length"), finishes
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body)
    assert text, f"request {o.i}: a stream without text"
    o.info = check_info(o, finishes[0].get("effreason"))
    assert o.headers["x-effreason-request-id"] == o.info["request_id"], o.headers
    if o.include_usage:
        usage = chunks[-1]["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, usage


def check_refusal(o: Outcome) -> None:
    assert o.headers["content-type"].startswith("application/json"), o.headers
    body = json.loads(o.text)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "insufficient_quota" and body["error"]["code"] == "insufficient_quota", body
    assert isinstance(body["error"]["message"], str) and "budget" in body["error"]["message"], body


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_workers_keep_every_budget_under_load(backend: Backend, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    key_budgets = backend.key_budgets
    with FakeOpenAI("ok") as fast_api, FakeOpenAI("ok") as strong_api:
        tiers = {"fast": fake_tier(fast_api.base_url, **FAST), "strong": fake_tier(strong_api.base_url, **STRONG)}
        data = config_data(tmp_path, tiers, ["fast:direct", "strong:direct"])
        data["tiers"] |= {"small": {"enabled": False}, "large": {"enabled": False}}  # the built-in tiers
        target: Path | str
        if backend.name == "postgresql":  # the ledger, the keys and the store in one shared database
            target = str(request.getfixturevalue("pg_url"))
            data["store"] = {"url": target}
            data["budget"] = {"ledger_url": target}
        else:
            target = tmp_path / "ledger.sqlite"
        config = write_toml(tmp_path / "effreason.toml", data)
        with KeyStore(target) as keys:
            made = [keys.create(f"load-{k}", budget_usd=budget,
                                thread_budget_usd=THREAD_BUDGET if k == THREAD_KEY else None)
                    for k, budget in enumerate(key_budgets)]
        secrets = [secret for secret, _ in made]

        servers = [ServeProcess(config, workers=backend.workers) for _ in range(backend.replicas)]
        with contextlib.ExitStack() as stack:
            for server in servers:
                stack.enter_context(server)
            outcomes = asyncio.run(run_load([s.api_base for s in servers], secrets, backend.requests))
            for server in servers:
                server.stop()
            logs = [server.output() for server in servers]
        for server, log in zip(servers, logs):
            assert server.returncode == 0, f"the server exited with {server.returncode}:\n{log[-4000:]}"
            assert "Traceback" not in log and "ERROR" not in log, f"the server logged errors:\n{log[-4000:]}"
        log = "\n".join(logs)

        # -- the ledger, after the servers stopped --------------------------------------------
        calls = fast_api.calls + strong_api.calls
        assert fast_api.received == fast_api.calls and strong_api.received == strong_api.calls, "upstream errors"
        counts = hold_counts(target)
        assert counts["reserved"] == 0, f"holds left open: {counts}"
        assert counts["committed"] == calls, f"{calls} upstream calls but {counts['committed']} settled holds"
        billed = billed_micro(fast_api.responses, tiers["fast"]) + billed_micro(strong_api.responses, tiers["strong"])
        committed = sum(row["actual_micro_usd"] for row in ledger_rows(target) if row["status"] == "committed")
        assert committed == billed, f"the ledger settled {committed} µ$, the upstreams billed {billed} µ$"
        with BudgetLedger(target) as ledger:
            assert_budget_kept(ledger, target, calls=calls)  # every limited scope, thread caps included
            spent = {k: ledger.spent(key.scope).micro_usd for k, (_, key) in enumerate(made)}
            for k, (_, key) in enumerate(made):
                limits = ledger.limits(key.scope)
                assert limits is not None and limits.max_cost_usd == Decimal(key_budgets[k])
                assert spent[k] <= to_micro(key_budgets[k]), f"key {k} spent {spent[k]} µ$, over ${key_budgets[k]}"
        charged = sum(spent.values())
        assert charged == billed, f"the keys were charged {charged} µ$, the upstreams billed {billed} µ$"

        # -- every response is valid ----------------------------------------------------------
        assert len(outcomes) == backend.requests
        statuses = Counter(o.status for o in outcomes)
        unexpected = {s: next(f"request {o.i} ({o.model}, stream={o.stream}): {o.text[:300]}"
                              for o in outcomes if o.status == s) for s in statuses if s not in (200, 429)}
        assert not unexpected, (f"statuses {dict(statuses)} (0: no HTTP response); first of each: {unexpected}\n"
                                f"server output:\n{log[-4000:]}")
        for o in outcomes:
            if o.status == 429:
                check_refusal(o)
            elif o.stream:
                check_stream(o)
            else:
                check_completion(o)
        answered = [o for o in outcomes if o.status == 200]
        assert len({o.info["request_id"] for o in answered}) == len(answered), "request ids repeat"
        assert {o.replica for o in answered} == set(range(backend.replicas)), "a replica answered nothing"
        per_key = {k: Counter(o.status for o in outcomes if o.key == k) for k in range(KEYS)}
        for k in range(KEYS - 1):
            assert per_key[k][200] > 0 and per_key[k][429] > 0, f"key {k} should answer, then run out: {per_key}"
            if backend.replicas > 1:  # a key's budget was spent from every replica, and refused by every one
                for r in range(backend.replicas):
                    got = Counter(o.status for o in outcomes if o.key == k and o.replica == r)
                    assert got[200] > 0 and got[429] > 0, f"key {k} on replica {r}: {dict(got)}"
        assert per_key[KEYS - 1][429] == 0, f"the $1 key was refused: {per_key}"
        thread_refusals = [o for o in outcomes
                           if o.status == 429 and "thread budget" in json.loads(o.text)["error"]["message"]]
        assert thread_refusals and {o.key for o in thread_refusals} == {THREAD_KEY}, "no thread cap was reached"
        assert sum(o.info["escalated"] for o in answered) > 0, "no graph request escalated"
        assert any(o.info["status"] == "budget_exhausted" for o in answered), "no request budget stopped an escalation"
        assert any(o.stream for o in answered) and any(o.model == "effreason/strong" for o in answered)
        for k in range(KEYS):  # every charge was reported to the caller
            reported = sum(to_micro(o.info["cost_usd"]) for o in answered if o.key == k)
            assert spent[k] == reported, f"key {k}: the ledger charged {spent[k]} µ$, the answers reported {reported}"
