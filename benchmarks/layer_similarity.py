"""Linear CKA over every layer pair of a base-size model, against the torch-cka package, as JSON.

Arrays shaped like a base-size speech model's pooled layers (13 layers x 768 neurons, N = 20,000
utterances; each layer a noisy linear map of the one before, so neighbours are alike), all timed in this
one run on this machine:

- speechprobe: ``probing.similarity.similarity_matrix`` (linear CKA in feature space, all N at once, no
  N x N matrix; each layer prepared once, each pair computed once);
- torch-cka 0.21 (``CKA.compare``, the package's only way in: forward hooks on a model and a DataLoader),
  which computes *minibatch* CKA (Nguyen et al. 2021): per batch, N_b x N_b Gram matrices and the
  unbiased HSIC, averaged over batches. Its values are checked against speechprobe's unbiased HSIC
  (``probing.similarity.hsic(unbiased=True)``) on the same batches: the same estimator must give the same
  numbers. How far minibatch CKA lies from full-data linear CKA is reported too (different estimators).

torch-cka is imported from ``benchmarks/.torch_cka`` (``make benchmark`` installs it there with
``--no-deps``); without it that part is reported as skipped.

    python benchmarks/layer_similarity.py [--n 20000] [--batch 1000] [--check-n 2000]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from speechprobe.probing.similarity import hsic, similarity_matrix

TORCH_CKA_DIR = Path(__file__).resolve().parent / ".torch_cka"


def make_layers(n: int, layers: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, width))
    out = {}
    for i in range(layers):
        mix = rng.normal(size=(width, width)) / np.sqrt(width)
        X = np.tanh(X @ mix) + 0.5 * rng.normal(size=(n, width))
        out[f"layer{i}"] = X.astype(np.float32)
    return out


def minibatch_cka_ours(layers: dict[str, np.ndarray], batch: int) -> np.ndarray:
    """torch-cka's estimator, computed with speechprobe's unbiased HSIC (float64), for the value check."""
    names = list(layers)
    n = next(iter(layers.values())).shape[0]
    starts = range(0, n, batch)
    cross = np.zeros((len(names), len(names)))
    for start in starts:
        grams = []
        for name in names:
            X = layers[name][start:start + batch].astype(np.float64)
            grams.append(X @ X.T)
        for i in range(len(names)):
            for j in range(len(names)):
                cross[i, j] += hsic(grams[i], grams[j], unbiased=True) / len(starts)
    self_terms = np.sqrt(np.diag(cross))
    return cross / np.outer(self_terms, self_terms)


def torch_cka(layers: dict[str, np.ndarray], batch: int) -> dict:
    if not TORCH_CKA_DIR.is_dir():
        return {"skipped": f"torch-cka not installed in {TORCH_CKA_DIR} (make benchmark installs it)"}
    sys.path.insert(0, str(TORCH_CKA_DIR))
    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA  # noqa: E402  (optional, benchmark-only)

    class Lookup(torch.nn.Module):
        def __init__(self, table: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("table", torch.from_numpy(table))

        def forward(self, rows: torch.Tensor) -> torch.Tensor:
            return self.table[rows]

    class Layers(torch.nn.Module):
        """A 'model' whose named submodules output the stored layers of the rows asked for."""

        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleDict({name: Lookup(X) for name, X in layers.items()})

        def forward(self, rows: torch.Tensor) -> None:
            for module in self.layers.values():
                module(rows)

    n = next(iter(layers.values())).shape[0]
    model = Layers()
    names = [f"layers.{name}" for name in layers]
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=batch)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        cka = CKA(model, model, "a", "b", model1_layers=names, model2_layers=names)
        started = time.perf_counter()
        cka.compare(loader)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "matrix": cka.export()["CKA"].numpy().astype(np.float64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="utterances (default 20000)")
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--batch", type=int, default=1000, help="torch-cka's minibatch size (default 1000)")
    parser.add_argument("--check-n", type=int, default=2000, help="rows for the value check (default 2000)")
    args = parser.parse_args()
    layers = make_layers(args.n, args.layers, args.width)

    started = time.perf_counter()
    _, _, ours = similarity_matrix(layers)
    ours_seconds = time.perf_counter() - started
    report = {
        "data": {"n": args.n, "layers": args.layers, "width": args.width, "pairs": args.layers * (args.layers + 1) // 2},
        "torch_threads": torch.get_num_threads(),
        "speechprobe_linear_cka": {"seconds": ours_seconds},
    }
    theirs = torch_cka(layers, args.batch)
    if "skipped" in theirs:
        report["torch_cka_0_21"] = theirs
    else:
        # the value check recomputes the same estimator in float64 (slow): on the first --check-n rows
        head = {name: X[:args.check_n] for name, X in layers.items()}
        theirs_head = torch_cka(head, args.batch)["matrix"]
        check = minibatch_cka_ours(head, args.batch)
        report["torch_cka_0_21"] = {"seconds": theirs["seconds"], "batch": args.batch}
        report["values"] = {
            "check_rows": args.check_n,
            "torch_cka_vs_same_estimator_in_speechprobe_max_abs_diff": float(np.max(np.abs(theirs_head - check))),
            "minibatch_vs_full_data_linear_cka_max_abs_diff": float(np.max(np.abs(theirs["matrix"] - ours))),
        }
        report["ratios"] = {"speedup_vs_torch_cka": theirs["seconds"] / ours_seconds}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
