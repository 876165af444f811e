"""A loopback OpenAI-compatible chat-completions server for tests.

``FakeOpenAI`` answers ``POST /v1/chat/completions`` on ``127.0.0.1`` (a free port) from a
daemon thread, over HTTP/1.1 with ``Content-Length`` and keep-alive, like a real provider
as the OpenAI SDK and ``ChatOpenAI`` see it. How it answers is its ``mode``, which a test
may change while the server runs:

``ok``
    ``"The answer is 5.\\n#### 5"``, finish reason ``stop``, usage (``prompt_tokens`` =
    the o200k count of every message's content + 4 per message), and OpenAI-format
    logprobs with ``top_logprobs`` (each token at -0.01, so confidence is high).
``over_report``
    like ``ok``, but ``prompt_tokens`` = ceil(1.4 × the o200k count) + 4 per message: a
    provider whose tokenizer makes more tokens than o200k (a small vocabulary on CJK text
    and digits).
``no_usage``
    like ``ok`` without the ``usage`` key.
``bad_usage``
    like ``ok`` with usage that cannot be read: ``bad_usage="negative"`` (negative counts),
    ``"string"`` (``"prompt_tokens": "many"``) or ``"alternate"`` (the default: odd calls
    negative, even calls strings).
``error_500``
    HTTP 500 with an OpenAI-style error body.
``error_with_key``
    HTTP 400 whose error message quotes the bearer key the request carried, as some
    providers do (``Incorrect API key provided: sk-...``).
``slow``
    sleeps ``slow_s`` seconds (woken early by :meth:`FakeOpenAI.close`), then answers as ``ok``.

It honours ``max_tokens`` / ``max_completion_tokens`` (the reply is cut to that many tokens,
finish reason ``length``) and ``n`` (n identical choices, usage summed). ``stream: true``
gets server-sent chunks, one token each (``stream_delay_s`` apart), with a final usage chunk
when ``stream_options.include_usage`` is set; ``streams_cut`` counts streams whose client
went away. ``calls`` counts the requests answered with HTTP 200;
``requests`` holds every request body received and ``responses`` every 200 body sent.

::

    with FakeOpenAI("over_report") as server:
        base_url = server.base_url          # http://127.0.0.1:PORT/v1
        ...
        server.mode = "ok"
        assert server.calls == 3
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ANSWER_TOKENS", "MODES", "FakeOpenAI", "o200k_tokens"]

MODES = ("ok", "over_report", "no_usage", "bad_usage", "error_500", "error_with_key", "slow")
BAD_USAGE_KINDS = ("negative", "string", "alternate")
ANSWER_TOKENS = ("The", " answer", " is", " ", "5", ".", "\n", "####", " ", "5")
"""The reply, token by token: ``"The answer is 5.\\n#### 5"``."""
ANSWER_LOGPROB = -0.01
ALTERNATIVE_LOGPROB = -5.0
PER_MESSAGE_TOKENS = 4
OVER_REPORT_FACTOR = 1.4

_encoding: Any = None
_encoding_lock = threading.Lock()


def o200k_tokens(text: str) -> int:
    """Tokens of ``text`` in OpenAI's o200k BPE (``bpe-openai``)."""
    global _encoding
    with _encoding_lock:
        if _encoding is None:
            from bpe_openai import get_encoding

            _encoding = get_encoding("o200k_base")
    return len(_encoding.encode(text))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content)
    return "" if content is None else str(content)


