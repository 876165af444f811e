"""``effreason tune``: LoRA fine-tuning of the embedded model into a llama.cpp adapter.

Input is supervised fine-tuning data in the conversational JSONL format (one
``{"messages": [{"role": ..., "content": ...}, ...]}`` per line, what
``effreason export sft`` writes): the shortest correct trace per question, so the
tuned model learns to answer easy questions directly and hard ones with a short
chain of thought.

The base model is the GGUF file the embedded tier serves (SmolLM2-135M-Instruct by
default). ``transformers`` loads it de-quantized to float32; ``peft`` adds LoRA factors
(rank ``r`` on the attention query and value projections) and AdamW trains only those,
on CPU, with the loss on the assistant tokens alone (system and user turns are context,
never targets). The result is written to ``OUT``:

- ``adapter.gguf``: a llama.cpp LoRA adapter (``general.type = adapter``,
  ``adapter.type = lora``, ``adapter.lora.alpha``; tensors ``blk.N.attn_q.weight.lora_a``
  / ``.lora_b``), which the embedded server applies to the same model file;
- ``card.json``: the base model file and its sha256, the data file and its sha256,
  steps, epochs, final and mean loss, rank, alpha, learning rate, seed and seconds.

Both are written to a temporary folder first and moved into place together.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from effreason_agents.adapters.atomic import write_dir
from effreason_agents.adapters.lora import ADAPTER_FILE, BASE_SHA256_KEY, CARD_FILE, check_adapter, file_sha256
from effreason_agents.errors import TuneError

__all__ = [
    "ADAPTER_FILE",
    "CARD_FILE",
    "LORA_TARGETS",
    "TuneResult",
    "TuneSettings",
    "encode_example",
    "load_sft_data",
    "lora_tensors",
    "tune",
    "write_adapter_gguf",
]

LORA_TARGETS = ("q_proj", "v_proj")
"""The projections LoRA factors are added to."""

_ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True)
class TuneSettings:
    """How to tune: ``steps`` optimizer steps (cycling over the data) or, when ``steps`` is
    ``None``, ``epochs`` passes; LoRA ``rank``/``alpha``; AdamW ``lr``; sequences cut to
    ``max_length`` tokens; ``batch_size`` examples per step; ``seed`` for shuffling and
    initialisation."""

    steps: int | None = None
    epochs: float = 1.0
    lr: float = 2e-4
    rank: int = 8
    alpha: float = 16.0
    max_length: int = 512
    batch_size: int = 4
    seed: int = 0

    def check(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise TuneError(f"--steps must be at least 1 (got {self.steps})")
        if self.steps is None and not self.epochs > 0:
            raise TuneError(f"--epochs must be positive (got {self.epochs})")
        if not self.lr > 0:
            raise TuneError(f"--lr must be positive (got {self.lr})")
        if self.rank < 1:
            raise TuneError(f"--rank must be at least 1 (got {self.rank})")
        if not self.alpha > 0:
            raise TuneError(f"--alpha must be positive (got {self.alpha})")
        if self.max_length < 16:
            raise TuneError(f"--max-length must be at least 16 tokens (got {self.max_length})")
        if self.batch_size < 1:
            raise TuneError(f"--batch-size must be at least 1 (got {self.batch_size})")


@dataclass
class TuneResult:
    """What :func:`tune` wrote and measured (``card`` is the content of ``card.json``)."""

    adapter: Path
    card_path: Path
    card: dict[str, Any] = field(default_factory=dict)


# -- data -----------------------------------------------------------------------------------
def load_sft_data(path: str | os.PathLike[str]) -> list[list[dict[str, str]]]:
    """The conversations of a conversational SFT JSONL file, checked line by line.

    Every non-blank line must be a JSON object with a ``messages`` list of
    ``{"role": "system"|"user"|"assistant", "content": str}`` holding at least one
    assistant message with text. Raises :class:`TuneError` naming the file and line
    of the first malformed one, or when the file is missing or holds no examples.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise TuneError(f"data file {str(p)!r} does not exist; write one with `effreason export sft --out FILE`")
    out: list[list[dict[str, str]]] = []
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TuneError(f"data file {str(p)!r} cannot be read as UTF-8 text: {exc}") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TuneError(f"{where}: not valid JSON ({exc}); each line must be one "
                            '{"messages": [{"role": ..., "content": ...}, ...]} object') from None
        if not isinstance(row, Mapping) or not isinstance(row.get("messages"), list) or not row["messages"]:
            raise TuneError(f'{where}: expected an object with a non-empty "messages" list (conversational SFT format)')
        msgs: list[dict[str, str]] = []
        for i, m in enumerate(row["messages"]):
            if not isinstance(m, Mapping) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
                raise TuneError(f'{where}: message {i} must be {{"role": "system"|"user"|"assistant", "content": "..."}} '
                                f"(got {json.dumps(m)[:120]})")
            msgs.append({"role": str(m["role"]), "content": str(m["content"])})
        if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
            raise TuneError(f"{where}: no assistant message with text (nothing to learn from)")
        out.append(msgs)
    if not out:
        raise TuneError(f"data file {str(p)!r} holds no examples")
    return out


