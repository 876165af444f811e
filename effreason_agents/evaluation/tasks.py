"""Task suites with exact answers: built-in generators, dataset loaders and answer checking.

Every claim this project makes ("fewer tokens at the same accuracy") is measured on
items whose gold answer is exact, graded the way the field grades them:

* :func:`builtin_suite` / :func:`load_suite` — seeded, reproducible generated items in
  seven categories (arithmetic, decimal comparison, coin-flip state tracking,
  last-letter concatenation, date arithmetic, short word problems, multiple choice),
  each at three difficulties. Nothing is downloaded.
* :func:`load_dataset` — your own items: GSM8K-style JSONL (gold after ``####``),
  multiple-choice JSONL or CSV, or generic JSONL/CSV (``question``, ``answer``,
  optional ``type``). Malformed lines are reported with file and line number.
* :func:`check_answer` — is a predicted answer (as read from a reply by
  :func:`effreason_agents.core.prompts.parse_answer`) equal to the gold answer, per
  answer type: numbers compare numerically, choices by letter (or option text),
  yes/no by polarity, dates as calendar dates, text after normalization.

Example::

    from effreason_agents.evaluation.tasks import load_suite, check_answer

    items = load_suite("builtin", limit=30)          # every category, all difficulties
    check_answer("1,000", items[0])                    # -> bool
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import random
import re
import unicodedata
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from effreason_agents.core.answers import (
    YES_NO,
    answer_key,
    canonical_number,
    normalize_text,
    parse_date,
    parse_date_exact,
    parse_number,
    polarity,
    strip_edges,
)
from effreason_agents.core.prompts import ANSWER_TYPES
from effreason_agents.errors import DatasetError

__all__ = [
    "ANSWER_TYPES",
    "CATEGORIES",
    "DATASET_FORMATS",
    "SUITES",
    "DatasetError",
    "DatasetWarning",
    "TaskItem",
    "answer_key",
    "builtin_suite",
    "canonical_number",
    "check_answer",
    "format_choices",
    "load_dataset",
    "load_suite",
    "parse_date",
    "parse_number",
]

#: One of :data:`~effreason_agents.core.prompts.ANSWER_TYPES` (the prompts pick few-shot examples by it).
AnswerType = Literal["number", "choice", "yesno", "date", "text"]
Difficulty = Literal["easy", "medium", "hard"]

DIFFICULTIES: tuple[Difficulty, ...] = ("easy", "medium", "hard")
#: Option letters; a multiple-choice item has 2 to 10 options.
LETTERS = "ABCDEFGHIJ"


class DatasetWarning(UserWarning):
    """A malformed dataset line was skipped (``on_error="skip"``); the message names file:line."""


# ---------------------------------------------------------------------------------------
# TaskItem
# ---------------------------------------------------------------------------------------


def format_choices(question: str, choices: Sequence[str]) -> str:
    """``question`` followed by one ``"A) option"`` line per option (unless it already lists them)."""
    lines = [f"{LETTERS[i]}) {c}" for i, c in enumerate(choices)]
    if all(re.search(rf"(?m)^\s*{re.escape(line)}\s*$", question) for line in lines):
        return question
    return question.rstrip() + "\n" + "\n".join(lines)


class TaskItem(BaseModel):
    """One graded question.

    ``answer`` is the gold answer in canonical form, checked and normalized on creation:
    ``number`` → ``"1000"``, ``"0.5"``; ``choice`` → one capital letter; ``yesno`` →
    ``"yes"``/``"no"``; ``date`` → ``YYYY-MM-DD``; ``text`` → the text as given.
    For ``choice`` items, ``choices`` holds the option texts and the question already lists
    them as ``"A) ..."`` lines (see :func:`format_choices`).
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    question: str
    answer: str
    type: AnswerType
    difficulty: Difficulty
    category: str
    choices: list[str] | None = None

    @field_validator("id", "question", "answer", "category")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _canonical_gold(self) -> TaskItem:
        self.answer = _canonical_gold(self.answer, self.type, self.choices)
        if self.choices is not None:
            if self.type != "choice":
                raise ValueError(f"choices are only allowed on choice items, not {self.type!r}")
            if not 2 <= len(self.choices) <= len(LETTERS):
                raise ValueError(f"a choice item needs 2 to {len(LETTERS)} options, got {len(self.choices)}")
            if any(not c.strip() for c in self.choices):
                raise ValueError("options must not be empty")
            missing = [
                LETTERS[i] for i, c in enumerate(self.choices)
                if not re.search(rf"(?m)^\s*{LETTERS[i]}\) {re.escape(c)}\s*$", self.question)
            ]
            if missing:
                raise ValueError(f"the question must list the options as 'A) ...' lines; missing {', '.join(missing)}")
        return self


