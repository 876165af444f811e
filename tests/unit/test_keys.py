"""Virtual API keys (:mod:`effreason_agents.adapters.keys`) on both backends (real SQLite
files and fresh PostgreSQL databases: ``db_target``): hashed storage, authentication,
revocation, budgets enforced by the ledger, and requests per minute counted across
processes."""

from __future__ import annotations

import hashlib
import multiprocessing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from effreason_agents.adapters.keys import KEY_PREFIX, KeyStore
from effreason_agents.adapters.ledger import MIGRATIONS, BudgetLedger
from effreason_agents.config import LimitConfig
from effreason_agents.core.records import Scope, Usage
from effreason_agents.errors import BudgetExhausted, LedgerError, VirtualKeyError


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def path(db_target: str) -> str:
    """The ledger's database: a SQLite file's path or a PostgreSQL URL."""
    return db_target


@pytest.fixture()
def store(path: str) -> Any:
    with KeyStore(path) as s:
        yield s


def file_bytes(path: str) -> bytes:
    """The database with its write-ahead log and shared memory, as they lie on disk."""
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal"),
                                               path.with_name(path.name + "-shm")) if p.exists())


# -- create / authenticate / revoke -------------------------------------------


def test_create_returns_a_key_that_authenticates_to_its_record(store: KeyStore) -> None:
    secret, key = store.create("alice", rpm=60, thread_budget_usd="0.5")
    assert secret.startswith(KEY_PREFIX) and len(secret) >= len(KEY_PREFIX) + 43  # 256 random bits
    assert key.name == "alice" and len(key.id) == 12 and int(key.id, 16) >= 0
    assert key.rpm == 60 and key.thread_budget_usd == Decimal("0.5") and not key.revoked
    assert key.prefix == secret[: len(KEY_PREFIX) + 4] + "…"
    assert store.authenticate(secret) == key
    assert store.get("alice") == key and store.get(key.id) == key
    assert secret not in repr(key) and secret not in str(key.as_json())


def test_unknown_and_malformed_keys_do_not_authenticate(store: KeyStore) -> None:
    secret, _ = store.create("alice")
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate(KEY_PREFIX + "x" * 43) is None
    assert store.authenticate("") is None
    assert store.authenticate(secret[len(KEY_PREFIX):]) is None  # without its prefix
    assert store.authenticate(hashlib.sha256(secret.encode()).hexdigest()) is None  # the stored hash is no key


def test_two_keys_are_different_and_each_finds_its_own_record(store: KeyStore) -> None:
    a_secret, a = store.create("a")
    b_secret, b = store.create("b")
    assert a_secret != b_secret and a.id != b.id and a.scope != b.scope
    assert store.authenticate(a_secret) == a and store.authenticate(b_secret) == b


def test_a_revoked_key_authenticates_to_its_revoked_record(path: str) -> None:
    clock = Clock(1_000_000.0)
    with KeyStore(path, clock=clock) as store:
        secret, key = store.create("alice")
        clock.now += 5
        revoked = store.revoke("alice")
        assert revoked.revoked and revoked.revoked_at == clock.now and revoked.id == key.id
        found = store.authenticate(secret)
        assert found is not None and found.revoked and found.revoked_at == clock.now
        clock.now += 5
        assert store.revoke(key.id) == revoked  # twice: a no-op returning the record
        assert store.list(include_revoked=False) == []
        assert store.list() == [revoked]


def test_revoking_an_unknown_key_says_how_to_find_the_keys(store: KeyStore) -> None:
    with pytest.raises(VirtualKeyError, match=r"no key named 'bob'.*keys list --all"):
        store.revoke("bob")


def test_only_the_hash_is_stored_and_the_key_is_nowhere_in_the_file(tmp_path: Path, db_rows) -> None:
    path = tmp_path / "ledger.sqlite"
    with KeyStore(path) as store:
        secret, key = store.create("alice", budget_usd="1")
        stored = db_rows(path, "SELECT key_hash, prefix FROM api_keys")
        on_disk = file_bytes(path)
    assert stored == [(hashlib.sha256(secret.encode()).hexdigest(), key.prefix)]
    assert stored[0][0] != secret
    assert secret.encode() not in on_disk
    assert secret[len(KEY_PREFIX):].encode() not in on_disk  # nor its random part
    assert secret[len(KEY_PREFIX) + 4 : len(KEY_PREFIX) + 20].encode() not in on_disk  # nor past the prefix
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in on_disk  # (the check can see the file)


def test_get_prefers_a_name_to_an_id(store: KeyStore) -> None:
    _, first = store.create("first")
    _, named_like_id = store.create(first.id)  # a name that equals another key's id
    assert store.get(first.id) == named_like_id
    assert store.get("first") == first
    assert store.get("nobody") is None


