"""Ablation of neurons in a fitted probe, and ablation curves over a ranking.

Public API
----------
- :func:`ablate` - accuracy of a fitted probe when some neurons are removed, *without* retraining.
- :func:`ablation_curve` - for k over a grid of fractions of the neurons: accuracy with the top-k,
  bottom-k and random-k neurons of a ranking removed (no retraining), and optionally with *only*
  them kept (retrained, all candidate probes trained as one batched :func:`probing.probe.fit_probes`
  call).
- :class:`AblationCurve` - the result, a frozen dataclass of read-only arrays (``as_dict`` for JSON).

What "removing" a neuron means (``mode``; default ``"mean"``)
-------------------------------------------------------------
The probe is a duck type: it needs ``predict`` on *raw* features and, for ``mode="mean"``, the
training-split mean ``mean_`` (as :class:`~probing.probe.ElasticNetProbe`, which standardises
internally with ``mean_`` / ``scale_``). :data:`MODE_DESCRIPTIONS` names each mode in words, for
figure titles and report sentences.

- ``mode="mean"`` (the default): *mean ablation*, which stays **in distribution**. The neuron's raw
  value is replaced by its training mean ``mean_``. For a standardised probe that is a standardised
  value of exactly 0, so the neuron's term ``w_j * z_j`` vanishes from every logit: identical to
  setting its weight to 0. This is the clean "the probe no longer sees this neuron" ablation, and the
  one to report.
- ``mode="zero"``: *raw-zero ablation*, an **out-of-distribution shift**, kept as an option for
  comparison with the activation-patching literature and NeuroX's
  ``zero_out_activations_keep_neurons``. The neuron's raw value is set to 0. For a standardised probe
  raw 0 is the standardised value ``-mean_ / scale_``: a neuron with a large offset is pushed far out
  of its training distribution, so raw-zero ablation can hurt *more* than removing the neuron's
  information (it adds a constant shift ``-w_j * mean_j / scale_j`` to the logits). The two modes
  coincide exactly when the training mean is 0.

(Setting the *standardised* value to 0 is the same thing as ``"mean"``, which is why it is not a
separate mode.)

Works on plain arrays only (never imports ``encoders`` or ``tasks``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

from speechprobe.probing.checks import feature_matrix, label_vector
from speechprobe.probing.choices import ABLATION_MODES, DEFAULT_ABLATION_MODE
from speechprobe.probing.metrics import accuracy

__all__ = ["AblationCurve", "DEFAULT_MODE", "MODES", "MODE_DESCRIPTIONS", "ablate", "ablation_curve"]

MODES, DEFAULT_MODE = ABLATION_MODES, DEFAULT_ABLATION_MODE
#: Each mode in words, as figure titles and report sentences name it.
MODE_DESCRIPTIONS = {
    "mean": "mean ablation (in distribution)",
    "zero": "raw-zero ablation (out of distribution)",
}
DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def fit_probes(*args: Any, **kwargs: Any) -> list:
    """:func:`probing.probe.fit_probes`, imported on first use: the probe pulls in torch and Lightning, which
    a reader of :data:`MODE_DESCRIPTIONS` (a report) does not need."""
    from speechprobe.probing.probe import fit_probes as fit

    return fit(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# input checks


def _n_features(probe: Any) -> int:
    for name in ("n_features_in_", "coef_", "mean_"):
        value = getattr(probe, name, None)
        if value is None:
            continue
        if name == "n_features_in_":
            return int(value)
        shape = np.shape(value)
        return int(shape[-1])
    raise ValueError("probe is not fitted (it has no n_features_in_, coef_ or mean_)")


def _features(name: str, X: Any, d: int) -> np.ndarray:
    """A checked copy of X (ablation writes into it) with the probe's width."""
    array = feature_matrix(name, X).copy()
    if array.shape[1] != d:
        raise ValueError(f"{name} has {array.shape[1]} features, but the probe was fitted on {d}")
    return array


