"""Minimal neuron subsets: the smallest top-k of a ranking whose retrained probe keeps the accuracy.

Public API
----------
- :func:`minimal_subset` - search for the smallest k such that a probe retrained on the top-k neurons of
  a ranking reaches ``target`` x the full probe's validation accuracy.
- :class:`MinimalSubset` - its result (chosen neurons, k, accuracies, the accuracy curve over k).

Cost: by default the whole search is **one batched fit** (one call of :func:`probing.probe.fit_probes`)
that trains every candidate subset together as one model (one probe per k, restricted by a feature
mask), over a dense grid of k: every k up to 10, then steps of ``resolution`` (10%) of k, then D itself
(the full probe, whose accuracy is ``full_accuracy`` unless one is given) - or the caller's
``candidates`` (plus D). So the answer is the smallest passing k to within 10%. Why one dense round and
not a coarse grid refined in a second round: every round pays for its slowest candidate's epochs, and
a bank of probes costs much less per epoch than the same probes trained one by one (32 probes of 384
neurons: 54 ms per epoch of 3,200 rows on 2 cores, one probe 32 ms). The bank is a
:class:`probing.training.RaggedProbeBank` (the masks are nested): a candidate of k neurons costs about
k, not D, per step, and candidates that early stopping froze drop out of the computation. The small-k
candidates train longest (on benchmarks/probe_training.py about 70 epochs against the full probe's 30),
so the search still costs about 3 single fits (it cost 7 with every candidate computed on all D).
An optional refinement round (``n_refine > 0``) tries up to ``n_refine`` evenly spaced ks strictly
between the last failing grid point and the first passing one, when any lies between them.

The result is the smallest passing k among *all* evaluated ks. Every choice (the threshold, the passing
ks, early stopping of the candidate probes) uses the validation split only, never a test split.

Works on plain arrays only (never imports ``encoders`` or ``tasks``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from speechprobe.probing.budget import check_finite, numeric_matrix
from speechprobe.probing.checks import label_vector
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import fit_probes

__all__ = ["MinimalSubset", "minimal_subset"]

_EPS = 1e-12  # float slack in "accuracy >= target * full_accuracy"


@dataclass(frozen=True)
class MinimalSubset:
    """Result of :func:`minimal_subset`.

    ``neurons``: the chosen neuron indices (the top ``k`` of the ranking, in ranking order); ``k`` and
    ``fraction`` (= k / D); ``accuracy``: validation accuracy of the probe retrained on them;
    ``full_accuracy``: the reference (given, or the full probe's validation accuracy); ``threshold`` =
    target x full_accuracy; ``curve_k`` / ``curve_accuracy``: every evaluated k (ascending) and its
    validation accuracy; ``reached``: False when no evaluated k reached the threshold (possible only with
    a given ``full_accuracy`` above what the full probe attains): then the result is the full set, D.
    """

    neurons: np.ndarray
    k: int
    fraction: float
    accuracy: float
    full_accuracy: float
    threshold: float
    curve_k: np.ndarray
    curve_accuracy: np.ndarray
    reached: bool = True


# --------------------------------------------------------------------------------------------------
# checks


def _ranking(ranking: Any, d: int) -> np.ndarray:
    array = np.asarray(ranking)
    if array.ndim != 1 or array.dtype.kind not in "iu" or array.shape[0] != d:
        raise ValueError(
            f"ranking must be a 1-D integer permutation of range({d}) (every neuron once), "
            f"got dtype {array.dtype} and shape {array.shape}"
        )
    if not np.array_equal(np.sort(array), np.arange(d)):
        raise ValueError(f"ranking must be a permutation of range({d}): every neuron index exactly once")
    return array.astype(np.intp)


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not (0.0 < number <= 1.0):
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return number


def _candidates(candidates: Any, d: int, resolution: float = 0.1) -> np.ndarray:
    if candidates is None:
        grid, k = [], 1
        while k < d:
            grid.append(k)
            k = max(k + 1, int(round(k * (1.0 + resolution))))
        return np.array(grid + [d], dtype=np.int64)
    array = np.asarray(candidates)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
        raise ValueError("candidates must be a non-empty 1-D collection of integer subset sizes k")
    if array.min() < 1 or array.max() > d:
        raise ValueError(f"candidates must lie in [1, {d}] (the number of neurons), got {array.min()}..{array.max()}")
    return np.array(sorted(set(array.tolist()) | {d}), dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# search


def _evaluate(X_train, y_train, X_val, y_val, ranking, ks, setting, options) -> np.ndarray:
    """Validation accuracy of a probe retrained on the top-k neurons, for every k in ``ks``: ONE batched fit."""
    d = X_train.shape[1]
    masks = np.zeros((len(ks), d))
    for row, k in enumerate(ks):
        masks[row, ranking[:k]] = 1.0
    probes = fit_probes(X_train, y_train, X_val, y_val, [setting] * len(ks), masks, options=options)
    return np.array([probe.score(X_val, y_val) for probe in probes], dtype=np.float64)


def _refinement(ks: np.ndarray, passed: np.ndarray, n_refine: int) -> np.ndarray:
    """Up to ``n_refine`` evenly spaced ks strictly between the last failing and first passing grid points."""
    if not passed.any():
        return np.zeros(0, dtype=np.int64)
    first = int(np.argmax(passed))
    if first == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(ks[first - 1]), int(ks[first])
    inside = np.arange(lo + 1, hi)
    if inside.size <= n_refine:
        return inside
    picks = np.unique(np.round(np.linspace(lo, hi, n_refine + 2)[1:-1]).astype(np.int64))
    return picks[(picks > lo) & (picks < hi)]


def minimal_subset(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    ranking: Any,
    *,
    target: float = 0.97,
    full_accuracy: Optional[float] = None,
    candidates: Optional[Sequence[int]] = None,
    l1: float = 0.0,
    l2: float = 0.0,
    options: Union[TrainingOptions, Mapping[str, Any], None] = None,
    resolution: float = 0.1,
    n_refine: int = 0,
) -> MinimalSubset:
    """The smallest top-k of ``ranking`` whose retrained probe reaches ``target`` x the full accuracy.

    Parameters
    ----------
    X_train, y_train
        Training features (N, D) and labels; every candidate probe is retrained on them.
    X_val, y_val
        Validation features and labels: early stopping of every candidate, its accuracy, and so the
        choice of k. Never pass a test split here.
    ranking
        Every neuron index, most salient first (e.g. :func:`probing.ranking.rank_neurons`).
    target
        Fraction in (0, 1] of ``full_accuracy`` that the subset's probe must reach (default 0.97).
    full_accuracy
        Reference validation accuracy in (0, 1]; default: that of a probe on all D neurons, trained in
        the same batched call as the first candidates.
    candidates
        The grid of k for the first round (integers in [1, D]; D is always added). Default: every k up
        to 10, then k growing by ``resolution`` (10%) per step, then D.
    l1, l2
        The penalty of every candidate probe (e.g. the full probe's: ``probe.l1``, ``probe.l2``).
    options
        How every candidate probe is trained (:class:`~probing.options.TrainingOptions`, or a mapping of
        some of its fields; e.g. ``TrainingOptions.from_probe(probe)``); default its defaults.
    resolution
        Relative spacing of the default grid, in (0, 1].
    n_refine
        Number of ks (at most) tried in an optional second, refining round (default 0: none).

    Cost: one batched fit, two with ``n_refine > 0`` when there is something to refine (see the module
    docstring).
    """
    # checked, not converted: float32 rows stay float32 (fit_probes standardises them into float32 anyway)
    X_train, X_val = numeric_matrix("X_train", X_train), numeric_matrix("X_val", X_val)
    check_finite("X_train", X_train)
    check_finite("X_val", X_val)
    n, d = X_train.shape
    if X_val.shape[1] != d:
        raise ValueError(f"X_val has {X_val.shape[1]} features but X_train has {d}")
    y_train = label_vector("y_train", y_train, n, "X_train")
    y_val = label_vector("y_val", y_val, X_val.shape[0], "X_val")
    order = _ranking(ranking, d)
    target = _fraction("target", target)
    if full_accuracy is not None:
        full_accuracy = _fraction("full_accuracy", full_accuracy)
    if isinstance(n_refine, bool) or not isinstance(n_refine, (int, np.integer)) or n_refine < 0:
        raise ValueError(f"n_refine must be a non-negative integer, got {n_refine!r}")
    resolution = _fraction("resolution", resolution)
    grid = _candidates(candidates, d, resolution)
    setting, options = (l1, l2), TrainingOptions.coerce(options)

    # round 1: the grid, with the full probe (k = D) in the same batched model
    grid_acc = _evaluate(X_train, y_train, X_val, y_val, order, grid, setting, options)
    if full_accuracy is None:
        full_accuracy = float(grid_acc[-1])
    threshold = target * full_accuracy
    passed = grid_acc >= threshold - _EPS

    # optional round 2: refine between the last failing and the first passing grid point
    extra = _refinement(grid, passed, int(n_refine))
    if extra.size:
        extra_acc = _evaluate(X_train, y_train, X_val, y_val, order, extra, setting, options)
        curve_k = np.concatenate([grid, extra])
        curve_acc = np.concatenate([grid_acc, extra_acc])
        sort = np.argsort(curve_k, kind="stable")
        curve_k, curve_acc = curve_k[sort], curve_acc[sort]
    else:
        curve_k, curve_acc = grid, grid_acc

    ok = curve_acc >= threshold - _EPS
    reached = bool(ok.any())
    at = int(np.argmax(ok)) if reached else len(curve_k) - 1  # curve_k[-1] == D
    k = int(curve_k[at])
    return MinimalSubset(
        neurons=order[:k].copy(),
        k=k,
        fraction=k / d,
        accuracy=float(curve_acc[at]),
        full_accuracy=float(full_accuracy),
        threshold=float(threshold),
        curve_k=curve_k.copy(),
        curve_accuracy=curve_acc.copy(),
        reached=reached,
    )
