"""Scores for probes: accuracy, macro-F1, bootstrap intervals, baselines, selectivity, fold summaries.

Everything here works on plain 1-D label arrays (any hashable labels: ints or strings), so the same
functions score a probe on speech, text or anything else. Results are frozen dataclasses, so a score
cannot be edited after it is computed and can be logged as it is (``dataclasses.asdict``).

Why a bootstrap at all: probing papers compare layers that differ by a point or two of accuracy on a
few hundred test utterances, well inside sampling noise. Why a *cluster* bootstrap: utterances of one
speaker share voice, channel and label, so they are not independent draws; resampling utterances
pretends the test set holds far more independent evidence than it does and gives intervals that are
too narrow. Resampling whole speakers (``groups=``) keeps that dependence.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

__all__ = [
    "label_array",
    "FoldSummary",
    "Interval",
    "accuracy",
    "bootstrap_interval",
    "fold_summary",
    "macro_f1",
    "majority_baseline",
    "selectivity",
]

Metric = Union[Literal["accuracy", "macro_f1"], Callable[[np.ndarray, np.ndarray], float]]

# Resamples are drawn in blocks of at most this many (resample x unit) cells, which bounds memory
# (about 8 bytes per cell for the count matrix) whatever N and n_resamples are.
_BLOCK_CELLS = 1 << 22


@dataclass(frozen=True)
class Interval:
    """A metric on the full sample with its percentile-bootstrap confidence interval.

    ``resampled`` says what was drawn with replacement: ``"groups"`` (whole speakers, a cluster
    bootstrap) or ``"examples"`` (single utterances); report it beside the interval, since the two
    answer different questions.
    """

    value: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    resampled: Literal["groups", "examples"]


@dataclass(frozen=True)
class FoldSummary:
    """Mean and spread of one score over cross-validation folds (``std`` is NaN for a single fold)."""

    mean: float
    std: float
    n: int


# --------------------------------------------------------------------------------------------------
# validation


def label_array(name: str, values: Any) -> np.ndarray:
    """One 1-D, non-empty label array with no missing values, or a one-line ValueError (shared by the scores
    of probing.verification)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if array.dtype.kind in "fc":
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or Inf")
    elif array.dtype.kind == "O":
        if any(v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)) for v in array):
            raise ValueError(f"{name} contains missing values (None or NaN)")
    return array


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true = label_array("y_true", y_true)
    pred = label_array("y_pred", y_pred)
    if true.shape[0] != pred.shape[0]:
        raise ValueError(f"y_true and y_pred have different lengths ({true.shape[0]} vs {pred.shape[0]})")
    return true, pred