def _integer_indices(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros(0, dtype=np.intp)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D collection of neuron indices, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or Inf")
        if not np.all(array == np.round(array)):
            raise ValueError(f"{name} must hold integer neuron indices")
    elif array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer neuron indices, got dtype {array.dtype}")
    return array.astype(np.intp)


def _neurons(neurons: Any, d: int) -> np.ndarray:
    array = _integer_indices("neurons", neurons)
    if array.size > d:
        raise ValueError(f"{array.size} neurons requested, but the probe has only {d}")
    if array.size and (array.min() < 0 or array.max() >= d):
        bad = array[(array < 0) | (array >= d)]
        raise ValueError(f"neuron indices must lie in [0, {d}), got {bad[:5].tolist()}")
    if np.unique(array).size != array.size:
        values, counts = np.unique(array, return_counts=True)
        raise ValueError(f"neurons holds duplicates: {values[counts > 1][:5].tolist()}")
    return array


def _fill_values(probe: Any, mode: str, d: int) -> np.ndarray:
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; known modes: {', '.join(MODES)}")
    if mode == "zero":
        return np.zeros(d)
    mean = getattr(probe, "mean_", None)
    if mean is None:
        raise ValueError('mode "mean" needs the probe\'s training mean (mean_); this probe has none')
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    if mean.shape != (d,) or not np.all(np.isfinite(mean)):
        raise ValueError(f"probe.mean_ must be {d} finite numbers")
    return mean


def _score(probe: Any, X: np.ndarray, y: np.ndarray) -> float:
    return float(accuracy(y, probe.predict(X)))


def _ablated_score(probe: Any, X: np.ndarray, y: np.ndarray, neurons: np.ndarray, fill: np.ndarray) -> float:
    if neurons.size == 0:
        return _score(probe, X, y)
    saved = X[:, neurons].copy()
    X[:, neurons] = fill[neurons]
    try:
        return _score(probe, X, y)
    finally:
        X[:, neurons] = saved


# --------------------------------------------------------------------------------------------------
# public API


def ablate(probe: Any, X: Any, y: Any, neurons: Any, mode: str = DEFAULT_MODE) -> float:
    """Accuracy of the fitted ``probe`` on (X, y) with ``neurons`` removed, without retraining.

    ``X`` holds raw features (the probe standardises them itself). ``mode="mean"`` (the default, mean
    ablation, in distribution) sets the removed neurons to the probe's training mean ``mean_``, i.e.
    standardised 0, which removes exactly their contribution to the logits; ``mode="zero"`` (raw-zero
    ablation, an out-of-distribution shift) sets their raw values to 0 (see the module docstring for
    why the two differ). ``neurons`` may be empty: then this is the probe's own accuracy.

    Raises ValueError for neuron indices out of range, duplicated, or more than the probe has; for NaN
    or Inf features; for X of the wrong width; for X and y of different lengths; for an unknown mode.
    """
    d = _n_features(probe)
    X_arr = _features("X", X, d)
    y_arr = label_vector("y", y, X_arr.shape[0])
    fill = _fill_values(probe, mode, d)
    return _ablated_score(probe, X_arr, y_arr, _neurons(neurons, d), fill)


@dataclass(frozen=True)
class AblationCurve:
    """Accuracies over k, one entry per fraction (arrays are read-only).

    ``fractions`` and ``ks`` (k = round(fraction * n_features), at least 1, at most n_features);
    ``full_accuracy``: the probe with nothing removed. ``seeds``: the seeds of the random subsets; the
    random subset for seed s is a prefix of one seeded permutation, so random-k sets are nested over k.

    Removed, no retraining (``mode`` says how, see :data:`MODE_DESCRIPTIONS`): ``removed_top``,
    ``removed_bottom``, ``removed_random`` (n_seeds, n_k) with ``removed_random_mean`` /
    ``removed_random_std`` (population std over seeds).

    Kept only, retrained (``None`` unless ``retrain`` was given): ``kept_top``, ``kept_bottom``,
    ``kept_random`` (n_seeds, n_k), ``kept_random_mean``, ``kept_random_std``; each a probe with the
    original probe's l1, l2 and training parameters, trained on only those k neurons and scored on the
    same test data.
    """

    n_features: int
    mode: str
    fractions: np.ndarray
    ks: np.ndarray
    seeds: np.ndarray
    full_accuracy: float
    removed_top: np.ndarray
    removed_bottom: np.ndarray
    removed_random: np.ndarray
    removed_random_mean: np.ndarray
    removed_random_std: np.ndarray
    kept_top: Optional[np.ndarray] = None
    kept_bottom: Optional[np.ndarray] = None
    kept_random: Optional[np.ndarray] = None
    kept_random_mean: Optional[np.ndarray] = None
    kept_random_std: Optional[np.ndarray] = None

    def as_dict(self) -> dict:
        """Plain Python values (lists, floats, None), ready for ``json.dumps``."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def _frozen(array: Any, dtype: Any = np.float64) -> np.ndarray:
    out = np.array(array, dtype=dtype)
    out.setflags(write=False)
    return out


def _ranking(ranking: Any, d: int) -> np.ndarray:
    array = _integer_indices("ranking", ranking)
    if array.shape != (d,) or not np.array_equal(np.sort(array), np.arange(d)):
        raise ValueError(f"ranking must be a permutation of all {d} neuron indices (as rank_neurons returns)")
    return array


def _ks(fractions: Any, d: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        f = np.asarray(fractions, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError("fractions must be numbers in (0, 1]") from None
    if f.size == 0 or not np.all(np.isfinite(f)) or np.any(f <= 0) or np.any(f > 1):
        raise ValueError(f"fractions must be a non-empty sequence of numbers in (0, 1], got {fractions!r}")
    ks = np.clip(np.round(f * d).astype(np.intp), 1, d)
    return f, ks


def _seeds(random_seeds: Any) -> np.ndarray:
    seeds = _integer_indices("random_seeds", random_seeds)
    if seeds.size == 0:
        raise ValueError("random_seeds must hold at least one seed")
    if np.any(seeds < 0):
        raise ValueError("random_seeds must be non-negative integers")
    if np.unique(seeds).size != seeds.size:
        raise ValueError("random_seeds holds duplicates")
    return seeds


def _fit_params(probe: Any) -> tuple[float, float, Any]:
    """The probe's penalty and training options: what its retrained copies take over."""
    from speechprobe.probing.options import TrainingOptions

    params = getattr(probe, "get_params", None)
    if params is None:
        raise ValueError("retraining needs the probe's get_params() (l1, l2 and training options)")
    params = params()
    if "l1" not in params or "l2" not in params:
        raise ValueError("probe.get_params() must give l1 and l2 to retrain with")
    return params["l1"], params["l2"], TrainingOptions.from_probe(probe)


def ablation_curve(
    probe: Any,
    X_test: Any,
    y_test: Any,
    ranking: Any,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    random_seeds: Sequence[int] = DEFAULT_SEEDS,
    mode: str = DEFAULT_MODE,
    retrain: Optional[tuple[Any, Any, Any, Any]] = None,
) -> AblationCurve:
    """Ablation curves of a fitted probe over a ranking (every neuron index, most salient first).

    For each fraction, k = round(fraction * n_features) (at least 1): the test accuracy with the top-k
    (``ranking[:k]``), bottom-k (``ranking[-k:]``) and random-k neurons (one draw per seed) removed
    as in :func:`ablate` with ``mode`` (default ``"mean"``: mean ablation, in distribution;
    ``"zero"``: raw-zero ablation, an out-of-distribution shift), without retraining.

    ``retrain=(X_train, y_train, X_val, y_val)`` also gives the "keep only" curves: probes retrained
    on only the top-k, only the bottom-k and only the random-k neurons (same random sets as above),
    with the probe's own l1, l2 and training options (``probe.get_params()``), early-stopped on the
    validation split and scored on (X_test, y_test). All n_k * (2 + n_seeds) candidates are trained
    together in one batched :func:`~probing.probe.fit_probes` call with ``feature_masks``.
    """
    d = _n_features(probe)
    X = _features("X_test", X_test, d)
    y = label_vector("y_test", y_test, X.shape[0])
    order = _ranking(ranking, d)
    f, ks = _ks(fractions, d)
    seeds = _seeds(random_seeds)
    fill = _fill_values(probe, mode, d)
    if retrain is not None:
        if not isinstance(retrain, (tuple, list)) or len(retrain) != 4:
            raise ValueError("retrain must be (X_train, y_train, X_val, y_val)")
        l1, l2, options = _fit_params(probe)
        for name, block in (("X_train", retrain[0]), ("X_val", retrain[2])):
            if np.ndim(block) != 2 or np.shape(block)[1] != d:
                raise ValueError(f"retrain {name} must be 2-D with the probe's {d} features, got shape {np.shape(block)}")

    permutations = [np.random.default_rng(int(s)).permutation(d) for s in seeds]
    top = [order[:k] for k in ks]
    bottom = [order[d - k:] for k in ks]
    random = [[perm[:k] for k in ks] for perm in permutations]

    full = _score(probe, X, y)
    removed_top = [_ablated_score(probe, X, y, s, fill) for s in top]
    removed_bottom = [_ablated_score(probe, X, y, s, fill) for s in bottom]
    removed_random = np.array([[_ablated_score(probe, X, y, s, fill) for s in row] for row in random]).reshape(len(seeds), len(ks))

    kept: dict[str, Any] = {}
    if retrain is not None:
        X_train, y_train, X_val, y_val = retrain
        subsets = top + bottom + [s for row in random for s in row]
        masks = np.zeros((len(subsets), d))
        for p, s in enumerate(subsets):
            masks[p, s] = 1.0
        probes = fit_probes(X_train, y_train, X_val, y_val, [(l1, l2)] * len(subsets), masks, options=options)
        scores = np.array([_score(p, X, y) for p in probes])
        n_k = len(ks)
        kept_random = scores[2 * n_k:].reshape(len(seeds), n_k)
        kept = dict(
            kept_top=_frozen(scores[:n_k]),
            kept_bottom=_frozen(scores[n_k:2 * n_k]),
            kept_random=_frozen(kept_random),
            kept_random_mean=_frozen(kept_random.mean(axis=0)),
            kept_random_std=_frozen(kept_random.std(axis=0)),
        )

    return AblationCurve(
        n_features=d,
        mode=mode,
        fractions=_frozen(f),
        ks=_frozen(ks, np.int64),
        seeds=_frozen(seeds, np.int64),
        full_accuracy=full,
        removed_top=_frozen(removed_top),
        removed_bottom=_frozen(removed_bottom),
        removed_random=_frozen(removed_random),
        removed_random_mean=_frozen(removed_random.mean(axis=0)),
        removed_random_std=_frozen(removed_random.std(axis=0)),
        **kept,
    )
