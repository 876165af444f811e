"""Features of an answer: what a cascade scorer reads to judge whether a reply is right.

Once the cheap arm has answered, its reply says a lot about whether it is right: an
answer was found or not, its form (a whole number where one is expected, or 10.67
eggs), how long and how hesitant the reasoning is, and — for arithmetic word problems —
whether the reply's own arithmetic holds. :func:`answer_features` turns
``(question, reply, answer type)`` into named numbers (:data:`ANSWER_FEATURES`);
:func:`feature_vector` appends the question's features
(:func:`effreason_agents.core.features.question_vector`, named ``question_*``) and the
attempt's uncertainty signals (:data:`SIGNAL_FEATURES`, ``NaN`` where the attempt has
none) in :func:`feature_names` order. Cascade scorers
(:mod:`effreason_agents.adapters.scorer`) are fitted on these vectors and read them at
run time.

The reply's features, all floats (counts enter as ``ln(1 + count)`` where marked *log*):

* extraction (:func:`effreason_agents.core.prompts.parse_answer`): ``answer_found``;
  ``method_separator`` / ``method_answer_is`` / ``method_last_number`` /
  ``method_text`` (how it was read); ``answer_chars`` (*log*);
* the answer's form (:func:`effreason_agents.core.answers.parse_number`):
  ``answer_numeric``, ``answer_integer``, ``answer_decimal``, ``answer_fraction``,
  ``answer_negative``, ``answer_zero``, ``answer_percent``, ``answer_magnitude``
  (``log10(1 + |x|)``), ``answer_digits`` (digits written), ``answer_decimals``
  (digits after the point); ``answer_type_match`` (1 when the form fits the expected
  ``answer_type``: a number for ``number``, yes/no for ``yesno``, a letter for
  ``choice``, anything for ``text``);
* shape: ``reply_chars``, ``reply_words``, ``reply_lines`` (*log*), ``steps`` (*log*:
  non-empty lines before the final answer), ``sentences`` (*log*), ``repeated_lines``
  (share of non-empty lines that repeat an earlier one), ``ends_abruptly`` (no final
  answer marker and the text stops without closing punctuation: cut off);
* markers: ``separator`` (a ``####`` is present), ``separators`` (*log*: how many),
  ``final_marker`` (an "answer is" / "final answer" / "therefore" phrase);
* hedging: ``hedges`` (*log*: "approximately", "assume", "I think", "not sure",
  "probably", …), ``corrections`` (*log*: "however", "wait", "actually", "mistake", …),
  ``refusals`` (*log*: "cannot", "not possible", "not enough information", …);
* consistency of the final number: ``final_seen_before`` (it appears earlier in the
  reply), ``final_is_result`` (it is the result of the reply's last equation or
  calculator annotation), ``final_in_question`` (it is one of the question's own
  numbers), ``question_numbers_used`` (share of the question's distinct numbers that
  the reply mentions), ``new_numbers`` (*log*: numbers in the reply that are neither
  in the question nor results of its equations);
* arithmetic (:func:`arithmetic_checks`): ``calc_total``, ``calc_wrong`` (*log*:
  GSM8K calculator annotations ``<<expr=result>>`` and those whose result is wrong),
  ``eq_total``, ``eq_wrong`` (*log*: plain equations ``a op b = c`` and the wrong
  ones), ``calc_rounded`` (*log*: results that are right only after rounding),
  ``arith_any_wrong`` (1 when any check failed), ``arith_wrong_share`` (wrong checks
  over all checks; 0 without any), ``results_fractional`` (share of the checked
  results that are not whole numbers: 46.67 rats).

Expressions are evaluated by :func:`safe_eval`: parsed with :mod:`ast`, numbers and
``+ - * / **`` (and unary signs) only, with bounds on sizes and exponents; anything
else is not evaluated (and not counted). Nothing here runs code from the text.
"""

from __future__ import annotations

import ast
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from effreason_agents.core.answers import parse_number, polarity
from effreason_agents.core.features import QUESTION_FEATURES, question_vector
from effreason_agents.core.prompts import SEPARATOR, parse_answer

