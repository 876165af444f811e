"""Logged outcomes of several arms on the same prompts: one table, one reader per format.

Replay (:mod:`effreason_agents.evaluation.replay`), router training and the policy
fitting in ``router_training`` all read graded outcomes through this module into an
:class:`OutcomeTable`: one row per unique prompt, one column per arm.

Three formats, one loader (:func:`load_table`):

``store``
    The project's outcome store (an SQLite path, or the literal ``"store"`` for the
    configured one). The labelled rows are benchmark results (``bench_results``):
    the item's question, the arm, ``correct``, ``cost_usd``, ``input_tokens``,
    ``output_tokens`` and ``latency_s``; every run by default, one ``run_id``, or the
    newest run (``latest=True``). The full graph (arm ``graph``) is not an arm a
    router can pick, so it is left out. The run's ``suite``, the item's
    ``difficulty`` and ``answer_type`` are kept per prompt in :attr:`OutcomeTable.groups`.
``long``
    JSONL or CSV, one row per (prompt, arm) outcome: ``prompt``; ``arm`` (or
    ``model``); ``correct`` (a boolean: true/false, 1/0, yes/no, any case) or
    ``score`` (a number in [0, 1]); optional ``output_tokens`` (or ``tokens``) and
    ``cost_usd`` (or ``cost``); optional metadata columns named in
    :data:`GROUP_COLUMNS` (``subject``, ``category``, ``split``, …), kept per prompt in
    :attr:`OutcomeTable.groups`. Other columns are ignored.
``wide``
    RouteLLM's published CSV, one row per prompt: ``prompt``; one column per model
    id holding True/False (or 1/0, yes/no, or a score in [0, 1]); optional
    ``<model id>_response`` columns with the raw reply, which are never labels but,
    when present, are kept (:attr:`OutcomeTable.responses`) and give the output token
    count of that model's reply (:func:`effreason_agents.adapters.tiers.estimate_tokens`:
    o200k BPE, or a bytes/3 bound without ``bpe-openai``; a note and
    :attr:`OutcomeTable.token_method` say which). Metadata columns (``subject``,
    ``category``, ``split``, ``eval_name``, ``sample_id``, ``gold``, an index column, …)
    and any other column whose values are mostly not labels are not models: they
    are kept per prompt in :attr:`OutcomeTable.groups` (a note names them), so that
    evaluation can hold out whole subjects or splits. An empty cell means "this
    model has no result for this prompt" (``NaN`` in the table).

Rules shared by every format:

* prompts are stripped; rows whose prompts are identical after stripping are one
  prompt, and several labels (or costs, token counts) for one (prompt, arm) are
  averaged — a note says how many were merged;
* ``complete=True`` (wide and store) asks for what right-or-wrong metrics need: a
  boolean label for every (prompt, arm). The wide reader then refuses empty cells
  and scores (naming the row and column), and the store reader leaves out items
  without a result for every arm (a note counts them); a repeated prompt keeps its
  first row (first result per arm), since averaging two different booleans would
  not give one;
* metadata (:attr:`OutcomeTable.groups`) is one value per prompt: when a repeated
  prompt carries a different value than its first row, the first value stands and a
  note counts the conflicts; an empty cell is ``None``, and a column without a value
  on any prompt is not kept;
* ``arms`` selects and orders the arms (unknown names are an error listing the
  available ones); prompts left with no label for any selected arm are dropped
  (with a note);
* bad input raises :class:`OutcomeDataError` naming the file, the column and the
  row, and nothing is returned. Rows are data records counted from 1 (a CSV's
  header is not a row; blank lines are skipped); when the line a user sees in an
  editor differs, it follows in brackets (``row 3 (line 4)``); a CSV record that
  spans several lines is placed at its first line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.adapters.tiers import estimate_tokens, token_count_method
from effreason_agents.core.text import is_postgres_url, redact_url
from effreason_agents.errors import EffReasonError, OutcomeDataError, StoreError

__all__ = [
    "FORMATS",
    "GRAPH_ARM",
    "GROUP_COLUMNS",
    "TOKENS_LOGGED",
    "OutcomeDataError",
    "OutcomeTable",
    "infer_format",
    "load_long",
    "load_store",
    "load_table",
    "load_wide",
    "parse_bool",
    "parse_label",
    "select_arms",
]

FORMATS = ("store", "long", "wide")

#: The arm of the full cost-aware graph in ``bench_results``: not an arm a router can pick.
GRAPH_ARM = "graph"
#: :attr:`OutcomeTable.token_method` of token counts logged with the outcomes.
TOKENS_LOGGED = "logged usage"

_TRUE = frozenset({"true", "1", "1.0", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "0.0", "no", "n", "f"})
_BOOL_HELP = "(true/false/1/0/yes/no)"
_RESPONSE_SUFFIX = "_response"
# Wide-CSV columns that are never a model: an index column, RouteLLM's metadata and few-shot columns.
_WIDE_METADATA = re.compile(
    r"^(?:|unnamed: ?\d+|index|id|sample_id|eval_name|gold|answer|examples|category|subject|difficulty|split)$", re.I
)
#: Metadata columns of the long format kept in :attr:`OutcomeTable.groups` (matched case-insensitively).
#: The wide format keeps every column that is not the prompt, a model or a reply.
GROUP_COLUMNS = ("subject", "category", "split", "difficulty", "eval_name", "task", "dataset", "domain", "suite")
_STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_MATRICES = ("cost", "tokens", "input_tokens", "latency_s")


# -- the table --------------------------------------------------------------------------


@dataclass
class OutcomeTable:
    """Graded outcomes of several arms on the same prompts.

    ``correct[i, j]`` is arm ``j``'s correctness on prompt ``i`` in [0, 1] (1/0 for a
    boolean label, the mean when a prompt was graded several times, a score in [0, 1]
    for score columns); ``NaN`` where that arm has no result for that prompt.
    ``cost`` (USD per call), ``tokens`` (output tokens per call), ``input_tokens``
    and ``latency_s`` (seconds per call) are optional, same shape, ``NaN`` where
    unknown; :meth:`costs_decimal` gives the costs back as exact decimals for money
    sums. ``responses`` maps an arm to its raw reply per prompt (``None`` where there
    is none), for the arms whose replies were logged. ``token_method`` says how
    ``tokens`` were obtained (:data:`TOKENS_LOGGED`, or the tokenizer that counted
    the replies). ``run_id`` and ``config_version`` are set when the table holds one
    benchmark run. ``groups`` maps a metadata column (``subject``, ``split``, …) to
    its value per prompt (``None`` where the cell was empty), for evaluations that
    hold out whole groups (``router_training.protocols.holdout_groups``). Prompts are
    unique (de-duplicated by exact text after stripping), so folds over rows are
    folds by prompt.
    """

    prompts: list[str]
    arms: list[str]
    correct: np.ndarray
    cost: np.ndarray | None = None
    tokens: np.ndarray | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    input_tokens: np.ndarray | None = None
    latency_s: np.ndarray | None = None
    responses: dict[str, list[str | None]] = field(default_factory=dict)
    token_method: str | None = None
    run_id: str | None = None
    config_version: str | None = None
    groups: dict[str, list[str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, a = len(self.prompts), len(self.arms)
        self.correct = np.asarray(self.correct, dtype=float)
        if self.correct.shape != (n, a):
            raise ValueError(f"correct has shape {self.correct.shape}, expected {(n, a)}")
        for name in _MATRICES:
            m = getattr(self, name)
            if m is not None:
                m = np.asarray(m, dtype=float)
                if m.shape != (n, a):
                    raise ValueError(f"{name} has shape {m.shape}, expected {(n, a)}")
                setattr(self, name, m)
        if len(set(self.prompts)) != n:
            raise ValueError("prompts must be unique")
        if len(set(self.arms)) != a:
            raise ValueError("arms must be unique")
        for arm, texts in self.responses.items():
            if arm not in self.arms:
                raise ValueError(f"responses of {arm!r}, which is not one of the arms {self.arms}")
            if len(texts) != n:
                raise ValueError(f"responses of {arm!r} has {len(texts)} entries, expected {n}")
        for column, values in self.groups.items():
            if not isinstance(column, str) or not column:
                raise ValueError(f"group column names must be non-empty text, got {column!r}")
            if len(values) != n:
                raise ValueError(f"group column {column!r} has {len(values)} values, expected {n}")

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, rows: np.ndarray | list[int]) -> OutcomeTable:
        """The table restricted to ``rows`` (indices or a boolean mask)."""
        idx = np.arange(len(self.prompts))[rows]
        return self._take(idx, list(range(len(self.arms))), list(self.notes))

    def _take(self, idx: np.ndarray | list[int], cols: list[int], notes: list[str]) -> OutcomeTable:
        idx = list(np.asarray(idx, dtype=int))
        pick = lambda m: None if m is None else m[np.ix_(idx, cols)]  # noqa: E731
        arms = [self.arms[j] for j in cols]
        return OutcomeTable(
            [self.prompts[i] for i in idx], arms, self.correct[np.ix_(idx, cols)], pick(self.cost),
            pick(self.tokens), self.source, notes, input_tokens=pick(self.input_tokens),
            latency_s=pick(self.latency_s),
            responses={a: [self.responses[a][i] for i in idx] for a in arms if a in self.responses},
            token_method=self.token_method, run_id=self.run_id, config_version=self.config_version,
            groups={c: [v[i] for i in idx] for c, v in self.groups.items()},
        )

    def mean_cost(self) -> dict[str, float | None]:
        """Mean cost per call of each arm over the prompts where it is known."""
        return _col_means(self.arms, self.cost)

    def mean_tokens(self) -> dict[str, float | None]:
        """Mean output tokens per call of each arm over the prompts where they are known."""
        return _col_means(self.arms, self.tokens)

    def costs_decimal(self, arm: str) -> list[Decimal | None]:
        """``arm``'s cost per prompt as an exact :class:`~decimal.Decimal` (``None`` where
        unknown), for money sums. A logged amount of up to 15 significant digits (every
        per-call cost the store logs) comes back exactly as it was written."""
        j = self.arms.index(arm)
        if self.cost is None:
            return [None] * len(self.prompts)
        return [Decimal(repr(float(v))) if math.isfinite(v) else None for v in self.cost[:, j]]

    def sha256(self) -> str:
        """A hash of the training data (prompts, arms, labels), for the artifact card.

        Costs, token counts, replies and :attr:`groups` are left out on purpose: they do
        not change what a router learns, so the same outcomes read from a file with or
        without a ``subject`` column (or with a cost column added) hash the same."""
        blob = json.dumps(
            {"prompts": self.prompts, "arms": self.arms,
             "correct": [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in self.correct]},
            sort_keys=True, separators=(",", ":"),
        ).encode()
        return hashlib.sha256(blob).hexdigest()


def _col_means(arms: list[str], m: np.ndarray | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for j, arm in enumerate(arms):
        if m is None:
            out[arm] = None
            continue
        col = m[:, j]
        col = col[np.isfinite(col)]
        out[arm] = float(col.mean()) if col.size else None
    return out


# -- value parsing ----------------------------------------------------------------------


def parse_bool(value: Any) -> bool | None:
    """A correctness value as a bool: true/false, 1/0, yes/no (any case, surrounding spaces
    ignored; also ``1.0``/``0.0`` and t/f, y/n); JSON booleans and the numbers 0 and 1.
    ``None`` for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return True if value == 1 else False if value == 0 else None
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def _parse_score(value: Any) -> float | None:
    """A number in [0, 1] (JSON booleans count as 1/0); ``None`` if not a finite number in range."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return x if math.isfinite(x) and 0.0 <= x <= 1.0 else None


def parse_label(value: Any) -> float | None:
    """A correctness label as a float: a boolean spelling (:func:`parse_bool`) as 1/0, or
    a score in [0, 1]; ``None`` for anything else."""
    b = parse_bool(value)
    if b is not None:
        return float(b)
    return _parse_score(value)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _group_value(value: Any) -> str | None:
    """A metadata cell as text: ``None`` when empty, booleans as ``true``/``false``, numbers
    as Python writes them, other JSON values as compact JSON."""
    if _is_empty(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _at(p: Path, row: int, line: int) -> str:
    """``"<file>: row R"``, with ``(line L)`` when the editor line differs from the row number."""
    return f"{p}: row {row}" + (f" (line {line})" if line != row else "")


# -- accumulating labels ----------------------------------------------------------------


@dataclass
class _Cells:
    """Sums and counts of labels (and costs, token counts, latencies) per (prompt, arm),
    in first-seen order. ``first=True`` keeps the first label of a (prompt, arm) instead
    of averaging, and counts the later ones in ``dropped``. ``groups`` holds metadata
    values per (column, prompt): the first value stands, a later different one is
    counted in ``conflicts``."""

    first: bool = False
    prompts: dict[str, int] = field(default_factory=dict)
    arms: dict[str, int] = field(default_factory=dict)
    values: dict[str, dict[tuple[int, int], list[float]]] = field(
        default_factory=lambda: {k: {} for k in ("label", *_MATRICES)}
    )
    groups: dict[str, dict[int, str | None]] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    repeated_rows: int = 0  # wide: rows whose prompt came before
    dropped: int = 0  # first=True: later results of a (prompt, arm) left out

    @property
    def label(self) -> dict[tuple[int, int], list[float]]:
        return self.values["label"]

    def arm(self, name: str) -> int:
        return self.arms.setdefault(name, len(self.arms))

    def prompt(self, text: str) -> int:
        i = self.prompts.get(text)
        if i is None:
            i = self.prompts[text] = len(self.prompts)
        return i

    def add(self, i: int, j: int, label: float, **extra: float | None) -> None:
        if self.first and (i, j) in self.label:
            self.dropped += 1
            return
        for name, value in (("label", label), *extra.items()):
            if value is None:
                continue
            acc = self.values[name].setdefault((i, j), [0.0, 0])
            acc[0] += value
            acc[1] += 1

    def group(self, i: int, column: str, value: str | None) -> None:
        """Record prompt ``i``'s value of metadata ``column`` (``None``: empty cell). The first
        value stands; an empty first value is filled by a later one; a later different value
        is counted as a conflict."""
        values = self.groups.setdefault(column, {})
        old = values.get(i)
        if old is None:
            values[i] = value
        elif value is not None and value != old:
            self.conflicts[column] = self.conflicts.get(column, 0) + 1

    def group_lists(self) -> dict[str, list[str | None]]:
        """Each metadata column with at least one value, as a value per prompt."""
        n = len(self.prompts)
        out: dict[str, list[str | None]] = {}
        for column, values in self.groups.items():
            if any(v is not None for v in values.values()):
                out[column] = [values.get(i) for i in range(n)]
        return out

    def merged(self) -> int:
        """Labels beyond the first for each (prompt, arm): how many were averaged away."""
        return sum(int(c) - 1 for _, c in self.label.values())

    def matrix(self, which: str) -> np.ndarray | None:
        cells = self.values[which]
        if which != "label" and not cells:
            return None
        m = np.full((len(self.prompts), len(self.arms)), np.nan)
        for (i, j), (s, c) in cells.items():
            m[i, j] = s / c
        return m

    def drop_arms(self, names: Sequence[str]) -> None:
        """Forget the arms ``names`` (and renumber the others)."""
        keep = [a for a in self.arms if a not in names]
        remap = {self.arms[a]: n for n, a in enumerate(keep)}
        for store in self.values.values():
            moved = {(i, remap[j]): v for (i, j), v in store.items() if j in remap}
            store.clear()
            store.update(moved)
        self.arms = {a: n for n, a in enumerate(keep)}


def _finish(
    cells: _Cells,
    source: str,
    notes: list[str],
    where: str,
    *,
    complete: bool = False,
    responses: dict[str, dict[int, str]] | None = None,
    token_method: str | None = None,
    run_id: str | None = None,
    config_version: str | None = None,
) -> OutcomeTable:
    """The table of ``cells``, with the shared checks and notes."""
    if not cells.label:
        raise OutcomeDataError(f"{where}: no rows with a correctness label")
    merged = cells.merged()
    if merged:
        affected = sum(1 for _, c in cells.label.values() if c > 1)
        notes.append(
            f"merged {merged} duplicate labels: {affected} (prompt, arm) pairs were graded more than once "
            "(prompts compared after stripping whitespace); their labels, costs and token counts were averaged"
        )
    if cells.repeated_rows:
        notes.append(f"{cells.repeated_rows} rows repeated an earlier prompt and were merged into it")
    if cells.dropped:
        notes.append(
            f"{cells.dropped} results repeating an earlier question for the same arm left out "
            "(the first result stands; questions compared after stripping whitespace)"
        )
    for column, count in cells.conflicts.items():
        notes.append(
            f"column {column!r}: {count} repeated prompt{'s' if count != 1 else ''} carried a different value "
            "than the prompt's first row; the first value was kept"
        )
    texts = responses or {}
    n = len(cells.prompts)
    table = OutcomeTable(
        list(cells.prompts), list(cells.arms), cells.matrix("label"), cells.matrix("cost"), cells.matrix("tokens"),
        source, notes, input_tokens=cells.matrix("input_tokens"), latency_s=cells.matrix("latency_s"),
        responses={a: [texts[a].get(i) for i in range(n)] for a in cells.arms if a in texts},
        token_method=token_method if cells.values["tokens"] else None, run_id=run_id, config_version=config_version,
        groups=cells.group_lists(),
    )
    return _checked(table, where, notes, complete=complete)


def _checked(table: OutcomeTable, where: str, notes: list[str], *, complete: bool = False) -> OutcomeTable:
    """``table`` after the checks every loaded table passes: at least two arms, a label
    for each arm; prompts without any label (``complete``: without a label for every
    arm) left out with a note."""
    arms = table.arms
    if len(arms) < 2:
        raise OutcomeDataError(
            f"{where}: need at least two arms; found {len(arms)}"
            + (f" ({', '.join(repr(a) for a in arms)})" if arms else "")
        )
    labelled = np.isfinite(table.correct)
    empty_arms = [a for j, a in enumerate(arms) if not labelled[:, j].any()]
    if empty_arms:
        raise OutcomeDataError(f"{where}: no labels for arm{'s' if len(empty_arms) > 1 else ''} {', '.join(empty_arms)}")
    keep = labelled.all(axis=1) if complete else labelled.any(axis=1)
    if not keep.all():
        left = int((~keep).sum())
        if complete:
            notes.append(f"{left} items without a result for every arm left out")
        else:
            notes.append(f"{left} prompts without a label for any selected arm left out")
        if not keep.any():
            raise OutcomeDataError(f"{where}: no item has a result for every arm ({', '.join(arms)})")
        table = table._take(np.flatnonzero(keep), list(range(len(arms))), notes)
    table.notes = notes
    missing = int(np.isnan(table.correct).sum())
    if missing:
        notes.append(f"{missing} (prompt, arm) pairs have no label (NaN in the table)")
    return table


# -- format inference --------------------------------------------------------------------


def infer_format(path: str | Path) -> str:
    """``"store"`` for the literal ``store`` or an ``.sqlite``/``.sqlite3``/``.db`` file;
    ``"long"`` for ``.jsonl``/``.ndjson``; for ``.csv``, ``"long"`` when the header has an
    ``arm`` or ``model`` column, else ``"wide"``."""
    if str(path) == "store":
        return "store"
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in _STORE_SUFFIXES:
        return "store"
    if suffix in _JSONL_SUFFIXES:
        return "long"
    if suffix == ".csv":
        header = _csv_header(p)
        return "long" if {"arm", "model"} & {h.strip().lower() for h in header} else "wide"
    raise OutcomeDataError(
        f"{p}: cannot tell the format from the name; pass the format (one of {', '.join(FORMATS)}): "
        "long = JSONL/CSV with prompt, arm, correct; wide = RouteLLM's CSV; store = the outcome store"
    )


def _check_file(p: Path) -> None:
    if p.is_dir():
        raise OutcomeDataError(f"{p}: is a directory, not a data file")
    if not p.is_file():
        raise OutcomeDataError(f"{p}: no such file")


def _csv_header(p: Path) -> list[str]:
    _check_file(p)
    with _csv_errors(p), p.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if any(c.strip() for c in row):
                return row
    raise OutcomeDataError(f"{p}: the file is empty")


@contextmanager
def _csv_errors(p: Path) -> Iterator[None]:
    """Reading ``p`` as CSV: undecodable, malformed or unreadable files become an
    :class:`OutcomeDataError` naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise OutcomeDataError(f"{p}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise OutcomeDataError(f"{p}: not a valid CSV file ({exc})") from None
    except OSError as exc:
        raise OutcomeDataError(f"{p}: cannot read the file ({exc})") from None


# -- reading records --------------------------------------------------------------------


def _read_csv(p: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (stripped) and ``(first line, cells)`` of every non-blank record."""
    _check_file(p)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    with _csv_errors(p), p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        start = 1
        for row in reader:
            line = start
            start = reader.line_num + 1
            if not any(c.strip() for c in row):
                continue
            if header is None:
                header = [h.strip() for h in row]
            else:
                rows.append((line, row))
    if header is None:
        raise OutcomeDataError(f"{p}: the file is empty")
    seen: set[str] = set()
    for h in header:
        if h and h in seen:
            raise OutcomeDataError(f"{p}: column {h!r} appears twice in the header")
        seen.add(h)
    return header, rows


def _read_jsonl(p: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(row, line, object)`` of every non-blank line."""
    _check_file(p)
    try:
        with p.open(encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise OutcomeDataError(f"{p}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise OutcomeDataError(f"{p}: cannot read the file ({exc})") from None
    if not any(line.strip() for line in lines):
        raise OutcomeDataError(f"{p}: the file is empty")
    row = 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OutcomeDataError(f"{_at(p, row, n)}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise OutcomeDataError(f"{_at(p, row, n)}: expected a JSON object with 'prompt', 'arm' and 'correct' keys")
        yield row, n, obj


# -- long -------------------------------------------------------------------------------


def _number(value: Any, where: str, column: str, what: str) -> float | None:
    """An optional non-negative number (empty → ``None``); money goes through Decimal."""
    if _is_empty(value):
        return None
    if isinstance(value, bool):
        x = None
    elif isinstance(value, (int, float)):
        x = float(value)
    else:
        try:
            x = float(Decimal(str(value).strip()))
        except (InvalidOperation, ValueError):
            x = None
    if x is None or not math.isfinite(x) or x < 0:
        raise OutcomeDataError(f"{where}, column {column!r}: {_show(value)} is not {what}")
    return x


def _long_records(p: Path) -> tuple[list[str] | None, Iterator[tuple[int, int, dict[str, Any]]]]:
    """(CSV header or None for JSONL, ``(row, line, record)`` with records keyed by
    lower-cased column name)."""
    suffix = p.suffix.lower()
    jsonl = suffix in _JSONL_SUFFIXES or suffix == ".json"
    if not jsonl and suffix != ".csv":
        # Unknown extension: a JSONL file starts with "{".
        _check_file(p)
        try:
            with p.open(encoding="utf-8-sig") as fh:
                head = fh.read(4096).lstrip()
        except (OSError, UnicodeDecodeError) as exc:
            raise OutcomeDataError(f"{p}: cannot read the file ({exc})") from None
        jsonl = head.startswith("{")
    if jsonl:
        return None, ((r, n, {str(k).strip().lower(): v for k, v in obj.items()}) for r, n, obj in _read_jsonl(p))
    header, rows = _read_csv(p)
    keys = [h.lower() for h in header]
    return header, (
        (row, line, {k: (r[i] if i < len(r) else "") for i, k in enumerate(keys) if k})
        for row, (line, r) in enumerate(rows, start=1)
    )


def _first(present: set[str], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in present), None)


def load_long(path: str | Path) -> OutcomeTable:
    """Load the long format (JSONL, or CSV with a header): one outcome per row.

    Columns (names matched case-insensitively): ``prompt``; ``arm`` or ``model``
    (``arm`` wins when both are present); ``correct`` (a boolean) or ``score`` (a
    number in [0, 1]) — with both columns, a row may fill either, ``correct`` winning;
    optional ``output_tokens`` (or ``tokens``) and ``cost_usd`` (or ``cost``): empty
    means unknown, otherwise a non-negative number. Columns named in
    :data:`GROUP_COLUMNS` are kept per prompt in :attr:`OutcomeTable.groups` (under
    their lower-case name).
    """
    p = Path(path)
    header, records = _long_records(p)
    notes: list[str] = []
    cells = _Cells()
    needed = "'prompt', 'arm' (or 'model'), 'correct' (or 'score')"

    def missing(present: set[str]) -> list[str]:
        out = []
        if "prompt" not in present:
            out.append("'prompt'")
        if not {"arm", "model"} & present:
            out.append("'arm' (or 'model')")
        if not {"correct", "score"} & present:
            out.append("'correct' (or 'score')")
        return out

    if header is not None:
        present = {h.lower() for h in header if h}
        lack = missing(present)
        if lack:
            raise OutcomeDataError(
                f"{p}: missing required columns: {', '.join(lack)} (columns: {', '.join(repr(h) for h in header)}); "
                f"the long format needs {needed}"
            )
        if {"arm", "model"} <= present:
            notes.append("both 'arm' and 'model' columns: arms are named by 'arm'")
    for row, line, rec in records:
        where = _at(p, row, line)
        present = {k for k, v in rec.items() if k}
        if header is None:
            lack = missing(present)
            if lack:
                raise OutcomeDataError(f"{where}: missing required columns: {', '.join(lack)}; the long format needs {needed}")
        prompt_raw = rec.get("prompt")
        if not isinstance(prompt_raw, str) or not prompt_raw.strip():
            shown = "empty" if _is_empty(prompt_raw) else f"not text ({_show(prompt_raw)})"
            raise OutcomeDataError(f"{where}, column 'prompt': the prompt is {shown}")
        arm_col = "arm" if "arm" in present else "model"
        arm_raw = rec.get(arm_col)
        if _is_empty(arm_raw) or not isinstance(arm_raw, (str, int)) or isinstance(arm_raw, bool):
            raise OutcomeDataError(f"{where}, column {arm_col!r}: the arm name is empty or not text")
        arm = str(arm_raw).strip()
        label: float | None
        if "correct" in rec and not _is_empty(rec["correct"]):
            b = parse_bool(rec["correct"])
            if b is None:
                raise OutcomeDataError(f"{where}, column 'correct': {_show(rec['correct'])} is not a boolean {_BOOL_HELP}")
            label = float(b)
        elif "score" in rec and not _is_empty(rec["score"]):
            label = _parse_score(rec["score"])
            if label is None:
                raise OutcomeDataError(f"{where}, column 'score': {_show(rec['score'])} is not a number in [0, 1]")
        else:
            col = "correct" if "correct" in rec else "score"
            raise OutcomeDataError(f"{where}, column {col!r}: the correctness value is empty")
        tok_col = _first(present, ("output_tokens", "tokens"))
        cost_col = _first(present, ("cost_usd", "cost"))
        tokens = _number(rec.get(tok_col), where, tok_col, "a token count (a non-negative number)") if tok_col else None
        cost = _number(rec.get(cost_col), where, cost_col, "a cost (a non-negative number)") if cost_col else None
        cells.rows += 1
        i = cells.prompt(prompt_raw.strip())
        cells.add(i, cells.arm(arm), label, cost=cost, tokens=tokens)
        for column in GROUP_COLUMNS:
            if column in rec:
                cells.group(i, column, _group_value(rec[column]))
    if cells.rows == 0:
        raise OutcomeDataError(f"{p}: no data rows" + (" after the header" if header is not None else ""))
    return _finish(cells, str(p), notes, str(p), token_method=TOKENS_LOGGED)


# -- wide -------------------------------------------------------------------------------


def load_wide(path: str | Path, *, complete: bool = False) -> OutcomeTable:
    """Load RouteLLM's wide CSV: a ``prompt`` column and one label column per model.

    A column is a model's when it is not ``prompt``, not a ``*_response`` column, not a
    known metadata name (``sample_id``, ``eval_name``, ``gold``, ``answer``, ``index``,
    ``id``, ``examples``, ``category``, ``subject``, ``difficulty``, ``split``, unnamed
    index columns) and at least half of its non-empty cells are labels (a boolean
    spelling or a number in [0, 1]); then every non-empty cell must be one. Empty cells
    are missing results (``NaN``). Every other named column (metadata, or mostly not
    labels) is kept per prompt in :attr:`OutcomeTable.groups`, under its header name.
    ``<model>_response`` texts, when present, are kept in :attr:`OutcomeTable.responses`
    and give the output token counts (``tokens``); there are no costs.

    ``complete=True``: every model cell of every row must be a boolean (an empty cell
    or a score is an error naming the row and column), and a repeated prompt keeps its
    first row (a note lists the rows left out).
    """
    p = Path(path)
    header, rows = _read_csv(p)
    if "prompt" not in header:
        raise OutcomeDataError(
            f"{p}: missing required columns: 'prompt' (columns: {', '.join(repr(h) for h in header)}); "
            "the wide format needs a 'prompt' column and one True/False column per model"
        )
    col = {h: i for i, h in enumerate(header) if h}
    if not rows:
        raise OutcomeDataError(f"{p}: no data rows after the header")

    def cell(r: list[str], name: str) -> str:
        i = col[name]
        return r[i] if i < len(r) else ""

    notes: list[str] = []
    candidates = [h for h in header if h and h != "prompt" and not h.endswith(_RESPONSE_SUFFIX)]
    metadata = [h for h in candidates if _WIDE_METADATA.match(h)]
    models: list[str] = []
    skipped: list[str] = []
    for h in candidates:
        if h in metadata:
            continue
        filled = [v for v in (cell(r, h) for _, r in rows) if v.strip()]
        n_label = sum(parse_label(v) is not None for v in filled)
        (models if filled and 2 * n_label >= len(filled) else skipped).append(h)
    if len(models) < 2:
        raise OutcomeDataError(
            f"{p}: need at least two model columns of labels (True/False, or scores in [0, 1]); "
            f"found {len(models)}" + (f": {', '.join(repr(m) for m in models)}" if models else "")
            + f" (columns: {', '.join(repr(h) for h in header)})"
        )
    kept = metadata + skipped
    if kept:
        notes.append(f"columns that are not model labels, kept as metadata (groups): {', '.join(kept)}")
    with_text = [m for m in models if m + _RESPONSE_SUFFIX in col]
    stray = [h for h in header if h.endswith(_RESPONSE_SUFFIX) and h[: -len(_RESPONSE_SUFFIX)] not in models]
    if stray:
        notes.append(f"ignored response columns of no model column: {', '.join(stray)}")
    method = token_count_method() if with_text else None
    if with_text:
        notes.append(f"output tokens counted from the *_response columns ({method})")

    cells = _Cells()
    for m in models:
        cells.arm(m)
    responses: dict[str, dict[int, str]] = {m: {} for m in with_text}
    first_row: dict[str, int] = {}
    dupes: list[str] = []
    for n, (line, r) in enumerate(rows, start=1):
        where = _at(p, n, line)
        prompt = cell(r, "prompt").strip()
        if not prompt:
            raise OutcomeDataError(f"{where}, column 'prompt': the prompt is empty")
        labels: dict[str, float] = {}
        for m in models:
            raw = cell(r, m)
            if not raw.strip():
                if complete:
                    raise OutcomeDataError(
                        f"{where}, column {m!r}: {raw!r} is not a boolean {_BOOL_HELP}: "
                        "the cell is empty, and every model needs a label on every row"
                    )
                continue
            label = parse_label(raw)
            if label is None:
                raise OutcomeDataError(
                    f"{where}, column {m!r}: {raw!r} is not a boolean {_BOOL_HELP}"
                    + ("" if complete else " or a score in [0, 1]")
                )
            if complete and label not in (0.0, 1.0):
                raise OutcomeDataError(
                    f"{where}, column {m!r}: {raw!r} is not a boolean {_BOOL_HELP}: "
                    "scores are not accepted here, every label must be right or wrong"
                )
            labels[m] = label
        if prompt in first_row:
            if complete:
                dupes.append(f"{n} (same as row {first_row[prompt]})")
                for h in kept:
                    cells.group(cells.prompt(prompt), h, _group_value(cell(r, h)))
                continue
            cells.repeated_rows += 1
        else:
            first_row[prompt] = n
        i = cells.prompt(prompt)
        for h in kept:
            cells.group(i, h, _group_value(cell(r, h)))
        cells.rows += 1
        for j, m in enumerate(models):
            if m not in labels:
                continue
            tokens = None
            if m in with_text:
                text = cell(r, m + _RESPONSE_SUFFIX)
                if text:
                    responses[m].setdefault(i, text)
                    tokens = float(estimate_tokens(text))
            cells.add(i, j, labels[m], tokens=tokens)
    if dupes:
        shown = ", ".join(dupes[:10]) + (f", … ({len(dupes)} in all)" if len(dupes) > 10 else "")
        notes.append(f"{len(dupes)} repeated prompts dropped, keeping the first occurrence: rows {shown}")
    return _finish(cells, str(p), notes, str(p), complete=complete, responses=responses, token_method=method)


# -- store ------------------------------------------------------------------------------


def _logged_at(stamp: str) -> datetime:
    """A logged ISO timestamp as an aware datetime (a naive one is UTC)."""
    t = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def load_store(
    path: str | Path, *, run_id: str | None = None, latest: bool = False, complete: bool = False,
    since: datetime | None = None,
) -> OutcomeTable:
    """Load graded benchmark results from the outcome store (opened read-only).

    ``path`` is the SQLite file or PostgreSQL URL, or ``"store"`` for the configured store
    (``load_config().store.target()``). Every run's results by default, one
    ``run_id``'s, or (``latest=True``, no ``run_id``) the newest run's. Arms are the
    benchmarked arms, without the full graph (``graph``), in the order the runs list
    them; arms without any result are left out with a note. ``cost`` is ``cost_usd``,
    ``tokens`` is ``output_tokens``, ``input_tokens`` and ``latency_s`` as logged; a
    question benchmarked in several runs (or under several item ids) is one prompt,
    its labels averaged per arm. ``complete=True``: the first result of each
    (question, arm) stands, and questions without a result for every arm are left out.
    :attr:`OutcomeTable.groups` holds each question's ``suite`` (of the run that first
    benchmarked it), ``difficulty`` and ``answer_type``. ``since`` (a datetime; naive
    means UTC) keeps only the results recorded at or after it.
    """
    cutoff = None if since is None else _logged_at(since.isoformat())
    if str(path) == "store":
        from effreason_agents.config import load_config

        try:
            target: Path | str = load_config().store.target()
        except EffReasonError as exc:
            raise OutcomeDataError(f"cannot find the configured outcome store: {exc}") from None
    else:
        target = str(path) if is_postgres_url(str(path)) else Path(path).expanduser()
    p = redact_url(target) if isinstance(target, str) else target  # how it is named in messages
    if isinstance(target, Path) and not target.is_file():
        raise OutcomeDataError(f"{p}: no outcome store here; run `effreason bench` first, or pass a data file")
    notes: list[str] = []
    cells = _Cells(first=complete)
    try:
        with OutcomeStore(target, read_only=True) as store:
            runs = [{"run_id": r.run_id, "arms": r.arms, "suite": r.suite, "config_version": r.config_version}
                    for r in store.bench_runs()]
            if run_id is not None:
                picked = [r for r in runs if r["run_id"] == run_id]
                if not picked:
                    known = ", ".join(str(r["run_id"]) for r in runs[-20:]) or "none"
                    raise OutcomeDataError(f"{p}: no benchmark run {run_id!r} (runs: {known})")
                runs = picked
            elif latest:
                if not runs:
                    raise OutcomeDataError(f"{p}: no benchmark runs; run `effreason bench` first")
                runs = runs[-1:]
            for run in runs:
                rid = str(run["run_id"])
                for a in run["arms"] or []:
                    if str(a) != GRAPH_ARM:
                        cells.arm(str(a))
                for res in store.bench_results(rid):
                    if res.arm == GRAPH_ARM or (cutoff is not None and _logged_at(res.created_at) < cutoff):
                        continue
                    q = res.question.strip()
                    if not q:
                        raise OutcomeDataError(
                            f"{p}: run {rid}, item {res.item_id!r}, arm {res.arm!r}, column 'question': the question is empty"
                        )
                    try:
                        cost = float(Decimal(res.cost_usd))
                    except InvalidOperation:
                        raise OutcomeDataError(
                            f"{p}: run {rid}, item {res.item_id!r}, arm {res.arm!r}, column 'cost_usd': "
                            f"{res.cost_usd!r} is not a number"
                        ) from None
                    cells.rows += 1
                    i = cells.prompt(q)
                    cells.add(i, cells.arm(res.arm), float(res.correct), cost=cost,
                              tokens=float(res.output_tokens), input_tokens=float(res.input_tokens),
                              latency_s=float(res.latency_s))
                    cells.group(i, "suite", _group_value(run["suite"]))
                    cells.group(i, "difficulty", _group_value(res.difficulty))
                    cells.group(i, "answer_type", _group_value(res.answer_type))
    except StoreError as exc:
        raise OutcomeDataError(f"{p}: {exc}") from None
    except ValidationError as exc:
        raise OutcomeDataError(f"{p}: a benchmark result does not match the schema ({exc})") from None
    one = runs[0] if len(runs) == 1 and (run_id is not None or latest) else None
    scope = (f"run {one['run_id']}, suite {one['suite']}" if one is not None
             else f"{len(runs)} run{'s' if len(runs) != 1 else ''}")
    if cutoff is not None:
        scope += f", results since {cutoff.isoformat(timespec='seconds')}"
    if cells.rows == 0:
        raise OutcomeDataError(f"{p}: no benchmark results ({scope}); run `effreason bench` first")
    # Arms a run listed but never produced a result for carry no label: drop them.
    labelled = {j for (_, j) in cells.label}
    idle = [a for a, j in cells.arms.items() if j not in labelled]
    if idle:
        notes.append(f"arms with no results, left out: {', '.join(idle)}")
        cells.drop_arms(idle)
    notes.append(f"benchmark results of {scope}, without the '{GRAPH_ARM}' arm")
    return _finish(
        cells, f"{p} ({scope})", notes, str(p), complete=complete, token_method=TOKENS_LOGGED,
        run_id=None if one is None else str(one["run_id"]),
        config_version=None if one is None or one["config_version"] is None else str(one["config_version"]),
    )


# -- the loader -------------------------------------------------------------------------


def load_table(
    path: str | Path,
    fmt: str | None = None,
    *,
    arms: Sequence[str] | None = None,
    run_id: str | None = None,
) -> OutcomeTable:
    """Load graded outcomes as an :class:`OutcomeTable`.

    ``fmt`` is ``"store"``, ``"long"`` or ``"wide"``; ``None`` infers it
    (:func:`infer_format`). ``arms`` selects and orders the arms (a weak/strong pair
    is ``arms=[weak, strong]``); an unknown name raises :class:`OutcomeDataError`
    listing the available arms. ``run_id`` filters the store's benchmark runs (other
    formats reject it). See the module docstring for the formats and the rules.
    """
    if fmt is None:
        fmt = infer_format(path)
    fmt = str(fmt).strip().lower()
    if fmt not in FORMATS:
        raise OutcomeDataError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")
    if run_id is not None and fmt != "store":
        raise OutcomeDataError(f"{path}: a run id only applies to the outcome store (format 'store'), not to {fmt!r}")
    if fmt == "store":
        table = load_store(path, run_id=run_id)
    elif fmt == "long":
        table = load_long(path)
    else:
        table = load_wide(path)
    if arms is None:
        return table
    return select_arms(table, arms)


def select_arms(table: OutcomeTable, arms: Sequence[str]) -> OutcomeTable:
    """``table`` with only ``arms``, in that order (unknown names raise :class:`OutcomeDataError`);
    prompts left without any label are dropped with a note. Every optional matrix that
    was present stays present."""
    where = _where(table.source)
    chosen = list(dict.fromkeys(str(a) for a in arms))
    unknown = [a for a in chosen if a not in table.arms]
    if unknown:
        raise OutcomeDataError(
            f"{where}: unknown arm{'s' if len(unknown) > 1 else ''} {', '.join(repr(a) for a in unknown)}; "
            f"available arms: {', '.join(table.arms)}"
        )
    # Notes about missing labels describe the whole table; they are recomputed for the selection.
    notes = [n for n in table.notes if not n.endswith("(NaN in the table)")]
    left_out = [a for a in table.arms if a not in chosen]
    if left_out:
        notes.append(f"arms not selected, left out: {', '.join(left_out)}")
    picked = table._take(list(range(len(table))), [table.arms.index(a) for a in chosen], notes)
    return _checked(picked, where, notes)


def _where(source: str) -> str:
    return source.split(" (", 1)[0] if source else "the data"
