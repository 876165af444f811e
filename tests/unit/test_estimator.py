from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from effreason_agents.engine import estimator as est_mod
from effreason_agents.core.features import classify_difficulty
from effreason_agents.config import BudgetConfig
from effreason_agents.errors import TierError
from effreason_agents.engine.estimator import (
    MAX_BUDGET,
    MIN_BUDGET,
    REGRESSOR_FEATURES,
    BudgetRegressor,
    Estimate,
    EstimatorError,
    estimate_budget,
    heuristic_budget,
    parse_budget,
    rows_from_store,
    tale_budget,
)
from effreason_agents.core.records import Completion

EASY = "What is 2 + 3?"
MEDIUM = "Sam has 5 pens and buys 3 more. How many pens does he have?"
HARD = (
    "Tom has 12 apples. He gives 3 to each of his 2 friends and then buys 5 more. "
    "How many apples does he have left?"
)
PROOF = (
    "Prove that the sum of the first n odd numbers is n squared, and derive the formula "
    "for the integral of x^2 from 0 to n step by step."
)


class FakeClient:
    def __init__(self, text: str | None = None, error: Exception | None = None) -> None:
        self.text, self.error = text, error
        self.calls: list[dict[str, Any]] = []

    def complete(self, messages: Any, *, max_tokens: int, temperature: float = 0.0, stop: Any = None, **kw: Any) -> Completion:
        self.calls.append({"messages": messages, "max_tokens": max_tokens, "temperature": temperature})
        if self.error:
            raise self.error
        return Completion(
            text=self.text or "", input_tokens=40, output_tokens=5, finish_reason="stop",
            latency_s=0.01, model="fake", cost_usd=Decimal("0.000012"),
        )


# -- heuristic ----------------------------------------------------------------------


def test_representative_questions_have_expected_labels() -> None:
    assert classify_difficulty(EASY)[0] == "easy"
    assert classify_difficulty(MEDIUM)[0] == "medium"
    assert classify_difficulty(HARD)[0] == "hard"


def test_heuristic_monotone_and_in_ranges() -> None:
    e, m, h = heuristic_budget(EASY), heuristic_budget(MEDIUM), heuristic_budget(HARD)
    assert e < m < h
    assert 24 <= e <= 40
    assert 60 <= m <= 120
    assert 150 <= h <= 300


def test_heuristic_monotone_in_score() -> None:
    qs = [EASY, "Is Paris in France?", MEDIUM, HARD, PROOF, "x " * 500]
    pairs = sorted((classify_difficulty(q)[1]["score"], heuristic_budget(q)) for q in qs)
    budgets = [b for _, b in pairs]
    assert budgets == sorted(budgets)


def test_heuristic_clamped() -> None:
    for q in ["", "?", "1", PROOF * 20, "x " * 5000]:
        assert MIN_BUDGET <= heuristic_budget(q) <= MAX_BUDGET
    assert est_mod.clamp_budget(5) == MIN_BUDGET
    assert est_mod.clamp_budget(99999) == MAX_BUDGET
    assert est_mod.clamp_budget(float("nan")) == MIN_BUDGET
    assert est_mod.clamp_budget(float("inf")) == MAX_BUDGET


# -- TALE ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,n", [("[[120]]", 120), ("about 80 tokens", 80), ("[[ 1,000 ]]", 1000), ("~50, maybe [[60]]", 60), ("none", None)]
)
def test_parse_budget(text: str, n: int | None) -> None:
    assert parse_budget(text) == n


def test_tale_bracketed() -> None:
    c = FakeClient("[[120]]")
    e = tale_budget(HARD, c)
    assert e == Estimate(120, "tale", Decimal("0.000012"), 40, 5)
    assert c.calls[0]["temperature"] == 0.0 and c.calls[0]["max_tokens"] == 24
    assert HARD in c.calls[0]["messages"][0].content
    assert "[[N]]" in c.calls[0]["messages"][0].content


def test_tale_loose_number() -> None:
    assert tale_budget(HARD, FakeClient("about 80 tokens")).tokens == 80


@pytest.mark.parametrize("text,n", [("[[5]]", MIN_BUDGET), ("[[99999]]", MAX_BUDGET)])
def test_tale_clamps(text: str, n: int) -> None:
    e = tale_budget(HARD, FakeClient(text))
    assert e.tokens == n and e.method == "tale"


