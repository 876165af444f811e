"""Reward functions for Best-of-N (the ``bon`` strategy): score a candidate reply to a question.

A ``bon`` strategy scores its partial and complete candidates with the model's own
certainty by default (the mean token logprob, computed in the engine). It can name
instead:

``reward = "module:function"``
    a Python callable ``function(question: str, text: str) -> float`` (higher is better),
    imported once when the strategy first runs;
``reward_url = "http://host/score"``
    a reward-model endpoint: ``POST {"question": ..., "text": ...}`` answered with
    ``{"score": float}``.

:func:`load_reward` resolves either into one ``(question, text) -> float`` callable. A
callable that cannot be imported, or is not callable, raises
:class:`~effreason_agents.errors.ConfigError` naming the field, before any model call.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

from effreason_agents.errors import ConfigError

__all__ = ["RewardFn", "endpoint_reward", "import_reward", "load_reward"]

RewardFn = Callable[[str, str], float]
"""``(question, text) -> score``; higher is better."""


def import_reward(spec: str) -> RewardFn:
    """The callable named by ``spec`` (``"module:function"``, dotted attributes allowed after the colon)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"reward = {spec!r}: name a callable as 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"reward = {spec!r}: cannot import module {module_name!r} ({exc}); "
                          "install it or fix the name") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"reward = {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"reward = {spec!r}: {attr!r} is not callable; it must take (question, text) "
                          "and return a float")
    return obj


def endpoint_reward(url: str, timeout_s: float = 10.0) -> RewardFn:
    """A reward-model endpoint as a callable: ``POST {"question", "text"}`` → ``{"score": float}``.
    A failed call or a reply without a finite numeric ``score`` raises :class:`ValueError`."""
    import httpx

    def score(question: str, text: str) -> float:
        try:
            r = httpx.post(url, json={"question": question, "text": text}, timeout=timeout_s)
            r.raise_for_status()
            value = float(r.json()["score"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"reward endpoint {url}: {exc}") from exc
        if not math.isfinite(value):
            raise ValueError(f"reward endpoint {url}: score {value!r} is not a finite number")
        return value

    return score


def load_reward(strategy: Any) -> RewardFn | None:
    """The strategy's reward (``reward`` or ``reward_url``), or ``None`` for the model's own certainty."""
    spec = getattr(strategy, "reward", None)
    if spec:
        return import_reward(str(spec))
    url = getattr(strategy, "reward_url", None)
    if url:
        return endpoint_reward(str(url), float(getattr(strategy, "reward_timeout_s", 10.0)))
    return None
