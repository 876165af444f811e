"""Throughput and per-request overhead of ``effreason serve``, the OpenAI-compatible server,
on each database backend (SQLite, PostgreSQL) with 1, 2 and 4 worker processes.

The model is taken out of the picture: a fake OpenAI-compatible upstream on loopback
(``tests/fake_openai.py``, in a process of its own) answers every chat completion at once,
with usage and logprobs. The same async HTTP client (httpx) then sends a fixed number of
requests at a fixed concurrency to

  direct                   the fake upstream itself (the floor: client + upstream)
  BACKEND Nw MODEL         ``effreason serve --workers N`` in front of it, its budget
                           ledger, virtual keys and outcome store on BACKEND

for each backend of ``--backend`` (``sqlite``: files in a temporary directory, shared by
the workers; ``postgresql``: one database on a PostgreSQL 16 server started from the
``pgserver`` wheel in a temporary directory, over its Unix socket, durable settings
(fsync on), a fresh database per worker count), each worker count of ``--workers``, and
two models: ``effreason/fast`` (one held call on a pinned tier) and ``effreason`` (the
cost-aware graph: classify, hold, call, score confidence, decide, log). Every server
request is authenticated with a virtual key that has a dollar budget, so each one reads the
key, holds its worst case in the budget ledger (request and key scopes), settles it from
the reported usage and writes an outcome row: the production path.

Each row warms up, then makes two passes: ``--serial`` requests one at a time (p50
latency), then ``--requests`` at ``--concurrency`` (requests/s, p50 and p99 latency). The
overhead per request is the serial p50 minus the direct serial p50, in ms and as a ratio.
Each pass uses a fresh key, so every row starts from the same state of its key.

Last, time to first token on the embedded model: ``effreason serve`` with the built-in
configuration (ledger and outcome store in a temporary directory), ``effreason/small``
(llama.cpp on the CPU), ``--embedded-requests`` streamed requests (time to the first
content chunk, and to ``[DONE]``) against as many non-streamed ones. ``--skip-embedded``
leaves it out.

    python benchmarks/server.py                         # both backends, 1/2/4 workers, 2,000 requests at 32
    python benchmarks/server.py --backend postgresql --workers 1,4 --requests 500 --skip-embedded

Run it on an idle machine: the client, the upstream, the servers and PostgreSQL share its
cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

_ROOT = Path(__file__).resolve().parents[1]
_TESTS = _ROOT / "tests"
sys.path.insert(0, str(_TESTS))

from serve_process import ServeProcess, write_toml  # noqa: E402  (tests/serve_process.py)

from effreason_agents.adapters.keys import KeyStore  # noqa: E402

QUESTION = "What is 2 + 3?"
PINNED_MAX_TOKENS = 16
KEY_BUDGET_USD = "1000"
EMBEDDED_MAX_TOKENS = 64
EMBEDDED_QUESTION = "Explain in a few sentences why the sky is blue."
"""A question the small model answers at length, so the first token and the last differ."""
FAKE_PRICES = {"price_input_per_1m": "1.0", "price_output_per_1m": "4.0"}
BACKENDS = ("sqlite", "postgresql")
MODELS = ("effreason/fast", "effreason")
PG_MAX_CONNECTIONS = 300
"""Room for every worker's pools (ledger, keys, store: up to 8 connections each)."""

_FAKE_UPSTREAM = """
import sys
sys.path.insert(0, sys.argv[1])
from fake_openai import FakeOpenAI
fake = FakeOpenAI("ok").start()
print(fake.port, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
fake.close()
"""