def test_tale_garbage_falls_back_and_reports_spend() -> None:
    e = tale_budget(HARD, FakeClient("I cannot say."))
    assert e.tokens == heuristic_budget(HARD)
    assert e.method.startswith("heuristic (fallback: ") and e.fell_back
    assert e.cost_usd == Decimal("0.000012") and e.input_tokens == 40 and e.output_tokens == 5


def test_tale_tier_error_falls_back() -> None:
    e = tale_budget(HARD, FakeClient(error=TierError("small", "cannot connect", kind="unreachable")))
    assert e.tokens == heuristic_budget(HARD)
    assert e.method.startswith("heuristic (fallback: ") and "cannot connect" in e.method
    assert e.cost_usd == 0 and e.output_tokens == 0


def test_tale_with_real_tierclient_subclass() -> None:
    from effreason_agents.config import TierConfig
    from effreason_agents.adapters.tiers import TierClient

    class Sub(TierClient):
        def complete(self, messages: Any, **kw: Any) -> Completion:  # type: ignore[override]
            return FakeClient("[[77]]").complete(messages, **kw)

    client = Sub("small", TierConfig(engine="openai-compatible", model="m", base_url="http://127.0.0.1:1/v1"))
    assert tale_budget(EASY, client).tokens == 77


# -- regressor ----------------------------------------------------------------------


def _synthetic_rows(n: int = 30) -> list[dict[str, Any]]:
    rows = []
    for i in range(1, n + 1):
        q = "Tom has 3 apples and " + " ".join(["then he buys more"] * i) + ". How many are left?"
        rows.append({"question": q, "output_tokens": 20 + 8 * i, "correct": True})
    return rows


def test_regressor_prediction_grows_with_length() -> None:
    m = BudgetRegressor().fit(_synthetic_rows())
    short = "Tom has 3 apples and then he buys more. How many are left?"
    long = "Tom has 3 apples and " + " ".join(["then he buys more"] * 25) + ". How many are left?"
    ps, pl = m.predict(short), m.predict(long)
    assert MIN_BUDGET <= ps < pl <= MAX_BUDGET
    assert m.n_rows == 30


def test_regressor_ignores_incorrect_rows() -> None:
    rows = _synthetic_rows()
    noisy = rows + [dict(r, output_tokens=5000, correct=False) for r in rows]
    a, b = BudgetRegressor().fit(rows), BudgetRegressor().fit(noisy)
    assert b.n_rows == 30
    assert a.data_sha256 == b.data_sha256
    assert a.predict(HARD) == b.predict(HARD)


def test_regressor_too_few_rows() -> None:
    rows = _synthetic_rows(7) + [dict(r, correct=False) for r in _synthetic_rows(20)]
    with pytest.raises(EstimatorError, match="at least 8"):
        BudgetRegressor().fit(rows)


def test_regressor_unfitted_errors() -> None:
    with pytest.raises(EstimatorError, match="not fitted"):
        BudgetRegressor().predict(EASY)


def test_regressor_save_load_round_trip(tmp_path: Path) -> None:
    m = BudgetRegressor().fit(_synthetic_rows())
    p = m.save(tmp_path / "sub" / "budget.json")
    data = json.loads(p.read_text())
    assert data["version"] == est_mod.REGRESSOR_VERSION
    assert data["feature_names"] == list(REGRESSOR_FEATURES)
    assert data["n_rows"] == 30 and len(data["data_sha256"]) == 64
    m2 = BudgetRegressor.load(p)
    for q in (EASY, MEDIUM, HARD, PROOF):
        assert m2.predict(q) == m.predict(q)


