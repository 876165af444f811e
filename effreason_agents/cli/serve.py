"""``effreason serve``: the cost-aware graph as an OpenAI-compatible HTTP server; ``effreason
serve-local``: a local model server (llama.cpp or vLLM) for other processes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effreason_agents.cli.options import ConfigOpt, load
from effreason_agents.cli.render import fail
from effreason_agents.errors import EffReasonError

__all__ = ["serve", "serve_local"]


def serve_local(
    port: int = typer.Option(0, "--port", "-p", min=0, max=65535, help="Port to listen on (0: a free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    engine: str = typer.Option("embedded", "--engine", help="embedded (llama.cpp, CPU) or vllm (GPU)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to serve (vllm: required; embedded: a GGUF path)."),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Serve a local model over the OpenAI protocol for other processes (Ctrl-C stops it).

    Point a tier's base_url at the address it prints.
    """
    from effreason_agents.adapters.embedded import serve_local as run_server

    try:
        cfg = load(config)
        settings = cfg.embedded
        if engine == "embedded" and model:
            settings = settings.model_copy(update={"model_path": model})
        run_server(engine=engine, model=model, host=host, port=port, settings=settings,
                   echo=lambda s: print(s, flush=True))
    except EffReasonError as exc:
        fail(exc)


def _where(target: object) -> str:
    from effreason_agents.core.text import is_postgres_url, redact_url

    return redact_url(str(target)) if is_postgres_url(target) else str(target)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8400, "--port", "-p", min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=64,
                                help="Worker processes; they share the budget ledger, the outcome store and the keys."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Accept requests without a virtual key (local development "
                                 "only; refused on a non-loopback host). Requests are then charged to the 'user' they name."),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", min=1024, help="Largest request body (413 above)."),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Serve the cost-aware graph over the OpenAI protocol (Ctrl-C stops it).

    Model "effreason" answers with the cheapest confident arm; "effreason/<tier>" makes one call on that tier. Every call is held in the budget ledger under the request, the virtual key and its thread (X-Effreason-Thread header).

    Create keys with `effreason keys create`; point any OpenAI client at http://HOST:PORT/v1.
    """
    import os
    import tempfile

    from effreason_agents.server.app import SERVE_CONFIG_ENV, SERVE_MAX_BODY_ENV, SERVE_NO_AUTH_ENV, create_app
    from effreason_agents.server.metrics import MULTIPROC_ENV

    made_metrics_dir: str | None = None
    if no_auth and not _loopback(host):
        fail(EffReasonError(f"--no-auth is for local development only and is refused on {host}; "
                            "create keys with `effreason keys create` instead"))
    try:
        cfg = load(config)
        import uvicorn

        from effreason_agents.adapters.ledger import BudgetLedger
        from effreason_agents.adapters.store import OutcomeStore

        # a database that cannot be reached stops here with its reason (no password shown)
        BudgetLedger.migration_status(cfg.ledger_target())
        OutcomeStore.migration_status(cfg.store.target())
    except EffReasonError as exc:
        fail(exc)
    if config is not None:
        os.environ[SERVE_CONFIG_ENV] = str(Path(config).resolve())
    os.environ[SERVE_NO_AUTH_ENV] = "1" if no_auth else "0"
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = made_metrics_dir = tempfile.mkdtemp(prefix="effreason-metrics-")
    print(f"effreason serve: http://{host}:{port}/v1 — {workers} worker(s), "
          f"{'no keys (local development)' if no_auth else 'virtual keys required'}; "
          f"ledger {_where(cfg.ledger_target())}", flush=True)
    # keep-alive longer than clients' own idle expiry (httpx, the OpenAI SDK: 5 s), so a client
    # never sends a request on a connection the server is closing
    common: dict[str, object] = dict(host=host, port=port, log_level="warning", timeout_graceful_shutdown=10,
                                     timeout_keep_alive=75)
    try:
        if workers == 1:
            uvicorn.run(create_app(cfg, auth=not no_auth, max_body_bytes=max_body_bytes), **common)
        else:
            os.environ[SERVE_MAX_BODY_ENV] = str(max_body_bytes)
            uvicorn.run("effreason_agents.server.app:app_from_environment", factory=True, workers=workers, **common)
    except EffReasonError as exc:
        fail(exc)
    finally:
        if made_metrics_dir:
            import shutil

            shutil.rmtree(made_metrics_dir, ignore_errors=True)
