"""``effreason tune``: LoRA-tune the embedded model on SFT data into a llama.cpp adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effreason_agents.cli.options import ConfigOpt, JsonOpt, load
from effreason_agents.cli.render import fail, out, print_json
from effreason_agents.errors import EffReasonError

__all__ = ["tune"]


def tune(
    data: Path = typer.Option(..., "--data", help="SFT data: JSONL of {\"messages\": [...]} (what `effreason export sft` writes)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for adapter.gguf and card.json (created; a previous tune output there is replaced)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (cycling over the data); default: --epochs."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the data (default 1) when --steps is not given."),
    lr: float = typer.Option(2e-4, "--lr", help="AdamW learning rate."),
    rank: int = typer.Option(8, "--rank", help="LoRA rank r."),
    alpha: float = typer.Option(16.0, "--alpha", help="LoRA alpha (the update is scaled by alpha / r)."),
    max_length: int = typer.Option(512, "--max-length", help="Tokens per example; longer ones are cut."),
    batch_size: int = typer.Option(4, "--batch-size", help="Examples per step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffling and the LoRA initialisation."),
    model: Optional[Path] = typer.Option(None, "--model", help="Base GGUF model; default: the config's embedded model (SmolLM2-135M-Instruct)."),
    json_out: bool = JsonOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """LoRA-tune the embedded model on SFT data, on CPU, into a llama.cpp adapter.

    Trains LoRA factors (rank --rank on the attention q and v projections) with the loss on the assistant turns only, and writes OUT/adapter.gguf and OUT/card.json (base model and data sha256, steps, loss, settings). To serve the tuned model, add a tier with engine = "embedded" and adapter = "OUT/adapter.gguf" and put it on the ladder.

    The data file is checked before the model is loaded: a malformed line is reported with its file and line number.
    """
    from effreason_agents.training.tune import TuneSettings
    from effreason_agents.training.tune import tune as run_tune

    if steps is not None and epochs is not None:
        fail("give at most one of --steps and --epochs")
    try:
        model_path = model if model is not None else load(config).embedded.model_path
        settings = TuneSettings(steps=steps, epochs=1.0 if epochs is None else epochs, lr=lr, rank=rank, alpha=alpha,
                                max_length=max_length, batch_size=batch_size, seed=seed)
        result = run_tune(data, out_dir, settings, model_path=model_path, quiet=json_out)
    except EffReasonError as exc:
        fail(exc)
    except KeyboardInterrupt:
        fail("interrupted: nothing was written", code=130)
    if json_out:
        print_json({"adapter": str(result.adapter), "card": str(result.card_path), **result.card})
        return
    c = result.card
    out.print(f"adapter: {result.adapter}", highlight=False)
    out.print(f"card:    {result.card_path}", highlight=False)
    out.print(f"{c['steps']} steps ({c['epochs']:g} epochs) on {c['data']['examples']} examples in {c['seconds']:.0f}s; "
              f"loss {c['first_loss']:.3f} -> {c['final_loss']:.3f} (mean {c['mean_loss']:.3f})", highlight=False)
    out.print(f'serve it: add a tier with engine = "embedded" and adapter = "{result.adapter}"', highlight=False)
