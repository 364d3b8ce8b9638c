"""A layer sweep at study size: time and peak memory at 10k, 50k and 200k utterances of 13 layers x 768 neurons
(a base-size model), with the growth exponents, as JSON.

Data: 8 classes (as gender x dialect), 13 layers of 768 float32 neurons that are correlated like an encoder's
(each layer is the one before, drifted, through one fixed mixing of the neurons; the class is a weak direction
in a few of them), written to `.npy` files and read as memory maps, as a representation store serves them.
Each size runs `probe_layers` with the default grid and training options in its own process (one sweep, no
warm-up: it runs for minutes), in a speaker-free 70/15/15 split.

Memory: the process's peak resident set (`VmHWM`) counts the memory-mapped layers' pages it has read (page
cache, which the kernel takes back when it needs to); what the sweep itself holds is its anonymous memory,
sampled every 20 ms (`RssAnon` of /proc/self/status). The target (issue 16): the anonymous peak at most twice
the largest layer group trained at once (its layers' rows as stored) plus a fixed overhead, the process's
anonymous memory after importing torch and before reading any data. `--memory` sets the sweep's budget
(default: half the memory available, as `probe_layers` takes it).

    python benchmarks/scale.py [--sizes 10000 50000 200000] [--memory 4G] [--folder /tmp/speechprobe-scale]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.fair`, also when run as a script
from benchmarks.fair import machine_state  # noqa: E402

LAYERS, NEURONS, CLASSES = 13, 768, 8
ROWS_PER_WRITE = 20_000


def write_layers(folder: Path, n: int, seed: int = 0) -> tuple[list[Path], Path]:
    """The n x 768 float32 layers and labels of the benchmark, written a block of rows at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mixing = (rng.standard_normal((NEURONS, NEURONS)) / math.sqrt(NEURONS)).astype(np.float32)
    y = rng.integers(0, CLASSES, n)
    np.save(folder / "labels.npy", y)
    paths = [folder / f"layer{i:02d}.npy" for i in range(LAYERS)]
    files = [np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, NEURONS)) for p in paths]
    signal = np.zeros((CLASSES, NEURONS), np.float32)
    signal[:, :16] = 1.0 * rng.standard_normal((CLASSES, 16))
    for start in range(0, n, ROWS_PER_WRITE):
        rows = slice(start, min(n, start + ROWS_PER_WRITE))
        state = rng.standard_normal((rows.stop - start, NEURONS), dtype=np.float32)
        for i, out in enumerate(files):  # the class grows clearer up to the middle layers, then fades
            weight = 0.5 * (1 - abs(i - LAYERS // 2) / LAYERS)
            state = 0.85 * state + 0.3 * rng.standard_normal(state.shape, dtype=np.float32)
            out[rows] = (state + weight * signal[y[rows]]) @ mixing
    for out in files:
        out.flush()
    del files
    return paths, folder / "labels.npy"


CHILD = r"""
import json, sys, threading, time
from pathlib import Path

def status():
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields

peak = {"RssAnon": 0}
def sample():
    while True:
        peak["RssAnon"] = max(peak["RssAnon"], status().get("RssAnon", 0))
        time.sleep(0.02)

import numpy as np, torch
from speechprobe.probing.budget import default_budget, parse_size
from speechprobe.probing.sweep import probe_layers
threading.Thread(target=sample, daemon=True).start()
time.sleep(0.1)
baseline = status()["RssAnon"]
folder, memory = Path(sys.argv[1]), (sys.argv[2] if sys.argv[2] != "default" else None)
paths = sorted(folder.glob("layer*.npy"))
layers = {p.stem: np.load(p, mmap_mode="r") for p in paths}
y = np.load(folder / "labels.npy")
n = len(y)
perm = np.random.default_rng(1).permutation(n)
split = type("Split", (), {"train": np.sort(perm[: n * 70 // 100]), "validation": np.sort(perm[n * 70 // 100: n * 85 // 100]),
                           "test": np.sort(perm[n * 85 // 100:])})
budget = default_budget() if memory is None else parse_size(memory)
banks = []
start = time.perf_counter()
result = probe_layers(layers, y, split, n_resamples=200, memory=budget,
                      progress=lambda m: banks.append(m) if m.startswith("probing") else None)
seconds = time.perf_counter() - start
time.sleep(0.05)
final = status()
print("@@RESULT@@" + json.dumps({
    "seconds": seconds, "baseline_anon": baseline, "peak_anon": max(peak["RssAnon"], final["RssAnon"]),
    "peak_rss": final["VmHWM"], "budget": budget, "banks": banks, "best_layer": result.best_layer,
    "best_accuracy": max(s.accuracy.value for s in result.layers),
    "epochs": [int(p.best_epoch_) for p in result.probes.values()],
}))
"""


def run_size(folder: Path, n: int, memory: str) -> dict:
    paths, _ = write_layers(folder / f"n{n}", n)
    before = machine_state()
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder / f"n{n}"), memory], capture_output=True, text=True,
                          timeout=3 * 3600)
    if done.returncode != 0:
        raise RuntimeError(f"the sweep at {n} utterances failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("@@RESULT@@"))
    out = json.loads(line[len("@@RESULT@@"):])
    shutil.rmtree(folder / f"n{n}")
    data = LAYERS * n * NEURONS * 4
    layers_per_bank = max(int(m.split()[1]) for m in out["banks"])
    group = layers_per_bank * n * NEURONS * 4  # the largest group's layers, as stored
    held = out["peak_anon"] - out["baseline_anon"]
    gib = 2**30
    return {
        "utterances": n, "data_gb": round(data / gib, 2), "seconds": round(out["seconds"], 1),
        "banks": out["banks"], "budget_gb": round(out["budget"] / gib, 2),
        "largest_group_gb": round(group / gib, 2),
        "fixed_overhead_gb": round(out["baseline_anon"] / gib, 2),
        "peak_anon_gb": round(out["peak_anon"] / gib, 2),
        "peak_rss_gb_incl_page_cache": round(out["peak_rss"] / gib, 2),
        "held_over_group": round(held / group, 2), "held_over_data": round(held / data, 2),
        "target_met": held <= 2 * group,
        "best_layer": out["best_layer"], "best_accuracy": round(out["best_accuracy"], 3),
        "probe_epochs": out["epochs"], "load_before": before["load_1min"], "load_after": machine_state()["load_1min"],
    }


def exponent(points: list[dict], key: str) -> list[dict]:
    """Growth exponents between consecutive sizes: log(value ratio) / log(size ratio); 1 is linear."""
    return [{"from": a["utterances"], "to": b["utterances"],
             "exponent": round(math.log(b[key] / a[key]) / math.log(b["utterances"] / a["utterances"]), 2)}
            for a, b in zip(points, points[1:]) if a[key] > 0 and b[key] > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--memory", default="default", help="the sweep's budget, e.g. 4G (default: half the available)")
    parser.add_argument("--folder", type=Path, help="where the layers are written (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="speechprobe-scale-"))
    started = time.perf_counter()
    points = []
    for n in args.sizes:
        points.append(run_size(folder, n, args.memory))
        print(json.dumps(points[-1]), file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "scale", "layers": LAYERS, "neurons": NEURONS, "classes": CLASSES, "cores": os.cpu_count(),
        "memory_total_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "sizes": points,
        "time_exponents": exponent(points, "seconds"),
        "memory_exponents": exponent(points, "peak_anon_gb"),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
