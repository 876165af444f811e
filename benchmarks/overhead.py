"""Per-request overhead of the cost-aware reasoning graph, beyond the model call.

effreason-agents answers each question through a LangGraph graph (classify, solve,
assess, finalize, log) that picks the cheapest arm, holds the worst-case cost in a
budget ledger, scores confidence from logprobs and records the outcome. This script
measures what that bookkeeping costs per request, with the model taken out of the
picture: a fake OpenAI-compatible server on loopback answers every chat completion at
once (with usage and logprobs), and three client paths call it in turn:

  raw SDK     openai.OpenAI().chat.completions.create(...)
  ChatOpenAI  langchain_openai.ChatOpenAI(...).invoke(...), the client path the graph uses
  graph       build_reasoning_graph(config).invoke({"question": ...}) with one tier, one
              arm (direct), a request budget (so the ledger is exercised) and logging on

Each path runs --warmup calls, then --n timed calls (time.perf_counter). The report
gives p50/p90 per path, the graph's overhead over the raw SDK (p50 difference and
ratio) and over ChatOpenAI. ``--json`` prints one JSON object instead.

    python benchmarks/overhead.py --n 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import openai
from langchain_openai import ChatOpenAI

from effreason_agents.config import Config
from effreason_agents.graph import build_reasoning_graph

try:
    from effreason_agents.state import ReasoningContext
except ImportError:  # the graph package layout
    from effreason_agents.graph import ReasoningContext  # type: ignore[no-redef]

QUESTION = "What is 2 + 3?"
TOKENS = ["The", " answer", " is", " ", "5", ".", "\n", "####", " ", "5"]


def completion_body(model: str) -> bytes:
    """A chat.completion with usage and OpenAI-format logprobs (top alternatives included)."""
    content = [
        {"token": t, "logprob": -0.01, "bytes": list(t.encode()),
         "top_logprobs": [{"token": t, "logprob": -0.01, "bytes": list(t.encode())},
                          {"token": "6", "logprob": -5.0, "bytes": [54]}]}
        for t in TOKENS
    ]
    return json.dumps({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(TOKENS)},
                     "logprobs": {"content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": len(TOKENS), "total_tokens": 40 + len(TOKENS)},
    }).encode()


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions at once; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_error(404)
            return
        body = completion_body(json.loads(raw or b"{}").get("model", "fake"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep the output clean
        pass


def start_server() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def graph_config(base_url: str, tmp: Path) -> Config:
    """One openai-compatible tier, one direct arm, a request budget, store and ledger in ``tmp``."""
    return Config.model_validate({
        "tiers": {"fast": {
            "engine": "openai-compatible", "model": "fake", "base_url": base_url,
            "price_input_per_1m": "0.15", "price_output_per_1m": "0.60", "context_window": 8192,
            "timeout_s": 30.0, "max_retries": 0,
            "capabilities": {"logprobs": True, "top_logprobs": 2},
        }},
        "strategies": {"direct": {"kind": "direct", "max_tokens": 24}},
        "ladder": ["fast:direct"],
        "escalation": {"start_arm": {"easy": "fast:direct", "medium": "fast:direct", "hard": "fast:direct"}},
        "budget": {"max_cost_usd": "0.01", "ledger_path": str(tmp / "ledger.sqlite")},
        "store": {"path": str(tmp / "outcomes.sqlite")},
        "source": "benchmarks/overhead.py",
    })


def timed(fn: Callable[[], Any], n: int, warmup: int) -> list[float]:
    """Milliseconds per call over ``n`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=10, method="inclusive")
    return {"p50": round(statistics.median(ms), 3), "p90": round(q[8], 3), "mean": round(statistics.fmean(ms), 3)}


def run(n: int, warmup: int) -> dict[str, Any]:
    server, base_url = start_server()
    messages = [{"role": "system", "content": "Answer the question."}, {"role": "user", "content": QUESTION}]
    try:
        sdk = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        raw = timed(lambda: sdk.chat.completions.create(
            model="fake", messages=messages, max_tokens=24, temperature=0.0, logprobs=True, top_logprobs=2), n, warmup)

        llm = ChatOpenAI(model="fake", base_url=base_url, api_key="x", max_retries=0, temperature=0.0,
                         max_tokens=24, logprobs=True, top_logprobs=2)
        lc = timed(lambda: llm.invoke([("system", "Answer the question."), ("human", QUESTION)]), n, warmup)

        with tempfile.TemporaryDirectory(prefix="effreason-overhead-") as tmp:
            graph = build_reasoning_graph(graph_config(base_url, Path(tmp)))
            statuses: set[str] = set()

            def ask() -> None:
                out = graph.invoke({"question": QUESTION}, context=ReasoningContext())
                statuses.add(out["result"]["status"])

            g = timed(ask, n, warmup)
            graph.services.close()
        if statuses != {"answered"}:
            raise SystemExit(f"the graph did not answer every request: statuses {sorted(statuses)}")
    finally:
        server.shutdown()
        server.server_close()

    s_raw, s_lc, s_g = summary(raw), summary(lc), summary(g)
    return {
        "n": n, "warmup": warmup,
        "raw_sdk_ms": s_raw, "chatopenai_ms": s_lc, "graph_ms": s_g,
        "overhead_p50_ms": round(s_g["p50"] - s_raw["p50"], 3),
        "ratio_p50": round(s_g["p50"] / s_raw["p50"], 2),
        "overhead_vs_chatopenai_p50_ms": round(s_g["p50"] - s_lc["p50"], 3),
        "chatopenai_over_raw_p50_ms": round(s_lc["p50"] - s_raw["p50"], 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="timed calls per path (default: 300)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls per path first (default: 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args()
    if args.n < 2:
        p.error("--n must be at least 2")
    r = run(args.n, args.warmup)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"loopback fake OpenAI server, {r['n']} timed calls per path after {r['warmup']} warm-up\n")
    print(f"{'path':<12} {'p50 ms':>9} {'p90 ms':>9} {'mean ms':>9}")
    for label, key in (("raw SDK", "raw_sdk_ms"), ("ChatOpenAI", "chatopenai_ms"), ("graph", "graph_ms")):
        s = r[key]
        print(f"{label:<12} {s['p50']:>9.3f} {s['p90']:>9.3f} {s['mean']:>9.3f}")
    print(f"\ngraph overhead over raw SDK (p50):    {r['overhead_p50_ms']:.3f} ms  (graph/raw = {r['ratio_p50']:.2f}x)")
    print(f"graph overhead over ChatOpenAI (p50): {r['overhead_vs_chatopenai_p50_ms']:.3f} ms")
    print(f"ChatOpenAI over raw SDK (p50):        {r['chatopenai_over_raw_p50_ms']:.3f} ms")


if __name__ == "__main__":
    main()
