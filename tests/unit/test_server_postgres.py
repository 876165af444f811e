"""``effreason serve`` on PostgreSQL when the database goes away and comes back, and when it
cannot be reached at all.

The outage scenario runs the real command (two worker processes) on a PostgreSQL server of
its own (``pgserver``, in a fresh data directory), with every URL carrying a password the
server never needs (it trusts local connections) and must never print. Two loopback fake
upstreams answer only when the test opens their gate, so which calls are in flight when the
database stops is decided by the test, not by timing:

* tier ``fast`` (the graph's only arm, and pinned): group **A** is waiting on it, holds
  reserved, when the database stops; its answers come after the database is back, so they
  settle on the restored database and answer 200;
* tier ``spare`` (pinned only): group **B** is waiting on it when the database stops, and
  is answered while it is still down, so the settlement cannot be written.

During the outage every new request answers 503 ``database_unavailable`` in OpenAI's error
shape (never 200, never 500) without reaching a provider, and ``GET /health`` answers 503.
After PostgreSQL is back (same data directory, same socket) requests succeed again without
restarting the server.

Afterwards, from the database's own tables: every 200 has settled holds equal to the cost it
reported; every call is settled exactly once and billed exactly, and no hold is left open.
Group B's calls were answered (and billed) while the database was down: they answer 200
and their settlements, which the ledger could not write then, are retried in the
background until the database is back (:class:`~effreason_agents.engine.runner.PendingSettlements`),
so the ledger's spend equals what the providers billed.

Last, ``effreason serve`` pointed at a database that cannot be reached exits at once with a
message that names the URL without its password.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    billed_micro,
    config_data,
    fake_tier,
    hold_counts,
    ledger_rows,
    wait_until,
    with_password,
)
from fake_openai import FakeOpenAI  # noqa: E402
from serve_process import ServeProcess, ServeProcessError, free_port, write_toml  # noqa: E402

from effreason_agents.adapters.database import redact_url  # noqa: E402
from effreason_agents.adapters.keys import KeyStore  # noqa: E402
from effreason_agents.adapters.ledger import BudgetLedger  # noqa: E402
from effreason_agents.core.money import to_micro  # noqa: E402

PASSWORD = "Sup3r-s3cret-pw"
WORKERS = 2
TIER_TIMEOUT_S = 120.0
"""Above the longest a gate stays closed, so no upstream call times out in the scenario."""
GATE_S = 90.0
"""A guard: a gate left closed by a failed test opens by itself."""






class GatedOpenAI(FakeOpenAI):
    """A fake upstream that answers (as ``ok``) only while its ``gate`` is open."""

    def __init__(self) -> None:
        super().__init__("ok")
        self.gate = threading.Event()
        self.gate.set()

    def _answer(self, body: Any, authorization: str) -> tuple[int, dict[str, Any]]:
        self.gate.wait(GATE_S)
        return super()._answer(body, authorization)

    def close(self) -> None:
        self.gate.set()
        super().close()


@dataclass(frozen=True)
class Ask:
    """One request: its model, whether streamed, which key, which thread (if any)."""

    model: str
    stream: bool = False
    key: str = "main"
    thread: str | None = None


@dataclass
class Reply:
    ask: Ask
    status: int
    headers: dict[str, str]
    text: str
    events: list[Any] = field(default_factory=list)
    """A stream's ``data:`` payloads, JSON-decoded (``"[DONE]"`` as the string)."""

    @property
    def body(self) -> Any:
        return json.loads(self.text)


MIX = [Ask("effreason"), Ask("effreason", stream=True), Ask("effreason/fast"), Ask("effreason/fast", stream=True),
       Ask("effreason", thread="t1"), Ask("effreason/fast", thread="t1")]