__all__ = [
    "ANSWER_FEATURES",
    "ANSWER_TYPES",
    "FEATURES_VERSION",
    "QUESTION_PREFIX",
    "SIGNAL_FEATURES",
    "arithmetic_checks",
    "answer_features",
    "feature_names",
    "feature_vector",
    "safe_eval",
]

#: The version of these features: a scorer fitted on another version is refused.
FEATURES_VERSION = 1

#: The answer types :func:`answer_features` knows (the strategies' few-shot types).
ANSWER_TYPES: tuple[str, ...] = ("number", "choice", "yesno", "date", "text")

#: Names of :func:`answer_features`, in vector order.
ANSWER_FEATURES: tuple[str, ...] = (
    "answer_found", "method_separator", "method_answer_is", "method_last_number", "method_text", "answer_chars",
    "answer_numeric", "answer_integer", "answer_decimal", "answer_fraction", "answer_negative", "answer_zero",
    "answer_percent", "answer_magnitude", "answer_digits", "answer_decimals", "answer_type_match",
    "reply_chars", "reply_words", "reply_lines", "steps", "sentences", "repeated_lines", "ends_abruptly",
    "separator", "separators", "final_marker",
    "hedges", "corrections", "refusals",
    "final_seen_before", "final_is_result", "final_in_question", "question_numbers_used", "new_numbers",
    "calc_total", "calc_wrong", "eq_total", "eq_wrong", "calc_rounded", "arith_any_wrong", "arith_wrong_share",
    "results_fractional",
)

#: The attempt's uncertainty signals (:mod:`effreason_agents.core.confidence`) a scorer may
#: use when the logged attempts carry them; ``NaN`` in the vector where one is missing.
SIGNAL_FEATURES: tuple[str, ...] = (
    "answer_mean_logprob", "answer_min_logprob", "output_mean_logprob", "output_min_logprob",
    "answer_mean_entropy", "answer_max_entropy", "answer_min_margin", "output_mean_entropy",
    "length_ratio", "truncated", "agreement_share", "distinct_answers", "self_verify",
)

#: Prefix of the question features in :func:`feature_names`.
QUESTION_PREFIX = "question_"

_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u00f7": "/", "\u22c5": "*"})
_NUM = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?|(?<![\w.])-?\.\d+")
_CALC = re.compile(r"<<([^<>=]{1,200})=([^<>]{1,60})>>([-$\d.,]*)")
_HEDGES = re.compile(
    r"\b(?:approximately|approx|roughly|around|about|estimate[ds]?|assum(?:e|es|ed|ing|ption)|i think|i believe|"
    r"not sure|unsure|probably|perhaps|maybe|might|likely|seems?|guess)\b",
    re.I,
)
_CORRECTIONS = re.compile(
    r"\b(?:however|wait|actually|mistake|oops|sorry|correction|re-?evaluate|reconsider|let me re|let's re|"
    r"on second thought|instead|incorrect|wrong)\b",
    re.I,
)
_REFUSALS = re.compile(
    r"\b(?:cannot|can't|can not|unable|impossible|not possible|not enough information|insufficient|"
    r"no way to|undefined|does not make sense|doesn't make sense|not specified|not given)\b",
    re.I,
)
_FINAL_MARKER = re.compile(r"\b(?:answer is|final answer|the answer:|therefore|thus|so the answer|in total)\b", re.I)
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_CHOICE = re.compile(r"^\(?[A-Ea-e]\)?$")

# Equations written in text: the left side is a run of numbers and operators ending at "=".
_EQ_LHS_CHARS = r"[\d\s.,$%()+\-*/^xX\u00d7\u00f7\\]"
# The right side is read by a lookahead, so that in a chain ``a + b = c + d = e`` the
# right side of one equation is the left side of the next.
_EQ = re.compile(rf"({_EQ_LHS_CHARS}{{3,160}}?)=(?=({_EQ_LHS_CHARS}{{1,160}}))")
_CLAUSE = re.compile(r"[.,;:](?:\s|$)")  # a sentence or list break inside a run of numbers
_TIMES_X = re.compile(r"(?<=[\d)%])\s*[xX]\s*(?=[$(\d.])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")

_MAX_POW = 64
_MAX_ABS = 1e15
_REL_TOL = 1e-6


# -- safe arithmetic --------------------------------------------------------------------


