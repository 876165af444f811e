"""effreason_agents.adapters.router: featurizer, artifact save/load and refusals, policy, atomic saves.

Routers here are built from hand-made arrays, so these tests need numpy (scipy and
scikit-learn only where a test says so); fitting is tested in test_router_models.py.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from effreason_agents.errors import EffReasonError
from effreason_agents.adapters.router import (
    ARTIFACT_FORMAT,
    FEATURIZER_VERSION,
    HAND_FEATURES,
    Featurizer,
    Router,
    RouterError,
    char_terms,
    choose,
    save_router,
    word_terms,
)

ARMS = ["small:direct", "large:cot"]
_WORDS = ("apple river seven train history music paint number total orange mountain plane science "
          "alpha beta gamma quickly slowly above below").split()


def _prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = list(rng.choice(_WORDS, size=int(rng.integers(4, 12))))
        if rng.random() < 0.5:
            words.insert(int(rng.integers(0, len(words))), "date")
        if rng.random() < 0.3:
            words.append(f"{int(rng.integers(1, 999))} + {int(rng.integers(1, 99))}")
        out.append(f"Q{i}: " + " ".join(words) + "?")
    return out


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer(max_words=300, max_chars=500).fit(_prompts(120))


def _arrays(kind: str, f: Featurizer, a: int = len(ARMS), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = f.dim
    if kind == "logistic":
        return {"W": rng.normal(size=(a, d)), "b": rng.normal(size=a)}
    if kind == "mlp":
        return {"W0": rng.normal(size=(d, 8)).astype(np.float32), "b0": rng.normal(size=8).astype(np.float32),
                "W1": rng.normal(size=(8, a)).astype(np.float32), "b1": rng.normal(size=a).astype(np.float32)}
    if kind == "mf":
        return {"P": rng.normal(size=(4, d)).astype(np.float32), "E": rng.normal(size=(a, 4)).astype(np.float32),
                "bias": rng.normal(size=a).astype(np.float32)}
    raise AssertionError(kind)


def _save(tmp_path: Path, f: Featurizer, kind: str = "logistic", name: str = "router", **extra: object) -> Path:
    return save_router(tmp_path / name, f, kind, _arrays(kind, f), ARMS, extra or None)


# -- featurizer ------------------------------------------------------------------------


def test_featurizer_is_deterministic(featurizer: Featurizer) -> None:
    again = Featurizer(max_words=300, max_chars=500).fit(_prompts(120))
    assert again.to_json() == featurizer.to_json()
    for text in _prompts(5, seed=9):
        i1, v1 = featurizer.transform_one(text)
        i2, v2 = again.transform_one(text)
        assert np.array_equal(i1, i2) and np.array_equal(v1, v2)


def test_featurizer_json_round_trip(featurizer: Featurizer) -> None:
    data = json.loads(json.dumps(featurizer.to_json()))
    back = Featurizer.from_json(data)
    assert back.to_json() == featurizer.to_json()
    for text in [*_prompts(10, seed=3), "", "   ", "unseen zzz words only", "Date? DATE! date."]:
        i1, v1 = featurizer.transform_one(text)
        i2, v2 = back.transform_one(text)
        assert i1.dtype == np.int64 and v1.dtype == np.float32
        assert np.array_equal(i1, i2) and np.array_equal(v1, v2)


def test_featurizer_refuses_corrupted_json(featurizer: Featurizer) -> None:
    data = featurizer.to_json()
    with pytest.raises(RouterError, match="format"):
        Featurizer.from_json({**data, "format": "something-else"})
    with pytest.raises(RouterError, match="featurizer version"):
        Featurizer.from_json({**data, "version": FEATURIZER_VERSION + 1})
    with pytest.raises(RouterError, match="corrupted featurizer"):
        Featurizer.from_json({**data, "word": {"vocab": ["a", "b"], "idf": [1.0]}})
    with pytest.raises(RouterError, match="corrupted featurizer"):
        Featurizer.from_json({k: v for k, v in data.items() if k != "params"})


def test_transform_one_equals_rows_of_transform(featurizer: Featurizer) -> None:
    pytest.importorskip("scipy")
    texts = [*_prompts(15, seed=4), "", "date", "What is 12 * 7?"]
    X = featurizer.transform(texts)
    assert X.shape == (len(texts), featurizer.dim) and X.dtype == np.float32
    dense = X.toarray()
    for k, text in enumerate(texts):
        idx, val = featurizer.transform_one(text)
        assert np.all(np.diff(idx) > 0)
        row = np.zeros(featurizer.dim, dtype=np.float32)
        row[idx] = val
        assert np.array_equal(row, dense[k])


def test_layout_blocks_and_normalization(featurizer: Featurizer) -> None:
    lay = featurizer.layout()
    assert lay["word"][0] == 0 and lay["word"][1] == lay["char"][0] and lay["char"][1] == lay["hand"][0]
    assert lay["hand"][1] - lay["hand"][0] == len(HAND_FEATURES) == 15
    assert lay["embedding"] == (lay["hand"][1], lay["hand"][1]) and featurizer.dim == lay["hand"][1]
    assert featurizer.name == "tfidf+hand"
    idx, val = featurizer.transform_one("the date of seven trains above the river")
    v = val.astype(np.float64)
    for block in ("word", "char"):
        lo, hi = lay[block]
        m = (idx >= lo) & (idx < hi)
        assert math.isclose(float(np.sqrt((v[m] ** 2).sum())), 1.0, rel_tol=1e-5)
    # hand features are standardized on the training prompts
    rows = [featurizer.transform_one(p) for p in _prompts(120)]
    lo, hi = lay["hand"]
    hand = np.stack([v[(i >= lo) & (i < hi)] for i, v in rows]).astype(np.float64)
    assert np.allclose(hand.mean(axis=0), 0.0, atol=1e-5)


def test_min_df_and_max_features() -> None:
    prompts = ["alpha beta", "alpha gamma", "alpha beta delta", "omega"]
    f = Featurizer(min_df=2, max_words=2, max_chars=5).fit(prompts)
    # df: alpha 3, beta 2, "alpha beta" 2, the rest 1; the df tie is broken by the term
    assert list(f.word_vocab) == ["alpha", "alpha beta"]
    assert len(f.char_vocab) == 5
    assert Featurizer(min_df=1).fit(prompts).word_vocab.keys() >= {"omega", "alpha beta"}


def test_analyzers_and_values_match_scikit_learn() -> None:
    text_mod = pytest.importorskip("sklearn.feature_extraction.text")
    texts = ["Hello, World! what's 2+2?", "  tabs\tand\nnewlines  a I", "Ünïcode wörds and 3.14"]
    word = text_mod.TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", ngram_range=(1, 2)).build_analyzer()
    char = text_mod.TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).build_analyzer()
    for t in texts:
        assert word_terms(t) == word(t)
        assert char_terms(t) == char(t)
    prompts = _prompts(60, seed=5)
    f = Featurizer(hand=False, max_words=10**6, max_chars=10**6).fit(prompts)
    for block, analyzer in (("word", "word"), ("char", "char_wb")):
        vocab = getattr(f, f"{block}_vocab")
        kw = {"token_pattern": r"(?u)\b\w+\b", "ngram_range": (1, 2)} if block == "word" else {"ngram_range": (2, 4)}
        sk = text_mod.TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, smooth_idf=True, min_df=2,
                                      dtype=np.float64, **kw).fit(prompts)
        assert sorted(sk.vocabulary_) == sorted(vocab)
        ours = f.transform(prompts).toarray()[:, slice(*f.layout()[block])]
        order = [sk.vocabulary_[t] for t in sorted(vocab, key=vocab.__getitem__)]
        assert np.allclose(ours, sk.transform(prompts).toarray()[:, order], atol=1e-6)


def test_embeddings_block_uses_the_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    import effreason_agents.adapters.embeddings as emb

    def fake(texts: list[str], **_: object) -> np.ndarray:
        out = np.zeros((len(texts), 384), np.float32)
        for k, t in enumerate(texts):
            out[k, len(t) % 384] = 1.0
        return out

    monkeypatch.setattr(emb, "embed", fake)
    f = Featurizer(max_words=50, max_chars=50, embeddings=True).fit(_prompts(30))
    assert f.name == "tfidf+hand+minilm" and f.dim == f.layout()["hand"][1] + 384
    idx, val = f.transform_one("abc")
    lo = f.layout()["embedding"][0]
    assert val[idx == lo + 3][0] == 1.0
    assert Featurizer.from_json(f.to_json()).embeddings


# -- artifacts -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["logistic", "mlp", "mf"])
def test_save_load_round_trip(tmp_path: Path, featurizer: Featurizer, kind: str) -> None:
    arrays = _arrays(kind, featurizer)
    path = save_router(tmp_path / kind, featurizer, kind, arrays, ARMS,
                       {"training": {"data_sha256": "ab" * 32, "n_prompts": 120, "n_rows": 240, "source": "t"},
                        "cv": {"auc": 0.7}, "policy": {"kind": "lambda", "lambda": 2.0, "costs": {"small:direct": 0.1,
                                                                                                  "large:cot": 1.0}}})
    assert sorted(os.listdir(path)) == ["card.json", "featurizer.json", "weights.npz"]
    card = json.loads((path / "card.json").read_text())
    assert card["format"] == ARTIFACT_FORMAT and card["version"] == 1 and card["kind"] == kind
    assert card["features"] == {"set": "tfidf+hand", "version": FEATURIZER_VERSION, "dim": featurizer.dim,
                                "embeddings": False}
    assert card["training"]["n_rows"] == 240 and "created_at" in card["training"] and card["cv"] == {"auc": 0.7}
    assert card["policy"] == {"kind": "lambda", "lambda": 2.0, "costs": {"small:direct": 0.1, "large:cot": 1.0}}
    r = Router.load(path, arms=list(reversed(ARMS)))
    assert r.arms == ARMS and r.kind == kind
    texts = _prompts(12, seed=7)
    in_memory = Router(card, featurizer, arrays)
    P = r.predict(texts)
    assert P.shape == (12, 2) and np.all((P > 0) & (P < 1))
    assert np.array_equal(P, in_memory.predict(texts))
    assert r.predict([]).shape == (0, 2)
    for k, t in enumerate(texts):
        one = r.predict_one(t)
        assert list(one) == ARMS
        assert np.allclose([one[a] for a in ARMS], P[k], rtol=1e-6, atol=1e-9)
    # the logistic forward pass by hand
    if kind == "logistic":
        idx, val = featurizer.transform_one(texts[0])
        z = arrays["W"][:, idx] @ val.astype(np.float64) + arrays["b"]
        assert np.allclose(P[0], 1 / (1 + np.exp(-z)))


def test_predict_without_scipy_uses_rows(tmp_path: Path, featurizer: Featurizer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("scipy")
    r = Router.load(_save(tmp_path, featurizer, "mlp"))
    texts = _prompts(8, seed=2)
    with_scipy = r.predict(texts)
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)
    monkeypatch.setitem(sys.modules, "scipy", None)
    assert np.allclose(r.predict(texts), with_scipy, rtol=1e-6, atol=1e-9)
    with pytest.raises(RouterError, match="scipy"):
        featurizer.transform(texts)


def test_runtime_imports_numpy_only() -> None:
    code = ("import sys, effreason_agents.adapters.router as r; "
            "bad = [m for m in ('sklearn', 'scipy', 'torch', 'skops', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_load_refuses_missing_directory_and_files(tmp_path: Path, featurizer: Featurizer) -> None:
    with pytest.raises(RouterError, match="not found") as exc:
        Router.load(tmp_path / "nope")
    assert isinstance(exc.value, EffReasonError) and isinstance(exc.value, ValueError)
    for name in ("card.json", "featurizer.json", "weights.npz"):
        path = _save(tmp_path, featurizer, name=f"r-{name}")
        (path / name).unlink()
        with pytest.raises(RouterError, match=f"missing {name}"):
            Router.load(path)


def test_load_refuses_corrupted_files(tmp_path: Path, featurizer: Featurizer) -> None:
    path = _save(tmp_path, featurizer)
    good = (path / "weights.npz").read_bytes()
    (path / "weights.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(RouterError, match="corrupted router weights"):
        Router.load(path)
    (path / "weights.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(RouterError, match="corrupted router weights"):
        Router.load(path)
    # arrays that would need pickle are refused (np.load(allow_pickle=False))
    with open(path / "weights.npz", "wb") as fh:
        np.savez(fh, W=np.array([{"x": 1}], dtype=object), b=np.zeros(2))
    with pytest.raises(RouterError, match="corrupted router weights"):
        Router.load(path)
    # arrays of the wrong shape
    with open(path / "weights.npz", "wb") as fh:
        np.savez(fh, W=np.zeros((2, 3)), b=np.zeros(2))
    with pytest.raises(RouterError, match="does not fit the card"):
        Router.load(path)
    (path / "weights.npz").write_bytes(good)
    Router.load(path)
    (path / "card.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RouterError, match="corrupted router card"):
        Router.load(path)
    path2 = _save(tmp_path, featurizer, name="r2")
    (path2 / "featurizer.json").write_text('{"format": "effreason-featurizer", "version": 1}', encoding="utf-8")
    with pytest.raises(RouterError, match="corrupted featurizer"):
        Router.load(path2)


def _edit_card(path: Path, **changes: object) -> None:
    card = json.loads((path / "card.json").read_text())
    card.update(changes)
    (path / "card.json").write_text(json.dumps(card), encoding="utf-8")


def test_load_refuses_foreign_format_versions_and_policies(tmp_path: Path, featurizer: Featurizer) -> None:
    path = _save(tmp_path, featurizer)
    _edit_card(path, format="effreason-calibrator")
    with pytest.raises(RouterError, match="not an effreason router card"):
        Router.load(path)
    _edit_card(path, format=ARTIFACT_FORMAT, version=2)
    with pytest.raises(RouterError, match="artifact version 2.*retrain with effreason router train"):
        Router.load(path)
    _edit_card(path, version=1, features={"set": "tfidf+hand", "version": FEATURIZER_VERSION + 1})
    with pytest.raises(RouterError, match="featurizer version.*retrain"):
        Router.load(path)
    _edit_card(path, features={"set": "tfidf+hand", "version": FEATURIZER_VERSION}, kind="forest")
    with pytest.raises(RouterError, match="unknown router kind"):
        Router.load(path)
    _edit_card(path, kind="logistic", policy={"kind": "threshold", "tau": 1.5})
    with pytest.raises(RouterError, match="tau"):
        Router.load(path)
    _edit_card(path, policy={"kind": "lambda", "lambda": 0.5})
    assert Router.load(path).policy["lambda"] == 0.5


def test_load_refuses_other_arms(tmp_path: Path, featurizer: Featurizer) -> None:
    path = _save(tmp_path, featurizer)
    with pytest.raises(RouterError) as exc:
        Router.load(path, arms=["small:direct", "large:direct"])
    msg = str(exc.value)
    assert "trained on arms ['small:direct', 'large:cot']" in msg
    assert "the configuration's ladder has ['small:direct', 'large:direct']" in msg
    assert "retrain with effreason router train" in msg
    with pytest.raises(RouterError, match="trained on arms"):
        Router.load(path, arms=["small:direct"])
    assert Router.load(path, arms=["large:cot", "small:direct"]).arms == ARMS
    # a ladder with more arms than the router knows (escalation targets) is fine
    assert Router.load(path, arms=["small:direct", "small:cot", "large:cot"]).arms == ARMS


def test_loading_never_unpickles(tmp_path: Path, featurizer: Featurizer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path, featurizer, "mf")
    seen: list[object] = []
    real_load = np.load

    def spy(*args: object, **kw: object) -> object:
        seen.append(kw.get("allow_pickle"))
        return real_load(*args, **kw)  # type: ignore[arg-type]

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(np, "load", spy)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    r = Router.load(path)
    r.predict_one("what is the date")
    assert seen == [False]
    src = (Path(__file__).resolve().parents[2] / "effreason_agents" / "adapters" / "router.py").read_text()
    assert "import pickle" not in src and "allow_pickle=True" not in src


# -- policy ----------------------------------------------------------------------------

PROBS = {"s": 0.55, "m": 0.8, "l": 0.95}
COSTS = {"s": 1.0, "m": 3.0, "l": 10.0}


def test_choose_threshold() -> None:
    assert choose(PROBS, COSTS, tau=0.5)[0] == "s"
    assert choose(PROBS, COSTS, tau=0.7)[0] == "m"
    arm, why = choose(PROBS, COSTS, tau=0.9)
    assert arm == "l" and "cheapest" in why
    arm, why = choose(PROBS, COSTS, tau=0.99)
    assert arm == "l" and "no arm reaches" in why
    assert choose(PROBS, COSTS, tau=0.99, candidates=["s", "m"])[0] == "m"
    # ties on cost: the higher P wins; ties on P (none reaches tau): the cheaper wins
    assert choose({"a": 0.6, "b": 0.7}, {"a": 1.0, "b": 1.0}, tau=0.5)[0] == "b"
    assert choose({"a": 0.3, "b": 0.3}, {"a": 2.0, "b": 1.0}, tau=0.5)[0] == "b"
    assert choose(PROBS, COSTS, tau=0.0)[0] == "s"


def test_choose_lambda() -> None:
    # utilities: s 0.55 - λ, m 0.8 - 3λ, l 0.95 - 10λ
    assert choose(PROBS, COSTS, lam=0.0)[0] == "l"
    assert choose(PROBS, COSTS, lam=0.01)[0] == "l"  # 0.54, 0.77, 0.85
    assert choose(PROBS, COSTS, lam=0.05)[0] == "m"  # 0.50, 0.65, 0.45
    arm, why = choose(PROBS, COSTS, lam=0.2)  # 0.35, 0.2, -1.05
    assert arm == "s" and "utility" in why
    assert choose({"a": 0.5, "b": 0.6}, {"a": 0.0, "b": 1.0}, lam=0.1)[0] == "a"  # tie: the cheaper


def test_choose_errors() -> None:
    with pytest.raises(RouterError, match="exactly one"):
        choose(PROBS, COSTS)
    with pytest.raises(RouterError, match="exactly one"):
        choose(PROBS, COSTS, tau=0.5, lam=0.1)
    with pytest.raises(RouterError, match="no cost for arm 'm'"):
        choose(PROBS, {"s": 1.0, "l": 2.0}, tau=0.5)
    with pytest.raises(RouterError, match="no predicted"):
        choose(PROBS, COSTS, candidates=["x"], tau=0.5)
    with pytest.raises(RouterError, match="no candidate"):
        choose(PROBS, COSTS, candidates=[], tau=0.5)


def test_router_choose_uses_the_card_policy(tmp_path: Path, featurizer: Featurizer) -> None:
    costs = {"small:direct": 1.0, "large:cot": 10.0}
    probs = {"small:direct": 0.6, "large:cot": 0.9}
    r = Router.load(_save(tmp_path, featurizer, policy={"kind": "threshold", "tau": 0.7, "costs": costs}))
    assert r.choose(probs)[0] == "large:cot"  # card τ = 0.7, card costs
    assert r.choose(probs, tau=0.5)[0] == "small:direct"
    assert r.choose(probs, costs, lam=0.01)[0] == "large:cot"
    assert r.choose(probs, costs, tau=0.5, lam=0.01)[0] == "small:direct"  # τ wins when both are given
    assert r.choose(probs, candidates=["small:direct"])[0] == "small:direct"
    r2 = Router.load(_save(tmp_path, featurizer, name="lam",
                           policy={"kind": "lambda", "lambda": 0.1, "costs": costs}))
    assert r2.choose(probs)[0] == "small:direct"  # 0.5 vs -0.1


# -- atomic saves ----------------------------------------------------------------------


def test_failed_save_leaves_no_partial_artifact(tmp_path: Path, featurizer: Featurizer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, featurizer)
    assert list(tmp_path.iterdir()) == []


def test_failed_resave_keeps_the_old_artifact(tmp_path: Path, featurizer: Featurizer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path, featurizer)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    expected = Router.load(path).predict(["the date"])
    real_replace = os.replace

    def fail_on_card(src: object, dst: object) -> None:
        if str(dst).endswith("card.json"):
            raise OSError("interrupted")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", fail_on_card)
    with pytest.raises(OSError, match="interrupted"):
        save_router(path, featurizer, "logistic", _arrays("logistic", featurizer, seed=5), ARMS)
    monkeypatch.setattr(os, "replace", real_replace)
    assert [p.name for p in tmp_path.iterdir()] == ["router"]
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert np.array_equal(Router.load(path).predict(["the date"]), expected)
    # a successful re-save replaces it
    save_router(path, featurizer, "logistic", _arrays("logistic", featurizer, seed=5), ARMS)
    assert not np.array_equal(Router.load(path).predict(["the date"]), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["router"]


def test_card_extra_values_are_made_json_plain(tmp_path: Path, featurizer: Featurizer) -> None:
    path = _save(tmp_path, featurizer, cv={"auc": float("nan"), "apgr": np.float64(0.25), "n": np.int64(3),
                                           "curve": np.array([0.5, np.inf])})
    card = json.loads((path / "card.json").read_text())
    assert card["cv"] == {"auc": None, "apgr": 0.25, "n": 3, "curve": [0.5, None]}


def test_save_refuses_bad_input(tmp_path: Path, featurizer: Featurizer) -> None:
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(RouterError, match="not a router artifact"):
        save_router(other, featurizer, "logistic", _arrays("logistic", featurizer), ARMS)
    assert (other / "todo.txt").read_text() == "keep me"
    with pytest.raises(RouterError, match="unknown router kind"):
        save_router(tmp_path / "x", featurizer, "forest", {}, ARMS)
    with pytest.raises(RouterError, match="logistic expects"):
        save_router(tmp_path / "x", featurizer, "logistic", {"W": np.zeros((2, 3)), "b": np.zeros(2)}, ARMS)
    with pytest.raises(RouterError, match="distinct"):
        save_router(tmp_path / "x", featurizer, "logistic", _arrays("logistic", featurizer), ["a", "a"])
    with pytest.raises(RouterError, match="tau"):
        _save(tmp_path, featurizer, name="x", policy={"kind": "threshold", "tau": -1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
