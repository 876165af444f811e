"""``effreason tune`` and adapter tiers without the real model: data validation, the
adapter GGUF the writer produces (names, shapes, orientation, metadata), the card,
adapter checks (corrupted, another model's), and how an adapter tier's requests name
their adapter. A tiny random llama stands in for SmolLM2 so training runs in seconds."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

gguf = pytest.importorskip("gguf")

from effreason_agents.adapters.lora import (  # noqa: E402
    BASE_SHA256_KEY,
    CARD_FILE,
    check_adapter,
    file_sha256,
    usable_adapters,
)
from effreason_agents.adapters.tiers import TierClient  # noqa: E402
from effreason_agents.config import config_from_data, default_config_data  # noqa: E402
from effreason_agents.core.records import ErrorKind  # noqa: E402
from effreason_agents.errors import AdapterError, ConfigError, TierError, TuneError  # noqa: E402
from effreason_agents.training.tune import (  # noqa: E402
    TuneSettings,
    encode_example,
    load_sft_data,
    lora_tensors,
    tune,
    write_adapter_gguf,
)

# a tiny llama: hidden 16, 2 query heads and 1 kv head of 8 dims, 2 layers
HIDDEN, N_HEAD, N_KV, HEAD_DIM, LAYERS, VOCAB = 16, 2, 1, 8, 2, 96


def _row(*msgs: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in msgs]})


def _fake_base(path: Path) -> Path:
    """A GGUF 'model' with the tiny llama's attention weights (PyTorch layout (out, in))."""
    w = gguf.GGUFWriter(str(path), "llama")
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((N_HEAD * HEAD_DIM, HIDDEN), np.float32))
        w.add_tensor(f"blk.{i}.attn_k.weight", np.zeros((N_KV * HEAD_DIM, HIDDEN), np.float32))
        w.add_tensor(f"blk.{i}.attn_v.weight", np.zeros((N_KV * HEAD_DIM, HIDDEN), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _fake_state(rank: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for i in range(LAYERS):
        for proj, out in (("q_proj", N_HEAD * HEAD_DIM), ("v_proj", N_KV * HEAD_DIM)):
            pre = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            state[f"{pre}.lora_A.weight"] = rng.standard_normal((rank, HIDDEN)).astype(np.float32)
            state[f"{pre}.lora_B.weight"] = rng.standard_normal((out, rank)).astype(np.float32)
    return state


def _write_adapter(path: Path, base: Path, *, rank: int = 4, sha: str | None = None) -> Path:
    t = lora_tensors(_fake_state(rank), n_layers=LAYERS, n_head=N_HEAD, n_head_kv=N_KV)
    return write_adapter_gguf(path, t, alpha=8.0, base_sha256=sha or file_sha256(base))


# -- data ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("{not json", "not valid JSON"),
        ('{"prompt": "x"}', 'non-empty "messages" list'),
        ('{"messages": []}', 'non-empty "messages" list'),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "message 0 must be"),
        ('{"messages": [{"role": "user", "content": 3}]}', "message 0 must be"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
        ('[1, 2]', 'non-empty "messages" list'),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, words: str) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text(_row(("user", "q"), ("assistant", "a")) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(TuneError) as exc:
        load_sft_data(data)
    assert f"{data}:3" in str(exc.value) and words in str(exc.value)


def test_missing_and_empty_data(tmp_path: Path) -> None:
    with pytest.raises(TuneError, match="does not exist"):
        load_sft_data(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(TuneError, match="holds no examples"):
        load_sft_data(empty)


def test_valid_data_loads(tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text(_row(("system", "s"), ("user", "q"), ("assistant", "a")) + "\n", encoding="utf-8")
    assert load_sft_data(data) == [[{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a"}]]


@pytest.mark.parametrize("bad", [dict(steps=0), dict(epochs=0), dict(lr=0), dict(rank=0), dict(alpha=-1),
                                 dict(max_length=4), dict(batch_size=0)])
def test_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(TuneError):
        TuneSettings(**bad).check()


def test_cli_refuses_bad_data_before_loading_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from effreason_agents.cli.app import app

    import transformers

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("the model must not be loaded for bad data")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    data = tmp_path / "sft.jsonl"
    data.write_text(_row(("user", "q"), ("assistant", "a")) + "\n{oops\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["tune", "--data", str(data), "--out", str(tmp_path / "out")])
    assert r.exit_code == 1
    assert "sft.jsonl:2" in r.output and "not valid JSON" in r.output
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(app, ["tune", "--data", str(data), "--out", str(tmp_path / "out"), "--steps", "2", "--epochs", "1"])
    assert r.exit_code == 1 and "at most one of --steps and --epochs" in r.output
    data.write_text(_row(("user", "q"), ("assistant", "a")) + "\n", encoding="utf-8")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TuneError, match="not a tune output"):
        tune(data, other, TuneSettings(steps=1))
    with pytest.raises(TuneError, match="is a file"):
        tune(data, other / "notes.txt", TuneSettings(steps=1))
    assert (other / "notes.txt").read_text() == "mine"


# -- the tokenisation and loss mask ----------------------------------------------------------
class _CharTokenizer:
    """ChatML rendered as text, one token per character."""

    pad_token_id = 0
    eos_token_id = 1

    def apply_chat_template(self, msgs: list[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = False) -> str:
        text = "".join(f"<{m['role']}>{m['content']}|\n" for m in msgs)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [2 + ord(c) % (VOCAB - 2) for c in text]}


def test_loss_is_on_assistant_tokens_only() -> None:
    tok = _CharTokenizer()
    msgs = [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "AB"},
            {"role": "user", "content": "again"}, {"role": "assistant", "content": "C"}]
    ids, labels = encode_example(tok, msgs, 512)
    text = tok.apply_chat_template(msgs)
    trained = "".join(text[i] for i, lab in enumerate(labels) if lab != -100)
    assert trained == "AB|\nC|\n"  # each reply and its end-of-turn marker, nothing else
    assert all(lab in (-100, i) for lab, i in zip(labels, ids))
    ids, labels = encode_example(tok, msgs, 10)
    assert len(ids) == len(labels) == 10


# -- the adapter file --------------------------------------------------------------------------
def test_writer_names_shapes_and_orientation(tmp_path: Path) -> None:
    base = _fake_base(tmp_path / "base.gguf")
    state = _fake_state(rank=4)
    tensors = lora_tensors(state, n_layers=LAYERS, n_head=N_HEAD, n_head_kv=N_KV)
    assert sorted(tensors) == [f"blk.{i}.attn_{p}.weight" for i in range(LAYERS) for p in ("q", "v")]
    a, b = tensors["blk.1.attn_v.weight"]
    pre = "base_model.model.model.layers.1.self_attn"
    np.testing.assert_array_equal(a, state[f"{pre}.v_proj.lora_A.weight"])  # v: unchanged
    np.testing.assert_array_equal(b, state[f"{pre}.v_proj.lora_B.weight"])
    qa, qb = tensors["blk.1.attn_q.weight"]
    raw_b = state[f"{pre}.q_proj.lora_B.weight"]
    np.testing.assert_array_equal(qa, state[f"{pre}.q_proj.lora_A.weight"])
    # q: B's rows in llama.cpp's rotary order; per head, the first and second halves interleave
    half = HEAD_DIM // 2
    for h in range(N_HEAD):
        for j in range(half):
            np.testing.assert_array_equal(qb[h * HEAD_DIM + 2 * j], raw_b[h * HEAD_DIM + j])
            np.testing.assert_array_equal(qb[h * HEAD_DIM + 2 * j + 1], raw_b[h * HEAD_DIM + half + j])
    # the delta B @ A is the permuted delta of the weight
    assert not np.array_equal(qb, raw_b)

    path = write_adapter_gguf(tmp_path / "adapter.gguf", tensors, alpha=8.0, base_sha256=file_sha256(base))
    r = gguf.GGUFReader(path)
    assert r.fields["general.type"].contents() == "adapter"
    assert r.fields["adapter.type"].contents() == "lora"
    assert r.fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields[BASE_SHA256_KEY].contents() == file_sha256(base)
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    # ggml order (reversed PyTorch): lora_a is (in, r), lora_b is (r, out)
    assert shapes["blk.0.attn_q.weight.lora_a"] == (HIDDEN, 4)
    assert shapes["blk.0.attn_q.weight.lora_b"] == (4, N_HEAD * HEAD_DIM)
    assert shapes["blk.0.attn_v.weight.lora_b"] == (4, N_KV * HEAD_DIM)
    assert len(shapes) == 2 * 2 * LAYERS
    info = check_adapter(path, base)
    assert (info.rank, info.alpha, info.tensors, info.base_sha256) == (4, 8.0, 2 * LAYERS, file_sha256(base))


def test_incomplete_state_is_refused() -> None:
    state = {k: v for k, v in _fake_state().items() if "layers.0.self_attn.q_proj.lora_B" not in k}
    with pytest.raises(TuneError, match="lacks a factor"):
        lora_tensors(state, n_layers=LAYERS, n_head=N_HEAD, n_head_kv=N_KV)


# -- adapter checks ----------------------------------------------------------------------------
def test_corrupted_adapters_are_refused_naming_the_file(tmp_path: Path) -> None:
    base = _fake_base(tmp_path / "base.gguf")
    good = _write_adapter(tmp_path / "good.gguf", base)
    with pytest.raises(AdapterError, match="does not exist"):
        check_adapter(tmp_path / "missing.gguf", base)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(AdapterError, match="not a GGUF file") as exc:
        check_adapter(junk, base)
    assert str(junk) in str(exc.value)
    blob = good.read_bytes()
    for cut in (len(blob) - 16, 200, 40):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(blob[:cut])
        with pytest.raises(AdapterError) as exc:
            check_adapter(bad, base)
        assert str(bad) in str(exc.value) and ("truncated" in str(exc.value) or "corrupted" in str(exc.value))


def test_adapter_of_another_model_is_refused(tmp_path: Path) -> None:
    base = _fake_base(tmp_path / "base.gguf")
    other = _write_adapter(tmp_path / "kv" / "adapter.gguf", base, sha="0" * 64)
    with pytest.raises(AdapterError, match="tuned from another model"):
        check_adapter(other, base)
    # the card beside the adapter records the base too
    (tmp_path / "card").mkdir()
    ok = _write_adapter(tmp_path / "card" / "adapter.gguf", base)
    (tmp_path / "card" / CARD_FILE).write_text(json.dumps({"base_model": {"sha256": "f" * 64}}))
    with pytest.raises(AdapterError, match="its card records base sha256") as exc:
        check_adapter(ok, base)
    assert str(ok) in str(exc.value)
    # the right base but other shapes (another architecture size)
    wide = tmp_path / "wide.gguf"
    t = lora_tensors(_fake_state(), n_layers=LAYERS, n_head=N_HEAD, n_head_kv=N_KV)
    t = {k: (np.zeros((4, HIDDEN * 2), np.float32), b) for k, (a, b) in t.items()}
    write_adapter_gguf(wide, t, alpha=8.0, base_sha256=file_sha256(base))
    with pytest.raises(AdapterError, match="do not fit"):
        check_adapter(wide, base)


def test_a_model_file_is_not_an_adapter(tmp_path: Path) -> None:
    base = _fake_base(tmp_path / "base.gguf")
    with pytest.raises(AdapterError, match="not a LoRA adapter"):
        check_adapter(base, base)


def test_usable_adapters_splits_and_warns_once(tmp_path: Path) -> None:
    base = _fake_base(tmp_path / "base.gguf")
    good = _write_adapter(tmp_path / "good.gguf", base)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="bad.gguf"):
        ok, broken = usable_adapters(base, [str(good), str(bad)])
    assert ok == (str(good.resolve()),) and list(broken) == [str(bad.resolve())]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert usable_adapters(base, [str(bad), str(good)])[0] == ok  # no second warning


# -- adapter tiers ---------------------------------------------------------------------------
def _config(tmp_path: Path, **adapters: str) -> Any:
    base = _fake_base(tmp_path / "base.gguf")
    data = default_config_data({})
    small = data["tiers"]["small"]
    data["tiers"] = {"small": small, **{n: {**small, "adapter": a} for n, a in adapters.items()}}
    data["ladder"] = [f"{n}:direct" for n in data["tiers"]]
    data["embedded"] = {"model_path": str(base)}
    return config_from_data(data)


def test_adapter_tiers_name_their_adapter_per_request(tmp_path: Path) -> None:
    base = _fake_base(tmp_path / "base.gguf")
    a1 = _write_adapter(tmp_path / "a1" / "adapter.gguf", base)
    a2 = _write_adapter(tmp_path / "a2" / "adapter.gguf", base)
    bad = tmp_path / "bad" / "adapter.gguf"
    bad.parent.mkdir()
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.warns(RuntimeWarning, match="tier is unavailable"):
        cfg = _config(tmp_path, t1=str(a1), t2=str(a2), broken=str(bad))
        clients = {n: TierClient(n, t, cfg) for n, t in cfg.tiers.items()}
        lora = {n: c.call_settings(max_tokens=8).get("extra_body", {}).get("lora") for n, c in clients.items()}
    # sorted by path: a1 is id 0, a2 id 1; every request names every adapter (llama.cpp keeps a
    # slot's last adapter otherwise); the base tier sets them all to 0
    assert lora["small"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]
    assert lora["t1"] == [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]
    assert lora["t2"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    assert lora["broken"] is None
    # the broken tier is unavailable before any server starts or model is called
    with pytest.raises(TierError) as exc:
        clients["broken"].base_url()
    assert exc.value.kind == ErrorKind.UNAVAILABLE and str(bad.resolve()) in str(exc.value)
    with pytest.raises(TierError) as exc:
        clients["broken"].complete([], max_tokens=4)
    assert exc.value.kind == ErrorKind.UNAVAILABLE


def test_no_adapter_tiers_no_lora_field(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert "extra_body" not in TierClient("small", cfg.tiers["small"], cfg).call_settings(max_tokens=8)


def test_adapter_needs_the_embedded_engine() -> None:
    data = default_config_data({})
    data["tiers"]["large"]["adapter"] = "x/adapter.gguf"
    with pytest.raises(ConfigError, match="embedded engine only"):
        config_from_data(data)


# -- a whole (tiny) tune -------------------------------------------------------------------------
def test_tune_writes_adapter_and_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import transformers

    base = _fake_base(tmp_path / "base.gguf")
    llama = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=32,
                                     num_hidden_layers=LAYERS, num_attention_heads=N_HEAD,
                                     num_key_value_heads=N_KV, head_dim=HEAD_DIM, max_position_embeddings=256)
    loaded: list[str] = []

    def model(path: str, gguf_file: str, **k: Any) -> Any:
        loaded.append(str(Path(path) / gguf_file))
        torch.manual_seed(123)
        return transformers.LlamaForCausalLM(llama)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda p, gguf_file, **k: model(p, gguf_file))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _CharTokenizer())
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(_row(("user", f"q{i}"), ("assistant", "yes")) + "\n" for i in range(6)), encoding="utf-8")
    out = tmp_path / "run" / "tuned"
    steps: list[tuple[int, float]] = []
    res = tune(data, out, TuneSettings(steps=5, lr=1e-2, rank=4, alpha=8, batch_size=3, seed=7), model_path=base,
               quiet=True, on_step=lambda s, loss: steps.append((s, loss)))
    assert loaded == [str(base)]
    assert res.adapter == out / "adapter.gguf" and sorted(p.name for p in out.iterdir()) == ["adapter.gguf", "card.json"]
    assert [p.name for p in out.parent.iterdir()] == ["tuned"]  # no temporary folder left
    card = json.loads(res.card_path.read_text())
    assert card == res.card
    assert card["base_model"] == {"file": str(base), "name": "base.gguf", "sha256": file_sha256(base)}
    assert card["data"]["sha256"] == file_sha256(data) and card["data"]["examples"] == 6
    assert (card["steps"], card["rank"], card["alpha"], card["seed"], card["epochs"]) == (5, 4, 8, 7, 2.5)
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5]
    assert card["final_loss"] == pytest.approx(steps[-1][1], abs=1e-5)
    assert card["mean_loss"] == pytest.approx(sum(x for _, x in steps) / 5, abs=1e-5)
    assert card["final_loss"] < card["first_loss"] and card["seconds"] > 0
    assert card["trainable_parameters"] == LAYERS * (4 * HIDDEN + N_HEAD * HEAD_DIM * 4 + 4 * HIDDEN + N_KV * HEAD_DIM * 4)
    info = check_adapter(res.adapter, base)
    assert (info.rank, info.alpha, info.tensors) == (4, 8.0, 2 * LAYERS)
    # same seed, same adapter; a second run replaces the files in place
    again = tune(data, out, TuneSettings(steps=5, lr=1e-2, rank=4, alpha=8, batch_size=3, seed=7), model_path=base, quiet=True)
    assert again.card["final_loss"] == pytest.approx(card["final_loss"], abs=1e-6)


def test_cli_tune_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import transformers

    from effreason_agents.cli.app import app

    base = _fake_base(tmp_path / "base.gguf")
    llama = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=32,
                                     num_hidden_layers=LAYERS, num_attention_heads=N_HEAD,
                                     num_key_value_heads=N_KV, head_dim=HEAD_DIM, max_position_embeddings=256)
    torch.manual_seed(0)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: transformers.LlamaForCausalLM(llama))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _CharTokenizer())
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(_row(("user", f"q{i}"), ("assistant", "ok")) + "\n" for i in range(4)), encoding="utf-8")
    r = CliRunner().invoke(app, ["tune", "--data", str(data), "--out", str(tmp_path / "o"), "--model", str(base),
                                 "--steps", "2", "--rank", "2", "--alpha", "4", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["adapter"] == str(tmp_path / "o" / "adapter.gguf") and doc["steps"] == 2 and doc["rank"] == 2
    assert check_adapter(doc["adapter"], base).rank == 2
