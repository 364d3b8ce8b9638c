"""Speaker identification at VoxCeleb scale is the heavy probe: 1,000 classes. Time per epoch and peak
memory of one probe and of the 8-setting grid, as JSON; CPU now, and the same script on a GPU when one is
lent (Lightning picks the device; the probes train where `accelerator` says once issue 16 lands that part).

Data: N = 20,000 utterances of 1,000 speakers (20 each: 16 train, 2 validation, 2 test), one layer of 768
neurons, each speaker a random direction in 64 of the neurons plus noise, as a base-size model's layer is
wide and a speaker is a few directions in it. Each side in its own process, a warm-up, the median of 5
(`benchmarks/fair.py`); peak memory is the process's maximum resident set.

    python benchmarks/many_classes.py [--epochs 5]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.fair`, also when run as a script
from benchmarks.fair import machine_state, time_isolated  # noqa: E402

SPEAKERS, PER_SPEAKER, NEURONS = 1000, 20, 768


def make_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(SPEAKERS), PER_SPEAKER)
    directions = np.zeros((SPEAKERS, NEURONS), np.float32)
    directions[:, :64] = rng.normal(size=(SPEAKERS, 64))
    X = (directions[y] + 1.5 * rng.normal(size=(len(y), NEURONS))).astype(np.float32)
    within = np.tile(np.arange(PER_SPEAKER), SPEAKERS)
    split = argparse.Namespace(train=np.flatnonzero(within < 16), validation=np.flatnonzero((within >= 16) & (within < 18)),
                               test=np.flatnonzero(within >= 18))
    return X, y, split


SETUP = """
import resource
from benchmarks.many_classes import make_arrays
from speechprobe.probing.probe import ElasticNetProbe, TrainingOptions, fit_probes
from speechprobe.probing.sweep import DEFAULT_GRID
X, y, split = make_arrays()
Xtr, ytr, Xva, yva, Xte, yte = X[split.train], y[split.train], X[split.validation], y[split.validation], X[split.test], y[split.test]
options = TrainingOptions(max_epochs={epochs}, patience=None)
def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per fit (no early stopping)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    setup = SETUP.format(epochs=args.epochs)
    one = time_isolated(setup, "probe = ElasticNetProbe(l1=1e-4, l2=1e-4, **options.as_dict()).fit(Xtr, ytr, Xva, yva)",
                        repeats=args.repeats, result="[float(probe.score(Xte, yte)), peak_gb()]")
    grid = time_isolated(setup, "probes = fit_probes(Xtr, ytr, Xva, yva, DEFAULT_GRID, options=options)",
                         repeats=args.repeats, result="[max(float(p.score(Xte, yte)) for p in probes), peak_gb()]")
    data_gb = SPEAKERS * PER_SPEAKER * NEURONS * 4 / 1e9
    report = {"data": {"classes": SPEAKERS, "utterances": SPEAKERS * PER_SPEAKER, "neurons": NEURONS, "train": 16 * SPEAKERS,
                       "gb_float32": data_gb, "chance": 1 / SPEAKERS},
              "device": "cpu", "machine": machine_state(), "epochs": args.epochs}
    for name, out, probes in (("one_probe", one, 1), ("grid_8_settings", grid, 8)):
        accuracy, peak = out.pop("result")
        report[name] = {**out, "seconds_per_epoch": out["seconds"] / args.epochs, "probes": probes,
                        "test_accuracy": accuracy, "peak_rss_gb": peak, "peak_over_data": peak / data_gb}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