def _encode(*arrays: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Map labels to 0..K-1 over the union of the arrays (sorted, so the coding is deterministic)."""
    try:
        classes, codes = np.unique(np.concatenate(arrays), return_inverse=True)
    except TypeError as error:  # e.g. ints mixed with strings in an object array
        raise ValueError(f"labels cannot be compared with each other (mixed types?): {error}") from None
    codes = codes.reshape(-1)
    bounds = np.cumsum([0] + [len(a) for a in arrays])
    return classes, [codes[bounds[i] : bounds[i + 1]] for i in range(len(arrays))]


def _fraction(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be an accuracy in [0, 1], got {value!r}")
    return number


# --------------------------------------------------------------------------------------------------
# point metrics


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of examples predicted correctly.

    What scikit-learn's ``accuracy_score`` computes, without its input validation (3 ms a call, which a
    sweep scoring 40 probes on validation data would pay 40 times); ``_pair`` checks the inputs instead.
    """
    true, pred = _pair(y_true, y_pred)
    return float(np.mean(true == pred))


def macro_f1(y_true: Any, y_pred: Any, labels: Any = None) -> float:
    """Unweighted mean of per-class F1, so rare classes (a minority dialect) count as much as common ones.

    ``labels=None`` averages over every class seen in ``y_true`` or ``y_pred`` (scikit-learn's rule);
    pass ``labels`` to fix the class set, e.g. to score a class the probe never predicted and that is
    missing from this split. A class with no true and no predicted examples scores 0 rather than
    warning (``zero_division=0``).
    """
    true, pred = _pair(y_true, y_pred)
    if labels is not None:
        labels = label_array("labels", labels)
        return float(f1_score(true, pred, labels=labels, average="macro", zero_division=0.0))
    # Over the classes present, F1 = 2 TP / (true count + predicted count), from three bincounts: the
    # same number as scikit-learn's f1_score without its validation (5 ms a call; a sweep makes dozens).
    classes, (true_code, pred_code) = _encode(true, pred)
    k = len(classes)
    if k == 0:
        raise ValueError("macro_f1 needs at least one example")
    tp = np.bincount(true_code[true_code == pred_code], minlength=k)
    support = np.bincount(true_code, minlength=k) + np.bincount(pred_code, minlength=k)
    return float(np.mean(2.0 * tp / support))


# --------------------------------------------------------------------------------------------------
# bootstrap


def _resample_counts(rng: np.random.Generator, n_resamples: int, n_units: int) -> np.ndarray:
    """How often each of ``n_units`` units is drawn in each resample: an (n_resamples x n_units) matrix.

    Each row is ``n_units`` draws with replacement (the ordinary bootstrap), done as one integer draw
    and one ``bincount`` over the whole block instead of a Python loop.
    """
    draws = rng.integers(0, n_units, size=(n_resamples, n_units))
    draws += np.arange(n_resamples)[:, None] * n_units
    return np.bincount(draws.ravel(), minlength=n_resamples * n_units).reshape(n_resamples, n_units)


@functools.lru_cache(maxsize=4)
def _single_block_weights(seed: int, n_resamples: int, n_units: int) -> np.ndarray:
    """The resample count matrix of a one-block bootstrap, as float64 weights, read-only.

    Why cached: a sweep bootstraps accuracy and macro-F1 of every layer on the same test rows with the
    same seed, so every call draws the same matrix; drawing it once saves about half of each call.
    The cache holds at most 4 blocks of at most ``_BLOCK_CELLS`` cells (32 MB each at most).
    """
    weights = _resample_counts(np.random.default_rng(seed), n_resamples, n_units).astype(np.float64)
    weights.flags.writeable = False
    return weights


def _unit_sums(
    kind: str, true: np.ndarray, pred: np.ndarray, unit: np.ndarray, n_units: int, n_classes: int
) -> tuple[np.ndarray, ...]:
    """Per-unit (group or example) count tables from which the metric of any reweighting follows.

    Accuracy needs correct and total counts per unit (U x 1); macro-F1 needs, per unit and class,
    true positives, true count and predicted count (U x K). A resample then costs a few matrix
    products instead of a pass over the examples.
    """
    if kind == "accuracy":
        correct = np.bincount(unit, weights=(true == pred).astype(np.float64), minlength=n_units)
        total = np.bincount(unit, minlength=n_units).astype(np.float64)
        return correct[:, None], total[:, None]

    def table(cls: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        flat = np.bincount(unit * n_classes + cls, weights=weights, minlength=n_units * n_classes)
        return flat.astype(np.float64).reshape(n_units, n_classes)

    return table(true, (true == pred).astype(np.float64)), table(true), table(pred)


def _stat_from_sums(kind: str, *sums: np.ndarray) -> np.ndarray:
    """Accuracy or macro-F1 per row from summed count tables (rows are resamples).

    Macro-F1 averages over the classes present (as true or predicted) in that resample, which is what
    ``macro_f1`` returns when called on the resampled labels.
    """
    if kind == "accuracy":
        correct, total = sums
        return correct[:, 0] / total[:, 0]
    tp, n_true, n_pred = sums
    support = n_true + n_pred  # 2TP + FP + FN
    present = support > 0
    f1 = np.divide(2.0 * tp, support, out=np.zeros_like(tp), where=present)
    return f1.sum(axis=1) / present.sum(axis=1)


def _metric_kind(metric: Metric) -> str | None:
    if metric in ("accuracy", accuracy, accuracy_score):
        return "accuracy"
    if metric in ("macro_f1", macro_f1):
        return "macro_f1"
    if isinstance(metric, str):
        raise ValueError(f"unknown metric {metric!r}; use 'accuracy', 'macro_f1' or a callable")
    if not callable(metric):
        raise ValueError(f"metric must be 'accuracy', 'macro_f1' or a callable, got {metric!r}")
    return None


def bootstrap_interval(
    y_true: Any,
    y_pred: Any,
    metric: Metric = "accuracy",
    *,
    groups: Any = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap confidence interval of ``metric`` on a test set.

    With ``groups`` (e.g. speaker ids, one per example), whole groups are drawn with replacement (a
    cluster bootstrap): use it whenever the split is by speaker, since one speaker's utterances are not
    independent and resampling them one by one gives intervals that are too narrow. Without it,
    examples are resampled.

    ``metric`` is ``"accuracy"``, ``"macro_f1"`` (or the functions of those names), computed for all
    resamples at once from per-group count sums; any other callable ``metric(y_true, y_pred)`` works
    too, one call per resample (slower). The same ``seed`` gives the same interval.
    """
    true, pred = _pair(y_true, y_pred)
    kind = _metric_kind(metric)
    integer = isinstance(n_resamples, (int, np.integer)) and not isinstance(n_resamples, (bool, np.bool_))
    if not integer or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not isinstance(confidence, (int, float, np.floating)) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    n_resamples, confidence = int(n_resamples), float(confidence)

    if groups is None:
        resampled: Literal["groups", "examples"] = "examples"
        unit = np.arange(true.shape[0])
        n_units = true.shape[0]
        if n_units < 2:
            raise ValueError("bootstrap needs at least 2 examples")
    else:
        resampled = "groups"
        group_array = label_array("groups", groups)
        if group_array.shape[0] != true.shape[0]:
            raise ValueError(
                f"groups and y_true have different lengths ({group_array.shape[0]} vs {true.shape[0]})"
            )
        _, (unit,) = _encode(group_array)
        n_units = int(unit.max()) + 1
        if n_units < 2:
            raise ValueError("a group bootstrap needs at least 2 distinct groups")

    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n_units)
    if kind is None:
        value = float(metric(true, pred))
        order = np.argsort(unit, kind="stable")  # examples of unit u are order[start[u]:start[u + 1]]
        start = np.concatenate([[0], np.cumsum(np.bincount(unit, minlength=n_units))])
        stats = np.empty(n_resamples)
        for first in range(0, n_resamples, block):
            counts = _resample_counts(rng, min(block, n_resamples - first), n_units)
            for row, weights in enumerate(counts):
                units = np.repeat(np.arange(n_units), weights)
                index = np.concatenate([order[start[u] : start[u + 1]] for u in units])
                stats[first + row] = float(metric(true[index], pred[index]))
    else:
        value = accuracy(true, pred) if kind == "accuracy" else macro_f1(true, pred)
        classes, (true_code, pred_code) = _encode(true, pred)
        sums = _unit_sums(kind, true_code, pred_code, unit, n_units, len(classes))
        if n_resamples <= block and isinstance(seed, (int, np.integer)):  # the draws below, reused across calls
            weights = _single_block_weights(int(seed), n_resamples, n_units)
            stats = _stat_from_sums(kind, *(weights @ s for s in sums))
        else:
            parts = []
            for first in range(0, n_resamples, block):
                weights = _resample_counts(rng, min(block, n_resamples - first), n_units).astype(np.float64)
                parts.append(_stat_from_sums(kind, *(weights @ s for s in sums)))
            stats = np.concatenate(parts)

    if not np.all(np.isfinite(stats)):
        raise ValueError("metric returned NaN or Inf on a bootstrap resample")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return Interval(
        value=float(value),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_resamples=n_resamples,
        resampled=resampled,
    )


# --------------------------------------------------------------------------------------------------
# baselines and summaries


def majority_baseline(y_train: Any, y_test: Any) -> float:
    """Test accuracy of always predicting the training set's most frequent class.

    The floor a probe must beat: on an imbalanced task it is far above 1/K. The class is chosen on the
    training labels only (ties go to the smallest label, so it is deterministic), never on the test set.
    """
    train = label_array("y_train", y_train)
    test = label_array("y_test", y_test)
    classes, (train_code,) = _encode(train)
    majority = classes[np.argmax(np.bincount(train_code))]
    try:
        hits = test == majority
    except TypeError as error:
        raise ValueError(f"y_train and y_test labels cannot be compared: {error}") from None
    return float(np.mean(hits))


def selectivity(task_accuracy: float, control_accuracy: float) -> float:
    """Task accuracy minus control-task accuracy (Hewitt & Liang, 2019), both as fractions in [0, 1].

    A control task gives each speaker a random label, so a probe can only solve it by memorising
    speakers; high accuracy on the real task with low selectivity means the probe (not the
    representation) did the work. Both accuracies must come from the same probe family and
    hyperparameters for the difference to mean anything. Positive is better; the result lies in [-1, 1].
    """
    return _fraction("task_accuracy", task_accuracy) - _fraction("control_accuracy", control_accuracy)


def fold_summary(values: Any) -> FoldSummary:
    """Mean and sample standard deviation (ddof=1) of a score over cross-validation folds.

    ddof=1 because the folds are a sample of the splits one could have drawn; with few folds the
    population formula (numpy's default) understates the spread. One fold has no spread: ``std`` is NaN.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("values must be numbers (one score per fold)") from None
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D (one score per fold), got shape {array.shape}")
    if array.size == 0:
        raise ValueError("values is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError("values contains NaN or Inf")
    std = float(np.std(array, ddof=1)) if array.size > 1 else float("nan")
    return FoldSummary(mean=float(np.mean(array)), std=std, n=int(array.size))
