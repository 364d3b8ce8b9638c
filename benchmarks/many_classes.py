"""Speaker identification at VoxCeleb scale is the heavy probe: 1,000 classes. Time per epoch and peak
memory of one probe and of the 8-setting grid, as JSON: on the CPU, and where CUDA is available the same
probe and grid on the GPU too (`accelerator="gpu"`): time per epoch, peak GPU memory
(`torch.cuda.max_memory_allocated`) and the largest difference of its weights from the CPU's (they agree to
float rounding). Without a GPU, `"gpu"` says so instead.

Data: N = 20,000 utterances of 1,000 speakers (20 each: 16 train, 2 validation, 2 test), one layer of 768
neurons, each speaker a random direction in 64 of the neurons plus noise, as a base-size model's layer is
wide and a speaker is a few directions in it. Each side in its own process, a warm-up, the median of 5
(`benchmarks/fair.py`); peak memory is the process's maximum resident set.

    python benchmarks/many_classes.py [--epochs 5] [--speakers 1000 --neurons 768]  (smaller: a smoke run)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.fair`, also when run as a script
from benchmarks.fair import machine_state, time_isolated  # noqa: E402

SPEAKERS, PER_SPEAKER, NEURONS = 1000, 20, 768


def make_arrays(seed: int = 0, speakers: int = SPEAKERS, neurons: int = NEURONS):
    """The benchmark's data (fewer speakers or neurons: a smaller copy for a smoke run)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(speakers), PER_SPEAKER)
    directions = np.zeros((speakers, neurons), np.float32)
    directions[:, :64] = rng.normal(size=(speakers, 64))
    X = (directions[y] + 1.5 * rng.normal(size=(len(y), neurons))).astype(np.float32)
    within = np.tile(np.arange(PER_SPEAKER), speakers)
    split = argparse.Namespace(train=np.flatnonzero(within < 16), validation=np.flatnonzero((within >= 16) & (within < 18)),
                               test=np.flatnonzero(within >= 18))
    return X, y, split


SETUP = """
import resource
from benchmarks.many_classes import make_arrays
from speechprobe.probing.probe import ElasticNetProbe, TrainingOptions, fit_probes
from speechprobe.probing.sweep import DEFAULT_GRID
import numpy as np
X, y, split = make_arrays(speakers={speakers}, neurons={neurons})
Xtr, ytr, Xva, yva, Xte, yte = X[split.train], y[split.train], X[split.validation], y[split.validation], X[split.test], y[split.test]
options = TrainingOptions(max_epochs={epochs}, patience=None, accelerator={accelerator!r})
def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
def peak_gpu_gb():
    return torch.cuda.max_memory_allocated() / 1e9
def save_weights(probes, path):  # the CPU's weights, for the GPU run to compare with
    np.save(path, np.stack([p.coef_ for p in probes]))
def weight_difference(probes, path):
    return float(np.abs(np.stack([p.coef_ for p in probes]) - np.load(path)).max())
"""

ONE = "probe = ElasticNetProbe(l1=1e-4, l2=1e-4, **options.as_dict()).fit(Xtr, ytr, Xva, yva)"
GRID = "probes = fit_probes(Xtr, ytr, Xva, yva, DEFAULT_GRID, options=options)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per fit (no early stopping)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--speakers", type=int, default=SPEAKERS, help="classes (smaller for a smoke run)")
    parser.add_argument("--neurons", type=int, default=NEURONS, help="neurons of the layer (at least 64)")
    args = parser.parse_args()
    speakers, neurons = args.speakers, args.neurons
    data_gb = speakers * PER_SPEAKER * neurons * 4 / 1e9
    report = {"data": {"classes": speakers, "utterances": speakers * PER_SPEAKER, "neurons": neurons, "train": 16 * speakers,
                       "gb_float32": data_gb, "chance": 1 / speakers},
              "device": "cpu", "machine": machine_state(), "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as folder:
        saved = {name: str(Path(folder) / f"{name}.npy") for name in ("one_probe", "grid_8_settings")}
        setup = SETUP.format(epochs=args.epochs, speakers=speakers, neurons=neurons, accelerator="cpu")
        one = time_isolated(setup, ONE, repeats=args.repeats,
                            result=f"[float(probe.score(Xte, yte)), peak_gb(), "
                                   f"save_weights([probe], {saved['one_probe']!r})]")
        grid = time_isolated(setup, GRID, repeats=args.repeats,
                             result=f"[max(float(p.score(Xte, yte)) for p in probes), peak_gb(), "
                                    f"save_weights(probes, {saved['grid_8_settings']!r})]")
        for name, out, probes in (("one_probe", one, 1), ("grid_8_settings", grid, 8)):
            accuracy, peak, _ = out.pop("result")
            report[name] = {**out, "seconds_per_epoch": out["seconds"] / args.epochs, "probes": probes,
                            "test_accuracy": accuracy, "peak_rss_gb": peak, "peak_over_data": peak / data_gb}
        report["gpu"] = gpu_case(args, saved, data_gb)
    print(json.dumps(report, indent=1))


def gpu_case(args: argparse.Namespace, saved: dict[str, str], data_gb: float):
    """The same probe and grid with ``accelerator="gpu"``, where CUDA is available; their weights against the CPU's."""
    import torch

    if not torch.cuda.is_available():
        return "no GPU on this machine"
    setup = SETUP.format(epochs=args.epochs, speakers=args.speakers, neurons=args.neurons, accelerator="gpu")
    one = time_isolated(setup, ONE, repeats=args.repeats,
                        result=f"[float(probe.score(Xte, yte)), peak_gpu_gb(), "
                               f"weight_difference([probe], {saved['one_probe']!r})]")
    grid = time_isolated(setup, GRID, repeats=args.repeats,
                         result=f"[max(float(p.score(Xte, yte)) for p in probes), peak_gpu_gb(), "
                                f"weight_difference(probes, {saved['grid_8_settings']!r})]")
    report = {"device": torch.cuda.get_device_name(0),
              "float32_matmul_precision": torch.get_float32_matmul_precision()}
    for name, out, probes in (("one_probe", one, 1), ("grid_8_settings", grid, 8)):
        accuracy, peak, difference = out.pop("result")
        report[name] = {**out, "seconds_per_epoch": out["seconds"] / args.epochs, "probes": probes,
                        "test_accuracy": accuracy, "peak_gpu_memory_gb": peak, "peak_gpu_over_data": peak / data_gb,
                        "max_abs_weight_difference_from_cpu": difference}
    return report


if __name__ == "__main__":
    main()