def _canonical_gold(answer: str, type_: str, choices: Sequence[str] | None) -> str:
    """The gold ``answer`` in canonical form for ``type_``; ``ValueError`` says why it is not valid."""
    a = answer.strip()
    if type_ == "number":
        return canonical_number(a)
    if type_ == "choice":
        letter = strip_edges(a).upper()
        n = len(choices) if choices is not None else len(LETTERS)
        if len(letter) != 1 or letter not in LETTERS[:n]:
            raise ValueError(f"choice answer must be one letter {LETTERS[0]}-{LETTERS[n - 1]}, got {answer!r}")
        return letter
    if type_ == "yesno":
        polar = YES_NO.get(normalize_text(a))
        if polar is None:
            raise ValueError(f"yes/no answer must be 'yes' or 'no', got {answer!r}")
        return polar
    if type_ == "date":
        day = parse_date_exact(a)
        if day is None:
            raise ValueError(f"date answer must be a date such as 2024-03-06, got {answer!r}")
        return day.isoformat()
    return a


# ---------------------------------------------------------------------------------------
# Answer checking
# ---------------------------------------------------------------------------------------

_REL_TOL = 1e-6
_ABS_TOL = 1e-9
_CHOICE_RE = re.compile(
    r"(?:(?:the\s+)?(?:correct\s+)?(?:option|answer|choice)(?:\s+is)?\s*[:\-]?\s*)?"
    r"([(\[]?)([a-z])([)\].:]?)(?:\s+(.*))?",
    re.I | re.S,
)


def _numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def _same_option_text(predicted: str, option: str) -> bool:
    p, o = normalize_text(predicted), normalize_text(option)
    if p == o:
        return True
    pn, on = _full_number(predicted), _full_number(option)
    return pn is not None and on is not None and _numbers_equal(pn, on)


def _full_number(text: str) -> float | None:
    try:
        return float(canonical_number(text.strip(" \t\r\n\"'`“”‘’*_")))
    except ValueError:
        return None


def _choice_letter(predicted: str, choices: Sequence[str] | None) -> str | None:
    """The option letter an answer names (``"B"``, ``"B)"``, ``"(b)"``, ``"Option B"``,
    ``"B) 42"``), or ``None``. A lowercase letter followed by more words (``"a dog"``) is not a
    letter; neither is a letter whose trailing text is another option's text."""
    m = _CHOICE_RE.fullmatch(strip_edges(unicodedata.normalize("NFKC", predicted)))
    if not m:
        return None
    opening, letter, closing, rest = m.group(1), m.group(2), m.group(3), (m.group(4) or "").strip()
    prefixed = m.start(1) > 0
    if opening and closing not in (")", "]"):
        return None
    upper = letter.upper()
    if rest:
        if not (opening or closing or prefixed) and not letter.isupper():
            return None  # "a dog" is not option A
        if choices is not None:
            i = LETTERS.find(upper)
            own = choices[i] if 0 <= i < len(choices) else None
            if not (opening or closing or prefixed) and (own is None or not _same_option_text(rest, own)):
                return None
            if any(_same_option_text(rest, c) for j, c in enumerate(choices) if j != i) and not (
                own is not None and _same_option_text(rest, own)
            ):
                return None
    return upper


def check_answer(predicted: str | None, item: TaskItem) -> bool:
    """Whether ``predicted`` is the gold answer of ``item``.

    * ``number`` — numeric compare (relative tolerance 1e-6, absolute 1e-9) after reading
      the number with :func:`parse_number`: ``"1,000"``, ``"$5"``, ``"5.0"``, ``"5%"``,
      ``"5."``, ``"-3"``, ``".5"``, ``"3/4"``, ``"5 apples"``.
    * ``choice`` — the letter: ``"B"``, ``"B)"``, ``"(B)"``, ``"b."``, ``"Option B"``,
      ``"B) 42"``; or, when the item has ``choices``, the gold option's text (``"42"``),
      since :func:`~effreason_agents.core.prompts.parse_answer` turns ``"B) 42"`` into ``"42"``.
    * ``yesno`` — the first word: ``"Yes."``, ``"yes, it is"``, ``"no."``. ``"True"`` and
      ``"False"`` count as yes and no (models answer yes/no questions as booleans). Anything
      else, e.g. ``"heads up"``, is wrong.
    * ``date`` — the same calendar day, formats as in :func:`parse_date` (``03/06/2024`` is
      US month/day).
    * ``text`` — equal after Unicode normalization, case folding, collapsing whitespace and
      stripping surrounding quotes, markdown and punctuation.

    ``None`` or an empty prediction is wrong.
    """
    if predicted is None:
        return False
    pred = predicted if isinstance(predicted, str) else str(predicted)
    if not pred.strip():
        return False
    t = item.type
    if t == "number":
        value = parse_number(pred)
        return value is not None and _numbers_equal(value, float(item.answer))
    if t == "choice":
        letter = _choice_letter(pred, item.choices)
        if letter is not None:
            return letter == item.answer
        if item.choices is not None:
            gold = item.choices[LETTERS.index(item.answer)]
            return _same_option_text(pred, gold)
        return False
    if t == "yesno":
        return polarity(pred) == item.answer
    if t == "date":
        day = parse_date(pred)
        return day is not None and day.isoformat() == item.answer
    return normalize_text(pred) == normalize_text(item.answer) != ""


