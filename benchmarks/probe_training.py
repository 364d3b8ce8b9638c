"""Probe training speed and accuracy against NeuroX 1.0.9 and scikit-learn's saga, as JSON.

On the same arrays (N = 4000 utterances, 5 layers x 384 neurons, 8 classes; 3200 train, 400 validation,
400 test), all timed in this one run on this machine:

- NeuroX's ``train_logistic_regression_probe`` (its defaults: 10 epochs, batch 32, lambdas 0.001), one
  probe on one layer;
- scikit-learn ``LogisticRegression(solver="saga", penalty="elasticnet")``, one probe per grid setting
  on one layer (the same 8 settings as ours, mapped to C and l1_ratio);
- speechprobe: the full sweep (5 layers x 8 settings, chosen on validation, scored on test, bootstrap
  intervals included) with its defaults (early stopping) and with NeuroX's budget (10 epochs, no early
  stopping), one probe alone, and a minimal-subset search on the best layer.

NeuroX is imported from ``benchmarks/.neurox`` (``make benchmark`` installs it there with ``--no-deps``,
with the two small packages it imports: it is not a dependency of speechprobe). Without it the NeuroX
part is reported as skipped.

    python benchmarks/probe_training.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from speechprobe.probing.probe import ElasticNetProbe, TrainingOptions
from speechprobe.probing.ranking import rank_neurons
from speechprobe.probing.subset import minimal_subset
from speechprobe.probing.sweep import DEFAULT_GRID, probe_layers

NEUROX_DIR = Path(__file__).resolve().parent / ".neurox"
N, LAYERS, NEURONS, CLASSES = 4000, 5, 384, 8


def make_arrays(seed: int = 0):
    """Layers whose class signal rises then falls (peak in the middle), in 40 of 384 neurons, with
    neuron scales spread over two orders of magnitude and arbitrary offsets, as real activations have."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, N)
    strength = [0.15, 0.3, 0.45, 0.35, 0.2]
    layers = []
    for g in range(LAYERS):
        X = rng.normal(size=(N, NEURONS))
        informative = rng.choice(NEURONS, 40, replace=False)
        X[:, informative] += rng.normal(size=(CLASSES, 40))[y] * strength[g] * 2
        scale = np.exp(rng.uniform(np.log(0.1), np.log(10), NEURONS))
        layers.append((X * scale + rng.normal(size=NEURONS) * 5).astype(np.float32))
    parts = np.arange(N)
    split = argparse.Namespace(train=parts[:3200], validation=parts[3200:3600], test=parts[3600:])
    return {f"layer{g}": X for g, X in enumerate(layers)}, y, split