class Client:
    """Requests to the server from threads (each its own connection), with the keys' secrets."""

    def __init__(self, api_base: str, secrets: dict[str, str]) -> None:
        self.api_base = api_base
        self.secrets = secrets
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.sent = 0

    def send(self, ask: Ask) -> Reply:
        self.sent += 1
        body: dict[str, Any] = {"model": ask.model,
                                "messages": [{"role": "user", "content": f"What is {self.sent} + 3?"}]}
        if ask.model != "effreason":
            body["max_tokens"] = 16
        if ask.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers = {"authorization": f"Bearer {self.secrets[ask.key]}"}
        if ask.thread:
            headers["x-effreason-thread"] = ask.thread
        with httpx.Client(timeout=httpx.Timeout(300.0)) as http:
            r = http.post(self.api_base + "/chat/completions", json=body, headers=headers)
        reply = Reply(ask, r.status_code, dict(r.headers), r.text)
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            for block in r.text.split("\n\n"):
                if block.strip():
                    assert block.startswith("data: "), f"not SSE: {r.text[:300]!r}"
                    data = block[len("data: "):]
                    reply.events.append(data if data == "[DONE]" else json.loads(data))
        return reply

    def submit(self, asks: list[Ask]) -> list[Future[Reply]]:
        return [self.pool.submit(self.send, ask) for ask in asks]

    def run(self, asks: list[Ask]) -> list[Reply]:
        return [f.result(timeout=300) for f in self.submit(asks)]

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def answered_info(reply: Reply) -> dict[str, Any]:
    """The ``effreason`` field of a 200 that answered (a completion, or a whole stream)."""
    where = f"{reply.ask}: {reply.text[:400]}"
    assert reply.status == 200, where
    if not reply.ask.stream:
        body = reply.body
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"], where
        info = body["effreason"]
    else:
        assert reply.events and reply.events[-1] == "[DONE]", f"the stream does not end in [DONE]: {where}"
        chunks = reply.events[:-1]
        assert all("error" not in c and c["object"] == "chat.completion.chunk" for c in chunks), where
        [finish] = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None]
        info = finish["effreason"]
    assert info["request_id"] and Decimal(info["cost_usd"]) > 0, where
    assert reply.headers["x-effreason-request-id"] == info["request_id"], where
    return info


def assert_database_unavailable(reply: Reply) -> None:
    """A 503 in OpenAI's error shape, code ``database_unavailable``, the password not in it."""
    where = f"{reply.ask}: {reply.status} {reply.text[:400]}"
    assert reply.status == 503 and reply.headers["content-type"].startswith("application/json"), where
    body = reply.body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, where
    assert body["error"]["code"] == "database_unavailable" and body["error"]["type"] == "server_error", where
    assert "unavailable" in body["error"]["message"] and PASSWORD not in reply.text, where


@pytest.fixture()
def own_postgres(pg_data_dir: Path) -> Iterator[dict[str, Any]]:
    """A PostgreSQL server of this test's own: ``{"handle", "data", "url"}`` (the URL with
    :data:`PASSWORD`); the test may stop and restart it (replacing ``handle``)."""
    pgserver = pytest.importorskip("pgserver", reason="the PostgreSQL tests need the pgserver wheel (test extra)")
    pg = {"data": pg_data_dir, "handle": pgserver.get_server(pg_data_dir, cleanup_mode="stop")}
    pg["url"] = with_password(pg["handle"].get_uri(), PASSWORD)
    try:
        yield pg
    finally:
        pg["handle"].cleanup()