# ---------------------------------------------------------------------------------------
# The built-in generator
# ---------------------------------------------------------------------------------------

#: Built-in categories in suite order, with the short name used in item ids and the answer type.
CATEGORIES: dict[str, tuple[str, AnswerType]] = {
    "arithmetic": ("arith", "number"),
    "decimal": ("decimal", "number"),
    "coin": ("coin", "yesno"),
    "letters": ("letters", "text"),
    "dates": ("date", "date"),
    "word": ("word", "number"),
    "choice": ("choice", "choice"),
}
PER_CATEGORY = 30

_NAMES = (
    "Ann", "Bob", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kofi", "Lena",
    "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Ximena",
    "Yusuf", "Zoe",
)
_WORDS = (
    "Elon", "Musk", "Larry", "Page", "Grace", "Hopper", "Ada", "Lovelace", "Alan", "Turing", "Marie",
    "Curie", "Nikola", "Tesla", "Frida", "Kahlo", "Pablo", "Picasso", "Jane", "Austen", "Oscar", "Wilde",
    "Rosa", "Parks", "Isaac", "Newton", "Maya", "Angelou", "Tim", "Berners", "Carl", "Sagan", "Greta",
    "Garbo", "Dolly", "Parton", "Bruce", "Lee", "Sofia", "Loren", "Amelia", "Earhart", "Kenji", "Watanabe",
    "Nelson", "Mandela", "Serena", "Williams",
)
_OBJECTS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards", "eggs", "books")

Generated = tuple[str, str, list[str] | None]


def _gen_arithmetic(rng: random.Random, level: Difficulty) -> Generated:
    if level == "easy":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if rng.random() < 0.5:
            return f"What is {a} + {b}?", str(a + b), None
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", str(a - b), None
    if level == "medium":
        if rng.random() < 0.5:
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            return f"What is {a} + {b}?", str(a + b), None
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        return f"What is {a} * {b}?", str(a * b), None
    expr, value = _hard_expression(rng)
    return f"What is {expr}?", str(value), None


def _hard_expression(rng: random.Random) -> tuple[str, int]:
    a, b, c, d = (rng.randint(2, 20) for _ in range(4))
    form = rng.randrange(5)
    if form == 0:
        return f"({a} + {b}) * {c} - {d}", (a + b) * c - d
    if form == 1:
        return f"{a} * {b} + {c} * {d}", a * b + c * d
    if form == 2:
        a, b = max(a, b) + 1, min(a, b)
        return f"({a} - {b}) * ({c} + {d})", (a - b) * (c + d)
    if form == 3:
        return f"{a} + {b} * {c} - {d}", a + b * c - d
    return f"({a} + {b} + {c}) * {d}", (a + b + c) * d