def _prompt_tokens(messages: Sequence[Mapping[str, Any]], factor: float) -> int:
    counted = sum(o200k_tokens(_content_text(m.get("content"))) for m in messages)
    return math.ceil(counted * factor) + PER_MESSAGE_TOKENS * len(messages)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._connected(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._disconnected(self.connection)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, _error_body(f"no route {self.path}; POST /v1/chat/completions", "invalid_request_error"))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            self._send(400, _error_body(f"the body is not JSON: {exc}", "invalid_request_error"))
            return
        fake = self.server.fake
        fake._received(body, self.headers.get("Authorization", ""))
        status, payload = fake._answer(body, self.headers.get("Authorization", ""))
        if status == 200 and body.get("stream"):
            self._stream(payload, bool((body.get("stream_options") or {}).get("include_usage")))
            return
        sent = self._send(status, payload)
        if sent and status == 200:
            fake._answered(payload)

    def do_GET(self) -> None:  # noqa: N802
        self._send(404, _error_body("only POST /v1/chat/completions is served", "invalid_request_error"))

    def _send(self, status: int, payload: Mapping[str, Any]) -> bool:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away (timed out, killed)
            return False
        return True

    def _stream(self, payload: Mapping[str, Any], include_usage: bool) -> bool:
        """``payload`` as server-sent ``chat.completion.chunk`` events, one token per chunk
        (``stream_delay_s`` apart), then the usage chunk when asked; the connection closes
        after ``[DONE]``. Counted as a call once every chunk is sent; ``False`` when the
        client went away mid-stream."""
        fake = self.server.fake
        base = {k: payload[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        choice = payload["choices"][0]
        content = choice["message"]["content"]
        tokens = [t for i, t in enumerate(ANSWER_TOKENS) if len("".join(ANSWER_TOKENS[: i + 1])) <= len(content)]
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
        events += [{**base, "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in tokens]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
        if include_usage and "usage" in payload:
            events.append({**base, "choices": [], "usage": payload["usage"]})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for i, event in enumerate(events):
                if i > 1 and fake.stream_delay_s:
                    if fake._stop.wait(fake.stream_delay_s):
                        return False
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
                with fake._lock:
                    fake.streamed_chunks += 1
            fake._answered(payload)  # counted before the client can see the end of the stream
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:  # the client went away mid-stream
            with fake._lock:
                fake.streams_cut += 1
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a hundred clients connecting at once must not be refused
    fake: FakeOpenAI


def _error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FakeOpenAI:
    """The loopback server (see the module docstring). Start it with ``with`` or :meth:`start`."""

    def __init__(self, mode: str = "ok", *, slow_s: float = 60.0, bad_usage: str = "alternate",
                 model: str | None = None) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._mode = "ok"
        self._bad_usage = "alternate"
        self.mode = mode
        self.bad_usage = bad_usage
        self.slow_s = float(slow_s)
        self.model = model
        """The model name replies carry (default: the one requested)."""
        self.stream_delay_s = 0.0
        """Seconds between streamed tokens (``stream: true`` requests)."""
        self.streamed_chunks = 0
        self.streams_cut = 0
        """Streams whose client went away before ``[DONE]``."""
        self._calls = 0
        self._seq = itertools.count()
        self._bad_seq = itertools.count()
        self.requests: list[dict[str, Any]] = []
        """Every request body received (errors included), in arrival order."""
        self.responses: list[dict[str, Any]] = []
        """Every HTTP 200 body sent, in order."""
        self.authorization: list[str] = []
        """The ``Authorization`` header of every request received."""
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- settings ---------------------------------------------------------------------
    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; one of {', '.join(MODES)}")
        with self._lock:
            self._mode = value

    @property
    def bad_usage(self) -> str:
        with self._lock:
            return self._bad_usage

    @bad_usage.setter
    def bad_usage(self, value: str) -> None:
        if value not in BAD_USAGE_KINDS:
            raise ValueError(f"unknown bad_usage {value!r}; one of {', '.join(BAD_USAGE_KINDS)}")
        with self._lock:
            self._bad_usage = value

    @property
    def calls(self) -> int:
        """Requests answered with HTTP 200."""
        with self._lock:
            return self._calls

    @property
    def received(self) -> int:
        """Requests received, whatever the answer."""
        with self._lock:
            return len(self.requests)

    # -- life cycle -------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake OpenAI server is not started; use `with FakeOpenAI(...)` or .start()")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        if self._httpd is not None:
            return self
        self._stop.clear()
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: wakes requests sleeping in ``slow`` mode (they answer at once) and
        closes the kept-alive connections, so no handler thread outlives the server."""
        self._stop.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by the client
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- answering --------------------------------------------------------------------
    def _connected(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _disconnected(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _received(self, body: dict[str, Any], authorization: str) -> None:
        with self._lock:
            self.requests.append(body)
            self.authorization.append(authorization)

    def _answered(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self._calls += 1
            self.responses.append(payload)

    def _answer(self, body: Mapping[str, Any], authorization: str) -> tuple[int, dict[str, Any]]:
        mode = self.mode
        if mode == "error_500":
            return 500, _error_body("The server had an error while processing your request. Sorry about that!",
                                    "server_error")
        if mode == "error_with_key":
            key = authorization.removeprefix("Bearer ").strip()
            return 400, _error_body(
                f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key")
        if mode == "slow":
            self._stop.wait(self.slow_s)
        messages = list(body.get("messages") or [])
        n = max(1, int(body.get("n") or 1))
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        tokens = list(ANSWER_TOKENS)
        finish = "stop"
        if cap is not None and int(cap) < len(tokens):
            tokens, finish = tokens[: max(0, int(cap))], "length"
        want_logprobs = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                "logprobs": {"content": [_token_logprob(t, top) for t in tokens], "refusal": None}
                if want_logprobs else None,
                "finish_reason": finish,
            }
            for i in range(n)
        ]
        payload: dict[str, Any] = {
            "id": f"chatcmpl-fake-{next(self._seq)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model or str(body.get("model") or "fake"),
            "choices": choices,
            "system_fingerprint": "fp_fake",
        }
        completion = len(tokens) * n
        if mode == "no_usage":
            return 200, payload
        if mode == "bad_usage":
            kind = self.bad_usage
            if kind == "alternate":
                kind = "negative" if next(self._bad_seq) % 2 == 0 else "string"
            if kind == "negative":
                payload["usage"] = {"prompt_tokens": -7, "completion_tokens": -3, "total_tokens": -10}
            else:
                payload["usage"] = {"prompt_tokens": "many", "completion_tokens": "few", "total_tokens": "lots"}
            return 200, payload
        prompt = _prompt_tokens(messages, OVER_REPORT_FACTOR if mode == "over_report" else 1.0)
        payload["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion}
        return 200, payload


def _token_logprob(token: str, top: int) -> dict[str, Any]:
    alternatives = [{"token": token, "logprob": ANSWER_LOGPROB, "bytes": list(token.encode())}]
    if top > 1:
        alternatives.append({"token": "6", "logprob": ALTERNATIVE_LOGPROB, "bytes": [54]})
    return {"token": token, "logprob": ANSWER_LOGPROB, "bytes": list(token.encode()),
            "top_logprobs": alternatives[: max(top, 0)]}