def encode_example(tokenizer: Any, messages: Sequence[Mapping[str, str]], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of a conversation under the model's chat template, and labels that are
    the ids on assistant tokens (their text and end-of-turn marker) and -100 elsewhere,
    both cut to ``max_length``."""

    def ids(msgs: Sequence[Mapping[str, str]], gen: bool) -> list[int]:
        text = tokenizer.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=gen)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    full = ids(messages, False)
    labels = [-100] * len(full)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(ids(messages[:i], True))
        end = len(ids(messages[: i + 1], False))
        for j in range(start, min(end, len(full))):
            labels[j] = full[j]
    return full[:max_length], labels[:max_length]


# -- the adapter file -------------------------------------------------------------------------
def _permute_rows(w: Any, n_head: int) -> Any:
    """llama.cpp's row order of a rotary (q/k) projection: the permutation its converter
    applies to the weight, applied to the LoRA B factor (whose rows are the output dims)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def lora_tensors(
    state: Mapping[str, Any], *, n_layers: int, n_head: int, n_head_kv: int
) -> dict[str, tuple[Any, Any]]:
    """``{gguf base tensor name: (A, B)}`` from a peft LoRA state dict (numpy float32, PyTorch
    layout: A is (r, in), B is (out, r)), with names mapped by gguf's ``TensorNameMap``
    (``model.layers.N.self_attn.q_proj`` → ``blk.N.attn_q.weight``) and the q/k B factors
    permuted to llama.cpp's rotary row order."""
    import gguf
    import numpy as np

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                module = key.split(marker)[0]
                hf = module.split("base_model.model.", 1)[-1]
                arr = np.asarray(value.detach().float().cpu().numpy() if hasattr(value, "detach") else value, dtype=np.float32)
                pairs.setdefault(hf, {})[part] = arr
    out: dict[str, tuple[Any, Any]] = {}
    for hf, parts in sorted(pairs.items()):
        if set(parts) != {"lora_A", "lora_B"}:
            raise TuneError(f"LoRA module {hf} lacks a factor ({sorted(parts)}); the state dict is incomplete")
        base = names.get_name(hf + ".weight", try_suffixes=(".weight",))
        if base is None:
            raise TuneError(f"LoRA module {hf} has no llama.cpp tensor name")
        a, b = parts["lora_A"], parts["lora_B"]
        if hf.endswith("q_proj"):
            b = _permute_rows(b, n_head)
        elif hf.endswith("k_proj"):
            b = _permute_rows(b, n_head_kv)
        out[base] = (np.ascontiguousarray(a), np.ascontiguousarray(b))
    if not out:
        raise TuneError("the state dict holds no LoRA factors")
    return out


def write_adapter_gguf(
    path: str | os.PathLike[str], tensors: Mapping[str, tuple[Any, Any]], *, alpha: float, base_sha256: str,
    name: str = "effreason-lora",
) -> Path:
    """Write a llama.cpp LoRA adapter: GGUF with arch ``llama``, ``general.type = adapter``,
    ``adapter.type = lora``, ``adapter.lora.alpha`` and the base model's sha256
    (:data:`~effreason_agents.adapters.lora.BASE_SHA256_KEY`); tensors ``NAME.lora_a`` and
    ``NAME.lora_b`` in PyTorch layout (gguf stores the dims reversed, as llama.cpp expects)."""
    import gguf

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(p), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_string(BASE_SHA256_KEY, base_sha256)
    for base, (a, b) in tensors.items():
        writer.add_tensor(base + ".lora_a", a)
        writer.add_tensor(base + ".lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return p


# -- training ---------------------------------------------------------------------------------
def _progress(total: int, quiet: bool) -> Any:
    """A progress bar on stderr: steps done, the last loss, time left."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("tuning"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=quiet)


def tune(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: TuneSettings | None = None,
    *,
    model_path: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> TuneResult:
    """LoRA-tune the embedded model (or the GGUF ``model_path``) on the SFT file ``data``
    and write ``adapter.gguf`` and ``card.json`` into ``out`` (created; an existing
    tune output there is replaced as a whole; any other non-empty folder is refused). The data and settings are checked before the
    model is loaded. ``on_step(step, loss)`` is called after every optimizer step."""
    s = settings or TuneSettings()
    s.check()
    conversations = load_sft_data(data)
    from effreason_agents.adapters.embedded import resolve_model_path

    model_file = resolve_model_path(model_path)
    out_dir = Path(out).expanduser()
    _check_out(out_dir)
    started = time.perf_counter()

    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if quiet:
        hf_logging.disable_progress_bar()
    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)
    torch.set_num_threads(os.cpu_count() or 1)

    tokenizer = AutoTokenizer.from_pretrained(str(model_file.parent), gguf_file=model_file.name)
    model = AutoModelForCausalLM.from_pretrained(str(model_file.parent), gguf_file=model_file.name, dtype=torch.float32)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples = []
    for conv in conversations:
        ids, labels = encode_example(tokenizer, conv, s.max_length)
        if any(x != -100 for x in labels):
            examples.append((ids, labels))
    if not examples:
        raise TuneError(f"every example in {str(data)!r} loses its assistant text when cut to --max-length "
                        f"{s.max_length}; raise --max-length")
    cfg = model.config
    lora = LoraConfig(r=s.rank, lora_alpha=s.alpha, target_modules=list(LORA_TARGETS), lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft probing transformers' renamed attributes
        model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr)
    per_epoch = math.ceil(len(examples) / s.batch_size)
    total = s.steps if s.steps is not None else max(1, math.ceil(per_epoch * s.epochs))

    def batches() -> Any:
        while True:
            order = list(range(len(examples)))
            rng.shuffle(order)
            for i in range(0, len(order), s.batch_size):
                yield [examples[j] for j in order[i : i + s.batch_size]]

    losses: list[float] = []
    stream = batches()
    with _progress(total, quiet) as bar:
        task = bar.add_task("tune", total=total, loss="-")
        for step in range(1, total + 1):
            batch = next(stream)
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (ids, lab) in enumerate(batch):
                input_ids[r, : len(ids)] = torch.tensor(ids)
                labels[r, : len(lab)] = torch.tensor(lab)
                mask[r, : len(ids)] = 1
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            losses.append(value)
            bar.update(task, advance=1, loss=f"{value:.3f}")
            if on_step is not None:
                on_step(step, value)

    state = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    tensors = lora_tensors(state, n_layers=int(cfg.num_hidden_layers), n_head=int(cfg.num_attention_heads),
                           n_head_kv=int(cfg.num_key_value_heads or cfg.num_attention_heads))
    base_sha = file_sha256(model_file)
    card = {
        "base_model": {"file": str(model_file), "name": model_file.name, "sha256": base_sha},
        "data": {"file": str(Path(data).expanduser().resolve()), "sha256": file_sha256(data), "examples": len(examples)},
        "method": "LoRA SFT, loss on assistant tokens only",
        "targets": list(LORA_TARGETS),
        "rank": s.rank,
        "alpha": s.alpha,
        "lr": s.lr,
        "batch_size": s.batch_size,
        "max_length": s.max_length,
        "seed": s.seed,
        "steps": total,
        "epochs": round(total * s.batch_size / len(examples), 3),
        "final_loss": round(losses[-1], 6),
        "mean_loss": round(sum(losses) / len(losses), 6),
        "first_loss": round(losses[0], 6),
        "trainable_parameters": int(sum(p.numel() for p in params)),
        "seconds": 0.0,
        "settings": asdict(s),
    }

    def fill(tmp: Path) -> None:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published folder is an ordinary one
        write_adapter_gguf(tmp / ADAPTER_FILE, tensors, alpha=s.alpha, base_sha256=base_sha)
        check_adapter(tmp / ADAPTER_FILE, model_file)  # what the server will check, before it is published
        card["seconds"] = round(time.perf_counter() - started, 2)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")

    write_dir(out_dir, fill, marker=CARD_FILE, what="tune output (adapter.gguf and card.json)", error=TuneError)
    return TuneResult(adapter=out_dir / ADAPTER_FILE, card_path=out_dir / CARD_FILE, card=card)


def _check_out(out_dir: Path) -> None:
    """Refuse an output path that is a file or a non-empty folder other than a previous
    tune's (one with a card), before any training."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TuneError(f"--out {str(out_dir)!r} is a file; give a folder for adapter.gguf and card.json")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / CARD_FILE).is_file():
        raise TuneError(f"--out {str(out_dir)!r} is not empty and holds no {CARD_FILE} (not a tune output); "
                        "choose another folder")
