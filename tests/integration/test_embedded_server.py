"""The real embedded llama.cpp server: health, chat completions with logprobs,
tokenizing, stopping, the registry, and ``serve-local`` as a standalone process.

Every wait is bounded, so a broken server fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from effreason_agents.config import EmbeddedConfig
from effreason_agents.adapters.embedded import EmbeddedServer, get_embedded_server

HTTP = httpx.Client(timeout=60.0, trust_env=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


class _Child:
    """A Python child process whose stdout lines are read with a deadline."""

    def __init__(self, code: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()  # stdout; None at EOF
        self._stderr_lines: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._pump_stderr, daemon=True)
        self._stderr_reader.start()

    def _pump_stdout(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self._stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        """Everything written to stderr so far (all of it once the process has exited)."""
        if self.proc.poll() is not None:
            self._stderr_reader.join(timeout=5)
        return "".join(self._stderr_lines)

    def wait_for_line(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} within {timeout}s; stdout={seen!r} stderr={self.stderr[-2000:]!r}")

    def interrupt_and_wait(self, timeout: float, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"did not exit within {timeout}s of signal {sig}; stderr={self.stderr[-2000:]!r}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# -- the shared server ---------------------------------------------------------------------------
def test_health_and_urls(embedded_server: EmbeddedServer) -> None:
    assert embedded_server.running
    assert embedded_server.root_url.startswith("http://127.0.0.1:")
    assert embedded_server.base_url == embedded_server.root_url + "/v1"
    assert HTTP.get(embedded_server.root_url + "/health").json() == {"status": "ok"}
    models = HTTP.get(embedded_server.base_url + "/models").json()
    assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct"]


def test_chat_completion_with_logprobs(embedded_server: EmbeddedServer) -> None:
    r = HTTP.post(
        embedded_server.base_url + "/chat/completions",
        json={
            "model": embedded_server.model_name,
            "messages": [{"role": "user", "content": "What is 2 + 3?"}],
            "logprobs": True,
            "top_logprobs": 3,
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model"] == "SmolLM2-135M-Instruct"
    assert 0 < doc["usage"]["completion_tokens"] <= 8
    assert doc["usage"]["prompt_tokens"] > 0
    choice = doc["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["content"]
    content = choice["logprobs"]["content"]
    assert len(content) == doc["usage"]["completion_tokens"]
    for token in content:
        assert token["logprob"] <= 0.0
        assert 1 <= len(token["top_logprobs"]) <= 3


def test_count_tokens(embedded_server: EmbeddedServer) -> None:
    assert embedded_server.count_tokens("hello") >= 1
    assert embedded_server.count_tokens("The quick brown fox jumps over the lazy dog.") > embedded_server.count_tokens("fox")
    assert embedded_server.count_tokens("") == 0


def test_registry_returns_the_same_server(embedded_server: EmbeddedServer, embedded_settings: EmbeddedConfig) -> None:
    first = get_embedded_server(embedded_settings)
    second = get_embedded_server(embedded_settings.model_copy())
    assert first is second is embedded_server


# -- a server of its own -------------------------------------------------------------------------
def test_stop_closes_the_port_and_start_again_works() -> None:
    server = EmbeddedServer(EmbeddedConfig(n_ctx=1024, n_parallel=1))
    with server:
        port = server.port
        assert HTTP.get(server.root_url + "/health").json() == {"status": "ok"}
    assert not server.running
    assert _refuses_connections(port)
    server.stop()  # idempotent

    server.start()
    try:
        assert HTTP.get(server.root_url + "/health").json() == {"status": "ok"}
    finally:
        server.stop()


def test_port_in_use_is_a_clear_error() -> None:
    from effreason_agents.errors import EmbeddedServerError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EmbeddedServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            EmbeddedServer(EmbeddedConfig(n_ctx=1024, port=port)).start()


# -- processes ---------------------------------------------------------------------------------------
def test_ctrl_c_during_a_request_still_stops_the_server_at_exit() -> None:
    """A request left in flight by Ctrl-C (in a daemon thread, which exit does not wait for)
    must not keep the server, and so the process, alive."""
    child = _Child(
        """
        import atexit, signal, socket, threading, time, httpx

        # Ctrl-C as in a user's terminal, whatever the test process left blocked or ignored
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.default_int_handler)

        seen = {}
        def report():  # registered before effreason's own hook, so it runs after it
            with socket.socket() as s:
                print("port-closed" if s.connect_ex(("127.0.0.1", seen["port"])) else "port-open", flush=True)
        atexit.register(report)

        from effreason_agents.config import EmbeddedConfig
        from effreason_agents.adapters.embedded import get_embedded_server

        server = get_embedded_server(EmbeddedConfig(n_ctx=2048, n_parallel=1))
        seen["port"] = server.port
        body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 1500, "ignore_eos": True}
        threading.Thread(target=lambda: httpx.post(server.base_url + "/chat/completions", json=body, timeout=600),
                         daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(s["is_processing"] for s in httpx.get(server.root_url + "/slots").json()):
                break
            time.sleep(0.05)
        print("in-flight", flush=True)
        time.sleep(120)
        """
    )
    try:
        child.wait_for_line("in-flight", timeout=90)
        # generous: a full test session on 2 cores can leave the interrupted generation slow to stop
        code = child.interrupt_and_wait(timeout=90)
        assert code == -signal.SIGINT, child.stderr[-2000:]
        child.wait_for_line("port-closed", timeout=10)
    finally:
        child.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_local_runs_standalone_until_signalled(sig: int) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFFREASON")}
    child = _Child(f"from effreason_agents.adapters.embedded import serve_local; serve_local(port={port})", env=env)
    try:
        line = child.wait_for_line("effreason embedded server", timeout=90)
        base_url = f"http://127.0.0.1:{port}/v1"
        assert "SmolLM2-135M-Instruct" in line and line.rstrip().endswith(base_url)

        r = HTTP.post(base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0

        assert child.interrupt_and_wait(timeout=30, sig=sig) == 0, child.stderr[-2000:]
        assert _refuses_connections(port)
        stderr = child.stderr
        assert "load_model" not in stderr and "slot" not in stderr, f"llama.cpp logs were not quieted: {stderr[:500]!r}"
    finally:
        child.kill()