# -- validation: nothing written on a refusal ----------------------------------


def test_a_taken_name_is_refused_naming_the_existing_key(path: str, store: KeyStore, db_rows) -> None:
    _, key = store.create("alice", budget_usd="5")
    before = db_rows(path, "SELECT * FROM api_keys"), db_rows(path, "SELECT * FROM scope_limits")
    with pytest.raises(VirtualKeyError, match=rf"a key named 'alice' already exists \(id {key.id}\)"):
        store.create("alice", budget_usd="7", rpm=3)
    assert (db_rows(path, "SELECT * FROM api_keys"), db_rows(path, "SELECT * FROM scope_limits")) == before
    store.revoke("alice")
    with pytest.raises(VirtualKeyError, match="a revoked key named 'alice' already exists"):
        store.create("alice")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty name"),
        ({"name": "   "}, "non-empty name"),
        ({"name": " alice"}, "whitespace"),
        ({"name": "al\nice"}, "control characters"),
        ({"name": "x" * 65}, "at most 64"),
        ({"name": KEY_PREFIX + "abc"}, "cannot start with"),
        ({"name": "a", "budget_usd": "0"}, "budget_usd must be more than"),
        ({"name": "a", "budget_usd": "-1"}, "budget_usd must be more than"),
        ({"name": "a", "budget_usd": "NaN"}, "budget_usd must be more than"),
        ({"name": "a", "budget_usd": "five"}, "amount of USD"),
        ({"name": "a", "budget_usd": "0.0000001"}, "below one micro-dollar"),
        ({"name": "a", "thread_budget_usd": "0"}, "thread_budget_usd must be more than"),
        ({"name": "a", "rpm": 0}, "rpm"),
        ({"name": "a", "rpm": -3}, "rpm"),
        ({"name": "a", "rpm": 2.5}, "rpm"),
        ({"name": "a", "rpm": True}, "rpm"),
    ],
)
def test_bad_input_is_refused_writing_nothing(
    path: str, store: KeyStore, kwargs: dict[str, Any], message: str, db_rows
) -> None:
    kwargs = dict(kwargs)  # the parameter is shared by both backends' runs
    name = kwargs.pop("name")
    with pytest.raises(VirtualKeyError, match=message):
        store.create(name, **kwargs)
    assert db_rows(path, "SELECT COUNT(*) FROM api_keys") == [(0,)]
    assert db_rows(path, "SELECT COUNT(*) FROM scope_limits") == [(0,)]


def test_budgets_accept_decimals_strings_ints_and_floats(path: str, store: KeyStore, db_rows) -> None:
    for i, amount in enumerate([Decimal("2.5"), "2.5", 2, 2.5]):
        store.create(f"k{i}", budget_usd=amount, thread_budget_usd=amount)
    assert {r[0] for r in db_rows(path, "SELECT max_micro_usd FROM scope_limits")} == {2_500_000, 2_000_000}
    assert {k.thread_budget_usd for k in store.list()} == {Decimal("2.5"), Decimal("2")}


# -- budgets ---------------------------------------------------------------------


def test_the_budget_is_written_with_the_key_and_enforced_by_the_ledger(path: str, store: KeyStore) -> None:
    _, key = store.create("alice", budget_usd="0.01")
    _, other = store.create("bob")
    with BudgetLedger(path) as ledger:
        assert ledger.limits(key.scope) == LimitConfig(max_cost_usd=Decimal("0.01"))
        assert ledger.limits(other.scope) is None  # no budget given: the config's [budget.user] applies later
        ledger.reserve("r1", [Scope("request", "r1"), key.scope], Usage.from_usd(10, 100, "0.006"))
        ledger.commit("r1", Usage.from_usd(10, 100, "0.006"))
        with pytest.raises(BudgetExhausted) as info:
            ledger.reserve("r2", [Scope("request", "r2"), key.scope], Usage.from_usd(10, 100, "0.005"))
        assert info.value.scope == key.scope and info.value.limit == "max_cost_usd"
        assert ledger.status("r2") is None
        ledger.reserve("r3", [key.scope], Usage.from_usd(10, 100, "0.004"))  # what is left still fits
        # Without a limits row the ledger sets the config's user limits at the first hold.
        config_user = {other.scope: LimitConfig(max_cost_usd=Decimal("1"))}
        ledger.reserve("r4", [other.scope], Usage.from_usd(1, 1, "0.5"), limits=config_user)
        with pytest.raises(BudgetExhausted):
            ledger.reserve("r5", [other.scope], Usage.from_usd(1, 1, "0.6"))


