"""Neuron analysis of one probe (ranking, minimal subset, ablation curves), and the ablation study around it.

:func:`analyse_neurons` is what ``speechprobe neurons`` and the ablation study share: rank the probe's
neurons, find the smallest top-k that keeps ``target`` of the validation accuracy, and the ablation
curves (top vs random vs bottom neurons removed without retraining, and kept alone with retraining).
Removal is mean ablation by default (a neuron replaced by its training mean: in distribution); raw-zero
ablation (raw value 0, an out-of-distribution shift) is an option, and the curves record which was used.
The study (:func:`run_ablation`) runs it for a task on one layer (a named one, or the task's best layer
from the sweep, whose probe it reuses) or on every layer concatenated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from speechprobe.experiments.config import AblationSection
from speechprobe.experiments.layout import ALL_LAYERS
from speechprobe.experiments.runner import grid, memory_budget, Run, task_arrays, training_options, unit_dir_name
from speechprobe.probing.ranking import layer_locations
ABLATION_MODE = "mean"  # the ablation study's removal: mean ablation, in distribution (probing.ablation.MODES)


def analyse_neurons(probe: Any, X: np.ndarray, y: np.ndarray, split: Any, *, method: str = "path",
                    target: float = 0.97, mode: str = "mean", tell: Optional[Callable[[str], None]] = None) -> dict:
    """Ranking, its check against random neurons, per-class rankings, minimal subset (beside random
    rankings' minimal subsets) and ablation curves of a fitted probe (plain JSON values).

    ``mode`` is how the curves remove neurons (:data:`probing.ablation.MODES`): ``"mean"`` (mean ablation,
    in distribution; the default) or ``"zero"`` (raw-zero ablation, out of distribution); it is recorded
    as ``ablation["mode"]``.
    """
    from speechprobe.probing.ablation import ablation_curve
    from speechprobe.probing.options import TrainingOptions
    from speechprobe.probing.ranking import rank_neurons, rank_per_class
    from speechprobe.probing.ranking_check import check_ranking, minimal_versus_random

    tell = tell or (lambda message: None)
    train, val, test = split.train, split.validation, split.test
    tell(f"ranking {X.shape[1]} neurons ({method})")
    ranking = rank_neurons(probe, method, X=X[train], y=y[train])  # data for the methods that read it (path, probeless)
    tell("checking the ranking against random neurons")
    retrained = dict(l1=probe.l1, l2=probe.l2, options=TrainingOptions.from_probe(probe))  # the probe's own
    check = check_ranking(X[train], y[train], X[val], y[val], X[test], y[test], ranking, **retrained)
    tell("searching the minimal subset, and random neurons' for comparison")
    versus = minimal_versus_random(X[train], y[train], X[val], y[val], ranking, target=target, **retrained)
    minimal = versus.subset
    tell(f"ablation curves ({mode} ablation)")
    curves = ablation_curve(probe, X[test], y[test], ranking, mode=mode, retrain=(X[train], y[train], X[val], y[val]))
    return {
        "ranking": [int(i) for i in ranking],
        "per_class": {str(c): [int(i) for i in order] for c, order in rank_per_class(probe).items()},
        "minimal_subset": {
            "neurons": [int(i) for i in minimal.neurons], "k": minimal.k, "fraction": minimal.fraction,
            "accuracy": minimal.accuracy, "full_accuracy": minimal.full_accuracy, "threshold": minimal.threshold,
            "target": target, "reached": minimal.reached, "curve_k": minimal.curve_k,
            "curve_accuracy": minimal.curve_accuracy, "random_k": versus.random_k,
            "random_k_median": versus.random_k_median, "ratio": versus.ratio, "is_minimal": versus.is_minimal,
            "summary": versus.summary(),
        },
        "check": check.as_dict(),
        "ablation": curves.as_dict(),
    }


def ablation_unit(run: Run, encoder: str, task: str, layer: str) -> tuple[dict, Path]:
    """Neuron analysis of ``task`` on ``layer`` (a name, best, or all) of ``encoder``'s store, cached."""
    from speechprobe.experiments.studies.sweep.compute import sweep_unit

    if layer == "best":
        layer = sweep_unit(run, encoder, task)[0]["best_layer"]

    def compute():
        from speechprobe.probing.probe import ElasticNetProbe
        from speechprobe.probing.sweep import probe_layers

        config = run.config
        store = run.store(encoder)
        arrays = task_arrays(store, task, folds=config.probe.folds, seed=config.seed, control=False)
        split = arrays.splits[0]
        if layer == ALL_LAYERS:
            names = store.layer_names
            blocks = [np.asarray(store.layer(name), dtype=np.float32) for name in names]
            X = np.hstack(blocks)
            run.tell(f"ablation {encoder} / {task}: probing all {len(names)} layers at once ({X.shape[1]} neurons)")
            sweep = probe_layers({ALL_LAYERS: X}, arrays.labels, split, grid=grid(config), groups=arrays.groups,
                                 options=training_options(config), seed=config.seed, memory=memory_budget(config))
            probe = sweep.probes[ALL_LAYERS]
        else:
            if layer not in store.layer_names:
                from speechprobe.errors import SpeechprobeError

                raise SpeechprobeError(f"ablation: {encoder} has no layer {layer!r}; its layers: {', '.join(store.layer_names)}")
            unit, folder = sweep_unit(run, encoder, task)
            probe = ElasticNetProbe.load(folder / unit["probe_dirs"][layer])
            X = np.asarray(store.layer(layer), dtype=np.float32)
            run.tell(f"ablation {encoder} / {task} / {layer}: {X.shape[1]} neurons")
        analysis = analyse_neurons(probe, X, arrays.labels, split, method=config.probe.method,
                                   target=config.probe.target, mode=ABLATION_MODE, tell=run.tell)
        test_accuracy = float(probe.score(X[split.test], arrays.labels[split.test]))
        data = {"encoder": encoder, "task": task, "layer": layer, "n_neurons": int(X.shape[1]),
                "method": config.probe.method, "l1": float(probe.l1), "l2": float(probe.l2),
                "test_accuracy": test_accuracy, **analysis}
        if layer == ALL_LAYERS:
            data.update(layer_locations(list(names), [b.shape[1] for b in blocks], np.asarray(analysis["ranking"])))
        return data, lambda folder: probe.save(folder / "probe")

    return run.unit(f"ablation/{unit_dir_name(encoder)}/{unit_dir_name(task)}/{unit_dir_name(layer)}", compute)


def run_ablation(run: Run, section: AblationSection) -> dict:
    data, _ = ablation_unit(run, section.encoder, section.task, section.layer)
    return data