@dataclass
class Row:
    """One measured path: throughput at the concurrency, latency percentiles, serial p50."""

    path: str
    backend: str | None
    workers: int | None
    model: str | None
    requests: int
    concurrency: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    serial_p50_ms: float
    errors: int


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class FakeUpstream:
    """tests/fake_openai.py's server in a child process (its threads off this process's GIL)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _FAKE_UPSTREAM, str(_TESTS)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"the fake upstream did not start (it printed {line!r})")
        self.base_url = f"http://127.0.0.1:{line}/v1"

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class BenchPostgres:
    """A PostgreSQL server from the ``pgserver`` wheel in a temporary directory, with
    ``max_connections`` raised to :data:`PG_MAX_CONNECTIONS` and durability left on (as the
    SQLite ledger commits every settlement to disk); :meth:`database` makes a fresh one."""

    def __init__(self) -> None:
        try:
            import pgserver
            import psycopg
        except ImportError as exc:
            raise SystemExit(f"the PostgreSQL rows need the pgserver wheel ({exc}): pip install -e '.[test]', "
                             "or run with --backend sqlite") from None
        self._pgserver, self._psycopg = pgserver, psycopg
        self.dir = Path(tempfile.mkdtemp(prefix="effreason-bench-pg-"))
        data = self.dir / "data"
        handle = pgserver.get_server(data, cleanup_mode="stop")
        with psycopg.connect(handle.get_uri(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET max_connections = '{PG_MAX_CONNECTIONS}'")
        handle.cleanup()  # max_connections applies at the next start
        self.handle = pgserver.get_server(data, cleanup_mode="stop")
        self._made = 0

    def database(self) -> str:
        """The URL of a new, empty database."""
        self._made += 1
        name = f"bench_{self._made}"
        with self._psycopg.connect(self.handle.get_uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return str(self.handle.get_uri(database=name))

    def close(self) -> None:
        self.handle.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


async def _load(url: str, body: Mapping[str, Any], headers: Mapping[str, str], n: int, concurrency: int,
                check: Callable[[httpx.Response], bool]) -> tuple[float, list[float], int]:
    """``n`` POSTs from ``concurrency`` clients at once: (seconds, latencies in s, failures)."""
    latencies: list[float] = []
    failures = 0
    left = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0), headers=dict(headers)) as client:

        async def one_client() -> None:
            nonlocal failures
            for _ in left:
                t0 = time.perf_counter()
                r = await client.post(url, json=body)
                latencies.append(time.perf_counter() - t0)
                if not check(r):
                    failures += 1
                    if failures == 1:
                        print(f"  unexpected answer {r.status_code}: {r.text[:300]}", file=sys.stderr)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, failures


def _ok(r: httpx.Response) -> bool:
    return r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None


def measure(path: str, url: str, body: Mapping[str, Any], args: argparse.Namespace, *,
            key: Callable[[str], Mapping[str, str]] = lambda _: {}, workers: int | None = None,
            backend: str | None = None) -> Row:
    """Warm up, then the serial pass, then the concurrent one; ``key(name)`` gives the
    headers of a fresh virtual key for each pass."""
    warm = max(args.concurrency, min(200, args.requests // 10))
    asyncio.run(_load(url, body, key("warm"), warm, args.concurrency, _ok))
    _, serial, serial_errors = asyncio.run(_load(url, body, key("serial"), args.serial, 1, _ok))
    seconds, latencies, errors = asyncio.run(_load(url, body, key("load"), args.requests, args.concurrency, _ok))
    row = Row(path=path, backend=backend, workers=workers, model=body["model"] if workers else None,
              requests=args.requests,
              concurrency=args.concurrency, seconds=seconds, rps=args.requests / seconds,
              p50_ms=1000 * statistics.median(latencies), p99_ms=1000 * percentile(latencies, 0.99),
              serial_p50_ms=1000 * statistics.median(serial), errors=errors + serial_errors)
    print(f"  {path:<32} {row.rps:7.1f} req/s  p50 {row.p50_ms:6.1f} ms  p99 {row.p99_ms:6.1f} ms  "
          f"serial p50 {row.serial_p50_ms:5.1f} ms", file=sys.stderr, flush=True)
    return row


def server_config(tmp: Path, upstream: str, database_url: str | None = None) -> Path:
    """One ``fast`` tier on the fake upstream, the ``direct`` strategy, calibrators off; the
    built-in tiers disabled; ledger, keys and outcome store in ``tmp`` (SQLite files), or in
    the PostgreSQL database ``database_url``."""
    tier = {"engine": "openai-compatible", "model": "fake", "base_url": upstream, "context_window": 8192,
            "timeout_s": 30.0, "max_retries": 0, "capabilities": {"logprobs": True, "top_logprobs": 2},
            **FAKE_PRICES}
    if database_url is None:
        budget, store = {"ledger_path": str(tmp / "ledger.sqlite")}, {"path": str(tmp / "outcomes.sqlite")}
    else:
        budget, store = {"ledger_url": database_url}, {"url": database_url}
    return write_toml(tmp / "effreason.toml", {
        "tiers": {"fast": tier, "small": {"enabled": False}, "large": {"enabled": False}},
        "strategies": {"direct": {"kind": "direct", "max_tokens": 24}},
        "ladder": ["fast:direct"],
        "escalation": {"start_arm": {"easy": "fast:direct", "medium": "fast:direct", "hard": "fast:direct"},
                       "calibrators": "off"},
        "budget": budget,
        "store": store,
    })


def bench_server(upstream: FakeUpstream, backend: str, workers: int, body: Mapping[str, Any],
                 args: argparse.Namespace, postgres: BenchPostgres | None) -> list[Row]:
    """Both models through ``effreason serve --workers N`` on ``backend`` (fresh files, or a
    fresh database)."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="effreason-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        database_url = None
        if backend == "postgresql":
            if postgres is None:
                raise ValueError("the postgresql rows need the PostgreSQL server (BenchPostgres)")
            database_url = postgres.database()
        target: Path | str = database_url or tmp / "ledger.sqlite"
        config = server_config(tmp, upstream.base_url, database_url)
        env = {"EFFREASON_DATABASE_URL": None, "EFFREASON_STORE": None}  # the config file decides
        with ServeProcess(config, workers=workers, env=env) as server:
            url = server.api_base + "/chat/completions"
            for model in MODELS:
                def key(name: str, model: str = model) -> dict[str, str]:
                    # a fresh key per pass: every row starts from the same state of its key
                    with KeyStore(target) as keys:
                        secret, _ = keys.create(f"bench-{model}-{name}", budget_usd=KEY_BUDGET_USD)
                    return {"authorization": f"Bearer {secret}"}

                rows.append(measure(f"{backend} {workers}w {model}", url, {**body, "model": model}, args, key=key,
                                    workers=workers, backend=backend))
    return rows


