"""Probe training speed and accuracy against NeuroX 1.0.9 and scikit-learn's saga, as JSON.

On the same arrays (N = 4000 utterances, 5 layers x 384 neurons, 8 classes; 3200 train, 400 validation,
400 test), all timed in this one run on this machine:

- NeuroX's ``train_logistic_regression_probe`` (its defaults: 10 epochs, batch 32, lambdas 0.001), one
  probe on one layer;
- scikit-learn ``LogisticRegression(solver="saga", penalty="elasticnet")``, one probe per grid setting
  on one layer (the same 8 settings as ours, mapped to C and l1_ratio);
- speechprobe: the full sweep (5 layers x 8 settings, chosen on validation, scored on test, bootstrap
  intervals included) with its defaults (early stopping) and with NeuroX's budget (10 epochs, no early
  stopping), one probe alone, and a minimal-subset search on the best layer;
- this machine's float32 matrix-multiply throughput (a plain 2048 x 2048 product) beside the probe bank's
  achieved throughput while training the 40 probes (their matrix products counted exactly).

Every side runs in its own process, one warm-up run first, then the median of ``--repeats`` (at least 5)
runs; the load average is recorded around each, and a ratio is reported only when the machine was idle on
both sides (``benchmarks/fair.py``): load slows NeuroX's thousand small steps far more than our batched
products, so a ratio taken under load would flatter us.

NeuroX is imported from ``benchmarks/.neurox`` (``make benchmark`` installs it there with ``--no-deps``,
with the two small packages it imports: it is not a dependency of speechprobe). Without it the NeuroX
part is reported as skipped.

    python benchmarks/probe_training.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from speechprobe.probing.sweep import DEFAULT_GRID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.fair`, also when run as a script
from benchmarks.fair import IDLE_OTHERS, machine_state, ratio, time_isolated  # noqa: E402

NEUROX_DIR = Path(__file__).resolve().parent / ".neurox"
N, LAYERS, NEURONS, CLASSES = 4000, 5, 384, 8
_ROWS = np.arange(N)
SPLIT_SIZES = {"train": _ROWS[:3200], "validation": _ROWS[3200:3600], "test": _ROWS[3600:]}


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
    split = argparse.Namespace(**SPLIT_SIZES)
    return {f"layer{g}": X for g, X in enumerate(layers)}, y, split


SETUP = """
from benchmarks.probe_training import make_arrays
layers, y, split = make_arrays()
"""


def neurox_probe(repeats: int) -> dict:
    if not NEUROX_DIR.is_dir():
        return {"skipped": f"NeuroX not installed in {NEUROX_DIR} (make benchmark installs it)"}
    setup = SETUP + f"""
import contextlib, io, sys
import numpy as np
sys.path.insert(0, {str(NEUROX_DIR)!r})
from neurox.interpretation import linear_probe
X = layers["layer2"]
Xtr, ytr, Xte, yte = X[split.train], y[split.train], X[split.test], y[split.test]
def train():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return linear_probe.train_logistic_regression_probe(Xtr, ytr, lambda_l1=0.001, lambda_l2=0.001)
def accuracy(probe):
    with torch.no_grad():
        return float(np.mean(probe(torch.from_numpy(Xte)).argmax(dim=1).numpy() == yte))
"""
    out = time_isolated(setup, "probe = train()", repeats=repeats, result="accuracy(probe)")
    return {**out, "test_accuracy": out.pop("result"), "layer": "layer2", "epochs": 10, "batch_size": 32}


def sweep(repeats: int, budget: bool) -> dict:
    options = "TrainingOptions(max_epochs=10, patience=None)" if budget else "None"
    setup = SETUP + f"""
from speechprobe.probing.probe import TrainingOptions
from speechprobe.probing.sweep import probe_layers
options = {options}
def best(sweep):
    return {{"best_layer": sweep.best_layer,
             "test_accuracy": next(s.accuracy.value for s in sweep.layers if s.layer == sweep.best_layer),
             "setting": [sweep.probes[sweep.best_layer].l1, sweep.probes[sweep.best_layer].l2],
             "per_layer": {{s.layer: s.accuracy.value for s in sweep.layers}}}}
"""
    out = time_isolated(setup, "result = probe_layers(layers, y, split, n_resamples=1000, options=options)",
                        repeats=repeats, result="best(result)")
    return {**out, **out.pop("result"), "probes": LAYERS * len(DEFAULT_GRID)}


def single_and_subset(repeats: int, setting: list[float]) -> tuple[dict, dict]:
    setup = SETUP + f"""
from speechprobe.probing.probe import ElasticNetProbe
from speechprobe.probing.ranking import rank_neurons
from speechprobe.probing.subset import minimal_subset
X = layers["layer2"]
Xtr, ytr, Xva, yva, Xte, yte = (X[split.train], y[split.train], X[split.validation], y[split.validation],
                                X[split.test], y[split.test])