def test_regressor_load_rejects_other_version_or_features(tmp_path: Path) -> None:
    p = BudgetRegressor().fit(_synthetic_rows()).save(tmp_path / "m.json")
    data = json.loads(p.read_text())
    (tmp_path / "v.json").write_text(json.dumps(dict(data, version=999)))
    with pytest.raises(EstimatorError, match="version"):
        BudgetRegressor.load(tmp_path / "v.json")
    (tmp_path / "f.json").write_text(json.dumps(dict(data, feature_names=["words"])))
    with pytest.raises(EstimatorError, match="other features"):
        BudgetRegressor.load(tmp_path / "f.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EstimatorError, match="JSON"):
        BudgetRegressor.load(tmp_path / "bad.json")
    with pytest.raises(EstimatorError, match="does not exist"):
        BudgetRegressor.load(tmp_path / "missing.json")


def _bench_db(path: Path, rows: list[tuple[str, int, int]]) -> Path:
    """A real outcome store holding graded results of run r1 (question, correct, output tokens)."""
    from effreason_agents.adapters.store import OutcomeStore

    OutcomeStore(path).close()
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO bench_results (run_id, item_id, arm, question, gold, answer_type, correct, output_tokens, "
        "created_at) VALUES ('r1', ?, 'small:budget-cot', ?, 'x', 'number', ?, ?, '2026-11-29T00:00:00Z')",
        [(f"i{i}", q, c, t) for i, (q, c, t) in enumerate(rows)],
    )
    conn.commit()
    conn.close()
    return path


def test_rows_from_store(tmp_path: Path) -> None:
    p = _bench_db(tmp_path / "store.sqlite", [(r["question"], 1, r["output_tokens"]) for r in _synthetic_rows(10)] + [("q?", 0, 9)])
    rows = rows_from_store(p)
    assert len(rows) == 11
    assert rows[0] == {"question": _synthetic_rows(1)[0]["question"], "correct": True, "output_tokens": 28}
    assert rows[-1]["correct"] is False
    assert BudgetRegressor().fit(rows).n_rows == 10
    assert len(rows_from_store(p, run_id="r1", arm="small:budget-cot")) == 11
    with pytest.raises(EstimatorError, match="no matching"):
        rows_from_store(p, run_id="other")


def test_rows_from_store_errors(tmp_path: Path) -> None:
    with pytest.raises(EstimatorError, match="does not exist"):
        rows_from_store(tmp_path / "nope.sqlite")
    empty = _bench_db(tmp_path / "empty.sqlite", [])
    with pytest.raises(EstimatorError, match="no bench_results"):
        rows_from_store(empty)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(EstimatorError, match="cannot read graded results"):
        rows_from_store(other)


# -- dispatch -----------------------------------------------------------------------


def test_estimate_budget_heuristic_default() -> None:
    e = estimate_budget(HARD, BudgetConfig())
    assert e == Estimate(heuristic_budget(HARD), "heuristic")


def test_estimate_budget_tale() -> None:
    cfg = BudgetConfig(estimator="tale")
    assert estimate_budget(HARD, cfg, client=FakeClient("[[90]]")).tokens == 90
    e = estimate_budget(HARD, cfg)
    assert e.tokens == heuristic_budget(HARD) and e.method.startswith("heuristic (fallback: ") and "client" in e.method


def test_estimate_budget_tale_unexpected_error_never_raises() -> None:
    e = estimate_budget(HARD, BudgetConfig(estimator="tale"), client=FakeClient(error=RuntimeError("boom")))
    assert e.fell_back and "boom" in e.method


def test_estimate_budget_regressor(tmp_path: Path) -> None:
    m = BudgetRegressor().fit(_synthetic_rows())
    p = m.save(tmp_path / "m.json")
    cfg = BudgetConfig(estimator="regressor", regressor_path=str(p))
    e = estimate_budget(HARD, cfg)
    assert e == Estimate(m.predict(HARD), "regressor")
    # cached per path
    assert est_mod._cached_regressor(str(p)) is est_mod._cached_regressor(str(p))


def test_estimate_budget_regressor_fallbacks(tmp_path: Path) -> None:
    e = estimate_budget(HARD, BudgetConfig(estimator="regressor"))
    assert e.fell_back and "regressor_path" in e.method
    e = estimate_budget(HARD, BudgetConfig(estimator="regressor", regressor_path=str(tmp_path / "missing.json")))
    assert e.fell_back and "does not exist" in e.method and e.tokens == heuristic_budget(HARD)
    (tmp_path / "broken.json").write_text("[]")
    e = estimate_budget(HARD, BudgetConfig(estimator="regressor", regressor_path=str(tmp_path / "broken.json")))
    assert e.fell_back and e.tokens == heuristic_budget(HARD)
