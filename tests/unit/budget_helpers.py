"""Plain helpers for the budget-protocol tests: configurations whose tiers are loopback fake
OpenAI servers (:mod:`fake_openai`), questions that make prompts worth pricing, and the
checks every scenario ends with, read from the ledger's tables themselves (its SQLite file,
or its PostgreSQL database when given a ``postgresql://`` URL).

The checks are the budget protocol of DESIGN.md seen from outside:

* spend never exceeds a cap, for every scope (request, thread, user);
* no hold is left open once the requests are done;
* every provider call answered with HTTP 200 is settled exactly once, and nothing else is
  (``calls == committed holds``);
* the ledger's spend equals what the results report was billed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.config import Config
from effreason_agents.core.money import call_cost, to_micro
from effreason_agents.core.records import Scope

__all__ = [
    "HOLD_STATUSES",
    "QUESTION_BODY",
    "assert_budget_kept",
    "billed_micro",
    "config_data",
    "fake_tier",
    "hold_counts",
    "ledger_rows",
    "limited_scopes",
    "make_config",
    "question",
    "results_micro",
    "run_all",
]

T = TypeVar("T")

HOLD_STATUSES = ("reserved", "committed", "released")
QUESTION_BODY = "请计算下列数字之和：3141592653 5897932384 6264338327 9502884197 " * 11
"""About 600 characters of CJK and digits (about 300 o200k tokens, 820 UTF-8 bytes). A
provider with a smaller vocabulary (``over_report``) reports 1.4 × the o200k count, which
is more than an o200k count plus a fixed allowance for the chat template: only a bound that
cannot be beaten (UTF-8 bytes) holds such a prompt's true cost. With about 100 characters
the over-report would stay inside the allowance and the scenario could not catch that."""


def question(i: int) -> str:
    """The ``i``-th distinct question (about 600 characters of CJK and digits)."""
    return f"第{i:04d}题 {QUESTION_BODY}".strip()


def fake_tier(base_url: str, *, price_in: str = "1.0", price_out: str = "4.0", timeout_s: float = 10.0,
              max_retries: int = 0, **extra: Any) -> dict[str, Any]:
    """An ``openai-compatible`` tier on a fake server, with logprobs, prices per 1M tokens."""
    return {
        "engine": "openai-compatible",
        "model": "fake",
        "base_url": base_url,
        "price_input_per_1m": price_in,
        "price_output_per_1m": price_out,
        "context_window": 8192,
        "timeout_s": timeout_s,
        "max_retries": max_retries,
        "capabilities": {"logprobs": True, "top_logprobs": 2},
        **extra,
    }


def config_data(tmp: Path, tiers: Mapping[str, Mapping[str, Any]], ladder: Sequence[str], *,
                budget: Mapping[str, Any] | None = None, max_tokens: int = 24) -> dict[str, Any]:
    """JSON-plain configuration data: the tiers, a ``direct`` strategy, the ladder (every
    difficulty starts at its first arm), calibrators off, store and ledger in ``tmp``."""
    first = ladder[0]
    return {
        "tiers": {name: dict(t) for name, t in tiers.items()},
        "strategies": {"direct": {"kind": "direct", "max_tokens": max_tokens}},
        "ladder": list(ladder),
        "escalation": {"start_arm": {"easy": first, "medium": first, "hard": first}, "calibrators": "off"},
        "budget": {**(budget or {}), "ledger_path": str(tmp / "ledger.sqlite")},
        "store": {"path": str(tmp / "outcomes.sqlite")},
        "source": "budget-protocol test",
    }


def make_config(tmp: Path, tiers: Mapping[str, Mapping[str, Any]], ladder: Sequence[str], **kw: Any) -> Config:
    return Config.model_validate(config_data(tmp, tiers, ladder, **kw))


# -- reading the ledger (a SQLite file or a PostgreSQL database) ----------------------------


def _is_url(target: Path | str) -> bool:
    return isinstance(target, str) and target.lstrip().lower().startswith(("postgresql://", "postgres://"))


def _select(target: Path | str, sql: str) -> list[dict[str, Any]]:
    """The rows of one ``SELECT`` on the ledger at ``target``, read without the library:
    sqlite3 (read-only) for a file, psycopg for a ``postgresql://`` URL. ``[]`` when the
    file or the table does not exist yet."""
    if _is_url(target):
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(str(target).strip(), autocommit=True, row_factory=dict_row) as pg:
            try:
                return [dict(r) for r in pg.execute(sql).fetchall()]
            except psycopg.errors.UndefinedTable:
                return []
    if not Path(target).exists():
        return []
    conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]
    except sqlite3.OperationalError as exc:  # no table yet
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def ledger_rows(target: Path | str) -> list[dict[str, Any]]:
    """Every row of the ledger's ``reservations`` table: ``target`` is the SQLite file or the
    PostgreSQL database URL (``[]`` when the file or the table does not exist)."""
    return _select(target, "SELECT * FROM reservations")


def hold_counts(target: Path | str) -> dict[str, int]:
    """How many holds are ``reserved`` (open), ``committed`` (settled) and ``released``."""
    counts = dict.fromkeys(HOLD_STATUSES, 0)
    for row in ledger_rows(target):
        counts[row["status"]] += 1
    return counts


# -- money --------------------------------------------------------------------------------


def results_micro(results: Iterable[Mapping[str, Any]]) -> int:
    """What the graph results say was billed: each attempt's cost in whole micro-dollars."""
    return sum(to_micro(Decimal(str(a.get("cost_usd") or "0"))) for r in results for a in r.get("attempts") or [])


