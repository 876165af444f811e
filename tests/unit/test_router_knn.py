"""The knn and ensemble router kinds: the neighbour rule against hand-computed values,
leave-one-out choice of k and weighting, artifacts that do not fit, and the ensemble as the
weighted mean of its two members."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

import effreason_agents.adapters.embeddings as emb_mod  # noqa: E402
import effreason_agents.adapters.router as router_mod  # noqa: E402
from effreason_agents.adapters.router import Router, RouterError, knn_proba  # noqa: E402
from effreason_agents.core.numeric import sigmoid  # noqa: E402
from router_training.models import fit_router, knn_select  # noqa: E402
from router_training.table import OutcomeTable  # noqa: E402

ARMS = ["small:direct", "large:cot"]


def test_knn_proba_matches_hand_computed_values() -> None:
    sims = np.array([[0.9, 0.8, 0.1, 0.5]])
    y = np.array([[1, 0], [0, 0], [1, 1], [0, 0]], dtype=float)  # 0 where unknown, as artifacts store it
    mask = np.array([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=float)  # row 1's second arm unknown
    base = np.array([0.5, 0.25])
    # uniform, k = 2: neighbours 0 and 1; arm 0: (1 + 0 + 1·0.5) / (2 + 1); arm 1: (0 + 0 + 0.25) / (1 + 1)
    p = knn_proba(sims, y, mask, base, k=2, temp=0.0, prior=1.0)
    assert p[0] == pytest.approx([1.5 / 3, 0.25 / 2])
    # softmax weights, k = 3: neighbours 0, 1, 3 with weights 1, e^-1, e^-4 (temp 0.1)
    w = np.exp((np.array([0.9, 0.8, 0.5]) - 0.9) / 0.1)
    p = knn_proba(sims, y, mask, base, k=3, temp=0.1, prior=0.0)
    assert p[0, 0] == pytest.approx(w[0] / w.sum())
    assert p[0, 1] == pytest.approx(0.0)  # neighbour 1's label is unknown, 0 and 3 are wrong
    # k larger than the training set uses every prompt
    assert knn_proba(sims, y, mask, base, k=50, temp=0.0, prior=0.0)[0, 0] == pytest.approx(2 / 4)


def _clusters(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(8, 384))
    c = rng.integers(0, 8, size=n)
    E = centre[c] + noise * rng.normal(size=(n, 384))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    Y = np.column_stack([(c % 2 == 0), (c < 4)]).astype(float)
    return E.astype(np.float32), Y


def test_knn_select_prefers_local_neighbours_for_clean_labels_and_broad_ones_for_noise() -> None:
    E, Y = _clusters(400, 0.3, seed=0)
    clean = knn_select(E, Y, ks=(10, 200), temps=(0.0,))
    assert clean["k"] == 10  # 200 neighbours reach into other clusters
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random(Y.shape) < 0.45, 1 - Y, Y)  # labels nearly coin flips within a cluster
    broad = knn_select(E, noisy, ks=(1, 40), temps=(0.0,))
    assert broad["k"] == 40
    assert set(clean["grid"]) == {"k=10,temp=0.0", "k=200,temp=0.0"}
    # leave-one-out: the prompt itself is never its own neighbour (k = 1 on duplicates of a prompt
    # with opposite labels is always wrong)
    dup = np.repeat(E[:1], 2, axis=0)
    assert knn_select(dup, np.array([[1.0, 1.0], [0.0, 0.0]]), ks=(1,), temps=(0.0,), prior=0.0)["loss"] > 5


@pytest.fixture()
def fake_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Embeddings that put prompts mentioning "date" at one pole and the others at the other."""

    def fake(texts: list[str], **_: object) -> np.ndarray:
        out = np.zeros((len(texts), 384), np.float32)
        for i, t in enumerate(texts):
            out[i, 0] = 1.0 if "date" in t else -1.0
            out[i, 1 + (len(t) % 50)] = 0.1  # small differences between prompts
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    monkeypatch.setattr(emb_mod, "embed", fake)
    monkeypatch.setattr(router_mod, "_require_embeddings", lambda: None)


def _table(n: int) -> OutcomeTable:
    prompts = [f"question {i}: " + ("the date" if i % 2 else "seven trains") + " x" * (i % 7) for i in range(n)]
    labels = [[0.0, 1.0] if i % 2 else [1.0, 0.0] for i in range(n)]
    return OutcomeTable(prompts, list(ARMS), np.array(labels), source="synthetic")


def test_knn_router_records_its_choice_and_predicts_from_neighbours(fake_embeddings: None, tmp_path) -> None:
    fitted = fit_router(_table(60), "knn")
    hyper = fitted.training["hyper"]
    assert hyper["k_chosen"] in (10, 25, 50) and hyper["temp_chosen"] in (0.0, 0.02, 0.05, 0.1)
    assert fitted.featurizer.name == "minilm" and fitted.featurizer.dim == 384
    r = Router.load(fitted.save(tmp_path / "knn"))
    p = r.predict_one("is the date right?")
    assert p["large:cot"] > 0.9 and p["small:direct"] < 0.1


def test_ensemble_is_the_weighted_mean_of_its_members(fake_embeddings: None, tmp_path) -> None:
    table = _table(60)
    fitted = fit_router(table, "ensemble", weight=0.25, max_words=50, max_chars=50)
    r = Router.load(fitted.save(tmp_path / "ens"))
    X = r.featurizer.transform(["the date", "seven trains"])
    start, stop = r.featurizer.layout()["embedding"]
    logistic = sigmoid(np.asarray(X @ r.arrays["W"].T) + r.arrays["b"])
    w = r.arrays
    sims = X[:, start:stop].toarray().astype(np.float32) @ w["knn_emb"].T
    k, temp, prior = w["knn_hp"]
    knn = knn_proba(sims, w["knn_y"], w["knn_mask"], w["knn_base"], int(k), float(temp), float(prior))
    assert np.allclose(r.predict(["the date", "seven trains"]), 0.25 * logistic + 0.75 * knn)
    with pytest.raises(RouterError, match="ensemble weight must be in"):
        fit_router(table, "ensemble", weight=1.5, max_words=50, max_chars=50)


def test_a_knn_artifact_that_does_not_fit_its_card_is_refused(fake_embeddings: None, tmp_path) -> None:
    path = fit_router(_table(40), "knn").save(tmp_path / "knn")
    with np.load(path / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(path / "weights.npz", **{**arrays, "knn_hp": np.array([0.0, 0.0, 1.0])})
    with pytest.raises(RouterError, match=r"knn_hp \[k, temp, prior\] must have 1 <= k"):
        Router.load(path)
    np.savez(path / "weights.npz", **{**arrays, "knn_y": arrays["knn_y"][:, :1]})
    with pytest.raises(RouterError, match="knn expects knn_emb"):
        Router.load(path)