def bench_fake(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    upstream = FakeUpstream()
    postgres: BenchPostgres | None = None
    try:
        body = {"model": "fake", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": PINNED_MAX_TOKENS}
        rows.append(measure("direct (fake upstream)", upstream.base_url + "/chat/completions", body, args))
        for backend in args.backends:
            if backend == "postgresql":
                postgres = BenchPostgres()
            for workers in args.workers:
                rows += bench_server(upstream, backend, workers, body, args, postgres)
    finally:
        upstream.close()
        if postgres is not None:
            postgres.close()
    return rows


async def _embedded_once(client: httpx.AsyncClient, url: str, stream: bool) -> tuple[float | None, float, int]:
    """(time to the first content chunk or None, time to the whole answer, in seconds;
    completion tokens)."""
    body: dict[str, Any] = {"model": "effreason/small", "messages": [{"role": "user", "content": EMBEDDED_QUESTION}],
                            "max_tokens": EMBEDDED_MAX_TOKENS}
    t0 = time.perf_counter()
    if not stream:
        r = await client.post(url, json=body)
        r.raise_for_status()
        return None, time.perf_counter() - t0, int(r.json()["usage"]["completion_tokens"])
    first: float | None = None
    tokens = 0
    stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", url, json=stream_body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: "):])
            if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return first, time.perf_counter() - t0, tokens


def bench_embedded(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="effreason-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        config = write_toml(tmp / "effreason.toml", {"budget": {"ledger_path": str(tmp / "ledger.sqlite")},
                                                      "store": {"path": str(tmp / "outcomes.sqlite")}})
        with KeyStore(tmp / "ledger.sqlite") as keys:
            secret, _ = keys.create("bench", budget_usd=KEY_BUDGET_USD)
        env = {"OPENAI_API_KEY": None, "EFFREASON_CONFIG": None}  # the built-in small tier only
        with ServeProcess(config, workers=1, env=env, startup_timeout_s=180) as server:
            url = server.api_base + "/chat/completions"

            async def run() -> dict[str, Any]:
                async with httpx.AsyncClient(timeout=httpx.Timeout(600.0),
                                             headers={"authorization": f"Bearer {secret}"}) as client:
                    t0 = time.perf_counter()
                    await _embedded_once(client, url, stream=False)  # starts llama.cpp and loads the model
                    cold = time.perf_counter() - t0
                    streamed = [await _embedded_once(client, url, stream=True) for _ in range(n)]
                    whole = [await _embedded_once(client, url, stream=False) for _ in range(n)]
                ttft = [f for f, _, _ in streamed if f is not None]
                return {"requests": n, "max_tokens": EMBEDDED_MAX_TOKENS, "first_request_s": cold,
                        "stream_ttft_p50_ms": 1000 * statistics.median(ttft) if ttft else None,
                        "stream_total_p50_ms": 1000 * statistics.median(t for _, t, _ in streamed),
                        "nonstream_total_p50_ms": 1000 * statistics.median(t for _, t, _ in whole),
                        "completion_tokens_p50": statistics.median(k for _, _, k in streamed + whole),
                        "streams_without_text": n - len(ttft)}

            return asyncio.run(run())


