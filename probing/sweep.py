"""Layer-wise probing sweeps: every layer x every regularisation setting, chosen on validation, scored once on test.

Public API
----------
- :func:`probe_layers` - train a probe per (layer, grid point) as one batched model per layer width,
  pick each layer's setting on the validation split, score the chosen probe once on the test split
  (accuracy and macro-F1 with bootstrap intervals over speakers, majority baseline), and, given control
  labels, train the same probe on the control task for control accuracy and selectivity.
- :class:`LayerScore`, :class:`SweepResult` - its results; ``as_dict()`` gives plain JSON values.
- :data:`DEFAULT_GRID` - the 8 (l1, l2) settings tried when none are given.

Works on plain arrays only: splits are any objects with ``train``, ``validation`` and ``test`` row
indices (e.g. :class:`tasks.splits.Split`, which the caller builds); nothing here imports ``tasks`` or
``encoders``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from speechprobe.probing.checks import feature_matrix, label_vector
from speechprobe.probing.metrics import Interval, bootstrap_interval, majority_baseline, selectivity
from speechprobe.probing.probe import TRAINING_PARAMS, ElasticNetProbe, fit_probes

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


@dataclass(frozen=True)
class LayerScore:
    """One layer's chosen probe: its setting, validation choice and test scores."""

    layer: str
    n_neurons: int
    l1: float
    l2: float
    validation_accuracy: float
    grid_validation_accuracy: list[float]
    accuracy: Interval
    macro_f1: Interval
    majority_accuracy: float
    sparsity: float
    control_accuracy: Optional[float] = None
    selectivity: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SweepResult:
    """Scores per layer (input order), the chosen probes, and the layer that does best on validation."""

    layers: list[LayerScore]
    probes: dict[str, ElasticNetProbe]
    control_probes: dict[str, ElasticNetProbe] = field(default_factory=dict)
    grid: list[tuple[float, float]] = field(default_factory=list)

    @property
    def best_layer(self) -> str:
        """Chosen on validation accuracy (never on test); ties go to the earlier layer."""
        scores = [s.validation_accuracy for s in self.layers]
        return self.layers[int(np.argmax(scores))].layer

    def as_dict(self) -> dict:
        return {
            "grid": [list(g) for g in self.grid],
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


def _training_kwargs(probe_params: Optional[Mapping[str, Any]]) -> dict:
    params = {k: v for k, v in ElasticNetProbe().get_params().items() if k in TRAINING_PARAMS}
    if probe_params:
        unknown = sorted(set(probe_params) - set(TRAINING_PARAMS))
        if unknown:
            raise ValueError(f"unknown probe_params {unknown}; known: {', '.join(TRAINING_PARAMS)}")
        params.update(probe_params)
    return params


def _width_groups(layers: Mapping[str, np.ndarray]) -> list[list[str]]:
    """Layer names grouped by width (a batched fit needs equal-width inputs), in first-seen order."""
    groups: dict[int, list[str]] = {}
    for name, X in layers.items():
        groups.setdefault(X.shape[1], []).append(name)
    return list(groups.values())


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
    probe_params: Optional[Mapping[str, Any]] = None,
    n_resamples: int = 1000,
    seed: int = 0,
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
    probe_params
        Training parameters of :class:`ElasticNetProbe` (``max_epochs``, ``batch_size``, ``lr``,
        ``patience``, ``min_delta``, ``seed``, ``neurox_loss``).

    Cost: one batched fit per distinct layer width for the task (all layers x grid points), one more
    for the control task.
    """
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError("layers must be a non-empty mapping of layer name -> (N, D) features")
    arrays = {str(name): feature_matrix(f"layer {name!r}", X) for name, X in layers.items()}
    n = next(iter(arrays.values())).shape[0]
    for name, X in arrays.items():
        if X.shape[0] != n:
            raise ValueError(f"layer {name!r} has {X.shape[0]} rows, the first layer {n}")
    y = label_vector("labels", labels, n, "the layers")
    train, val, test = _rows(split, n, "split")
    _check_classes(y, (train, val, test), "the task")
    settings = _grid(grid)
    kwargs = _training_kwargs(probe_params)
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
    for names in _width_groups(arrays):
        tell(f"probing {len(names)} layer(s) x {len(settings)} settings ({arrays[names[0]].shape[1]} neurons)")
        X_train = np.stack([arrays[name][train] for name in names])
        X_val = np.stack([arrays[name][val] for name in names])
        inputs = np.repeat(np.arange(len(names)), len(settings))
        probes = fit_probes(X_train, y[train], X_val, y[val], settings * len(names), inputs=inputs, **kwargs)
        for g, name in enumerate(names):
            candidates = probes[g * len(settings):(g + 1) * len(settings)]
            scores = [p.score(arrays[name][val], y[val]) for p in candidates]
            losses = [p.best_val_loss_ for p in candidates]
            best = min(range(len(candidates)), key=lambda i: (-scores[i], losses[i], i))
            chosen[name], grid_scores[name] = candidates[best], scores

    controls: dict[str, ElasticNetProbe] = {}
    control_scores: dict[str, float] = {}
    if control_labels is not None:
        for names in _width_groups(arrays):
            tell(f"control task on {len(names)} layer(s)")
            X_train = np.stack([arrays[name][c_train] for name in names])
            X_val = np.stack([arrays[name][c_val] for name in names])
            layer_settings = [(chosen[name].l1, chosen[name].l2) for name in names]
            probes = fit_probes(X_train, y_control[c_train], X_val, y_control[c_val], layer_settings,
                                inputs=np.arange(len(names)), **kwargs)
            for name, probe in zip(names, probes):
                controls[name] = probe
                control_scores[name] = probe.score(arrays[name][c_test], y_control[c_test])

    scores = []
    for name, X in arrays.items():
        probe = chosen[name]
        predicted = probe.predict(X[test])
        test_groups = None if group_ids is None else group_ids[test]
        intervals = {
            metric: bootstrap_interval(y[test], predicted, metric, groups=test_groups,
                                       n_resamples=n_resamples, seed=seed)
            for metric in ("accuracy", "macro_f1")
        }
        control = control_scores.get(name)
        scores.append(
            LayerScore(
                layer=name,
                n_neurons=X.shape[1],
                l1=float(probe.l1),
                l2=float(probe.l2),
                validation_accuracy=float(max(grid_scores[name])),
                grid_validation_accuracy=[float(s) for s in grid_scores[name]],
                accuracy=intervals["accuracy"],
                macro_f1=intervals["macro_f1"],
                majority_accuracy=majority_baseline(y[train], y[test]),
                sparsity=sparsity(probe),
                control_accuracy=None if control is None else float(control),
                selectivity=None if control is None else selectivity(intervals["accuracy"].value, control),
            )
        )
    return SweepResult(layers=scores, probes=chosen, control_probes=controls, grid=settings)