def test_threads_are_scopes_of_one_key_with_the_keys_thread_limits(store: KeyStore) -> None:
    _, a = store.create("a", thread_budget_usd="0.25")
    _, b = store.create("b")
    assert a.scope == Scope("user", f"key:{a.id}")
    assert a.thread_scope("t1") == Scope("thread", f"key:{a.id}:t1")
    assert a.thread_scope("t1") != b.thread_scope("t1")
    assert a.thread_limits() == LimitConfig(max_cost_usd=Decimal("0.25"))
    assert b.thread_limits() is None
    with pytest.raises(ValueError, match="non-empty"):
        a.thread_scope("")


# -- requests per minute ---------------------------------------------------------


def test_rpm_admits_exactly_rpm_per_window_and_the_next_window_admits_again(path: str, db_rows) -> None:
    clock = Clock(60 * 1000 + 10.0)  # 10 s into a window
    with KeyStore(path, clock=clock) as store:
        _, key = store.create("alice", rpm=3)
        assert [store.admit(key)[0] for _ in range(3)] == [True, True, True]
        clock.now += 30
        admitted, reset_s = store.admit(key)
        assert not admitted and reset_s == pytest.approx(20.0)
        assert not store.admit(key)[0]  # refusals are not counted, and stay refused
        clock.now += 20  # the next window
        admitted, reset_s = store.admit(key)
        assert admitted and reset_s == pytest.approx(60.0)
        assert [store.admit(key)[0] for _ in range(3)] == [True, True, False]
    # Only the current window of the key is kept.
    assert db_rows(path, "SELECT minute, count FROM rate_windows") == [(1001, 3)]


def test_keys_have_separate_rpm_counts_and_no_rpm_is_unlimited(path: str, db_rows) -> None:
    clock = Clock(6000.0)
    with KeyStore(path, clock=clock) as store:
        _, a = store.create("a", rpm=1)
        _, b = store.create("b", rpm=1)
        _, free = store.create("free")
        assert store.admit(a)[0] and not store.admit(a)[0]
        assert store.admit(b)[0]
        assert all(store.admit(free)[0] for _ in range(100))
    assert db_rows(path, "SELECT COUNT(*) FROM rate_windows WHERE key_id = '%s'" % free.id) == [(0,)]


def _admit_worker(path: str, key_name: str, now: float, start: Any, results: Any) -> None:
    """One server worker process: its own store on the shared file, 10 admits once all start."""
    with KeyStore(path, clock=lambda: now) as store:
        key = store.get(key_name)
        assert key is not None
        start.wait(timeout=60)
        results.put(sum(store.admit(key)[0] for _ in range(10)))


def test_rpm_holds_across_processes_sharing_the_file(path: str, db_rows) -> None:
    now = 60 * 5000 + 1.0  # fixed: every admit falls in one window
    with KeyStore(path) as store:
        store.create("shared", rpm=15)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like server workers
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_admit_worker, args=(str(path), "shared", now, start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    counts = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(counts) == 15, counts
    assert db_rows(path, "SELECT count FROM rate_windows") == [(15,)]


# -- one file for the ledger and the keys ------------------------------------------


def test_the_ledger_opens_a_file_the_key_store_created_and_vice_versa(make_db_target) -> None:
    first = make_db_target()
    with KeyStore(first) as store:
        _, key = store.create("alice", budget_usd="3")
    with BudgetLedger(first) as ledger:
        assert ledger.limits(key.scope) == LimitConfig(max_cost_usd=Decimal("3"))
        assert ledger.applied_migrations() == [name for name, _ in MIGRATIONS]

    second = make_db_target()
    with BudgetLedger(second) as ledger:
        ledger.reserve("r1", [Scope("user", "u")], Usage(1, 2, 3))
    with KeyStore(second) as store:
        secret, key = store.create("bob")
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
    with BudgetLedger(second) as ledger, KeyStore(second) as store:
        assert ledger.status("r1") == "reserved" and store.authenticate(secret) == key


def test_a_ledger_from_before_virtual_keys_gains_them_and_keeps_its_data(path: str) -> None:
    class OldLedger(BudgetLedger):
        migrations = MIGRATIONS[:2]

    with OldLedger(path) as old:
        old.set_limits(Scope("user", "u"), LimitConfig(max_cost_usd=Decimal("1")))
        assert "0003_virtual_keys" not in old.applied_migrations()
    with KeyStore(path) as store:
        assert store.applied_migrations()[2] == "0003_virtual_keys"
        secret, key = store.create("alice")
        assert store.authenticate(secret) == key
    with BudgetLedger(path) as ledger:
        assert ledger.limits(Scope("user", "u")) == LimitConfig(max_cost_usd=Decimal("1"))


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="not a usable budget ledger"):
        KeyStore(bad)
    with pytest.raises(LedgerError, match="is a directory"):
        KeyStore(tmp_path)


def test_a_closed_store_says_so(path: str) -> None:
    store = KeyStore(path)
    store.close()
    with pytest.raises(LedgerError, match="closed"):
        store.list()
