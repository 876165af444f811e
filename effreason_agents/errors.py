"""One exception hierarchy for the whole library.

Every message says what happened and what to do about it. Input errors are
raised before any model is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decimal import Decimal

    from effreason_agents.core.records import Scope

__all__ = [
    "AdapterError",
    "BenchError",
    "BudgetExhausted",
    "CalibratorError",
    "ConfigError",
    "DatasetError",
    "EffReasonError",
    "EmbeddedServerError",
    "EmbeddingError",
    "EngineUnavailableError",
    "EstimatorError",
    "EvaluationError",
    "InvalidQuestionError",
    "LedgerError",
    "MetricsError",
    "OutcomeDataError",
    "PGRUndefinedError",
    "ReportError",
    "RequestError",
    "RouterError",
    "RouterTrainError",
    "ScorerError",
    "StoreError",
    "TierError",
    "TuneError",
    "VirtualKeyError",
]


class EffReasonError(Exception):
    """Base class of every error raised by effreason-agents."""


class ConfigError(EffReasonError, ValueError):
    """The configuration is invalid (the message names the field path and the reason)."""


class InvalidQuestionError(EffReasonError, ValueError):
    """The question cannot be sent to any tier (empty, whitespace-only, too long)."""


class TierError(EffReasonError):
    """A tier could not answer (unreachable, no key, rate-limited, server error, timeout).

    ``retryable`` tells whether the client already retried with backoff before giving up.
    """

    def __init__(self, tier: str, message: str, *, kind: str = "error") -> None:
        super().__init__(f"tier {tier!r}: {message}")
        self.tier = tier
        self.kind = kind


class EmbeddedServerError(EffReasonError, RuntimeError):
    """The embedded llama.cpp server could not be started or did not become healthy."""


class EngineUnavailableError(EffReasonError, RuntimeError):
    """A serving engine (e.g. vLLM) cannot run on this machine; the message says why."""


class StoreError(EffReasonError):
    """The outcome store could not be opened, migrated or written."""


class LedgerError(EffReasonError):
    """The budget ledger could not be opened or written, or a hold was misused
    (settled without being reserved)."""


class VirtualKeyError(EffReasonError):
    """A virtual API key cannot be created, found or revoked as asked (a name already
    taken, an unknown key, a budget or rate limit out of range); nothing was written."""


class BudgetExhausted(EffReasonError):
    """A scope's budget cannot cover the worst case of the next model call.

    ``scope`` is the :class:`~effreason_agents.core.records.Scope` that ran out and
    ``scope_kind`` its kind as a plain string (``"request"``, ``"thread"`` or ``"user"``).
    ``limit`` names the limit (``max_output_tokens``, ``max_total_tokens`` or
    ``max_cost_usd``); ``needed`` is the worst case asked for and ``remaining`` what was
    left (ints for tokens, ``Decimal`` USD for money); ``limit_value`` and ``used``
    (committed + held) complete the picture. The message can be shown to the end user
    as is.
    """

    def __init__(self, scope: Scope, limit: str, *, needed: int, remaining: int, limit_value: int, used: int) -> None:
        from effreason_agents.core.money import format_usd, from_micro

        money = limit == "max_cost_usd"
        unit = {"max_output_tokens": "output tokens", "max_total_tokens": "tokens"}.get(limit, "")

        def fmt(v: int) -> str:
            return format_usd(from_micro(v), symbol=True) if money else f"{v} {unit}"

        if remaining <= 0:
            head = format_usd(from_micro(used), symbol=True) if money else str(used)
            msg = f"the {scope.kind} budget is spent: {head} of {fmt(limit_value)} used"
        else:
            msg = (
                f"the {scope.kind} budget is nearly spent: the next step may need up to {fmt(needed)}, "
                f"but only {fmt(remaining)} of {fmt(limit_value)} is left"
            )
        super().__init__(msg)
        self._raw = (scope, limit, needed, remaining, limit_value, used)
        self.scope = scope
        self.scope_kind: str = str(scope.kind)
        self.limit = limit
        self.needed: int | Decimal = from_micro(needed) if money else needed
        self.remaining: int | Decimal = from_micro(max(remaining, 0)) if money else max(remaining, 0)
        self.limit_value: int | Decimal = from_micro(limit_value) if money else limit_value
        self.used: int | Decimal = from_micro(used) if money else used

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuild from the raw values so the error survives pickling
        # (process pools, multiprocessing queues).
        scope, limit, needed, remaining, limit_value, used = self._raw
        return (_rebuild_budget_exhausted, (scope, limit, needed, remaining, limit_value, used))


def _rebuild_budget_exhausted(
    scope: Scope, limit: str, needed: int, remaining: int, limit_value: int, used: int
) -> BudgetExhausted:
    return BudgetExhausted(scope, limit, needed=needed, remaining=remaining, limit_value=limit_value, used=used)


class RequestError(EffReasonError, ValueError):
    """An HTTP request the OpenAI-compatible server refuses, before any model call or hold.

    ``status`` is the HTTP status, ``param`` the offending request field (``None`` when it is
    not about one field), ``code`` OpenAI's error code (e.g. ``"model_not_found"``,
    ``"insufficient_quota"``) and ``type`` OpenAI's error type."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None,
        type: str = "invalid_request_error", headers: dict[str, str] | None = None,  # noqa: A002 - OpenAI's name
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.type = type
        self.headers = dict(headers or {})


class ReportError(EffReasonError, ValueError):
    """A results dict or a ``results.json`` cannot be turned into a report (the message says why)."""


class MetricsError(EffReasonError, ValueError):
    """The inputs of a metric are invalid (empty, mismatched lengths, non-numeric values)."""


class PGRUndefinedError(MetricsError):
    """PGR divides by ``acc_strong − acc_weak``, which is zero for these two models."""


class BenchError(EffReasonError, ValueError):
    """A benchmark cannot run as asked (unknown arm, changed config on resume, ...)."""


class OutcomeDataError(EffReasonError, ValueError):
    """Logged outcomes cannot be loaded, or do not fit what was asked of them (an unknown
    arm, fewer than two arms); the message names the file, the column and the row."""


class DatasetError(EffReasonError, ValueError):
    """A task suite or dataset file cannot be used (unknown suite, missing file, malformed
    line under ``on_error="refuse"``, no valid items). The message names the file and line."""


class EstimatorError(EffReasonError, ValueError):
    """A budget regressor could not be fitted, saved or loaded (the message says what to do)."""


class EmbeddingError(EffReasonError, RuntimeError):
    """Sentence embeddings cannot be computed (missing packages or model files)."""


class RouterError(EffReasonError, ValueError):
    """A router artifact cannot be saved, loaded or used (the message says why and what to do)."""


class CalibratorError(EffReasonError, ValueError):
    """A calibrator artifact is unreadable, foreign, of another version, or does not fit the tier."""


class ScorerError(CalibratorError):
    """A cascade scorer artifact is unreadable, foreign, of another version, or judges none of
    the configured arms; or a scorer setting is unknown."""


class EvaluationError(MetricsError):
    """A router cannot be evaluated on these outcomes, or no policy meets a target (the message says why)."""


class RouterTrainError(EffReasonError, ValueError):
    """Training, evaluation or policy calibration cannot proceed (a clear reason is given)."""


class TuneError(EffReasonError, ValueError):
    """``effreason tune`` cannot run: its data file has a malformed line, or a setting is out of range (the message names the file and line)."""


class AdapterError(EffReasonError, ValueError):
    """A LoRA adapter cannot be used: the file is missing or corrupted, or it was tuned from another base model (the message names the file)."""
