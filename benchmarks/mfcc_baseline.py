"""Sanity check of the corpus: an MFCC-mean logistic-regression baseline per task, as JSON.

A corpus that MFCC means solve perfectly cannot tell encoders apart; one they cannot beat chance on has
no signal. The README quotes this script's output for the default corpus.

    python benchmarks/mfcc_baseline.py [--corpus data/demo-corpus] [--folds 5]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from speechprobe.encoders.mfcc import mfcc_mean
from speechprobe.tasks.corpus import load_corpus
from speechprobe.tasks.splits import cross_validation_splits
from speechprobe.tasks.synthetic import PRESETS, build_corpus
from speechprobe.tasks.tasks import get_task, task_labels

SAMPLE_RATE = 16000


def fold_accuracies(features: np.ndarray, labels: np.ndarray, splits) -> list[float]:
    scores = []
    for split in splits:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(features[split.train], labels[split.train])
        scores.append(float(model.score(features[split.test], labels[split.test])))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/demo-corpus", help="built with the default preset if missing")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build_corpus(args.corpus, PRESETS["default"], progress=False)
    corpus = load_corpus(args.corpus)
    start = time.perf_counter()
    features = np.stack([mfcc_mean(wave, SAMPLE_RATE) for wave in corpus.iter_audio(SAMPLE_RATE)])
    results = {"corpus": args.corpus, "utterances": len(corpus), "features": "MFCC-20 mean",
               "feature_seconds": round(time.perf_counter() - start, 2), "folds": args.folds, "tasks": {}}
    for name in ("gender", "dialect", "channel", "speaker"):
        task = get_task(name, corpus.metadata)
        labels = task_labels(corpus.metadata, task)
        splits = cross_validation_splits(corpus.metadata, task, folds=args.folds, seed=args.seed)
        scores = fold_accuracies(features, labels, splits)
        _, counts = np.unique(labels, return_counts=True)
        results["tasks"][name] = {
            "split": task.split_policy,
            "classes": len(counts),
            "accuracy_mean": round(float(np.mean(scores)), 4),
            "accuracy_std": round(float(np.std(scores)), 4),
            "chance": round(float(counts.max() / counts.sum()), 4),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