def billed_micro(responses: Iterable[Mapping[str, Any]], tier: Mapping[str, Any]) -> int:
    """What a provider billed for the 200 responses it sent (their reported usage at the tier's
    prices), each call in whole micro-dollars rounded up, as the ledger settles them."""
    total = 0
    for body in responses:
        usage = body["usage"]
        total += to_micro(call_cost(int(usage["prompt_tokens"]), int(usage["completion_tokens"]),
                                    Decimal(str(tier["price_input_per_1m"])),
                                    Decimal(str(tier["price_output_per_1m"]))))
    return total


def limited_scopes(target: Path | str) -> list[Scope]:
    """Every scope that has limits in the ledger (a SQLite file or a PostgreSQL URL)."""
    return [Scope(r["kind"], r["scope_key"]) for r in _select(target, "SELECT kind, scope_key FROM scope_limits")]


def assert_budget_kept(ledger: BudgetLedger, path: Path | str, *, calls: int) -> None:
    """The checks every scenario ends with (see the module docstring), for every scope
    with limits in the ledger (``path``: its SQLite file or PostgreSQL URL): no cap
    exceeded, no hold open, every settled hold within its worst case, and exactly one
    settled hold per call the providers answered."""
    scopes = limited_scopes(path)
    assert scopes, f"no scope has limits in {path}: the scenario did not reach the ledger"
    for scope in scopes:
        limits = ledger.limits(scope)
        spent = ledger.spent(scope)
        assert limits is not None
        if limits.max_cost_usd is not None:
            assert spent.micro_usd <= to_micro(limits.max_cost_usd), (
                f"{scope} spent {spent.cost_usd} USD, over its cap of {limits.max_cost_usd}")
        if limits.max_total_tokens is not None:
            assert spent.total_tokens <= limits.max_total_tokens, f"{scope} is over its total-token cap"
        if limits.max_output_tokens is not None:
            assert spent.output_tokens <= limits.max_output_tokens, f"{scope} is over its output-token cap"
    rows = ledger_rows(path)
    counts = hold_counts(path)
    assert counts["reserved"] == 0, f"{counts['reserved']} holds are still open: {counts}"
    assert counts["committed"] == calls, (
        f"the providers answered {calls} calls with HTTP 200, but {counts['committed']} holds were settled: {counts}")
    for row in rows:
        if row["status"] != "committed":
            continue
        for q in ("output_tokens", "total_tokens", "micro_usd"):
            assert row[f"actual_{q}"] <= row[f"reserved_{q}"], (
                f"hold {row['key']!r} was not a true upper bound: settled {q} {row[f'actual_{q}']} > held "
                f"{row[f'reserved_{q}']}")


def run_all(fn: Callable[[int], T], n: int, workers: int | None = None) -> list[T]:
    """``fn(0) … fn(n-1)`` from ``workers`` threads at once (default: all ``n``), in order;
    the first exception is raised."""
    with ThreadPoolExecutor(max_workers=workers or n) as pool:
        return list(pool.map(fn, range(n)))


# -- PostgreSQL test servers --------------------------------------------------------------


def with_password(url: str, password: str) -> str:
    """pgserver's ``postgresql://postgres:@/db?host=…`` with ``password`` in it; the test
    server trusts local connections, so it still connects."""
    assert url.startswith("postgresql://postgres:@"), url
    return url.replace("postgresql://postgres:@", f"postgresql://postgres:{password}@", 1)


def wait_until(condition: Callable[[], Any], what: str, within_s: float = 60.0) -> Any:
    """``condition()``'s first truthy value, polled every 20 ms; AssertionError naming
    ``what`` after ``within_s`` seconds."""
    import time

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {within_s} s")