class _Unsafe(Exception):
    """An expression :func:`safe_eval` refuses to evaluate (a name, a call, a huge power)."""


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval_node(node.operand)
        return v if isinstance(node.op, ast.UAdd) else -v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
        a, b = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Add):
            r = a + b
        elif isinstance(node.op, ast.Sub):
            r = a - b
        elif isinstance(node.op, ast.Mult):
            r = a * b
        elif isinstance(node.op, ast.Div):
            if b == 0:
                raise _Unsafe("division by zero")
            r = a / b
        else:
            if abs(b) > _MAX_POW or (abs(a) > 1e6 and b > 1):
                raise _Unsafe("power too large")
            if a < 0 and not float(b).is_integer():
                raise _Unsafe("complex power")
            r = a ** b
        if not math.isfinite(r) or abs(r) > _MAX_ABS:
            raise _Unsafe("out of range")
        return float(r)
    raise _Unsafe(type(node).__name__)


def safe_eval(expr: str) -> float | None:
    """The value of an arithmetic expression, or ``None`` when it is not one.

    Accepts numbers (thousands commas, ``$`` and a ``%`` suffix, read as ``/100``),
    parentheses, ``+ - * / **`` (also ``^``, ``×``, ``÷``, ``x`` between numbers and
    markdown's ``\\*``) and unary signs. Parsed with :mod:`ast`; any other syntax, a
    division by zero, an exponent above 64 or a value beyond 1e15 gives ``None``.
    """
    s = _normalize_expr(expr)
    if s is None:
        return None
    try:
        tree = ast.parse(s, mode="eval")
        return _eval_node(tree)
    except (SyntaxError, ValueError, _Unsafe, RecursionError, OverflowError, MemoryError):
        return None


def _normalize_expr(expr: str, percent: bool = True) -> str | None:
    s = unicodedata.normalize("NFKC", expr).translate(_MINUS)
    s = s.replace("\\*", "*").replace("^", "**").replace("$", "")
    s = _TIMES_X.sub("*", s)
    s = _THOUSANDS.sub("", s)
    s = _PERCENT.sub(r"(\1/100)" if percent else r"\1", s)
    s = s.strip()
    if not s or len(s) > 200 or not re.fullmatch(r"[\d\s.()+\-*/]+", s):
        return None
    return s


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= max(tol, _REL_TOL * max(abs(a), abs(b)))


def _decimals(text: str) -> int:
    t = text.strip().rstrip(".")
    return len(t.split(".", 1)[1]) if "." in t else 0


def _agrees(value: float, shown: float, shown_text: str) -> str:
    """``"right"`` when ``shown`` is ``value``; ``"rounded"`` when it is ``value`` rounded to
    the decimals written (at most 4); ``"wrong"`` otherwise."""
    if _close(value, shown, 1e-9):
        return "right"
    d = _decimals(shown_text)
    if d <= 4 and abs(value - shown) <= 0.5 * 10.0 ** (-d) + 1e-9:
        return "rounded"
    return "wrong"


def _values(expr: str) -> list[float]:
    """The values of ``expr``: one, or two when it holds a ``%`` (read as ``/100`` and as
    a plain number); none when it is not an arithmetic expression."""
    out = []
    for percent in ((True, False) if "%" in expr else (True,)):
        s = _normalize_expr(expr, percent)
        if s is None:
            continue
        try:
            out.append(_eval_node(ast.parse(s, mode="eval")))
        except (SyntaxError, ValueError, _Unsafe, RecursionError, OverflowError, MemoryError):
            continue
    return out


def _judge(lhs: str, rhs: str) -> tuple[str, float] | None:
    """The verdict on ``lhs = rhs`` — ``"right"``, ``"rounded"`` or ``"wrong"``, the kindest
    reading of a ``%`` standing — and the right side's value; ``None`` when either side
    is not arithmetic. A plain number on the right may be the left's value rounded to the
    decimals it is written with; an expression must agree within 0.5%."""
    left, right = _values(lhs), _values(rhs)
    if not left or not right:
        return None
    plain = _number(rhs) is not None
    best = "wrong"
    for v in left:
        for w in right:
            if plain:
                verdict = _agrees(v, w, rhs)
            elif _close(v, w, 1e-9):
                verdict = "right"
            elif abs(v - w) <= 0.005 * max(1.0, abs(v)):
                verdict = "rounded"
            else:
                verdict = "wrong"
            best = min(best, verdict, key=("right", "rounded", "wrong").index)
    return best, right[0]


