# Two entry points, both idempotent: the venv is built once and reinstalled only when setup.cfg changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CORPUS := data/demo-corpus

.PHONY: demo test benchmark clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/speechprobe corpus --out $(DEMO_CORPUS)
	$(BIN)/speechprobe corpus --summary $(DEMO_CORPUS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

benchmark: $(STAMP)
	$(BIN)/python benchmarks/corpus_build.py
	$(BIN)/python benchmarks/mfcc_baseline.py

clean:
	rm -rf $(VENV) data *.egg-info
