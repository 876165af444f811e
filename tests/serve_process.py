"""Run ``effreason serve`` as a real subprocess on a free loopback port, for tests and
benchmarks that need the server as users start it (``--workers N`` included).

::

    with ServeProcess(config_path, workers=2) as server:
        httpx.get(server.base_url + "/health")            # http://127.0.0.1:PORT
        openai.OpenAI(base_url=server.api_base, api_key=key)  # http://127.0.0.1:PORT/v1

:class:`ServeProcess` starts ``python -m effreason_agents.cli serve --host 127.0.0.1 --port
PORT --workers N [--config F] [--no-auth]``, waits until ``GET /health`` answers (any HTTP
status: a server without usable tiers answers 503 and is still up) and, on leaving the
``with`` block, stops it with SIGINT (uvicorn's graceful shutdown: requests in flight
finish, every worker closes its ledger and store), then SIGKILL for the whole process group
when it does not stop in time. A server that exits or never answers raises
:class:`ServeProcessError` with the end of its output.

:func:`write_toml` writes JSON-plain configuration data (as ``budget_helpers.config_data``
makes) to a TOML file, the format ``effreason --config`` reads.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

__all__ = ["ServeProcess", "ServeProcessError", "free_port", "write_toml"]

OUTPUT_TAIL_CHARS = 4000
"""How much of the server's output an error message quotes."""


class ServeProcessError(RuntimeError):
    """``effreason serve`` exited, or did not answer ``GET /health`` in time (the message
    quotes the end of its output)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- TOML ---------------------------------------------------------------------------------


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} cannot be written to TOML; use a finite number")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v, f'{where}.{k}')}"
                          for k, v in value.items() if v is not None)
        return "{" + inner + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, os.PathLike):
        return json.dumps(os.fspath(value), ensure_ascii=False)
    raise ValueError(f"{where}: a {type(value).__name__} cannot be written to TOML; use JSON-plain values")


def _toml_table(data: Mapping[str, Any], prefix: list[str], lines: list[str]) -> None:
    tables = []
    for key, value in data.items():
        if value is None:  # TOML has no null: leaving the key out keeps its default
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(str(key))} = {_toml_value(value, '.'.join([*prefix, str(key)]))}")
    for key, value in tables:
        path = [*prefix, str(key)]
        if not value or any(v is not None and not isinstance(v, Mapping) for v in value.values()):
            lines.append("")  # a table holding only tables needs no header of its own
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
        _toml_table(value, path, lines)


def write_toml(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write JSON-plain ``data`` (nested dicts, lists, strings, numbers, booleans; ``None``
    values are left out) as a TOML file; returns its path."""
    lines: list[str] = []
    _toml_table(data, [], lines)
    out = Path(path)
    out.write_text("\n".join(lines).lstrip("\n") + "\n", encoding="utf-8")
    return out


# -- the server process -------------------------------------------------------------------


class ServeProcess:
    """``effreason serve`` in a subprocess (see the module docstring).

    ``config``: the TOML file passed as ``--config`` (``None``: the command's own lookup).
    ``env``: variables to set for the server (a ``None`` value removes one, e.g.
    ``{"OPENAI_API_KEY": None}``). ``args``: extra command-line arguments.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        workers: int = 1,
        auth: bool = True,
        host: str = "127.0.0.1",
        port: int | None = None,
        env: Mapping[str, str | None] | None = None,
        args: Sequence[str] = (),
        startup_timeout_s: float = 90.0,
        stop_timeout_s: float = 20.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.config = None if config is None else Path(config)
        self.workers = workers
        self.auth = auth
        self.host = host
        self.port = port or free_port(host)
        self.env = dict(env or {})
        self.args = list(args)
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._output: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (``/health``, ``/metrics`` live here)."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """``http://HOST:PORT/v1``, the ``base_url`` of an OpenAI client."""
        return self.base_url + "/v1"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "effreason_agents.cli", "serve", "--host", self.host, "--port", str(self.port),
               "--workers", str(self.workers)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if not self.auth:
            cmd.append("--no-auth")
        return cmd + self.args

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr together)."""
        if self._output is None:
            return ""
        fd = self._output.fileno()  # the server writes through the same file offset: read without moving it
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def _tail(self) -> str:
        text = self.output().strip()
        if not text:
            return "(it printed nothing)"
        return ("…" + text[-OUTPUT_TAIL_CHARS:]) if len(text) > OUTPUT_TAIL_CHARS else text

    def start(self) -> ServeProcess:
        """Start the server and wait until ``GET /health`` answers."""
        if self.process is not None:
            return self
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        self._output = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._output,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=5.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise ServeProcessError(
                        f"`{' '.join(self.command())}` exited with code {code} before answering GET /health:\n"
                        f"{self._tail()}")
                try:
                    client.get(self.base_url + "/health")
                    return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ServeProcessError(
                        f"`{' '.join(self.command())}` did not answer GET {self.base_url}/health within "
                        f"{self.startup_timeout_s:.0f} s:\n{self._tail()}")
                time.sleep(0.1)

    def stop(self) -> int | None:
        """Stop the server (SIGINT, then SIGKILL for its process group after
        ``stop_timeout_s``) and wait for it; returns its exit code."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)  # the group of the server we started
                    except ProcessLookupError:
                        pass
                    process.wait(10)
            self.returncode = process.returncode
            try:  # workers left behind by a killed supervisor belong to the same group
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.returncode

    def close(self) -> None:
        """Stop the server and drop its captured output."""
        self.stop()
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