def _trim_rhs(rhs: str) -> str | None:
    """The right side of an equation up to where the text goes on in words; ``None`` when
    it ends in an operator (``= 40 * Total``: the right side is not all numbers)."""
    s = _CLAUSE.split(rhs)[0].rstrip()
    if not s or s[-1] in "+-*/xX\u00d7\u00f7\\^(":
        return None
    s = s.rstrip(".,;: ")
    while s.count(")") > s.count("(") and s.endswith(")"):
        s = s[:-1].rstrip()
    s = s.lstrip(" $")
    return s or None


def _number(text: str) -> float | None:
    t = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        v = float(t)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _trim_lhs(lhs: str) -> str:
    """The left side of an equation without the punctuation the scan picked up before it
    (a sentence's full stop, a list comma, a dangling operator) and unbalanced parentheses."""
    lhs = _CLAUSE.split(lhs)[-1]
    s = re.sub(r"^(?:[\s.,)+*/%=xX\u00d7\u00f7\\]|-(?=\s))+", "", lhs).rstrip()
    while s.count("(") > s.count(")") and s.startswith("("):
        s = s[1:].lstrip()
    while s.count(")") > s.count("(") and s.endswith(")"):
        s = s[:-1].rstrip()
    return s


def _has_operator(lhs: str) -> bool:
    """A left side worth checking: at least two numbers joined by an operator."""
    body = _normalize_expr(lhs)
    if body is None:
        return False
    return len(re.findall(r"\d+(?:\.\d+)?", body)) >= 2 and re.search(r"\d\s*\)?\s*[-+*/]", body) is not None


def arithmetic_checks(text: str) -> dict[str, Any]:
    """Check the arithmetic written in ``text``.

    * GSM8K calculator annotations ``<<expr=result>>``: ``expr`` evaluated by
      :func:`safe_eval` and compared with ``result`` (and with the number written right
      after ``>>``, when there is one);
    * plain equations ``a op b [op c …] = c`` outside annotations: the numbers and
      operators right before an ``=`` against those right after it (a number, or an
      expression as in ``22 + 4 x 12 = 22 + 48 = 70``, where each ``=`` is checked).

    Returns ``{"calc_total", "calc_wrong", "eq_total", "eq_wrong", "rounded",
    "results"}``: counts of checked annotations and equations, of wrong ones, of results
    right only after rounding, and the right-hand values in order of appearance (for
    :func:`answer_features`). Equal means within a relative 1e-6; a result that is the
    value rounded to the decimals it is written with (``10.67`` for ``16*2/3``, ``47`` for
    ``140/3``) counts as rounded, not wrong.
    """
    calc_total = calc_wrong = eq_total = eq_wrong = rounded = 0
    results: list[tuple[int, float]] = []
    spans: list[tuple[int, int]] = []
    for m in _CALC.finditer(text):
        spans.append((m.start(), m.end(2) + 2))  # the <<…>> part; the number after it stays
        lhs, shown_text = _trim_lhs(m.group(1)), m.group(2)
        if not _has_operator(lhs):
            continue
        shown = _number(shown_text)
        judged = _judge(lhs, shown_text) if shown is not None else None
        if judged is None or shown is None:
            continue
        verdict = judged[0]
        calc_total += 1
        results.append((m.start(), shown))
        after_text = m.group(3).strip().rstrip(".,")
        after = _number(after_text) if after_text else None
        if after is not None and verdict != "wrong":
            # the number written after the annotation is what the reader sees: <<2*3=6>>7 is wrong
            seen = _agrees(shown, after, after_text)
            verdict = "wrong" if seen == "wrong" else ("rounded" if "rounded" in (seen, verdict) else "right")
        if verdict == "wrong":
            calc_wrong += 1
        elif verdict == "rounded":
            rounded += 1
    plain = text
    for a, b in reversed(spans):  # annotations end an equation run (they were checked above); offsets kept
        plain = plain[:a] + "|" * (b - a) + plain[b:]
    for m in _EQ.finditer(plain):
        lhs = _trim_lhs(m.group(1))
        if not _has_operator(lhs):
            continue
        rhs = _trim_rhs(m.group(2))
        judged = _judge(lhs, rhs) if rhs is not None else None
        if judged is None:
            continue
        verdict, value = judged
        eq_total += 1
        results.append((m.start(2), value))
        if verdict == "wrong":
            eq_wrong += 1
        elif verdict == "rounded":
            rounded += 1
    results.sort()
    return {"calc_total": calc_total, "calc_wrong": calc_wrong, "eq_total": eq_total, "eq_wrong": eq_wrong,
            "rounded": rounded, "results": [v for _, v in results]}


