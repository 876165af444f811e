"""Money: exact decimal dollars, integer micro-dollars, prices and the one formatter.

Money is never a summed float. Amounts are :class:`~decimal.Decimal` dollars or
integer micro-dollars (``1 USD = 1_000_000``); conversions to micro-dollars round
UP (:func:`to_micro`), so a hold never under-counts, and limits round DOWN
(:func:`to_micro_floor`), so a cap is never raised by rounding.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation, localcontext
from typing import Any

__all__ = [
    "MICRO",
    "ONE_MILLION",
    "call_cost",
    "format_usd",
    "from_micro",
    "to_decimal",
    "to_micro",
    "to_micro_floor",
]

MICRO = 1_000_000
ONE_MILLION = Decimal(1_000_000)


def to_decimal(usd: Any) -> Decimal:
    """A finite :class:`Decimal` from a Decimal, int or decimal string; floats are refused
    (they lose cents), as are non-numbers."""
    if isinstance(usd, (float, bool)):
        raise TypeError(f"money must be a Decimal, str or int, not {type(usd).__name__} ({usd!r}); floats lose cents")
    try:
        amount = Decimal(usd)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{usd!r} is not a decimal amount of USD; pass e.g. '0.000123'") from None
    if not amount.is_finite():
        raise ValueError(f"{usd!r} is not a finite amount of USD")
    return amount


def _round_micro(usd: Any, rounding: str) -> int:
    amount = to_decimal(usd)
    with localcontext() as ctx:
        ctx.prec = 60
        return int((amount * MICRO).to_integral_value(rounding=rounding))


def to_micro(usd: Any) -> int:
    """USD to integer micro-dollars, rounded up (``to_micro("0.0000001") == 1``)."""
    return _round_micro(usd, ROUND_CEILING)


def to_micro_floor(usd: Any) -> int:
    """USD to integer micro-dollars, rounded down (for limits)."""
    return _round_micro(usd, ROUND_FLOOR)


def from_micro(micro: int) -> Decimal:
    """Integer micro-dollars to USD with six decimal places (``from_micro(1500) == Decimal("0.001500")``)."""
    return Decimal(int(micro)).scaleb(-6).quantize(Decimal("0.000001"))


def call_cost(
    input_tokens: int,
    output_tokens: int,
    price_input_per_1m: Decimal,
    price_output_per_1m: Decimal,
    *,
    cached_input_tokens: int = 0,
    price_cached_input_per_1m: Decimal | None = None,
) -> Decimal:
    """Exact cost of a call: ``cached_input_tokens`` (part of ``input_tokens``) at the cached
    price when one is given, the rest of the input and every output token (reasoning tokens
    included, as providers bill them) at their prices per 1M tokens."""
    if input_tokens < 0 or output_tokens < 0 or cached_input_tokens < 0:
        raise ValueError("token counts cannot be negative")
    cached = min(cached_input_tokens, input_tokens) if price_cached_input_per_1m is not None else 0
    total = (
        Decimal(input_tokens - cached) * Decimal(price_input_per_1m)
        + Decimal(output_tokens) * Decimal(price_output_per_1m)
    )
    if cached:
        total += Decimal(cached) * Decimal(price_cached_input_per_1m)  # type: ignore[arg-type]
    return total / ONE_MILLION


def format_usd(amount: Any, *, symbol: bool = False) -> str:
    """The one dollar formatter.

    ``symbol=False`` (storage, JSON, state): the exact amount as a plain decimal string
    without exponent notation (``"0"``, ``"0.000123"``). ``symbol=True`` (people): a ``$``
    amount that stays readable when tiny — at least four decimals, up to six when needed,
    two above a dollar (``$0``, ``$0.000123``, ``$0.0123``, ``$1.50``); ``—`` for a missing
    or non-finite value.
    """
    if amount is None or (isinstance(amount, float) and not math.isfinite(amount)):
        return "—" if symbol else "0"
    d = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    if not d.is_finite():
        return "—" if symbol else "0"
    if not symbol:
        return "0" if d == 0 else format(d.normalize(), "f")
    if d == 0:
        return "$0"
    sign, d = ("-" if d < 0 else ""), abs(d)
    if d >= 1:
        return f"{sign}${d:,.2f}"
    text = f"{d:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(4, '0')}"
