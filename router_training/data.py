"""Training data for routers: graded outcomes of several arms, as an :class:`OutcomeTable`.

Three formats, one loader (:func:`load_table`):

``store``
    The project's outcome store (an SQLite path, or the literal ``"store"`` for the
    configured one). The labelled rows are benchmark results (``bench_results``):
    the item's question, the arm, ``correct``, ``cost_usd`` and ``output_tokens``;
    every run by default, or one ``run_id``. The full graph (arm ``graph``) is not an
    arm a router can pick, so it is left out.
``long``
    JSONL or CSV, one row per (prompt, arm) outcome: ``prompt``; ``arm`` (or
    ``model``); ``correct`` (a boolean: true/false, 1/0, yes/no, any case) or
    ``score`` (a number in [0, 1]); optional ``output_tokens`` (or ``tokens``) and
    ``cost_usd`` (or ``cost``). Other columns are ignored.
``wide``
    RouteLLM's published CSV, one row per prompt: ``prompt``; one column per model
    id holding True/False (or 1/0, yes/no, or a score in [0, 1]); optional
    ``<model id>_response`` columns with the raw reply, which are never labels but,
    when present, give the output token count of that model's reply
    (:func:`effreason_agents.adapters.tiers.estimate_tokens`: o200k BPE, or a bytes/3 bound
    without ``bpe-openai``; a note says which). Metadata columns (``sample_id``,
    ``eval_name``, ``gold``, an index column, …) and any column whose values are
    mostly not labels are ignored (a note names them). An empty cell means "this
    model has no result for this prompt" (``NaN`` in the table).

Rules shared by every format:

* prompts are stripped; rows whose prompts are identical after stripping are one
  prompt, and several labels (or costs, token counts) for one (prompt, arm) are
  averaged — a note says how many were merged;
* ``arms`` selects and orders the arms (unknown names are an error listing the
  available ones); prompts left with no label for any selected arm are dropped
  (with a note);
* bad input raises :class:`RouterDataError` naming the file, the column and the row,
  and nothing is returned. Rows are numbered as the lines a user sees in an editor
  (line 1 is a CSV's header; in JSONL, line 1 is the first record); a CSV record
  that spans several lines is numbered by its first line.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from effreason_agents.errors import EffReasonError

from .table import OutcomeTable

__all__ = [
    "FORMATS",
    "RouterDataError",
    "infer_format",
    "load_long",
    "load_store",
    "load_table",
    "load_wide",
    "parse_bool",
    "select_arms",
]

FORMATS = ("store", "long", "wide")

# The arm of the full cost-aware graph in bench_results (same as effreason_agents.evaluation.replay.GRAPH_ARM).
GRAPH_ARM = "graph"

_TRUE = frozenset({"true", "1", "1.0", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "0.0", "no", "n", "f"})
_BOOL_HELP = "(true/false/1/0/yes/no)"
_RESPONSE_SUFFIX = "_response"
# Wide-CSV columns that are never a model: an index column, RouteLLM's metadata and few-shot columns.
_WIDE_METADATA = re.compile(
    r"^(?:|unnamed: ?\d+|index|id|sample_id|eval_name|gold|answer|examples|category|subject|difficulty|split)$", re.I
)
_STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


class RouterDataError(EffReasonError, ValueError):
    """Router training data cannot be loaded; the message names the file, column and row."""


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


def _parse_label(value: Any) -> float | None:
    """Wide-CSV cell: a boolean spelling or a score in [0, 1], as a float label."""
    b = parse_bool(value)
    if b is not None:
        return float(b)
    return _parse_score(value)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


# -- accumulating labels ----------------------------------------------------------------


@dataclass
class _Cells:
    """Sums and counts of labels, costs and token counts per (prompt, arm), in first-seen order."""

    prompts: dict[str, int] = field(default_factory=dict)
    arms: dict[str, int] = field(default_factory=dict)
    label: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # [sum, count]
    cost: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    tokens: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    rows: int = 0
    repeated_rows: int = 0  # wide: rows whose prompt came before

    def arm(self, name: str) -> int:
        return self.arms.setdefault(name, len(self.arms))

    def prompt(self, text: str) -> int:
        i = self.prompts.get(text)
        if i is None:
            i = self.prompts[text] = len(self.prompts)
        return i

    def add(self, i: int, j: int, label: float, cost: float | None = None, tokens: float | None = None) -> None:
        for store, value in ((self.label, label), (self.cost, cost), (self.tokens, tokens)):
            if value is None:
                continue
            acc = store.setdefault((i, j), [0.0, 0])
            acc[0] += value
            acc[1] += 1

    def merged(self) -> int:
        """Labels beyond the first for each (prompt, arm): how many were averaged away."""
        return sum(int(c) - 1 for _, c in self.label.values())

    def matrix(self, which: str) -> np.ndarray | None:
        cells = getattr(self, which)
        if which != "label" and not cells:
            return None
        m = np.full((len(self.prompts), len(self.arms)), np.nan)
        for (i, j), (s, c) in cells.items():
            m[i, j] = s / c
        return m


def _finish(cells: _Cells, source: str, notes: list[str], arms: Sequence[str] | None, where: str) -> OutcomeTable:
    """The table of ``cells`` restricted to ``arms``, with the shared checks and notes."""
    if not cells.label:
        raise RouterDataError(f"{where}: no rows with a correctness label")
    merged = cells.merged()
    if merged:
        affected = sum(1 for _, c in cells.label.values() if c > 1)
        notes.append(
            f"merged {merged} duplicate labels: {affected} (prompt, arm) pairs were graded more than once "
            "(prompts compared after stripping whitespace); their labels, costs and token counts were averaged"
        )
    if cells.repeated_rows:
        notes.append(f"{cells.repeated_rows} rows repeated an earlier prompt and were merged into it")
    prompts = list(cells.prompts)
    available = list(cells.arms)
    correct = cells.matrix("label")
    cost = cells.matrix("cost")
    tokens = cells.matrix("tokens")
    assert correct is not None
    if arms is not None:
        chosen = list(dict.fromkeys(str(a) for a in arms))
        unknown = [a for a in chosen if a not in cells.arms]
        if unknown:
            raise RouterDataError(
                f"{where}: unknown arm{'s' if len(unknown) > 1 else ''} {', '.join(repr(a) for a in unknown)}; "
                f"available arms: {', '.join(available)}"
            )
        cols = [cells.arms[a] for a in chosen]
        left_out = [a for a in available if a not in chosen]
        if left_out:
            notes.append(f"arms not selected, left out: {', '.join(left_out)}")
        correct = correct[:, cols]
        cost = None if cost is None else cost[:, cols]
        tokens = None if tokens is None else tokens[:, cols]
        available = chosen
    if len(available) < 2:
        raise RouterDataError(
            f"{where}: a router needs at least two arms; found {len(available)}"
            + (f" ({', '.join(repr(a) for a in available)})" if available else "")
        )
    empty_arms = [a for j, a in enumerate(available) if not np.isfinite(correct[:, j]).any()]
    if empty_arms:
        raise RouterDataError(f"{where}: no labels for arm{'s' if len(empty_arms) > 1 else ''} {', '.join(empty_arms)}")
    keep = np.isfinite(correct).any(axis=1)
    if not keep.all():
        notes.append(f"{int((~keep).sum())} prompts without a label for any selected arm left out")
        prompts = [p for p, k in zip(prompts, keep) if k]
        correct = correct[keep]
        cost = None if cost is None else cost[keep]
        tokens = None if tokens is None else tokens[keep]
    missing = int(np.isnan(correct).sum())
    if missing:
        notes.append(f"{missing} (prompt, arm) pairs have no label (NaN in the table)")
    return OutcomeTable(prompts, available, correct, cost, tokens, source, notes)


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
    raise RouterDataError(
        f"{p}: cannot tell the format from the name; pass the format (one of {', '.join(FORMATS)}): "
        "long = JSONL/CSV with prompt, arm, correct; wide = RouteLLM's CSV; store = the outcome store"
    )


def _check_file(p: Path) -> None:
    if p.is_dir():
        raise RouterDataError(f"{p}: is a directory, not a data file")
    if not p.is_file():
        raise RouterDataError(f"{p}: no such file")


def _csv_header(p: Path) -> list[str]:
    _check_file(p)
    with _csv_errors(p), p.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if any(c.strip() for c in row):
                return row
    raise RouterDataError(f"{p}: the file is empty")


@contextmanager
def _csv_errors(p: Path) -> Iterator[None]:
    """Reading ``p`` as CSV: undecodable, malformed or unreadable files become a
    :class:`RouterDataError` naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise RouterDataError(f"{p}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise RouterDataError(f"{p}: not a valid CSV file ({exc})") from None
    except OSError as exc:
        raise RouterDataError(f"{p}: cannot read the file ({exc})") from None


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
        raise RouterDataError(f"{p}: the file is empty")
    seen: set[str] = set()
    for h in header:
        if h and h in seen:
            raise RouterDataError(f"{p}: column {h!r} appears twice in the header")
        seen.add(h)
    return header, rows


def _read_jsonl(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    _check_file(p)
    try:
        with p.open(encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise RouterDataError(f"{p}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise RouterDataError(f"{p}: cannot read the file ({exc})") from None
    if not any(line.strip() for line in lines):
        raise RouterDataError(f"{p}: the file is empty")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RouterDataError(f"{p}: row {n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise RouterDataError(f"{p}: row {n}: expected a JSON object with 'prompt', 'arm' and 'correct' keys")
        yield n, obj


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
        raise RouterDataError(f"{where}, column {column!r}: {_show(value)} is not {what}")
    return x


def _long_records(p: Path) -> tuple[list[str] | None, Iterator[tuple[int, dict[str, Any]]]]:
    """(CSV header or None for JSONL, records as dicts keyed by lower-cased column name)."""
    suffix = p.suffix.lower()
    jsonl = suffix in _JSONL_SUFFIXES or suffix == ".json"
    if not jsonl and suffix != ".csv":
        # Unknown extension: a JSONL file starts with "{".
        _check_file(p)
        try:
            with p.open(encoding="utf-8-sig") as fh:
                head = fh.read(4096).lstrip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RouterDataError(f"{p}: cannot read the file ({exc})") from None
        jsonl = head.startswith("{")
    if jsonl:
        return None, ((n, {str(k).strip().lower(): v for k, v in obj.items()}) for n, obj in _read_jsonl(p))
    header, rows = _read_csv(p)
    keys = [h.lower() for h in header]
    return header, ((line, {k: (r[i] if i < len(r) else "") for i, k in enumerate(keys) if k}) for line, r in rows)


def _first(present: set[str], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in present), None)


def load_long(path: str | Path) -> OutcomeTable:
    """Load the long format (JSONL, or CSV with a header): one outcome per row.

    Columns (names matched case-insensitively): ``prompt``; ``arm`` or ``model``
    (``arm`` wins when both are present); ``correct`` (a boolean) or ``score`` (a
    number in [0, 1]) — with both columns, a row may fill either, ``correct`` winning;
    optional ``output_tokens`` (or ``tokens``) and ``cost_usd`` (or ``cost``): empty
    means unknown, otherwise a non-negative number.
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
            raise RouterDataError(
                f"{p}: missing required columns: {', '.join(lack)} (columns: {', '.join(repr(h) for h in header)}); "
                f"the long format needs {needed}"
            )
        if {"arm", "model"} <= present:
            notes.append("both 'arm' and 'model' columns: arms are named by 'arm'")
    for line, rec in records:
        where = f"{p}: row {line}"
        present = {k for k, v in rec.items() if k}
        if header is None:
            lack = missing(present)
            if lack:
                raise RouterDataError(f"{where}: missing required columns: {', '.join(lack)}; the long format needs {needed}")
        prompt_raw = rec.get("prompt")
        if not isinstance(prompt_raw, str) or not prompt_raw.strip():
            shown = "empty" if _is_empty(prompt_raw) else f"not text ({_show(prompt_raw)})"
            raise RouterDataError(f"{where}, column 'prompt': the prompt is {shown}")
        arm_col = "arm" if "arm" in present else "model"
        arm_raw = rec.get(arm_col)
        if _is_empty(arm_raw) or not isinstance(arm_raw, (str, int)) or isinstance(arm_raw, bool):
            raise RouterDataError(f"{where}, column {arm_col!r}: the arm name is empty or not text")
        arm = str(arm_raw).strip()
        label: float | None
        if "correct" in rec and not _is_empty(rec["correct"]):
            b = parse_bool(rec["correct"])
            if b is None:
                raise RouterDataError(f"{where}, column 'correct': {_show(rec['correct'])} is not a boolean {_BOOL_HELP}")
            label = float(b)
        elif "score" in rec and not _is_empty(rec["score"]):
            label = _parse_score(rec["score"])
            if label is None:
                raise RouterDataError(f"{where}, column 'score': {_show(rec['score'])} is not a number in [0, 1]")
        else:
            col = "correct" if "correct" in rec else "score"
            raise RouterDataError(f"{where}, column {col!r}: the correctness value is empty")
        tok_col = _first(present, ("output_tokens", "tokens"))
        cost_col = _first(present, ("cost_usd", "cost"))
        tokens = _number(rec.get(tok_col), where, tok_col, "a token count (a non-negative number)") if tok_col else None
        cost = _number(rec.get(cost_col), where, cost_col, "a cost (a non-negative number)") if cost_col else None
        cells.rows += 1
        cells.add(cells.prompt(prompt_raw.strip()), cells.arm(arm), label, cost, tokens)
    if cells.rows == 0:
        raise RouterDataError(f"{p}: no data rows" + (" after the header" if header is not None else ""))
    return _finish(cells, str(p), notes, None, str(p))


# -- wide -------------------------------------------------------------------------------


def load_wide(path: str | Path) -> OutcomeTable:
    """Load RouteLLM's wide CSV: a ``prompt`` column and one label column per model.

    A column is a model's when it is not ``prompt``, not a ``*_response`` column, not a
    known metadata name (``sample_id``, ``eval_name``, ``gold``, ``answer``, ``index``,
    ``id``, ``examples``, ``category``, ``subject``, ``difficulty``, ``split``, unnamed
    index columns) and at least half of its non-empty cells are labels (a boolean
    spelling or a number in [0, 1]); then every non-empty cell must be one. Empty cells
    are missing results (``NaN``). ``<model>_response`` texts, when present, give the
    output token counts (``tokens``); there are no costs.
    """
    from effreason_agents.adapters.tiers import estimate_tokens, token_count_method

    p = Path(path)
    header, rows = _read_csv(p)
    if "prompt" not in header:
        raise RouterDataError(
            f"{p}: missing required columns: 'prompt' (columns: {', '.join(repr(h) for h in header)}); "
            "the wide format needs a 'prompt' column and one True/False column per model"
        )
    col = {h: i for i, h in enumerate(header) if h}
    if not rows:
        raise RouterDataError(f"{p}: no data rows after the header")

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
        n_label = sum(_parse_label(v) is not None for v in filled)
        (models if filled and 2 * n_label >= len(filled) else skipped).append(h)
    ignored = metadata + skipped
    if ignored:
        notes.append(f"ignored columns that are not model labels: {', '.join(ignored)}")
    with_text = [m for m in models if m + _RESPONSE_SUFFIX in col]
    stray = [h for h in header if h.endswith(_RESPONSE_SUFFIX) and h[: -len(_RESPONSE_SUFFIX)] not in models]
    if stray:
        notes.append(f"ignored response columns of no model column: {', '.join(stray)}")
    if with_text:
        notes.append(f"output tokens counted from the *_response columns ({token_count_method()})")

    cells = _Cells()
    for m in models:
        cells.arm(m)
    for line, r in rows:
        prompt = cell(r, "prompt").strip()
        if not prompt:
            raise RouterDataError(f"{p}: row {line}, column 'prompt': the prompt is empty")
        if prompt in cells.prompts:
            cells.repeated_rows += 1
        i = cells.prompt(prompt)
        cells.rows += 1
        for j, m in enumerate(models):
            raw = cell(r, m)
            if not raw.strip():
                continue
            label = _parse_label(raw)
            if label is None:
                raise RouterDataError(
                    f"{p}: row {line}, column {m!r}: {raw!r} is not a boolean {_BOOL_HELP} or a score in [0, 1]"
                )
            tokens = None
            if m in with_text:
                text = cell(r, m + _RESPONSE_SUFFIX)
                tokens = float(estimate_tokens(text)) if text else None
            cells.add(i, j, label, None, tokens)
    if len(models) < 2:
        raise RouterDataError(
            f"{p}: a router needs at least two arms; found {len(models)} model column"
            f"{'' if len(models) == 1 else 's'} of True/False or score values"
            + (f" ({', '.join(repr(m) for m in models)})" if models else "")
            + f" (columns: {', '.join(repr(h) for h in header)})"
        )
    return _finish(cells, str(p), notes, None, str(p))


# -- store ------------------------------------------------------------------------------


def load_store(path: str | Path, *, run_id: str | None = None) -> OutcomeTable:
    """Load graded benchmark results from the outcome store (opened read-only).

    ``path`` is the SQLite file, or ``"store"`` for the configured store
    (``load_config().store.resolved_path()``). Every run's results by default, or one
    ``run_id``'s. Arms are the benchmarked arms, without the full graph (``graph``), in
    the order the runs list them. ``cost`` is ``cost_usd`` and ``tokens`` is
    ``output_tokens`` per result; a question benchmarked in several runs (or under
    several item ids) is one prompt, its labels averaged per arm.
    """
    from pydantic import ValidationError

    from effreason_agents.errors import StoreError
    from effreason_agents.adapters.store import OutcomeStore

    if str(path) == "store":
        from effreason_agents.config import load_config

        try:
            p = load_config().store.resolved_path()
        except EffReasonError as exc:
            raise RouterDataError(f"cannot find the configured outcome store: {exc}") from None
    else:
        p = Path(path).expanduser()
    if not p.is_file():
        raise RouterDataError(f"{p}: no outcome store here; run `effreason bench` first, or pass a data file")
    notes: list[str] = []
    cells = _Cells()
    try:
        with OutcomeStore(p, read_only=True) as store:
            # OutcomeStore has no public listing of runs; its read-only query helper is used for that.
            runs = [(str(r["run_id"]), str(r["arms"] or "[]"))
                    for r in store._query("SELECT run_id, arms FROM bench_runs ORDER BY created_at, rowid")]
            if run_id is not None:
                picked = [r for r in runs if r[0] == run_id]
                if not picked:
                    known = ", ".join(r for r, _ in runs[-20:]) or "none"
                    raise RouterDataError(f"{p}: no benchmark run {run_id!r} (runs: {known})")
                runs = picked
            for rid, listed in runs:
                try:
                    for a in json.loads(listed):
                        if str(a) != GRAPH_ARM:
                            cells.arm(str(a))
                except (json.JSONDecodeError, TypeError):
                    pass
                for res in store.bench_results(rid):
                    if res.arm == GRAPH_ARM:
                        continue
                    q = res.question.strip()
                    if not q:
                        raise RouterDataError(
                            f"{p}: run {rid}, item {res.item_id!r}, arm {res.arm!r}, column 'question': the question is empty"
                        )
                    try:
                        cost = float(Decimal(res.cost_usd))
                    except InvalidOperation:
                        raise RouterDataError(
                            f"{p}: run {rid}, item {res.item_id!r}, arm {res.arm!r}, column 'cost_usd': "
                            f"{res.cost_usd!r} is not a number"
                        ) from None
                    cells.rows += 1
                    cells.add(cells.prompt(q), cells.arm(res.arm), float(res.correct), cost, float(res.output_tokens))
    except StoreError as exc:
        raise RouterDataError(f"{p}: {exc}") from None
    except ValidationError as exc:
        raise RouterDataError(f"{p}: a benchmark result does not match the schema ({exc})") from None
    scope = f"run {run_id}" if run_id is not None else f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    if cells.rows == 0:
        raise RouterDataError(f"{p}: no benchmark results ({scope}); run `effreason bench` first")
    # Arms a run listed but never produced a result for carry no label: drop them.
    labelled = {j for (_, j) in cells.label}
    idle = [a for a, j in cells.arms.items() if j not in labelled]
    if idle:
        notes.append(f"arms with no results, left out: {', '.join(idle)}")
        keep = [a for a in cells.arms if a not in idle]
        remap = {cells.arms[a]: n for n, a in enumerate(keep)}
        for store_ in (cells.label, cells.cost, cells.tokens):
            moved = {(i, remap[j]): v for (i, j), v in store_.items()}
            store_.clear()
            store_.update(moved)
        cells.arms = {a: n for n, a in enumerate(keep)}
    notes.append(f"benchmark results of {scope}, without the '{GRAPH_ARM}' arm")
    return _finish(cells, f"{p} ({scope})", notes, None, str(p))


# -- the loader -------------------------------------------------------------------------


def load_table(
    path: str | Path,
    fmt: str | None = None,
    *,
    arms: Sequence[str] | None = None,
    run_id: str | None = None,
) -> OutcomeTable:
    """Load router training data as an :class:`OutcomeTable`.

    ``fmt`` is ``"store"``, ``"long"`` or ``"wide"``; ``None`` infers it
    (:func:`infer_format`). ``arms`` selects and orders the arms (a weak/strong pair
    is ``arms=[weak, strong]``); an unknown name raises :class:`RouterDataError`
    listing the available arms. ``run_id`` filters the store's benchmark runs (other
    formats reject it). See the module docstring for the formats and the rules.
    """
    if fmt is None:
        fmt = infer_format(path)
    fmt = str(fmt).strip().lower()
    if fmt not in FORMATS:
        raise RouterDataError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")
    if run_id is not None and fmt != "store":
        raise RouterDataError(f"{path}: a run id only applies to the outcome store (format 'store'), not to {fmt!r}")
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
    """``table`` with only ``arms``, in that order (unknown names raise :class:`RouterDataError`);
    prompts left without any label are dropped with a note."""
    cells = _Cells()
    for a in table.arms:
        cells.arm(a)
    for i, q in enumerate(table.prompts):
        cells.prompt(q)
        for j in range(len(table.arms)):
            if np.isfinite(table.correct[i, j]):
                cells.label[(i, j)] = [float(table.correct[i, j]), 1]
            for name in ("cost", "tokens"):
                m = getattr(table, name)
                if m is not None and np.isfinite(m[i, j]):
                    getattr(cells, name)[(i, j)] = [float(m[i, j]), 1]
    out = _finish(cells, table.source, list(table.notes), arms, _where(table.source))
    # A matrix that was present stays present, even if every selected value is unknown.
    if table.cost is not None and out.cost is None:
        out.cost = np.full(out.correct.shape, np.nan)
    if table.tokens is not None and out.tokens is None:
        out.tokens = np.full(out.correct.shape, np.nan)
    return out


def _where(source: str) -> str:
    return source.split(" (", 1)[0] if source else "the data"