# -- features -----------------------------------------------------------------------------


def _numbers(text: str) -> list[tuple[int, float]]:
    out = []
    for m in _NUM.finditer(text):
        v = _number(m.group())
        if v is not None:
            out.append((m.start(), v))
    return out


def _log(x: float) -> float:
    return math.log1p(max(0.0, float(x)))


def _same(a: float, b: float) -> bool:
    return _close(a, b, 1e-9)


def _type_match(answer: str | None, value: float | None, answer_type: str) -> float:
    if answer is None:
        return 0.0
    if answer_type == "number":
        return 1.0 if value is not None else 0.0
    if answer_type == "yesno":
        return 1.0 if polarity(answer) is not None else 0.0
    if answer_type == "choice":
        return 1.0 if _CHOICE.match(answer.strip()) else 0.0
    if answer_type == "date":
        return 1.0 if re.search(r"\d", answer) else 0.0
    return 1.0


def answer_features(question: str, reply: str, answer_type: str | None = None) -> dict[str, float]:
    """The :data:`ANSWER_FEATURES` of ``reply`` (the cheap arm's full text) to ``question``.

    ``answer_type`` is one of :data:`ANSWER_TYPES` (``None``: ``"number"``); it only
    changes ``answer_type_match``. Pure and deterministic; every value is a finite float.
    """
    kind = answer_type if answer_type in ANSWER_TYPES else "number"
    text = unicodedata.normalize("NFKC", reply or "").translate(_MINUS)
    f: dict[str, float] = {name: 0.0 for name in ANSWER_FEATURES}

    parsed = parse_answer(text)
    answer = parsed.answer
    value = parse_number(answer) if answer is not None else None
    f["answer_found"] = 1.0 if answer is not None else 0.0
    f["method_separator"] = 1.0 if parsed.method == "separator" else 0.0
    f["method_answer_is"] = 1.0 if parsed.method == "answer-is" else 0.0
    f["method_last_number"] = 1.0 if parsed.method == "last-number" else 0.0
    f["method_text"] = 1.0 if parsed.method == "text" else 0.0
    f["answer_chars"] = _log(len(answer or ""))
    if value is not None:
        written = answer or ""
        digits = re.sub(r"\D", "", written.split(".")[0]) if written else ""
        decimals = written.split(".", 1)[1] if "." in written else ""
        f["answer_numeric"] = 1.0
        f["answer_integer"] = 1.0 if float(value).is_integer() else 0.0
        f["answer_decimal"] = 1.0 if not float(value).is_integer() else 0.0
        f["answer_fraction"] = 1.0 if "/" in written else 0.0
        f["answer_negative"] = 1.0 if value < 0 else 0.0
        f["answer_zero"] = 1.0 if value == 0 else 0.0
        f["answer_percent"] = 1.0 if "%" in written else 0.0
        f["answer_magnitude"] = math.log10(1.0 + min(abs(value), _MAX_ABS))
        f["answer_digits"] = float(len(digits))
        f["answer_decimals"] = float(len(re.sub(r"\D", "", decimals)))
    f["answer_type_match"] = _type_match(answer, value, kind)

    stripped = text.strip()
    lines = [ln.strip() for ln in stripped.splitlines() if ln.strip()]
    f["reply_chars"] = _log(len(stripped))
    f["reply_words"] = _log(len(stripped.split()))
    f["reply_lines"] = _log(len(lines))
    marker_line = next((i for i in range(len(lines) - 1, -1, -1) if SEPARATOR in lines[i]), None)
    f["steps"] = _log(marker_line if marker_line is not None else max(0, len(lines) - 1))
    f["sentences"] = _log(len(_SENTENCE_END.findall(stripped)) or (1 if stripped else 0))
    if lines:
        seen: set[str] = set()
        repeats = 0
        for ln in lines:
            if ln in seen:
                repeats += 1
            seen.add(ln)
        f["repeated_lines"] = repeats / len(lines)
    separators = text.count(SEPARATOR)
    f["separator"] = 1.0 if separators else 0.0
    f["separators"] = _log(separators)
    has_marker = bool(_FINAL_MARKER.search(text))
    f["final_marker"] = 1.0 if has_marker else 0.0
    if stripped and not separators and not has_marker and stripped[-1] not in ".!?)]}\"'*`":
        f["ends_abruptly"] = 1.0
    f["hedges"] = _log(len(_HEDGES.findall(text)))
    f["corrections"] = _log(len(_CORRECTIONS.findall(text)))
    f["refusals"] = _log(len(_REFUSALS.findall(text)))

    arith = arithmetic_checks(text)
    checks = arith["calc_total"] + arith["eq_total"]
    wrong = arith["calc_wrong"] + arith["eq_wrong"]
    f["calc_total"] = _log(arith["calc_total"])
    f["calc_wrong"] = _log(arith["calc_wrong"])
    f["eq_total"] = _log(arith["eq_total"])
    f["eq_wrong"] = _log(arith["eq_wrong"])
    f["calc_rounded"] = _log(arith["rounded"])
    f["arith_any_wrong"] = 1.0 if wrong else 0.0
    f["arith_wrong_share"] = wrong / checks if checks else 0.0
    results = arith["results"]
    if results:
        f["results_fractional"] = sum(1 for v in results if not float(v).is_integer()) / len(results)

    q_nums = {v for _, v in _numbers(unicodedata.normalize("NFKC", question or "").translate(_MINUS))}
    r_nums = _numbers(text)
    if value is not None:
        cut = parsed.span[0] if parsed.span is not None else len(text)
        before = [v for pos, v in r_nums if pos < cut]
        f["final_seen_before"] = 1.0 if any(_same(v, value) for v in before) else 0.0
        f["final_is_result"] = 1.0 if results and _same(results[-1], value) else 0.0
        f["final_in_question"] = 1.0 if any(_same(v, value) for v in q_nums) else 0.0
    if q_nums:
        mentioned = {v for _, v in r_nums}
        f["question_numbers_used"] = sum(1 for v in q_nums if any(_same(v, w) for w in mentioned)) / len(q_nums)
    known = list(q_nums) + list(results)
    fresh = {v for _, v in r_nums if not any(_same(v, k) for k in known)}
    if value is not None:
        fresh = {v for v in fresh if not _same(v, value)}
    f["new_numbers"] = _log(len(fresh))
    return f


