"""Text hygiene: questions checked before any call, secrets kept out of logs and rows."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from effreason_agents.errors import InvalidQuestionError

__all__ = ["MAX_QUESTION_CHARS", "POSTGRES_SCHEMES", "is_postgres_url", "redact", "redact_url", "validate_question", "visible_text"]

MAX_QUESTION_CHARS = 100_000

# Control (Cc) and format (Cf: zero-width spaces and joiners, BOM, bidi marks) characters
# carry no meaning a model can answer; whitespace is kept.
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn"}
_KEEP = {"\n", "\t", "\r"}


def visible_text(text: str) -> str:
    """``text`` without control and format characters (NUL, zero-width spaces, BOM…),
    whitespace kept, surrounding whitespace stripped."""
    if text.isprintable() or all(c in _KEEP or c.isprintable() for c in text):
        return text.strip()
    return "".join(c for c in text if c in _KEEP or unicodedata.category(c) not in _INVISIBLE).strip()


def validate_question(question: Any) -> str:
    """The question without invisible characters and surrounding whitespace, or
    :class:`~effreason_agents.errors.InvalidQuestionError` before any model is called."""
    if not isinstance(question, str):
        raise InvalidQuestionError(f"the question must be a string, got {type(question).__name__}")
    q = visible_text(question)
    if not q:
        what = "empty" if not question.strip() else "made only of invisible characters (control, zero-width, BOM)"
        raise InvalidQuestionError(f"the question is {what}: ask something")
    if len(q) > MAX_QUESTION_CHARS:
        raise InvalidQuestionError(f"the question is {len(q)} characters; the limit is {MAX_QUESTION_CHARS}")
    return q


# Shapes of API keys and bearer tokens: OpenAI-style ``sk-…``, ``Bearer …`` headers and
# long opaque tokens after ``key``/``token`` words.
_KEY_SHAPES = re.compile(
    r"(?i)(?:\bsk-[A-Za-z0-9_\-*.]{6,}"
    r"|\b(?:bearer)\s+[A-Za-z0-9_\-.~+/=]{8,}"
    r"|\b(?:api[_-]?key|token|secret)(?:\s+provided)?\s*[:=]?\s*['\"]?[A-Za-z0-9_\-.]{16,})"
)
REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every ``secrets`` value and anything shaped like an API key or bearer
    token replaced by ``[redacted]``: provider error messages sometimes quote the key."""
    out = text
    for s in secrets:
        if s and len(s) >= 4:
            out = out.replace(s, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, out)


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""URL prefixes that select the PostgreSQL backend of the ledger, store and checkpoints."""


def is_postgres_url(target: object) -> bool:
    """Whether ``target`` (a path or a URL) names a PostgreSQL database."""
    return isinstance(target, str) and target.strip().lower().startswith(POSTGRES_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``,
    for messages and logs."""
    out = _URL_PASSWORD.sub(r"\1***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", out)


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")
_QUERY_PASSWORD = re.compile(r"((?:[?&])password=)[^&#\s]*", re.IGNORECASE)