def _gen_decimal(rng: random.Random, level: Difficulty) -> Generated:
    word = rng.choice(("larger", "smaller"))
    if level == "easy":
        i, j = rng.sample(range(0, 20), 2)
        x, y = f"{i}.{rng.randint(1, 9)}", f"{j}.{rng.randint(1, 9)}"
        pair = [x, y]
    elif level == "medium":
        # The classic trap: 9.9 vs 9.11 — more digits is not a larger number.
        i, p = rng.randint(0, 15), rng.randint(2, 9)
        q = rng.choice([q for q in range(11, 100) if q % 10 and q // 10 < p])
        pair = [f"{i}.{p}", f"{i}.{q}"]
        rng.shuffle(pair)
        x, y = pair
    else:
        i = rng.randint(0, 15)
        while True:
            p = rng.randint(1, 9)
            q = rng.randint(11, 99)
            r = rng.randint(101, 999)
            vals = [f"{i}.{p}", f"{i}.{q}", f"{i}.{r}"]
            if q % 10 and r % 10 and len({Decimal(v) for v in vals}) == 3:
                break
        rng.shuffle(vals)
        word = rng.choice(("largest", "smallest"))
        pick = max if word == "largest" else min
        gold = pick(vals, key=Decimal)
        return f"Which number is the {word}: {vals[0]}, {vals[1]} or {vals[2]}?", canonical_number(gold), None
    pick = max if word == "larger" else min
    return f"Which is {word}, {x} or {y}?", canonical_number(pick(pair, key=Decimal)), None


def _gen_coin(rng: random.Random, level: Difficulty) -> Generated:
    n = {"easy": rng.randint(1, 2), "medium": rng.randint(3, 4), "hard": rng.randint(6, 8)}[level]
    people = rng.sample(_NAMES, n)
    flips = 0
    parts = ["A coin is heads up."]
    for name in people:
        if rng.random() < 0.5:
            flips += 1
            parts.append(f"{name} flips the coin.")
        else:
            parts.append(f"{name} does not flip the coin.")
    parts.append("Is the coin still heads up?")
    return " ".join(parts), "yes" if flips % 2 == 0 else "no", None


def _gen_letters(rng: random.Random, level: Difficulty) -> Generated:
    n = {"easy": 2, "medium": 3, "hard": rng.randint(4, 5)}[level]
    words = rng.sample(_WORDS, n)
    phrase = " ".join(words)
    gold = "".join(w[-1] for w in words).lower()
    return f'Take the last letters of the words in "{phrase}" and concatenate them.', gold, None


def _gen_dates(rng: random.Random, level: Difficulty) -> Generated:
    start = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(366 * 31))
    if level == "hard" and rng.random() < 0.4:
        # Around the end of February of a leap year.
        year = rng.choice((2004, 2008, 2012, 2016, 2020, 2024, 2028))
        start = dt.date(year, 2, rng.randint(20, 28))
    direction = "after" if level == "easy" or rng.random() < 0.5 else "before"
    sign = 1 if direction == "after" else -1
    suffix = "Answer as YYYY-MM-DD."
    if level == "easy":
        days = rng.randint(1, 9)
        span = f"{days} day{'s' if days > 1 else ''}"
    elif level == "medium":
        days = rng.randint(10, 60)
        span = f"{days} days"
    elif rng.random() < 0.5:
        weeks, extra = rng.randint(2, 10), rng.randint(1, 6)
        days = 7 * weeks + extra
        span = f"{weeks} weeks and {extra} day{'s' if extra > 1 else ''}"
    else:
        days = rng.randint(100, 500)
        span = f"{days} days"
    gold = start + dt.timedelta(days=sign * days)
    return f"What date is {span} {direction} {start.isoformat()}? {suffix}", gold.isoformat(), None


def _gen_word(rng: random.Random, level: Difficulty) -> Generated:
    n1, n2 = rng.sample(_NAMES, 2)
    obj = rng.choice(_OBJECTS)
    form = rng.randrange(3)
    if level == "easy":
        if form == 0:
            a, b = rng.randint(5, 30), rng.randint(2, 20)
            c = rng.randint(1, a + b - 1)
            q = (f"{n1} has {a} {obj}. {n1} buys {b} more and then gives {c} to {n2}. "
                 f"How many {obj} does {n1} have now?")
            return q, str(a + b - c), None
        if form == 1:
            a, b = rng.randint(5, 40), rng.randint(2, 20)
            c = rng.randint(1, a + b - 1)
            q = (f"There are {a} {obj} in a basket. {n1} puts in {b} more and {n2} takes out {c}. "
                 f"How many {obj} are in the basket now?")
            return q, str(a + b - c), None
        a, b = rng.randint(5, 40), rng.randint(5, 40)
        c = a + b + rng.randint(1, 60)
        q = (f"{n1} reads {a} pages on Monday and {b} pages on Tuesday. The book has {c} pages. "
             f"How many pages are left to read?")
        return q, str(c - a - b), None
    if level == "medium":
        if form == 0:
            a, b = rng.randint(3, 12), rng.randint(2, 9)
            c = rng.randint(1, a * b - 1)
            q = (f"A box holds {a} {obj}. {n1} buys {b} boxes and gives away {c} {obj}. "
                 f"How many {obj} does {n1} have left?")
            return q, str(a * b - c), None
        if form == 1:
            a, b = rng.randint(8, 25), rng.randint(2, 8)
            c = rng.randint(1, a * b - 1)
            q = (f"{n1} earns ${a} per hour and works {b} hours. {n1} spends ${c} on lunch. "
                 f"How many dollars does {n1} have left?")
            return q, str(a * b - c), None
        b, k = rng.randint(2, 8), rng.randint(3, 12)
        c = rng.randint(1, k - 1)
        q = (f"{n1} has {b * k} {obj} and shares them equally among {b} friends. Each friend then loses {c}. "
             f"How many {obj} does each friend have now?")
        return q, str(k - c), None
    if form == 0:
        a, p, b, q_ = rng.randint(2, 6), rng.randint(2, 9), rng.randint(2, 6), rng.randint(1, 5)
        total = a * p + b * q_
        bill = next(x for x in (20, 50, 100) if x > total)
        q = (f"{n1} buys {a} notebooks at ${p} each and {b} pens at ${q_} each. {n1} pays with a ${bill} bill. "
             f"How much change, in dollars, does {n1} get?")
        return q, str(bill - total), None
    if form == 1:
        a, b, c = rng.randint(3, 20), rng.randint(2, 12), rng.randint(1, 6)
        q = (f"A farm has {a} chickens and {b} cows. Each chicken has 2 legs and each cow has 4 legs. "
             f"The farmer buys {c} more cows. How many legs do the animals have in total now?")
        return q, str(2 * a + 4 * (b + c)), None
    a, b = rng.randint(3, 15), 2 * rng.randint(2, 6)
    c = rng.randint(1, a * b // 2 - 1)
    q = (f"{n1} saves ${a} each week for {b} weeks. Then {n1} spends half of the savings on a bike "
         f"and ${c} on a helmet. How many dollars does {n1} have left?")
    return q, str(a * b // 2 - c), None


def _options_around(rng: random.Random, answer: int, extra: Sequence[int] = ()) -> list[str]:
    """Four distinct non-negative options containing ``answer``, shuffled."""
    pool = [x for x in dict.fromkeys(extra) if x != answer and x >= 0]
    while len(pool) < 3:
        x = answer + rng.choice((-3, -2, -1, 1, 2, 3, 10, -10))
        if x >= 0 and x != answer and x not in pool:
            pool.append(x)
    options = [answer, *pool[:3]]
    rng.shuffle(options)
    return [str(o) for o in options]


def _gen_choice(rng: random.Random, level: Difficulty) -> Generated:
    if level == "easy":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        stem, value = f"What is {a} + {b}?", a + b
        options = _options_around(rng, value)
    elif level == "medium" and rng.random() < 0.5:
        i = rng.randint(0, 9)
        digits = [str(rng.randint(1, 9)), f"{rng.randint(1, 9)}{rng.randint(1, 9)}",
                  f"{rng.randint(0, 9)}{rng.randint(1, 9)}", f"{rng.randint(1, 9)}{rng.randint(0, 9)}{rng.randint(1, 9)}"]
        options = list(dict.fromkeys(canonical_number(f"{i}.{d}") for d in digits))
        while len(options) < 4:
            cand = canonical_number(f"{i}.{rng.randint(1, 99)}")
            if cand not in options:
                options.append(cand)
        rng.shuffle(options)
        stem = "Which number is the largest?"
        gold_text = max(options, key=Decimal)
        return _choice_item(stem, options, gold_text)
    elif level == "medium":
        a, b = rng.randint(11, 49), rng.randint(3, 9)
        stem, value = f"What is {a} * {b}?", a * b
        options = _options_around(rng, value, (value + 10, value - 10, (a + 1) * b))
    else:
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(2, 9)
        stem, value = f"What is {a} + {b} * {c}?", a + b * c
        options = _options_around(rng, value, ((a + b) * c, value + c, value - b))
    return _choice_item(stem, options, str(value))


def _choice_item(stem: str, options: list[str], gold_text: str) -> Generated:
    return format_choices(stem, options), LETTERS[options.index(gold_text)], options


_GENERATORS: dict[str, Callable[[random.Random, Difficulty], Generated]] = {
    "arithmetic": _gen_arithmetic,
    "decimal": _gen_decimal,
    "coin": _gen_coin,
    "letters": _gen_letters,
    "dates": _gen_dates,
    "word": _gen_word,
    "choice": _gen_choice,
}


def _category_items(category: str, count: int, seed: int) -> list[TaskItem]:
    """The first ``count`` items of one category's stream (a prefix of any longer one).

    Item ``k`` has difficulty ``DIFFICULTIES[(k + category index) % 3]``, so categories
    start at different difficulties and an interleaved suite mixes them from its first items.
    """
    short, answer_type = CATEGORIES[category]
    offset = list(CATEGORIES).index(category)
    rng = random.Random(f"effreason-builtin/{seed}/{category}")
    prefix = "builtin" if seed == 0 else f"builtin-s{seed}"
    seen: set[str] = set()
    items: list[TaskItem] = []
    for k in range(count):
        level = DIFFICULTIES[(k + offset) % 3]
        for _ in range(50):  # avoid repeats while the pool allows it
            question, answer, choices = _GENERATORS[category](rng, level)
            if question not in seen:
                break
        seen.add(question)
        items.append(
            TaskItem(
                id=f"{prefix}-{short}-{level}-{k:04d}",
                question=question,
                answer=answer,
                type=answer_type,
                difficulty=level,
                category=category,
                choices=choices,
            )
        )
    return items


def _check_n(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise DatasetError(f"the number of items must be a whole number >= 0, got {n!r}")


def builtin_suite(n: int | None = None, seed: int = 0) -> list[TaskItem]:
    """The built-in suite: ``n`` items (default 7 categories × 30 = 210), seeded.

    Categories are interleaved round-robin (arithmetic, decimal, coin, letters, dates, word,
    choice, arithmetic, ...) and difficulties rotate, so any prefix of 7 or more items covers
    every category and any prefix of 3 or more mixes easy, medium and hard. Each category
    has equal shares of the three difficulties.

    Reproducible: the same ``seed`` gives identical items in any process, and
    ``builtin_suite(30)`` is exactly ``builtin_suite()[:30]``. Ids look like
    ``builtin-arith-easy-0007`` (``builtin-s<seed>-...`` for seeds other than 0).
    """
    _check_n(n)
    total = len(CATEGORIES) * PER_CATEGORY if n is None else n
    per = -(-total // len(CATEGORIES))
    streams = [_category_items(c, per, seed) for c in CATEGORIES]
    interleaved = [stream[k] for k in range(per) for stream in streams]
    return interleaved[:total]


def _category_suite(category: str) -> Callable[..., list[TaskItem]]:
    def suite(n: int | None = None, seed: int = 0) -> list[TaskItem]:
        _check_n(n)
        return _category_items(category, PER_CATEGORY if n is None else n, seed)

    suite.__name__ = f"{category}_suite"
    suite.__doc__ = (
        f"The built-in {category!r} items alone: ``n`` items (default {PER_CATEGORY}), the same "
        "items (and ids) that :func:`builtin_suite` interleaves."
    )
    return suite


#: Named suites for :func:`load_suite`. Each is called as ``suite(n=None, seed=0)`` and
#: returns a list of :class:`TaskItem`; register your own the same way.
SUITES: dict[str, Callable[..., list[TaskItem]]] = {
    "builtin": builtin_suite,
    **{c: _category_suite(c) for c in CATEGORIES},
}


def load_suite(name: str, *, seed: int = 0, limit: int | None = None) -> list[TaskItem]:
    """The items of the suite called ``name`` (see :data:`SUITES`), at most ``limit`` of them.

    Raises :class:`DatasetError` for an unknown name (the message lists the valid names) and
    when the suite, or the limit, leaves no items ("empty suite").
    """
    key = name if name in SUITES else name.strip().lower()
    if key not in SUITES:
        raise DatasetError(f"unknown suite {name!r}; valid suites: {', '.join(SUITES)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"empty suite: limit must be at least 1, got {limit!r}")
    items = list(SUITES[key](n=limit, seed=seed))
    if limit is not None:
        items = items[:limit]
    if not items:
        raise DatasetError(f"empty suite: {name!r} has no items")
    return items


# ---------------------------------------------------------------------------------------
# Dataset loaders
# ---------------------------------------------------------------------------------------

#: Accepted ``format`` values of :func:`load_dataset`.
DATASET_FORMATS: tuple[str, ...] = ("auto", "gsm8k", "mc", "generic")
_FORMAT_ALIASES = {"multiple-choice": "mc", "multiple_choice": "mc", "choice": "mc", "jsonl": "generic",
                   "csv": "generic"}
_MAX_LINE_WARNINGS = 20


class _RowError(Exception):
    """One malformed row; the loader adds file and line."""


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | _RowError]]:
    """``(line number, row or problem)`` for each non-blank record of a JSONL or CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if path.suffix.lower() in (".csv", ".tsv"):
        yield from _csv_rows(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
        return
    if text.lstrip().startswith("["):
        raise DatasetError(f"{path}: a JSON array is not supported; write one JSON object per line (JSONL)")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, _RowError(f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        yield number, row if isinstance(row, dict) else _RowError(f"expected a JSON object, got {type(row).__name__}")


def _csv_rows(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, dict[str, Any] | _RowError]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    last = 0
    for record in reader:
        start, last = last + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            header = [h.strip() for h in record]
            if "question" not in [h.lower() for h in header]:
                raise DatasetError(f"{path}:{start}: the CSV header must have a 'question' column, got {header}")
            continue
        if len(record) != len(header):
            yield start, _RowError(f"expected {len(header)} columns, got {len(record)}")
            continue
        row: dict[str, Any] = {}
        options: dict[str, str] = {}
        for h, cell in zip(header, record):
            if len(h) == 1 and h.upper() in LETTERS:
                options[h.upper()] = cell.strip()
            else:
                row[h.lower()] = cell
        if options:
            row["choices"] = _letter_columns(options)
        elif isinstance(row.get("choices"), str):
            row["choices"] = [c.strip() for c in row["choices"].split("|")]
        for key in ("type", "id", "difficulty", "category"):
            if key in row and not str(row[key]).strip():
                del row[key]
        yield start, row


def _letter_columns(options: dict[str, str]) -> list[str] | _RowError:
    ordered = [options.get(L, "") for L in LETTERS[: LETTERS.index(max(options)) + 1]]
    while ordered and not ordered[-1]:
        ordered.pop()
    if any(not o for o in ordered):
        gap = LETTERS[ordered.index("")]
        return _RowError(f"option {gap} is empty but a later option is not")
    return ordered


def _detect_format(row: dict[str, Any]) -> str:
    if "choices" in row or "options" in row:
        return "mc"
    answer = row.get("answer")
    if isinstance(answer, str) and "####" in answer:
        return "gsm8k"
    return "generic"


def _question(row: dict[str, Any]) -> str:
    if "question" not in row:
        raise _RowError(f"missing key 'question' (keys: {', '.join(sorted(row)) or 'none'})")
    q = row["question"]
    if not isinstance(q, str) or not q.strip():
        raise _RowError("empty question")
    return q.strip()


def _answer_value(row: dict[str, Any]) -> Any:
    if "answer" not in row or row["answer"] is None:
        raise _RowError(f"missing key 'answer' (keys: {', '.join(sorted(row)) or 'none'})")
    a = row["answer"]
    if isinstance(a, str) and not a.strip():
        raise _RowError("empty answer")
    return a


def _choices_of(row: dict[str, Any]) -> list[str]:
    raw = row.get("choices", row.get("options"))
    if isinstance(raw, _RowError):
        raise raw
    if isinstance(raw, str):
        raw = [c.strip() for c in raw.split("|")]
    if isinstance(raw, dict):
        keys = sorted(str(k).upper() for k in raw)
        if keys != list(LETTERS[: len(keys)]):
            raise _RowError(f"choices keyed by letters must be A, B, C, ... in order, got {sorted(raw)}")
        raw = [raw[k] for k in sorted(raw, key=lambda k: str(k).upper())]
    if not isinstance(raw, list) or not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in raw):
        raise _RowError("choices must be a list of option texts")
    options = [str(c).strip() for c in raw]
    if not 2 <= len(options) <= len(LETTERS):
        raise _RowError(f"a multiple-choice item needs 2 to {len(LETTERS)} options, got {len(options)}")
    if any(not o for o in options):
        raise _RowError("an option is empty")
    return options


def _choice_gold(answer: Any, options: list[str]) -> str:
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(options):
            raise _RowError(f"answer index {answer} is out of range for {len(options)} options (0-based)")
        return LETTERS[answer]
    text = strip_edges(str(answer)).upper()
    valid = LETTERS[: len(options)]
    if len(text) != 1 or text not in valid:
        raise _RowError(f"answer must be one of the letters {', '.join(valid)}, got {answer!r}")
    return text


def _infer_type(answer: Any) -> str:
    if isinstance(answer, bool):
        return "yesno"
    if isinstance(answer, (int, float)):
        return "number"
    s = str(answer).strip()
    try:
        canonical_number(s)
        return "number"
    except ValueError:
        pass
    if s.lower() in ("yes", "no"):
        return "yesno"
    if parse_date_exact(s) is not None:
        return "date"
    return "text"


def _gold_string(answer: Any) -> str:
    if isinstance(answer, bool):
        return "yes" if answer else "no"
    if isinstance(answer, (int, float)):
        if isinstance(answer, float) and not math.isfinite(answer):
            raise _RowError(f"answer {answer!r} is not a finite number")
        return canonical_number(repr(answer) if isinstance(answer, float) else str(answer))
    if isinstance(answer, str):
        return answer.strip()
    raise _RowError(f"answer must be a string, number or boolean, got {type(answer).__name__}")


def _item_from_row(
    row: dict[str, Any], fmt: str, default_id: str, estimate: bool
) -> tuple[TaskItem, str]:
    """A :class:`TaskItem` from one row in format ``fmt``; raises :class:`_RowError`."""
    question = _question(row)
    answer = _answer_value(row)
    choices: list[str] | None = None
    if fmt == "gsm8k":
        if not isinstance(answer, str) or "####" not in answer:
            raise _RowError("GSM8K answer has no '#### <number>' final line")
        final = answer.rsplit("####", 1)[1].strip()
        try:
            gold, answer_type = canonical_number(final.replace(" ", "")), "number"
        except ValueError:
            raise _RowError(f"the answer after '####' is not a number: {final!r}") from None
        category = row.get("category") or "gsm8k"
    else:
        has_choices = "choices" in row or "options" in row
        if fmt == "mc" and not has_choices:
            raise _RowError("missing key 'choices' (multiple-choice format)")
        declared = row.get("type")
        if declared is not None and declared not in ANSWER_TYPES:
            raise _RowError(f"unknown type {declared!r}; valid types: {', '.join(ANSWER_TYPES)}")
        if has_choices:
            if declared not in (None, "choice"):
                raise _RowError(f"an item with choices must have type 'choice', not {declared!r}")
            choices = _choices_of(row)
            gold, answer_type = _choice_gold(answer, choices), "choice"
            question = format_choices(question, choices)
        else:
            answer_type = declared or _infer_type(answer)
            gold = _gold_string(answer)
        category = row.get("category") or answer_type
    difficulty = row.get("difficulty")
    if difficulty is None:
        if estimate:
            from effreason_agents.core.features import classify_difficulty

            difficulty = classify_difficulty(question)[0]
        else:
            difficulty = "medium"
    if difficulty not in DIFFICULTIES:
        raise _RowError(f"unknown difficulty {difficulty!r}; valid: {', '.join(DIFFICULTIES)}")
    raw_id = row.get("id")
    item_id = default_id if raw_id is None or str(raw_id).strip() == "" else str(raw_id).strip()
    try:
        item = TaskItem(
            id=item_id, question=question, answer=gold, type=answer_type,  # type: ignore[arg-type]
            difficulty=difficulty, category=str(category), choices=choices,
        )
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        errors = getattr(exc, "errors", None)
        msg = (
            "; ".join(str(e.get("msg", e)).removeprefix("Value error, ") for e in errors())
            if callable(errors) else str(exc)
        )
        raise _RowError(msg) from None
    return item, item_id


def load_dataset(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    on_error: Literal["skip", "refuse"] = "skip",
    warn: Callable[[str], None] | None = None,
    estimate_difficulty: bool = False,
) -> list[TaskItem]:
    """Load graded items from a JSONL or CSV (``.csv``; ``.tsv`` tab-separated) file.

    Formats (``format="auto"`` picks one from the extension and the keys of the first valid
    row; name one to insist on it):

    ``gsm8k``
        JSONL ``{"question": ..., "answer": "...reasoning...\\n#### 72"}``: the gold answer is
        the number after the last ``####`` (``,`` and ``$`` dropped); type ``number``.
    ``mc``
        Multiple choice. JSONL: ``question``, ``choices`` (a list, a ``"|"``-separated string,
        or ``{"A": ..., "B": ...}``) and ``answer`` (a letter, or a 0-based index as an
        integer, as in MMLU). CSV: ``question``, option columns ``A``, ``B``, ``C``, ``D``
        (``E``, ...) or a ``choices`` column of ``"|"``-separated options, and ``answer``.
        The options are appended to the question as ``"A) ..."`` lines; type ``choice``.
    ``generic``
        JSONL or CSV with ``question``, ``answer`` and optional ``type`` (``number``,
        ``choice``, ``yesno``, ``date``, ``text``; inferred from the answer when absent:
        number, yes/no, date, else text).

    Every format also reads optional ``id``, ``difficulty`` and ``category``. Ids default to
    ``<file stem>-<line>``; the category to ``"gsm8k"`` for GSM8K files, else the answer type; difficulty defaults to ``"medium"``, or to the heuristic
    :func:`~effreason_agents.core.features.classify_difficulty` label with
    ``estimate_difficulty=True`` (do not grade that classifier against those labels).

    Malformed lines (bad JSON, missing keys, an empty question, a bad letter, an unknown
    type, a duplicate id, ...) are reported as ``FILE:LINE: problem``. With
    ``on_error="skip"`` they are skipped and reported through ``warn`` (default:
    :func:`warnings.warn` with :class:`DatasetWarning`; the first 20 one by one, then a
    count); with ``on_error="refuse"`` the first one raises :class:`DatasetError`.
    A missing file, or one with no valid items, raises :class:`DatasetError`.
    """
    if on_error not in ("skip", "refuse"):
        raise DatasetError(f"on_error must be 'skip' or 'refuse', got {on_error!r}")
    fmt = _FORMAT_ALIASES.get(format, format)
    if fmt not in DATASET_FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; valid formats: {', '.join(DATASET_FORMATS)}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"dataset file not found: {p}")
    if not p.is_file():
        raise DatasetError(f"dataset path is not a file: {p}")
    report = warn or (lambda msg: warnings.warn(msg, DatasetWarning, stacklevel=4))

    items: list[TaskItem] = []
    first_line: dict[str, int] = {}
    skipped = 0
    detected_from: int | None = None

    def problem(line: int, message: str) -> None:
        nonlocal skipped
        text = f"{p}:{line}: {message}"
        if on_error == "refuse":
            raise DatasetError(text + " (to skip malformed lines instead: --on-error skip, or on_error='skip')")
        skipped += 1
        if skipped <= _MAX_LINE_WARNINGS:
            report(text + "; line skipped")

    for line, row in _read_rows(p):
        if isinstance(row, _RowError):
            problem(line, str(row))
            continue
        if fmt == "auto":
            fmt, detected_from = _detect_format(row), line
        try:
            item, item_id = _item_from_row(row, fmt, f"{p.stem}-{line}", estimate_difficulty)
        except _RowError as exc:
            hint = f" ({fmt} format, detected from line {detected_from})" if detected_from else ""
            problem(line, f"{exc}{hint if fmt != 'generic' else ''}")
            continue
        if item_id in first_line:
            problem(line, f"duplicate id {item_id!r} (first on line {first_line[item_id]})")
            continue
        first_line[item_id] = line
        # Keys other than the documented ones are ignored: datasets carry metadata.
        items.append(item)

    if skipped > _MAX_LINE_WARNINGS:
        report(f"{p}: {skipped - _MAX_LINE_WARNINGS} more malformed lines skipped ({skipped} in all)")
    if not items:
        detail = f" ({skipped} malformed line{'s' if skipped != 1 else ''} skipped)" if skipped else ""
        raise DatasetError(f"{p}: the dataset is empty: no valid items{detail}")
    return items
