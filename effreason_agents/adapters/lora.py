"""LoRA adapters for the embedded model: checking an adapter file before llama.cpp loads it.

``effreason tune`` writes a llama.cpp LoRA adapter (``adapter.gguf``) and a card
(``card.json``) beside it. A tier that names the adapter (``adapter = "DIR/adapter.gguf"``)
is served by the embedded llama.cpp server with the adapter applied. Before the server
loads it, :func:`check_adapter` makes sure the file is a readable GGUF LoRA adapter for
*this* base model: its recorded base-model sha256 (in the GGUF metadata and the card)
must match the tier's model file, and every adapter tensor must fit the base tensor it
patches. A file that fails raises :class:`~effreason_agents.errors.AdapterError` naming
the file and what to do; the tier is then reported unavailable and the rest of the
ladder keeps answering.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from effreason_agents.errors import AdapterError

__all__ = [
    "ADAPTER_FILE",
    "BASE_SHA256_KEY",
    "CARD_FILE",
    "AdapterInfo",
    "check_adapter",
    "file_sha256",
    "usable_adapters",
]

ADAPTER_FILE = "adapter.gguf"
CARD_FILE = "card.json"
BASE_SHA256_KEY = "effreason.base_model.sha256"
"""GGUF metadata key holding the sha256 of the base model file the adapter was tuned from."""


@dataclass(frozen=True)
class AdapterInfo:
    """A checked adapter: its path, rank, alpha, number of patched tensors and base-model sha256
    (``None`` when the adapter does not record one, e.g. one converted by llama.cpp's script)."""

    path: Path
    rank: int
    alpha: float
    tensors: int
    base_sha256: str | None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file (cached by path, size and modification time)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:  # noqa: BLE001 - an unreadable field is a corrupted file
        raise ValueError(f"metadata field {key!r} cannot be read") from None


@functools.lru_cache(maxsize=4)
def _base_shapes(path: str, size: int, mtime_ns: int) -> tuple[str | None, dict[str, tuple[int, ...]]]:
    """The base model's architecture and tensor shapes in GGUF order (``ne``)."""
    import gguf

    reader = gguf.GGUFReader(path)
    arch = _field_value(reader, "general.architecture")
    return arch, {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}


def check_adapter(path: str | os.PathLike[str], base_model: str | os.PathLike[str]) -> AdapterInfo:
    """Check that ``path`` is a LoRA adapter llama.cpp can apply to the GGUF model ``base_model``.

    Raises :class:`AdapterError` naming the file when it is missing, not a GGUF LoRA
    adapter, truncated or otherwise unreadable, tuned from another model (the card's or
    the metadata's base sha256 differs from ``base_model``'s), or has tensors that do not
    fit the base model.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise AdapterError(f"adapter file {str(p)!r} does not exist; run `effreason tune --data FILE --out DIR` "
                           "and set the tier's adapter to DIR/adapter.gguf")
    with p.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise AdapterError(f"adapter file {str(p)!r} is not a GGUF file (corrupted?); re-run `effreason tune` to rewrite it")
    base_sha = file_sha256(base_model)
    card = p.parent / CARD_FILE
    if card.is_file():
        try:
            recorded = json.loads(card.read_text(encoding="utf-8")).get("base_model", {}).get("sha256")
        except (OSError, ValueError, AttributeError) as exc:
            raise AdapterError(f"adapter card {str(card)!r} cannot be read ({exc}); re-run `effreason tune`") from None
        if recorded and recorded != base_sha:
            raise AdapterError(
                f"adapter {str(p)!r} was tuned from another model (its card records base sha256 {recorded[:12]}…, "
                f"but this tier's model {str(base_model)!r} has {base_sha[:12]}…); tune an adapter for this model"
            )
    try:
        import gguf
    except ImportError:  # only the header and the card can be checked
        return AdapterInfo(p, 0, 0.0, 0, None)
    try:
        reader = gguf.GGUFReader(p)
        kind = _field_value(reader, "general.type")
        lora_kind = _field_value(reader, "adapter.type")
        alpha = _field_value(reader, "adapter.lora.alpha")
        arch = _field_value(reader, "general.architecture")
        recorded_kv = _field_value(reader, BASE_SHA256_KEY)
        size = p.stat().st_size
        tensors = {t.name: (tuple(int(x) for x in t.shape), int(t.data_offset) + int(t.n_bytes) <= size)
                   for t in reader.tensors}
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupted file
        raise AdapterError(
            f"adapter file {str(p)!r} cannot be read as GGUF ({type(exc).__name__}: {exc}); it is corrupted or "
            "truncated: re-run `effreason tune`"
        ) from None
    if kind != "adapter" or lora_kind != "lora":
        raise AdapterError(f"{str(p)!r} is a GGUF file but not a LoRA adapter (general.type={kind!r}, "
                           f"adapter.type={lora_kind!r}); point the tier's adapter at the adapter.gguf `effreason tune` wrote")
    if recorded_kv and recorded_kv != base_sha:
        raise AdapterError(
            f"adapter {str(p)!r} was tuned from another model (base sha256 {str(recorded_kv)[:12]}…, but this tier's "
            f"model {str(base_model)!r} has {base_sha[:12]}…); tune an adapter for this model"
        )
    st = Path(base_model).stat()
    base_arch, base = _base_shapes(str(Path(base_model).resolve()), st.st_size, st.st_mtime_ns)
    if base_arch and arch != base_arch:
        raise AdapterError(f"adapter {str(p)!r} is for architecture {arch!r}, but the tier's model is {base_arch!r}")
    rank = 0
    pairs = 0
    for name, (shape, complete) in tensors.items():
        if not complete:
            raise AdapterError(f"adapter file {str(p)!r} is truncated (tensor {name} is cut short); re-run `effreason tune`")
        if not name.endswith(".lora_a"):
            if not name.endswith(".lora_b"):
                raise AdapterError(f"adapter file {str(p)!r} holds a tensor {name!r} that is not a LoRA factor")
            continue
        target = name[: -len(".lora_a")]
        b = tensors.get(target + ".lora_b")
        if b is None:
            raise AdapterError(f"adapter file {str(p)!r} has {name} but no {target}.lora_b")
        if target not in base:
            raise AdapterError(f"adapter {str(p)!r} patches {target}, which the model {str(base_model)!r} does not have")
        a_ne, b_ne, w_ne = shape, b[0], base[target]
        # ggml order: A is (in, r), B is (r, out), the weight is (in, out)
        if len(a_ne) != 2 or len(b_ne) != 2 or a_ne[0] != w_ne[0] or b_ne[1] != w_ne[1] or a_ne[1] != b_ne[0]:
            raise AdapterError(
                f"adapter {str(p)!r}: {target} factors of shapes {a_ne} and {b_ne} do not fit the model's {w_ne}; "
                "it was tuned for another model"
            )
        rank = max(rank, int(a_ne[1]))
        pairs += 1
    if pairs == 0:
        raise AdapterError(f"adapter file {str(p)!r} holds no LoRA tensors; re-run `effreason tune`")
    return AdapterInfo(p, rank, float(alpha or 0.0), pairs, str(recorded_kv) if recorded_kv else None)


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _stamp(path: str) -> tuple[str, int, int]:
    try:
        st = Path(path).expanduser().stat()
    except OSError:
        return (path, -1, -1)
    return (str(Path(path).expanduser().resolve()), st.st_size, st.st_mtime_ns)


def usable_adapters(
    base_model: str | os.PathLike[str], paths: Sequence[str]
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Split adapter files into those :func:`check_adapter` accepts for ``base_model``
    (resolved paths, sorted: the order the embedded server loads them) and
    ``{path: why}`` for the others. Each rejected adapter is warned about once
    (``RuntimeWarning``). Cached while the files are unchanged."""
    stamps = tuple(sorted({_stamp(p) for p in paths}))
    ok, bad = _usable_cached(_stamp(str(base_model)), stamps)
    for path, why in bad.items():
        with _warned_lock:
            fresh = (path, why) not in _warned
            _warned.add((path, why))
        if fresh:
            warnings.warn(f"tier adapter unusable, its tier is unavailable: {why}", RuntimeWarning, stacklevel=3)
    return ok, dict(bad)


@functools.lru_cache(maxsize=16)
def _usable_cached(base: tuple[str, int, int], stamps: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    ok: list[str] = []
    bad: dict[str, str] = {}
    for path, _, _ in stamps:
        try:
            check_adapter(path, base[0])
        except AdapterError as exc:
            bad[path] = str(exc)
        else:
            ok.append(path)
    return tuple(sorted(ok)), bad