def feature_names(signals: Sequence[str] = SIGNAL_FEATURES) -> list[str]:
    """The names of :func:`feature_vector`'s entries: :data:`ANSWER_FEATURES`, the
    question features as ``question_<name>``
    (:data:`~effreason_agents.core.features.QUESTION_FEATURES`), then ``signals``."""
    return [*ANSWER_FEATURES, *(QUESTION_PREFIX + q for q in QUESTION_FEATURES), *signals]


def _signal(value: Any) -> float:
    if value is None or isinstance(value, (bool, str)):
        return float(value) if isinstance(value, bool) else math.nan
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def feature_vector(
    question: str,
    reply: str,
    signals: Mapping[str, Any] | None = None,
    *,
    answer_type: str | None = None,
    signal_names: Sequence[str] = SIGNAL_FEATURES,
) -> np.ndarray:
    """:func:`answer_features`, the question's features and ``signals`` (the attempt's
    uncertainty signals by name) as one float64 vector in :func:`feature_names` order.
    A signal that is missing, ``None`` or not a finite number is ``NaN``; every other
    entry is finite."""
    f = answer_features(question, reply, answer_type)
    sig = signals or {}
    vals = [f[name] for name in ANSWER_FEATURES]
    vals.extend(question_vector(question or " ").tolist())
    vals.extend(_signal(sig.get(name)) for name in signal_names)
    return np.asarray(vals, dtype=np.float64)
