"""Answers as written in replies: numbers, dates, yes/no and text, read and normalized.

Pure functions used at run time (self-consistency votes by :func:`answer_key`) and by
the evaluation code that grades answers against gold
(:func:`effreason_agents.evaluation.tasks.check_answer`).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from decimal import Decimal, InvalidOperation

__all__ = [
    "YES_NO",
    "answer_key",
    "canonical_number",
    "normalize_text",
    "parse_date",
    "parse_date_exact",
    "parse_number",
    "polarity",
    "strip_edges",
]

_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})  # minus sign, en dash
#: A number as written in an answer: optional sign and ``$``, thousands groups of three,
#: decimals, optional ``%``. Not glued to letters, digits or other numbers (``v2``, ``1,5``).
_NUM_IN_TEXT = re.compile(
    r"(?<![\w.,])([-+]?)\$?([-+]?)(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)%?(?!\w|[.,]\d)"
)
_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_EDGE_CHARS = " \t\r\n\"'`“”‘’*_.,;:!?()[]{}<>"
_MAX_PHRASE_WORDS = 6


def strip_edges(text: str) -> str:
    """Whitespace, quotes, markdown emphasis and punctuation removed from both ends."""
    return text.strip(_EDGE_CHARS)


def parse_number(text: str) -> float | None:
    """The number an answer states, or ``None``.

    Accepts ``"1,000"``, ``"$5"``, ``"5.0"``, ``"5%"``, ``"5."``, ``"-3"``, ``".5"``, ``"3/4"``
    and one number inside a short phrase (at most six words, e.g. ``"5 apples"``). A phrase
    holding different numbers (``"5 + 3 = 8"``) is ambiguous and gives ``None``; so do
    number words (``"five"``) and glued tokens (``"5th"``, ``"1,5"``).
    """
    s = unicodedata.normalize("NFKC", text).translate(_MINUS).strip()
    frac = _FRACTION.fullmatch(s.strip(" \t\r\n\"'`“”‘’*_"))
    if frac and int(frac.group(2)) != 0:
        return int(frac.group(1)) / int(frac.group(2))
    found = [m for m in _NUM_IN_TEXT.finditer(s)]
    if not found:
        return None
    values = {_match_value(m) for m in found}
    if len(values) != 1:
        return None
    whole = len(found) == 1 and strip_edges(s[: found[0].start()]) == "" and strip_edges(s[found[0].end():]) == ""
    if not whole and len(s.split()) > _MAX_PHRASE_WORDS:
        return None
    return values.pop()


def _match_value(m: re.Match[str]) -> float:
    sign = "-" if "-" in (m.group(1) + m.group(2)) else ""
    return float(sign + m.group(3).replace(",", ""))


def canonical_number(text: str | int | float) -> str:
    """The canonical spelling of a gold number: no ``,`` ``$`` ``%``, no trailing zeros,
    no exponent (``"1,000"`` → ``"1000"``, ``"5.50"`` → ``"5.5"``, ``".5"`` → ``"0.5"``).

    Raises ``ValueError`` when ``text`` is not a single number.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a number")
    s = str(text).translate(_MINUS).strip().replace(",", "").replace("$", "").replace("%", "")
    s = s.rstrip(".") if re.fullmatch(r"[-+]?\d+\.", s) else s
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?", s):
        raise ValueError(f"{text!r} is not a number")
    try:
        d = Decimal(s)
    except InvalidOperation as exc:  # pragma: no cover - guarded by the regex
        raise ValueError(f"{text!r} is not a number") from exc
    out = format(d.normalize(), "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


_MONTHS = {
    name: i
    for i, names in enumerate(
        [
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
            ("may",), ("june", "jun"), ("july", "jul"), ("august", "aug"),
            ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"), ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_MONTH_RE = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_ORD = r"(?:st|nd|rd|th)?"
_DATE_PATTERNS: tuple[tuple[re.Pattern[str], tuple[str, str, str]], ...] = (
    # 2024-03-06, 2024/03/06, 2024.03.06
    (re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)"), ("y", "m", "d")),
    # 03/06/2024, 3-6-2024: US order, month first
    (re.compile(r"(?<!\d)(\d{1,2})[/-](\d{1,2})[/-](\d{4})(?!\d)"), ("m", "d", "y")),
    # March 6, 2024 / Mar. 6th 2024
    (re.compile(rf"\b{_MONTH_RE}\s+(\d{{1,2}}){_ORD},?\s+(\d{{4}})(?!\d)", re.I), ("m", "d", "y")),
    # 6 March 2024 / 6th of March, 2024
    (re.compile(rf"(?<!\d)(\d{{1,2}}){_ORD}\s+(?:of\s+)?{_MONTH_RE},?\s+(\d{{4}})(?!\d)", re.I), ("d", "m", "y")),
)


def _dates_in(text: str) -> list[tuple[int, int, dt.date | None]]:
    """Every date written in ``text``: (start, end, date or None when not a real date)."""
    found: list[tuple[int, int, dt.date | None]] = []
    for pattern, order in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(m.start() < e and s < m.end() for s, e, _ in found):
                continue
            parts = dict(zip(order, m.groups()))
            month = _MONTHS[parts["m"].lower()] if parts["m"].isalpha() else int(parts["m"])
            try:
                day: dt.date | None = dt.date(int(parts["y"]), month, int(parts["d"]))
            except ValueError:
                day = None
            found.append((m.start(), m.end(), day))
    return found


def parse_date(text: str) -> dt.date | None:
    """The calendar date an answer states, or ``None``.

    Formats: ``2024-03-06`` (also ``/`` or ``.``), ``March 6, 2024`` / ``Mar 6th 2024``,
    ``6 March 2024`` / ``6th of March, 2024``, and ``03/06/2024`` read as US
    month/day/year. A date inside a short phrase counts ("It is March 6, 2024."); two
    different dates, or an impossible one (``2023-02-30``), give ``None``.
    """
    s = unicodedata.normalize("NFKC", text).translate(_MINUS)
    found = _dates_in(s)
    days = {d for _, _, d in found}
    if len(days) != 1 or None in days:
        return None
    return days.pop()


def parse_date_exact(text: str) -> dt.date | None:
    """A date when ``text`` is nothing but one date (used to recognise gold answers)."""
    s = strip_edges(unicodedata.normalize("NFKC", text).translate(_MINUS))
    found = _dates_in(s)
    if len(found) == 1 and found[0][0] == 0 and found[0][1] == len(s):
        return found[0][2]
    return None


def normalize_text(text: str) -> str:
    """``text`` compared as text: NFKC, case-folded, inner whitespace collapsed, edge quotes,
    markdown and punctuation stripped (:func:`strip_edges`)."""
    s = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(strip_edges(s).split())


#: The words read as a yes/no answer, and the polarity each one gives.
YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}


def polarity(text: str) -> str | None:
    """``"yes"``/``"no"`` from the first word of an answer (``True``/``False`` count too)."""
    m = re.match(r"[a-z]+", strip_edges(normalize_text(text)))
    return YES_NO.get(m.group()) if m else None


def answer_key(text: str | None) -> str | None:
    """One normal form per answer, for voting among samples: a yes/no by its first word,
    a date as ISO, a number canonically (``"5."``, ``"5 apples"`` and ``"$5"`` are all
    ``"5"``), other text case- and space-folded without edge punctuation."""
    if text is None:
        return None
    polar = polarity(text)
    if polar is not None:
        return polar
    day = parse_date(text)
    if day is not None:
        return day.isoformat()
    number = parse_number(text)
    if number is not None:
        try:
            return canonical_number(repr(number))
        except ValueError:
            pass
    return normalize_text(text) or None