l1, l2 = {setting[0]!r}, {setting[1]!r}
"""
    single = time_isolated(setup, "probe = ElasticNetProbe(l1=l1, l2=l2).fit(Xtr, ytr, Xva, yva)", repeats=repeats,
                           result="float(probe.score(Xte, yte))")
    subset_setup = setup + """
ranking = rank_neurons(ElasticNetProbe(l1=l1, l2=l2).fit(Xtr, ytr, Xva, yva), X=Xtr, y=ytr)  # the default ranking
"""
    subset = time_isolated(subset_setup, "found = minimal_subset(Xtr, ytr, Xva, yva, ranking, l1=l1, l2=l2)",
                           repeats=repeats, result="[found.k, len(found.curve_k)]")
    k, candidates = subset.pop("result")
    return {**single, "test_accuracy": single.pop("result")}, {**subset, "k": k, "candidates": candidates}


def matmul_peak(repeats: int, n: int = 2048) -> dict:
    """This machine's float32 matrix-multiply throughput (GFLOP/s): the ceiling a probe bank could reach."""
    setup = f"a, b = torch.randn({n}, {n}), torch.randn({n}, {n}); c = torch.empty({n}, {n})"
    out = time_isolated(setup, "torch.mm(a, b, out=c)", repeats=repeats)
    return {**out, "n": n, "gflops": 2 * n ** 3 / out["seconds"] / 1e9}


def bank_throughput(repeats: int, epochs: int = 10) -> dict:
    """The 40 probes' training (10 epochs, no early stopping) as one batched bank, in GFLOP/s of its matrix
    products: per epoch, a forward and a gradient product per training row (4 N D P C) and a forward per
    validation row (2 N D P C), for P probes of D inputs and C classes."""
    setup = SETUP + f"""
import numpy as np
from speechprobe.probing.probe import TrainingOptions, fit_probes
from speechprobe.probing.sweep import DEFAULT_GRID
X = np.stack([layers[name] for name in layers])
settings = [pair for _ in layers for pair in DEFAULT_GRID]
inputs = [g for g in range(len(layers)) for _ in DEFAULT_GRID]
options = TrainingOptions(max_epochs={epochs}, patience=None)
"""
    run = ("fit_probes(X[:, split.train], y[split.train], X[:, split.validation], y[split.validation], settings, "
           "inputs=inputs, options=options)")
    out = time_isolated(setup, run, repeats=repeats)
    probes, train, val = LAYERS * len(DEFAULT_GRID), len(SPLIT_SIZES["train"]), len(SPLIT_SIZES["validation"])
    flops = epochs * (4 * train + 2 * val) * NEURONS * probes * CLASSES
    return {**out, "epochs": epochs, "probes": probes, "gflop": flops / 1e9, "gflops": flops / out["seconds"] / 1e9}


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
        "note": "one run in this process (8 fits of several seconds each): not a ratio target",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings are medians over this many runs (>= 5)")
    args = parser.parse_args()
    state_before = machine_state()
    default = sweep(args.repeats, budget=False)
    budget = sweep(args.repeats, budget=True)
    single, subset = single_and_subset(args.repeats, default["setting"])
    neurox = neurox_probe(args.repeats)
    peak = matmul_peak(args.repeats)
    bank = bank_throughput(args.repeats)
    layers, y, split = make_arrays()
    X = layers["layer2"]
    sklearn = sklearn_probes(X[split.train], y[split.train], X[split.test], y[split.test])
    ratios = {
        "minimal_subset_in_single_fits": ratio(subset, single),
        "bank_throughput_over_matmul_peak": ratio(peak, bank, scale=bank["gflop"] / (2 * peak["n"] ** 3 / 1e9)),
    }
    if "seconds" in neurox:
        ratios["sweep_10_epochs_vs_neurox_single_probe"] = ratio(budget, neurox)
        ratios["sweep_defaults_vs_neurox_single_probe"] = ratio(default, neurox)
        ratios["test_accuracy_minus_neurox"] = budget["test_accuracy"] - neurox["test_accuracy"]
    report = {
        "data": {"n": N, "layers": LAYERS, "neurons": NEURONS, "classes": CLASSES, **{k: len(v) for k, v in SPLIT_SIZES.items()}},
        "machine": {"before": state_before, "after": machine_state(), "idle_when_others_use_under_cores": IDLE_OTHERS},
        "speechprobe": {"sweep_defaults": default, "sweep_10_epochs": budget, "single_probe": single,
                        "minimal_subset": subset, "bank_training": bank},
        "matmul_peak": peak,
        "neurox_1_0_9": neurox,
        "sklearn_saga": sklearn,
        "ratios": ratios,
        "targets": {"sweep_10_epochs_vs_neurox_single_probe": "< 1 at equal or better accuracy",
                    "minimal_subset_in_single_fits": "<= 3",
                    "bank_throughput_over_matmul_peak": ">= 0.5"},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