def timed(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def neurox_probe(X_train, y_train, X_test, y_test, repeats):
    if not NEUROX_DIR.is_dir():
        return {"skipped": f"NeuroX not installed in {NEUROX_DIR} (make benchmark installs it)"}
    sys.path.insert(0, str(NEUROX_DIR))
    from neurox.interpretation import linear_probe  # noqa: E402  (optional, benchmark-only)

    def train():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return linear_probe.train_logistic_regression_probe(X_train, y_train, lambda_l1=0.001, lambda_l2=0.001)

    seconds, probe = timed(train, repeats)
    with torch.no_grad():
        predicted = probe(torch.from_numpy(X_test)).argmax(dim=1).numpy()
    return {"seconds": seconds, "test_accuracy": float(np.mean(predicted == y_test)), "epochs": 10, "batch_size": 32}


def sklearn_probes(X_train, y_train, X_test, y_test):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X_train)
    Xtr, Xte = scaler.transform(X_train), scaler.transform(X_test)
    n = len(y_train)
    runs = []
    for l1, l2 in DEFAULT_GRID:
        if l1 == l2 == 0:
            model = LogisticRegression(solver="saga", penalty=None)
        else:  # ours: mean CE + l1 |W| + l2 W^2  <=>  C = 1 / (n (l1 + 2 l2)), l1_ratio = l1 / (l1 + 2 l2)
            model = LogisticRegression(solver="saga", penalty="elasticnet", C=1.0 / (n * (l1 + 2 * l2)),
                                       l1_ratio=l1 / (l1 + 2 * l2))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Xtr, y_train)
        runs.append((time.perf_counter() - start, model.score(Xte, y_test), int(np.max(model.n_iter_))))
    return {
        "seconds_per_probe": statistics.mean(r[0] for r in runs),
        "seconds_8_settings": sum(r[0] for r in runs),
        "best_test_accuracy": max(r[1] for r in runs),
        "iterations": [r[2] for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timings are medians over this many runs")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    layers, y, split = make_arrays()
    names = list(layers)

    sweep_seconds, sweep = timed(lambda: probe_layers(layers, y, split, n_resamples=1000), args.repeats)
    # NeuroX's budget: 10 epochs, no early stopping (our batch size 64 and learning rate kept)
    budget = TrainingOptions(max_epochs=10, patience=None)
    budget_seconds, budget_sweep = timed(lambda: probe_layers(layers, y, split, n_resamples=1000, options=budget),
                                         args.repeats)
    best = sweep.best_layer
    X = layers[best]
    Xtr, ytr, Xva, yva, Xte, yte = X[split.train], y[split.train], X[split.validation], y[split.validation], X[split.test], y[split.test]
    chosen = sweep.probes[best]
    settings = dict(l1=chosen.l1, l2=chosen.l2)
    single_seconds, single = timed(lambda: ElasticNetProbe(**settings).fit(Xtr, ytr, Xva, yva), args.repeats)
    ranking = rank_neurons(single)
    subset_seconds, subset = timed(lambda: minimal_subset(Xtr, ytr, Xva, yva, ranking, **settings), args.repeats)

    neurox = neurox_probe(Xtr, ytr, Xte, yte, args.repeats)
    sklearn = sklearn_probes(Xtr, ytr, Xte, yte)

    n_probes = len(names) * len(DEFAULT_GRID)
    report = {
        "data": {"n": N, "layers": LAYERS, "neurons": NEURONS, "classes": CLASSES, "train": 3200, "validation": 400, "test": 400},
        "torch_threads": torch.get_num_threads(),
        "speechprobe": {
            "sweep_seconds": sweep_seconds,
            "sweep_probes": n_probes,
            "best_layer": best,
            "best_layer_setting": [chosen.l1, chosen.l2],
            "best_layer_test_accuracy": next(s.accuracy.value for s in sweep.layers if s.layer == best),
            "test_accuracy_per_layer": {s.layer: s.accuracy.value for s in sweep.layers},
            "sweep_10_epochs_seconds": budget_seconds,
            "sweep_10_epochs_best_layer_test_accuracy": next(
                s.accuracy.value for s in budget_sweep.layers if s.layer == budget_sweep.best_layer),
            "single_probe_seconds": single_seconds,
            "single_probe_test_accuracy": float(single.score(Xte, yte)),
            "minimal_subset_seconds": subset_seconds,
            "minimal_subset_k": subset.k,
            "minimal_subset_candidates": int(len(subset.curve_k)),
        },
        "neurox_1_0_9": neurox,
        "sklearn_saga": sklearn,
        "ratios": {
            "minimal_subset_in_single_fits": subset_seconds / single_seconds,
            "sweep_vs_sklearn_8_settings_one_layer": sweep_seconds / sklearn["seconds_8_settings"],
            "throughput_vs_sklearn": (n_probes / sweep_seconds) / (1.0 / sklearn["seconds_per_probe"]),
        },
    }
    if "seconds" in neurox:
        report["ratios"]["sweep_vs_neurox_single_probe"] = sweep_seconds / neurox["seconds"]
        report["ratios"]["throughput_vs_neurox"] = (n_probes / sweep_seconds) / (1.0 / neurox["seconds"])
        report["ratios"]["sweep_10_epochs_vs_neurox_single_probe"] = budget_seconds / neurox["seconds"]
        report["ratios"]["throughput_10_epochs_vs_neurox"] = (n_probes / budget_seconds) / (1.0 / neurox["seconds"])
        report["ratios"]["test_accuracy_minus_neurox"] = report["speechprobe"]["best_layer_test_accuracy"] - neurox["test_accuracy"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
