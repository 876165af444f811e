"""One exception hierarchy for the whole library.

Every message says what happened and what to do about it. Input errors are
raised before any model is called.
"""

from __future__ import annotations


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