def test_requests_fail_cleanly_while_postgres_is_down_and_succeed_once_it_is_back(
    tmp_path: Path, own_postgres: dict[str, Any]
) -> None:
    import pgserver

    url = own_postgres["url"]
    with GatedOpenAI() as fast_api, GatedOpenAI() as spare_api:
        tiers = {"fast": fake_tier(fast_api.base_url, timeout_s=TIER_TIMEOUT_S),
                 "spare": fake_tier(spare_api.base_url, timeout_s=TIER_TIMEOUT_S)}
        data = config_data(tmp_path, tiers, ["fast:direct"])
        data["tiers"] |= {"small": {"enabled": False}, "large": {"enabled": False}}  # the built-in tiers
        config = write_toml(tmp_path / "effreason.toml", data)
        with KeyStore(url) as keys:
            made = {name: keys.create(f"outage-{name}", budget_usd="1", thread_budget_usd="0.5")
                    for name in ("main", "lost")}
        server = ServeProcess(config, workers=WORKERS, env={"EFFREASON_DATABASE_URL": url})
        client = Client(server.api_base, {name: secret for name, (secret, _) in made.items()})
        try:
            with server:
                # -- before: everything answers ----------------------------------------------
                before = client.run(MIX * 3)
                infos = [answered_info(r) for r in before]
                assert httpx.get(server.base_url + "/health", timeout=60).status_code == 200

                # -- calls in flight when the database stops -----------------------------------
                fast_api.gate.clear()
                spare_api.gate.clear()
                received = fast_api.received
                group_a = client.submit(MIX[:4])
                group_b_asks = [Ask("effreason/spare", key="lost"), Ask("effreason/spare", stream=True, key="lost")]
                group_b = client.submit(group_b_asks)
                wait_until(lambda: fast_api.received == received + 4 and spare_api.received == 2,
                           "the in-flight calls reaching their upstreams (holds reserved)")
                own_postgres["handle"].cleanup()  # PostgreSQL stops

                # -- the outage -----------------------------------------------------------------
                at_upstream = fast_api.received
                during = client.submit(MIX)
                spare_api.gate.set()  # group B is answered (and billed) while the database is down
                health = httpx.get(server.base_url + "/health", timeout=120)
                down = [f.result(timeout=300) for f in during]
                lost = [f.result(timeout=300) for f in group_b]
                assert fast_api.received == at_upstream, "a call reached a provider while its hold could not be taken"
                for reply in down:
                    assert_database_unavailable(reply)
                assert health.status_code == 503 and health.json()["status"] == "unavailable", health.text
                assert health.json()["ledger"]["ok"] is False and PASSWORD not in health.text, health.text
                assert redact_url(url) in health.json()["ledger"]["error"], health.text
                # answered and billed while the database is down: the answer is delivered, its
                # settlement retried in the background
                lost_infos = [answered_info(r) for r in lost]

                # -- PostgreSQL is back: same data directory, same socket ------------------------
                own_postgres["handle"] = pgserver.get_server(own_postgres["data"], cleanup_mode="stop")
                assert with_password(own_postgres["handle"].get_uri(), PASSWORD) == url
                fast_api.gate.set()  # group A's answers come now, and settle on the restored database
                infos += [answered_info(f.result(timeout=300)) for f in group_a]
                after = client.run(MIX * 2)  # no restart of the server
                infos += [answered_info(r) for r in after]
                health = httpx.get(server.base_url + "/health", timeout=120)
                assert health.status_code == 200, health.text
                server.stop()
                log = server.output()
            assert server.returncode == 0, f"the server exited with {server.returncode}:\n{log[-4000:]}"
        finally:
            client.close()
        assert PASSWORD not in log, "the server printed the database password"
        assert "chat completion failed" not in log and "internal server error" not in log, log[-4000:]
        assert "database unavailable" in log  # each 503 was logged, with its reason
        assert "settled after the ledger came back" in log

        # -- the ledger, after the server stopped ------------------------------------------------
        with BudgetLedger(url) as ledger:
            lost_scope, main_scope = made["lost"][1].scope, made["main"][1].scope
            main_spent = ledger.spent(main_scope).micro_usd
            lost_spent = ledger.spent(lost_scope).micro_usd
        # group B's billed calls were recorded once the database was back
        assert lost_spent == billed_micro(spare_api.responses, tiers["spare"]) > 0
        assert lost_spent == sum(to_micro(i["cost_usd"]) for i in lost_infos)
        counts = hold_counts(url)
        assert counts == {"reserved": 0, "committed": fast_api.calls + spare_api.calls, "released": 0}, counts
        rows = ledger_rows(url)
        committed = [r for r in rows if r["status"] == "committed"]
        billed = billed_micro(fast_api.responses, tiers["fast"])
        assert sum(r["actual_micro_usd"] for r in committed) == billed + lost_spent
        assert billed == main_spent
        for info in infos:  # never a 200 without its holds: each one settled what it reported
            mine = [r for r in committed if r["key"].startswith(f"{info['request_id']}:")]
            assert mine and sum(r["actual_micro_usd"] for r in mine) == to_micro(info["cost_usd"]), (info, mine)
        assert sum(to_micro(i["cost_usd"]) for i in infos) == main_spent
        assert len(infos) == len(MIX) * 5 + 4


def unreachable_url(tmp_path: Path, form: str) -> str:
    return {
        "userinfo": f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/ledger",
        "parameter": f"postgresql://app@/ledger?host={tmp_path / 'no-server-here'}&password={PASSWORD}",
    }[form]


@pytest.mark.parametrize(("where", "form"), [("environment", "userinfo"), ("config", "parameter")])
def test_serve_with_an_unreachable_database_exits_at_once_naming_it_without_the_password(
    tmp_path: Path, where: str, form: str
) -> None:
    url = unreachable_url(tmp_path, form)
    with FakeOpenAI("ok") as api:
        data = config_data(tmp_path, {"fast": fake_tier(api.base_url)}, ["fast:direct"])
        data["tiers"] |= {"small": {"enabled": False}, "large": {"enabled": False}}
        env: dict[str, str | None] = {"EFFREASON_DATABASE_URL": None}
        if where == "config":
            data["store"] = {"url": url}
            data["budget"] = {"ledger_url": url}
        else:
            env["EFFREASON_DATABASE_URL"] = url
        server = ServeProcess(write_toml(tmp_path / "effreason.toml", data), workers=WORKERS, env=env,
                              startup_timeout_s=60)
        try:
            with pytest.raises(ServeProcessError, match="exited with code 1 before answering"):
                server.start()
            out = server.output()
        finally:
            server.close()
        assert api.received == 0
    assert f"cannot reach PostgreSQL at {redact_url(url)}" in " ".join(out.split()), out
    assert "check the URL and that the server is running" in " ".join(out.split()), out
    assert PASSWORD not in out and "Traceback" not in out, out
