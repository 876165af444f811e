"""MiniLM sentence embeddings for router features: the library's
:mod:`effreason_agents.adapters.embeddings` (a router with embeddings needs them at run
time too), under the name the training code uses."""

from __future__ import annotations

from effreason_agents.adapters.embeddings import (
    DIM,
    MODEL_NAME,
    Embedder,
    EmbeddingError,
    default_cache_dir,
    embed,
    text_key,
)

__all__ = ["DIM", "MODEL_NAME", "EmbeddingError", "Embedder", "default_cache_dir", "embed", "text_key"]
