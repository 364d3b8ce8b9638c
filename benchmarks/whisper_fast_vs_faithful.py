"""How far Whisper's fast mode (no 30 s padding) falls from faithful mode, per layer, as JSON.

Reads (extracting if missing) the default corpus's stores for `whisper-tiny.en` and
`whisper-tiny.en-fast`, then per layer: the cosine between each utterance's two pooled vectors (raw and
after centring on the corpus mean, closer to what a probe sees), and a logistic-regression probe's
accuracy for every task in each mode (standardised features, 5 folds, speaker-disjoint or within-speaker
as the task requires). A quick scikit-learn probe, not the framework's elastic-net probes.

    python benchmarks/whisper_fast_vs_faithful.py [--corpus data/demo-corpus] [--stores data/stores]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from speechprobe.encoders.extraction import extract
from speechprobe.encoders.registry import create_encoder
from speechprobe.encoders.store import RepresentationStore
from mfcc_baseline import fold_accuracies
from speechprobe.tasks.corpus import load_corpus
from speechprobe.tasks.splits import cross_validation_splits
from speechprobe.tasks.synthetic import PRESETS, build_corpus
from speechprobe.tasks.tasks import get_task, task_labels

MODES = ("whisper-tiny.en", "whisper-tiny.en-fast")
TASKS = ("gender", "dialect", "channel", "speaker")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/demo-corpus")
    parser.add_argument("--stores", default="data/stores")
    args = parser.parse_args()
    build_corpus(args.corpus, PRESETS["default"], progress=False)
    corpus = load_corpus(args.corpus)
    stores = {}
    for mode in MODES:
        result = extract(corpus, create_encoder(mode), Path(args.stores) / mode)
        stores[mode] = RepresentationStore(result.path)
    metadata = corpus.metadata
    splits = {name: cross_validation_splits(metadata, get_task(name, metadata), folds=5) for name in TASKS}
    labels = {name: task_labels(metadata, get_task(name, metadata)) for name in TASKS}
    layers = {}
    for layer in stores[MODES[0]].layer_names:
        faithful, fast = (np.asarray(stores[m].layer(layer), dtype=np.float64) for m in MODES)
        raw = cosines(faithful, fast)
        centred = cosines(faithful - faithful.mean(0), fast - fast.mean(0))
        accuracy = {name: {m: round(float(np.mean(fold_accuracies(x, labels[name], splits[name]))), 4)
                           for m, x in zip(MODES, (faithful, fast))} for name in TASKS}
        layers[layer] = {"cosine_mean": round(float(raw.mean()), 4), "cosine_min": round(float(raw.min()), 4),
                         "centred_cosine_mean": round(float(centred.mean()), 4),
                         "probe_accuracy": accuracy,
                         "largest_accuracy_drop": round(max(a[MODES[0]] - a[MODES[1]] for a in accuracy.values()), 4)}
    print(json.dumps({"benchmark": "whisper_fast_vs_faithful", "utterances": len(corpus), "layers": layers},
                     indent=2))


if __name__ == "__main__":
    main()
