"""Cost accounting and trace labels for any LangChain chain, agent or graph.

:class:`CostCallbackHandler` is a :class:`~langchain_core.callbacks.UsageMetadataCallbackHandler`
(so ``handler.usage_metadata`` is exactly what ``get_usage_metadata_callback`` gives: one
``UsageMetadata`` per model name) that also prices every chat-model call in ``Decimal``
and aggregates tokens and cost per model and per tier::

    from effreason_agents.langchain.callbacks import cost_callback

    with cost_callback() as cb:            # every chat model called inside is counted
        agent.invoke({"messages": [("user", "What is 2 + 3?")]})
    cb.total_cost_usd, cb.usage_metadata, cb.by_tier, cb.summary()

or pass it explicitly: ``chain.invoke(x, config={"callbacks": [CostCallbackHandler()]})``.

A call is priced with the project's tier prices when its tier is known — the run's
``effreason_tier`` metadata (set by :class:`~effreason_agents.langchain.middleware.CostAwareMiddleware`
and :func:`traced_config`), or a configured tier whose ``model`` equals the requested or
served model name (a served name with a date suffix, ``gpt-4o-mini-2024-07-18``, matches
``gpt-4o-mini``) — otherwise with the ``prices`` table given (USD per 1M input/output
tokens per model name). Calls priced by neither count tokens and are listed in
``unpriced_models``.

Trace labels: :func:`run_metadata` / :func:`run_tags` / :func:`traced_config` build the
``RunnableConfig`` metadata and tags (``effreason_arm``, ``effreason_tier``,
``effreason_confidence``, ``effreason_cost_usd``, …) that LangSmith shows on a run. The
reasoning graph's ``solve`` node can pass them to the tier call::

    from effreason_agents.langchain.callbacks import attempt_config
    c = client.complete(prompt.messages, ..., config=attempt_config(arm, difficulty=state["difficulty"]))

and a caller can label a whole graph run: ``graph.invoke(x, traced_config(None, arm="small:direct"))``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import Any, Mapping
from uuid import UUID

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tracers.context import register_configure_hook

from effreason_agents.config import Config, TierConfig
from effreason_agents.core.money import ONE_MILLION, format_usd
from effreason_agents.engine.tracing import METADATA_PREFIX, attempt_config, run_metadata, run_tags, traced_config

__all__ = [
    "METADATA_PREFIX",
    "CostCallbackHandler",
    "attempt_config",
    "cost_callback",
    "run_metadata",
    "run_tags",
    "traced_config",
]

_TIER_KEY = f"{METADATA_PREFIX}tier"

Prices = Mapping[str, tuple[Decimal | str | float, Decimal | str | float]]
"""USD per 1M (input, output) tokens, per model name."""


def _matches(served: str, model: str) -> bool:
    return served == model or served.startswith(model + "-")


class CostCallbackHandler(UsageMetadataCallbackHandler):
    """Tokens and ``Decimal`` cost per model and per tier, for every chat-model call it sees.

    Thread-safe (one lock around every update). ``usage_metadata`` (per model name) has the
    shape and values of :class:`~langchain_core.callbacks.UsageMetadataCallbackHandler`.

    Args:
        config: price calls by this configuration's tiers (default: none; pass
            ``load_config()`` for the project's).
        prices: USD per 1M ``(input, output)`` tokens per model name, for models that are
            not a configured tier's.
    """

    def __init__(self, config: Config | None = None, prices: Prices | None = None) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.tiers: dict[str, TierConfig] = dict(config.tiers) if config is not None else {}
        self.prices: dict[str, tuple[Decimal, Decimal]] = {
            k: (Decimal(str(v[0])), Decimal(str(v[1]))) for k, v in (prices or {}).items()
        }
        self.cost_by_model: dict[str, Decimal] = {}
        self.cost_by_tier: dict[str, Decimal] = {}
        self.by_tier: dict[str, UsageMetadata] = {}
        self.calls_by_model: dict[str, int] = {}
        self.unpriced_models: set[str] = set()
        self._runs: dict[UUID, tuple[str | None, str | None]] = {}

    def __repr__(self) -> str:
        return f"CostCallbackHandler(total_cost_usd={format_usd(self.total_cost_usd)}, usage={self.usage_metadata})"

    # -- pricing ----------------------------------------------------------------------
    def tier_of(self, requested: str | None, served: str | None, labelled: str | None = None) -> str | None:
        """The configured tier a call belongs to: its label, else the tier whose model is the
        requested or served model name."""
        if labelled and labelled in self.tiers:
            return labelled
        for name in (requested, served):
            if name:
                for tier, cfg in self.tiers.items():
                    if _matches(name, cfg.model):
                        return tier
        return None

    def price(self, model: str, tier: str | None, usage: Mapping[str, Any]) -> Decimal | None:
        """The call's cost, or ``None`` when neither a tier nor the price table prices it."""
        i, o = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        if tier is not None:
            t = self.tiers[tier]
            return (Decimal(i) * t.price_input_per_1m + Decimal(o) * t.price_output_per_1m) / ONE_MILLION
        table = self.prices.get(model) or next((p for m, p in self.prices.items() if _matches(model, m)), None)
        if table is None:
            return None
        return (Decimal(i) * table[0] + Decimal(o) * table[1]) / ONE_MILLION

    # -- callbacks --------------------------------------------------------------------
    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *, run_id: UUID,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        params = kwargs.get("invocation_params") or {}
        requested = params.get("model") or params.get("model_name") or (metadata or {}).get("ls_model_name")
        with self._lock:
            self._runs[run_id] = (requested, (metadata or {}).get(_TIER_KEY))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID | None = None, **kwargs: Any) -> None:
        try:
            generation = response.generations[0][0]
        except IndexError:
            generation = None
        usage = None
        served = None
        exact: tuple[Decimal, str | None] | None = None
        if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
            usage = generation.message.usage_metadata
            meta = generation.message.response_metadata
            served = meta.get("model_name")
            if meta.get("model_provider") == "effreason" and meta.get("cost_usd") is not None:
                # a ChatCostAware call: its usage and exact cost cover every attempt
                exact = (Decimal(str(meta["cost_usd"])), meta.get("tier"))
        with self._lock:
            requested, labelled = self._runs.pop(run_id, (None, None)) if run_id is not None else (None, None)
            if not usage:
                return
            model = served or requested
            if not model:
                return
            # the usage_metadata aggregation of UsageMetadataCallbackHandler (keyed by served model name)
            if served:
                prev = self.usage_metadata.get(served)
                self.usage_metadata[served] = usage if prev is None else add_usage(prev, usage)
            tier = exact[1] if exact is not None else self.tier_of(requested, served, labelled)
            cost = exact[0] if exact is not None else self.price(model, tier, usage)
            self.calls_by_model[model] = self.calls_by_model.get(model, 0) + 1
            if cost is None:
                self.unpriced_models.add(model)
                cost = Decimal(0)
            self.cost_by_model[model] = self.cost_by_model.get(model, Decimal(0)) + cost
            if tier is not None:
                prev_t = self.by_tier.get(tier)
                self.by_tier[tier] = usage if prev_t is None else add_usage(prev_t, usage)
                self.cost_by_tier[tier] = self.cost_by_tier.get(tier, Decimal(0)) + cost

    # -- totals -----------------------------------------------------------------------
    @property
    def total_cost_usd(self) -> Decimal:
        with self._lock:
            return sum(self.cost_by_model.values(), Decimal(0))

    @property
    def total_tokens(self) -> int:
        with self._lock:
            return sum(int(u.get("total_tokens", 0)) for u in self.usage_metadata.values())

    def summary(self) -> dict[str, Any]:
        """JSON-plain totals: ``{"total_cost_usd", "input_tokens", "output_tokens", "total_tokens",
        "models": {name: {"calls", "input_tokens", "output_tokens", "cost_usd"}}, "tiers": {...},
        "unpriced_models": [...]}`` (money as decimal strings)."""
        with self._lock:
            models = {
                m: {
                    "calls": self.calls_by_model.get(m, 0),
                    "input_tokens": int((self.usage_metadata.get(m) or {}).get("input_tokens", 0)),
                    "output_tokens": int((self.usage_metadata.get(m) or {}).get("output_tokens", 0)),
                    "cost_usd": format_usd(c),
                }
                for m, c in sorted(self.cost_by_model.items())
            }
            tiers = {
                t: {"input_tokens": int(u.get("input_tokens", 0)), "output_tokens": int(u.get("output_tokens", 0)),
                    "cost_usd": format_usd(self.cost_by_tier.get(t, Decimal(0)))}
                for t, u in sorted(self.by_tier.items())
            }
            i = sum(int(u.get("input_tokens", 0)) for u in self.usage_metadata.values())
            o = sum(int(u.get("output_tokens", 0)) for u in self.usage_metadata.values())
            total = sum(self.cost_by_model.values(), Decimal(0))
            return {"total_cost_usd": format_usd(total), "input_tokens": i, "output_tokens": o,
                    "total_tokens": i + o, "models": models, "tiers": tiers,
                    "unpriced_models": sorted(self.unpriced_models)}


@contextmanager
def cost_callback(config: Config | None = None, prices: Prices | None = None,
                  name: str = "effreason_cost_callback") -> Iterator[CostCallbackHandler]:
    """Count every chat-model call made inside the block (like
    :func:`langchain_core.callbacks.get_usage_metadata_callback`, which it mirrors)."""
    var: ContextVar[CostCallbackHandler | None] = ContextVar(name, default=None)
    register_configure_hook(var, inheritable=True)
    cb = CostCallbackHandler(config, prices)
    token = var.set(cb)
    try:
        yield cb
    finally:
        var.reset(token)


# -- trace labels: effreason_agents.engine.tracing (re-exported here) --------------
