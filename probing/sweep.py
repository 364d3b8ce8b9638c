"""Layer-wise probing sweeps: every layer x every regularisation setting, chosen on validation, scored once on test.

Public API
----------
- :func:`probe_layers` - train a probe per (layer, grid point) as one batched model per layer width,
  pick each layer's setting on the validation split, score the chosen probe once on the test split
  (accuracy and macro-F1 with bootstrap intervals over speakers, majority baseline), and, given control
  labels, train the same probe on the control task for control accuracy and selectivity.
- :class:`LayerScore`, :class:`SweepResult` - the results of a sweep on one split or cross-validated
  (:func:`probing.crossval.cross_validate_layers`; one split is one fold); ``as_dict()`` gives plain JSON
  values.
- :data:`DEFAULT_GRID` - the 8 (l1, l2) settings tried when none are given.

Works on plain arrays only: splits are any objects with ``train``, ``validation`` and ``test`` row
indices (e.g. :class:`tasks.splits.Split`, which the caller builds); nothing here imports ``tasks`` or
``encoders``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from speechprobe.probing.budget import (BANK_TENSORS_PER_WEIGHT, check_finite, default_budget, format_size, gather_rows,
                                       gathered_dtype, layer_banks, numeric_matrix, parse_size)
from speechprobe.probing.checks import label_vector
from speechprobe.probing.metrics import (FoldSummary, Interval, bootstrap_interval, fold_summary, majority_baseline,
                                         selectivity)
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import ElasticNetProbe, fit_probes

__all__ = ["DEFAULT_GRID", "LayerScore", "SweepResult", "probe_layers", "sparsity"]

# l1 x l2 in the default (mean-loss) parametrisation of ElasticNetProbe, on standardised features.
DEFAULT_GRID: tuple[tuple[float, float], ...] = tuple(
    (l1, l2) for l1 in (0.0, 1e-4, 1e-3, 1e-2) for l2 in (0.0, 1e-3)
)
SPARSITY_THRESHOLD = 0.01  # a neuron counts as unused below this fraction of the probe's largest |weight|


def sparsity(probe: ElasticNetProbe, threshold: float = SPARSITY_THRESHOLD) -> float:
    """Share of neurons whose largest |weight| (over classes) is below ``threshold`` x the probe's largest.

    Why relative: Adam leaves L1-penalised weights near, not exactly at, 0, so counting exact zeros
    would say "dense" for a probe that in effect reads a handful of neurons.
    """
    magnitude = np.abs(probe.coef_).max(axis=0)
    top = magnitude.max()
    return float(np.mean(magnitude < threshold * top)) if top > 0 else 1.0


def _read_only(array: Any, dtype: Any = None) -> np.ndarray:
    out = np.array(array, dtype=dtype)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class LayerScore:
    """One layer's chosen probe(s) and scores: on one split (one fold), or pooled over cross-validation folds.

    ``settings``: the (l1, l2) each fold chose on its validation part (``l1``, ``l2``: the first fold's,
    the setting of the probe kept); ``validation_accuracy``: the chosen probes' validation accuracy, mean
    over folds; ``grid_validation_accuracy``: every grid setting's validation accuracy (grid order), mean
    over folds; ``accuracy``/``macro_f1``: on the (pooled) test predictions, every test row once, intervals
    from a bootstrap over speakers when groups are given; ``fold_accuracy``/``fold_accuracies``: the test
    accuracy of each fold, and their mean and spread (no spread for one fold); ``majority_accuracy``: the
    test accuracy of each fold's training-majority class, pooled; ``sparsity``: mean over folds;
    ``control_accuracy`` (the first fold's chosen setting retrained on the control task) and
    ``selectivity`` (test accuracy minus it).
    """

    layer: str
    n_neurons: int
    settings: tuple[tuple[float, float], ...]
    validation_accuracy: float
    grid_validation_accuracy: tuple[float, ...]
    accuracy: Interval
    macro_f1: Interval
    fold_accuracy: FoldSummary
    fold_accuracies: tuple[float, ...]
    majority_accuracy: float
    sparsity: float
    control_accuracy: Optional[float] = None
    selectivity: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", tuple((float(a), float(b)) for a, b in self.settings))
        object.__setattr__(self, "grid_validation_accuracy", tuple(float(v) for v in self.grid_validation_accuracy))
        object.__setattr__(self, "fold_accuracies", tuple(float(v) for v in self.fold_accuracies))

    @property
    def l1(self) -> float:
        return self.settings[0][0]

    @property
    def l2(self) -> float:
        return self.settings[0][1]

    def as_dict(self) -> dict:
        """Plain JSON values. The keys the reports and studies read: ``layer``, ``n_neurons``, ``l1``, ``l2``,
        ``settings``, ``validation_accuracy``, ``grid_validation_accuracy``, ``accuracy`` and ``macro_f1``
        (interval dicts), ``fold_accuracy`` (mean, std, n), ``fold_accuracies``, ``majority_accuracy``,
        ``sparsity``, ``control_accuracy``, ``selectivity``."""
        return {
            "layer": self.layer,
            "n_neurons": int(self.n_neurons),
            "l1": self.l1,
            "l2": self.l2,
            "settings": [list(pair) for pair in self.settings],
            "validation_accuracy": float(self.validation_accuracy),
            "grid_validation_accuracy": list(self.grid_validation_accuracy),
            "accuracy": asdict(self.accuracy),
            "macro_f1": asdict(self.macro_f1),
            "fold_accuracy": asdict(self.fold_accuracy),
            "fold_accuracies": list(self.fold_accuracies),
            "majority_accuracy": float(self.majority_accuracy),
            "sparsity": float(self.sparsity),
            "control_accuracy": self.control_accuracy,
            "selectivity": self.selectivity,
        }


@dataclass(frozen=True, eq=False)
class SweepResult:
    """A layer sweep, on one split or cross-validated: scores per layer (input order), the first fold's chosen
    probes, each layer's test predictions, and the layer that does best on validation.

    ``predictions``: layer -> predicted label of every row of ``test_rows`` (the rows tested: one split's
    test part, or the union of the folds' test parts; ascending); ``n_folds``: 1 for a single split.
    Frozen: layers and grid are tuples, the mappings read-only, the arrays not writeable.
    """

    layers: tuple[LayerScore, ...]
    probes: Mapping[str, ElasticNetProbe]
    control_probes: Mapping[str, ElasticNetProbe] = field(default_factory=dict)
    grid: tuple[tuple[float, float], ...] = ()
    predictions: Mapping[str, np.ndarray] = field(default_factory=dict)
    test_rows: np.ndarray = field(default_factory=lambda: _read_only([], np.intp))
    n_folds: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "grid", tuple((float(a), float(b)) for a, b in self.grid))
        object.__setattr__(self, "probes", MappingProxyType(dict(self.probes)))
        object.__setattr__(self, "control_probes", MappingProxyType(dict(self.control_probes)))
        object.__setattr__(self, "predictions",
                           MappingProxyType({name: _read_only(p) for name, p in self.predictions.items()}))
        object.__setattr__(self, "test_rows", _read_only(self.test_rows, np.intp))

    @property
    def best_layer(self) -> str:
        """Chosen on (mean) validation accuracy, never on test; ties go to the earlier layer."""
        scores = [s.validation_accuracy for s in self.layers]
        return self.layers[int(np.argmax(scores))].layer

    def as_dict(self) -> dict:
        """Plain JSON values: ``grid`` (the (l1, l2) settings tried), ``n_folds``, ``best_layer`` and ``layers``
        (:meth:`LayerScore.as_dict` each, input order). Probes and predictions are files, not JSON."""
        return {
            "grid": [list(g) for g in self.grid],
            "n_folds": int(self.n_folds),
            "best_layer": self.best_layer,
            "layers": [s.as_dict() for s in self.layers],
        }


# --------------------------------------------------------------------------------------------------
# checks


def _rows(split: Any, n: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = []
    for part in ("train", "validation", "test"):
        if not hasattr(split, part):
            raise ValueError(f"{what} needs train, validation and test row indices; it has no {part!r}")
        rows = np.asarray(getattr(split, part))
        if rows.ndim != 1 or rows.size == 0 or rows.dtype.kind not in "iu":
            raise ValueError(f"{what}.{part} must be a non-empty 1-D array of row indices")
        if rows.min() < 0 or rows.max() >= n:
            raise ValueError(f"{what}.{part} has row indices outside [0, {n})")
        parts.append(rows.astype(np.intp))
    return parts[0], parts[1], parts[2]


def _grid(grid: Any) -> list[tuple[float, float]]:
    try:
        pairs = [(float(a), float(b)) for a, b in grid]
    except (TypeError, ValueError):
        raise ValueError("grid must be a sequence of (l1, l2) pairs of numbers") from None
    if not pairs:
        raise ValueError("grid is empty: give at least one (l1, l2)")
    for a, b in pairs:
        if not (np.isfinite(a) and np.isfinite(b) and a >= 0 and b >= 0):
            raise ValueError(f"grid values must be finite and >= 0, got ({a}, {b})")
    return pairs


def _check_classes(labels: np.ndarray, rows: tuple[np.ndarray, ...], what: str) -> None:
    classes = np.unique(labels)
    if classes.shape[0] < 2:
        raise ValueError(f"{what} has a single class ({classes[0]!r}); a probe needs at least 2")
    for name, part in zip(("train", "validation", "test"), rows):
        missing = np.setdiff1d(classes, labels[part])
        if missing.size:
            raise ValueError(f"{what}: class {missing[0]!r} has no examples in the {name} part")


def _width_groups(layers: Mapping[str, np.ndarray]) -> list[list[str]]:
    """Layer names grouped by width (a batched fit needs equal-width inputs), in first-seen order."""
    groups: dict[int, list[str]] = {}
    for name, X in layers.items():
        groups.setdefault(X.shape[1], []).append(name)
    return list(groups.values())


def bank_bytes(n_rows: int, width: int, n_weights_per_neuron: int, row_bytes: int = 4) -> int:
    """What one layer adds to a batched fit: its training and validation rows (gathered at ``row_bytes`` per
    value; float64 rows add their float32 standardised copy), and the bank's tensors for its probes
    (``n_weights_per_neuron``: settings x classes weights per neuron)."""
    per_value = row_bytes if row_bytes <= 4 else row_bytes + 4
    return width * (per_value * n_rows + 4 * BANK_TENSORS_PER_WEIGHT * n_weights_per_neuron)


def _banks(arrays: Mapping[str, np.ndarray], n_rows: int, n_weights_per_neuron: int, budget: int) -> list[list[str]]:
    """Equal-width layers in banks that each fit ``budget`` (first-seen order)."""
    banks = []
    for names in _width_groups(arrays):
        row_bytes = gathered_dtype([arrays[name] for name in names]).itemsize
        size = bank_bytes(n_rows, arrays[names[0]].shape[1], n_weights_per_neuron, row_bytes)
        banks.extend(layer_banks(names, size, budget))
    return banks


def _bank_message(names: list[str], arrays: Mapping[str, np.ndarray], n_settings: int, budget: int) -> str:
    width = arrays[names[0]].shape[1]
    same_width = sum(X.shape[1] == width for X in arrays.values())
    part = "" if len(names) == same_width else f" (of {same_width}, to stay within {format_size(budget)})"
    return f"probing {len(names)} layer(s){part} x {n_settings} settings ({width} neurons)"


# --------------------------------------------------------------------------------------------------
# the sweep


def probe_layers(
    layers: Mapping[str, Any],
    labels: Any,
    split: Any,
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
    """Probe every layer for ``labels``; choose each layer's (l1, l2) from ``grid`` on validation.

    Parameters
    ----------
    layers
        Layer name -> (N, D_layer) features (e.g. ``RepresentationStore.layer``), all with the same N rows.
    labels
        N task labels.
    split
        Row indices ``train``, ``validation``, ``test`` (speaker-disjoint for speaker-independent tasks).
        Training and early stopping use train and validation; the choice of setting uses validation
        accuracy (ties: lower validation loss); test is scored once, for the chosen probe.
    grid
        The (l1, l2) settings tried for every layer; one setting fixes it.
    groups
        N group ids (speakers): test intervals then resample whole speakers (cluster bootstrap).
    control_labels, control_split
        A control task (e.g. :func:`tasks.splits.control_labels` with its within-speaker split): the
        chosen setting of each layer is retrained on it, giving control accuracy and selectivity (task
        minus control test accuracy).
    options
        How every probe is trained (:class:`~probing.options.TrainingOptions`, or a mapping of some of its
        fields; default its defaults). The penalty is the grid's.
    n_resamples, seed
        Bootstrap resamples and seed of the test intervals (the probes' seed is ``options.seed``).
    memory
        The most memory the training arrays of one batched fit may hold: bytes or a size ("8G"); default
        half the memory available now (:func:`probing.budget.default_budget`). Layers are read where they
        are (a memory-mapped store's layers are never loaded whole); the training and validation rows of as
        many equal-width layers as fit are gathered as float32 and standardised in place.

    Cost: one batched fit per distinct layer width for the task (all layers x grid points), or more when
    the layers of one width do not fit ``memory`` together; as many for the control task.
    """
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError("layers must be a non-empty mapping of layer name -> (N, D) features")
    arrays = {str(name): numeric_matrix(f"layer {name!r}", X) for name, X in layers.items()}
    n = next(iter(arrays.values())).shape[0]
    for name, X in arrays.items():
        if X.shape[0] != n:
            raise ValueError(f"layer {name!r} has {X.shape[0]} rows, the first layer {n}")
    for name, X in arrays.items():  # before any work, a block of rows at a time
        check_finite(f"layer {name!r}", X)
    y = label_vector("labels", labels, n, "the layers")
    train, val, test = _rows(split, n, "split")
    _check_classes(y, (train, val, test), "the task")
    settings = _grid(grid)
    options = TrainingOptions.coerce(options)
    budget = default_budget() if memory is None else parse_size(memory)
    group_ids = None if groups is None else label_vector("groups", groups, n, "the layers")
    tell = progress or (lambda message: None)
    if (control_labels is None) != (control_split is None):
        raise ValueError("give both control_labels and control_split, or neither")
    if control_labels is not None:
        y_control = label_vector("control_labels", control_labels, n, "the layers")
        c_train, c_val, c_test = _rows(control_split, n, "control_split")
        _check_classes(y_control, (c_train, c_val, c_test), "the control task")

    chosen: dict[str, ElasticNetProbe] = {}
    grid_scores: dict[str, list[float]] = {}
    n_classes = np.unique(y).shape[0]
    for names in _banks(arrays, len(train) + len(val), len(settings) * n_classes, budget):
        tell(_bank_message(names, arrays, len(settings), budget))
        X_train, X_val = gather_rows([arrays[name] for name in names], train, names=names), \
            gather_rows([arrays[name] for name in names], val, names=names)
        inputs = np.repeat(np.arange(len(names)), len(settings))
        probes = fit_probes(X_train, y[train], X_val, y[val], settings * len(names), inputs=inputs,
                            options=options, copy=False)
        del X_train, X_val
        for g, name in enumerate(names):
            candidates = probes[g * len(settings):(g + 1) * len(settings)]
            raw_val = np.asarray(arrays[name][val])
            scores = [p.score(raw_val, y[val]) for p in candidates]
            losses = [p.best_val_loss_ for p in candidates]
            best = min(range(len(candidates)), key=lambda i: (-scores[i], losses[i], i))
            chosen[name], grid_scores[name] = candidates[best], scores

    controls: dict[str, ElasticNetProbe] = {}
    control_scores: dict[str, float] = {}
    if control_labels is not None:
        n_control = np.unique(y_control).shape[0]
        for names in _banks(arrays, len(c_train) + len(c_val), n_control, budget):
            tell(f"control task on {len(names)} layer(s)")
            X_train, X_val = gather_rows([arrays[name] for name in names], c_train, names=names), \
                gather_rows([arrays[name] for name in names], c_val, names=names)
            layer_settings = [(chosen[name].l1, chosen[name].l2) for name in names]
            probes = fit_probes(X_train, y_control[c_train], X_val, y_control[c_val], layer_settings,
                                inputs=np.arange(len(names)), options=options, copy=False)
            del X_train, X_val
            for name, probe in zip(names, probes):
                controls[name] = probe
                control_scores[name] = probe.score(np.asarray(arrays[name][c_test]), y_control[c_test])

    scores, predictions = [], {}
    order = np.argsort(test, kind="stable")
    for name, X in arrays.items():
        probe = chosen[name]
        predicted = probe.predict(X[test])
        predictions[name] = predicted[order]
        test_groups = None if group_ids is None else group_ids[test]
        intervals = {
            metric: bootstrap_interval(y[test], predicted, metric, groups=test_groups,
                                       n_resamples=n_resamples, seed=seed)
            for metric in ("accuracy", "macro_f1")
        }
        test_accuracy = float(np.mean(predicted == y[test]))
        control = control_scores.get(name)
        scores.append(
            LayerScore(
                layer=name,
                n_neurons=X.shape[1],
                settings=((float(probe.l1), float(probe.l2)),),
                validation_accuracy=float(max(grid_scores[name])),
                grid_validation_accuracy=[float(s) for s in grid_scores[name]],
                accuracy=intervals["accuracy"],
                macro_f1=intervals["macro_f1"],
                fold_accuracy=fold_summary([test_accuracy]),
                fold_accuracies=(test_accuracy,),
                majority_accuracy=majority_baseline(y[train], y[test]),
                sparsity=sparsity(probe),
                control_accuracy=None if control is None else float(control),
                selectivity=None if control is None else selectivity(intervals["accuracy"].value, control),
            )
        )
    return SweepResult(layers=scores, probes=chosen, control_probes=controls, grid=settings, predictions=predictions,
                       test_rows=test[order], n_folds=1)
