"""Layer-wise probing over cross-validation folds: every utterance tested once, every speaker in a test part.

Why: with a speaker-disjoint split of a few dozen speakers, one test part holds a dozen people and its
accuracy interval is wide and speaker-dependent. Running the sweep once per fold (folds whose test parts
partition the rows, e.g. :func:`tasks.splits.cross_validation_splits`) and pooling the test predictions
scores every utterance once, by a probe that never saw its speaker, with intervals that resample all
speakers. Each fold still chooses its own (l1, l2) on its own validation part; the best layer is chosen on
the mean validation accuracy over folds; the test parts are only scored.

Public API
----------
- :func:`cross_validate_layers` - :func:`probing.sweep.probe_layers` on every fold, pooled, as the same
  :class:`probing.sweep.SweepResult` (of :class:`probing.sweep.LayerScore`) a single split gives;
  ``as_dict()`` for JSON.

Plain arrays only, like the rest of ``probing``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from speechprobe.probing.checks import label_vector
from speechprobe.probing.metrics import bootstrap_interval, fold_summary, selectivity
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.sweep import DEFAULT_GRID, LayerScore, SweepResult, probe_layers

__all__ = ["cross_validate_layers"]


def cross_validate_layers(
    layers: Mapping[str, Any],
    labels: Any,
    splits: Sequence[Any],
    *,
    grid: Sequence[tuple[float, float]] = DEFAULT_GRID,
    groups: Any = None,
    control_labels: Any = None,
    control_split: Any = None,
    options: Union[TrainingOptions, Mapping[str, Any], None] = None,
    n_resamples: int = 1000,
    seed: int = 0,
    memory: Union[int, str, None] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> SweepResult:
    """:func:`probing.sweep.probe_layers` on every split of ``splits``, test predictions pooled.

    ``splits``: objects with ``train``, ``validation``, ``test`` row indices whose test parts do not
    overlap (a row tested twice would count twice; that is refused). The control task, when given, is
    trained once, with the first fold's chosen settings. Other parameters (``options``: how every probe
    is trained; ``memory``: the budget of each batched fit) as for ``probe_layers``. The result's ``probes`` and ``control_probes`` are the first
    fold's; ``grid_validation_accuracy`` and ``validation_accuracy`` are means over folds.
    Cost: ``len(splits)`` sweeps.
    """
    options = TrainingOptions.coerce(options)
    if not splits:
        raise ValueError("splits is empty: give at least one train/validation/test split")
    tell = progress or (lambda message: None)
    results = []
    for fold, split in enumerate(splits):
        if len(splits) > 1:
            tell(f"fold {fold + 1} of {len(splits)}")
        with_control = fold == 0 and control_labels is not None
        results.append(probe_layers(
            layers, labels, split, grid=grid, groups=groups,
            control_labels=control_labels if with_control else None,
            control_split=control_split if with_control else None,
            options=options, n_resamples=2, seed=seed, memory=memory, progress=progress))
    names = [s.layer for s in results[0].layers]
    n = next(iter(layers.values())).shape[0]
    y = label_vector("labels", labels, n, "the layers")
    group_ids = None if groups is None else label_vector("groups", groups, n, "the layers")
    test_parts = [np.asarray(split.test, dtype=np.intp) for split in splits]
    rows = np.concatenate(test_parts)
    if np.unique(rows).size != rows.size:
        raise ValueError("the splits' test parts overlap: cross-validation needs each row tested at most once")
    order = np.argsort(rows, kind="stable")
    rows = rows[order]

    scores, predictions = [], {}
    for i, name in enumerate(names):
        X = layers[name]
        fold_predictions = [result.probes[name].predict(np.asarray(X[test])) for result, test in zip(results, test_parts)]
        predicted = np.concatenate(fold_predictions)[order]
        predictions[name] = predicted
        truth = y[rows]
        test_groups = None if group_ids is None else group_ids[rows]
        intervals = {metric: bootstrap_interval(truth, predicted, metric, groups=test_groups,
                                                n_resamples=n_resamples, seed=seed)
                     for metric in ("accuracy", "macro_f1")}
        per_fold = [float(np.mean(p == y[test])) for p, test in zip(fold_predictions, test_parts)]
        folds = [result.layers[i] for result in results]
        majority = sum(fold.majority_accuracy * len(test) for fold, test in zip(folds, test_parts))
        control = folds[0].control_accuracy
        scores.append(LayerScore(
            layer=name,
            n_neurons=folds[0].n_neurons,
            settings=[fold.settings[0] for fold in folds],
            validation_accuracy=float(np.mean([fold.validation_accuracy for fold in folds])),
            grid_validation_accuracy=np.mean([fold.grid_validation_accuracy for fold in folds], axis=0),
            accuracy=intervals["accuracy"],
            macro_f1=intervals["macro_f1"],
            fold_accuracy=fold_summary(per_fold),
            fold_accuracies=per_fold,
            majority_accuracy=float(majority / rows.size),
            sparsity=float(np.mean([fold.sparsity for fold in folds])),
            control_accuracy=control,
            selectivity=None if control is None else selectivity(intervals["accuracy"].value, control),
        ))
    return SweepResult(layers=scores, probes=results[0].probes, control_probes=results[0].control_probes,
                       grid=results[0].grid, predictions=predictions, test_rows=rows, n_folds=len(splits))
