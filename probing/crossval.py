"""Layer-wise probing over cross-validation folds: every utterance tested once, every speaker in a test part.

Why: with a speaker-disjoint split of a few dozen speakers, one test part holds a dozen people and its
accuracy interval is wide and speaker-dependent. Running the sweep once per fold (folds whose test parts
partition the rows, e.g. :func:`tasks.splits.cross_validation_splits`) and pooling the test predictions
scores every utterance once, by a probe that never saw its speaker, with intervals that resample all
speakers. Each fold still chooses its own (l1, l2) on its own validation part; the best layer is chosen on
the mean validation accuracy over folds; the test parts are only scored.

Public API
----------
- :func:`cross_validate_layers` - :func:`probing.sweep.probe_layers` on every fold, pooled.
- :class:`CrossValidatedLayer`, :class:`CrossValidatedSweep` - its results; ``as_dict()`` for JSON.

Plain arrays only, like the rest of ``probing``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from speechprobe.probing.checks import label_vector
from speechprobe.probing.metrics import FoldSummary, Interval, bootstrap_interval, fold_summary, selectivity
from speechprobe.probing.probe import ElasticNetProbe
from speechprobe.probing.sweep import DEFAULT_GRID, probe_layers

__all__ = ["CrossValidatedLayer", "CrossValidatedSweep", "cross_validate_layers"]


@dataclass(frozen=True)
class CrossValidatedLayer:
    """One layer's scores pooled over folds.

    ``accuracy``/``macro_f1``: on the pooled test predictions (every test row once), intervals from a
    bootstrap over speakers when groups are given; ``fold_accuracy``: mean and spread of the per-fold test
    accuracies; ``validation_accuracy``: mean over folds of each fold's chosen probe; ``settings``: the
    (l1, l2) each fold chose; ``majority_accuracy``: pooled accuracy of each fold's training-majority class;
    ``control_accuracy`` (from the first fold) and ``selectivity`` (pooled accuracy minus it).
    """

    layer: str
    n_neurons: int
    accuracy: Interval
    macro_f1: Interval
    fold_accuracy: FoldSummary
    fold_accuracies: list[float]
    validation_accuracy: float
    settings: list[tuple[float, float]]
    majority_accuracy: float
    sparsity: float
    control_accuracy: Optional[float] = None
    selectivity: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class CrossValidatedSweep:
    """Per-layer pooled scores (input order), each layer's pooled test predictions and the first fold's probes."""

    layers: list[CrossValidatedLayer]
    predictions: dict[str, np.ndarray]  # layer -> (N,) predicted label, for the rows of the pooled test parts
    test_rows: np.ndarray  # the rows that were tested (the union of the folds' test parts), ascending
    probes: dict[str, ElasticNetProbe]  # the first fold's chosen probe of every layer
    control_probes: dict[str, ElasticNetProbe] = field(default_factory=dict)
    n_folds: int = 1

    @property
    def best_layer(self) -> str:
        """Chosen on mean validation accuracy over folds (never on test); ties go to the earlier layer."""
        scores = [s.validation_accuracy for s in self.layers]
        return self.layers[int(np.argmax(scores))].layer

    def as_dict(self) -> dict:
        return {"n_folds": self.n_folds, "best_layer": self.best_layer, "layers": [s.as_dict() for s in self.layers]}


def cross_validate_layers(
    layers: Mapping[str, Any],
    labels: Any,
    splits: Sequence[Any],
    *,
    grid: Sequence[tuple[float, float]] = DEFAULT_GRID,
    groups: Any = None,
    control_labels: Any = None,
    control_split: Any = None,
    probe_params: Optional[Mapping[str, Any]] = None,
    n_resamples: int = 1000,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> CrossValidatedSweep:
    """:func:`probing.sweep.probe_layers` on every split of ``splits``, test predictions pooled.

    ``splits``: objects with ``train``, ``validation``, ``test`` row indices whose test parts do not
    overlap (a row tested twice would count twice; that is refused). The control task, when given, is
    trained once, with the first fold's chosen settings. Other parameters as for ``probe_layers``.
    Cost: ``len(splits)`` sweeps.
    """
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
            probe_params=probe_params, n_resamples=2, seed=seed, progress=progress))
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
        majority = sum(result.layers[i].majority_accuracy * len(test) for result, test in zip(results, test_parts))
        control = results[0].layers[i].control_accuracy
        scores.append(CrossValidatedLayer(
            layer=name,
            n_neurons=results[0].layers[i].n_neurons,
            accuracy=intervals["accuracy"],
            macro_f1=intervals["macro_f1"],
            fold_accuracy=fold_summary(per_fold),
            fold_accuracies=per_fold,
            validation_accuracy=float(np.mean([result.layers[i].validation_accuracy for result in results])),
            settings=[(result.layers[i].l1, result.layers[i].l2) for result in results],
            majority_accuracy=float(majority / rows.size),
            sparsity=float(np.mean([result.layers[i].sparsity for result in results])),
            control_accuracy=control,
            selectivity=None if control is None else selectivity(intervals["accuracy"].value, control),
        ))
    return CrossValidatedSweep(layers=scores, predictions=predictions, test_rows=rows, probes=results[0].probes,
                               control_probes=results[0].control_probes, n_folds=len(splits))
