"""``effreason serve-local``: a local OpenAI-compatible model server in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effreason_agents.cli.options import ConfigOpt, load
from effreason_agents.cli.render import fail
from effreason_agents.errors import EffReasonError

__all__ = ["serve_local"]


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
