"""Typed records shared by every layer: budget scopes and usage, completions, statuses.

Statuses and decisions are :class:`~enum.StrEnum` members: they compare equal to
their string values and are stored as plain strings (JSON, SQLite, graph state),
so nothing downstream parses prose to learn what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, get_args

from effreason_agents.core.money import from_micro, to_micro

__all__ = [
    "TIER_DOWN_KINDS",
    "Completion",
    "Decision",
    "ErrorKind",
    "Scope",
    "ScopeKind",
    "Status",
    "StopReason",
    "TokenLogprob",
    "Usage",
]

ScopeKind = Literal["request", "thread", "user"]


class Status(StrEnum):
    """How a request ended."""

    ANSWERED = "answered"
    LOW_CONFIDENCE = "low_confidence"
    FAILED = "failed"
    BUDGET_EXHAUSTED = "budget_exhausted"


class Decision(StrEnum):
    """What the policy decided after a step."""

    SOLVE = "solve"
    ACCEPT = "accept"
    ESCALATE = "escalate"
    STOP = "stop"


class StopReason(StrEnum):
    """Why a request stopped without an accepted answer."""

    BUDGET_EXHAUSTED = "budget_exhausted"
    LADDER_EXHAUSTED = "ladder_exhausted"


class ErrorKind(StrEnum):
    """Why a tier call failed."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    UNAVAILABLE = "unavailable"
    NO_KEY = "no_key"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    BAD_RESPONSE = "bad_response"
    ERROR = "error"


TIER_DOWN_KINDS = frozenset(
    {
        ErrorKind.UNREACHABLE,
        ErrorKind.UNAVAILABLE,
        ErrorKind.TIMEOUT,
        ErrorKind.NO_KEY,
        ErrorKind.AUTH,
        ErrorKind.RATE_LIMITED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.BAD_RESPONSE,
    }
)
"""Errors after which a tier is skipped for the rest of the request (and the next tier tried)."""


@dataclass(frozen=True)
class Scope:
    """A budget scope: one request, one conversation thread or one user / API key."""

    kind: ScopeKind
    key: str

    def __post_init__(self) -> None:
        if self.kind not in get_args(ScopeKind):
            raise ValueError(f"scope kind {self.kind!r} is not one of {', '.join(get_args(ScopeKind))}")
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"a {self.kind} scope needs a non-empty string key, got {self.key!r}")

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


@dataclass(frozen=True)
class Usage:
    """Tokens and money (micro-dollars) used, or that may be used, by a model call."""

    output_tokens: int = 0
    total_tokens: int = 0
    micro_usd: int = 0

    def __post_init__(self) -> None:
        for name in ("output_tokens", "total_tokens", "micro_usd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Usage.{name} must be an int >= 0, got {value!r}")

    @classmethod
    def from_usd(cls, output_tokens: int = 0, total_tokens: int = 0, cost_usd: Decimal | str | int = 0) -> Usage:
        """Build a usage from a USD amount (rounded up to whole micro-dollars)."""
        return cls(output_tokens, total_tokens, to_micro(cost_usd))

    @property
    def cost_usd(self) -> Decimal:
        return from_micro(self.micro_usd)

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
            self.micro_usd + other.micro_usd,
        )

    def exceeds(self, other: Usage) -> bool:
        """True when any quantity is larger than in ``other``."""
        return (
            self.output_tokens > other.output_tokens
            or self.total_tokens > other.total_tokens
            or self.micro_usd > other.micro_usd
        )


@dataclass
class TokenLogprob:
    """One generated token, its logprob and the top alternatives the endpoint returned."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "top": [list(t) for t in self.top]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenLogprob:
        return cls(str(data["token"]), float(data["logprob"]), [(str(t), float(lp)) for t, lp in data.get("top") or []])


@dataclass
class Completion:
    """What one model call (or one sampled arm) returned, with its settled usage.

    ``usage_reported`` is ``False`` when the provider sent no usage or usage that could
    not be read: the call was then settled at its hold, and ``input_tokens`` /
    ``output_tokens`` / ``cost_usd`` are the held worst case."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None
    latency_s: float
    model: str
    cost_usd: Decimal
    logprobs: list[TokenLogprob] | None = None
    prefill: str = ""
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    usage_reported: bool = True
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    samples: list[str | None] | None = None
    """Self-consistency: every sample's normalised answer, in the order drawn."""

    @property
    def generated_text(self) -> str:
        """The text the model generated, without a prefilled assistant prefix."""
        if self.prefill and self.text.startswith(self.prefill):
            return self.text[len(self.prefill) :]
        return self.text

    def to_json(self) -> dict[str, Any]:
        """JSON-plain form, stored with the settlement so a re-executed step can return it."""
        return {
            "text": self.text,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "finish_reason": self.finish_reason,
            "latency_s": self.latency_s,
            "model": self.model,
            "cost_usd": str(self.cost_usd),
            "logprobs": [t.to_json() for t in self.logprobs] if self.logprobs else None,
            "prefill": self.prefill,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "usage_reported": self.usage_reported,
            "tool_calls": self.tool_calls,
            "samples": self.samples,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        lp = data.get("logprobs")
        return cls(
            text=str(data.get("text") or ""),
            input_tokens=int(data.get("input_tokens") or 0),
            output_tokens=int(data.get("output_tokens") or 0),
            finish_reason=data.get("finish_reason"),
            latency_s=float(data.get("latency_s") or 0.0),
            model=str(data.get("model") or ""),
            cost_usd=Decimal(str(data.get("cost_usd") or "0")),
            logprobs=[TokenLogprob.from_json(t) for t in lp] if lp else None,
            prefill=str(data.get("prefill") or ""),
            cached_input_tokens=int(data.get("cached_input_tokens") or 0),
            reasoning_tokens=int(data.get("reasoning_tokens") or 0),
            usage_reported=bool(data.get("usage_reported", True)),
            tool_calls=list(data.get("tool_calls") or []),
            samples=data.get("samples"),
        )