def render(rows: list[Row], embedded: dict[str, Any] | None, args: argparse.Namespace) -> str:
    direct = rows[0]
    lines = [f"{args.requests} requests at concurrency {args.concurrency}; serial p50 over {args.serial} "
             f"one at a time; {os.cpu_count()} CPU cores", "",
             "| path | req/s | p50 ms | p99 ms | req/s vs direct | serial p50 ms | overhead ms | latency vs direct |",
             "| --- | --: | --: | --: | --: | --: | --: | --: |"]
    for r in rows:
        overhead = r.serial_p50_ms - direct.serial_p50_ms
        lines.append(f"| {r.path} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.rps / direct.rps:.2f}× | "
                     f"{r.serial_p50_ms:.2f} | {'' if r is direct else f'{overhead:+.2f}'} | "
                     f"{'' if r is direct else f'{r.serial_p50_ms / direct.serial_p50_ms:.1f}×'} |"
                     + ("" if not r.errors else f" ({r.errors} failed)"))
    backends = [b for b in BACKENDS if any(r.backend == b for r in rows)]
    if backends:  # the same figures side by side: one line per model and worker count
        names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
        lines += ["", "| model | workers | " + " | ".join(f"{names[b]} req/s | p50 ms | p99 ms" for b in backends)
                  + " |", "| --- | --: | " + " | ".join("--: | --: | --:" for _ in backends) + " |"]
        by = {(r.backend, r.workers, r.model): r for r in rows if r.backend}
        for model in MODELS:
            for workers in args.workers:
                cells = []
                for b in backends:
                    r = by.get((b, workers, model))
                    cells.append("| | " if r is None else f"{r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f}")
                lines.append(f"| {model} | {workers} | " + " | ".join(cells) + " |")
    if embedded is not None:
        e = embedded
        ttft = "n/a" if e["stream_ttft_p50_ms"] is None else f"{e['stream_ttft_p50_ms']:.0f} ms"
        lines += ["", f"embedded small tier (llama.cpp, CPU), {e['requests']} requests each, max_tokens "
                  f"{e['max_tokens']} (answers of {e['completion_tokens_p50']:.0f} tokens at the median); "
                  f"first request (model load) {e['first_request_s']:.1f} s", "",
                  "| effreason/small | p50 |", "| --- | --: |",
                  f"| stream: time to first token | {ttft} |",
                  f"| stream: time to [DONE] | {e['stream_total_p50_ms']:.0f} ms |",
                  f"| no stream: whole answer | {e['nonstream_total_p50_ms']:.0f} ms |"]
    return "\n".join(lines)


def _workers(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes counts separated by commas, like 1,2,4; got {text!r}") from None
    if not counts or any(n < 1 or n > 64 for n in counts):
        raise argparse.ArgumentTypeError(f"each count must be from 1 to 64; got {text!r}")
    return list(dict.fromkeys(counts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="timed requests per row (default: 2000)")
    p.add_argument("--concurrency", type=int, default=32, help="clients in flight at once (default: 32)")
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both",
                   help="where the ledger, keys and outcome store live (default: both, SQLite first)")
    p.add_argument("--workers", type=_workers, default=[1, 2, 4],
                   help="server worker counts, separated by commas (default: 1,2,4)")
    p.add_argument("--serial", type=int, default=200,
                   help="requests one at a time per row, for the per-request overhead (default: 200)")
    p.add_argument("--embedded-requests", type=int, default=5,
                   help="streamed and non-streamed requests on the embedded model (default: 5)")
    p.add_argument("--skip-embedded", action="store_true", help="leave out the embedded model's time to first token")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = p.parse_args(argv)
    args.backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    for name in ("requests", "concurrency", "serial", "embedded_requests"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")

    rows = bench_fake(args)
    embedded = None if args.skip_embedded else bench_embedded(args.embedded_requests)
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "embedded": embedded, "cpus": os.cpu_count(),
                          "requests": args.requests, "concurrency": args.concurrency, "serial": args.serial,
                          "backends": args.backends, "workers": args.workers}, indent=2))
    else:
        print(render(rows, embedded, args))
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
