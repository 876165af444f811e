"""Virtual API keys for the OpenAI-compatible server: who may call it, what each caller
may spend, and how often.

A key is ``sk-er-`` followed by 256 random bits, shown once when it is created. Only its
SHA-256 is stored, in the budget ledger's database (tables ``api_keys`` and
``rate_windows``, migration ``0003_virtual_keys``; a SQLite file or PostgreSQL), so the
database never holds a usable key.

* **Budget.** Each key spends as the ledger's user scope ``key:<id>``
  (:attr:`VirtualKey.scope`); a conversation thread of a key is the thread scope
  ``key:<id>:<thread id>`` (:meth:`VirtualKey.thread_scope`), so two keys never share a
  thread's budget. A key created with ``budget_usd`` has that dollar limit written to the
  ledger with it; without one, the configuration's ``[budget.user]`` limits apply from its
  first model call. ``thread_budget_usd`` caps each of its threads.
* **Requests per minute.** :meth:`KeyStore.admit` counts a key's requests in fixed
  one-minute windows with one atomic upsert, so several server worker processes (or
  replicas on one PostgreSQL database) admit at most ``rpm`` requests per key per window
  together.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from effreason_agents.adapters.database import Row
from effreason_agents.adapters.ledger import LedgerDatabase
from effreason_agents.config import LimitConfig
from effreason_agents.core.money import format_usd, from_micro, to_micro_floor
from effreason_agents.core.records import Scope
from effreason_agents.errors import VirtualKeyError

__all__ = [
    "KEY_PREFIX",
    "MAX_NAME_LENGTH",
    "KeyStore",
    "VirtualKey",
    "VirtualKeyError",
]

KEY_PREFIX = "sk-er-"
"""How every virtual key starts (so a leaked one is easy to recognise and search for)."""

MAX_NAME_LENGTH = 64
WINDOW_S = 60
_SHOWN_CHARS = 4  # random characters of the key kept in its listed prefix

_COLUMNS = "id, name, prefix, rpm, thread_max_micro_usd, created_at, revoked_at"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class VirtualKey:
    """One virtual key's record (never the key itself: that exists only in the caller's
    hands). ``prefix`` is the start of the key, for people to tell keys apart."""

    id: str
    name: str
    prefix: str
    rpm: int | None
    thread_budget_usd: Decimal | None
    created_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        """Whether requests with this key are refused."""
        return self.revoked_at is not None

    @property
    def scope(self) -> Scope:
        """The key's user scope in the budget ledger: everything it spends is charged here."""
        return Scope("user", f"key:{self.id}")

    def thread_scope(self, thread_id: str) -> Scope:
        """The ledger scope of one of this key's conversation threads (threads belong to
        one key: the same thread id under another key is another scope)."""
        if not isinstance(thread_id, str) or not thread_id:
            raise ValueError(f"a thread id must be a non-empty string, got {thread_id!r}")
        return Scope("thread", f"key:{self.id}:{thread_id}")

    def thread_limits(self) -> LimitConfig | None:
        """The limits of each of the key's threads, or ``None`` when the key sets none
        (the configuration's ``[budget.thread]`` limits apply then)."""
        if self.thread_budget_usd is None:
            return None
        return LimitConfig(max_cost_usd=self.thread_budget_usd)

    def as_json(self) -> dict[str, Any]:
        """The record as JSON-plain values (money as a decimal string; never the key)."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scope": str(self.scope),
            "rpm": self.rpm,
            "thread_budget_usd": None if self.thread_budget_usd is None else format_usd(self.thread_budget_usd),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "status": "revoked" if self.revoked else "active",
        }

    @classmethod
    def _from_row(cls, row: Row) -> VirtualKey:
        micro = row["thread_max_micro_usd"]
        return cls(
            id=row["id"],
            name=row["name"],
            prefix=row["prefix"],
            rpm=row["rpm"],
            thread_budget_usd=None if micro is None else from_micro(micro),
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
        )


def _valid_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise VirtualKeyError(f"a key needs a non-empty name, got {name!r}; pass e.g. --name alice")
    if name != name.strip():
        raise VirtualKeyError(f"key name {name!r} starts or ends with whitespace; remove it")
    if not name.isprintable():
        raise VirtualKeyError(f"key name {name!r} has control characters; use printable characters only")
    if len(name) > MAX_NAME_LENGTH:
        raise VirtualKeyError(f"key name {name[:20]!r}… is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")
    if name.startswith(KEY_PREFIX):
        raise VirtualKeyError(
            f"key names cannot start with {KEY_PREFIX!r} (that is how keys start, and names are shown "
            "in lists); name the key after its user or purpose"
        )
    return name


def _valid_budget(value: Any, what: str) -> int | None:
    """A dollar limit as whole micro-dollars, rounded down (a cap is never raised by rounding)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise VirtualKeyError(f"{what} must be an amount of USD, got {value!r}")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise VirtualKeyError(f"{what} must be an amount of USD such as 5 or 0.50, got {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise VirtualKeyError(f"{what} must be more than $0, got {value!r}")
    micro = to_micro_floor(amount)
    if micro < 1:
        raise VirtualKeyError(f"{what}={value} is below one micro-dollar ($0.000001)")
    return micro


def _valid_rpm(rpm: Any) -> int | None:
    if rpm is None:
        return None
    if isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 1:
        raise VirtualKeyError(f"rpm (requests per minute) must be a whole number >= 1, got {rpm!r}")
    return rpm


class KeyStore(LedgerDatabase):
    """The virtual keys kept in a budget ledger's database: a SQLite file or a
    ``postgresql://`` URL (the same database and migrations as
    :class:`~effreason_agents.adapters.ledger.BudgetLedger`; either opens a database the
    other created). Safe to share between threads; several processes (and, on
    PostgreSQL, replicas) may open the same database.

    Storage failures raise :class:`~effreason_agents.errors.LedgerError`; refusals (a taken
    name, an unknown key, a bad limit) raise :class:`~effreason_agents.errors.VirtualKeyError`.
    """

    def __init__(
        self, target: str | Path, *, timeout_s: float = 30.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._open(target, timeout_s=timeout_s)

    def _configure_sqlite(self, conn: Any, timeout_s: float) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")  # a created key is on disk before it is shown

    # -- keys ----------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        budget_usd: Decimal | str | float | None = None,
        thread_budget_usd: Decimal | str | float | None = None,
        rpm: int | None = None,
    ) -> tuple[str, VirtualKey]:
        """Create a key; returns ``(key, record)``. The key is returned only here: show it
        to its owner once, it cannot be recovered.

        ``budget_usd`` caps everything the key spends (its user scope's dollar limit in the
        ledger, written in the same transaction); ``thread_budget_usd`` caps each of its
        conversation threads; ``rpm`` caps its requests per minute. ``None`` leaves a limit
        to the configuration (``[budget.user]``, ``[budget.thread]``) or unlimited (rpm).
        Raises :class:`VirtualKeyError`, writing nothing, for an empty, overlong or taken
        name, a budget <= 0 or an rpm < 1."""
        name = _valid_name(name)
        budget_micro = _valid_budget(budget_usd, "budget_usd")
        thread_micro = _valid_budget(thread_budget_usd, "thread_budget_usd")
        rpm = _valid_rpm(rpm)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = secret[: len(KEY_PREFIX) + _SHOWN_CHARS] + "…"
        # The name lock makes two creations of one name wait for each other on PostgreSQL,
        # so the second is refused with VirtualKeyError (SQLite's write lock does the same).
        with self._transaction(f"create key {name!r}", locks=[f"api_key_name:{name}"]) as conn:
            taken = conn.execute("SELECT id, revoked_at FROM api_keys WHERE name = ?", (name,)).fetchone()
            if taken is not None:
                state = "a revoked key" if taken["revoked_at"] is not None else "a key"
                raise VirtualKeyError(
                    f"{state} named {name!r} already exists (id {taken['id']}) in {self.location}; "
                    "choose another name (names stay taken after a key is revoked)"
                )
            key_id = secrets.token_hex(6)
            while conn.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone() is not None:
                key_id = secrets.token_hex(6)
            now = self._clock()
            conn.execute(
                "INSERT INTO api_keys (id, name, key_hash, prefix, rpm, thread_max_micro_usd, created_at, revoked_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (key_id, name, _hash(secret), prefix, rpm, thread_micro, now),
            )
            record = VirtualKey(
                id=key_id,
                name=name,
                prefix=prefix,
                rpm=rpm,
                thread_budget_usd=None if thread_micro is None else from_micro(thread_micro),
                created_at=now,
                revoked_at=None,
            )
            if budget_micro is not None:
                scope = record.scope
                conn.execute(
                    "INSERT INTO scope_limits (kind, scope_key, max_output_tokens, max_total_tokens, max_micro_usd, "
                    "updated_at) VALUES (?, ?, NULL, NULL, ?, ?) ON CONFLICT (kind, scope_key) DO UPDATE SET "
                    "max_output_tokens = NULL, max_total_tokens = NULL, max_micro_usd = excluded.max_micro_usd, "
                    "updated_at = excluded.updated_at",
                    (scope.kind, scope.key, budget_micro, now),
                )
        return secret, record

    def authenticate(self, secret: str) -> VirtualKey | None:
        """The record of the key ``secret``: ``None`` when no such key exists; a revoked
        key's record has ``revoked_at`` set (the caller refuses it with its own message).
        One indexed read of the hash; the hashes are compared in constant time."""
        if not isinstance(secret, str) or not secret.startswith(KEY_PREFIX):
            return None
        digest = _hash(secret)
        rows = self._query(f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE key_hash = ?", (digest,))
        if not rows or not hmac.compare_digest(rows[0]["key_hash"], digest):
            return None
        return VirtualKey._from_row(rows[0])

    def get(self, name_or_id: str) -> VirtualKey | None:
        """The key with this name, else with this id; ``None`` when there is none."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM api_keys WHERE name = ?1 OR id = ?1 ORDER BY name = ?1 DESC LIMIT 1",
            (name_or_id,),
        )
        return VirtualKey._from_row(rows[0]) if rows else None

    def list(self, *, include_revoked: bool = True) -> builtins.list[VirtualKey]:
        """Every key, oldest first (only the active ones with ``include_revoked=False``)."""
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self._query(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at, name")
        return [VirtualKey._from_row(row) for row in rows]

    def revoke(self, name_or_id: str) -> VirtualKey:
        """Refuse every later request with the key; returns its record. Revoking a revoked
        key changes nothing. What it spent stays in the ledger. Raises
        :class:`VirtualKeyError` when no key has this name or id."""
        with self._transaction(f"revoke key {name_or_id!r}") as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE name = ?1 OR id = ?1 ORDER BY name = ?1 DESC LIMIT 1",
                (name_or_id,),
            ).fetchone()
            if row is None:
                raise VirtualKeyError(
                    f"no key named {name_or_id!r} (or with that id) in {self.location}; "
                    "`effreason keys list --all` shows the keys"
                )
            if row["revoked_at"] is not None:
                return VirtualKey._from_row(row)
            now = self._clock()
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, row["id"]))
            conn.execute("DELETE FROM rate_windows WHERE key_id = ?", (row["id"],))
        key = VirtualKey._from_row(row)
        return VirtualKey(key.id, key.name, key.prefix, key.rpm, key.thread_budget_usd, key.created_at, now)

    # -- requests per minute -------------------------------------------------

    def admit(self, key: VirtualKey) -> tuple[bool, float]:
        """Count one request of ``key`` against its ``rpm``; returns ``(admitted, seconds
        until the current one-minute window ends)``. A refused request is not counted.

        Windows are fixed minutes of the clock. The check and the count are one atomic
        upsert (``INSERT … ON CONFLICT DO UPDATE … WHERE count < rpm``) in one transaction,
        so processes sharing the database together admit at most ``rpm`` requests per key
        per window. A key without ``rpm`` is always admitted without touching the
        database."""
        now = self._clock()
        window = math.floor(now / WINDOW_S)
        reset_s = max((window + 1) * WINDOW_S - now, 0.0)
        if key.rpm is None:
            return True, reset_s
        with self._transaction(f"count a request of key {key.name!r}") as conn:
            conn.execute("DELETE FROM rate_windows WHERE key_id = ? AND minute < ?", (key.id, window))
            admitted = conn.execute(
                "INSERT INTO rate_windows (key_id, minute, count) VALUES (?, ?, 1) "
                "ON CONFLICT (key_id, minute) DO UPDATE SET count = rate_windows.count + 1 "
                "WHERE rate_windows.count < ?",
                (key.id, window, key.rpm),
            ).rowcount
        return admitted > 0, reset_s
