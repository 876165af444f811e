"""The budget ledger's running totals seen from outside: what its ``scope_totals`` table holds
and what the sums over its holds' history say it must hold, read with plain SQL (``db_rows``
from conftest: a SQLite path or a PostgreSQL URL), never through the ledger's own queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Sums", "fresh_totals", "live_sums", "stored_totals"]

Sums = tuple[int, int, int, int, int, int, int]
"""spent output tokens, spent total tokens, spent micro-dollars, held output tokens, held total
tokens, held micro-dollars, outstanding holds."""

_FRESH = """
SELECT s.kind, s.scope_key,
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_output_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_total_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_micro_usd ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_output_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_total_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN r.reserved_micro_usd ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN 1 ELSE 0 END), 0)
FROM reservation_scopes s JOIN reservations r ON r.key = s.reservation_key
GROUP BY s.kind, s.scope_key
"""

_STORED = """
SELECT kind, scope_key, spent_output_tokens, spent_total_tokens, spent_micro_usd, held_output_tokens,
  held_total_tokens, held_micro_usd, held_count
FROM scope_totals
"""

# What a read reports for one scope: spent, held by holds not past their expiry (holds
# without an expiry always count), outstanding holds, and of those the expired ones (holds
# without an expiry expire ``ttl`` seconds after they were taken).
_LIVE = """
SELECT
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_output_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_total_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'committed' THEN r.actual_micro_usd ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' AND (r.expires_at IS NULL OR r.expires_at >= ?)
    THEN r.reserved_output_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' AND (r.expires_at IS NULL OR r.expires_at >= ?)
    THEN r.reserved_total_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' AND (r.expires_at IS NULL OR r.expires_at >= ?)
    THEN r.reserved_micro_usd ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' THEN 1 ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN r.status = 'reserved' AND (r.expires_at < ? OR (r.expires_at IS NULL AND r.updated_at < ?))
    THEN 1 ELSE 0 END), 0)
FROM reservation_scopes s JOIN reservations r ON r.key = s.reservation_key
WHERE s.kind = ? AND s.scope_key = ?
"""


def _nonzero(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], Sums]:
    out: dict[tuple[str, str], Sums] = {}
    for kind, key, *values in rows:
        sums = tuple(int(v) for v in values)
        if any(sums):  # a scope whose holds were all released has zero totals or none
            out[(kind, key)] = sums  # type: ignore[assignment]
    return out


def fresh_totals(db_rows: Callable[..., list[tuple[Any, ...]]], target: str) -> dict[tuple[str, str], Sums]:
    """Every scope's totals summed over its whole history (scopes with all zeros left out)."""
    return _nonzero(db_rows(target, _FRESH))


def stored_totals(db_rows: Callable[..., list[tuple[Any, ...]]], target: str) -> dict[tuple[str, str], Sums]:
    """The ledger's ``scope_totals`` rows (rows with all zeros left out)."""
    return _nonzero(db_rows(target, _STORED))


def live_sums(
    db_rows: Callable[..., list[tuple[Any, ...]]], target: str, kind: str, key: str, now: float, ttl: float
) -> tuple[int, ...]:
    """One scope as a read at ``now`` must report it, summed over its history: spent (3),
    held by unexpired holds (3), outstanding holds, expired outstanding holds."""
    [row] = db_rows(target, _LIVE, (now, now, now, now, now - ttl, kind, key))
    return tuple(int(v) for v in row)
