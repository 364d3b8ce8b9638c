"""Neuron rankings against random neurons on real encoder features, every method side by side, as JSON.

The question of issue 13: do a ranking's top k neurons, kept alone and retrained, carry the property
better than k random neurons of the same layer? For each case (store, layer, task) and each of 5
speaker-grouped folds (the sweep's splits): every method ranks the neurons on the training split; a
logistic regression (scikit-learn, standardised, C=1: an independent judge, not our own probe) is
retrained on the top k and scored on the test split. ``random`` is the mean over 5 seeded draws of k
neurons. The ``weight`` and ``neurox`` rankings read a probe fitted as before issue 13
(l1 = l2 = 1e-3, early-stopped on the validation split).

Then the cost: the path ranking against the sweep's 8-setting grid fit on the same layer (one batched
fit), each side in its own process, one warm-up run then the median of ``--repeats`` runs, with the
load average recorded (a ratio taken under load is not reported as a finding).

    python benchmarks/ranking_methods.py [--stores data/stores] [--folds 5] [--repeats 5]

Needs the demo's stores (``make demo`` writes them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from speechprobe.encoders.store import RepresentationStore  # noqa: E402
from speechprobe.probing.probe import ElasticNetProbe  # noqa: E402
from speechprobe.probing.ranking import rank_neurons  # noqa: E402
from speechprobe.tasks.splits import cross_validation_splits  # noqa: E402
from speechprobe.tasks.tasks import get_task, task_labels  # noqa: E402

CASES = (  # store, layer ("all": every layer concatenated; "top": the last layer), task
    ("ge2e", "lstm2", "gender"),
    ("ge2e", "all", "gender"),
    ("whisper-tiny.en-fast", "block1", "gender"),
    ("whisper-tiny.en-fast", "top", "dialect"),
)
KS = (1, 3, 10, 30)
METHODS = ("path", "probeless", "weight", "neurox")
RANDOM_SEEDS = (0, 1, 2, 3, 4)


def layer_features(store: RepresentationStore, layer: str) -> tuple[str, np.ndarray]:
    if layer == "all":
        return "all", np.hstack([np.asarray(store.layer(n), dtype=np.float64) for n in store.layer_names])
    name = store.layer_names[-1] if layer == "top" else layer
    return name, np.asarray(store.layer(name), dtype=np.float64)


def retrained_accuracy(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, neurons: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(X[np.ix_(train, neurons)], y[train])
    return float(model.score(X[np.ix_(test, neurons)], y[test]))


def rankings(X: np.ndarray, y: np.ndarray, split) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    train, val = split.train, split.validation
    out, seconds = {}, {}
    probe = None
    for method in METHODS:
        start = time.perf_counter()
        if method in ("weight", "neurox"):
            if probe is None:
                probe = ElasticNetProbe(1e-3, 1e-3).fit(X[train], y[train], X[val], y[val])
            out[method] = rank_neurons(probe, method)
        else:
            out[method] = rank_neurons(None, method, X=X[train], y=y[train])
        seconds[method] = time.perf_counter() - start
    return out, seconds


def run_case(stores: Path, encoder: str, layer: str, task_name: str, folds: int, seed: int) -> dict:
    store = RepresentationStore(stores / encoder)
    name, X = layer_features(store, layer)
    task = get_task(task_name, store.index)
    y = task_labels(store.index, task)
    splits = cross_validation_splits(store.index, task, folds=folds, seed=seed)
    d = X.shape[1]
    ks = [k for k in KS if k <= d]
    scores = {m: np.zeros((len(splits), len(ks))) for m in (*METHODS, "random")}
    ranking_seconds = {m: [] for m in METHODS}
    for f, split in enumerate(splits):
        ranked, seconds = rankings(X, y, split)
        for m in METHODS:
            ranking_seconds[m].append(seconds[m])
            for i, k in enumerate(ks):
                scores[m][f, i] = retrained_accuracy(X, y, split.train, split.test, ranked[m][:k])
        for i, k in enumerate(ks):
            scores["random"][f, i] = np.mean([
                retrained_accuracy(X, y, split.train, split.test, np.random.default_rng(s).permutation(d)[:k])
                for s in RANDOM_SEEDS])
    mean = {m: dict(zip(map(str, ks), np.round(v.mean(axis=0), 3).tolist())) for m, v in scores.items()}
    return {
        "encoder": encoder, "layer": name, "task": task_name, "neurons": d, "utterances": int(X.shape[0]),
        "folds": len(splits), "test_accuracy": mean,
        "path_minus_random": {str(k): round(mean["path"][str(k)] - mean["random"][str(k)], 3) for k in ks},
        "ranking_seconds_median": {m: round(float(np.median(v)), 3) for m, v in ranking_seconds.items()},
    }


# --------------------------------------------------------------------------------------------------
# cost: the path against the sweep's grid, each in its own process

_TIMING = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from speechprobe.encoders.store import RepresentationStore
from speechprobe.tasks.splits import cross_validation_splits
from speechprobe.tasks.tasks import get_task, task_labels
store = RepresentationStore({store!r})
X = np.asarray(store.layer({layer!r}), dtype=np.float64)
task = get_task({task!r}, store.index)
y = task_labels(store.index, task)
split = cross_validation_splits(store.index, task, folds=5, seed=0)[0]
def grid():
    from speechprobe.probing.probe import fit_probes
    from speechprobe.probing.sweep import DEFAULT_GRID
    fit_probes(X[split.train], y[split.train], X[split.validation], y[split.validation], list(DEFAULT_GRID))
def path():
    from speechprobe.probing.path import RegularisationPath
    RegularisationPath().fit(X[split.train], y[split.train])
side = {side!r}
f = grid if side == "grid" else path
f()
times = []
for _ in range({repeats}):
    start = time.perf_counter(); f(); times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def timing(stores: Path, encoder: str, layer: str, task: str, repeats: int) -> dict:
    store = RepresentationStore(stores / encoder)
    name = store.layer_names[-1] if layer == "top" else layer
    result = {"encoder": encoder, "layer": name, "task": task, "load_before": os.getloadavg()[0]}
    for side in ("grid", "path"):
        code = _TIMING.format(root=str(ROOT), store=str(stores / encoder), layer=name, task=task, side=side,
                              repeats=repeats)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times = json.loads(out.stdout.strip().splitlines()[-1])
        result[f"{side}_seconds_median"] = round(float(np.median(times)), 3)
    result["load_after"] = os.getloadavg()[0]
    result["path_over_grid"] = round(result["path_seconds_median"] / result["grid_seconds_median"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="data/stores", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-timing", action="store_true", help="skip the path-versus-grid cost")
    args = parser.parse_args()
    missing = [e for e in dict.fromkeys(c[0] for c in CASES) if not (args.stores / e / "manifest.json").is_file()]
    if missing:
        sys.exit(f"ranking_methods: no store for {', '.join(missing)} under {args.stores}; run `make demo` first")
    start = time.perf_counter()
    report = {"cases": [run_case(args.stores, e, layer, task, args.folds, args.seed) for e, layer, task in CASES],
              "load_average": os.getloadavg()[0], "retrainer": "StandardScaler + LogisticRegression(C=1)",
              "random_seeds": list(RANDOM_SEEDS)}
    if not args.no_timing:
        report["cost"] = [timing(args.stores, "ge2e", "lstm2", "gender", args.repeats),
                          timing(args.stores, "whisper-tiny.en-fast", "top", "dialect", args.repeats)]
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
