"""Prometheus metrics of the OpenAI-compatible server: requests, latency, tokens, cost,
escalations and refusals, per model, tier and key (the key's name, never the key).

With several worker processes, ``effreason serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory before the workers start, and ``/metrics`` adds up every worker's values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["MULTIPROC_ENV", "ServerMetrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServerMetrics:
    """The server's counters and histogram, registered once per process."""

    _instance: "ServerMetrics | None" = None

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter("effreason_requests", "Chat completion requests by model, tier, key and HTTP status.",
                                ["model", "tier", "key", "status"])
        self.latency = Histogram("effreason_request_seconds", "Time to answer a chat completion request.",
                                 ["model"], buckets=_LATENCY_BUCKETS)
        self.tokens = Counter("effreason_tokens", "Tokens billed by the tiers, summed over every attempt.",
                              ["tier", "key", "kind"])
        self.cost = Counter("effreason_cost_usd", "Dollars billed by the tiers, summed over every attempt.",
                            ["tier", "key"])
        self.escalations = Counter("effreason_escalations", "Requests that escalated to a stronger arm.",
                                   ["tier", "key"])
        self.refusals = Counter("effreason_refusals", "Requests refused before or instead of an answer, by reason.",
                                ["key", "reason"])

    @classmethod
    def get(cls) -> "ServerMetrics":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def observe(self, *, model: str, tier: str | None, key: str, status: int, seconds: float) -> None:
        """One answered or refused request."""
        self.requests.labels(model, tier or "-", key, str(status)).inc()
        self.latency.labels(model).observe(seconds)

    def charged(self, *, tier: str | None, key: str, info: Mapping[str, Any] | None,
                usage: Mapping[str, int] | None) -> None:
        """What a request's attempts billed (``usage`` summed over them, ``info`` its ``effreason`` field)."""
        tier_label = tier or "-"
        if usage:
            self.tokens.labels(tier_label, key, "input").inc(int(usage.get("prompt_tokens") or 0))
            self.tokens.labels(tier_label, key, "output").inc(int(usage.get("completion_tokens") or 0))
        if info:
            cost = float(info.get("cost_usd") or 0)
            if cost:
                self.cost.labels(tier_label, key).inc(cost)
            if info.get("escalated"):
                self.escalations.labels(tier_label, key).inc()

    def refused(self, key: str, reason: str) -> None:
        self.refusals.labels(key, reason).inc()

    @staticmethod
    def exposition() -> tuple[bytes, str]:
        """The text exposition of every worker's metrics (this process's without multiprocess mode)."""
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
